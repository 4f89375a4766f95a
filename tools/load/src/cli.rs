//! Command-line flags.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ringcast-load",
    version,
    about = "Load generator for ringcast (and nginx+nchan): fanout, idle hold, WebSocket echo. \
             Progress on stderr, one JSON line on stdout."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// N subscribers over T topics; publish at a constant rate (open loop); latency and
    /// completeness of every delivery.
    Fanout(FanoutArgs),
    /// N idle connections; the server's RSS and the kernel's socket memory per connection.
    Hold(HoldArgs),
    /// WebSocket round trips: each connection sends a frame and waits for its echo.
    Echo(EchoArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Sse,
    Ws,
    Longpoll,
}

impl Transport {
    pub fn default_route(self) -> &'static str {
        match self {
            Transport::Sse => "http://127.0.0.1:8080/sse/{topic}",
            Transport::Ws => "ws://127.0.0.1:8080/ws/{topic}",
            Transport::Longpoll => "http://127.0.0.1:8080/poll/{topic}",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LongpollStyle {
    /// `?since=POS&wait=S`, JSON answers, `next` / `X-Ringcast-Next` cursor.
    Ringcast,
    /// nchan: raw body per message, `Last-Modified`/`Etag` → `If-Modified-Since`/`If-None-Match`.
    Nchan,
}

/// Flags every subcommand has.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Client source addresses, bound before connect: `127.0.0.2-127.0.0.50`, a list with
    /// commas, or one address. Connection i uses address i mod count. Default: the kernel's.
    #[arg(long)]
    pub source_ips: Option<String>,
    /// Split the connections over this many processes (copies of this binary), each with its
    /// own file descriptor limit; the parent merges their summaries.
    #[arg(long, default_value_t = 1)]
    pub processes: usize,
    /// Connection attempts (connect + handshake) in flight at once, per process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up on connections not up after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    pub connect_timeout_secs: f64,
    /// Topic names are PREFIX + number. Default: a fresh prefix per run.
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
    #[arg(long, hide = true, default_value_t = 1)]
    pub worker_count: usize,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[arg(long, value_enum, default_value_t = Transport::Sse)]
    pub transport: Transport,
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Subscriber i listens on topic i mod T.
    #[arg(long, default_value_t = 10)]
    pub topics: usize,
    /// Messages in total, spread round robin over the topics (message i → topic i mod T).
    /// Default: rate × --seconds.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Publish for this long when --messages is not given.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Total publish rate, messages per second over all topics (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Payload bytes (`SEQ TS TOPIC ` padded with dots).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Subscriber URL templates, comma-separated (several nodes): subscriber i starts on
    /// template i mod n. Default: ringcast's route for the transport on 127.0.0.1:8080.
    #[arg(long)]
    pub url_sub: Option<String>,
    /// Publish URL templates, comma-separated: publisher connection p starts on template
    /// p mod n.
    #[arg(long, default_value = "http://127.0.0.1:8080/pub/{topic}")]
    pub url_pub: String,
    /// A subscriber whose stream ends or fails reconnects to the next --url-sub template
    /// from the last position it received (SSE Last-Event-ID, WebSocket ?since= over
    /// ringcast.v1, the poll's since), with a backoff of 50 ms doubling to 1 s, until the run
    /// ends. A publish refused before it was sent is retried (on the next --url-pub template
    /// when the connection failed); one whose outcome is unknown is not, and counts as
    /// uncertain. Needs --pub-pipeline 1.
    #[arg(long)]
    pub resume: bool,
    /// SSE and WebSocket subscribers also time each message's arrival in their socket (the
    /// kernel's receive timestamp, `SO_TIMESTAMPNS`), reported as `socket_latency_us` beside
    /// `latency_us`: the server's share of the latency without this tool's wait to be
    /// scheduled and read. Every packet on the machine is then stamped, a few tens of ns
    /// each, so it is for latency runs, not throughput runs.
    #[arg(long)]
    pub socket_stamps: bool,
    /// WebSocket subscribers speak the ringcast.v1 subprotocol (JSON envelopes with
    /// positions) instead of raw frames; implied by --resume.
    #[arg(long)]
    pub ws_v1: bool,
    /// Keep-alive publisher connections (topic t is published on connection t mod P, so each
    /// topic's messages go out in order).
    #[arg(long, default_value_t = 4)]
    pub pub_connections: usize,
    /// Publishes in flight per publisher connection (HTTP/1.1 pipelining; order is kept). 1:
    /// each publish waits for the previous answer, which caps the offered rate at one message
    /// per topic per server round trip. More lets messages queue up at a busy server as they
    /// would with many independent publishers.
    #[arg(long, default_value_t = 1)]
    pub pub_pipeline: usize,
    /// Wake this many microseconds before each message is due and spin (yielding) until it
    /// is: the runtime's timer rounds sleeps up to the next millisecond, which adds up to 1 ms
    /// to every latency measured from the intended send time. For latency runs at low rates
    /// (the spinning costs the load tool CPU); 0: sleep only.
    #[arg(long, default_value_t = 0)]
    pub spin_us: u64,
    /// Seconds to wait for deliveries after the last message's intended send time.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    #[arg(long, value_enum, default_value_t = LongpollStyle::Ringcast)]
    pub longpoll_style: LongpollStyle,
    /// Long-poll `wait=` seconds (ringcast style).
    #[arg(long, default_value_t = 30)]
    pub poll_wait: u64,
    /// Pause between "all subscribers up" and the first publish, ms.
    #[arg(long, default_value_t = 300)]
    pub settle_ms: u64,
    /// The server's process ids (comma-separated, e.g. nginx's workers): their CPU time
    /// (utime + stime) from the first publish to the end is reported, per delivery.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    #[arg(long, value_enum, default_value_t = Transport::Sse)]
    pub transport: Transport,
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connection i subscribes to topic i mod T. Default: one topic per connection.
    #[arg(long)]
    pub topics: Option<usize>,
    /// Hold the connections this long after all are up.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// The server's process ids (comma-separated, e.g. nginx's workers); their RSS is summed.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Pause after all connections are up before measuring, ms.
    #[arg(long, default_value_t = 1000)]
    pub settle_ms: u64,
    #[arg(long)]
    pub url: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args)]
pub struct EchoArgs {
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// WebSocket URL template; connection i uses topic PREFIX + i.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/{topic}")]
    pub url: String,
    #[command(flatten)]
    pub common: Common,
}
