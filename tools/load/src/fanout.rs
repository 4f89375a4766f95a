//! `fanout`: N subscribers over T topics, M messages published at a constant total rate.
//!
//! Open loop: message i (topic i mod T, sequence i div T) has the intended send time
//! t0 + i / R and carries it; latency is receive time − intended time, so a publisher or server
//! stall shows up as latency instead of silently slowing the schedule. Publishers are P
//! keep-alive connections; topic t always goes out on connection t mod P, so a topic's messages
//! reach the server in order and any reordering seen by a subscriber is the server's.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Notify, Semaphore};

use crate::addr::{parse_targets, Target};
use crate::cli::{FanoutArgs, LongpollStyle, Transport};
use crate::http;
use crate::link::{Down, Up, WorkerLink};
use crate::net::{self, mono_ns, Conn, Fail};
use crate::payload::parse_payload;
use crate::publisher;
use crate::resume::{parse_v1, reset_close, Backoff, V1};
use crate::run::{connect_phase, merge_errors, Env, Errors};
use crate::sse::SseParser;
use crate::stats::{self, histogram_pairs, latency_us, merge_pairs, new_histogram};
use crate::track::{Completeness, Pos, TopicLog, Tracker};
use crate::ws::Rng;
use crate::wsconn;

/// Width of the delivery-time buckets workers report, ns.
const BUCKET_NS: u64 = 10_000_000;

/// The WebSocket subprotocol whose envelopes carry positions (ringcast README, "WebSocket").
const V1_PROTOCOL: &str = "ringcast.v1";

/// Everything a fanout process needs, resolved from the flags.
pub struct Cfg {
    pub a: FanoutArgs,
    pub env: Env,
    /// `--url-sub`'s templates: subscriber i starts on i mod n.
    pub subs: Vec<Target>,
    /// `--url-pub`'s templates: publisher connection p starts on p mod n.
    pub pubs: Vec<Target>,
    pub messages: u64,
}

impl Cfg {
    pub fn new(a: FanoutArgs) -> Result<Cfg, String> {
        let env = Env::new(&a.common, "load-")?;
        if a.topics == 0 || a.rate <= 0.0 {
            return Err("--topics and --rate must be positive".into());
        }
        if a.resume && a.pub_pipeline > 1 {
            return Err("--resume publishes one message at a time per connection: it needs --pub-pipeline 1".into());
        }
        if a.resume
            && a.longpoll_style == LongpollStyle::Nchan
            && a.transport == Transport::Longpoll
        {
            return Err("--resume needs positions: not with --longpoll-style nchan".into());
        }
        let subs = parse_targets(a.url_sub.as_deref().unwrap_or(a.transport.default_route()))?;
        let pubs = parse_targets(&a.url_pub)?;
        let messages = a.messages.unwrap_or((a.rate * a.seconds).round() as u64);
        Ok(Cfg {
            a,
            env,
            subs,
            pubs,
            messages,
        })
    }

    pub fn topic(&self, t: usize) -> String {
        format!("{}{t}", self.env.prefix)
    }

    /// WebSocket subscribers speak `ringcast.v1`: raw frames carry no position to resume from.
    fn ws_v1(&self) -> bool {
        self.a.transport == Transport::Ws && (self.a.ws_v1 || self.a.resume)
    }

