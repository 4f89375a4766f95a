//! Server-Sent Events end to end against the real binary, read through the independent WHATWG
//! parser: head and first bytes, event encoding, resume and reset, heartbeats, freeing on
//! disconnect, CORS and the staged drain on SIGTERM.

#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use server::{pos, publish_on, read_response, Response, Server};
use sse_parser::{SseEvent, SseParser};

/// An open SSE stream: its head, its parser and the raw bytes read so far.
struct Stream {
    s: TcpStream,
    head: Response,
    p: SseParser,
    raw: Vec<u8>,
    eof: bool,
}

impl Stream {
    fn open(srv: &Server, path: &str, extra: &str) -> Stream {
        let mut s = srv.connect();
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
        let head = read_response(&mut s, true).expect("sse head");
        Stream {
            s,
            head,
            p: SseParser::new(),
            raw: Vec::new(),
            eof: false,
        }
    }

    /// Reads until `n` events, EOF or `within`.
    fn read(&mut self, n: usize, within: Duration) -> Vec<SseEvent> {
        self.read_until(within, |ev, _| ev.len() >= n)
    }

    fn read_until(
        &mut self,
        within: Duration,
        mut done: impl FnMut(&[SseEvent], &SseParser) -> bool,
    ) -> Vec<SseEvent> {
        let t = Instant::now();
        self.s
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        while !done(&out, &self.p) && t.elapsed() < within && !self.eof {
            match self.s.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(k) => {
                    self.raw.extend_from_slice(&buf[..k]);
                    out.extend(self.p.feed(&buf[..k]));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.eof = true,
            }
        }
        out
    }
}

fn publish_raw(srv: &Server, path: &str, ctype: Option<&str>, body: &[u8]) -> String {
    let ct = ctype.map_or(String::new(), |c| format!("Content-Type: {c}\r\n"));
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    let r = srv.request(&raw);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn wait_streams(srv: &Server, n: i64) {
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", n, Duration::from_secs(5)),
        n,
        "sse streams open"
    );
}

#[test]
fn head_and_first_bytes_before_any_publish() {
    let srv = Server::start(&["--sse-retry-ms", "1000"]);
    let mut st = Stream::open(&srv, "/sse/first", "");
    let h = &st.head;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-type"), Some("text/event-stream"));
    assert_eq!(h.header("cache-control"), Some("no-cache, no-transform"));
    assert_eq!(h.header("x-accel-buffering"), Some("no"));
    assert_eq!(h.header("connection"), Some("keep-alive"));
    assert!(h.header("content-length").is_none(), "close-delimited body");
    assert!(
        h.header("transfer-encoding").is_none(),
        "close-delimited body"
    );
    assert!(h.header("access-control-allow-origin").is_none());
    // Nothing published: the retry and a comment arrive anyway.
    let ev = st.read_until(Duration::from_secs(5), |_, p| {
        p.retry().is_some() && p.comments() >= 1
    });
    assert!(ev.is_empty());
    let retry = st.p.retry().expect("a retry: line");
    assert!(
        (800..=1200).contains(&retry),
        "retry {retry} within ±20% of 1000"
    );
    assert!(st.p.comments() >= 1);
    assert!(
        st.raw.starts_with(b"retry:"),
        "{:?}",
        String::from_utf8_lossy(&st.raw)
    );

    // Jitter: across clients the values are not all the same.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..12 {
        let mut s = Stream::open(&srv, "/sse/first", "");
        s.read_until(Duration::from_secs(5), |_, p| p.retry().is_some());
        let r = s.p.retry().unwrap();
        assert!((800..=1200).contains(&r));
        seen.insert(r);
    }
    assert!(seen.len() > 1, "retry is jittered per client: {seen:?}");
}

/// (publish path, content type, body, expected event type, expected data)
type Case = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    &'static str,
    String,
);

