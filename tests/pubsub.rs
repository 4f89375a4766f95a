//! Pub/sub end to end against the real binary: publish (single, batch, binary, auth, bad input),
//! short and long polling, positions and resets, history bounds, idle topics, one order per
//! topic across shards, long-poll chains under a publish stream, and the slow-client policies.

#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use server::{pos, publish_on, read_response, Response, Server};
use sse_parser::{SseEvent, SseParser};

// ---- helpers ------------------------------------------------------------------------------

/// Publishes on a keep-alive connection; returns the new position.
/// The current position of a topic (a poll without `since`).
fn current(srv: &Server, topic: &str) -> String {
    let r = srv.get(&format!("/poll/{topic}"));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["messages"].as_array().unwrap().len(), 0);
    v["next"].as_str().unwrap().to_string()
}

fn poll(srv: &Server, topic: &str, query: &str) -> Response {
    srv.get(&format!("/poll/{topic}?{query}"))
}

/// (id, data) of each message of a poll answer.
fn msgs(v: &serde_json::Value) -> Vec<(String, String)> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Follows a chain of long polls from `since` until `want` messages arrived or `within` ends.
fn long_poll_chain(
    srv: &Server,
    topic: &str,
    since: &str,
    limit: usize,
    want: usize,
    within: Duration,
) -> Vec<(String, String)> {
    let t = Instant::now();
    let mut since = since.to_string();
    let mut got = Vec::new();
    while got.len() < want && t.elapsed() < within {
        let r = poll(srv, topic, &format!("since={since}&limit={limit}&wait=5"));
        match r.status {
            200 => {
                let v = r.json();
                assert!(v.get("reset").is_none(), "chain reset: {v}");
                let m = msgs(&v);
                assert!(m.len() <= limit, "limit {limit} exceeded: {}", m.len());
                since = v["next"].as_str().unwrap().to_string();
                if let Some(last) = m.last() {
                    assert_eq!(last.0, since, "next is the last id");
                }
                got.extend(m);
            }
            204 => {
                since = r.header("x-ringcast-next").unwrap().to_string();
            }
            s => panic!("long poll answered {s}: {}", r.text()),
        }
    }
    got
}

