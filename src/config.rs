//! Command-line flags, their defaults and validation (clap).
//!
//! Owns: every tunable bound of the node. Each bound has a safe default, a unit in its name and a
//! flag of the same name (`DEFAULT_CLIENT_BUFFER_BYTES` ↔ `--client-buffer-bytes`).
//! Must not: start anything; `main.rs` turns a [`Config`] into a running node via `runtime`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

pub mod sources;

// The codecs' own defaults, defined once where the limit is enforced.
pub use crate::codec::http1::{
    DEFAULT_MAX_HEADERS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_REQUEST_LINE_BYTES,
};
pub use crate::codec::route::DEFAULT_MAX_TOPIC_BYTES;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_000_000;
pub const DEFAULT_DRAIN_TIMEOUT_SECS: u64 = 10;
pub const DEFAULT_MAX_TOPICS: usize = 1_000_000;
pub const DEFAULT_TOPIC_IDLE_SECS: u64 = 300;
pub const DEFAULT_HISTORY_MESSAGES: usize = 1000;
pub const DEFAULT_HISTORY_BYTES: usize = 1024 * 1024;
pub const DEFAULT_HISTORY_SECS: u64 = 3600;
pub const DEFAULT_CLIENT_BUFFER_BYTES: usize = 256 * 1024;
pub const DEFAULT_INBOX_CAPACITY: usize = 65536;
/// Deliveries per shard queued for subscribers and not yet written (each a pointer to shared
/// bytes, ~24 B): 6 MB per shard.
pub const DEFAULT_MAX_PENDING_DELIVERIES: usize = 262_144;
/// Longest a loaded shard holds a subscriber's next write to batch more into it, ms.
pub const DEFAULT_MAX_WRITE_DELAY_MS: u64 = 100;
pub const DEFAULT_PUBLISH_TIMEOUT_MS: u64 = 2000;
pub const DEFAULT_MAX_PIPELINED_PUBLISHES: usize = 64;
pub const DEFAULT_LONGPOLL_MAX_SECS: u64 = 60;
pub const DEFAULT_POLL_LIMIT: usize = 100;
/// Most topics of one multi-topic stream or poll (`GET /sse?topic=..`, `GET /poll?topic=..`).
pub const DEFAULT_MAX_TOPICS_PER_STREAM: usize = 64;
pub const DEFAULT_SSE_RETRY_MS: u64 = 3000;
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;
pub const DEFAULT_PONG_TIMEOUT_SECS: u64 = 30;
/// Connections past `--max-connections` still get a 503 up to this many more; beyond, they are
/// closed at accept without a word (the hard cap), so a flood cannot make the node write.
pub const OVERLOAD_ANSWER_SLACK: usize = 1024;