#[test]
fn events_carry_ids_names_multiline_and_binary_payloads() {
    let srv = Server::start(&["--shards", "2"]);
    let cur = srv.current("enc");
    let mut st = Stream::open(&srv, "/sse/enc", &format!("Last-Event-ID: {cur}\r\n"));
    wait_streams(&srv, 1);
    // (path, content type, body, expected event, expected data)
    let cases: Vec<Case> = vec![
        (
            "/pub/enc",
            None,
            b"plain".to_vec(),
            "message",
            "plain".into(),
        ),
        (
            "/pub/enc?event=price",
            None,
            b"42".to_vec(),
            "price",
            "42".into(),
        ),
        (
            "/pub/enc",
            None,
            b"a\nb\n\nc".to_vec(),
            "message",
            "a\nb\n\nc".into(),
        ),
        (
            "/pub/enc",
            None,
            b"crlf\r\nline".to_vec(),
            "message",
            "crlf\nline".into(),
        ),
        (
            "/pub/enc",
            None,
            b"lone\rcr\r".to_vec(),
            "message",
            "lone\ncr\n".into(),
        ),
        ("/pub/enc", None, b"\n".to_vec(), "message", "\n".into()),
        ("/pub/enc", None, b"".to_vec(), "message", "".into()),
        (
            "/pub/enc",
            None,
            b": not a comment".to_vec(),
            "message",
            ": not a comment".into(),
        ),
        (
            "/pub/enc",
            None,
            b"data: x\nid: 9\nevent: y".to_vec(),
            "message",
            "data: x\nid: 9\nevent: y".into(),
        ),
        (
            "/pub/enc",
            None,
            "ünï 🎉".as_bytes().to_vec(),
            "message",
            "ünï 🎉".into(),
        ),
        (
            "/pub/enc",
            None,
            vec![b'L'; 100_000],
            "message",
            "L".repeat(100_000),
        ),
        (
            "/pub/enc",
            None,
            vec![0xff, 0xfe, 0x00],
            "binary",
            "//4A".into(),
        ),
        (
            "/pub/enc",
            Some("application/octet-stream"),
            b"abc".to_vec(),
            "binary",
            "YWJj".into(),
        ),
        (
            "/pub/enc?event=blob",
            None,
            vec![0x80],
            "binary:blob",
            "gA==".into(),
        ),
        (
            "/pub/enc",
            Some("application/octet-stream"),
            vec![],
            "binary",
            "".into(),
        ),
    ];
    let mut ids = Vec::new();
    for (path, ct, body, _, _) in &cases {
        ids.push(publish_raw(&srv, path, *ct, body));
    }
    let ev = st.read(cases.len(), Duration::from_secs(10));
    assert_eq!(ev.len(), cases.len(), "{ev:?}");
    for ((e, case), id) in ev.iter().zip(&cases).zip(&ids) {
        assert_eq!(e.event, case.3, "event of {:?}", case.2);
        assert_eq!(
            e.data,
            case.4,
            "data of {:?}",
            String::from_utf8_lossy(&case.2)
        );
        assert_eq!(&e.id, id, "id: is the position");
    }
    let (e0, _) = pos(&ids[0]);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(pos(id), (e0.clone(), i as u64 + 1));
    }
    assert_eq!(st.p.last_event_id(), ids.last().unwrap());
}

#[test]
fn resume_by_header_and_query_replays_exactly_the_missed_messages() {
    let srv = Server::start(&["--shards", "2"]);
    let start = srv.current("res");
    let ids: Vec<String> = (1..=5)
        .map(|i| srv.publish("res", format!("m{i}").as_bytes()))
        .collect();
    for (how, path, extra) in [
        (
            "header",
            "/sse/res".to_string(),
            format!("Last-Event-ID: {}\r\n", ids[1]),
        ),
        (
            "query",
            format!("/sse/res?last_event_id={}", ids[1]),
            String::new(),
        ),
        (
            "query, percent-encoded",
            format!("/sse/res?last_event_id={}", ids[1].replace(':', "%3A")),
            String::new(),
        ),
    ] {
        let mut st = Stream::open(&srv, &path, &extra);
        let ev = st.read(3, Duration::from_secs(5));
        let got: Vec<(String, String)> = ev.into_iter().map(|e| (e.id, e.data)).collect();
        let want: Vec<(String, String)> = (2..5)
            .map(|i| (ids[i].clone(), format!("m{}", i + 1)))
            .collect();
        assert_eq!(got, want, "{how}");
        // Then live, without a duplicate at the seam.
        let extra = st.read(1, Duration::from_millis(300));
        assert!(extra.is_empty(), "{how}: unexpected {extra:?}");
    }
    // From the very start (offset 0 of this epoch): everything.
    let mut st = Stream::open(&srv, "/sse/res", &format!("Last-Event-ID: {start}\r\n"));
    assert_eq!(st.read(5, Duration::from_secs(5)).len(), 5);
    // Up to date: nothing replayed, the next publish arrives live.
    let mut st = Stream::open(&srv, "/sse/res", &format!("Last-Event-ID: {}\r\n", ids[4]));
    wait_streams(&srv, 2);
    let id6 = srv.publish("res", b"m6");
    let ev = st.read(1, Duration::from_secs(5));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id, id6);
    assert!(st.read(1, Duration::from_millis(300)).is_empty());
}