/// Opens an SSE stream and reads its head.
fn sse_open(srv: &Server, topic: &str, extra: &str) -> TcpStream {
    let mut s = srv.connect();
    write!(s, "GET /sse/{topic} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
    let r = read_response(&mut s, true).expect("sse head");
    assert_eq!(r.status, 200);
    s
}

/// Opens an SSE stream resuming from the topic's current position, so the subscription
/// misses nothing published after this call returns (a stream without Last-Event-ID starts at
/// whatever is current when its subscription reaches the topic's home, which is after its
/// first bytes and after `ringcast_sse_streams_open` counts it).
fn sse_open_now(srv: &Server, topic: &str) -> TcpStream {
    let cur = current(srv, topic);
    sse_open(srv, topic, &format!("Last-Event-ID: {cur}\r\n"))
}

/// Reads an SSE stream into `p` until `n` events or EOF or `within`; returns the events.
fn sse_read(s: &mut TcpStream, p: &mut SseParser, n: usize, within: Duration) -> Vec<SseEvent> {
    sse_parser::read_events(s, p, n, within)
}

/// Reads until the server closes (bounded); returns the events and whether EOF was seen.
fn sse_read_to_eof(
    s: &mut TcpStream,
    p: &mut SseParser,
    within: Duration,
) -> (Vec<SseEvent>, bool) {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(k) => out.extend(p.feed(&buf[..k])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// A tiny seeded PRNG (xorshift64*), so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A TCP connection to the server with a small receive buffer set before connect, so the
/// kernel cannot absorb much of what a never-reading client is sent.
fn connect_small_rcvbuf(srv: &Server, bytes: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(a) = srv.addr else {
        panic!("127.0.0.1 only")
    };
    // SAFETY: plain socket syscalls on a fresh fd that we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let v: libc::c_int = bytes;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

// ---- publish ------------------------------------------------------------------------------

#[test]
fn publish_then_short_poll_with_etag_events_and_binary() {
    let srv = Server::start(&["--shards", "2"]);
    let start = current(&srv, "news");
    let (epoch, off) = pos(&start);
    assert_eq!(off, 0, "a new topic starts at offset 0");

    let a = srv.publish("news", b"hello");
    let r = srv.post("/pub/news?event=price", b"{\"p\":1}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = r.json()["id"].as_str().unwrap().to_string();
    // Not UTF-8 → binary; UTF-8 but declared octet-stream → binary too.
    let c = srv.publish("news", &[0xff, 0x00, 0x80]);
    let raw = b"POST /pub/news HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
                Content-Type: application/octet-stream\r\nContent-Length: 3\r\n\r\nabc";
    let r = srv.request(raw);
    assert_eq!(r.status, 200);
    let d = r.json()["id"].as_str().unwrap().to_string();
    for (i, id) in [&a, &b, &c, &d].iter().enumerate() {
        assert_eq!(pos(id), (epoch.clone(), i as u64 + 1));
    }

    // No since: no messages, next = current, ETag = current.
    let r = srv.get("/poll/news");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["next"], d.as_str());
    assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));

    // since = start: all four, in order, with event names and base64 for binary.
    let r = poll(&srv, "news", &format!("since={start}"));
    let v = r.json();
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 4);
    assert_eq!(v["next"], d.as_str());
    assert!(v.get("reset").is_none());
    assert_eq!(m[0]["id"], a.as_str());
    assert_eq!(m[0]["data"], "hello");
    assert!(m[0].get("event").is_none() && m[0].get("encoding").is_none());
    assert_eq!(m[1]["event"], "price");
    assert_eq!(m[1]["data"], "{\"p\":1}");
    assert_eq!(m[2]["encoding"], "base64");
    assert_eq!(m[2]["data"], "/wCA");
    assert_eq!(m[3]["encoding"], "base64");
    assert_eq!(m[3]["data"], "YWJj");

    // limit: the first N after since; next = the last one given.
    let v = poll(&srv, "news", &format!("since={a}&limit=2")).json();
    let m = msgs(&v);
    assert_eq!(
        m.iter().map(|x| x.0.clone()).collect::<Vec<_>>(),
        [b.clone(), c.clone()]
    );
    assert_eq!(v["next"], c.as_str());
    // Up to date: empty, next = since.
    let v = poll(&srv, "news", &format!("since={d}")).json();
    assert_eq!(msgs(&v).len(), 0);
    assert_eq!(v["next"], d.as_str());

    // If-None-Match equal to the current position → 304; stale → 200.
    let r = srv.request(
        format!("GET /poll/news?since={d} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nIf-None-Match: \"{d}\"\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));
    let r = srv.request(
        format!("GET /poll/news?since={c} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nIf-None-Match: \"{c}\"\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(msgs(&r.json()).len(), 1);
}

#[test]
fn batch_publish_is_ordered_and_all_or_nothing() {
    let srv = Server::start(&["--shards", "2", "--max-message-bytes", "16"]);
    let sa = current(&srv, "ba");
    let sb = current(&srv, "bb");
    let body = br#"[{"topic":"ba","data":"a1"},{"topic":"bb","data":"b1","event":"e"},
                   {"topic":"ba","data":"AAEC","encoding":"base64"},{"topic":"ba","data":"a3"}]"#;
    let r = srv.post("/pub", body);
    assert_eq!(r.status, 200, "{}", r.text());
    let ids: Vec<String> = r.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);
    let (ea, _) = pos(&sa);
    let (eb, _) = pos(&sb);
    assert_eq!(pos(&ids[0]), (ea.clone(), 1));
    assert_eq!(pos(&ids[1]), (eb.clone(), 1));
    assert_eq!(pos(&ids[2]), (ea.clone(), 2));
    assert_eq!(pos(&ids[3]), (ea.clone(), 3));
    let v = poll(&srv, "ba", &format!("since={sa}")).json();
    let m = v["messages"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[1]["data"], "AAEC");
    assert_eq!(m[1]["encoding"], "base64");
    let v = poll(&srv, "bb", &format!("since={sb}")).json();
    assert_eq!(v["messages"][0]["event"], "e");

    // Each bad batch: 400 (413 for an oversized item) and nothing published anywhere.
    let bad: &[(&[u8], u16)] = &[
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bad topic","data":"y"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"!!","encoding":"base64"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"y","encoding":"hex"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"y","event":"two words"}]"#,
            400,
        ),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"y","extra":1}]"#,
            400,
        ),
        (br#"[{"topic":"ba","data":"x"},{"topic":"bb"}]"#, 400),
        (
            br#"[{"topic":"ba","data":"x"},{"topic":"bb","data":"0123456789abcdefXYZ"}]"#,
            413,
        ),
        (br#"{"topic":"ba","data":"x"}"#, 400),
        (br#"[]"#, 400),
        (b"[{\"topic\":\"ba\",\"data\":\"x\"},", 400),
    ];
    for (body, status) in bad {
        let r = srv.post("/pub", body);
        assert_eq!(
            r.status,
            *status,
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
    }
    assert_eq!(current(&srv, "ba"), ids[3], "nothing published on ba");
    assert_eq!(current(&srv, "bb"), ids[1], "nothing published on bb");
}

#[test]
fn publish_token_is_required_when_set() {
    let srv = Server::start(&["--publish-token", "s3cret"]);
    let send = |auth: &str| {
        srv.request(
            format!("POST /pub/tok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}Content-Length: 1\r\n\r\nx")
                .as_bytes(),
        )
    };
    let r = send("");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(send("Authorization: Bearer wrong\r\n").status, 403);
    assert_eq!(send("Authorization: Basic czNjcmV0\r\n").status, 403);
    let r = send("Authorization: Bearer s3cret\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(pos(r.json()["id"].as_str().unwrap()).1, 1);
    // The batch route is guarded the same way.
    let r = srv.post("/pub", br#"[{"topic":"tok","data":"x"}]"#);
    assert_eq!(r.status, 401);
    // Only the authorised message exists.
    let start = format!("{}:0", pos(&current(&srv, "tok")).0);
    assert_eq!(
        msgs(&poll(&srv, "tok", &format!("since={start}")).json()).len(),
        1
    );
}

#[test]
fn bad_input_is_refused() {
    let srv = Server::start(&["--max-message-bytes", "1024", "--max-topic-bytes", "16"]);
    // Oversized message: 413 (Content-Length and chunked).
    assert_eq!(srv.post("/pub/big", &[b'x'; 1025]).status, 413);
    let mut raw = b"POST /pub/big HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        raw.extend_from_slice(b"200\r\n");
        raw.extend_from_slice(&[b'y'; 0x200]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(srv.request(&raw).status, 413);
    // A body of exactly the limit is fine.
    srv.publish("big", &[b'x'; 1024]);
    // Bad topics: 400 on publish, poll and SSE.
    for path in [
        "/pub/bad%20topic",
        "/pub/a%zz",
        "/pub/%C3%A9",
        "/pub/seventeen-bytes!",
        "/pub/0123456789abcdefg",
        "/poll/bad%20topic",
        "/sse/bad%20topic",
    ] {
        let r = if path.starts_with("/pub") {
            srv.post(path, b"x")
        } else {
            srv.get(path)
        };
        assert_eq!(r.status, 400, "{path}");
    }
    assert_eq!(srv.post("/pub/ok?event=two%20words", b"x").status, 400);
    assert_eq!(
        srv.post(&format!("/pub/ok?event={}", "e".repeat(65)), b"x")
            .status,
        400
    );
    assert_eq!(srv.get("/poll/ok?limit=abc").status, 400);
    assert_eq!(srv.get("/poll/ok?wait=-1").status, 400);
    // Nothing was published on `ok` by the refused requests.
    assert_eq!(pos(&current(&srv, "ok")).1, 0);
    assert_eq!(pos(&current(&srv, "big")).1, 1);
}

// ---- positions and history ------------------------------------------------------------------

#[test]
fn since_outside_history_answers_reset_with_current_position() {
    let srv = Server::start(&["--history-messages", "3"]);
    let start = current(&srv, "h");
    let (epoch, _) = pos(&start);
    let ids: Vec<String> = (1..=5)
        .map(|i| srv.publish("h", format!("m{i}").as_bytes()))
        .collect();
    let cur = ids[4].clone();
    // Inside: offsets 2..5 may resume (message 3 is the oldest kept).
    let v = poll(&srv, "h", &format!("since={}", ids[1])).json();
    assert_eq!(
        msgs(&v).iter().map(|m| m.1.clone()).collect::<Vec<_>>(),
        ["m3", "m4", "m5"]
    );
    assert!(v.get("reset").is_none());
    let other_epoch = if epoch == "1" {
        "2".to_string()
    } else {
        "1".to_string()
    };
    for since in [
        start.clone(),              // too old: message 1 and 2 evicted
        ids[0].clone(),             // too old
        format!("{epoch}:6"),       // future offset
        format!("{epoch}:99"),      // far future
        format!("{other_epoch}:3"), // another epoch
        "garbage".to_string(),      // malformed
        format!("{epoch}:-1"),
        format!("{epoch}:"),
        "0x1:1".to_string(),
    ] {
        let r = poll(&srv, "h", &format!("since={since}"));
        assert_eq!(r.status, 200, "since={since}");
        let v = r.json();
        assert_eq!(v["reset"], true, "since={since}: {v}");
        assert_eq!(v["next"], cur.as_str(), "since={since}");
        assert_eq!(msgs(&v).len(), 0);
        // A long poll resets at once too, instead of waiting.
        let r = poll(&srv, "h", &format!("since={since}&wait=5"));
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["reset"], true, "long poll since={since}");
    }
}

#[test]
fn history_is_bounded_by_bytes() {
    let srv = Server::start(&["--history-bytes", "1000"]);
    let start = current(&srv, "hb");
    let ids: Vec<String> = (0..10).map(|_| srv.publish("hb", &[b'z'; 300])).collect();
    // 300-byte messages in 1000 bytes: the last three are kept.
    assert_eq!(
        poll(&srv, "hb", &format!("since={start}")).json()["reset"],
        true
    );
    assert_eq!(
        poll(&srv, "hb", &format!("since={}", ids[5])).json()["reset"],
        true
    );
    let v = poll(&srv, "hb", &format!("since={}", ids[6])).json();
    assert!(v.get("reset").is_none());
    assert_eq!(
        msgs(&v).iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        ids[7..]
    );
}

#[test]
fn history_is_bounded_by_age() {
    let srv = Server::start(&["--history-secs", "1"]);
    let start = current(&srv, "ha");
    let first = srv.publish("ha", b"old");
    std::thread::sleep(Duration::from_millis(2200));
    let second = srv.publish("ha", b"new");
    // Message 1 aged out: resuming from before it is a gap → reset; from it → message 2.
    let v = poll(&srv, "ha", &format!("since={start}")).json();
    assert_eq!(v["reset"], true);
    assert_eq!(v["next"], second.as_str());
    let v = poll(&srv, "ha", &format!("since={first}")).json();
    assert_eq!(msgs(&v), [(second.clone(), "new".to_string())]);
}

#[test]
fn idle_topics_are_freed_and_come_back_with_a_new_epoch() {
    let srv = Server::start(&[
        "--shards",
        "2",
        "--topic-idle-secs",
        "1",
        "--max-topics",
        "2",
    ]);
    let a1 = srv.publish("ta", b"x");
    srv.publish("tb", b"y");
    assert_eq!(srv.metric("ringcast_topics"), 2);
    // The cap: a third topic is refused while two are alive (publish and poll).
    let r = srv.post("/pub/tc", b"z");
    assert_eq!(r.status, 503);
    assert_eq!(srv.get("/poll/tc").status, 503);
    // Idle: no subscriber, no recent message → freed.
    assert_eq!(
        srv.wait_metric("ringcast_topics", 0, Duration::from_secs(8)),
        0
    );
    assert!(srv.metric("ringcast_topics_freed_total") >= 2);
    // Re-created: a new epoch, so the old position is a reset, not a silent continuation.
    let a2 = srv.publish("ta", b"x2");
    assert_ne!(pos(&a1).0, pos(&a2).0, "a new incarnation has a new epoch");
    assert_eq!(pos(&a2).1, 1);
    let v = poll(&srv, "ta", &format!("since={a1}")).json();
    assert_eq!(v["reset"], true);
    assert_eq!(v["next"], a2.as_str());
    // A topic with a subscriber is kept however long it is quiet (the SSE stream may be on the
    // other shard than the topic's home).
    let mut streams: Vec<TcpStream> = (0..4).map(|_| sse_open_now(&srv, "ta")).collect();
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 4, Duration::from_secs(5)),
        4
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        srv.metric("ringcast_topics"),
        1,
        "a subscribed topic is not freed"
    );
    let a3 = srv.publish("ta", b"x3");
    assert_eq!(
        pos(&a3),
        (pos(&a2).0, 2),
        "same incarnation while subscribed"
    );
    for s in &mut streams {
        let mut p = SseParser::new();
        let ev = sse_read(s, &mut p, 1, Duration::from_secs(5));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].id, a3);
    }
    drop(streams);
    assert_eq!(
        srv.wait_metric("ringcast_topics", 0, Duration::from_secs(8)),
        0
    );
}

// ---- long polling ---------------------------------------------------------------------------

#[test]
fn long_poll_answers_on_publish_times_out_with_204_and_frees_on_disconnect() {
    let srv = Server::start(&["--shards", "2", "--longpoll-max-secs", "1"]);
    let start = current(&srv, "lp");
    // Answered as soon as a message exists (publisher in another thread, after the poll waits).
    let publisher = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let t = Instant::now();
            while srv.metric("ringcast_longpoll_waiting") < 1
                && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            srv.publish("lp", b"ping")
        });
        // wait=30 is capped to --longpoll-max-secs 1; the message comes before that.
        let r = poll(&srv, "lp", &format!("since={start}&wait=30"));
        (r, h.join().unwrap())
    });
    let (r, id) = publisher;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(msgs(&v), [(id.clone(), "ping".to_string())]);
    assert_eq!(v["next"], id.as_str());

    // A message already there: answered at once.
    let v = poll(&srv, "lp", &format!("since={start}&wait=1")).json();
    assert_eq!(msgs(&v).len(), 1);

    // Timeout (capped at 1 s): 204 with the current position in a header.
    let t = Instant::now();
    let r = poll(&srv, "lp", &format!("since={id}&wait=100"));
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-ringcast-next"), Some(id.as_str()));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "waited for the cap"
    );
    assert_eq!(srv.metric("ringcast_longpoll_waiting"), 0);

    // A waiting client that disconnects is freed at once (well before its wait would end).
    let srv2 = Server::start(&["--shards", "2"]);
    let base = srv2.metric("ringcast_connections_open");
    let cur = current(&srv2, "gone");
    let mut clients = Vec::new();
    for _ in 0..6 {
        let mut s = srv2.connect();
        write!(
            s,
            "GET /poll/gone?since={cur}&wait=50 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        .unwrap();
        clients.push(s);
    }
    assert_eq!(
        srv2.wait_metric("ringcast_longpoll_waiting", 6, Duration::from_secs(5)),
        6
    );
    // The connection `current` used may still be closing on the server: wait for the count.
    assert_eq!(
        srv2.wait_metric(
            "ringcast_connections_open",
            base + 6,
            Duration::from_secs(5)
        ),
        base + 6
    );
    drop(clients);
    assert_eq!(
        srv2.wait_metric("ringcast_longpoll_waiting", 0, Duration::from_secs(5)),
        0
    );
    assert_eq!(
        srv2.wait_metric("ringcast_connections_open", base, Duration::from_secs(5)),
        base
    );
    // The topic is still usable and nothing was consumed.
    let id = srv2.publish("gone", b"after");
    assert_eq!(
        msgs(&poll(&srv2, "gone", &format!("since={cur}&wait=1")).json())[0].0,
        id
    );
}

