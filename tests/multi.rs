//! Issue 16 end to end, on two shards with topics homed on both: one SSE stream or poll for
//! many topics resumed exactly by one stream position, `since=earliest` / `rewind=N` on every
//! transport at the history bounds, bad input, subscriber counts under churn, v1 `presence`
//! and `ping`.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use server::{offset, read_response, Server};
use sse_parser::{SseEvent, SseParser};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

/// FNV-1a 64, as the server homes topics (`fanout::home_of`).
fn home(topic: &str, shards: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in topic.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % shards
}

/// `n` topic names starting with `prefix`, alternating between the two shards' homes.
fn topics(prefix: &str, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < n {
        let t = format!("{prefix}{i}");
        if home(&t, 2) == (out.len() % 2) as u64 {
            out.push(t);
        }
        i += 1;
    }
    out
}

fn query(topics: &[String]) -> String {
    topics
        .iter()
        .map(|t| format!("topic={t}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// An SSE stream's connection, its parser, and the raw text read so far.
struct Sse {
    s: TcpStream,
    p: SseParser,
    raw: String,
    events: Vec<SseEvent>,
}

impl Sse {
    /// Opens `path` (with `Last-Event-ID: last` when given); asserts a 200 head.
    fn open(srv: &Server, path: &str, last: Option<&str>) -> Sse {
        let mut s = srv.connect();
        let extra = last.map_or(String::new(), |l| format!("Last-Event-ID: {l}\r\n"));
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
        let r = read_response(&mut s, true).expect("sse head");
        assert_eq!(r.status, 200, "{path}");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Sse {
            s,
            p: SseParser::new(),
            raw: String::new(),
            events: Vec::new(),
        }
    }

    fn read_once(&mut self) -> bool {
        let mut buf = [0u8; 65536];
        match self.s.read(&mut buf) {
            Ok(0) => false,
            Ok(n) => {
                self.raw.push_str(&String::from_utf8_lossy(&buf[..n]));
                self.events.extend(self.p.feed(&buf[..n]));
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// Reads until `done` holds (bounded by 10 s).
    fn read_until(&mut self, mut done: impl FnMut(&Sse) -> bool) {
        let t = Instant::now();
        while !done(self) {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "timed out: {}",
                self.raw
            );
            if !self.read_once() {
                assert!(done(self), "stream ended: {}", self.raw);
                return;
            }
        }
    }

    /// Reads until the stream's subscriptions are live: the `id:` block with no data the server
    /// writes once every window (replay or reset) is queued.
    fn ready(&mut self) {
        self.read_until(|s| {
            let blocks: Vec<&str> = s.raw.split("\n\n").collect();
            blocks[..blocks.len() - 1]
                .iter()
                .any(|b| b.starts_with("id: ") && !b.contains('\n'))
        });
    }
}

/// A message envelope's (topic, offset, data), or a reset's (topic, offset, "RESET").
fn entry(v: &serde_json::Value) -> (String, u64, String) {
    let t = v["topic"].as_str().unwrap().to_string();
    let o = offset(v["id"].as_str().unwrap());
    match v["type"].as_str().unwrap() {
        "message" => (t, o, v["data"].as_str().unwrap().to_string()),
        "reset" => (t, o, "RESET".to_string()),
        other => panic!("unexpected envelope {other}"),
    }
}

fn sse_entries(events: &[SseEvent]) -> Vec<(String, u64, String)> {
    events
        .iter()
        .map(|e| {
            let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
            match e.event.as_str() {
                "message" => assert_eq!(v["type"], "message"),
                "reset" => assert_eq!(v["type"], "reset"),
                other => panic!("event type {other}"),
            }
            entry(&v)
        })
        .collect()
}

/// Checks what a client got against what was published, per topic: in order, none twice; for
/// a topic in `resets`, one reset and every message after its position; for the others, all.
fn check(got: &[(String, u64, String)], published: &BTreeMap<String, Vec<u64>>, resets: &[&str]) {
    for (t, offs) in published {
        let mine: Vec<&(String, u64, String)> = got.iter().filter(|e| &e.0 == t).collect();
        let reset_at: Vec<u64> = mine
            .iter()
            .filter(|e| e.2 == "RESET")
            .map(|e| e.1)
            .collect();
        let msgs: Vec<u64> = mine
            .iter()
            .filter(|e| e.2 != "RESET")
            .map(|e| e.1)
            .collect();
        assert!(
            msgs.windows(2).all(|w| w[0] < w[1]),
            "{t}: out of order or twice: {msgs:?}"
        );
        if resets.contains(&t.as_str()) {
            assert_eq!(reset_at.len(), 1, "{t}: one reset, got {reset_at:?}");
            let r = reset_at[0];
            let after: Vec<u64> = offs.iter().copied().filter(|&o| o > r).collect();
            let got_after: Vec<u64> = msgs.iter().copied().filter(|&o| o > r).collect();
            assert_eq!(got_after, after, "{t}: everything after the reset");
        } else {
            assert!(
                reset_at.is_empty(),
                "{t}: no reset expected, got {reset_at:?}"
            );
            assert_eq!(&msgs, offs, "{t}: every message once, in order");
        }
    }
}

fn publish_round(
    srv: &Server,
    topics: &[String],
    per_topic: usize,
    published: &mut BTreeMap<String, Vec<u64>>,
) {
    for i in 0..per_topic {
        for t in topics {
            let id = srv.publish(t, format!("{t}-{i}").as_bytes());
            published.entry(t.clone()).or_default().push(offset(&id));
        }
    }
}

#[test]
fn multi_topic_sse_resumes_every_topic_across_cuts_and_only_a_trimmed_topic_resets() {
    let srv = Server::start(&["--shards", "2", "--history-messages", "20"]);
    let ts = topics("cut", 3);
    let path = format!("/sse?{}", query(&ts));
    let mut published = BTreeMap::new();
    let mut got = Vec::new();
    let mut sse = Sse::open(&srv, &path, None);
    sse.ready();
    for round in 0..5 {
        publish_round(&srv, &ts, 3, &mut published);
        // Read part of what was sent, then cut the connection.
        let before = sse.events.len();
        sse.read_until(|s| s.events.len() >= before + 2);
        got.extend(sse_entries(&sse.events));
        let last = sse.p.last_event_id().to_string();
        assert!(last.starts_with("s1."), "{last}");
        drop(sse);
        // Published while cut; in round 2, enough on the last topic to trim its history.
        publish_round(&srv, &ts, 2, &mut published);
        if round == 2 {
            publish_round(&srv, &ts[2..], 25, &mut published);
        }
        sse = Sse::open(&srv, &path, Some(&last));
    }
    // Drain: every topic up to its last published offset.
    let want: BTreeMap<String, u64> = published
        .iter()
        .map(|(t, o)| (t.clone(), *o.last().unwrap()))
        .collect();
    sse.read_until(|s| {
        let e = sse_entries(&s.events);
        want.iter().all(|(t, last)| {
            e.iter()
                .any(|x| &x.0 == t && x.1 == *last && x.2 != "RESET")
        })
    });
    got.extend(sse_entries(&sse.events));
    check(&got, &published, &[ts[2].as_str()]);
}

/// A multi-topic poll answer: its entries and `next` (200), or `next` from a 204.
fn mpoll(srv: &Server, q: &str) -> (Vec<(String, u64, String)>, String) {
    let r = srv.get(&format!("/poll?{q}"));
    match r.status {
        200 => {
            let v = r.json();
            let e = v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(entry)
                .collect();
            (e, v["next"].as_str().unwrap().to_string())
        }
        204 => (Vec::new(), r.header("x-ringcast-next").unwrap().to_string()),
        s => panic!("poll answered {s}: {}", r.text()),
    }
}

#[test]
fn multi_topic_long_polls_and_sse_share_one_stream_position() {
    let srv = Server::start(&["--shards", "2", "--history-messages", "50"]);
    let ts = topics("sw", 3);
    let q = query(&ts);
    // Bootstrap: no since, an answer at once with no message, even with wait.
    let t0 = Instant::now();
    let (e, mut next) = mpoll(&srv, &format!("{q}&wait=5"));
    assert!(e.is_empty() && next.starts_with("s1."));
    assert!(t0.elapsed() < Duration::from_secs(4), "bootstrap waited");
    let mut published = BTreeMap::new();
    let mut got = Vec::new();
    for round in 0..6 {
        publish_round(&srv, &ts, 2, &mut published);
        if round % 2 == 0 {
            // Long polls, each resuming from the last answer's `next`, limited to 3 a topic.
            for _ in 0..4 {
                let (e, n) = mpoll(&srv, &format!("{q}&since={next}&wait=1&limit=3"));
                let per: BTreeMap<&str, usize> = e.iter().fold(BTreeMap::new(), |mut m, x| {
                    *m.entry(x.0.as_str()).or_default() += 1;
                    m
                });
                assert!(per.values().all(|&c| c <= 3), "{per:?}");
                got.extend(e);
                next = n;
            }
        } else {
            // The same position on a multi-topic SSE stream, and back.
            let mut sse = Sse::open(&srv, &format!("/sse?{q}"), Some(&next));
            sse.ready();
            got.extend(sse_entries(&sse.events));
            next = sse.p.last_event_id().to_string();
        }
    }
    // A long poll wakes on a message published while it waits, on either shard's topic.
    for t in &ts {
        let n = next.clone();
        let addr = srv.addr;
        let q2 = q.clone();
        let h = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(
                s,
                "GET /poll?{q2}&since={n}&wait=8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            read_response(&mut s, false).unwrap()
        });
        // Published once the poll waits (the gauge counts it), so it is a live delivery.
        assert_eq!(
            srv.wait_metric("ringcast_longpoll_waiting", 1, Duration::from_secs(5)),
            1
        );
        let id = srv.publish(t, b"live");
        published.entry(t.clone()).or_default().push(offset(&id));
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        let v = r.json();
        let e: Vec<_> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(entry)
            .collect();
        assert_eq!(e, [(t.clone(), offset(&id), "live".to_string())]);
        got.extend(e);
        next = v["next"].as_str().unwrap().to_string();
    }
    // Nothing new: a long poll times out with a 204 carrying the same position.
    let (e, n) = mpoll(&srv, &format!("{q}&since={next}&wait=1"));
    assert!(e.is_empty());
    assert_eq!(n, next);
    check(&got, &published, &[]);
}

// ---- since=earliest and rewind=N on every transport ----------------------------------------

/// Offsets a client subscribing to `t` with `start` (`since=earliest` or `rewind=N`) gets
/// before live messages, on each transport: the same list from every one of them.
fn history_on_each_transport(srv: &Server, t: &str, other: &str, start: &str) -> Vec<u64> {
    let mut answers: Vec<(&str, Vec<u64>)> = Vec::new();
    // Short poll, one topic.
    let v = srv.get(&format!("/poll/{t}?{start}")).json();
    answers.push((
        "poll",
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| offset(m["id"].as_str().unwrap()))
            .collect(),
    ));
    // Long poll, one topic (answers at once when there is history to give).
    let r = srv.get(&format!("/poll/{t}?{start}&wait=1"));
    answers.push((
        "long poll",
        if r.status == 204 {
            Vec::new()
        } else {
            r.json()["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| offset(m["id"].as_str().unwrap()))
                .collect()
        },
    ));
    // Multi-topic poll: `rewind` applies to each topic.
    let (e, _) = mpoll(srv, &format!("topic={t}&topic={other}&{start}"));
    answers.push((
        "multi poll",
        e.iter().filter(|x| x.0 == t).map(|x| x.1).collect(),
    ));
    // SSE, one topic: the replay comes before the stream's position line.
    let mut s = Sse::open(srv, &format!("/sse/{t}?{start}"), None);
    s.ready();
    answers.push((
        "sse",
        s.events.iter().map(|e| offset(&e.id)).collect::<Vec<u64>>(),
    ));
    // SSE, many topics.
    let mut s = Sse::open(srv, &format!("/sse?topic={t}&topic={other}&{start}"), None);
    s.ready();
    answers.push((
        "multi sse",
        sse_entries(&s.events)
            .iter()
            .filter(|x| x.0 == t)
            .map(|x| x.1)
            .collect(),
    ));
    // Raw WebSocket: frames before the pong of a ping sent after the upgrade.
    let mut ws = ws_connect(srv, &format!("/ws/{t}?{start}"), None);
    ws.send(Message::Ping(b"sync"[..].into())).unwrap();
    let mut data = Vec::new();
    loop {
        match ws.read().unwrap() {
            Message::Text(d) => data.push(d.to_string()),
            Message::Pong(_) => break,
            _ => {}
        }
    }
    let all = srv.get(&format!("/poll/{t}?since=earliest")).json();
    let offs: Vec<u64> = data
        .iter()
        .map(|d| {
            all["messages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["data"].as_str() == Some(d))
                .map(|m| offset(m["id"].as_str().unwrap()))
                .expect("a retained message")
        })
        .collect();
    answers.push(("ws raw", offs));
    // ringcast.v1 subscribe with the same fields.
    let mut ws = ws_connect(srv, &format!("/ws/{other}"), Some("ringcast.v1"));
    let _subscribed = v1_until(&mut ws, "subscribed");
    let mut cmd = serde_json::json!({"type": "subscribe", "topic": t, "ref": "h"});
    let (k, v) = start.split_once('=').unwrap();
    cmd[k] = if k == "rewind" {
        serde_json::json!(v.parse::<u64>().unwrap())
    } else {
        serde_json::json!(v)
    };
    ws.send(Message::Text(cmd.to_string().into())).unwrap();
    let mut offs = Vec::new();
    loop {
        let v = v1_next(&mut ws);
        match v["type"].as_str().unwrap() {
            "message" => offs.push(offset(v["id"].as_str().unwrap())),
            "subscribed" => break,
            other => panic!("unexpected {other}: {v}"),
        }
    }
    answers.push(("v1", offs));
    let first = answers[0].1.clone();
    for (name, a) in &answers {
        assert_eq!(a, &first, "{name} with {start}: {answers:?}");
    }
    first
}

fn ws_connect(srv: &Server, path: &str, protocol: Option<&str>) -> Ws {
    let mut req = format!("ws://{}{path}", srv.addr)
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, resp) = tungstenite::client::client(req, srv.connect()).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

fn v1_next(ws: &mut Ws) -> serde_json::Value {
    loop {
        if let Message::Text(t) = ws.read().expect("a v1 envelope") {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

fn v1_until(ws: &mut Ws, ty: &str) -> serde_json::Value {
    loop {
        let v = v1_next(ws);
        if v["type"] == ty {
            return v;
        }
    }
}

fn run_history_case(args: &[&str], publish: impl Fn(&Server, &str), cases: &[(&str, usize)]) {
    let mut a = vec!["--shards", "2"];
    a.extend_from_slice(args);
    let srv = Server::start(&a);
    // One topic homed on each shard, and an empty companion for the multi-topic routes.
    for t in topics("hist", 2) {
        let other = format!("{t}-other");
        publish(&srv, &t);
        let cur = offset(&srv.current(&t));
        for &(start, n) in cases {
            let got = history_on_each_transport(&srv, &t, &other, start);
            let want: Vec<u64> = (cur + 1 - n as u64..=cur).collect();
            assert_eq!(got, want, "{t} {start}");
        }
    }
}

#[test]
fn earliest_and_rewind_at_the_message_bound() {
    run_history_case(
        &["--history-messages", "5"],
        |srv, t| {
            for i in 0..8 {
                srv.publish(t, format!("m{i}").as_bytes());
            }
        },
        &[
            ("since=earliest", 5),
            ("rewind=3", 3),
            ("rewind=5", 5),
            ("rewind=100", 5),
            ("rewind=0", 0),
        ],
    );
}

#[test]
fn earliest_and_rewind_at_the_byte_bound() {
    run_history_case(
        &["--history-bytes", "10"],
        |srv, t| {
            for i in 0..6 {
                srv.publish(t, format!("abc{i}").as_bytes());
            }
        },
        &[
            ("since=earliest", 2),
            ("rewind=1", 1),
            ("rewind=2", 2),
            ("rewind=9", 2),
            ("rewind=0", 0),
        ],
    );
}

#[test]
fn earliest_and_rewind_at_the_age_bound() {
    run_history_case(
        &["--history-secs", "1"],
        |srv, t| {
            for i in 0..4 {
                srv.publish(t, format!("old{i}").as_bytes());
            }
            // The age bound is wall time: these four must be older than a second.
            std::thread::sleep(Duration::from_millis(1300));
            for i in 0..2 {
                srv.publish(t, format!("new{i}").as_bytes());
            }
        },
        &[("since=earliest", 2), ("rewind=3", 2), ("rewind=1", 1)],
    );
}

#[test]
fn a_position_wins_over_earliest_and_rewind() {
    let srv = Server::start(&["--shards", "2"]);
    for t in topics("win", 2) {
        let ids: Vec<String> = (0..4)
            .map(|i| srv.publish(&t, format!("{i}").as_bytes()))
            .collect();
        let v = srv
            .get(&format!("/poll/{t}?since={}&rewind=4", ids[2]))
            .json();
        assert_eq!(v["messages"].as_array().unwrap().len(), 1, "{v}");
        let mut s = Sse::open(&srv, &format!("/sse/{t}?rewind=4"), Some(&ids[1]));
        s.ready();
        assert_eq!(s.events.len(), 2, "{}", s.raw);
    }
}

// ---- bad input -----------------------------------------------------------------------------

#[test]
fn bad_multi_topic_queries_are_400_and_bad_positions_reset() {
    let srv = Server::start(&["--shards", "2", "--max-topics-per-stream", "3"]);
    for q in [
        "topic=a&topic=a",
        "topic=a&topic=b&topic=c&topic=d",
        "topic=a%20b",
        "topic=",
        "",
        "since=x",
        "topic=a&rewind=-1",
        "topic=a&rewind=abc",
        "topic=a&rewind=1&since=earliest",
    ] {
        for route in ["/sse", "/poll"] {
            let r = srv.get(&format!("{route}?{q}"));
            assert_eq!(r.status, 400, "{route}?{q}: {}", r.text());
        }
    }
    for q in ["rewind=-1", "rewind=abc", "rewind="] {
        for route in ["/sse/a", "/poll/a"] {
            let r = srv.get(&format!("{route}?{q}"));
            assert_eq!(r.status, 400, "{route}?{q}");
        }
        let r = srv.request(
            format!(
                "GET /ws/a?{q} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(r.status, 400, "ws ?{q}");
    }
    // The log says why, on every route.
    for line in [
        "sse refused: rewind must be a count",
        "multi-topic poll refused: a topic is named twice",
        ": poll refused: rewind must be a count",
        "websocket upgrade refused: 400 rewind must be a count",
    ] {
        assert!(srv.wait_log(line, Duration::from_secs(5)), "{line}");
    }
    // Malformed, truncated, oversized or forged stream positions: a reset for every topic
    // they cannot place, then live messages; the server stays up.
    let ts = topics("bad", 2);
    for t in &ts {
        srv.publish(t, b"x");
    }
    let q = query(&ts);
    let (_, good) = mpoll(&srv, &q);
    let at: Vec<(u64, u64)> = ts.iter().map(|t| epoch_offset(&srv.current(t))).collect();
    assert_eq!(
        good,
        token(&[(&ts[0], at[0].0, at[0].1), (&ts[1], at[1].0, at[1].1)]),
        "the test's encoder is the server's"
    );
    let long = format!("s1.{}", "A".repeat(5000));
    let other_epoch = token(&[(&ts[0], at[0].0 + 1, 1), (&ts[1], at[1].0 ^ 1, 1)]);
    let future = token(&[(&ts[0], at[0].0, at[0].1 + 5), (&ts[1], at[1].0, 99)]);
    for token in [
        "garbage",
        "s1.!!",
        "5:6",
        "earliest:1",
        &good[..good.len() - 3],
        &other_epoch,
        &future,
        &long,
    ] {
        let (e, next) = mpoll(&srv, &format!("{q}&since={token}"));
        let resets: Vec<&str> = e
            .iter()
            .filter(|x| x.2 == "RESET")
            .map(|x| x.0.as_str())
            .collect();
        // Unreadable (a cut token is too: it places nothing), or readable with positions
        // outside history: every topic resets.
        assert_eq!(resets.len(), 2, "{token}: {e:?}");
        assert!(e.iter().all(|x| x.2 == "RESET"), "{token}: {e:?}");
        assert!(next.starts_with("s1."));
        let mut s = Sse::open(&srv, &format!("/sse?{q}"), Some(token));
        s.ready();
        assert_eq!(
            s.events.iter().filter(|e| e.event == "reset").count(),
            resets.len(),
            "{token}: {}",
            s.raw
        );
    }
    // A forged position of one topic resets only that one.
    let half = token(&[(&ts[0], at[0].0, at[0].1), (&ts[1], at[1].0 + 7, 3)]);
    let (e, _) = mpoll(&srv, &format!("{q}&since={half}"));
    assert_eq!(e, [(ts[1].clone(), at[1].1, "RESET".to_string())]);
    // A token with one topic unknown to it: that topic starts from now, the other resumes.
    let (_, one) = mpoll(&srv, &format!("topic={}", ts[0]));
    let id = srv.publish(&ts[0], b"after");
    srv.publish(&ts[1], b"unseen");
    let (e, _) = mpoll(&srv, &format!("{q}&since={one}"));
    assert_eq!(e, [(ts[0].clone(), offset(&id), "after".to_string())]);
    assert_eq!(srv.get("/healthz").status, 200);
}

#[test]
fn v1_subscribe_rejects_bad_rewind_with_an_error_envelope() {
    let srv = Server::start(&["--shards", "2"]);
    let mut ws = ws_connect(&srv, "/ws/v", Some("ringcast.v1"));
    v1_until(&mut ws, "subscribed");
    for bad in [
        r#"{"type":"subscribe","topic":"w","rewind":-1,"ref":"1"}"#,
        r#"{"type":"subscribe","topic":"w","rewind":"abc","ref":"1"}"#,
        r#"{"type":"subscribe","topic":"w","rewind":1.5,"ref":"1"}"#,
        r#"{"type":"subscribe","topic":"w","since":"earliest","rewind":2,"ref":"1"}"#,
    ] {
        ws.send(Message::Text(bad.into())).unwrap();
        let v = v1_next(&mut ws);
        assert_eq!(v["type"], "error", "{bad}: {v}");
        assert_eq!(v["ref"], "1");
    }
    assert!(srv.wait_log("v1 subscribe refused", Duration::from_secs(5)));
    // Still usable.
    ws.send(Message::Text(r#"{"type":"ping","ref":"p"}"#.into()))
        .unwrap();
    assert_eq!(
        v1_next(&mut ws),
        serde_json::json!({"type":"pong","ref":"p"})
    );
    ws.send(Message::Text(r#"{"type":"ping"}"#.into())).unwrap();
    assert_eq!(v1_next(&mut ws), serde_json::json!({"type":"pong"}));
}

// ---- counts ----------------------------------------------------------------------------------

/// The server's epoch and offset of `EPOCH:OFFSET`.
fn epoch_offset(p: &str) -> (u64, u64) {
    let (e, o) = p.split_once(':').unwrap();
    (u64::from_str_radix(e, 16).unwrap(), o.parse().unwrap())
}

/// A stream position written from its documented form (`codec::streampos`): `s1.` and the
/// unpadded base64url of, per topic sorted by FNV-1a 64 tag, the tag (8 bytes LE) then EPOCH
/// and OFFSET as LEB128.
fn token(entries: &[(&str, u64, u64)]) -> String {
    use base64::Engine as _;
    let tag = |t: &str| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in t.as_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let mut e: Vec<(u64, u64, u64)> = entries.iter().map(|&(t, a, b)| (tag(t), a, b)).collect();
    e.sort();
    let mut raw = Vec::new();
    for (t, a, b) in e {
        raw.extend_from_slice(&t.to_le_bytes());
        for mut v in [a, b] {
            while v >= 0x80 {
                raw.push(v as u8 | 0x80);
                v >>= 7;
            }
            raw.push(v as u8);
        }
    }
    format!(
        "s1.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

fn subscribers(srv: &Server, t: &str) -> u64 {
    let r = srv.get(&format!("/topics/{t}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["topic"], t);
    assert_eq!(v["id"], srv.current(t).as_str());
    v["subscribers"].as_u64().unwrap()
}

fn wait_subscribers(srv: &Server, t: &str, want: u64) -> u64 {
    let t0 = Instant::now();
    loop {
        let n = subscribers(srv, t);
        if n == want || t0.elapsed() > Duration::from_secs(10) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn counts_cover_every_shard_and_return_to_zero_under_churn() {
    let srv = Server::start(&["--shards", "2"]);
    for t in topics("count", 2) {
        assert_eq!(subscribers(&srv, &t), 0);
        let q = format!("topic={t}&topic={t}-x");
        for round in 0..3 {
            // Enough connections that the kernel gives both shards some.
            let mut sse: Vec<Sse> = (0..6)
                .map(|i| {
                    let path = if i % 2 == 0 {
                        format!("/sse/{t}")
                    } else {
                        format!("/sse?{q}")
                    };
                    let mut s = Sse::open(&srv, &path, None);
                    s.ready();
                    s
                })
                .collect();
            let mut raw: Vec<Ws> = (0..4)
                .map(|_| {
                    let mut w = ws_connect(&srv, &format!("/ws/{t}"), None);
                    w.send(Message::Ping(b"s"[..].into())).unwrap();
                    while !matches!(w.read().unwrap(), Message::Pong(_)) {}
                    w
                })
                .collect();
            let mut v1: Vec<Ws> = (0..4)
                .map(|_| {
                    let mut w = ws_connect(&srv, &format!("/ws/{t}-y"), Some("ringcast.v1"));
                    v1_until(&mut w, "subscribed");
                    w.send(Message::Text(
                        format!(r#"{{"type":"subscribe","topic":"{t}"}}"#).into(),
                    ))
                    .unwrap();
                    v1_until(&mut w, "subscribed");
                    w
                })
                .collect();
            // Long polls waiting on the topic (single and multi-topic).
            let cur = srv.current(&t);
            let (_, token) = mpoll(&srv, &q);
            let polls: Vec<TcpStream> = (0..4)
                .map(|i| {
                    let mut s = srv.connect();
                    let path = if i % 2 == 0 {
                        format!("/poll/{t}?since={cur}&wait=30")
                    } else {
                        format!("/poll?{q}&since={token}&wait=30")
                    };
                    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
                    s
                })
                .collect();
            assert_eq!(
                srv.wait_metric("ringcast_longpoll_waiting", 4, Duration::from_secs(5)),
                4
            );
            assert_eq!(
                wait_subscribers(&srv, &t, 6 + 4 + 4 + 4),
                18,
                "round {round}"
            );
            // The kernel spread them: both shards hold some (all 18 on one: about 2^-17).
            let m = srv.get("/metrics").text();
            for shard in ["0", "1"] {
                let key = format!("ringcast_connections_open{{shard=\"{shard}\"}} ");
                let open: i64 = m
                    .lines()
                    .find_map(|l| l.strip_prefix(&key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                assert!(open > 0, "shard {shard} holds none of the subscribers");
            }
            // v1 presence answers the same count.
            v1[0]
                .send(Message::Text(
                    format!(r#"{{"type":"presence","topic":"{t}","ref":"c"}}"#).into(),
                ))
                .unwrap();
            let p = v1_until(&mut v1[0], "presence");
            assert_eq!(p["ref"], "c");
            assert_eq!(p["topic"], t.as_str());
            assert_eq!(p["subscribers"], 18);
            assert_eq!(p["id"], cur.as_str());
            // Churn: half go, some unsubscribe, then everyone.
            sse.truncate(3);
            raw.truncate(2);
            v1[1]
                .send(Message::Text(
                    format!(r#"{{"type":"unsubscribe","topic":"{t}"}}"#).into(),
                ))
                .unwrap();
            v1_until(&mut v1[1], "unsubscribed");
            drop(polls);
            assert_eq!(wait_subscribers(&srv, &t, 3 + 2 + 3), 8, "round {round}");
            drop((sse, raw, v1));
            assert_eq!(wait_subscribers(&srv, &t, 0), 0, "round {round}");
        }
    }
    // Per shard, no per-topic label.
    let m = srv.get("/metrics").text();
    assert!(!m.contains("topic=\""), "per-topic metric label");
}

#[test]
fn sse_streams_say_their_position_before_the_first_message() {
    let srv = Server::start(&["--shards", "2"]);
    for t in topics("first", 2) {
        let cur = srv.publish(&t, b"one");
        let mut s = Sse::open(&srv, &format!("/sse/{t}"), None);
        s.ready();
        assert!(s.events.is_empty());
        assert_eq!(s.p.last_event_id(), cur);
        assert!(
            s.raw.contains(&format!(": ok\n\nid: {cur}\n\n")),
            "{}",
            s.raw
        );
    }
}

#[test]
fn multi_routes_counts_and_presence_need_read_permission_on_every_topic() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let keys = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
    let raw = std::fs::read(keys.join("hmac.secret")).unwrap();
    let secret = raw.strip_suffix(b"\n").unwrap_or(&raw).to_vec();
    let jwt = |topics: &[&str]| {
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"exp": exp, "sub": "t", "topics": topics}),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap()
    };
    let srv = Server::start(&[
        "--shards",
        "2",
        "--jwt-secret-file",
        keys.join("hmac.secret").to_str().unwrap(),
        "--allow-origin",
        "https://app.example",
    ]);
    let both = jwt(&["room/*"]);
    let one = jwt(&["room/a"]);
    let get = |path: &str, token: Option<&str>| {
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        srv.request(
            format!(
                "GET {path} HTTP/1.1\r\nHost: t\r\nOrigin: https://app.example\r\n{auth}\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
    };
    for path in [
        "/poll?topic=room/a&topic=room/b",
        "/sse?topic=room/a&topic=room/b",
        "/topics/room/b",
    ] {
        assert_eq!(get(path, None).status, 401, "{path}");
        assert_eq!(
            get(path, Some(&one)).status,
            403,
            "{path}: one topic of two"
        );
    }
    let r = get("/poll?topic=room/a&topic=room/b", Some(&both));
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example"),
        "a browser page reads the answer"
    );
    let r = get("/topics/room/b", Some(&both));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["subscribers"], 0);
    // v1 presence: the connection's grant.
    let mut ws = ws_connect(
        &srv,
        &format!("/ws/room/a?token={one}"),
        Some("ringcast.v1"),
    );
    v1_until(&mut ws, "subscribed");
    ws.send(Message::Text(
        r#"{"type":"presence","topic":"room/b","ref":"x"}"#.into(),
    ))
    .unwrap();
    let v = v1_next(&mut ws);
    assert_eq!(
        (v["type"].as_str(), v["ref"].as_str()),
        (Some("error"), Some("x"))
    );
    ws.send(Message::Text(
        r#"{"type":"presence","topic":"room/a","ref":"y"}"#.into(),
    ))
    .unwrap();
    let v = v1_next(&mut ws);
    assert_eq!(v["type"], "presence");
    assert_eq!(v["subscribers"], 1, "{v}");
}

#[test]
fn a_slow_multi_topic_stream_is_disconnected_even_under_drop_and_resumes_exactly() {
    let srv = Server::start(&[
        "--shards",
        "2",
        "--client-buffer-bytes",
        "65536",
        "--slow-client",
        "drop",
        "--history-bytes",
        "33554432",
        "--history-messages",
        "20000",
    ]);
    let ts = topics("slowm", 2);
    let q = query(&ts);
    let (_, token) = mpoll(&srv, &q);
    let mut slow = pubsub::connect_small_rcvbuf(&srv, 4096);
    write!(
        slow,
        "GET /sse?{q} HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {token}\r\n\r\n"
    )
    .unwrap();
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 1, Duration::from_secs(5)),
        1
    );
    // 1 KiB messages on both topics until the node gives up on the client (bounded).
    let mut published: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut s = srv.connect();
    for i in 0..12_000 {
        let t = &ts[i % 2];
        let mut body = format!("{i:06}-").into_bytes();
        body.resize(1024, b'k');
        let id = server::publish_on(&mut s, t, &body);
        published.entry(t.clone()).or_default().push(offset(&id));
        if i % 100 == 0 && srv.metric("ringcast_slow_client_disconnects_total") > 0 {
            break;
        }
    }
    assert!(srv.metric("ringcast_slow_client_disconnects_total") >= 1);
    assert_eq!(
        srv.metric("ringcast_slow_client_drops_total"),
        0,
        "never dropped"
    );
    // What it got is a gap-free prefix of each topic; its last stream position resumes the rest.
    let r = read_response(&mut slow, true).expect("head");
    assert_eq!(r.status, 200);
    let mut p = SseParser::new();
    let (events, eof) = pubsub::sse_read_to_eof(&mut slow, &mut p, Duration::from_secs(30));
    assert!(eof, "closed by the node");
    let mut got = sse_entries(&events);
    let last = p.last_event_id().to_string();
    let mut again = Sse::open(&srv, &format!("/sse?{q}"), Some(&last));
    let want: BTreeMap<String, u64> = published
        .iter()
        .map(|(t, o)| (t.clone(), *o.last().unwrap()))
        .collect();
    again.read_until(|s| {
        let e = sse_entries(&s.events);
        want.iter()
            .all(|(t, last)| e.iter().any(|x| &x.0 == t && x.1 == *last))
    });
    got.extend(sse_entries(&again.events));
    check(&got, &published, &[]);
}