#[test]
fn reconnects_while_publishing_have_no_gap_and_no_duplicate() {
    const N: usize = 400;
    let srv = Server::start(&["--shards", "2", "--history-messages", "2000"]);
    let start = srv.current("seam");
    let stop = AtomicBool::new(false);
    let (published, seen) = std::thread::scope(|sc| {
        let publisher = sc.spawn(|| {
            let mut s = srv.connect();
            let mut ids = Vec::new();
            for i in 0..N {
                ids.push(publish_on(&mut s, "seam", format!("p{i}").as_bytes()));
                if i % 10 == 0 {
                    std::thread::sleep(Duration::from_millis(3));
                }
            }
            stop.store(true, Ordering::Relaxed);
            ids
        });
        // A subscriber that drops its connection every few events and resumes like a browser.
        let mut seen: Vec<SseEvent> = Vec::new();
        let mut last = start.clone();
        let mut cycles = 0;
        let t = Instant::now();
        while seen.len() < N && t.elapsed() < Duration::from_secs(60) {
            let mut st = Stream::open(&srv, "/sse/seam", &format!("Last-Event-ID: {last}\r\n"));
            // Read a few, then cut the connection in the middle of the stream.
            let take = 20 + (cycles * 7) % 40;
            let ev = st.read(take, Duration::from_secs(5));
            if !ev.is_empty() {
                last = st.p.last_event_id().to_string();
            }
            assert!(
                ev.iter().all(|e| e.event == "message"),
                "no reset inside history"
            );
            seen.extend(ev);
            cycles += 1;
        }
        (publisher.join().unwrap(), (seen, cycles))
    });
    let (seen, cycles) = seen;
    assert!(cycles >= 5, "reconnected {cycles} times");
    let ids: Vec<String> = seen.iter().map(|e| e.id.clone()).collect();
    assert_eq!(
        ids, published,
        "one copy of each message, in order, across {cycles} reconnects"
    );
    for (i, e) in seen.iter().enumerate() {
        assert_eq!(e.data, format!("p{i}"));
    }
}

#[test]
fn resume_outside_history_or_malformed_gets_a_reset_then_live() {
    let srv = Server::start(&["--shards", "2", "--history-messages", "3"]);
    let start = srv.current("rst");
    let (epoch, _) = pos(&start);
    let ids: Vec<String> = (1..=6)
        .map(|i| srv.publish("rst", format!("m{i}").as_bytes()))
        .collect();
    let mut cur = ids[5].clone();
    let other = if epoch == "1" { "2" } else { "1" };
    for (what, path, extra) in [
        (
            "too old",
            "/sse/rst".to_string(),
            format!("Last-Event-ID: {}\r\n", ids[0]),
        ),
        (
            "from 0",
            "/sse/rst".to_string(),
            format!("Last-Event-ID: {start}\r\n"),
        ),
        (
            "future",
            "/sse/rst".to_string(),
            format!("Last-Event-ID: {epoch}:60\r\n"),
        ),
        (
            "other epoch",
            "/sse/rst".to_string(),
            format!("Last-Event-ID: {other}:5\r\n"),
        ),
        (
            "malformed",
            "/sse/rst".to_string(),
            "Last-Event-ID: nope\r\n".to_string(),
        ),
        (
            "malformed query",
            "/sse/rst?last_event_id=x:y".to_string(),
            String::new(),
        ),
    ] {
        let mut st = Stream::open(&srv, &path, &extra);
        let ev = st.read(1, Duration::from_secs(5));
        assert_eq!(ev.len(), 1, "{what}");
        assert_eq!(ev[0].event, "reset", "{what}");
        assert_eq!(ev[0].data, cur, "{what}: data = current position");
        assert_eq!(ev[0].id, cur, "{what}: id = current position");
        assert_eq!(st.p.last_event_id(), cur);
        // No replay after the reset, then live.
        assert!(st.read(1, Duration::from_millis(200)).is_empty(), "{what}");
        let live = srv.publish("rst", what.as_bytes());
        let ev = st.read(1, Duration::from_secs(5));
        assert_eq!(ev.len(), 1, "{what}");
        assert_eq!(
            (ev[0].id.as_str(), ev[0].data.as_str()),
            (live.as_str(), what)
        );
        cur = live;
    }
    assert!(srv.metric("ringcast_resets_total") >= 6);
}

