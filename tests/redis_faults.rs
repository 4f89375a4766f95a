//! Faults between ringcast nodes and a real redis-server (`--redis`, issue 14): a partition
//! (a blackholing proxy), `CLIENT PAUSE`, `DEBUG SLEEP`, pushes the bridge drops, `kill -9` of
//! a node, `SHUTDOWN NOSAVE` and a restart of Redis, a killed pub/sub connection.
//!
//! Every test has subscribers on two nodes, over SSE, long poll and WebSocket, each a client
//! on its own thread that records what it is sent. The oracle is Redis itself: once the fault
//! is over, the topic's Stream holds exactly what was published, with its offsets, and every
//! subscriber must have received exactly that part of it after its start — every message
//! once, in order, with its position and payload — and no reset unless the test says so.
//! What publishers were told is checked against the same Stream: a 200's position is the
//! message's; a 503 "not confirmed" may be in it (once); any other 503 must not be.

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proxy::Proxy;
use redis_server::RedisServer;
use server::{read_response, Server};
use sse_parser::SseParser;

// ---- nodes ---------------------------------------------------------------------------------

/// A node on `url` (Redis or a proxy to it) with two shards, once its bridge is connected.
fn node_on(url: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--redis", url, "--shards", "2"];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    assert!(
        s.wait_log("redis: connected", Duration::from_secs(10)),
        "bridge never connected:\n{}",
        s.log()
    );
    s
}

fn node(r: &RedisServer, extra: &[&str]) -> Server {
    node_on(&r.url(), extra)
}

