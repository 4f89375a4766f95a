//! Integration tests of the HTTP/1.1 layer against the real binary: framing, keep-alive,
//! pipelining, bodies, every request limit, timeouts and the connection cap. Each test starts
//! its own server on 127.0.0.1:0 and speaks raw bytes. The runtime (drivers, shutdown,
//! sharding, the startup log) is `runtime.rs`.

#[path = "support/server.rs"]
mod server;

use std::io::Read;
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use server::{
    assert_closed_or_reset, before, exchange, get_raw, offset, post_raw, read_response, send,
    Response, Server,
};

const BAD: &str = "ringcast_http_bad_requests_total";
const OPEN: &str = "ringcast_connections_open";

/// The server has closed `s`: the next read sees end of stream (no byte) within 5 s.
fn assert_closed(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: expected close, got {n} more bytes: {:?}", &b[..n]),
        Err(e) => panic!("{what}: expected close, got {e}"),
    }
}

fn assert_healthy(server: &Server) {
    let r = server.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
}

// ---- 1. /healthz and HEAD ------------------------------------------------------------------

#[test]
fn healthz_get_and_head() {
    let server = Server::start(&["--shards", "1"]);
    let mut s = server.connect();
    let get = exchange(&mut s, &get_raw("/healthz"));
    assert_eq!(get.status, 200);
    assert_eq!(get.body, b"ok\n");
    assert_eq!(get.header("content-length"), Some("3"));
    let date = get.header("date").expect("Date header");
    assert!(
        date.ends_with(" GMT") && date.len() == 29,
        "IMF-fixdate: {date}"
    );
    assert_eq!(
        get.header("connection"),
        None,
        "HTTP/1.1 keeps the connection"
    );

    // HEAD: read exactly the head; if any body byte followed, the next response would not parse.
    send(&mut s, b"HEAD /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let head = read_response(&mut s, true).expect("HEAD response");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-length"), Some("3"));
    assert!(head.header("date").is_some());
    assert_eq!(head.header("content-type"), get.header("content-type"));
    let names = |r: &Response| {
        let mut v: Vec<String> = r.headers.iter().map(|(k, _)| k.to_lowercase()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&head), names(&get), "HEAD has the headers a GET has");

    let again = exchange(&mut s, &get_raw("/healthz"));
    assert_eq!(again.status, 200);
    assert_eq!(again.body, b"ok\n");
}

// ---- 2. keep-alive -------------------------------------------------------------------------

#[test]
fn keep_alive_rules() {
    let server = Server::start(&["--shards", "1"]);

    // HTTP/1.1: persistent by default.
    let mut s = server.connect();
    for i in 0..5 {
        let r = exchange(&mut s, &get_raw("/healthz"));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), None);
    }

    // HTTP/1.0: closes by default.
    let mut s = server.connect();
    let r = exchange(&mut s, b"GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut s, "HTTP/1.0 without keep-alive");

    // HTTP/1.0 + Connection: keep-alive: stays open.
    let mut s = server.connect();
    for i in 0..3 {
        let r = exchange(
            &mut s,
            b"GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        );
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.body, b"ok\n");
        // An HTTP/1.0 client reuses the connection only when the answer says so.
        assert_eq!(r.header("connection"), Some("keep-alive"), "request {i}");
    }

    // Connection: close on HTTP/1.1: answered with Connection: close, then closed.
    let mut s = server.connect();
    let r = exchange(
        &mut s,
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut s, "Connection: close");
}

// ---- 3. pipelining -------------------------------------------------------------------------

