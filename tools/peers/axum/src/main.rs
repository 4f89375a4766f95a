//! ringcast-peer-axum: the server a Rust developer would write instead of ringcast — axum on a
//! multi-threaded tokio runtime, one `tokio::sync::broadcast` channel per topic — with ringcast's
//! routes, so `tools/load` drives both the same way. A benchmark peer, not part of ringcast.
//!
//! - `POST /pub/{topic}`: body = payload (UTF-8; invalid bytes are replaced) → `{"id":"E:N"}`.
//! - `GET /sse/{topic}`: `retry:` + `: ok` at once, then `id: E:N` / `data:` per message, a
//!   comment heartbeat every 15 s (axum's `KeepAlive`).
//! - `GET /ws/{topic}`: every message as a text frame; every text (or binary) frame the client
//!   sends is published to the topic, so a lone subscriber gets its own message back.
//! - `GET /poll/{topic}?since=E:N&wait=S`: `{"messages":[{"id","data"}],"next":"E:N"}` as soon as
//!   there is news, 204 with `X-Ringcast-Next` after `wait` seconds; without `since` the current
//!   position at once; `"reset":true` (and the current position) when `since` is outside the
//!   history.
//! - `GET /healthz`: `ok`.
//!
//! Topics are created on first use and never removed. Each keeps its last `--history` messages
//! for long-poll `since`. A broadcast receiver that falls more than `--capacity` messages behind
//! gets `RecvError::Lagged(n)`: like a typical server, it counts the `n` skipped messages
//! (reported on stderr at most once a second) and carries on — those subscribers miss messages.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use futures_util::{SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::RecvError};

#[derive(Debug, Parser)]
#[command(
    name = "ringcast-peer-axum",
    about = "axum + tokio broadcast pub/sub server with ringcast's routes (a benchmark peer)"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8083")]
    listen: SocketAddr,
    /// Tokio worker threads. Default: the number of cores.
    #[arg(long)]
    threads: Option<usize>,
    /// Capacity of each topic's broadcast channel, in messages.
    #[arg(long, default_value_t = 1024)]
    capacity: usize,
    /// Messages each topic keeps for long-poll `since`.
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// Longest long-poll `wait=` honoured, seconds.
    #[arg(long, default_value_t = 120)]
    max_wait: u64,
    /// Bytes each WebSocket reserves before a read (tungstenite's `read_buffer_size`). Its
    /// default, 128 KiB, is held by every connection, idle or not: the first thing a developer
    /// serving many sockets turns down. Messages larger than this still arrive whole.
    #[arg(long, default_value_t = 4096)]
    ws_read_buffer: usize,
}

/// One published message, shared by every receiver.
struct Msg {
    offset: u64,
    text: Utf8Bytes,
}

struct Topic {
    tx: broadcast::Sender<Arc<Msg>>,
    log: Mutex<Log>,
}

struct Log {
    /// Offset of the newest message (0: none yet).
    last: u64,
    history: VecDeque<Arc<Msg>>,
}

struct App {
    /// Names one run of this process in every position.
    epoch: String,
    capacity: usize,
    history: usize,
    max_wait: u64,
    ws_read_buffer: usize,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Messages skipped by lagging receivers, in total.
    lagged: AtomicU64,
}

type Shared = Arc<App>;

impl App {
    fn topic(&self, name: &str) -> Arc<Topic> {
        if let Some(t) = self.topics.read().unwrap().get(name) {
            return t.clone();
        }
        self.topics
            .write()
            .unwrap()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Topic {
                    tx: broadcast::channel(self.capacity).0,
                    log: Mutex::new(Log {
                        last: 0,
                        history: VecDeque::new(),
                    }),
                })
            })
            .clone()
    }

    fn pos(&self, offset: u64) -> String {
        format!("{}:{offset}", self.epoch)
    }

    /// Appends to the history and broadcasts under the topic's lock, so offsets, history and
    /// channel order agree.
    fn publish(&self, t: &Topic, text: Utf8Bytes) -> u64 {
        let mut log = t.log.lock().unwrap();
        log.last += 1;
        let m = Arc::new(Msg {
            offset: log.last,
            text,
        });
        if log.history.len() >= self.history {
            log.history.pop_front();
        }
        if self.history > 0 {
            log.history.push_back(m.clone());
        }
        // Err only means nobody listens right now.
        let _ = t.tx.send(m);
        log.last
    }

    fn lagged(&self, n: u64) {
        self.lagged.fetch_add(n, Ordering::Relaxed);
    }
}

fn text_of(body: Bytes) -> Utf8Bytes {
    match Utf8Bytes::try_from(body.clone()) {
        Ok(t) => t,
        Err(_) => String::from_utf8_lossy(&body).into_owned().into(),
    }
}

async fn publish(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    let t = app.topic(&topic);
    let offset = app.publish(&t, text_of(body));
    Json(serde_json::json!({ "id": app.pos(offset) }))
}