/// Waits until `node`'s log says "redis: connected" at least `n` times (bounded).
fn wait_connected(node: &Server, n: usize, within: Duration) {
    let end = Instant::now() + within;
    while node.log().matches("redis: connected").count() < n {
        assert!(Instant::now() < end, "no reconnect:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Publishes `m0` on `on` and waits until every node's position of `topic` is its position:
/// the topic exists everywhere and subscribers may start from there.
fn warm_up(on: &Server, nodes: &[&Server], topic: &str) -> String {
    let id = on.publish(topic, b"m0");
    for n in nodes {
        let end = Instant::now() + Duration::from_secs(10);
        while n.current(topic) != id {
            assert!(Instant::now() < end, "{} never saw {id}", n.addr);
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    id
}

// ---- publishing ----------------------------------------------------------------------------

/// What a publisher was told.
#[derive(Clone, Debug, PartialEq)]
enum Told {
    /// 200 with this position.
    Confirmed(String),
    /// 503 "not confirmed": sent to Redis, no answer; published at most once.
    NotConfirmed,
    /// Any other 503: refused, never published.
    Refused(String),
}

/// Every publish of a test, with what its publisher was told, and the slowest answer.
#[derive(Default)]
struct Ledger(Mutex<Vec<(String, Told)>>, Mutex<Duration>);

impl Ledger {
    /// Publishes `data` on `addr` (a fresh connection) and notes the answer: 200 or 503 with
    /// `Retry-After`, nothing else.
    fn publish(&self, addr: SocketAddr, topic: &str, data: &str) -> Told {
        let raw = server::post_raw(&format!("/pub/{topic}"), data.as_bytes());
        let t = Instant::now();
        let mut s = TcpStream::connect(addr).expect("connect to publish");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(&raw).unwrap();
        let r = read_response(&mut s, false).expect("a publish answer");
        let told = match r.status {
            200 => Told::Confirmed(r.json()["id"].as_str().unwrap().to_string()),
            503 => {
                assert!(r.header("Retry-After").is_some(), "503 without Retry-After");
                if r.text().starts_with("not confirmed") {
                    Told::NotConfirmed
                } else {
                    Told::Refused(r.text().trim_end().to_string())
                }
            }
            s => panic!("publish of {data} answered {s}: {}", r.text()),
        };
        self.0
            .lock()
            .unwrap()
            .push((data.to_string(), told.clone()));
        let mut slowest = self.1.lock().unwrap();
        *slowest = (*slowest).max(t.elapsed());
        told
    }

    fn slowest(&self) -> Duration {
        *self.1.lock().unwrap()
    }

    fn all(&self) -> Vec<(String, Told)> {
        self.0.lock().unwrap().clone()
    }

    /// How many answers were not a 200.
    fn failed(&self) -> usize {
        self.all()
            .iter()
            .filter(|(_, t)| !matches!(t, Told::Confirmed(_)))
            .count()
    }

    /// Where what publishers were told disagrees with Redis's Stream `truth`.
    fn check(&self, truth: &[(String, String)]) -> Vec<String> {
        let mut bad = Vec::new();
        for (data, told) in self.all() {
            let found: Vec<&String> = truth
                .iter()
                .filter(|(_, d)| *d == data)
                .map(|(id, _)| id)
                .collect();
            match told {
                Told::Confirmed(id) if found != [&id] => {
                    bad.push(format!("{data} was confirmed as {id}; Redis has {found:?}"))
                }
                Told::Refused(why) if !found.is_empty() => bad.push(format!(
                    "{data} was refused with 503 \"{why}\" (not \"not confirmed\"), yet Redis \
                     published it as {found:?}"
                )),
                _ => {}
            }
        }
        bad
    }
}

/// `n` publishes of `{tag}-{i}` on `addr`, one after the other, on a thread of their own.
fn publisher(
    ledger: &Arc<Ledger>,
    addr: SocketAddr,
    topic: &'static str,
    tag: &'static str,
    n: usize,
    every: Duration,
) -> JoinHandle<()> {
    let ledger = ledger.clone();
    std::thread::spawn(move || {
        for i in 1..=n {
            ledger.publish(addr, topic, &format!("{tag}-{i}"));
            std::thread::sleep(every);
        }
    })
}

// ---- the oracle ----------------------------------------------------------------------------

/// Redis's Stream of `topic` as positions and payloads: what was really published, in order.
/// Checks it first: offsets 1, 2, 3… (nothing trimmed) and no payload twice.
fn truth(r: &RedisServer, topic: &str) -> Vec<(String, String)> {
    let mut con = redis::Client::open(r.url())
        .unwrap()
        .get_connection()
        .expect("connect to redis");
    let e: String = redis::cmd("HGET")
        .arg(format!("rc:{{{topic}}}:m"))
        .arg("e")
        .query(&mut con)
        .expect("the topic's meta");
    let epoch = u64::from_str_radix(&e, 16).expect("a hex epoch");
    let entries: Vec<(String, Vec<Vec<u8>>)> = redis::cmd("XRANGE")
        .arg(format!("rc:{{{topic}}}:s"))
        .arg("-")
        .arg("+")
        .query(&mut con)
        .expect("the topic's Stream");
    let mut out = Vec::new();
    for (i, (id, fields)) in entries.iter().enumerate() {
        let offset: u64 = id.split('-').next().unwrap().parse().unwrap();
        assert_eq!(offset, i as u64 + 1, "the Stream is 1, 2, 3…: {id}");
        let d = fields
            .chunks(2)
            .find(|f| f[0] == b"d")
            .map(|f| String::from_utf8(f[1].clone()).unwrap())
            .expect("a d field");
        assert!(
            out.iter().all(|(_, x)| *x != d),
            "{d} is in the Stream twice"
        );
        out.push((format!("{epoch:x}:{offset}"), d));
    }
    out
}

/// The entries of `truth` after position `from` (same epoch; all of them for another epoch).
fn after(truth: &[(String, String)], from: &str) -> Vec<(String, String)> {
    let (fe, fo) = server::pos(from);
    truth
        .iter()
        .filter(|(id, _)| {
            let (e, o) = server::pos(id);
            e != fe || o > fo
        })
        .cloned()
        .collect()
}

// ---- subscribers ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Sse,
    Poll,
    /// A `ringcast.v1` WebSocket.
    V1,
    /// A raw WebSocket: payloads only, no positions, so it cannot resume elsewhere.
    Raw,
}

/// What a subscriber saw.
#[derive(Clone, Debug, PartialEq)]
enum Ev {
    /// A message: its position ("" on a raw WebSocket) and payload.
    Msg(String, String),
    /// A reset and the position it carries.
    Reset(String),
    /// The stream ended or could not be opened on a node, and why; the client goes on at the
    /// next node from its last position (a raw WebSocket stops).
    Lost(String),
    /// Something no test expects (another SSE event type, envelope or frame).
    Odd(String),
}

/// A client following one topic on its own thread, going from node to node when one fails.
struct Sub {
    name: String,
    via: Via,
    /// The position it started after.
    from: String,
    seen: Arc<Seen>,
    thread: Option<JoinHandle<()>>,
}

/// What a subscriber's thread shares with the test.
#[derive(Default)]
struct Seen {
    evs: Mutex<Vec<Ev>>,
    /// Heartbeats: SSE comments and WebSocket pings.
    beats: AtomicUsize,
    stop: AtomicBool,
}

impl Sub {
    /// Subscribes to `topic` after `from`, on `nodes[0]`, then the next node when one fails.
    fn open(via: Via, nodes: &[&Server], topic: &str, from: &str) -> Sub {
        let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
        let name = format!("{via:?} on {}", addrs[0]);
        let seen = Arc::new(Seen::default());
        let (s2, t, f) = (seen.clone(), topic.to_string(), from.to_string());
        let thread = std::thread::spawn(move || follow(via, &addrs, &t, f, &s2));
        Sub {
            name,
            via,
            from: from.to_string(),
            seen,
            thread: Some(thread),
        }
    }

    fn events(&self) -> Vec<Ev> {
        self.seen.evs.lock().unwrap().clone()
    }

    fn beats(&self) -> usize {
        self.seen.beats.load(Ordering::SeqCst)
    }

    fn has(&self, data: &str) -> bool {
        self.events()
            .iter()
            .any(|e| matches!(e, Ev::Msg(_, d) if d == data))
    }

    fn resets(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Ev::Reset(_)))
            .count()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.seen.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The client loop: one node after another (from its last position) until stopped.
fn follow(via: Via, addrs: &[SocketAddr], topic: &str, mut at: String, seen: &Seen) {
    let (evs, stop) = (&seen.evs, &seen.stop);
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let addr = addrs[i % addrs.len()];
        let why = match via {
            Via::Sse => sse(addr, topic, &mut at, seen),
            Via::Poll => poll(addr, topic, &mut at, seen),
            Via::V1 | Via::Raw => ws(via, addr, topic, &mut at, seen),
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        evs.lock().unwrap().push(Ev::Lost(format!("{addr}: {why}")));
        if via == Via::Raw {
            return;
        }
        i += 1;
        // A client's reconnect delay (EventSource waits too), not a test's wait.
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    Ok(s)
}

fn quiet(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// One SSE stream from `at` (`Last-Event-ID`) until it ends; returns why it ended.
fn sse(addr: SocketAddr, topic: &str, at: &mut String, seen: &Seen) -> String {
    let (evs, stop) = (&seen.evs, &seen.stop);
    let mut s = match connect(addr) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let req = format!("GET /sse/{topic} HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {at}\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return format!("write: {e}");
    }
    match read_response(&mut s, true) {
        Some(r) if r.status == 200 => {}
        Some(r) => return format!("status {}", r.status),
        None => return "no head".into(),
    }
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut p = SseParser::default();
    // Heartbeats of earlier streams, to add this one's to.
    let beats = seen.beats.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::SeqCst) {
            return "stopped".into();
        }
        let n = match std::io::Read::read(&mut s, &mut buf) {
            Ok(0) => return "EOF".into(),
            Ok(n) => n,
            Err(e) if quiet(&e) => continue,
            Err(e) => return format!("read: {e}"),
        };
        let events = p.feed(&buf[..n]);
        seen.beats.store(beats + p.comments(), Ordering::SeqCst);
        for e in events {
            *at = e.id.clone();
            let ev = match e.event.as_str() {
                "message" => Ev::Msg(e.id, e.data),
                "reset" => Ev::Reset(e.id),
                other => Ev::Odd(format!("unexpected event {other}: {}", e.data)),
            };
            evs.lock().unwrap().push(ev);
        }
    }
}

/// A chain of long polls from `at` until a connection fails; returns why.
fn poll(addr: SocketAddr, topic: &str, at: &mut String, seen: &Seen) -> String {
    let (evs, stop) = (&seen.evs, &seen.stop);
    loop {
        if stop.load(Ordering::SeqCst) {
            return "stopped".into();
        }
        let mut s = match connect(addr) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let req = format!(
            "GET /poll/{topic}?since={at}&wait=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        );
        if let Err(e) = s.write_all(req.as_bytes()) {
            return format!("write: {e}");
        }
        let Some(r) = read_response(&mut s, false) else {
            return "no answer".into();
        };
        match r.status {
            200 => {
                let v = r.json();
                let msgs = v["messages"].as_array().unwrap();
                let mut out = evs.lock().unwrap();
                if v["reset"] == true {
                    // Where the new run starts: before its first message, else `next`.
                    let p = match msgs.first() {
                        Some(m) => server::before(m["id"].as_str().unwrap()),
                        None => v["next"].as_str().unwrap().to_string(),
                    };
                    out.push(Ev::Reset(p));
                }
                for m in msgs {
                    out.push(Ev::Msg(
                        m["id"].as_str().unwrap().to_string(),
                        m["data"].as_str().unwrap().to_string(),
                    ));
                }
                *at = v["next"].as_str().unwrap().to_string();
            }
            204 => match r.header("X-Ringcast-Next") {
                Some(next) => *at = next.to_string(),
                None => return "204 without X-Ringcast-Next".into(),
            },
            // Redis away and this node cannot answer alone: the client asks again.
            503 => std::thread::sleep(Duration::from_millis(100)),
            st => return format!("status {st}: {}", r.text()),
        }
    }
}

/// One WebSocket (v1 or raw) from `at` (`?since=`) until it ends; returns why.
fn ws(via: Via, addr: SocketAddr, topic: &str, at: &mut String, seen: &Seen) -> String {
    let (evs, stop) = (&seen.evs, &seen.stop);
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let s = match connect(addr) {
        Ok(s) => s,
        Err(e) => return e,
    };
    let mut req = format!("ws://{addr}/ws/{topic}?since={at}")
        .into_client_request()
        .unwrap();
    if via == Via::V1 {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "ringcast.v1".parse().unwrap());
    }
    let mut ws = match tungstenite::client::client(req, s) {
        Ok((ws, _)) => ws,
        Err(e) => return format!("handshake: {e}"),
    };
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        if stop.load(Ordering::SeqCst) {
            return "stopped".into();
        }
        let m = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e)) if quiet(&e) => continue,
            Err(e) => return format!("read: {e}"),
        };
        let ev = match (via, m) {
            (Via::Raw, Message::Text(t)) => Ev::Msg(String::new(), t.to_string()),
            (Via::V1, Message::Text(t)) => {
                let e: serde_json::Value = serde_json::from_str(&t).unwrap();
                let id = e["id"].as_str().unwrap_or_default().to_string();
                match e["type"].as_str() {
                    Some("message") => {
                        *at = id.clone();
                        Ev::Msg(id, e["data"].as_str().unwrap().to_string())
                    }
                    Some("reset") => {
                        *at = id.clone();
                        Ev::Reset(id)
                    }
                    Some("subscribed") => continue,
                    _ => Ev::Odd(format!("unexpected envelope {e}")),
                }
            }
            (_, Message::Close(f)) => return format!("close {f:?}"),
            (_, Message::Ping(_)) => {
                seen.beats.fetch_add(1, Ordering::SeqCst);
                continue;
            }
            (_, Message::Pong(_)) => continue,
            (_, other) => Ev::Odd(format!("unexpected frame {other:?}")),
        };
        evs.lock().unwrap().push(ev);
    }
}