#[test]
fn pipelined_requests_answered_in_order() {
    let server = Server::start(&["--shards", "1"]);
    enum Want {
        Health,
        Metrics,
        NotFound,
        Pub,
    }
    let plan = [
        Want::Health,
        Want::Pub,
        Want::Metrics,
        Want::NotFound,
        Want::Pub,
        Want::Health,
        Want::Pub,
        Want::NotFound,
        Want::Metrics,
        Want::Health,
    ];
    let mut raw = Vec::new();
    for (i, w) in plan.iter().enumerate() {
        match w {
            Want::Health => raw.extend(get_raw("/healthz")),
            Want::Metrics => raw.extend(get_raw("/metrics")),
            Want::NotFound => raw.extend(get_raw("/no/such/route")),
            Want::Pub => raw.extend(post_raw("/pub/pipe", format!("msg-{i}").as_bytes())),
        }
    }
    let mut s = server.connect();
    send(&mut s, &raw); // one write
    let mut last = 0;
    let mut ids = Vec::new();
    for (i, w) in plan.iter().enumerate() {
        let r = read_response(&mut s, false).unwrap_or_else(|| panic!("response {i}"));
        match w {
            Want::Health => {
                assert_eq!(r.status, 200, "#{i}");
                assert_eq!(r.body, b"ok\n", "#{i}");
            }
            Want::Metrics => {
                assert_eq!(r.status, 200, "#{i}");
                assert!(r.text().contains("# TYPE ringcast_connections_open gauge"));
            }
            Want::NotFound => assert_eq!(r.status, 404, "#{i}"),
            Want::Pub => {
                assert_eq!(r.status, 200, "#{i}: {}", r.text());
                let id = r.json()["id"].as_str().unwrap().to_string();
                assert!(offset(&id) > last, "positions increase: {id}");
                last = offset(&id);
                ids.push((id, format!("msg-{i}")));
            }
        }
    }
    // And the publishes landed in request order.
    let r = server.get(&format!("/poll/pipe?since={}", before(&ids[0].0)));
    assert_eq!(r.status, 200);
    let v = r.json();
    let got: Vec<(String, String)> = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["data"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, ids);
}

// ---- 4. bodies -----------------------------------------------------------------------------

/// The payload of the message at `pos` on `topic`.
fn payload_at(server: &Server, topic: &str, pos: &str) -> String {
    let r = server.get(&format!("/poll/{topic}?since={}&limit=1", before(pos)));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let m = &v["messages"][0];
    assert_eq!(m["id"].as_str(), Some(pos));
    m["data"].as_str().unwrap().to_string()
}

