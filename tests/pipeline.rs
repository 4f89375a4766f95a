//! Pipelined publishes against the real binary on two shards: a connection's `POST /pub/{topic}`
//! requests whose topic is homed on the other shard go to that home together, as one command
//! (`src/shard/http/pipeline.rs`). Whatever is gathered, every answer must come back in request
//! order, each topic's positions must follow on, every subscriber (SSE and WebSocket) must get
//! every message once and in order, and a request that cannot join — a bad one, another
//! route, HTTP/1.0, a body still arriving — must be answered in its place.
//!
//! Topics are picked with `ringcast::fanout::home_of` so that both shards are homes: whichever
//! shard the kernel gives a connection, some of its runs of publishes are remote-homed.

#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ringcast::fanout::home_of;
use server::{pos, read_response, Response, Server};
use sse_parser::{SseEvent, SseParser};

// ---- helpers ------------------------------------------------------------------------------

/// `per_home` topics homed on shard 0, then as many homed on shard 1 (of 2).
fn topics_by_home(prefix: &str, per_home: usize) -> [Vec<String>; 2] {
    let mut homes: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for i in 0.. {
        let t = format!("{prefix}-{i}");
        let h = home_of(t.as_bytes(), 2);
        if homes[h].len() < per_home {
            homes[h].push(t);
        }
        if homes.iter().all(|v| v.len() == per_home) {
            return homes;
        }
    }
    unreachable!()
}