async fn sse(
    State(app): State<Shared>,
    Path(topic): Path<String>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    // Subscribed before the first bytes go out: a client that saw `: ok` gets every later message.
    let rx = app.topic(&topic).tx.subscribe();
    let hello = Event::default().retry(Duration::from_secs(2)).comment("ok");
    let events = futures_util::stream::unfold((app, rx), |(app, mut rx)| async move {
        loop {
            match rx.recv().await {
                Ok(m) => {
                    let e = Event::default().id(app.pos(m.offset)).data(m.text.as_str());
                    return Some((Ok(e), (app, rx)));
                }
                Err(RecvError::Lagged(n)) => app.lagged(n),
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(futures_util::stream::once(async { Ok(hello) }).chain(events))
        .keep_alive(KeepAlive::default())
}

async fn ws(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let t = app.topic(&topic);
    // Subscribed before the 101 goes out, for the same reason as SSE.
    let rx = t.tx.subscribe();
    upgrade
        .read_buffer_size(app.ws_read_buffer)
        .on_upgrade(move |socket| ws_conn(socket, app, t, rx))
}

async fn ws_conn(
    socket: WebSocket,
    app: Shared,
    topic: Arc<Topic>,
    mut rx: broadcast::Receiver<Arc<Msg>>,
) {
    let (mut sink, mut stream) = socket.split();
    let app2 = app.clone();
    let mut send = tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(m) => {
                    if sink.send(Message::Text(m.text.clone())).await.is_err() {
                        break;
                    }
                }
                Err(RecvError::Lagged(n)) => app2.lagged(n),
                Err(RecvError::Closed) => break,
            }
        }
    });
    let mut recv = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                Message::Text(t) => {
                    app.publish(&topic, t);
                }
                Message::Binary(b) => {
                    app.publish(&topic, text_of(b));
                }
                Message::Close(_) => break,
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    });
    tokio::select! {
        _ = &mut send => recv.abort(),
        _ = &mut recv => send.abort(),
    }
}

#[derive(Deserialize)]
struct PollQuery {
    since: Option<String>,
    wait: Option<u64>,
}

#[derive(Serialize)]
struct PollMsg {
    id: String,
    data: Utf8Str,
}

/// Serializes a shared `Utf8Bytes` without copying it into a `String` first.
struct Utf8Str(Utf8Bytes);

impl Serialize for Utf8Str {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

#[derive(Serialize)]
struct PollAnswer {
    messages: Vec<PollMsg>,
    next: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reset: bool,
}

fn poll_answer(app: &App, msgs: &[Arc<Msg>], next: u64, reset: bool) -> Response {
    Json(PollAnswer {
        messages: msgs
            .iter()
            .map(|m| PollMsg {
                id: app.pos(m.offset),
                data: Utf8Str(m.text.clone()),
            })
            .collect(),
        next: app.pos(next),
        reset,
    })
    .into_response()
}

/// The offset in `E:N` if `E` is this process's epoch.
fn parse_since(app: &App, since: &str) -> Option<u64> {
    let (epoch, offset) = since.rsplit_once(':')?;
    (epoch == app.epoch).then_some(())?;
    offset.parse().ok()
}

async fn poll(
    State(app): State<Shared>,
    Path(topic): Path<String>,
    Query(q): Query<PollQuery>,
) -> Response {
    let t = app.topic(&topic);
    let wait = Duration::from_secs(q.wait.unwrap_or(30).min(app.max_wait));
    let mut rx = {
        let log = t.log.lock().unwrap();
        let Some(since) = q.since else {
            return poll_answer(&app, &[], log.last, false);
        };
        let oldest = log.history.front().map_or(log.last + 1, |m| m.offset);
        match parse_since(&app, &since) {
            // Caught up: wait for the next message (subscribed under the lock, so none is lost).
            Some(n) if n == log.last => t.tx.subscribe(),
            // Inside the history: what came after it, at once.
            Some(n) if n < log.last && n + 1 >= oldest => {
                let (a, b) = log.history.as_slices();
                let msgs: Vec<_> = a
                    .iter()
                    .chain(b)
                    .filter(|m| m.offset > n)
                    .cloned()
                    .collect();
                return poll_answer(&app, &msgs, log.last, false);
            }
            // Too old, from the future, another epoch or malformed.
            _ => return poll_answer(&app, &[], log.last, true),
        }
    };
    let first = tokio::time::timeout(wait, async {
        loop {
            match rx.recv().await {
                Ok(m) => return Some(m),
                Err(RecvError::Lagged(n)) => app.lagged(n),
                Err(RecvError::Closed) => return None,
            }
        }
    })
    .await;
    match first {
        Ok(Some(m)) => {
            // Whatever else is already queued goes in the same answer.
            let mut msgs = vec![m];
            while let Ok(m) = rx.try_recv() {
                msgs.push(m);
            }
            let next = msgs.last().map_or(0, |m| m.offset);
            poll_answer(&app, &msgs, next, false)
        }
        _ => {
            let last = t.log.lock().unwrap().last;
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&app.pos(last)) {
                r.headers_mut().insert("x-ringcast-next", v);
            }
            r
        }
    }
}

/// Every idle connection is a descriptor: raise the soft limit to the hard one.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    raise_nofile();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        rt.worker_threads(n.max(1));
    }
    rt.enable_all().build()?.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let app = Arc::new(App {
        epoch: format!("{:x}", (nanos as u64) ^ u64::from(std::process::id())),
        capacity: args.capacity.max(1),
        history: args.history,
        max_wait: args.max_wait,
        ws_read_buffer: args.ws_read_buffer.max(1),
        topics: RwLock::new(HashMap::new()),
        lagged: AtomicU64::new(0),
    });
    let router = Router::new()
        .route("/pub/{topic}", post(publish))
        .route("/sse/{topic}", get(sse))
        .route("/ws/{topic}", get(ws))
        .route("/poll/{topic}", get(poll))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(app.clone());

    let reporter = app.clone();
    tokio::spawn(async move {
        let mut seen = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let n = reporter.lagged.load(Ordering::Relaxed);
            if n != seen {
                eprintln!("ringcast-peer-axum: lagging receivers skipped {n} messages in total");
                seen = n;
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    eprintln!(
        "ringcast-peer-axum: listening on {} (epoch {})",
        args.listen, app.epoch
    );
    // No graceful shutdown: SSE and WebSocket streams never end on their own, so TERM/INT just
    // end the process (run.sh stop sends TERM).
    axum::serve(listener, router).await
}