/// SSE, long poll and v1 WebSocket subscribers of `topic` after `from` on each node (each
/// going on to the next node when its own fails), a raw WebSocket on `raw_on`; returns once
/// every node counts its streams.
fn subscribe_all(nodes: &[&Server], raw_on: &Server, topic: &str, from: &str) -> Vec<Sub> {
    let mut subs = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        // This node first, then the others in turn.
        let order: Vec<&Server> = (0..nodes.len())
            .map(|j| nodes[(i + j) % nodes.len()])
            .collect();
        for via in [Via::Sse, Via::Poll, Via::V1] {
            subs.push(Sub::open(via, &order, topic, from));
        }
        let streams = if n.addr == raw_on.addr {
            subs.push(Sub::open(Via::Raw, &[n], topic, from));
            3
        } else {
            2
        };
        wait_subscribed(n, topic, streams);
    }
    subs
}

/// Waits (bounded) until `node` counts at least `n` subscribers of `topic`.
fn wait_subscribed(node: &Server, topic: &str, n: i64) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let v = node.get(&format!("/topics/{topic}")).json();
        if v["subscribers"].as_i64().unwrap_or(0) >= n {
            return;
        }
        assert!(Instant::now() < end, "{n} subscribers never counted: {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until every subscriber has the message `data`; returns the names of those
/// that do not.
fn wait_for(subs: &[Sub], data: &str, within: Duration) -> Vec<String> {
    let end = Instant::now() + within;
    loop {
        let missing: Vec<String> = subs
            .iter()
            .filter(|s| !s.has(data))
            .map(|s| s.name.clone())
            .collect();
        if missing.is_empty() || Instant::now() >= end {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `got` against `want`: (lost, duplicated, out of order, unknown), by payload.
fn tally(got: &[String], want: &[String]) -> (usize, usize, usize, usize) {
    let lost = want.iter().filter(|w| !got.contains(w)).count();
    let mut seen = std::collections::HashSet::new();
    let dup = got.iter().filter(|g| !seen.insert(*g)).count();
    let unknown = got.iter().filter(|g| !want.contains(g)).count();
    let idx: Vec<usize> = got
        .iter()
        .filter_map(|g| want.iter().position(|w| w == g))
        .collect();
    let ooo = idx.windows(2).filter(|w| w[1] < w[0]).count();
    (lost, dup, ooo, unknown)
}

/// `evs` (messages only) are exactly `want`: positions and payloads (payloads only on a raw
/// WebSocket), in order.
fn check_run(name: &str, via: Via, evs: &[Ev], want: &[(String, String)]) -> Result<(), String> {
    let got: Vec<(String, String)> = evs
        .iter()
        .filter_map(|e| match e {
            Ev::Msg(id, d) => Some((id.clone(), d.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(String, String)> = if via == Via::Raw {
        want.iter()
            .map(|(_, d)| (String::new(), d.clone()))
            .collect()
    } else {
        want.to_vec()
    };
    if got == want {
        return Ok(());
    }
    let data = |v: &[(String, String)]| v.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>();
    let (lost, dup, ooo, unknown) = tally(&data(&got), &data(&want));
    Err(format!(
        "{name}: {lost} lost, {dup} duplicated, {ooo} out of order, {unknown} unknown\n  \
         got  {got:?}\n  want {want:?}"
    ))
}

/// `sub` received exactly Redis's Stream after its start, once each and in order, with no
/// reset, and lost its stream `lost` times (a node killed under it), no more.
fn check_exact(sub: &Sub, truth: &[(String, String)], lost: usize) -> Result<(), String> {
    let evs = sub.events();
    let resets: Vec<&Ev> = evs.iter().filter(|e| matches!(e, Ev::Reset(_))).collect();
    if !resets.is_empty() {
        return Err(format!("{}: resets {resets:?}", sub.name));
    }
    let ends: Vec<&Ev> = evs.iter().filter(|e| matches!(e, Ev::Lost(_))).collect();
    if ends.len() != lost {
        return Err(format!("{}: streams lost {ends:?}", sub.name));
    }
    odd(sub, &evs)?;
    check_run(&sub.name, sub.via, &evs, &after(truth, &sub.from))
}

/// Nothing unexpected in `evs`.
fn odd(sub: &Sub, evs: &[Ev]) -> Result<(), String> {
    let odd: Vec<&Ev> = evs.iter().filter(|e| matches!(e, Ev::Odd(_))).collect();
    if odd.is_empty() {
        Ok(())
    } else {
        Err(format!("{}: {odd:?}", sub.name))
    }
}

/// Ends a test: a last publish (`end`) on `on` that every subscriber must get, then every
/// subscriber and every publisher's answer checked against Redis's Stream. Returns what is
/// wrong, so a test reports every failure at once (`verdict`).
fn finish(r: &RedisServer, on: &Server, topic: &str, subs: &[Sub], ledger: &Ledger) -> Vec<String> {
    let told = ledger.publish(on.addr, topic, "end");
    assert!(matches!(told, Told::Confirmed(_)), "end: {told:?}");
    let missing = wait_for(subs, "end", Duration::from_secs(10));
    let truth = truth(r, topic);
    let mut bad = ledger.check(&truth);
    bad.extend(subs.iter().filter_map(|s| check_exact(s, &truth, 0).err()));
    if !missing.is_empty() {
        bad.push(format!("no end within 10 s on {missing:?}"));
    }
    bad
}

/// `what` and how many, naming the first few.
fn some(what: &[String]) -> String {
    let first: Vec<&String> = what.iter().take(6).collect();
    format!(
        "{} ({first:?}{})",
        what.len(),
        if what.len() > 6 { "…" } else { "" }
    )
}

/// Fails with every problem found, one a line.
fn verdict(bad: Vec<String>) {
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

// ---- the faults ----------------------------------------------------------------------------

#[test]
fn a_partitioned_node_answers_503_and_catches_up_exactly_after_the_heal() {
    let r = RedisServer::start();
    let px = Proxy::start(r.port);
    let a = node_on(
        &px.url(),
        &["--publish-timeout-ms", "1000", "--heartbeat-secs", "1"],
    );
    let b = node(&r, &[]);
    let topic = "part";
    let from = warm_up(&b, &[&a, &b], topic);
    let subs = subscribe_all(&[&a, &b], &b, topic, &from);
    let ledger = Arc::new(Ledger::default());
    for i in 1..=3 {
        ledger.publish(a.addr, topic, &format!("before-a-{i}"));
        ledger.publish(b.addr, topic, &format!("before-b-{i}"));
    }
    assert_eq!(ledger.failed(), 0, "{:?}", ledger.all());

    // Ten seconds of partition between A and Redis, publishes on both nodes meanwhile.
    let on_a = |s: &&Sub| s.name.ends_with(&a.addr.to_string()) && s.via != Via::Poll;
    let beats: Vec<usize> = subs.iter().filter(on_a).map(Sub::beats).collect();
    px.blackhole();
    let t = Instant::now();
    let pa = publisher(
        &ledger,
        a.addr,
        topic,
        "during-a",
        6,
        Duration::from_millis(300),
    );
    let pb = publisher(
        &ledger,
        b.addr,
        topic,
        "during-b",
        30,
        Duration::from_millis(200),
    );
    pa.join().unwrap();
    pb.join().unwrap();
    // Seconds into the partition, a window A holds is still answered by A, from what it holds.
    let held = a.get(&format!("/poll/{topic}?since={from}"));
    assert_eq!(held.status, 200, "a held window: {}", held.text());
    let v = held.json();
    let got: Vec<&str> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (1..=3)
        .flat_map(|i| [format!("before-a-{i}"), format!("before-b-{i}")])
        .collect();
    assert_eq!(got, want, "{v}");
    assert_ne!(v["reset"], true, "{v}");
    std::thread::sleep(Duration::from_secs(10).saturating_sub(t.elapsed()));
    px.heal();
    let healed = Instant::now();
    // A's streams kept their heartbeats (one a second) through the partition.
    let mut bad = Vec::new();
    for (s, before) in subs.iter().filter(on_a).zip(beats) {
        if s.beats() < before + 5 {
            bad.push(format!(
                "{}: {} heartbeats in the 10 s partition",
                s.name,
                s.beats() - before
            ));
        }
    }
    let during = ledger.all();
    let failed = |tag: &str| {
        during
            .iter()
            .filter(|(d, t)| d.starts_with(tag) && !matches!(t, Told::Confirmed(_)))
            .count()
    };
    assert!(
        failed("during-a") >= 1,
        "A's publishes went through the partition"
    );
    assert_eq!(
        failed("during-b"),
        0,
        "B talks to Redis directly: {during:?}"
    );

    // After the heal, with nothing more published: every confirmed message reaches every
    // subscriber (A's by A's own catch-up).
    let mut late = Vec::new();
    for (d, told) in &during {
        if matches!(told, Told::Confirmed(_)) {
            let left = (healed + Duration::from_secs(10)).saturating_duration_since(Instant::now());
            for name in wait_for(&subs, d, left) {
                late.push(format!("{d} on {name}"));
            }
        }
    }
    bad.extend(finish(&r, &b, topic, &subs, &ledger));
    if !late.is_empty() {
        bad.push(format!(
            "not caught up within 10 s of the heal (only with the next publish): {}",
            some(&late)
        ));
    }
    verdict(bad);
}

#[test]
fn cut_connections_to_redis_lose_nothing() {
    let r = RedisServer::start();
    let px = Proxy::start(r.port);
    let a = node_on(&px.url(), &["--publish-timeout-ms", "1000"]);
    let b = node(&r, &[]);
    let topic = "cut";
    let from = warm_up(&b, &[&a, &b], topic);
    let subs = subscribe_all(&[&a, &b], &a, topic, &from);
    let ledger = Arc::new(Ledger::default());
    let pa = publisher(&ledger, a.addr, topic, "a", 20, Duration::from_millis(50));
    let pb = publisher(&ledger, b.addr, topic, "b", 20, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(300));
    // Every connection of A to Redis ends at once, both ways (scripts and pub/sub).
    assert!(px.cut() >= 2, "A had its two connections");
    pa.join().unwrap();
    pb.join().unwrap();
    wait_connected(&a, 2, Duration::from_secs(10));
    verdict(finish(&r, &b, topic, &subs, &ledger));
}

#[test]
fn client_pause_write_delays_publishes_and_loses_nothing() {
    let r = RedisServer::start();
    let (a, b) = (node(&r, &[]), node(&r, &[]));
    let topic = "pause";
    let from = warm_up(&a, &[&a, &b], topic);
    let subs = subscribe_all(&[&a, &b], &a, topic, &from);
    let ledger = Arc::new(Ledger::default());
    let pa = publisher(&ledger, a.addr, topic, "a", 30, Duration::from_millis(50));
    let pb = publisher(&ledger, b.addr, topic, "b", 30, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.cmd(&["CLIENT", "PAUSE", "1500", "WRITE"]), "+OK");
    pa.join().unwrap();
    pb.join().unwrap();
    assert!(
        ledger.slowest() >= Duration::from_millis(1000),
        "no publish was held by the pause: the slowest took {:?}",
        ledger.slowest()
    );
    verdict(finish(&r, &b, topic, &subs, &ledger));
}

#[test]
fn debug_sleep_times_publishes_out_and_loses_nothing() {
    let r = RedisServer::start_with(&["--enable-debug-command", "yes"]);
    let timeout = ["--publish-timeout-ms", "1000"];
    let (a, b) = (node(&r, &timeout), node(&r, &timeout));
    let topic = "sleep";
    let from = warm_up(&a, &[&a, &b], topic);
    let subs = subscribe_all(&[&a, &b], &b, topic, &from);
    let ledger = Arc::new(Ledger::default());
    let pa = publisher(&ledger, a.addr, topic, "a", 20, Duration::from_millis(100));
    let pb = publisher(&ledger, b.addr, topic, "b", 20, Duration::from_millis(100));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(r.cmd(&["DEBUG", "SLEEP", "3"]), "+OK");
    pa.join().unwrap();
    pb.join().unwrap();
    assert!(
        ledger.failed() >= 1,
        "no publish timed out while Redis slept: {:?}",
        ledger.all()
    );
    verdict(finish(&r, &b, topic, &subs, &ledger));
}

/// Redis and two nodes dropping every `n`th push they get (`--debug-drop-pushes`, counting
/// from 1 over everything Redis pushes to the node).
fn dropping(n: &str) -> (RedisServer, Server, Server) {
    let r = RedisServer::start();
    let flag = ["--debug-drop-pushes", n];
    let (a, b) = (node(&r, &flag), node(&r, &flag));
    (r, a, b)
}

/// Publishes `d-1`…`d-{n}` on `nodes` in turn, each confirmed, on a new topic whose
/// subscribers start at `0:0` (so push k is message k); returns the ledger.
fn publish_new_topic(nodes: &[&Server], topic: &str, n: usize) -> Ledger {
    let ledger = Ledger::default();
    for i in 1..=n {
        let on = nodes[i % nodes.len()];
        let told = ledger.publish(on.addr, topic, &format!("d-{i}"));
        assert!(matches!(told, Told::Confirmed(_)), "d-{i}: {told:?}");
    }
    ledger
}

#[test]
fn every_third_push_dropped_still_delivers_all_thirty_in_order() {
    let (r, a, b) = dropping("3");
    let topic = "drop3";
    let from = a.current(topic);
    assert_eq!(from, "0:0", "a new topic");
    let subs = subscribe_all(&[&a, &b], &b, topic, &from);
    let ledger = publish_new_topic(&[&a, &b], topic, 30);
    // The 30th push is dropped too: nothing comes after it to show the gap.
    let missing = wait_for(&subs, "d-30", Duration::from_secs(10));
    let truth = truth(&r, topic);
    assert_eq!(truth.len(), 30);
    let mut bad = ledger.check(&truth);
    bad.extend(subs.iter().filter_map(|s| check_exact(s, &truth, 0).err()));
    if !missing.is_empty() {
        bad.push(format!("d-30 not within 10 s on {missing:?}"));
    }
    verdict(bad);
}

#[test]
fn a_dropped_last_push_is_delivered_within_ten_seconds() {
    let (r, a, b) = dropping("5");
    let topic = "droplast";
    let from = a.current(topic);
    assert_eq!(from, "0:0", "a new topic");
    let subs = subscribe_all(&[&a, &b], &a, topic, &from);
    let ledger = publish_new_topic(&[&a], topic, 5);
    let missing = wait_for(&subs, "d-5", Duration::from_secs(10));
    let truth = truth(&r, topic);
    let mut bad = ledger.check(&truth);
    bad.extend(subs.iter().filter_map(|s| check_exact(s, &truth, 0).err()));
    if !missing.is_empty() {
        bad.push(format!(
            "d-5 (its push dropped) not within 10 s on {missing:?}"
        ));
    }
    verdict(bad);
}

#[test]
fn a_killed_nodes_clients_resume_on_another_with_exactly_what_they_missed() {
    let r = RedisServer::start();
    let (mut a, b) = (node(&r, &[]), node(&r, &[]));
    let topic = "kill9";
    let from = warm_up(&b, &[&a, &b], topic);
    // A's clients go on at B when A dies: SSE with Last-Event-ID, the long poll with
    // `since`, the v1 WebSocket with `since`. B's stay where they are.
    let subs = subscribe_all(&[&a, &b], &b, topic, &from);
    let ledger = Ledger::default();
    for i in 1..=5 {
        ledger.publish(b.addr, topic, &format!("before-{i}"));
    }
    let missing = wait_for(&subs, "before-5", Duration::from_secs(10));
    assert!(missing.is_empty(), "{missing:?}");
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)).is_some(), "A survived");
    for i in 1..=10 {
        ledger.publish(b.addr, topic, &format!("after-{i}"));
    }
    let told = ledger.publish(b.addr, topic, "end");
    assert!(matches!(told, Told::Confirmed(_)), "end: {told:?}");
    let missing = wait_for(&subs, "end", Duration::from_secs(10));
    let truth = truth(&r, topic);
    let mut bad = ledger.check(&truth);
    for s in &subs {
        // Exactly one stream lost (the kill) by each of A's clients, none by B's.
        let on_a = s.name.ends_with(&a.addr.to_string());
        bad.extend(check_exact(s, &truth, usize::from(on_a)).err());
    }
    if !missing.is_empty() {
        bad.push(format!("no end within 10 s on {missing:?}"));
    }
    verdict(bad);
}

#[test]
fn a_redis_restart_gives_each_subscription_exactly_one_reset() {
    let mut r = RedisServer::start();
    // The default --publish-timeout-ms (2 s): the publishes after the restart must be
    // confirmed even on a loaded machine.
    let (a, b) = (node(&r, &[]), node(&r, &[]));
    let topic = "restart";
    let from = warm_up(&a, &[&a, &b], topic);
    let mut subs = Vec::new();
    for (n, other) in [(&a, &b), (&b, &a)] {
        for via in [Via::Sse, Via::Poll, Via::V1] {
            subs.push(Sub::open(via, &[n, other], topic, &from));
        }
        wait_subscribed(n, topic, 2);
    }
    let ledger = Ledger::default();
    for i in 1..=3 {
        ledger.publish(a.addr, topic, &format!("old-a-{i}"));
        ledger.publish(b.addr, topic, &format!("old-b-{i}"));
    }
    assert_eq!(ledger.failed(), 0, "{:?}", ledger.all());
    let missing = wait_for(&subs, "old-b-3", Duration::from_secs(10));
    assert!(missing.is_empty(), "{missing:?}");
    let old = truth(&r, topic);
    verdict(ledger.check(&old));
    let (old_epoch, _) = server::pos(&old[0].0);

    // Redis goes away without saving (it was started with `--save "" --appendonly no`):
    // publishes are refused meanwhile.
    r.cmd(&["SHUTDOWN", "NOSAVE"]);
    assert!(r.wait_exit(Duration::from_secs(5)), "redis still running");
    let down = Ledger::default();
    std::thread::scope(|sc| {
        for (i, addr) in [a.addr, b.addr].into_iter().enumerate() {
            let down = &down;
            sc.spawn(move || down.publish(addr, topic, &format!("down-{i}")));
        }
    });
    for (data, told) in down.all() {
        assert!(
            !matches!(told, Told::Confirmed(_)),
            "{data}, published while Redis is down: {told:?}"
        );
    }
    r.restart();
    wait_connected(&a, 2, Duration::from_secs(10));
    wait_connected(&b, 2, Duration::from_secs(10));

    // The first publish after the restart starts a new epoch: one reset everywhere.
    let ledger = Ledger::default();
    let told = ledger.publish(a.addr, topic, "new-1");
    let Told::Confirmed(first) = told else {
        panic!("new-1: {told:?}")
    };
    let (new_epoch, offset) = server::pos(&first);
    assert_eq!(offset, 1, "{first}");
    let mut bad = Vec::new();
    if new_epoch == old_epoch {
        bad.push(format!(
            "a restarted Redis must start a new epoch, yet new-1 is {first}: the position m0 had \
             before the restart (a position reused)"
        ));
    }
    let end = Instant::now() + Duration::from_secs(5);
    while subs.iter().any(|s| s.resets() == 0) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 2..=5 {
        let on = if i % 2 == 0 { &b } else { &a };
        let told = ledger.publish(on.addr, topic, &format!("new-{i}"));
        assert!(matches!(told, Told::Confirmed(_)), "new-{i}: {told:?}");
    }
    let missing = wait_for(&subs, "new-5", Duration::from_secs(5));
    let new = truth(&r, topic);
    bad.extend(ledger.check(&new));
    bad.extend(down.check(&new));
    for s in &subs {
        bad.extend(check_restart(s, &old, &new, &new_epoch).err());
    }
    if !missing.is_empty() {
        bad.push(format!("new-5 not within 5 s on {missing:?}"));
    }
    // What /metrics says of it: back, reconnected once, the down publishes refused, and the
    // streams' resets (SSE and WebSocket; a poll may be between requests) counted as epoch
    // changes.
    for (name, n) in [("a", &a), ("b", &b)] {
        let got = [
            "ringcast_redis_connected",
            "ringcast_redis_reconnects_total",
            "ringcast_redis_publish_refused_total",
            "ringcast_redis_epoch_resets_total",
        ]
        .map(|m| n.metric(m));
        if got[..3] != [1, 1, 1] || !(2..=3).contains(&got[3]) {
            bad.push(format!(
                "node {name}: connected, reconnects, refused, epoch resets = {got:?}, want \
                 [1, 1, 1, 2..=3]"
            ));
        }
    }
    verdict(bad);
}

/// A Redis restored from a snapshot comes back with each topic's meta as it was saved and
/// without what was appended after the save. The node's new connection reaches another
/// process (another `run_id`), so the topic starts a new epoch: the lost message's position
/// is never handed out again, and a client holding it gets a reset.
#[test]
fn a_redis_restored_from_a_snapshot_starts_a_new_epoch() {
    let mut r = RedisServer::start();
    let a = node(&r, &[]);
    let topic = "snapshot";
    for i in 1..=3 {
        a.publish(topic, format!("saved-{i}").as_bytes());
    }
    assert_eq!(r.cmd(&["SAVE"]), "+OK");
    let lost = a.publish(topic, b"lost");
    let (old_epoch, offset) = server::pos(&lost);
    assert_eq!(offset, 4, "{lost}");
    r.cmd(&["SHUTDOWN", "NOSAVE"]);
    assert!(r.wait_exit(Duration::from_secs(5)), "redis still running");
    r.restart();
    // The snapshot was loaded: the meta is the saved one, three messages in.
    let saved = truth(&r, topic);
    assert_eq!(saved.len(), 3, "{saved:?}");
    assert_eq!(saved[2], (format!("{old_epoch}:3"), "saved-3".to_string()));
    wait_connected(&a, 2, Duration::from_secs(10));

    // Before anything is published again, a client that had the lost message is told its
    // history is gone, and where it restarts: the start of a new epoch (the node may first
    // say "nothing new", until its resync has heard from Redis).
    let until = Instant::now() + Duration::from_secs(10);
    let restart_at = loop {
        let r = a.get(&format!("/poll/{topic}?since={lost}"));
        if r.status == 200 {
            let v = r.json();
            assert_eq!(v["reset"], true, "{v}");
            assert_eq!(
                v["messages"],
                serde_json::json!([]),
                "nothing of the old epoch: {v}"
            );
            break v["next"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < until, "never reset: {}", r.status);
        std::thread::sleep(Duration::from_millis(50));
    };
    let (new_epoch, offset) = server::pos(&restart_at);
    assert_ne!(new_epoch, old_epoch, "{restart_at}");
    assert_eq!(offset, 0, "{restart_at}");

    let next = a.publish(topic, b"after");
    assert_eq!(
        server::pos(&next),
        (new_epoch, 1),
        "{next} continues the epoch the reset named (not the one whose position 4 was lost, \
         which would mean two messages at {lost}; not yet another, which would reset again)"
    );
    // From where the reset put it, that client gets the new message and no second reset (a
    // long poll: the publish's answer can come before the node's push of it).
    let v = a
        .get(&format!("/poll/{topic}?since={restart_at}&wait=5"))
        .json();
    assert_ne!(v["reset"], true, "{v}");
    assert_eq!(v["messages"][0]["id"], next.as_str(), "{v}");
    assert_eq!(truth(&r, topic), [(next.clone(), "after".to_string())]);
}

/// Across a Redis restart: the old epoch's messages after the start, exactly; one reset to a
/// position of the new epoch at or before its first message; then the new epoch's messages
/// after that position, exactly; no stream lost.
fn check_restart(
    s: &Sub,
    old: &[(String, String)],
    new: &[(String, String)],
    new_epoch: &str,
) -> Result<(), String> {
    let evs = s.events();
    let ends: Vec<&Ev> = evs.iter().filter(|e| matches!(e, Ev::Lost(_))).collect();
    if !ends.is_empty() {
        return Err(format!("{}: streams lost {ends:?}", s.name));
    }
    odd(s, &evs)?;
    let cut = evs.iter().position(|e| matches!(e, Ev::Reset(_)));
    let (before, rest) = evs.split_at(cut.unwrap_or(evs.len()));
    check_run(&s.name, s.via, before, &after(old, &s.from))?;
    let Some((Ev::Reset(at), rest)) = rest.split_first() else {
        return Err(format!("{}: no reset after the restart", s.name));
    };
    let (e, o) = server::pos(at);
    if e != new_epoch || o > 1 {
        return Err(format!(
            "{}: reset to {at}, want the new epoch {new_epoch} at offset 0 or 1",
            s.name
        ));
    }
    let resets = rest.iter().filter(|e| matches!(e, Ev::Reset(_))).count();
    if resets > 0 {
        return Err(format!("{}: {} resets: {evs:?}", s.name, resets + 1));
    }
    check_run(&s.name, s.via, rest, &after(new, at))
}

#[test]
fn a_message_published_while_pubsub_was_down_arrives_without_a_next_one() {
    let r = RedisServer::start();
    // B reaches Redis through a proxy only so that its connections can be told apart in
    // `CLIENT LIST`; the proxy forwards throughout.
    let px = Proxy::start(r.port);
    let (a, b) = (node(&r, &[]), node_on(&px.url(), &[]));
    let topic = "resync";
    let from = warm_up(&a, &[&a, &b], topic);
    let subs = subscribe_all(&[&a, &b], &b, topic, &from);
    let ledger = Ledger::default();
    let mut con = redis::Client::open(r.url())
        .unwrap()
        .get_connection()
        .unwrap();
    // B's pub/sub connections, as Redis lists them.
    let mut b_pubsub = || -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut con)
            .unwrap();
        let ours: Vec<String> = px.upstream_addrs().iter().map(|a| a.to_string()).collect();
        list.lines()
            .filter(|l| {
                l.split(' ').any(|f| {
                    f.strip_prefix("addr=")
                        .is_some_and(|x| ours.iter().any(|o| o == x))
                })
            })
            .filter_map(|l| l.split(' ').next()?.strip_prefix("id=").map(String::from))
            .collect()
    };
    let (mut rounds, mut in_window, mut late) = (0, 0, Vec::new());
    // Until three publishes on A fell while B's pub/sub connection was down (at most six).
    while in_window < 3 && rounds < 6 {
        rounds += 1;
        let n = b.log().matches("redis: connected").count();
        let ids = b_pubsub();
        assert!(!ids.is_empty(), "B has no pub/sub connection");
        for id in &ids {
            assert_eq!(r.cmd(&["CLIENT", "KILL", "ID", id]), ":1");
        }
        let data = format!("gap-{rounds}");
        let told = ledger.publish(a.addr, topic, &data);
        assert!(matches!(told, Told::Confirmed(_)), "{data}: {told:?}");
        if b_pubsub().is_empty() {
            // B had not subscribed again when A's publish was confirmed.
            in_window += 1;
        }
        wait_connected(&b, n + 1, Duration::from_secs(10));
        for name in wait_for(&subs, &data, Duration::from_secs(5)) {
            late.push(format!("{data} on {name}"));
        }
    }
    assert!(
        in_window >= 1,
        "no publish fell into B's reconnect in {rounds} rounds"
    );
    let mut bad = finish(&r, &a, topic, &subs, &ledger);
    if !late.is_empty() {
        bad.push(format!(
            "not delivered within 5 s of the reconnect (only with the next publish): {}",
            some(&late)
        ));
    }
    verdict(bad);
}