#[test]
fn request_bodies() {
    let server = Server::start(&["--shards", "1"]);
    let mut s = server.connect();

    // Content-Length.
    let r = exchange(&mut s, &post_raw("/pub/body", b"plain"));
    assert_eq!(r.status, 200, "{}", r.text());
    let p1 = r.json()["id"].as_str().unwrap().to_string();

    // Chunked, with a chunk extension and a trailer field.
    let r = exchange(
        &mut s,
        b"POST /pub/body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;note=first\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Checksum: none\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let p2 = r.json()["id"].as_str().unwrap().to_string();
    assert!(offset(&p2) > offset(&p1));

    // Expect: 100-continue: the interim answer comes before the body is sent.
    send(
        &mut s,
        b"POST /pub/body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
    );
    let interim = read_response(&mut s, false).expect("100 Continue");
    assert_eq!(interim.status, 100);
    let r = exchange(&mut s, b"continued");
    assert_eq!(r.status, 200, "{}", r.text());
    let p3 = r.json()["id"].as_str().unwrap().to_string();
    assert!(offset(&p3) > offset(&p2));

    // Head and body trickled in over several writes.
    let parts: [&[u8]; 5] = [
        b"POST /pub/bo",
        b"dy HTTP/1.1\r\nHost: t\r\nContent-Le",
        b"ngth: 12\r\n\r\nslow",
        b"ly sen",
        b"t!",
    ];
    for p in parts {
        send(&mut s, p);
        std::thread::sleep(Duration::from_millis(60));
    }
    let r = read_response(&mut s, false).expect("response to a trickled request");
    assert_eq!(r.status, 200, "{}", r.text());
    let p4 = r.json()["id"].as_str().unwrap().to_string();
    assert!(offset(&p4) > offset(&p3));

    // Chunked, trickled: one chunk per write, the size line split.
    let parts: [&[u8]; 4] = [
        b"POST /pub/body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"3\r\nabc\r\n",
        b"3\r",
        b"\ndef\r\n0\r\n\r\n",
    ];
    for p in parts {
        send(&mut s, p);
        std::thread::sleep(Duration::from_millis(60));
    }
    let r = read_response(&mut s, false).expect("response to trickled chunks");
    assert_eq!(r.status, 200, "{}", r.text());
    let p5 = r.json()["id"].as_str().unwrap().to_string();
    assert!(offset(&p5) > offset(&p4));

    assert_eq!(payload_at(&server, "body", &p1), "plain");
    assert_eq!(payload_at(&server, "body", &p2), "hello world");
    assert_eq!(payload_at(&server, "body", &p3), "continued");
    assert_eq!(payload_at(&server, "body", &p4), "slowly sent!");
    assert_eq!(payload_at(&server, "body", &p5), "abcdef");
}

// ---- 5. limits and malformed requests ------------------------------------------------------

struct Case {
    name: &'static str,
    raw: Vec<u8>,
    status: u16,
    /// The server answers with `Connection: close` and closes (an unreadable request or an
    /// unread body); otherwise the same connection must still serve a request.
    closes: bool,
    allow: Option<&'static str>,
}

fn case(name: &'static str, raw: impl Into<Vec<u8>>, status: u16, closes: bool) -> Case {
    Case {
        name,
        raw: raw.into(),
        status,
        closes,
        allow: None,
    }
}

#[test]
fn limits_and_malformed_requests() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--max-request-line-bytes",
        "300",
        "--max-head-bytes",
        "1024",
        "--max-headers",
        "5",
        "--max-message-bytes",
        "10",
    ]);
    let long_target = format!("/healthz?{}", "a".repeat(400));
    let many_headers: String = (0..7).map(|i| format!("X-H{i}: v\r\n")).collect();
    let big_headers = format!("X-A: {}\r\nX-B: {}\r\n", "a".repeat(600), "b".repeat(600));
    let cases = vec![
        case(
            "request line too long",
            format!("GET {long_target} HTTP/1.1\r\nHost: t\r\n\r\n"),
            414,
            true,
        ),
        case(
            "head too large",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{big_headers}\r\n"),
            431,
            true,
        ),
        case(
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nHost: t\r\n{many_headers}\r\n"),
            431,
            true,
        ),
        case("malformed request line", "NOT A REQUEST\r\n\r\n", 400, true),
        case(
            "request line without version",
            "GET /healthz\r\nHost: t\r\n\r\n",
            400,
            true,
        ),
        case(
            "space in a header name",
            "GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n",
            400,
            true,
        ),
        case("missing Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, true),
        case(
            "Content-Length and Transfer-Encoding",
            "POST /pub/t HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\
             Transfer-Encoding: chunked\r\n\r\n",
            400,
            true,
        ),
        case(
            "unknown transfer coding before chunked",
            "POST /pub/t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            true,
        ),
        // RFC 9112 §6.3: chunked not final → the length is unknowable → 400 and close.
        case(
            "Transfer-Encoding: gzip alone",
            "POST /pub/t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
            true,
        ),
        case(
            "HTTP/2.0",
            "GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n",
            505,
            true,
        ),
        case(
            "publish body over --max-message-bytes",
            "POST /pub/t HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n",
            413,
            true,
        ),
        case(
            "chunked publish over --max-message-bytes",
            "POST /pub/t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
             8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n",
            413,
            true,
        ),
        case(
            "malformed chunk size",
            "POST /pub/t HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            true,
        ),
        case(
            "unknown method",
            "BREW /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
            501,
            false,
        ),
        Case {
            allow: Some("GET, HEAD"),
            ..case(
                "DELETE /healthz",
                "DELETE /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
                405,
                false,
            )
        },
        Case {
            allow: Some("POST"),
            ..case(
                "GET /pub/t",
                "GET /pub/t HTTP/1.1\r\nHost: t\r\n\r\n",
                405,
                false,
            )
        },
        case(
            "unknown route",
            "GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n",
            404,
            false,
        ),
        case(
            "space in a topic",
            "GET /poll/a%20b HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            false,
        ),
        case(
            "empty topic",
            "GET /poll/ HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            false,
        ),
        case(
            "200-byte topic",
            format!("GET /poll/{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(200)),
            400,
            false,
        ),
        case(
            "bad percent-encoding in a topic",
            "GET /poll/a%zz HTTP/1.1\r\nHost: t\r\n\r\n",
            400,
            false,
        ),
    ];
    for c in cases {
        let bad_before = server.metric(BAD);
        let mut s = server.connect();
        let r = exchange(&mut s, &c.raw);
        assert_eq!(r.status, c.status, "{}: {}", c.name, r.text());
        assert!(
            r.header("content-length").is_some(),
            "{}: error answers are framed",
            c.name
        );
        if let Some(allow) = c.allow {
            assert_eq!(r.header("allow"), Some(allow), "{}", c.name);
        }
        if c.closes {
            assert_eq!(r.header("connection"), Some("close"), "{}", c.name);
            assert_closed_or_reset(&mut s, c.name);
        } else {
            assert_eq!(r.header("connection"), None, "{}", c.name);
            let again = exchange(&mut s, &get_raw("/healthz"));
            assert_eq!(again.status, 200, "{}: same connection afterwards", c.name);
        }
        // One bad client harms nothing else: a new connection is served, and it was counted.
        assert_healthy(&server);
        assert!(
            server.metric(BAD) > bad_before,
            "{}: {BAD} did not move",
            c.name
        );
    }
}

// ---- 6. slowloris and idle timeouts --------------------------------------------------------

#[test]
fn header_and_idle_timeouts() {
    let server = Server::start(&[
        "--shards",
        "1",
        "--header-timeout-secs",
        "1",
        "--idle-timeout-secs",
        "1",
    ]);
    let timeouts_before = server.metric("ringcast_http_timeouts_total");

    // Slowloris: half a head, then nothing.
    let t = Instant::now();
    let mut slow = server.connect();
    send(&mut slow, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow");
    // An idle keep-alive connection: one request, then silence.
    let mut idle = server.connect();
    assert_eq!(exchange(&mut idle, &get_raw("/healthz")).status, 200);
    let idle_t = Instant::now();

    // Meanwhile another client is served normally, on fresh and reused connections.
    let mut other = server.connect();
    for _ in 0..5 {
        assert_eq!(exchange(&mut other, &get_raw("/healthz")).status, 200);
        assert_healthy(&server);
        std::thread::sleep(Duration::from_millis(50));
    }

    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let r = read_response(&mut slow, false).expect("408 for a slow head");
    let waited = t.elapsed();
    assert_eq!(r.status, 408);
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut slow, "after 408");
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "408 after {waited:?}, --header-timeout-secs 1"
    );

    // The idle one is closed without a response.
    assert_closed(&mut idle, "idle keep-alive");
    let idle_waited = idle_t.elapsed();
    assert!(
        idle_waited < Duration::from_secs(4),
        "idle close after {idle_waited:?}, --idle-timeout-secs 1"
    );

    assert!(server.metric("ringcast_http_timeouts_total") >= timeouts_before + 2);
    assert_healthy(&server);
}

