//! `fanout`: N subscribers over T topics, M messages published at a constant total rate.
//!
//! Open loop: message i (topic i mod T, sequence i div T) has the intended send time
//! t0 + i / R and carries it; latency is receive time − intended time, so a publisher or server
//! stall shows up as latency instead of silently slowing the schedule. Publishers are P
//! keep-alive connections; topic t always goes out on connection t mod P, so a topic's messages
//! reach the server in order and any reordering seen by a subscriber is the server's.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch, Notify, Semaphore};

use crate::addr::Target;
use crate::cli::{FanoutArgs, LongpollStyle, Transport};
use crate::http;
use crate::link::{Down, Up, WorkerLink};
use crate::net::{self, mono_ns, Conn, Fail};
use crate::payload::{encode_payload, parse_payload};
use crate::run::{connect_phase, merge_errors, Env, Errors};
use crate::sse::SseParser;
use crate::stats::{self, histogram_pairs, latency_us, merge_pairs, new_histogram};
use crate::track::{Completeness, Tracker};
use crate::ws::Rng;
use crate::wsconn;

/// Width of the delivery-time buckets workers report, ns.
const BUCKET_NS: u64 = 10_000_000;

/// Everything a fanout process needs, resolved from the flags.
pub struct Cfg {
    pub a: FanoutArgs,
    pub env: Env,
    pub sub: Target,
    pub publ: Target,
    pub messages: u64,
}

impl Cfg {
    pub fn new(a: FanoutArgs) -> Result<Cfg, String> {
        let env = Env::new(&a.common, "load-")?;
        if a.topics == 0 || a.rate <= 0.0 {
            return Err("--topics and --rate must be positive".into());
        }
        let sub = Target::parse(a.url_sub.as_deref().unwrap_or(a.transport.default_route()))?;
        let publ = Target::parse(&a.url_pub)?;
        let messages = a.messages.unwrap_or((a.rate * a.seconds).round() as u64);
        Ok(Cfg {
            a,
            env,
            sub,
            publ,
            messages,
        })
    }

    fn topic(&self, t: usize) -> String {
        format!("{}{t}", self.env.prefix)
    }

    /// Messages topic `t` gets.
    fn expected_for_topic(&self, t: usize) -> u64 {
        let tt = self.a.topics as u64;
        self.messages / tt + u64::from((t as u64) < self.messages % tt)
    }

    fn expected_total(&self) -> u64 {
        (0..self.a.subscribers)
            .map(|i| self.expected_for_topic(i % self.a.topics))
            .sum()
    }
}

/// One worker's result.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub subscribers: u64,
    pub connected: u64,
    pub failed: u64,
    pub disconnected: u64,
    pub completeness: Completeness,
    pub subscribers_incomplete: u64,
    pub subscribers_with_duplicates: u64,
    pub subscribers_out_of_order: u64,
    pub foreign_payloads: u64,
    pub resets: u64,
    pub reconnects: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Deliveries per 10 ms since t0.
    pub buckets: Vec<u64>,
    pub latency: Vec<(u64, u64)>,
    pub errors: BTreeMap<String, u64>,
}

/// A worker's shared counters (one thread, so cells).
struct State {
    hist: RefCell<Histogram<u64>>,
    delivered: Cell<u64>,
    connected: Cell<u64>,
    failed: Cell<u64>,
    t0: Cell<u64>,
    buckets: RefCell<Vec<u64>>,
    first_ns: Cell<u64>,
    last_ns: Cell<u64>,
    foreign: Cell<u64>,
    resets: Cell<u64>,
    reconnects: Cell<u64>,
    errors: Errors,
    changed: Notify,
}

/// The payload of a `ringcast.v1` message envelope (a multi-topic SSE stream's `data:`, issue
/// 16): the `"data"` string, which for this tool's payloads (digits, spaces, dots, the topic
/// name) needs no unescaping. Anything else is returned as it is.
fn envelope_data(data: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"data\":\"";
    if data.first() != Some(&b'{') {
        return data;
    }
    let Some(at) = data.windows(KEY.len()).position(|w| w == KEY) else {
        return data;
    };
    let rest = &data[at + KEY.len()..];
    match rest.iter().position(|&b| b == b'"') {
        Some(end) => &rest[..end],
        None => data,
    }
}

