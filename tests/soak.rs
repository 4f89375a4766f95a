//! A bounded soak (about half a minute on two cores): WebSocket echo clients send messages of
//! random sizes (up to 3 MiB) in random fragment sizes and write cuts, with pings between
//! fragments, while HTTP clients pipeline publishes with bodies (Content-Length and chunked),
//! written in random cuts, to topics on both shards whose SSE subscribers check every message.
//! Every echo must come back byte-exact, every answer be right, every SSE event arrive once and
//! in order, and no connection be closed.

#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;
#[path = "support/wsraw.rs"]
mod wsraw;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use server::{pos, read_response, Server};
use sse_parser::SseParser;
use wsraw::{echo_client, write_in_cuts, Plan, Rng};

/// Every load loop below is bounded by count; this bounds the test's time.
const DEADLINE: Duration = Duration::from_secs(240);

/// One pipelined request and what its answer must be.
enum Req {
    Publish(Vec<u8>),
    Health,
}

/// Writes `rounds` batches of pipelined requests to `/pub/{topic}` (bodies with Content-Length
/// or chunked, now and then a `GET /healthz` between them) in random cuts, and checks every
/// answer in order: 200 with the topic's next position for a publish. Returns the bodies
/// published, in order.
fn http_publisher(addr: SocketAddr, topic: &str, seed: u64, rounds: usize) -> Vec<Vec<u8>> {
    let mut r = Rng::new(seed);
    let mut t = TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut published = Vec::new();
    let mut last: Option<u64> = None;
    for _ in 0..rounds {
        let n = r.range(1, 24);
        let mut bytes = Vec::new();
        let mut reqs = Vec::new();
        for _ in 0..n {
            if r.chance(1, 12) {
                bytes.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
                reqs.push(Req::Health);
                continue;
            }
            let len = r.range(1, 4000);
            let body: Vec<u8> = (0..len).map(|_| b' ' + (r.next() % 94) as u8).collect();
            if r.chance(1, 3) {
                write!(
                    bytes,
                    "POST /pub/{topic} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .unwrap();
                let mut at = 0;
                while at < body.len() {
                    let c = r.range(1, 700).min(body.len() - at);
                    write!(bytes, "{c:x}\r\n").unwrap();
                    bytes.extend_from_slice(&body[at..at + c]);
                    bytes.extend_from_slice(b"\r\n");
                    at += c;
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
            } else {
                write!(
                    bytes,
                    "POST /pub/{topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"
                )
                .unwrap();
                bytes.extend_from_slice(&body);
            }
            reqs.push(Req::Publish(body));
        }
        let max_cut = [5, 64, 1500, 65536][(r.next() % 4) as usize];
        write_in_cuts(&mut t, &mut r, &bytes, max_cut);
        for (i, req) in reqs.into_iter().enumerate() {
            let a = read_response(&mut t, false).expect("an answer for every request");
            assert_eq!(a.status, 200, "{topic} answer {i}: {}", a.text());
            if let Req::Publish(body) = req {
                let (_, off) = pos(a.json()["id"].as_str().unwrap());
                if let Some(l) = last {
                    assert_eq!(off, l + 1, "{topic}: positions follow on");
                }
                last = Some(off);
                published.push(body);
            }
        }
    }
    published
}

#[test]
fn websockets_and_pipelined_http_under_random_cuts() {
    let s = Server::start(&[
        "--shards",
        "2",
        "--max-message-bytes",
        "8388608",
        "--client-buffer-bytes",
        "33554432",
        "--history-bytes",
        "16777216",
        "--heartbeat-secs",
        "1",
        "--pong-timeout-secs",
        "600",
    ]);
    let t0 = Instant::now();
    let addr = s.addr;

    // SSE subscribers first, so they see every publish.
    let http_topics: Vec<String> = (0..4).map(|i| format!("soak-http-{i}")).collect();
    let mut subscribers = Vec::new();
    for topic in &http_topics {
        let mut sse = TcpStream::connect(addr).unwrap();
        write!(sse, "GET /sse/{topic} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let head = read_response(&mut sse, true).expect("sse head");
        assert_eq!(head.status, 200);
        subscribers.push(sse);
    }
    // Subscribed once the topic has a position here (the subscription is made before `current`
    // answers on this connection's shard or the home).
    for topic in &http_topics {
        s.current(topic);
    }

    let ws: Vec<_> = (0..8u64)
        .map(|c| {
            std::thread::spawn(move || {
                let plan = Plan {
                    seed: 0x50a4 + c,
                    messages: 12,
                    max_len: 3 << 20,
                };
                echo_client(addr, &format!("soak-ws-{c}"), plan)
            })
        })
        .collect();
    let http: Vec<_> = http_topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            let topic = topic.clone();
            std::thread::spawn(move || http_publisher(addr, &topic, 0x4771 + i as u64, 60))
        })
        .collect();

    let mut ws_bytes = 0;
    for c in ws {
        ws_bytes += c.join().expect("websocket echo client");
    }
    for ((h, mut sse), topic) in http.into_iter().zip(subscribers).zip(&http_topics) {
        let bodies = h.join().expect("http publisher");
        let left = DEADLINE.saturating_sub(t0.elapsed());
        let events = sse_parser::read_events(&mut sse, &mut SseParser::new(), bodies.len(), left);
        // The opening `retry:`/comment are not events; every publish is one, in order.
        assert_eq!(events.len(), bodies.len(), "{topic}: every message once");
        let mut last: Option<u64> = None;
        for (i, (e, b)) in events.iter().zip(&bodies).enumerate() {
            assert!(
                e.data.as_bytes() == b.as_slice(),
                "{topic} event {i} differs"
            );
            let (_, off) = pos(&e.id);
            if let Some(l) = last {
                assert_eq!(off, l + 1, "{topic}: in order, no gap");
            }
            last = Some(off);
        }
    }
    assert!(ws_bytes > 20 << 20, "the soak moved {ws_bytes} echo bytes");
    assert!(t0.elapsed() < DEADLINE, "took {:?}", t0.elapsed());
    let log = s.log();
    assert!(!log.contains("protocol error"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}