/// The connection loop answers a waiting long poll and then serves what came behind it: a
/// request pipelined behind the poll waits for the poll's answer (responses in request order),
/// and the same connection goes on with keep-alive after a timeout (204) too.
#[test]
fn long_poll_then_pipelined_and_keep_alive_requests_on_one_connection() {
    let srv = Server::start(&["--shards", "2", "--longpoll-max-secs", "1"]);
    let start = current(&srv, "lpp");
    let mut s = srv.connect();
    // The poll and a /healthz behind it, in one write.
    write!(
        s,
        "GET /poll/lpp?since={start}&wait=30 HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    assert_eq!(
        srv.wait_metric("ringcast_longpoll_waiting", 1, Duration::from_secs(5)),
        1
    );
    let id = srv.publish("lpp", b"first");
    let r = read_response(&mut s, false).expect("poll answer");
    assert_eq!(r.status, 200);
    assert_eq!(msgs(&r.json()), [(id.clone(), "first".to_string())]);
    let r = read_response(&mut s, false).expect("healthz answer");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"ok\n"[..]));
    // Same connection: a poll that times out (204), then one answered at once.
    write!(
        s,
        "GET /poll/lpp?since={id}&wait=1 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s, false).expect("204");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-ringcast-next"), Some(id.as_str()));
    let id2 = srv.publish("lpp", b"second");
    write!(
        s,
        "GET /poll/lpp?since={id}&wait=1 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s, false).expect("poll answer");
    assert_eq!(msgs(&r.json()), [(id2, "second".to_string())]);
    assert_eq!(srv.metric("ringcast_longpoll_waiting"), 0);
}