    /// Messages topic `t` gets.
    pub fn expected_for_topic(&self, t: usize) -> u64 {
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
    pub resumes: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Deliveries per 10 ms since t0.
    pub buckets: Vec<u64>,
    pub latency: Vec<(u64, u64)>,
    #[serde(default)]
    pub socket_latency: Vec<(u64, u64)>,
    pub errors: BTreeMap<String, u64>,
}

/// A worker's shared counters (one thread, so cells).
struct State {
    hist: RefCell<Histogram<u64>>,
    /// Intended send → arrival in the socket, for `--socket-stamps`.
    hist_socket: RefCell<Histogram<u64>>,
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
    /// Streams reopened by `--resume`.
    resumes: Cell<u64>,
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
    /// Counts one message; `arrived` is when it reached the socket (CLOCK_MONOTONIC ns, 0:
    /// not known).
    fn deliver(&self, tr: &mut Tracker, topic: usize, data: &[u8], arrived: u64) {
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
        if arrived != 0 {
            let l = arrived.saturating_sub(f.ts_ns);
            stats::record(&mut self.hist_socket.borrow_mut(), l);
        }
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
    topic: usize,
    tracker: Tracker,
    connected: bool,
    disconnected: bool,
}

/// What the publisher did, per topic (`--resume`), once it has finished.
type Logs = Rc<Vec<Rc<TopicLog>>>;

/// What a subscriber waits for besides its stream: the end of the run, and the publisher's log.
struct Signals {
    stop: watch::Receiver<bool>,
    logs: watch::Receiver<Option<Logs>>,
    has_log: bool,
}

enum Wait<T> {
    Ready(T),
    Stop,
    /// The publisher's log came (apply it with `Sub::take_log`).
    Log,
}

impl Signals {
    async fn wait<T>(&mut self, f: impl std::future::Future<Output = T>) -> Wait<T> {
        let want_log = !self.has_log;
        tokio::select! {
            r = f => Wait::Ready(r),
            _ = self.stop.wait_for(|s| *s) => Wait::Stop,
            _ = self.logs.changed(), if want_log => Wait::Log,
        }
    }
}

/// One subscriber, across the streams it opens.
struct Sub<'a> {
    cfg: &'a Cfg,
    st: &'a State,
    topic: usize,
    tr: Tracker,
    /// The last position received: where a resumed stream starts.
    pos: Option<String>,
    /// The --url-sub template in use.
    tpl: usize,
    src: Option<Ipv4Addr>,
    rng: Rng,
    sig: Signals,
}

impl Sub<'_> {
    fn path(&self) -> String {
        self.cfg.subs[self.tpl].path(&self.cfg.topic(self.topic))
    }

    /// Applies the publisher's log (or notes that none will come).
    fn take_log(&mut self) {
        self.sig.has_log = true;
        let logs = self.sig.logs.borrow().clone();
        if let Some(l) = logs.and_then(|l| l.get(self.topic).cloned()) {
            self.tr.set_log(l);
        }
    }

    fn reset(&mut self, p: Option<Pos>) {
        self.st.resets.set(self.st.resets.get() + 1);
        if let Some(p) = p {
            self.pos = Some(p.to_string());
            self.tr.reset_at(p);
        }
    }
}