impl State {
    fn deliver(&self, tr: &mut Tracker, topic: usize, data: &[u8]) {
        let now = mono_ns();
        let Some(f) = parse_payload(envelope_data(data)) else {
            self.foreign.set(self.foreign.get() + 1);
            return;
        };
        if f.tag != topic as u64 {
            tr.unexpected += 1;
            return;
        }
        tr.record(f.seq);
        stats::record(&mut self.hist.borrow_mut(), now.saturating_sub(f.ts_ns));
        self.delivered.set(self.delivered.get() + 1);
        if self.first_ns.get() == 0 {
            self.first_ns.set(now);
        }
        self.last_ns.set(now);
        let t0 = self.t0.get();
        if t0 != 0 && now >= t0 {
            let b = ((now - t0) / BUCKET_NS) as usize;
            let mut v = self.buckets.borrow_mut();
            if v.len() <= b {
                v.resize(b + 1, 0);
            }
            v[b] += 1;
        }
    }

    fn up(&self) {
        self.connected.set(self.connected.get() + 1);
        self.changed.notify_one();
    }

    fn fail(&self, why: &str) {
        self.errors.add(why);
        self.failed.set(self.failed.get() + 1);
        self.changed.notify_one();
    }
}

enum End {
    Complete,
    Stopped,
    Disconnected(Fail),
}

struct Outcome {
    tracker: Tracker,
    connected: bool,
    disconnected: bool,
}