// ---- admission (issue 15): the storm bounds, `crate::admission` -------------------------------
/// New connections a node accepts a second (a bucket per shard, about a second of burst).
pub const DEFAULT_ACCEPT_RATE: u32 = 50_000;
/// Open connections one client address may hold; 0 = no cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 0;
/// Topics one `ringcast.v1` connection may subscribe to.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 128;
/// Messages a second one WebSocket connection may publish (about a second of burst).
pub const DEFAULT_WS_PUBLISH_RATE: u32 = 1000;
/// `--redis-prefix`: the first part of every Redis key and channel name.
pub const DEFAULT_REDIS_PREFIX: &str = "rc";
/// `Retry-After` base for a connection refused at accept, seconds (jittered to 1–2×).
pub const ADMISSION_RETRY_AFTER_SECS: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Driver {
    /// io_uring, falling back to epoll with one log line when io_uring cannot start.
    Auto,
    /// io_uring only: fail to start if it is unavailable.
    Uring,
    /// monoio's epoll driver.
    Epoll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SlowClient {
    /// Close the client; it reconnects and resumes from history.
    Disconnect,
    /// Skip the messages it has no room for, then send a reset before the next one it can take (a raw WebSocket is closed with 4000 instead).
    Drop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// `--log-format`: how a log line is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `LEVEL message`, one line per event.
    Text,
    /// One JSON object per line: `ts`, `level`, `shard` (on a shard's thread), `peer` (when the event is about a client), `msg`.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// ringcast — a real-time push edge node: short/long polling, SSE and WebSocket over topic pub/sub.
#[derive(Clone, Debug, Parser)]
#[command(version, about, max_term_width = 100)]
pub struct Config {
    // ---- where the settings come from (issue 17) ----
    /// Read settings from this TOML file: the keys are the flag names (`max-connections = 100`);
    /// flags and `RINGCAST_*` variables take precedence over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration, print every setting in force and where it came from, then
    /// exit (non-zero, with the reason, when it is not valid).
    #[arg(long)]
    pub check_config: bool,
    /// Address to listen on (one SO_REUSEPORT listener per shard).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Number of shards (threads, one per core). 0 = the number of usable cores.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// Pin each shard thread to its own core.
    #[arg(long, overrides_with = "no_pin", default_value_t = true)]
    pub pin: bool,
    /// Do not pin shard threads.
    #[arg(long = "no-pin")]
    pub no_pin: bool,
    /// I/O driver.
    #[arg(long, value_enum, default_value_t = Driver::Auto)]
    pub driver: Driver,
    /// Log level (one line per event on stderr).
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Longest request line, bytes (414 past it).
    #[arg(long, default_value_t = DEFAULT_MAX_REQUEST_LINE_BYTES)]
    pub max_request_line_bytes: usize,
    /// Longest request head, bytes (431 past it).
    #[arg(long, default_value_t = DEFAULT_MAX_HEAD_BYTES)]
    pub max_head_bytes: usize,
    /// Most header fields in a request (431 past it).
    #[arg(long, default_value_t = DEFAULT_MAX_HEADERS)]
    pub max_headers: usize,
    /// Largest request body, bytes (413 past it); a single message is also bounded by --max-message-bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Largest message payload, bytes (413 on publish, 1009 on WebSocket).
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Longest topic name, bytes after percent-decoding (400 past it).
    #[arg(long, default_value_t = DEFAULT_MAX_TOPIC_BYTES)]
    pub max_topic_bytes: usize,
    /// Time allowed to send a whole request head, seconds (408 then close: slowloris).
    #[arg(long, alias = "header-timeout", default_value_t = DEFAULT_HEADER_TIMEOUT_SECS)]
    pub header_timeout_secs: u64,
    /// Idle keep-alive connection timeout, seconds.
    #[arg(long, alias = "idle-timeout", default_value_t = DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout_secs: u64,
    /// Open connections served; past it new ones get 503 with Retry-After (and past it plus
    /// 1024, they are closed at accept).
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// On SIGINT/SIGTERM: time to let requests finish and streams close, seconds.
    #[arg(long, alias = "drain-timeout", default_value_t = DEFAULT_DRAIN_TIMEOUT_SECS)]
    pub drain_timeout_secs: u64,

    /// Most topics alive at once (503 past it).
    #[arg(long, default_value_t = DEFAULT_MAX_TOPICS)]
    pub max_topics: usize,
    /// A topic with no subscriber and no message younger than this is freed, seconds.
    #[arg(long, default_value_t = DEFAULT_TOPIC_IDLE_SECS)]
    pub topic_idle_secs: u64,
    /// History kept per topic: most messages.
    #[arg(long, default_value_t = DEFAULT_HISTORY_MESSAGES)]
    pub history_messages: usize,
    /// History kept per topic: most payload bytes.
    #[arg(long, default_value_t = DEFAULT_HISTORY_BYTES)]
    pub history_bytes: usize,
    /// History kept per topic: oldest message age, seconds.
    #[arg(long, default_value_t = DEFAULT_HISTORY_SECS)]
    pub history_secs: u64,
    /// Bytes a streaming client's socket has refused (and what is queued behind them) before
    /// the --slow-client policy applies; bytes that wait only for the server's writer do not count.
    #[arg(long, default_value_t = DEFAULT_CLIENT_BUFFER_BYTES)]
    pub client_buffer_bytes: usize,
    /// What to do with a client whose send buffer is full.
    #[arg(long, value_enum, default_value_t = SlowClient::Disconnect)]
    pub slow_client: SlowClient,
    /// Capacity of each shard's cross-core inbox, in commands (48 bytes a slot, all resident
    /// from the start: 3 MiB a shard at the default).
    #[arg(long, default_value_t = DEFAULT_INBOX_CAPACITY)]
    pub inbox_capacity: usize,
    /// Deliveries a shard may hold that its writer has not written yet, messages × subscribers;
    /// past it the shard takes no new work: publishes wait (then 503), other shards' fanout
    /// waits in their inboxes.
    #[arg(long, default_value_t = DEFAULT_MAX_PENDING_DELIVERIES)]
    pub max_pending_deliveries: usize,
    /// Longest a loaded shard holds a subscriber's next write so that more messages share it,
    /// milliseconds. An unloaded shard writes at once; 0 never waits (lowest latency, more CPU
    /// per delivery under load).
    #[arg(long, default_value_t = DEFAULT_MAX_WRITE_DELAY_MS)]
    pub max_write_delay_ms: u64,
    /// How long a publish waits for a full inbox before answering 503, milliseconds.
    #[arg(long, default_value_t = DEFAULT_PUBLISH_TIMEOUT_MS)]
    pub publish_timeout_ms: u64,
    /// Most `POST /pub/{topic}` requests pipelined on one connection that go to another
    /// shard's topic home as one command, requests (the first and those already read behind it).
    #[arg(long, default_value_t = DEFAULT_MAX_PIPELINED_PUBLISHES)]
    pub max_pipelined_publishes: usize,
    /// Require `Authorization: Bearer TOKEN` to publish (default: loopback peers only; with a
    /// JWT key, a token's `publish` claim also allows).
    #[arg(long)]
    pub publish_token: Option<String>,
    // ---- /stats and /status (issue 17) ----
    /// Require `Authorization: Bearer TOKEN` (or `?token=TOKEN`) for /stats and /status from
    /// peers that are not loopback (default: loopback peers only).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Loopback peers may read /stats and /status without --admin-token. Turn it off behind a
    /// proxy on the same host, where every peer is loopback.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub admin_loopback: OnOff,
    /// Longest long-poll wait, seconds (`wait=` is capped to it).
    #[arg(long, default_value_t = DEFAULT_LONGPOLL_MAX_SECS)]
    pub longpoll_max_secs: u64,
    /// Most messages in one poll answer (`limit=` is capped to it).
    #[arg(long, default_value_t = DEFAULT_POLL_LIMIT)]
    pub poll_limit: usize,

    /// Most topics of one multi-topic SSE stream or poll (400 past it); it also bounds the
    /// stream position token (at most 28 bytes a topic before base64).
    #[arg(long, default_value_t = DEFAULT_MAX_TOPICS_PER_STREAM)]
    pub max_topics_per_stream: usize,

    /// Reconnect delay announced to SSE clients, milliseconds (jittered ±20% per client).
    #[arg(long, default_value_t = DEFAULT_SSE_RETRY_MS)]
    pub sse_retry_ms: u64,
    /// Heartbeat on quiet streams (SSE comment, WebSocket ping), seconds. 0 = off.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_SECS)]
    pub heartbeat_secs: u64,
    /// Close a WebSocket that has not answered a ping within this, seconds.
    #[arg(long, default_value_t = DEFAULT_PONG_TIMEOUT_SECS)]
    pub pong_timeout_secs: u64,
    /// Origins allowed cross-origin (repeatable, or `*`). Default: same-origin only.
    #[arg(long)]
    pub allow_origin: Vec<String>,
    /// Messages sent by WebSocket clients are published to the connection's topic.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub ws_client_publish: OnOff,

    /// HMAC secret for HS256/384/512 tokens, read from this file (at least 32 bytes). With any
    /// JWT key configured, subscribing on every transport needs a token.
    #[arg(long, value_name = "PATH")]
    pub jwt_secret_file: Option<PathBuf>,
    /// PEM public key for RS*/PS* (RSA), ES256/ES384 (EC P-256/P-384) or EdDSA (Ed25519) tokens
    /// (repeatable, for rotation).
    #[arg(long, value_name = "PATH")]
    pub jwt_public_key_file: Vec<PathBuf>,
    /// Accept only tokens whose `aud` claim names this audience.
    #[arg(long)]
    pub jwt_audience: Option<String>,
    /// Accept only tokens whose `iss` claim is this issuer.
    #[arg(long)]
    pub jwt_issuer: Option<String>,
    /// Also read the token from this cookie (after `Authorization: Bearer` and `?token=`); not
    /// with `--allow-origin '*'`.
    #[arg(long, value_name = "NAME")]
    pub jwt_cookie: Option<String>,
    /// Topics anyone may read without a token: a name, a prefix ending in `*`, or `*` (repeatable).
    #[arg(long, value_name = "PATTERN")]
    pub public_topic: Vec<String>,

    // ---- admission (issue 15) ----------------------------------------------------------------
    /// New connections accepted per second by the node (a token bucket per shard, the rate
    /// split over shards, about a second of burst); past it 503 with a jittered Retry-After.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ACCEPT_RATE)]
    pub accept_rate: u32,
    /// Open connections one client address may hold (503 past it); 0 = off. Behind a load
    /// balancer every client has the balancer's address: this caps the balancer.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    pub max_connections_per_ip: u32,
    /// Topics one `ringcast.v1` WebSocket may subscribe to (an error envelope past it).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    pub max_subscriptions_per_connection: usize,
    /// Messages per second one WebSocket may publish (about a second of burst); past it v1
    /// answers an error envelope, a raw WebSocket is closed with 1008.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WS_PUBLISH_RATE)]
    pub ws_publish_rate: u32,

    // ---- several nodes (issue 14) -----------------------------------------------------------
    /// Redis backplane, `redis://[user:password@]HOST:PORT[/DB]`: Redis gives every position and
    /// keeps history, so a client resumes on any node. Default: standalone.
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Prefix of the Redis keys and channels (`PREFIX:{TOPIC}`); no `{`, `}` or spaces.
    #[arg(long, value_name = "PREFIX", default_value = DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
    /// Fault testing only (hidden): the bridge drops every Nth message Redis pushes to it,
    /// counting from 1, as a lost push would; the node must repair each loss (0: none).
    #[arg(long, value_name = "N", default_value_t = 0, hide = true)]
    pub debug_drop_pushes: u64,
}

impl Config {
    /// Checks relations between flags; the error says how to fix it.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.no_pin {
            self.pin = false;
        }
        if self.shards == 0 {
            self.shards = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
        }
        if self.shards > crate::fanout::MAX_SHARDS {
            return Err(format!(
                "--shards {} is more than the {} this build supports; use fewer shards",
                self.shards,
                crate::fanout::MAX_SHARDS
            ));
        }
        if let Some(url) = &self.redis {
            if !url.starts_with("redis://") || redis::Client::open(url.as_str()).is_err() {
                return Err("--redis must be redis://[user:password@]HOST:PORT[/DB]".to_string());
            }
        }
        if self.redis_prefix.is_empty()
            || self
                .redis_prefix
                .bytes()
                .any(|b| b == b'{' || b == b'}' || !b.is_ascii_graphic())
        {
            return Err(
                "--redis-prefix must be non-empty, printable, without `{`, `}` or spaces"
                    .to_string(),
            );
        }
        let nonzero = [
            ("--max-request-line-bytes", self.max_request_line_bytes),
            ("--max-head-bytes", self.max_head_bytes),
            ("--max-headers", self.max_headers),
            ("--max-message-bytes", self.max_message_bytes),
            ("--max-topic-bytes", self.max_topic_bytes),
            ("--max-topics", self.max_topics),
            ("--history-messages", self.history_messages),
            ("--history-bytes", self.history_bytes),
            ("--client-buffer-bytes", self.client_buffer_bytes),
            ("--inbox-capacity", self.inbox_capacity),
            ("--max-pending-deliveries", self.max_pending_deliveries),
            ("--max-pipelined-publishes", self.max_pipelined_publishes),
            ("--poll-limit", self.poll_limit),
            ("--max-connections", self.max_connections),
            (
                "--max-subscriptions-per-connection",
                self.max_subscriptions_per_connection,
            ),
            ("--accept-rate", self.accept_rate as usize),
            ("--ws-publish-rate", self.ws_publish_rate as usize),
        ];
        for (name, v) in nonzero {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.max_topics_per_stream == 0 {
            return Err("--max-topics-per-stream must be at least 1".into());
        }
        if self.max_request_line_bytes > self.max_head_bytes {
            return Err("--max-request-line-bytes must not exceed --max-head-bytes".into());
        }
        if self.header_timeout_secs == 0 {
            return Err("--header-timeout-secs must be at least 1".into());
        }
        if let Some(t) = &self.publish_token {
            if t.is_empty() || t.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                return Err(
                    "--publish-token must be non-empty printable ASCII without spaces".into(),
                );
            }
        }
        if let Some(t) = &self.admin_token {
            if t.is_empty() || t.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                return Err(
                    "--admin-token must be non-empty printable ASCII without spaces".into(),
                );
            }
        }
        if let Some(c) = &self.jwt_cookie {
            if c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(format!("--jwt-cookie {c:?} is not a cookie name"));
            }
        }
        for o in &self.allow_origin {
            if o.is_empty() || o.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                return Err(format!("--allow-origin {o:?} is not an origin or '*'"));
            }
        }
        // Without a key no token is checked: these would do nothing and leave every topic
        // open to all, which is not what whoever set them meant.
        if self.jwt_secret_file.is_none() && self.jwt_public_key_file.is_empty() {
            let set = [
                ("--public-topic", !self.public_topic.is_empty()),
                ("--jwt-audience", self.jwt_audience.is_some()),
                ("--jwt-issuer", self.jwt_issuer.is_some()),
                ("--jwt-cookie", self.jwt_cookie.is_some()),
            ];
            if let Some((flag, _)) = set.iter().find(|(_, on)| *on) {
                return Err(format!(
                    "{flag} needs a key to check tokens with: give --jwt-secret-file or \
                     --jwt-public-key-file (without one every topic is open to all)"
                ));
            }
        }
        // A browser sends the cookie with any site's WebSocket, EventSource or form POST to
        // this node: with `*`, every website could read and publish as the user.
        if self.jwt_cookie.is_some() && self.allow_origin.iter().any(|o| o == "*") {
            return Err(
                "--jwt-cookie with --allow-origin '*' lets any website read and publish as \
                 your users; list your pages' origins in --allow-origin, or carry the token \
                 in ?token= or Authorization instead of a cookie"
                    .into(),
            );
        }
        Ok(())
    }

    /// Parses and validates, for tests and embedders.
    pub fn from_args<I, T>(args: I) -> Result<Config, String>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut c = Config::try_parse_from(args).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    /// The token rules' part of the configuration.
    pub fn auth_config(&self) -> crate::auth::AuthConfig {
        crate::auth::AuthConfig {
            jwt_secret_file: self.jwt_secret_file.clone(),
            jwt_public_key_files: self.jwt_public_key_file.clone(),
            jwt_audience: self.jwt_audience.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
            public_topics: self.public_topic.clone(),
        }
    }

    pub fn client_publish(&self) -> bool {
        self.ws_client_publish == OnOff::On
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_args(["ringcast"]).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert!(c.shards >= 1);
        assert!(c.pin);
        assert_eq!(c.slow_client, SlowClient::Disconnect);
    }

    #[test]
    fn no_pin_and_aliases() {
        let c = Config::from_args([
            "ringcast",
            "--no-pin",
            "--header-timeout",
            "3",
            "--shards",
            "2",
        ])
        .unwrap();
        assert!(!c.pin);
        assert_eq!(c.header_timeout_secs, 3);
        assert_eq!(c.shards, 2);
    }

    #[test]
    fn rejects_zero_bounds_and_bad_tokens() {
        assert!(Config::from_args(["ringcast", "--client-buffer-bytes", "0"]).is_err());
        assert!(Config::from_args(["ringcast", "--max-pipelined-publishes", "0"]).is_err());
        assert!(Config::from_args(["ringcast", "--publish-token", "a b"]).is_err());
        assert!(Config::from_args(["ringcast", "--max-head-bytes", "10"]).is_err());
        assert!(Config::from_args(["ringcast", "--shards", "1000"]).is_err());
    }

    #[test]
    fn a_cookie_token_is_never_sent_by_any_origin() {
        // With `*`, any website could open a WebSocket or an EventSource that carries the
        // user's cookie, or POST as the user.
        let cookie_any = [
            "ringcast",
            "--jwt-secret-file",
            "s",
            "--jwt-cookie",
            "rc",
            "--allow-origin",
            "https://app.example",
            "--allow-origin",
            "*",
        ];
        let err = Config::from_args(cookie_any).unwrap_err();
        assert!(
            err.contains("--jwt-cookie") && err.contains("--allow-origin"),
            "{err}"
        );
        assert!(Config::from_args(&cookie_any[..7]).is_ok());
        let mut no_cookie = cookie_any.to_vec();
        no_cookie.drain(3..5);
        assert!(Config::from_args(no_cookie).is_ok());
    }

    #[test]
    fn token_rules_without_a_key_stop_the_start() {
        // Without a key nothing is checked: the node would stay open to all.
        for (flag, value) in [
            ("--public-topic", "public/*"),
            ("--jwt-audience", "push"),
            ("--jwt-issuer", "https://auth.example"),
            ("--jwt-cookie", "rc"),
        ] {
            let err = Config::from_args(["ringcast", flag, value]).unwrap_err();
            assert!(
                err.contains(flag) && err.contains("--jwt-secret-file"),
                "{err}"
            );
            for key in ["--jwt-secret-file", "--jwt-public-key-file"] {
                assert!(Config::from_args(["ringcast", flag, value, key, "k"]).is_ok());
            }
        }
    }
}