// ---- order ----------------------------------------------------------------------------------

#[test]
fn one_order_per_topic_with_publishers_on_both_shards() {
    const THREADS: usize = 4;
    const PER: usize = 250;
    const N: usize = THREADS * PER;
    let srv = Server::start(&["--shards", "2", "--history-messages", "2000"]);
    let start = current(&srv, "order");
    let (epoch, _) = pos(&start);
    let mut sse = sse_open(&srv, "order", &format!("Last-Event-ID: {start}\r\n"));
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 1, Duration::from_secs(5)),
        1
    );

    // Extra topics so homes land on both shards; each gets 30 messages from every thread.
    let extra: Vec<String> = (0..6).map(|i| format!("multi-{i}")).collect();
    let extra_start: Vec<String> = extra.iter().map(|t| current(&srv, t)).collect();

    let (sse_events, chain, ids) = std::thread::scope(|sc| {
        let chain =
            sc.spawn(|| long_poll_chain(&srv, "order", &start, 37, N, Duration::from_secs(60)));
        let sse_reader = sc.spawn(move || {
            let mut p = SseParser::new();
            sse_read(&mut sse, &mut p, N, Duration::from_secs(60))
        });
        let pubs: Vec<_> = (0..THREADS)
            .map(|t| {
                let srv = &srv;
                let extra = &extra;
                sc.spawn(move || {
                    let mut s = srv.connect();
                    let mut ids = Vec::new();
                    for i in 0..PER {
                        ids.push(publish_on(&mut s, "order", format!("{t}-{i}").as_bytes()));
                        if i % 25 == 0 {
                            for x in extra {
                                publish_on(&mut s, x, format!("{t}-{i}").as_bytes());
                            }
                        }
                    }
                    ids
                })
            })
            .collect();
        let ids: Vec<String> = pubs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (sse_reader.join().unwrap(), chain.join().unwrap(), ids)
    });

    // The publishers' answers: one epoch, offsets 1..=N, each once.
    let mut offs: Vec<u64> = ids
        .iter()
        .map(|id| {
            let (e, o) = pos(id);
            assert_eq!(e, epoch);
            o
        })
        .collect();
    offs.sort_unstable();
    assert_eq!(offs, (1..=N as u64).collect::<Vec<_>>());

    let check = |what: &str, got: Vec<(String, String)>| {
        assert_eq!(got.len(), N, "{what}: got {} of {N}", got.len());
        let mut seen = HashSet::new();
        let mut last_per_thread = [None::<usize>; THREADS];
        for (i, (id, data)) in got.iter().enumerate() {
            assert_eq!(
                pos(id),
                (epoch.clone(), i as u64 + 1),
                "{what}: contiguous offsets"
            );
            assert!(seen.insert(data.clone()), "{what}: {data} twice");
            // Each publisher's messages keep its own order.
            let (t, n) = data.split_once('-').unwrap();
            let (t, n): (usize, usize) = (t.parse().unwrap(), n.parse().unwrap());
            assert!(
                last_per_thread[t].is_none_or(|l| l < n),
                "{what}: thread {t} reordered"
            );
            last_per_thread[t] = Some(n);
        }
    };
    check(
        "sse",
        sse_events
            .into_iter()
            .map(|e| {
                assert_eq!(e.event, "message");
                (e.id, e.data)
            })
            .collect(),
    );
    check("long-poll chain", chain);

    // The extra topics: each contiguous and complete.
    for (t, s) in extra.iter().zip(&extra_start) {
        let got = long_poll_chain(&srv, t, s, 100, THREADS * 10, Duration::from_secs(10));
        let (e, _) = pos(s);
        let offs: Vec<(String, u64)> = got.iter().map(|m| pos(&m.0)).collect();
        let want: Vec<(String, u64)> = (1..=(THREADS * 10) as u64)
            .map(|o| (e.clone(), o))
            .collect();
        assert_eq!(offs, want, "topic {t}");
    }
    let per_shard = srv.get("/metrics").text();
    let homes: Vec<&str> = per_shard
        .lines()
        .filter(|l| l.starts_with("ringcast_topics{"))
        .collect();
    assert_eq!(homes.len(), 2);
    assert!(
        homes.iter().all(|l| !l.ends_with(" 0")),
        "topics should have homes on both shards: {homes:?}"
    );
}