fn publish_req(topic: &str, query: &str, body: &str, extra: &str) -> Vec<u8> {
    format!(
        "POST /pub/{topic}{query} HTTP/1.1\r\nHost: t\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The same publish with a chunked body (two chunks).
fn chunked_req(topic: &str, body: &str) -> Vec<u8> {
    let (a, b) = body.split_at(body.len() / 2);
    format!(
        "POST /pub/{topic} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    )
    .into_bytes()
}

/// What the answer to one pipelined request must be.
#[derive(Clone, Debug)]
enum Want {
    /// 200 with the next position of `topic`; subscribers get `body` (as event `event`).
    Published {
        topic: String,
        body: String,
        event: Option<String>,
    },
    /// This status and a body containing this text.
    Status(u16, &'static str),
}

/// A topic's published messages in order: (id, body, event).
type Log = HashMap<String, Vec<(String, String, Option<String>)>>;

/// Reads one answer per `want` from `s`, in order, and checks each: a published answer carries
/// the epoch of its own request's topic (each topic has its own epoch, so an answer out of
/// place shows) and the offset after that topic's previous one. Appends to `log`.
fn check_answers(
    s: &mut TcpStream,
    want: &[Want],
    epochs: &HashMap<String, (String, u64)>,
    log: &mut Log,
) {
    for (i, w) in want.iter().enumerate() {
        let r: Response = read_response(s, false).unwrap_or_else(|| panic!("answer {i} missing"));
        match w {
            Want::Published { topic, body, event } => {
                assert_eq!(r.status, 200, "answer {i} ({topic}): {}", r.text());
                let id = r.json()["id"].as_str().unwrap().to_string();
                let (epoch, start) = &epochs[topic];
                let got = log.entry(topic.clone()).or_default();
                let (e, o) = pos(&id);
                assert_eq!(&e, epoch, "answer {i} is not for {topic}: {id}");
                assert_eq!(
                    o,
                    start + got.len() as u64 + 1,
                    "answer {i}: {topic}'s positions follow on"
                );
                got.push((id, body.clone(), event.clone()));
            }
            Want::Status(status, text) => {
                assert_eq!(r.status, *status, "answer {i}: {}", r.text());
                assert!(r.text().contains(text), "answer {i}: {}", r.text());
            }
        }
    }
}

/// Opens an SSE stream resuming at `since`.
fn sse_open(srv: &Server, topic: &str, since: &str) -> TcpStream {
    let mut s = srv.connect();
    write!(
        s,
        "GET /sse/{topic} HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {since}\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s, true).expect("sse head");
    assert_eq!(r.status, 200);
    s
}

/// Reads SSE events until `n` arrived or `within` ends.
fn sse_read(s: &mut TcpStream, n: usize, within: Duration) -> Vec<SseEvent> {
    sse_parser::read_events(s, &mut SseParser::new(), n, within)
}

/// Opens a plain WebSocket resuming at `since` and returns the socket after the 101.
fn ws_open(srv: &Server, topic: &str, since: &str) -> TcpStream {
    let mut t = srv.connect();
    write!(
        t,
        "GET /ws/{topic}?since={since} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut t, false).expect("upgrade response");
    assert_eq!(r.status, 101, "{}", r.text());
    t
}

/// Reads `n` text frames' payloads (skipping pings), or fewer if the stream ends.
fn ws_read(t: &mut TcpStream, n: usize) -> Vec<String> {
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        let mut h = [0u8; 2];
        if t.read_exact(&mut h).is_err() {
            break;
        }
        let len = match h[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                t.read_exact(&mut b).unwrap();
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                t.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        t.read_exact(&mut p).unwrap();
        match h[0] & 0x0f {
            0x1 => out.push(String::from_utf8(p).unwrap()),
            0x9 | 0xA => {}
            op => panic!("unexpected opcode {op}"),
        }
    }
    out
}

/// One SSE and one WebSocket subscriber per topic, each resuming at the topic's current
/// position (so nothing published after this is missed); returns the positions too.
struct Subscribers {
    starts: HashMap<String, (String, u64)>,
    sse: Vec<(String, TcpStream)>,
    ws: Vec<(String, TcpStream)>,
}

fn subscribe_all(srv: &Server, topics: &[&String]) -> Subscribers {
    let mut subs = Subscribers {
        starts: HashMap::new(),
        sse: Vec::new(),
        ws: Vec::new(),
    };
    for &t in topics {
        let cur = srv.current(t);
        subs.sse.push((t.clone(), sse_open(srv, t, &cur)));
        subs.ws.push((t.clone(), ws_open(srv, t, &cur)));
        subs.starts.insert(t.clone(), pos(&cur));
    }
    subs
}

/// Every subscriber got exactly its topic's messages of `log`, once each, in order.
fn check_subscribers(subs: Subscribers, log: &Log) {
    for (t, mut s) in subs.sse {
        let want = &log[&t];
        let mut got = sse_read(&mut s, want.len(), Duration::from_secs(20));
        // Nothing more: not a message twice.
        got.extend(sse_read(&mut s, 1, Duration::from_millis(300)));
        let got: Vec<(String, String, String)> =
            got.into_iter().map(|e| (e.id, e.data, e.event)).collect();
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(id, body, ev)| {
                let ev = ev.clone().unwrap_or_else(|| "message".into());
                (id.clone(), body.clone(), ev)
            })
            .collect();
        assert_eq!(got, want, "SSE subscriber of {t}");
    }
    for (t, mut s) in subs.ws {
        let want: Vec<String> = log[&t].iter().map(|m| m.1.clone()).collect();
        let got = ws_read(&mut s, want.len());
        assert_eq!(got, want, "WebSocket subscriber of {t}");
        // Nothing more: not a message twice.
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(
            !matches!(s.read(&mut b), Ok(1)),
            "WebSocket subscriber of {t}: more than its messages"
        );
    }
}

/// The sizes of the commands the server logged gathering (`n pipelined publishes`).
fn gathered(srv: &Server) -> Vec<usize> {
    srv.log()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(": ")?;
            let (n, rest) = rest.split_once(' ')?;
            rest.starts_with("pipelined publishes")
                .then(|| n.parse().ok())
                .flatten()
        })
        .collect()
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn pipelined_publishes_to_both_homes_are_answered_and_delivered_in_order() {
    let srv = Server::start(&["--shards", "2", "--history-messages", "1000"]);
    let homes = topics_by_home("pipe", 3);
    let all: Vec<&String> = homes.iter().flatten().collect();
    let subs = subscribe_all(&srv, &all);

    let mut raw = Vec::new();
    let mut want = Vec::new();
    let mut n = 0;
    let mut publish = |raw: &mut Vec<u8>, want: &mut Vec<Want>, t: &String, how: &str| {
        n += 1;
        let body = format!("{t}/m{n}");
        let (req, event) = match how {
            "chunked" => (chunked_req(t, &body), None),
            "event" => (
                publish_req(t, "?event=price", &body, ""),
                Some("price".to_string()),
            ),
            "http10" => (
                format!(
                    "POST /pub/{t} HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
                None,
            ),
            "close" => (publish_req(t, "", &body, "Connection: close\r\n"), None),
            _ => (publish_req(t, "", &body, ""), None),
        };
        raw.extend_from_slice(&req);
        want.push(Want::Published {
            topic: t.clone(),
            body,
            event,
        });
    };
    // Runs of six publishes to one home's topics, alternating homes, with requests that
    // cannot join in the middle of runs.
    for round in 0..4 {
        for (h, topics) in homes.iter().enumerate() {
            for (k, t) in topics.iter().chain(topics).enumerate() {
                let how = match (round, h, k) {
                    (1, 0, 3) => {
                        // A bad event name: 400 in its place, nothing published.
                        raw.extend_from_slice(&publish_req(t, "?event=two%20words", "x", ""));
                        want.push(Want::Status(400, "event name"));
                        "plain"
                    }
                    (1, 1, 2) => {
                        raw.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
                        want.push(Want::Status(200, "ok"));
                        "plain"
                    }
                    (2, 0, 4) => "chunked",
                    (2, 1, 1) => "http10",
                    (3, 0, 2) | (3, 1, 5) => "event",
                    _ => "plain",
                };
                publish(&mut raw, &mut want, t, how);
            }
        }
    }
    // Long runs to one home: more than a command takes (64).
    for topics in &homes {
        for k in 0..70 {
            publish(&mut raw, &mut want, &topics[k % 3], "plain");
        }
    }
    // The last request closes the connection.
    publish(&mut raw, &mut want, &homes[1][0], "close");

    let mut s = srv.connect();
    s.write_all(&raw).unwrap();
    let mut log = Log::new();
    check_answers(&mut s, &want, &subs.starts, &mut log);
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "closed after the last answer"
    );
    check_subscribers(subs, &log);

    let sizes = gathered(&srv);
    assert!(
        !sizes.is_empty(),
        "remote-homed publishes were never gathered"
    );
    assert!(
        sizes.iter().all(|&n| (2..=64).contains(&n)),
        "commands of 2..=64 publishes: {sizes:?}"
    );
}

#[test]
fn a_body_still_arriving_ends_the_gathering_and_is_answered_in_its_place() {
    let srv = Server::start(&["--shards", "2"]);
    let [h0, h1] = topics_by_home("split", 1);
    let (a, b) = (&h0[0], &h1[0]);
    let subs = subscribe_all(&srv, &[a, b]);
    let p = |t: &str, body: &str| publish_req(t, "", body, "");
    let want: Vec<Want> = [
        (a, "s1"),
        (a, "s2"),
        (b, "s3"),
        (b, "s4"),
        (b, "s5-a-body-split-across-two-writes"),
        (b, "s6"),
        (a, "s6a"),
        (a, "s7-a-chunked-body-split-across-writes"),
        (a, "s8"),
        (b, "s9"),
    ]
    .iter()
    .map(|(t, body)| Want::Published {
        topic: t.to_string(),
        body: body.to_string(),
        event: None,
    })
    .collect();

    let mut w1 = [p(a, "s1"), p(a, "s2"), p(b, "s3"), p(b, "s4")].concat();
    let s5 = p(b, "s5-a-body-split-across-two-writes");
    let cut5 = s5.len() - 10;
    w1.extend_from_slice(&s5[..cut5]);
    let mut w2 = s5[cut5..].to_vec();
    w2.extend_from_slice(&[p(b, "s6"), p(a, "s6a")].concat());
    let s7 = chunked_req(a, "s7-a-chunked-body-split-across-writes");
    let cut7 = s7.len() - 12;
    w2.extend_from_slice(&s7[..cut7]);
    let mut w3 = s7[cut7..].to_vec();
    w3.extend_from_slice(&[p(a, "s8"), p(b, "s9")].concat());

    let mut s = srv.connect();
    for w in [w1, w2, w3] {
        s.write_all(&w).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    let mut log = Log::new();
    check_answers(&mut s, &want, &subs.starts, &mut log);
    check_subscribers(subs, &log);
    assert!(
        !gathered(&srv).is_empty(),
        "remote-homed publishes were never gathered"
    );
}

#[test]
fn refused_requests_inside_a_pipeline_are_answered_in_their_place() {
    // A request without the token is answered 401 and the connection goes on; a body over
    // --max-message-bytes is answered 413 and ends the connection (its rest is unread). Each
    // comes in the middle of a run of publishes to one home. Every connection has a 401 in a
    // run to each home, so on whichever shard the kernel puts it one of them is remote-homed;
    // the 413 ends a run to the home alternating with the connection, so over ten connections
    // (spread by the kernel) some are remote-homed too.
    let srv = Server::start(&[
        "--shards",
        "2",
        "--max-message-bytes",
        "64",
        "--publish-token",
        "secret",
    ]);
    let homes = topics_by_home("refused", 2);
    let all: Vec<&String> = homes.iter().flatten().collect();
    let subs = subscribe_all(&srv, &all);
    let auth = "Authorization: Bearer secret\r\n";
    let mut log = Log::new();
    for c in 0..10 {
        let ok = |h: usize, i: usize, tag: &str| {
            let t = &homes[h][i % 2];
            let body = format!("c{c}-{tag}");
            (
                publish_req(t, "", &body, auth),
                Want::Published {
                    topic: t.clone(),
                    body,
                    event: None,
                },
            )
        };
        let mut reqs = Vec::new();
        for h in [c % 2, 1 - c % 2] {
            reqs.extend([ok(h, 0, &format!("{h}a")), ok(h, 1, &format!("{h}b"))]);
            reqs.push((
                publish_req(&homes[h][0], "", "no token", ""),
                Want::Status(401, "Authorization"),
            ));
            reqs.extend([ok(h, 1, &format!("{h}c")), ok(h, 0, &format!("{h}d"))]);
        }
        let h = c % 2;
        reqs.extend([ok(h, 0, "e"), ok(h, 1, "f")]);
        reqs.push((
            publish_req(&homes[h][1], "", &"x".repeat(65), auth),
            Want::Status(413, "larger than"),
        ));
        // Never read: the connection ends with the 413.
        let (never, _) = ok(h, 0, "never");
        let mut raw: Vec<u8> = reqs.iter().flat_map(|r| r.0.clone()).collect();
        raw.extend_from_slice(&never);
        let want: Vec<Want> = reqs.into_iter().map(|r| r.1).collect();

        let mut s = srv.connect();
        s.write_all(&raw).unwrap();
        check_answers(&mut s, &want, &subs.starts, &mut log);
        let mut rest = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(
            s.read_to_end(&mut rest).unwrap_or(0),
            0,
            "closed after the 413"
        );
    }
    // Exactly the accepted messages, in order: nothing refused, nothing after the 413.
    check_subscribers(subs, &log);
    assert!(
        !gathered(&srv).is_empty(),
        "remote-homed publishes were never gathered"
    );
}

#[test]
fn pipelined_publishes_wait_through_full_inboxes_and_keep_their_order() {
    // Inboxes of 2 commands: commands, replies and deliveries overflow at once, and homes hand
    // publishes back (`Reply::Busy`) while their fanout is behind. Batches are retried as a
    // whole, one per connection at a time, so every answer still comes in order, every
    // topic's positions follow on, and every subscriber gets every message once, in order.
    const CONNS: usize = 4;
    const ROUNDS: usize = 6;
    const RUN: usize = 12;
    let srv = Server::start(&[
        "--shards",
        "2",
        "--inbox-capacity",
        "2",
        "--publish-timeout-ms",
        "30000",
        "--history-messages",
        "1000",
        "--max-pipelined-publishes",
        "8",
    ]);
    // Two topics per connection, one homed on each shard.
    let homes = topics_by_home("tight", CONNS);
    let all: Vec<&String> = homes.iter().flatten().collect();
    let subs = subscribe_all(&srv, &all);
    let logs: Vec<Log> = std::thread::scope(|sc| {
        let threads: Vec<_> = (0..CONNS)
            .map(|c| {
                let (srv, homes, starts) = (&srv, &homes, &subs.starts);
                sc.spawn(move || {
                    let mut s = srv.connect();
                    let mut log = Log::new();
                    for r in 0..ROUNDS {
                        let mut raw = Vec::new();
                        let mut want = Vec::new();
                        for h in [r % 2, 1 - r % 2] {
                            let t = &homes[h][c];
                            for k in 0..RUN {
                                let body = format!("{t}/r{r}k{k}");
                                raw.extend_from_slice(&publish_req(t, "", &body, ""));
                                want.push(Want::Published {
                                    topic: t.clone(),
                                    body,
                                    event: None,
                                });
                            }
                        }
                        s.write_all(&raw).unwrap();
                        check_answers(&mut s, &want, starts, &mut log);
                    }
                    log
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let log: Log = logs.into_iter().flatten().collect();
    assert_eq!(log.len(), 2 * CONNS);
    check_subscribers(subs, &log);
    assert!(
        srv.metric("ringcast_inbox_full_total") > 0,
        "the test must have exercised the full-inbox path"
    );
    let sizes = gathered(&srv);
    assert!(
        !sizes.is_empty(),
        "remote-homed publishes were never gathered"
    );
    assert!(
        sizes.iter().all(|&n| (2..=8).contains(&n)),
        "--max-pipelined-publishes 8 bounds a command: {sizes:?}"
    );
}