#[test]
fn heartbeats_arrive_on_a_quiet_stream() {
    let srv = Server::start(&["--heartbeat-secs", "1"]);
    let mut st = Stream::open(&srv, "/sse/quiet", "");
    st.read_until(Duration::from_secs(5), |_, p| p.comments() >= 1);
    let opening = st.p.comments();
    let ev = st.read_until(Duration::from_secs(6), |_, p| p.comments() >= opening + 2);
    assert!(ev.is_empty(), "heartbeats are not events");
    assert!(
        st.p.comments() >= opening + 2,
        "comments: {}",
        st.p.comments()
    );
    assert!(!st.eof);
}

#[test]
fn a_message_larger_than_the_client_buffer_reaches_a_client_that_keeps_up() {
    // The send buffer bounds what waits for a slow client; it must not make a single large
    // message undeliverable (the bound is the buffer plus one message).
    let srv = Server::start(&[
        "--client-buffer-bytes",
        "65536",
        "--max-message-bytes",
        "400000",
    ]);
    let mut st = Stream::open(&srv, "/sse/big", "");
    wait_streams(&srv, 1);
    let big = "b".repeat(300_000);
    srv.publish("big", big.as_bytes());
    srv.publish("big", b"after");
    let ev = st.read(2, Duration::from_secs(10));
    assert_eq!(ev.len(), 2, "both events arrive");
    assert_eq!(ev[0].data.len(), 300_000);
    assert_eq!(ev[1].data, "after");
    assert!(!st.eof, "not disconnected");
    assert_eq!(srv.metric("ringcast_slow_client_disconnects_total"), 0);
}

#[test]
fn disconnect_frees_the_stream_and_the_connection() {
    let srv = Server::start(&["--shards", "2"]);
    let base = srv.metric("ringcast_connections_open");
    let mut streams: Vec<Stream> = (0..8)
        .map(|i| {
            let topic = format!("free-{}", i % 3);
            let cur = srv.current(&topic);
            Stream::open(
                &srv,
                &format!("/sse/{topic}"),
                &format!("Last-Event-ID: {cur}\r\n"),
            )
        })
        .collect();
    wait_streams(&srv, 8);
    // The short requests above (`current`) end a moment after their answers.
    assert_eq!(
        srv.wait_metric(
            "ringcast_connections_open",
            base + 8,
            Duration::from_secs(5)
        ),
        base + 8
    );
    // They work, then go.
    srv.publish("free-0", b"x");
    assert_eq!(streams[0].read(1, Duration::from_secs(5)).len(), 1);
    streams.truncate(4);
    wait_streams(&srv, 4);
    drop(streams);
    wait_streams(&srv, 0);
    assert_eq!(
        srv.wait_metric("ringcast_connections_open", base, Duration::from_secs(5)),
        base
    );
    // A half-close (FIN from the client) also frees it.
    let st = Stream::open(&srv, "/sse/free-0", "");
    wait_streams(&srv, 1);
    st.s.shutdown(std::net::Shutdown::Write).unwrap();
    wait_streams(&srv, 0);
    // Publishing to topics with no subscribers left is fine.
    srv.publish("free-1", b"y");
    assert_eq!(srv.metric("ringcast_client_buffered_bytes"), 0);
}

fn req(srv: &Server, method: &str, path: &str, headers: &str) -> Response {
    srv.request(
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n")
            .as_bytes(),
    )
}

/// The head of an SSE response (the body never ends by itself).
fn sse_head(srv: &Server, path: &str, headers: &str) -> Response {
    Stream::open(srv, path, headers).head
}

#[test]
fn cors_default_is_same_origin_only() {
    let srv = Server::start(&[]);
    let evil = "Origin: http://evil.example\r\n";
    assert_eq!(sse_head(&srv, "/sse/c", evil).status, 403);
    assert_eq!(req(&srv, "GET", "/poll/c", evil).status, 403);
    assert_eq!(req(&srv, "OPTIONS", "/sse/c", evil).status, 403);
    // Same origin (Origin = http:// + Host): allowed, no CORS headers.
    let same = "Origin: http://t\r\n";
    let h = sse_head(&srv, "/sse/c", same);
    assert_eq!(h.status, 200);
    assert!(h.header("access-control-allow-origin").is_none());
    let r = req(&srv, "GET", "/poll/c", same);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
    // No Origin (not a cross-origin browser request): allowed.
    assert_eq!(req(&srv, "GET", "/poll/c", "").status, 200);
}

