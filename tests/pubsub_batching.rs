//! The writer that batches under load by itself (`outbox::subs`'s chains, written in slices):
//! whatever publishers do — one request in flight or many pipelined, on both shards — every
//! subscriber on both shards gets every message of its topic once, in the topic's order, and
//! a subscriber that is behind only because the server has not got round to it is never cut.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;
#[path = "support/wsraw.rs"]
mod wsraw;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use pubsub::*;
use server::{pos, publish_on, read_response, Server};
use sse_parser::SseParser;

const TOPICS: usize = 4;
/// Subscribers per topic, per transport.
const SSE_PER_TOPIC: usize = 12;
const WS_PER_TOPIC: usize = 6;
/// Publishers with one request in flight, and with a batch of `BATCH` pipelined requests to one
/// topic in flight.
const SINGLE: usize = 2;
const PIPELINED: usize = 2;
const PER_PUBLISHER: usize = 160;
const BATCH: usize = 32;
/// Bodies large enough that one pipelined batch (32 × ~300 B) is more than a subscriber's
/// `--client-buffer-bytes` (4096): a writer that counted bytes still waiting for it against
/// the client would cut every subscriber of that topic.
const PAD: usize = 280;

fn topic(i: usize) -> String {
    format!("batch-{i}")
}

fn body(p: usize, i: usize) -> Vec<u8> {
    let mut b = format!("p{p}-{i:04}-").into_bytes();
    b.resize(PAD, b'x');
    b
}

/// Publisher `p`'s plan: (topic, message index) in its order.
fn plan(p: usize) -> Vec<(usize, usize)> {
    if p < SINGLE {
        (0..PER_PUBLISHER).map(|i| ((i + p) % TOPICS, i)).collect()
    } else {
        (0..PER_PUBLISHER)
            .map(|i| (((i / BATCH) + p) % TOPICS, i))
            .collect()
    }
}

/// Publishes a run of requests pipelined on one connection and reads their answers.
fn publish_pipelined(s: &mut TcpStream, reqs: &[(String, Vec<u8>)]) {
    let mut raw = Vec::new();
    for (t, b) in reqs {
        raw.extend_from_slice(
            format!(
                "POST /pub/{t} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        raw.extend_from_slice(b);
    }
    s.write_all(&raw).unwrap();
    for _ in reqs {
        let r = read_response(s, false).expect("publish answer");
        assert_eq!(r.status, 200, "publish: {}", r.text());
    }
}

/// Each publisher's message indexes, in the order received, from bodies `p{p}-{i}-xxx`.
fn check_publisher_order(what: &str, bodies: &[Vec<u8>]) {
    let mut last: HashMap<usize, usize> = HashMap::new();
    for b in bodies {
        let s = String::from_utf8_lossy(b);
        let mut it = s.trim_start_matches('p').split('-');
        let p: usize = it.next().unwrap().parse().unwrap();
        let i: usize = it.next().unwrap().parse().unwrap();
        if let Some(&prev) = last.get(&p) {
            assert!(i > prev, "{what}: publisher {p}'s message {i} after {prev}");
        }
        last.insert(p, i);
    }
}

#[test]
fn every_subscriber_gets_every_message_once_in_order_whatever_the_publishers_do() {
    let srv = Server::start(&[
        "--shards",
        "2",
        "--history-messages",
        "2000",
        "--client-buffer-bytes",
        "4096",
    ]);
    let per_topic: Vec<usize> = (0..TOPICS)
        .map(|t| {
            (0..SINGLE + PIPELINED)
                .flat_map(plan)
                .filter(|&(x, _)| x == t)
                .count()
        })
        .collect();
    let starts: Vec<String> = (0..TOPICS).map(|t| current(&srv, &topic(t))).collect();

    // Subscribers first, from the current position, so each must get every message.
    let mut sse = Vec::new();
    let mut ws = Vec::new();
    for (t, start) in starts.iter().enumerate() {
        for _ in 0..SSE_PER_TOPIC {
            let s = sse_open(&srv, &topic(t), &format!("Last-Event-ID: {start}\r\n"));
            sse.push((t, s));
        }
        for _ in 0..WS_PER_TOPIC {
            let w = wsraw::upgrade(srv.addr, &format!("/ws/{}?since={start}", topic(t)));
            ws.push((t, w));
        }
    }
    let streams = (TOPICS * (SSE_PER_TOPIC + WS_PER_TOPIC)) as i64;
    let open = srv.wait_metric(
        "ringcast_sse_streams_open",
        (TOPICS * SSE_PER_TOPIC) as i64,
        Duration::from_secs(10),
    ) + srv.wait_metric(
        "ringcast_websockets_open",
        (TOPICS * WS_PER_TOPIC) as i64,
        Duration::from_secs(10),
    );
    assert_eq!(open, streams);

    // The streams, kept open until the end.
    let kept: Vec<TcpStream> = std::thread::scope(|sc| {
        let readers: Vec<_> = sse
            .into_iter()
            .map(|(t, mut s)| {
                let n = per_topic[t];
                let start = starts[t].clone();
                sc.spawn(move || {
                    let mut p = SseParser::new();
                    let ev = sse_read(&mut s, &mut p, n, Duration::from_secs(90));
                    assert_eq!(ev.len(), n, "an SSE subscriber of topic {t}");
                    let (epoch, first) = pos(&start);
                    for (k, e) in ev.iter().enumerate() {
                        let (ep, off) = pos(&e.id);
                        assert_eq!(ep, epoch);
                        assert_eq!(off, first + 1 + k as u64, "topic {t}: a gap or a duplicate");
                    }
                    let bodies: Vec<Vec<u8>> =
                        ev.iter().map(|e| e.data.clone().into_bytes()).collect();
                    check_publisher_order(&format!("sse topic {t}"), &bodies);
                    s
                })
            })
            .chain(ws.into_iter().map(|(t, mut w)| {
                let n = per_topic[t];
                sc.spawn(move || {
                    w.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
                    let mut bodies = Vec::new();
                    while bodies.len() < n {
                        let (fin, op, payload) = wsraw::read_frame(&mut w).expect("a frame");
                        assert!(fin && op == 1, "topic {t}: frame op {op}: {payload:?}");
                        bodies.push(payload);
                    }
                    check_publisher_order(&format!("ws topic {t}"), &bodies);
                    w
                })
            }))
            .collect();

        let pubs: Vec<_> = (0..SINGLE + PIPELINED)
            .map(|p| {
                let srv = &srv;
                sc.spawn(move || {
                    let mut s = srv.connect();
                    let steps = plan(p);
                    if p < SINGLE {
                        for (t, i) in steps {
                            publish_on(&mut s, &topic(t), &body(p, i));
                        }
                    } else {
                        for chunk in steps.chunks(BATCH) {
                            let reqs: Vec<(String, Vec<u8>)> =
                                chunk.iter().map(|&(t, i)| (topic(t), body(p, i))).collect();
                            publish_pipelined(&mut s, &reqs);
                        }
                    }
                })
            })
            .collect();
        for h in pubs {
            h.join().unwrap();
        }
        readers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(srv.metric("ringcast_slow_client_disconnects_total"), 0);
    // Every stream is still there: none was cut for the server's own schedule.
    let open = srv.metric("ringcast_sse_streams_open") + srv.metric("ringcast_websockets_open");
    assert_eq!(open, streams);
    drop(kept);
}