#[test]
fn long_poll_chains_see_every_message_once_under_a_bursty_stream() {
    const N: usize = 600;
    let srv = Server::start(&["--shards", "2", "--history-messages", "1000"]);
    let start = current(&srv, "chain");
    let seed = 0x5eed_1234_u64;
    let (published, chains) = std::thread::scope(|sc| {
        let chains: Vec<_> = [1usize, 3, 17, 100]
            .into_iter()
            .map(|limit| {
                let srv = &srv;
                let start = &start;
                sc.spawn(move || {
                    long_poll_chain(srv, "chain", start, limit, N, Duration::from_secs(60))
                })
            })
            .collect();
        let publisher = sc.spawn(|| {
            let mut rng = Rng(seed);
            let mut s = srv.connect();
            let mut out = Vec::new();
            while out.len() < N {
                let burst = 1 + rng.below(25) as usize;
                for _ in 0..burst.min(N - out.len()) {
                    let data = format!("m{}-{}", out.len(), rng.below(1_000_000));
                    let id = publish_on(&mut s, "chain", data.as_bytes());
                    out.push((id, data));
                }
                std::thread::sleep(Duration::from_millis(rng.below(40)));
            }
            out
        });
        let published = publisher.join().unwrap();
        let chains: Vec<_> = chains.into_iter().map(|h| h.join().unwrap()).collect();
        (published, chains)
    });
    for (i, got) in chains.iter().enumerate() {
        assert_eq!(got.len(), published.len(), "chain {i} (seed {seed:#x})");
        assert_eq!(
            got, &published,
            "chain {i}: no gap, no duplicate, in order (seed {seed:#x})"
        );
    }
}