/// The worker: connects its share of subscribers, reports ready, runs until all its expected
/// deliveries arrived or the parent says stop.
pub async fn worker(cfg: Rc<Cfg>, mut link: WorkerLink) {
    let st = Rc::new(State {
        hist: RefCell::new(new_histogram()),
        delivered: Cell::new(0),
        connected: Cell::new(0),
        failed: Cell::new(0),
        t0: Cell::new(0),
        buckets: RefCell::new(Vec::new()),
        first_ns: Cell::new(0),
        last_ns: Cell::new(0),
        foreign: Cell::new(0),
        resets: Cell::new(0),
        reconnects: Cell::new(0),
        errors: Errors::default(),
        changed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Rc::new(Semaphore::new(cfg.env.connect_concurrency));
    let mine: Vec<usize> = cfg.env.mine(cfg.a.subscribers).collect();
    let n = mine.len() as u64;
    let mut tasks = Vec::with_capacity(mine.len());
    for &i in &mine {
        let (cfg, st, sem, stop) = (cfg.clone(), st.clone(), sem.clone(), stop_rx.clone());
        tasks.push(tokio::task::spawn_local(subscriber(cfg, st, sem, i, stop)));
    }
    // Connect phase.
    let deadline = tokio::time::Instant::now() + cfg.env.connect_timeout;
    connect_phase(&st.connected, &st.failed, &st.changed, n, deadline, &link).await;
    // Run phase: progress once a second until every task ended or the parent stops us.
    let all_done = {
        let tasks_left = Rc::new(Cell::new(tasks.len()));
        let done_notify = Rc::new(Notify::new());
        let mut joined = Vec::with_capacity(tasks.len());
        for t in tasks {
            let (left, dn) = (tasks_left.clone(), done_notify.clone());
            joined.push(tokio::task::spawn_local(async move {
                let r = t.await;
                left.set(left.get() - 1);
                if left.get() == 0 {
                    dn.notify_one();
                }
                r
            }));
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            if tasks_left.get() == 0 {
                break;
            }
            tokio::select! {
                d = link.down.recv() => match d {
                    Some(Down::Go { t0_ns }) => st.t0.set(t0_ns),
                    Some(Down::Stop) | None => break,
                },
                _ = done_notify.notified() => {}
                _ = ticker.tick() => link.send(Up::Progress {
                    connected: st.connected.get(),
                    done: st.delivered.get(),
                }),
            }
        }
        let _ = stop_tx.send(true);
        joined
    };
    let mut r = WorkerReport {
        subscribers: n,
        ..Default::default()
    };
    for j in all_done {
        let Ok(Ok(o)) = j.await else {
            r.failed += 1;
            continue;
        };
        if !o.connected {
            r.failed += 1;
            continue;
        }
        r.connected += 1;
        r.disconnected += u64::from(o.disconnected);
        let c = o.tracker.totals();
        r.subscribers_incomplete += u64::from(c.missing > 0);
        r.subscribers_with_duplicates += u64::from(c.duplicated > 0);
        r.subscribers_out_of_order += u64::from(c.out_of_order > 0);
        r.completeness.add(&c);
    }
    r.foreign_payloads = st.foreign.get();
    r.resets = st.resets.get();
    r.reconnects = st.reconnects.get();
    r.first_ns = st.first_ns.get();
    r.last_ns = st.last_ns.get();
    r.buckets = st.buckets.take();
    r.latency = histogram_pairs(&st.hist.borrow());
    r.errors = st.errors.take();
    link.send(Up::Report {
        report: serde_json::to_value(&r).unwrap_or_default(),
    });
}

async fn subscriber(
    cfg: Rc<Cfg>,
    st: Rc<State>,
    sem: Rc<Semaphore>,
    i: usize,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let topic = i % cfg.a.topics;
    let mut tracker = Tracker::new(cfg.expected_for_topic(topic));
    let mut rng = Rng::new(mono_ns() ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let path = cfg.sub.path(&cfg.topic(topic));
    let src = cfg.env.src(i);
    let mut out = Outcome {
        tracker: Tracker::new(0),
        connected: false,
        disconnected: false,
    };
    let opened = {
        let Ok(_permit) = sem.acquire().await else {
            return out;
        };
        let open = open(&cfg, &path, src, &mut rng);
        tokio::select! {
            r = open => r,
            _ = stop.wait_for(|s| *s) => Err("stopped while connecting".to_string()),
        }
    };
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            st.fail(&e);
            out.tracker = tracker;
            return out;
        }
    };
    st.up();
    out.connected = true;
    let end = match opened {
        Opened::Sse(c, chunked) => run_sse(c, chunked, &st, &mut tracker, topic, &mut stop).await,
        Opened::Ws(c) => run_ws(c, &st, &mut tracker, topic, &mut rng, &mut stop).await,
        Opened::Poll(c, cursor) => {
            run_poll(
                &cfg,
                c,
                cursor,
                &path,
                src,
                &st,
                &mut tracker,
                topic,
                &mut stop,
            )
            .await
        }
    };
    if let End::Disconnected(why) = end {
        if !tracker.complete() {
            st.errors.add(&why);
            out.disconnected = true;
        }
    }
    out.tracker = tracker;
    out
}

enum Opened {
    Sse(Conn, bool),
    Ws(Conn),
    /// The connection (None for nchan style before its first request) and the cursor.
    Poll(Option<Conn>, Cursor),
}

#[derive(Debug, Clone)]
enum Cursor {
    /// ringcast: the `since` position.
    Since(String),
    /// nchan: Last-Modified and Etag of the previous answer.
    Nchan(Option<String>, Option<String>),
}

async fn open(
    cfg: &Cfg,
    path: &str,
    src: Option<std::net::Ipv4Addr>,
    rng: &mut Rng,
) -> Result<Opened, Fail> {
    let t = &cfg.sub;
    match cfg.a.transport {
        Transport::Ws => Ok(Opened::Ws(wsconn::connect(t, path, src, rng).await?)),
        Transport::Sse => {
            let (c, chunked) = net::open_sse(t, path, src).await?;
            Ok(Opened::Sse(c, chunked))
        }
        Transport::Longpoll => match cfg.a.longpoll_style {
            LongpollStyle::Ringcast => {
                let s = net::connect(t.addr, src)
                    .await
                    .map_err(|e| net::io_fail("connect", e))?;
                let mut c = Conn::new(s);
                let (body, close) = get(&mut c, &t.host, path, &[], 200).await?;
                let next = poll_json(&body)?.next;
                Ok(Opened::Poll((!close).then_some(c), Cursor::Since(next)))
            }
            LongpollStyle::Nchan => {
                let s = net::connect(t.addr, src)
                    .await
                    .map_err(|e| net::io_fail("connect", e))?;
                Ok(Opened::Poll(Some(Conn::new(s)), Cursor::Nchan(None, None)))
            }
        },
    }
}

/// One GET; the body if the status is `want`, and whether the server closes.
async fn get(
    c: &mut Conn,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    want: u16,
) -> Result<(Vec<u8>, bool), Fail> {
    let mut req = Vec::with_capacity(256);
    http::encode_request("GET", host, path, extra, None, &mut req);
    c.write_all(&req).await?;
    let h = c.read_head().await?;
    let body = c.read_body(&h).await?;
    if h.status != want {
        return Err(format!("status {}", h.status));
    }
    Ok((body, h.close))
}

async fn run_sse(
    mut c: Conn,
    chunked: bool,
    st: &State,
    tr: &mut Tracker,
    topic: usize,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut p = SseParser::new();
    let mut dechunk = chunked.then(http::Dechunker::default);
    let mut plain = Vec::new();
    loop {
        let bytes: &[u8] = match &mut dechunk {
            None => &c.buf,
            Some(d) => {
                plain.clear();
                if d.feed(&c.buf, &mut plain).is_err() {
                    return End::Disconnected("bad chunked stream".into());
                }
                &plain
            }
        };
        p.feed(bytes, |e| {
            if e.event == b"reset" {
                st.resets.set(st.resets.get() + 1);
            } else {
                st.deliver(tr, topic, e.data);
            }
        });
        c.buf.clear();
        if tr.complete() {
            return End::Complete;
        }
        tokio::select! {
            r = c.fill() => match r {
                Ok(0) => return End::Disconnected("eof".into()),
                Ok(_) => {}
                Err(e) => return End::Disconnected(net::io_fail("read", e)),
            },
            _ = stop.wait_for(|s| *s) => return End::Stopped,
        }
    }
}

async fn run_ws(
    mut c: Conn,
    st: &State,
    tr: &mut Tracker,
    topic: usize,
    rng: &mut Rng,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let mut reader = wsconn::Reader::default();
    let mut replies = Vec::new();
    loop {
        match reader.drain(&mut c, &mut replies, rng, |m| st.deliver(tr, topic, m)) {
            Ok(None) => {}
            Ok(Some(wsconn::Closed::Code(code))) => {
                return End::Disconnected(format!("ws close {code}"))
            }
            Err(e) => return End::Disconnected(e),
        }
        if !replies.is_empty() {
            if let Err(e) = c.write_all(&replies).await {
                return End::Disconnected(e);
            }
            replies.clear();
        }
        if tr.complete() {
            return End::Complete;
        }
        tokio::select! {
            r = c.fill() => match r {
                Ok(0) => return End::Disconnected("eof".into()),
                Ok(_) => {}
                Err(e) => return End::Disconnected(net::io_fail("read", e)),
            },
            _ = stop.wait_for(|s| *s) => return End::Stopped,
        }
    }
}

/// ringcast's poll answer.
#[derive(Debug, Deserialize)]
struct PollAnswer {
    #[serde(default)]
    messages: Vec<PollMessage>,
    next: String,
    #[serde(default)]
    reset: bool,
}

#[derive(Debug, Deserialize)]
struct PollMessage {
    data: String,
}

fn poll_json(body: &[u8]) -> Result<PollAnswer, Fail> {
    serde_json::from_slice(body).map_err(|_| "bad poll json".to_string())
}

#[allow(clippy::too_many_arguments)]
async fn run_poll(
    cfg: &Cfg,
    mut conn: Option<Conn>,
    mut cursor: Cursor,
    path: &str,
    src: Option<std::net::Ipv4Addr>,
    st: &State,
    tr: &mut Tracker,
    topic: usize,
    stop: &mut watch::Receiver<bool>,
) -> End {
    let host = &cfg.sub.host;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        if tr.complete() {
            return End::Complete;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                st.reconnects.set(st.reconnects.get() + 1);
                match net::connect(cfg.sub.addr, src).await {
                    Ok(s) => Conn::new(s),
                    Err(e) => return End::Disconnected(net::io_fail("reconnect", e)),
                }
            }
        };
        let exchange = async {
            match &cursor {
                Cursor::Since(pos) => {
                    let p = format!("{path}{sep}since={pos}&wait={}", cfg.a.poll_wait);
                    let mut req = Vec::with_capacity(256);
                    http::encode_request("GET", host, &p, &[], None, &mut req);
                    c.write_all(&req).await?;
                    let h = c.read_head().await?;
                    let body = c.read_body(&h).await?;
                    Ok::<_, Fail>((h, body))
                }
                Cursor::Nchan(lm, etag) => {
                    let mut extra: Vec<(&str, &str)> = Vec::new();
                    if let Some(v) = lm {
                        extra.push(("If-Modified-Since", v));
                    }
                    if let Some(v) = etag {
                        extra.push(("If-None-Match", v));
                    }
                    let mut req = Vec::with_capacity(256);
                    http::encode_request("GET", host, path, &extra, None, &mut req);
                    c.write_all(&req).await?;
                    let h = c.read_head().await?;
                    let body = c.read_body(&h).await?;
                    Ok((h, body))
                }
            }
        };
        let r = tokio::select! {
            r = exchange => r,
            _ = stop.wait_for(|s| *s) => return End::Stopped,
        };
        let (h, body) = match r {
            Ok(x) => x,
            Err(e) => {
                // A keep-alive connection the server closed between requests: reconnect.
                st.errors.add(&format!("poll: {e}"));
                continue;
            }
        };
        match (&mut cursor, h.status) {
            (Cursor::Since(pos), 200) => match poll_json(&body) {
                Ok(a) => {
                    if a.reset {
                        st.resets.set(st.resets.get() + 1);
                    }
                    for m in &a.messages {
                        st.deliver(tr, topic, m.data.as_bytes());
                    }
                    *pos = a.next;
                }
                Err(e) => return End::Disconnected(e),
            },
            (Cursor::Since(pos), 204) => {
                if let Some(n) = h.ringcast_next.clone() {
                    *pos = n;
                }
            }
            (Cursor::Nchan(lm, etag), 200) => {
                st.deliver(tr, topic, &body);
                *lm = h.last_modified.clone();
                *etag = h.etag.clone();
            }
            (Cursor::Nchan(..), 304 | 408) => {}
            (_, s) => {
                st.errors.add(&format!("poll status {s}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !h.close {
            conn = Some(c);
        }
    }
}

/// What the publisher did.
struct PubReport {
    published: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    end_ns: u64,
}

struct Job {
    topic: usize,
    seq: u64,
    due_ns: u64,
}

/// Publishes every message on its schedule from `t0`; `published` counts answered publishes.
async fn publish(cfg: Rc<Cfg>, t0: u64, published: Rc<Cell<u64>>) -> PubReport {
    let p = cfg.a.pub_connections.clamp(1, cfg.a.topics);
    let errors = Rc::new(Errors::default());
    let hist = Rc::new(RefCell::new(new_histogram()));
    let mut senders = Vec::with_capacity(p);
    let mut tasks = Vec::with_capacity(p);
    for _ in 0..p {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        senders.push(tx);
        let (cfg, errors, hist, published) =
            (cfg.clone(), errors.clone(), hist.clone(), published.clone());
        tasks.push(if cfg.a.pub_pipeline > 1 {
            tokio::task::spawn_local(pub_conn_pipelined(cfg, rx, errors, hist, published))
        } else {
            tokio::task::spawn_local(pub_conn(cfg, rx, errors, hist, published))
        });
    }
    let period = 1e9 / cfg.a.rate;
    let tt = cfg.a.topics as u64;
    let mut i = 0u64;
    while i < cfg.messages {
        let now = mono_ns();
        // Everything due by now goes out; then sleep until the next one is due.
        loop {
            let due = t0 + (i as f64 * period) as u64;
            if i >= cfg.messages || due > now {
                break;
            }
            let topic = (i % tt) as usize;
            let _ = senders[topic % p].send(Job {
                topic,
                seq: i / tt,
                due_ns: due,
            });
            i += 1;
        }
        if i < cfg.messages {
            let due = t0 + (i as f64 * period) as u64;
            let wake = due.saturating_sub(cfg.a.spin_us * 1000);
            if wake > mono_ns() {
                tokio::time::sleep_until(net::instant_at(wake)).await;
            }
            while cfg.a.spin_us > 0 && mono_ns() < due {
                tokio::task::yield_now().await;
            }
        }
    }
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    let latency = hist.borrow().clone();
    PubReport {
        published: published.get(),
        errors: errors.take(),
        latency,
        end_ns: mono_ns(),
    }
}

async fn pub_conn(
    cfg: Rc<Cfg>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    errors: Rc<Errors>,
    hist: Rc<RefCell<Histogram<u64>>>,
    published: Rc<Cell<u64>>,
) {
    let t = &cfg.publ;
    let mut conn: Option<Conn> = None;
    let mut body = Vec::with_capacity(cfg.a.size + 64);
    let mut req = Vec::with_capacity(cfg.a.size + 256);
    while let Some(job) = rx.recv().await {
        body.clear();
        encode_payload(job.seq, job.due_ns, job.topic as u64, cfg.a.size, &mut body);
        req.clear();
        let path = t.path(&cfg.topic(job.topic));
        http::encode_request("POST", &t.host, &path, &[], Some(&body), &mut req);
        // One retry on a fresh connection: a keep-alive connection may have been closed.
        let mut ok = false;
        for _attempt in 0..2 {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match net::connect(t.addr, None).await {
                    Ok(s) => Conn::new(s),
                    Err(e) => {
                        errors.add(&net::io_fail("publish connect", e));
                        continue;
                    }
                },
            };
            let r = async {
                c.write_all(&req).await?;
                let h = c.read_head().await?;
                c.read_body(&h).await?;
                Ok::<_, Fail>(h)
            }
            .await;
            match r {
                Ok(h) => {
                    if (200..300).contains(&h.status) {
                        ok = true;
                    } else {
                        errors.add(&format!("publish status {}", h.status));
                    }
                    if !h.close {
                        conn = Some(c);
                    }
                    break;
                }
                Err(e) => errors.add(&format!("publish: {e}")),
            }
        }
        if ok {
            published.set(published.get() + 1);
            stats::record(&mut hist.borrow_mut(), mono_ns().saturating_sub(job.due_ns));
        }
    }
}

/// A publisher connection with up to `--pub-pipeline` requests in flight: requests go out as
/// they are due (several in one write when several are due), answers come back in order. A
/// failed connection fails the publishes in flight on it (no retry: they may have been
/// published) and the next ones use a new connection.
async fn pub_conn_pipelined(
    cfg: Rc<Cfg>,
    mut rx: mpsc::UnboundedReceiver<Job>,
    errors: Rc<Errors>,
    hist: Rc<RefCell<Histogram<u64>>>,
    published: Rc<Cell<u64>>,
) {
    let t = &cfg.publ;
    let depth = cfg.a.pub_pipeline;
    let mut conn: Option<Conn> = None;
    let mut inflight: std::collections::VecDeque<u64> = Default::default();
    let mut body = Vec::with_capacity(cfg.a.size + 64);
    let mut req = Vec::with_capacity((cfg.a.size + 256) * depth);
    let mut open = true;
    loop {
        // Fill the pipe with what is due; wait for a job only when nothing is in flight.
        let mut unsent = 0;
        while open && inflight.len() < depth {
            let job = if inflight.is_empty() {
                match rx.recv().await {
                    Some(j) => j,
                    None => {
                        open = false;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            body.clear();
            encode_payload(job.seq, job.due_ns, job.topic as u64, cfg.a.size, &mut body);
            let path = t.path(&cfg.topic(job.topic));
            http::encode_request("POST", &t.host, &path, &[], Some(&body), &mut req);
            inflight.push_back(job.due_ns);
            unsent += 1;
        }
        if inflight.is_empty() {
            return;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => match net::connect(t.addr, None).await {
                Ok(s) => Conn::new(s),
                Err(e) => {
                    // Only the requests not yet sent can be in `req`: the pipe was empty.
                    let why = net::io_fail("publish connect", e);
                    for _ in 0..inflight.len() {
                        errors.add(&why);
                    }
                    inflight.clear();
                    req.clear();
                    continue;
                }
            },
        };
        let r = async {
            if unsent > 0 {
                c.write_all(&req).await?;
            }
            let h = c.read_head().await?;
            c.read_body(&h).await?;
            Ok::<_, Fail>(h)
        }
        .await;
        req.clear();
        let due = inflight.pop_front().unwrap_or_default();
        match r {
            Ok(h) => {
                if (200..300).contains(&h.status) {
                    published.set(published.get() + 1);
                    stats::record(&mut hist.borrow_mut(), mono_ns().saturating_sub(due));
                } else {
                    errors.add(&format!("publish status {}", h.status));
                }
                if h.close {
                    for _ in 0..inflight.len() {
                        errors.add("publish: connection closed with requests in flight");
                    }
                    inflight.clear();
                } else {
                    conn = Some(c);
                }
            }
            Err(e) => {
                errors.add(&format!("publish: {e}"));
                for _ in 0..inflight.len() {
                    errors.add(&format!("publish: {e}"));
                }
                inflight.clear();
            }
        }
    }
}

/// The parent: starts workers, waits for them to connect, publishes, merges, prints.
pub async fn run(cfg: Rc<Cfg>) -> Result<serde_json::Value, String> {
    let env = &cfg.env;
    let c2 = cfg.clone();
    let mut w = env.start_workers(move |link| {
        tokio::task::spawn_local(worker(c2, link));
    })?;
    let n = cfg.a.subscribers as u64;
    let started = mono_ns();
    w.pump_until(
        None,
        |w| w.all_ready(),
        |w| env.progress(format_args!("connecting: {}/{n} up", w.totals().0)),
    )
    .await;
    let (up, failed) = w
        .ready
        .iter()
        .flatten()
        .fold((0, 0), |(a, b), &(c, f)| (a + c, b + f));
    let connect_secs = (mono_ns() - started) as f64 / 1e9;
    env.progress(format_args!(
        "{up}/{n} subscribers up ({failed} failed) in {connect_secs:.1}s; publishing {} messages at {}/s",
        cfg.messages, cfg.a.rate
    ));
    tokio::time::sleep(Duration::from_millis(cfg.a.settle_ms)).await;
    let mut load_pids = w.pids();
    load_pids.push(std::process::id());
    let cpu_before = CpuSnapshot::take(&cfg.a.server_pid, &load_pids);
    let t0 = mono_ns() + 20_000_000;
    w.broadcast(Down::Go { t0_ns: t0 });
    let published = Rc::new(Cell::new(0u64));
    let pub_task = tokio::task::spawn_local(publish(cfg.clone(), t0, published.clone()));
    let expected = cfg.expected_total();
    let planned_end = t0 + (cfg.messages as f64 * 1e9 / cfg.a.rate) as u64;
    let m = cfg.messages;
    let tick = |w: &crate::link::Workers| {
        env.progress(format_args!(
            "published {}/{m}, delivered {}/{expected}",
            published.get(),
            w.totals().1
        ))
    };
    // Until the publisher is done (workers may finish earlier only if nothing is expected).
    let pub_report;
    {
        let pub_task = pub_task;
        tokio::pin!(pub_task);
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        loop {
            tokio::select! {
                r = &mut pub_task => { pub_report = r.map_err(|e| format!("publisher: {e}"))?; break; }
                m = w.rx.recv() => if let Some((i, u)) = m { w.apply(i, u) },
                _ = ticker.tick() => tick(&w),
            }
        }
    }
    let deadline_ns = pub_report.end_ns.max(planned_end) + (cfg.a.timeout * 1e9) as u64;
    let finished = w
        .pump_until(
            Some(net::instant_at(deadline_ns)),
            |w| w.all_reported(),
            tick,
        )
        .await;
    if !finished {
        w.broadcast(Down::Stop);
        w.pump_until(None, |w| w.all_reported(), |_| {}).await;
    }
    // Before reaping: a worker that exited is a zombie until then, and keeps its CPU times.
    let cpu_after = CpuSnapshot::take(&cfg.a.server_pid, &load_pids);
    w.reap().await;
    let mut v = summary(&cfg, &w, pub_report, t0, planned_end, !finished, up, failed);
    let delivered = v["deliveries"].as_u64().unwrap_or(0);
    if let Some(o) = v.as_object_mut() {
        o.extend(cpu_fields(&cpu_before, &cpu_after, delivered));
    }
    Ok(v)
}

/// CPU time of the server, of this tool (parent and workers) and of the machine at one moment.
struct CpuSnapshot {
    at_ns: u64,
    /// None when a server process could not be read (gone, or no --server-pid).
    server_ticks: Option<u64>,
    load_ticks: Option<u64>,
    machine: Option<stats::MachineTicks>,
}

impl CpuSnapshot {
    fn take(server: &[u32], load: &[u32]) -> CpuSnapshot {
        let ticks = |pids: &[u32]| -> Option<u64> {
            if pids.is_empty() {
                return None;
            }
            pids.iter().try_fold(0, |sum, pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                Some(sum + stats::parse_stat_cpu_ticks(&stat)?)
            })
        };
        CpuSnapshot {
            at_ns: mono_ns(),
            server_ticks: ticks(server),
            load_ticks: ticks(load),
            machine: std::fs::read_to_string("/proc/stat")
                .ok()
                .and_then(|s| stats::parse_proc_stat(&s)),
        }
    }
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The report's CPU fields: seconds and µs per delivery for the server and for this tool, and
/// how many cores the machine was busy (and stolen by the hypervisor) over the same window.
/// Ticks are 10 ms, so a window of a few seconds is what makes these exact to a percent.
fn cpu_fields(
    a: &CpuSnapshot,
    b: &CpuSnapshot,
    delivered: u64,
) -> serde_json::Map<String, serde_json::Value> {
    let hz = clock_ticks_per_sec();
    let secs = (b.at_ns - a.at_ns) as f64 / 1e9;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let cpu = |x: Option<u64>, y: Option<u64>| {
        let s = y?.checked_sub(x?)? as f64 / hz;
        Some(s)
    };
    let per = |s: Option<f64>| {
        s.filter(|_| delivered > 0)
            .map(|s| r3(s * 1e6 / delivered as f64))
    };
    let server = cpu(a.server_ticks, b.server_ticks);
    let load = cpu(a.load_ticks, b.load_ticks);
    let (busy, steal) = match (a.machine, b.machine) {
        (Some(x), Some(y)) => (
            Some(y.busy.saturating_sub(x.busy) as f64 / hz / secs),
            Some(y.steal.saturating_sub(x.steal) as f64 / hz / secs),
        ),
        _ => (None, None),
    };
    let mut m = serde_json::Map::new();
    m.insert("cpu_window_seconds".into(), json!(r3(secs)));
    m.insert("server_cpu_seconds".into(), json!(server.map(r3)));
    m.insert("server_us_per_delivery".into(), json!(per(server)));
    m.insert("server_cores".into(), json!(server.map(|s| r3(s / secs))));
    m.insert("load_cpu_seconds".into(), json!(load.map(r3)));
    m.insert("load_us_per_delivery".into(), json!(per(load)));
    m.insert("load_cores".into(), json!(load.map(|s| r3(s / secs))));
    m.insert("machine_busy_cores".into(), json!(busy.map(r3)));
    m.insert("machine_steal_cores".into(), json!(steal.map(r3)));
    m
}

#[allow(clippy::too_many_arguments)]
fn summary(
    cfg: &Cfg,
    w: &crate::link::Workers,
    p: PubReport,
    t0: u64,
    planned_end: u64,
    timed_out: bool,
    up: u64,
    failed: u64,
) -> serde_json::Value {
    let mut hist = new_histogram();
    let mut total = WorkerReport::default();
    let mut buckets: Vec<u64> = Vec::new();
    let mut worker_failures = Vec::new();
    for r in &w.reports {
        let r: WorkerReport = match r {
            Some(Ok(v)) => match serde_json::from_value(v.clone()) {
                Ok(r) => r,
                Err(e) => {
                    worker_failures.push(format!("bad report: {e}"));
                    continue;
                }
            },
            Some(Err(e)) => {
                worker_failures.push(e.clone());
                continue;
            }
            None => continue,
        };
        merge_pairs(&mut hist, &r.latency);
        if buckets.len() < r.buckets.len() {
            buckets.resize(r.buckets.len(), 0);
        }
        for (a, b) in buckets.iter_mut().zip(&r.buckets) {
            *a += b;
        }
        total.subscribers += r.subscribers;
        total.connected += r.connected;
        total.failed += r.failed;
        total.disconnected += r.disconnected;
        total.completeness.add(&r.completeness);
        total.subscribers_incomplete += r.subscribers_incomplete;
        total.subscribers_with_duplicates += r.subscribers_with_duplicates;
        total.subscribers_out_of_order += r.subscribers_out_of_order;
        total.foreign_payloads += r.foreign_payloads;
        total.resets += r.resets;
        total.reconnects += r.reconnects;
        if r.first_ns != 0 && (total.first_ns == 0 || r.first_ns < total.first_ns) {
            total.first_ns = r.first_ns;
        }
        total.last_ns = total.last_ns.max(r.last_ns);
        merge_errors(&mut total.errors, r.errors);
    }
    let delivered = hist.len();
    let pub_end = p.end_ns.max(planned_end);
    let window_buckets = ((pub_end - t0).div_ceil(BUCKET_NS)) as usize;
    let in_window: u64 = buckets.iter().take(window_buckets).sum();
    let window_secs = (window_buckets as u64 * BUCKET_NS) as f64 / 1e9;
    let to_last_secs = total.last_ns.saturating_sub(t0) as f64 / 1e9;
    let per_second: Vec<u64> = buckets.chunks(100).map(|c| c.iter().sum()).collect();
    let c = &total.completeness;
    let round = |x: f64| (x * 10.0).round() / 10.0;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "mode": "fanout",
        "transport": cfg.a.transport,
        "longpoll_style": (cfg.a.transport == Transport::Longpoll).then_some(cfg.a.longpoll_style),
        "url_sub": cfg.a.url_sub.as_deref().unwrap_or(cfg.a.transport.default_route()),
        "url_pub": cfg.a.url_pub,
        "subscribers": cfg.a.subscribers,
        "topics": cfg.a.topics,
        "messages": cfg.messages,
        "rate": cfg.a.rate,
        "pub_connections": cfg.a.pub_connections,
        "pub_pipeline": cfg.a.pub_pipeline,
        "size": cfg.a.size,
        "processes": w.len(),
        "connected": up,
        "connect_failed": failed,
        "disconnected": total.disconnected,
        "published": p.published,
        "publish_seconds": r3((p.end_ns - t0) as f64 / 1e9),
        "publish_latency_us": latency_us(&p.latency),
        "expected_deliveries": c.expected,
        "deliveries": delivered,
        "deliveries_per_sec_publish_window": round(in_window as f64 / window_secs.max(1e-9)),
        "deliveries_per_sec_to_last": round(delivered as f64 / to_last_secs.max(1e-9)),
        "seconds_to_last_delivery": r3(to_last_secs),
        "latency_us": latency_us(&hist),
        "missing": c.missing,
        "duplicated": c.duplicated,
        "out_of_order": c.out_of_order,
        "unexpected": c.unexpected,
        "subscribers_incomplete": total.subscribers_incomplete,
        "subscribers_with_duplicates": total.subscribers_with_duplicates,
        "subscribers_out_of_order": total.subscribers_out_of_order,
        "foreign_payloads": total.foreign_payloads,
        "resets": total.resets,
        "reconnects": total.reconnects,
        "timed_out": timed_out,
        "complete": c.missing == 0 && c.duplicated == 0 && c.out_of_order == 0 && failed == 0 && total.disconnected == 0,
        "deliveries_per_second": per_second,
        "errors": total.errors,
        "publish_errors": p.errors,
        "worker_failures": worker_failures,
    })
}