// ---- 7. --max-connections ------------------------------------------------------------------

#[test]
fn max_connections_answers_503_then_recovers() {
    let server = Server::start(&["--shards", "1", "--max-connections", "5"]);
    let mut held: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = server.connect();
            assert_eq!(exchange(&mut s, &get_raw("/healthz")).status, 200);
            s
        })
        .collect();

    // The sixth is answered at accept, before it says anything, and closed.
    let mut sixth = server.connect();
    let r = read_response(&mut sixth, false).expect("503 over the cap");
    assert_eq!(r.status, 503);
    // Jittered between 1 and 2 seconds, so refused clients do not all return at once.
    let retry: u32 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed_or_reset(&mut sixth, "over the cap");

    // The held ones still work.
    assert_eq!(exchange(&mut held[0], &get_raw("/healthz")).status, 200);

    // Close two; new connections are served again once the server has seen them go.
    held.truncate(3);
    let t = Instant::now();
    let mut served = false;
    for _ in 0..100 {
        let mut s = server.connect();
        send(&mut s, &get_raw("/healthz"));
        if let Some(r) = read_response(&mut s, false) {
            if r.status == 200 {
                served = true;
                break;
            }
            assert_eq!(r.status, 503);
        }
        if t.elapsed() > Duration::from_secs(5) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "no connection served after closing two");
    drop(held);
    assert!(server.metric("ringcast_connections_rejected_total") >= 1);
}

// ---- 8. a thousand concurrent connections --------------------------------------------------

#[test]
fn thousand_concurrent_connections() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 250;
    let server = Server::start(&["--shards", "2"]);
    let addr = server.addr;
    let all_open = Arc::new(Barrier::new(THREADS));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let all_open = all_open.clone();
            std::thread::spawn(move || {
                let mut socks: Vec<TcpStream> = (0..PER_THREAD)
                    .map(|_| {
                        let s = TcpStream::connect(addr).expect("connect");
                        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        s
                    })
                    .collect();
                // Every connection of every thread is open before any request is sent.
                all_open.wait();
                for s in &mut socks {
                    send(s, &get_raw("/healthz"));
                }
                let mut ok = 0;
                for s in &mut socks {
                    if read_response(s, false).is_some_and(|r| r.status == 200 && r.body == b"ok\n")
                    {
                        ok += 1;
                    }
                }
                (ok, socks)
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut ok = 0;
    for w in workers {
        let (n, socks) = w.join().unwrap();
        ok += n;
        held.extend(socks);
    }
    assert_eq!(ok, THREADS * PER_THREAD);
    // All of them open at once (plus the metrics request itself).
    let n = THREADS * PER_THREAD;
    assert_eq!(
        server.wait_metric(OPEN, n as i64 + 1, Duration::from_secs(5)),
        n as i64 + 1
    );
    drop(held);
    let left = server.wait_metric(OPEN, 1, Duration::from_secs(10));
    assert!(left <= 1, "{left} connections still open");
}

// ---- 9. drivers ----------------------------------------------------------------------------