/// The worker: connects its share of subscribers, reports ready, runs until all its expected
/// deliveries arrived or the parent says stop.
pub async fn worker(cfg: Rc<Cfg>, mut link: WorkerLink) {
    let st = Rc::new(State {
        hist: RefCell::new(new_histogram()),
        hist_socket: RefCell::new(new_histogram()),
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
        resumes: Cell::new(0),
        errors: Errors::default(),
        changed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (log_tx, log_rx) = watch::channel::<Option<Logs>>(None);
    let sem = Rc::new(Semaphore::new(cfg.env.connect_concurrency));
    let mine: Vec<usize> = cfg.env.mine(cfg.a.subscribers).collect();
    let n = mine.len() as u64;
    let mut tasks = Vec::with_capacity(mine.len());
    for &i in &mine {
        let (cfg, st, sem) = (cfg.clone(), st.clone(), sem.clone());
        let sig = Signals {
            stop: stop_rx.clone(),
            logs: log_rx.clone(),
            has_log: false,
        };
        tasks.push(tokio::task::spawn_local(subscriber(cfg, st, sem, i, sig)));
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
                    Some(Down::Published { topics }) => {
                        let logs = topics.iter().map(|t| Rc::new(TopicLog::from_wire(t)));
                        let _ = log_tx.send(Some(Rc::new(logs.collect())));
                    }
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
    let mut outcomes = Vec::with_capacity(all_done.len());
    for j in all_done {
        match j.await {
            Ok(Ok(o)) if o.connected => outcomes.push(o),
            _ => r.failed += 1,
        }
    }
    // An uncertain message one subscriber of its topic received was published: absent at
    // another subscriber of the topic in this process, it is missing there.
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); cfg.a.topics];
    for o in &outcomes {
        seen[o.topic].extend(o.tracker.uncertain_received());
    }
    for o in outcomes {
        r.connected += 1;
        r.disconnected += u64::from(o.disconnected);
        let c = o.tracker.totals_seen(|s| seen[o.topic].contains(&s));
        r.subscribers_incomplete += u64::from(c.missing > 0);
        r.subscribers_with_duplicates += u64::from(c.duplicated > 0);
        r.subscribers_out_of_order += u64::from(c.out_of_order > 0);
        r.completeness.add(&c);
    }
    r.foreign_payloads = st.foreign.get();
    r.resets = st.resets.get();
    r.reconnects = st.reconnects.get();
    r.resumes = st.resumes.get();
    r.first_ns = st.first_ns.get();
    r.last_ns = st.last_ns.get();
    r.buckets = st.buckets.take();
    r.latency = histogram_pairs(&st.hist.borrow());
    r.socket_latency = histogram_pairs(&st.hist_socket.borrow());
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
    sig: Signals,
) -> Outcome {
    let topic = i % cfg.a.topics;
    let mut s = Sub {
        cfg: &cfg,
        st: &st,
        topic,
        tr: Tracker::new(cfg.expected_for_topic(topic)),
        pos: None,
        tpl: i % cfg.subs.len(),
        src: cfg.env.src(i),
        rng: Rng::new(mono_ns() ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        sig,
    };
    let mut out = Outcome {
        topic,
        tracker: Tracker::new(0),
        connected: false,
        disconnected: false,
    };
    let opened = {
        let Ok(_permit) = sem.acquire().await else {
            return out;
        };
        let path = s.path();
        let open = open(&cfg, s.tpl, &path, None, s.src, &mut s.rng);
        tokio::select! {
            r = open => r,
            _ = s.sig.stop.wait_for(|s| *s) => Err("stopped while connecting".to_string()),
        }
    };
    let mut opened = match opened {
        Ok(o) => o,
        Err(e) => {
            st.fail(&e);
            out.tracker = s.tr;
            return out;
        }
    };
    st.up();
    out.connected = true;
    let mut backoff = Backoff::default();
    loop {
        let end = match opened {
            Opened::Sse(c, chunked) => run_sse(&mut s, c, chunked).await,
            Opened::Ws(c) => run_ws(&mut s, c).await,
            Opened::Poll(c, cursor) => run_poll(&mut s, c, cursor).await,
        };
        let why = match end {
            End::Complete | End::Stopped => break,
            End::Disconnected(why) => why,
        };
        if s.tr.complete() {
            break;
        }
        if !cfg.a.resume {
            st.errors.add(&why);
            out.disconnected = true;
            break;
        }
        st.errors.add(&format!("resumed after: {why}"));
        // The next template, from the last position, until it works or the run ends.
        let next = loop {
            match s.sig.wait(tokio::time::sleep(backoff.next_delay())).await {
                Wait::Stop => break None,
                Wait::Log => {
                    s.take_log();
                    if s.tr.complete() {
                        break None;
                    }
                }
                Wait::Ready(()) => {}
            }
            s.tpl = (s.tpl + 1) % cfg.subs.len();
            let path = s.path();
            let open = open(&cfg, s.tpl, &path, s.pos.as_deref(), s.src, &mut s.rng);
            match s.sig.wait(open).await {
                Wait::Ready(Ok(o)) => break Some(o),
                Wait::Ready(Err(e)) => st.errors.add(&format!("resume: {e}")),
                Wait::Stop => break None,
                Wait::Log => s.take_log(),
            }
        };
        let Some(o) = next else { break };
        st.resumes.set(st.resumes.get() + 1);
        backoff.succeeded();
        opened = o;
    }
    out.tracker = s.tr;
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
    /// ringcast: the `since` position to start from (then the subscriber's `pos`).
    Since(String),
    /// nchan: Last-Modified and Etag of the previous answer.
    Nchan(Option<String>, Option<String>),
}

/// Opens a subscriber's stream on template `tpl` (`path` is its path for the topic), from
/// `pos` when it resumes.
async fn open(
    cfg: &Cfg,
    tpl: usize,
    path: &str,
    pos: Option<&str>,
    src: Option<Ipv4Addr>,
    rng: &mut Rng,
) -> Result<Opened, Fail> {
    let t = &cfg.subs[tpl];
    match cfg.a.transport {
        Transport::Ws if cfg.ws_v1() => {
            let path = match pos.and_then(Pos::parse) {
                Some(p) => crate::resume::with_since(path, &p),
                None => path.to_string(),
            };
            let mut c = wsconn::connect_with(t, &path, src, rng, Some(V1_PROTOCOL)).await?;
            if pos.is_none() {
                // Up once subscribed: the envelope says the subscription is placed.
                while !wsconn::has_text_frame_with(&c.buf, b"\"subscribed\"") {
                    match c.fill().await {
                        Ok(0) => return Err("eof before subscribed".into()),
                        Ok(_) => {}
                        Err(e) => return Err(net::io_fail("read", e)),
                    }
                }
            }
            Ok(Opened::Ws(c))
        }
        Transport::Ws => Ok(Opened::Ws(wsconn::connect(t, path, src, rng).await?)),
        Transport::Sse => {
            let (c, chunked) = net::open_sse_from(t, path, src, pos).await?;
            Ok(Opened::Sse(c, chunked))
        }
        Transport::Longpoll => match cfg.a.longpoll_style {
            LongpollStyle::Ringcast => {
                let s = net::connect(t.addr, src)
                    .await
                    .map_err(|e| net::io_fail("connect", e))?;
                let mut c = Conn::new(s);
                if let Some(p) = pos {
                    return Ok(Opened::Poll(Some(c), Cursor::Since(p.to_string())));
                }
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

/// Waits for more bytes on `c` (or the run's end, or the publisher's log): `Some(end)` when
/// the stream is over.
async fn more(s: &mut Sub<'_>, c: &mut Conn) -> Option<End> {
    match s.sig.wait(c.fill()).await {
        Wait::Ready(Ok(0)) => Some(End::Disconnected("eof".into())),
        Wait::Ready(Ok(_)) => None,
        Wait::Ready(Err(e)) => Some(End::Disconnected(net::io_fail("read", e))),
        Wait::Stop => Some(End::Stopped),
        Wait::Log => {
            s.take_log();
            None
        }
    }
}

/// `--socket-stamps`: the stream's reads from now on say when their bytes arrived.
fn stamp(s: &Sub<'_>, c: &mut Conn) -> Result<(), End> {
    if s.cfg.a.socket_stamps {
        c.stamp_arrivals()
            .map_err(|e| End::Disconnected(net::io_fail("SO_TIMESTAMPNS", e)))?;
    }
    Ok(())
}

async fn run_sse(s: &mut Sub<'_>, mut c: Conn, chunked: bool) -> End {
    if let Err(end) = stamp(s, &mut c) {
        return end;
    }
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
        let mut resets = Vec::new();
        let (st, tr, topic, arrived) = (s.st, &mut s.tr, s.topic, c.arrived_ns);
        p.feed(bytes, |e| {
            if e.event == b"reset" {
                // ringcast: `id:` and `data:` are the current position.
                resets.push(Pos::parse_bytes(e.data).or_else(|| Pos::parse_bytes(e.id)));
            } else {
                st.deliver(tr, topic, e.data, arrived);
            }
        });
        for r in resets {
            s.reset(r);
        }
        if !p.last_id().is_empty() {
            s.pos = Some(String::from_utf8_lossy(p.last_id()).into_owned());
        }
        c.buf.clear();
        if s.tr.complete() {
            return End::Complete;
        }
        if let Some(end) = more(s, &mut c).await {
            return end;
        }
    }
}

async fn run_ws(s: &mut Sub<'_>, mut c: Conn) -> End {
    if let Err(end) = stamp(s, &mut c) {
        return end;
    }
    let mut reader = wsconn::Reader::default();
    let mut replies = Vec::new();
    let v1 = s.cfg.ws_v1();
    loop {
        let mut resets = Vec::new();
        let (st, tr, topic, pos) = (s.st, &mut s.tr, s.topic, &mut s.pos);
        let arrived = c.arrived_ns;
        let r = reader.drain(&mut c, &mut replies, &mut s.rng, |m| {
            if !v1 {
                return st.deliver(tr, topic, m, arrived);
            }
            match parse_v1(m) {
                Some(V1::Message { id, data }) => {
                    st.deliver(tr, topic, data.as_bytes(), arrived);
                    if let Some(id) = id {
                        *pos = Some(id.to_string());
                    }
                }
                Some(V1::Reset { id }) => resets.push(id),
                Some(V1::Subscribed { id: Some(id) }) => *pos = Some(id.to_string()),
                Some(_) => {}
                None => st.foreign.set(st.foreign.get() + 1),
            }
        });
        for r in resets {
            s.reset(r);
        }
        match r {
            Ok(None) => {}
            Ok(Some(wsconn::Closed::Code(code))) => {
                if let Some(p) = reset_close(code, &reader.close_reason) {
                    s.reset(Some(p));
                }
                return End::Disconnected(format!("ws close {code}"));
            }
            Err(e) => return End::Disconnected(e),
        }
        if !replies.is_empty() {
            if let Err(e) = c.write_all(&replies).await {
                return End::Disconnected(e);
            }
            replies.clear();
        }
        if s.tr.complete() {
            return End::Complete;
        }
        if let Some(end) = more(s, &mut c).await {
            return end;
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
    #[serde(default)]
    id: Option<String>,
    data: String,
}

fn poll_json(body: &[u8]) -> Result<PollAnswer, Fail> {
    serde_json::from_slice(body).map_err(|_| "bad poll json".to_string())
}

/// Where a poll answer's reset put the subscriber: just before its first message, or `next`
/// when it has none.
fn poll_reset_pos(a: &PollAnswer) -> Option<Pos> {
    match a.messages.first() {
        Some(m) => {
            let p = Pos::parse(m.id.as_deref()?)?;
            Some(Pos {
                offset: p.offset.checked_sub(1)?,
                ..p
            })
        }
        None => Pos::parse(&a.next),
    }
}

async fn run_poll(s: &mut Sub<'_>, mut conn: Option<Conn>, mut cursor: Cursor) -> End {
    if let Cursor::Since(p) = &cursor {
        s.pos = Some(p.clone());
    }
    let (cfg, st) = (s.cfg, s.st);
    let host = &cfg.subs[s.tpl].host;
    let addr = cfg.subs[s.tpl].addr;
    let path = s.path();
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        if s.tr.complete() {
            return End::Complete;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => {
                st.reconnects.set(st.reconnects.get() + 1);
                match net::connect(addr, s.src).await {
                    Ok(s) => Conn::new(s),
                    Err(e) => return End::Disconnected(net::io_fail("reconnect", e)),
                }
            }
        };
        let since = s.pos.clone().unwrap_or_default();
        let (path, cur) = (&path, &cursor);
        let exchange = async move {
            match cur {
                Cursor::Since(_) => {
                    let p = format!("{path}{sep}since={since}&wait={}", cfg.a.poll_wait);
                    let mut req = Vec::with_capacity(256);
                    http::encode_request("GET", host, &p, &[], None, &mut req);
                    c.write_all(&req).await?;
                    let h = c.read_head().await?;
                    let body = c.read_body(&h).await?;
                    Ok::<_, Fail>((h, body, c))
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
                    Ok((h, body, c))
                }
            }
        };
        let r = match s.sig.wait(exchange).await {
            Wait::Ready(r) => r,
            Wait::Stop => return End::Stopped,
            Wait::Log => {
                // The poll in flight is given up (its connection with it): maybe nothing
                // more is owed now.
                s.take_log();
                continue;
            }
        };
        let (h, body, c) = match r {
            Ok(x) => x,
            Err(e) => {
                // A keep-alive connection the server closed between requests: reconnect.
                st.errors.add(&format!("poll: {e}"));
                continue;
            }
        };
        match (&mut cursor, h.status) {
            (Cursor::Since(_), 200) => match poll_json(&body) {
                Ok(a) => {
                    if a.reset {
                        s.reset(poll_reset_pos(&a));
                    }
                    for m in &a.messages {
                        st.deliver(&mut s.tr, s.topic, m.data.as_bytes(), 0);
                    }
                    s.pos = Some(a.next);
                }
                Err(e) => return End::Disconnected(e),
            },
            (Cursor::Since(_), 204) => {
                if let Some(n) = h.ringcast_next.clone() {
                    s.pos = Some(n);
                }
            }
            (Cursor::Nchan(lm, etag), 200) => {
                st.deliver(&mut s.tr, s.topic, &body, 0);
                *lm = h.last_modified.clone();
                *etag = h.etag.clone();
            }
            (Cursor::Nchan(..), 304 | 408) => {}
            (_, status) if cfg.a.resume && status >= 500 => {
                return End::Disconnected(format!("poll status {status}"));
            }
            (_, status) => {
                st.errors.add(&format!("poll status {status}"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !h.close {
            conn = Some(c);
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
    let pub_task = tokio::task::spawn_local(publisher::publish(cfg.clone(), t0, published.clone()));
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
    if cfg.a.resume {
        // What became of each message: subscribers stop waiting for what cannot come.
        let topics = pub_report
            .fates
            .iter()
            .map(|f| TopicLog::new(f.clone()).to_wire());
        w.broadcast(Down::Published {
            topics: topics.collect(),
        });
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
    p: publisher::PubReport,
    t0: u64,
    planned_end: u64,
    timed_out: bool,
    up: u64,
    failed: u64,
) -> serde_json::Value {
    let mut hist = new_histogram();
    let mut hist_socket = new_histogram();
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
        merge_pairs(&mut hist_socket, &r.socket_latency);
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
        total.resumes += r.resumes;
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
    let mut v = json!({
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
    });
    // How late the publisher sent, and --resume's figures (tools/load/README.md, "What
    // counts as what").
    if let Some(o) = v.as_object_mut() {
        o.insert("send_lag_us".into(), json!(latency_us(&p.send_lag)));
        if cfg.a.socket_stamps {
            o.insert("socket_latency_us".into(), json!(latency_us(&hist_socket)));
            o.insert("socket_stamped".into(), json!(hist_socket.len()));
        }
        o.insert("resume".into(), json!(cfg.a.resume));
        o.insert("resumes".into(), json!(total.resumes));
        o.insert("skipped_by_reset".into(), json!(c.skipped_by_reset));
        o.insert("uncertain_absent".into(), json!(c.uncertain_absent));
        o.insert("publish_retries".into(), json!(p.retries));
        o.insert("publish_uncertain".into(), json!(p.uncertain));
    }
    v
}