#[test]
fn cors_allow_listed_origin_and_preflight() {
    let srv = Server::start(&["--allow-origin", "http://app.example"]);
    let app = "Origin: http://app.example\r\n";
    let h = sse_head(&srv, "/sse/c", app);
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(h.header("vary"), Some("Origin"));
    let r = req(&srv, "GET", "/poll/c", app);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://app.example")
    );
    assert_eq!(r.header("vary"), Some("Origin"));
    for path in ["/sse/c", "/poll/c"] {
        let r = req(
            &srv,
            "OPTIONS",
            path,
            "Origin: http://app.example\r\nAccess-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: last-event-id\r\n",
        );
        assert_eq!(r.status, 204, "{path}");
        assert_eq!(
            r.header("access-control-allow-origin"),
            Some("http://app.example")
        );
        assert_eq!(r.header("vary"), Some("Origin"));
        let methods = r.header("access-control-allow-methods").unwrap_or("");
        assert!(methods.contains("GET"), "{methods}");
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or("")
            .to_ascii_lowercase();
        assert!(allowed.contains("last-event-id"), "{allowed}");
    }
    // Another origin is still refused, preflight included.
    let other = "Origin: http://evil.example\r\n";
    assert_eq!(sse_head(&srv, "/sse/c", other).status, 403);
    assert_eq!(req(&srv, "GET", "/poll/c", other).status, 403);
    assert_eq!(req(&srv, "OPTIONS", "/sse/c", other).status, 403);
    // An allowed origin's stream still works end to end.
    let cur = srv.current("c");
    let mut st = Stream::open(&srv, "/sse/c", &format!("{app}Last-Event-ID: {cur}\r\n"));
    wait_streams(&srv, 1);
    let id = srv.publish("c", b"hi");
    let ev = st.read(1, Duration::from_secs(5));
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].id, id);
}

#[test]
fn cors_wildcard() {
    let srv = Server::start(&["--allow-origin", "*"]);
    let any = "Origin: http://anything.example\r\n";
    let h = sse_head(&srv, "/sse/w", any);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("access-control-allow-origin"), Some("*"));
    let r = req(&srv, "GET", "/poll/w", any);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = req(&srv, "OPTIONS", "/poll/w", any);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn sigterm_drains_streams_in_stages_with_a_final_retry() {
    const STREAMS: usize = 50;
    let mut srv = Server::start(&[
        "--shards",
        "2",
        "--drain-timeout-secs",
        "2",
        "--sse-retry-ms",
        "1000",
    ]);
    let streams: Vec<Stream> = (0..STREAMS)
        .map(|i| Stream::open(&srv, &format!("/sse/drain-{}", i % 5), ""))
        .collect();
    wait_streams(&srv, STREAMS as i64);
    // Each stream has its opening retry and comment before the signal.
    let mut streams: Vec<Stream> = streams
        .into_iter()
        .map(|mut st| {
            st.read_until(Duration::from_secs(5), |_, p| p.comments() >= 1);
            assert!(st.raw.starts_with(b"retry:"));
            st
        })
        .collect();
    let t0 = Instant::now();
    srv.signal(libc::SIGTERM);
    let closed: Vec<(Duration, Vec<u8>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = streams
            .iter_mut()
            .map(|st| {
                sc.spawn(move || {
                    let before = st.raw.len();
                    st.read_until(Duration::from_secs(10), |_, _| false);
                    assert!(st.eof, "closed by the server");
                    (t0.elapsed(), st.raw[before..].to_vec())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (_, tail) in &closed {
        let text = String::from_utf8_lossy(tail);
        let retry = text
            .lines()
            .find_map(|l| l.strip_prefix("retry:"))
            .unwrap_or_else(|| panic!("a final retry: line, got {text:?}"));
        let ms: u64 = retry.trim().parse().unwrap();
        assert!((800..=1200).contains(&ms), "final retry {ms}");
    }
    let first = closed.iter().map(|c| c.0).min().unwrap();
    let last = closed.iter().map(|c| c.0).max().unwrap();
    assert!(
        last - first > Duration::from_millis(200),
        "closes spread over {:?}, not all at once",
        last - first
    );
    let status = srv.wait_exit(Duration::from_secs(10)).expect("exited");
    assert!(status.success(), "{status:?}");
}