// ---- slow clients -----------------------------------------------------------------------------

/// At least this many 1 KiB messages are published at a slow client.
const SLOW_MIN: usize = 2000;
/// At most this many: the kernel's socket buffers (up to `tcp_wmem` max, 4 MiB here) absorb a
/// never-reading client's first megabytes before the node's own bound can apply.
const SLOW_MAX: usize = 12000;

/// Publishes 1 KiB messages on `topic` until at least `SLOW_MIN` are out and `counter` has
/// moved (then 200 more), at most `SLOW_MAX`, sampling `gauge` all along; returns the ids and
/// the largest sample.
fn publish_kib(srv: &Server, topic: &str, counter: &str, gauge: &str) -> (Vec<String>, i64) {
    let mut s = srv.connect();
    let mut max = 0;
    let mut ids = Vec::new();
    let mut stop_at = SLOW_MAX;
    for i in 0..SLOW_MAX {
        if i == stop_at {
            break;
        }
        let mut body = format!("{i:06}-").into_bytes();
        body.resize(1024, b'k');
        ids.push(publish_on(&mut s, topic, &body));
        if i % 50 == 0 {
            max = max.max(srv.metric(gauge));
            if stop_at == SLOW_MAX && i >= SLOW_MIN && srv.metric(counter) > 0 {
                stop_at = i + 200;
            }
        }
    }
    (ids, max.max(srv.metric(gauge)))
}

#[test]
fn slow_client_is_disconnected_and_resumes_without_gap() {
    let srv = Server::start(&[
        "--shards",
        "2",
        "--client-buffer-bytes",
        "65536",
        "--slow-client",
        "disconnect",
        "--history-messages",
        "20000",
        "--history-bytes",
        "33554432",
    ]);
    let start = current(&srv, "slow");
    // The slow one: a tiny receive buffer, and it reads nothing until the burst is over.
    let mut slow = connect_small_rcvbuf(&srv, 4096);
    write!(
        slow,
        "GET /sse/slow HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {start}\r\n\r\n"
    )
    .unwrap();
    let normal = sse_open(&srv, "slow", &format!("Last-Event-ID: {start}\r\n"));
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 2, Duration::from_secs(5)),
        2
    );

    // 0 until the publisher knows how many it published.
    let total = AtomicUsize::new(0);
    let (ids, max_buffered, normal_events) = std::thread::scope(|sc| {
        let reader = sc.spawn(|| {
            // Keeps up by only copying bytes while the burst lasts; parses afterwards.
            let mut normal = normal;
            normal
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut raw = Vec::new();
            let mut buf = vec![0u8; 256 * 1024];
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(30) {
                let n = total.load(Ordering::Relaxed);
                // Every event is over 1 KiB, so n events are at least n KiB.
                if n > 0 && raw.len() >= n * 1024 && SseParser::new().feed(&raw).len() >= n {
                    break;
                }
                match normal.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => raw.extend_from_slice(&buf[..k]),
                    Err(_) => {}
                }
            }
            SseParser::new().feed(&raw)
        });
        let (ids, max) = publish_kib(
            &srv,
            "slow",
            "ringcast_slow_client_disconnects_total",
            "ringcast_client_buffered_bytes",
        );
        total.store(ids.len(), Ordering::Relaxed);
        (ids, max, reader.join().unwrap())
    });
    let n = ids.len();
    assert!(
        max_buffered <= 65536 * 2,
        "buffered bytes {max_buffered} over the bound of two subscribers"
    );
    // The normal subscriber got everything, in order.
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !normal_events.iter().any(|e| &e.id == *id))
        .collect();
    assert_eq!(
        normal_events.len(),
        n,
        "normal subscriber missed {missing:?}; slow disconnects {}",
        srv.metric("ringcast_slow_client_disconnects_total")
    );
    for (e, id) in normal_events.iter().zip(&ids) {
        assert_eq!(&e.id, id);
    }
    assert!(srv.metric("ringcast_slow_client_disconnects_total") >= 1);

    // The slow client now reads: what it got is a gap-free prefix, then the server's close.
    let mut p = SseParser::new();
    let r = read_response(&mut slow, true).expect("slow client head");
    assert_eq!(r.status, 200);
    let (got, eof) = sse_read_to_eof(&mut slow, &mut p, Duration::from_secs(20));
    assert!(eof, "the slow client was closed by the server");
    assert!(got.len() < n, "the slow client was cut short");
    for (e, id) in got.iter().zip(&ids) {
        assert_eq!(&e.id, id, "prefix without gap");
    }
    let last = if got.is_empty() {
        start.clone()
    } else {
        p.last_event_id().to_string()
    };
    // Both streams are gone now (the normal one ended with its reader thread).
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 0, Duration::from_secs(5)),
        0
    );

    // It reconnects with Last-Event-ID and gets exactly the rest from history.
    let mut again = sse_open(&srv, "slow", &format!("Last-Event-ID: {last}\r\n"));
    let mut p = SseParser::new();
    let rest = sse_read(&mut again, &mut p, n - got.len(), Duration::from_secs(30));
    assert_eq!(rest.len(), n - got.len());
    for (e, id) in rest.iter().zip(&ids[got.len()..]) {
        assert_eq!(&e.id, id, "resume: no gap, no duplicate");
        assert_eq!(e.event, "message");
    }
    // Nothing more (no duplicate tail).
    let more = sse_read(&mut again, &mut p, 1, Duration::from_millis(500));
    assert!(more.is_empty(), "{more:?}");
}

#[test]
fn slow_client_drop_policy_skips_and_then_resets() {
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
    let start = current(&srv, "drop");
    let mut slow = connect_small_rcvbuf(&srv, 4096);
    write!(
        slow,
        "GET /sse/drop HTTP/1.1\r\nHost: t\r\nLast-Event-ID: {start}\r\n\r\n"
    )
    .unwrap();
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 1, Duration::from_secs(5)),
        1
    );
    let (ids, max_buffered) = publish_kib(
        &srv,
        "drop",
        "ringcast_slow_client_drops_total",
        "ringcast_client_buffered_bytes",
    );
    let n = ids.len();
    assert!(max_buffered <= 65536, "buffered {max_buffered}");
    let drops = srv.metric("ringcast_slow_client_drops_total");
    assert!(drops >= 1, "drops counter moved");
    assert_eq!(srv.metric("ringcast_slow_client_disconnects_total"), 0);
    assert_eq!(srv.metric("ringcast_sse_streams_open"), 1, "not closed");

    // It reads again. Whenever messages were skipped for it, a reset comes before the next
    // message it is given (the backlog may have drained a little during the burst, so there
    // may be several runs); and after everything buffered, new messages arrive live.
    let r = read_response(&mut slow, true).expect("head");
    assert_eq!(r.status, 200);
    let mut p = SseParser::new();
    let mut got = Vec::new();
    let t = Instant::now();
    // Drain what was buffered (bounded): until a read times out with nothing new.
    loop {
        let ev = sse_read(&mut slow, &mut p, usize::MAX, Duration::from_millis(600));
        if ev.is_empty() || t.elapsed() > Duration::from_secs(20) {
            break;
        }
        got.extend(ev);
    }
    let live: Vec<String> = (0..3)
        .map(|i| srv.publish("drop", format!("live{i}").as_bytes()))
        .collect();
    let after = sse_read(&mut slow, &mut p, 4, Duration::from_secs(10));
    let messages = got.iter().filter(|e| e.event == "message").count();
    assert!(messages < n, "some were dropped");
    got.extend(after);
    let tail: Vec<&str> = got[got.len() - 3..].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(tail, live, "live messages after the drain");
    assert!(
        got.iter()
            .filter(|e| e.event != "message")
            .all(|e| e.event == "reset"),
        "only messages and resets"
    );
    assert!(
        got.iter().any(|e| e.event == "reset"),
        "a reset tells of the gap"
    );
    let (mut prev, mut reset_at) = (0u64, None::<u64>);
    for e in &got {
        let (_, off) = pos(&e.id);
        if e.event == "reset" {
            assert_eq!(e.data, e.id, "reset carries the position in data and id");
            assert!(off > prev, "a reset points past what was delivered");
            reset_at = Some(off);
            continue;
        }
        if off != prev + 1 {
            let r = reset_at.unwrap_or_else(|| panic!("gap {prev} → {off} without a reset"));
            assert!(off > r, "after a reset, only newer messages");
        }
        if (off as usize) <= n {
            assert_eq!(e.id, ids[off as usize - 1]);
            assert!(e.data.starts_with(&format!("{:06}-", off - 1)));
        }
        prev = off;
        reset_at = None;
    }
}

#[test]
fn sse_stream_alongside_poll_sees_the_same_positions() {
    // Positions are one token across transports: an SSE id is a valid poll `since`.
    let srv = Server::start(&["--shards", "2"]);
    let mut s = sse_open_now(&srv, "x");
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 1, Duration::from_secs(5)),
        1
    );
    let ids: Vec<String> = (0..3)
        .map(|i| srv.publish("x", format!("v{i}").as_bytes()))
        .collect();
    let mut p = SseParser::new();
    let ev = sse_read(&mut s, &mut p, 3, Duration::from_secs(5));
    assert_eq!(ev.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), ids);
    let v = poll(&srv, "x", &format!("since={}", ev[0].id)).json();
    assert_eq!(
        msgs(&v).iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
        ids[1..]
    );
}

#[test]
fn full_inboxes_are_backpressure_not_loss() {
    // Inboxes of 2 commands: cross-shard publishes, replies and deliveries overflow them at
    // once. The overflow must wait (in order) and be retried — never dropped — so subscribers
    // on both shards still see every message, in order.
    const TOPICS: usize = 4;
    const PER_TOPIC: usize = 150;
    // Publishes wait while fanout is behind; a generous bound keeps a busy test machine from
    // turning that wait into 503s.
    let srv = Server::start(&[
        "--shards",
        "2",
        "--inbox-capacity",
        "2",
        "--publish-timeout-ms",
        "30000",
    ]);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("tight-{i}")).collect();
    let starts: Vec<String> = topics.iter().map(|t| current(&srv, t)).collect();
    // Two subscribers per topic, so connections (spread by the kernel) land on both shards.
    let mut streams: Vec<(usize, TcpStream)> = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        for _ in 0..2 {
            streams.push((
                i,
                sse_open(&srv, t, &format!("Last-Event-ID: {}\r\n", starts[i])),
            ));
        }
    }
    assert_eq!(
        srv.wait_metric(
            "ringcast_sse_streams_open",
            (2 * TOPICS) as i64,
            Duration::from_secs(10)
        ),
        (2 * TOPICS) as i64
    );
    std::thread::scope(|sc| {
        for (i, t) in topics.iter().enumerate() {
            let srv = &srv;
            sc.spawn(move || {
                let mut s = srv.connect();
                for k in 0..PER_TOPIC {
                    publish_on(&mut s, t, format!("{i}-{k}").as_bytes());
                }
            });
        }
    });
    for (i, mut s) in streams {
        let mut p = SseParser::new();
        let ev = sse_read(&mut s, &mut p, PER_TOPIC, Duration::from_secs(30));
        let got: Vec<String> = ev.iter().map(|e| e.data.clone()).collect();
        let want: Vec<String> = (0..PER_TOPIC).map(|k| format!("{i}-{k}")).collect();
        assert_eq!(got, want, "topic {i}: every message, in order");
    }
    assert!(
        srv.metric("ringcast_inbox_full_total") > 0,
        "the test must have exercised the full-inbox path"
    );
}

#[test]
fn long_poll_chains_answered_from_a_shards_received_messages() {
    // Streams on both shards keep every shard subscribed, so re-polls of a topic homed on the
    // other shard are answered from what the poller's shard already received. The chains must
    // still see every message exactly once, in order.
    const N: usize = 300;
    let srv = Server::start(&["--shards", "2"]);
    let start = current(&srv, "local");
    let streams: Vec<TcpStream> = (0..8).map(|_| sse_open_now(&srv, "local")).collect();
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 8, Duration::from_secs(10)),
        8
    );
    let chains = std::thread::scope(|sc| {
        let chains: Vec<_> = (0..6)
            .map(|i| {
                let (srv, start) = (&srv, &start);
                sc.spawn(move || {
                    long_poll_chain(srv, "local", start, 1 + i * 7, N, Duration::from_secs(60))
                })
            })
            .collect();
        let mut s = srv.connect();
        for k in 0..N {
            publish_on(&mut s, "local", format!("m{k}").as_bytes());
            if k % 20 == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        chains
            .into_iter()
            .map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let want: Vec<String> = (0..N).map(|k| format!("m{k}")).collect();
    for (i, got) in chains.into_iter().enumerate() {
        let data: Vec<String> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(data, want, "chain {i}");
    }
    assert!(
        srv.metric("ringcast_windows_local_total") > 0,
        "the test must have exercised local windows"
    );
    drop(streams);
}
