//! The admission bounds of issue 15 end to end, on the real binary: `--accept-rate`,
//! `--max-connections-per-ip`, `--max-subscriptions-per-connection` and `--ws-publish-rate`.
//! Each refuses exactly past its limit, with its answer (503 + jittered `Retry-After`, an error
//! envelope, close 1008) and its counter, and leaves the other clients alone. The connect storm
//! is `tests/storm.rs`.
//! Every wait is bounded; the rates are low enough that a debug build on a busy machine keeps
//! well inside one bucket's refill, and each bound on "how many passed" allows for the refill
//! the measured elapsed time could bring.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::time::{Duration, Instant};

use pubsub::{sse_open_now, sse_read};
use server::{exchange, get_raw, publish_on, read_response, Response, Server};
use sse_parser::SseParser;
use tungstenite::client::IntoClientRequest as _;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

// ---- helpers -------------------------------------------------------------------------------

/// A 503 from the accept path: jittered `Retry-After` of 1–2 s, `Connection: close`, and the
/// bound named in the body.
fn assert_refused(r: &Response, bound: &str) {
    assert_eq!(r.status, 503, "{}", r.text());
    let retry: u32 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(r.text().contains(bound), "{}", r.text());
}

/// A new connection's answer to `GET /healthz` (None: closed without one).
fn healthz_on(mut s: TcpStream) -> Option<Response> {
    s.write_all(&get_raw("/healthz")).ok()?;
    read_response(&mut s, false)
}

/// A TCP connection to the server from the loopback address `from` (127.x.y.z), so one test
/// can be two clients to `--max-connections-per-ip`.
fn connect_from(srv: &Server, from: Ipv4Addr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(to) = srv.addr else {
        panic!("127.0.0.1 only")
    };
    let sa = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    };
    let (local, remote) = (sa(from, 0), sa(*to.ip(), to.port()));
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: socket, bind and connect on a fresh fd that we own and hand to TcpStream; the
    // addresses are live locals of the length given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let s = TcpStream::from_raw_fd(fd);
        let rc = libc::bind(fd, &local as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "bind {from}: {}", std::io::Error::last_os_error());
        let rc = libc::connect(fd, &remote as *const _ as *const libc::sockaddr, len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

/// A metric summed over shards, asked from loopback address `from` (the harness's own
/// `metric` connects from 127.0.0.1, which a per-address cap may be refusing).
fn metric_from(srv: &Server, from: Ipv4Addr, name: &str) -> i64 {
    metric_on(&mut connect_from(srv, from), name)
}

/// A metric summed over shards, asked on an open keep-alive connection.
fn metric_on(c: &mut TcpStream, name: &str) -> i64 {
    let r = exchange(c, &get_raw("/metrics"));
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
        .sum()
}

/// `metric_from` until it equals `want` (bounded); the last value.
fn wait_metric_from(srv: &Server, from: Ipv4Addr, name: &str, want: i64) -> i64 {
    let t = Instant::now();
    loop {
        let v = metric_from(srv, from, name);
        if v == want || t.elapsed() > Duration::from_secs(5) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ws_on(stream: TcpStream, srv: &Server, path: &str, v1: bool) -> Ws {
    let mut req = format!("ws://{}{path}", srv.addr)
        .into_client_request()
        .unwrap();
    if v1 {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", "ringcast.v1".parse().unwrap());
    }
    let (ws, resp) = tungstenite::client::client(req, stream).expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text message as JSON, skipping control frames.
fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("expected text, got {m:?}"),
        }
    }
}

/// A barrier: the pong comes only once the connection's subscription is live.
fn sync(ws: &mut Ws) {
    ws.send(Message::Ping(b"sync"[..].into())).unwrap();
    loop {
        match ws.read().expect("read while waiting for the pong") {
            Message::Pong(p) if &p[..] == b"sync" => return,
            Message::Pong(_) | Message::Ping(_) => {}
            m => panic!("unexpected {m:?} before the pong"),
        }
    }
}

/// A client WebSocket frame, masked.
fn masked_text(payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    assert!(payload.len() < 126);
    let mut f = vec![0x81, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

// ---- --accept-rate -------------------------------------------------------------------------

#[test]
fn accept_rate_answers_503_past_the_bucket_and_connected_clients_never_notice() {
    const RATE: usize = 10;
    let s = Server::start(&["--shards", "1", "--accept-rate", &RATE.to_string()]);
    // Two clients connected before the burst: a subscriber and a keep-alive publisher. They
    // and the startup probe of the harness took no token (it reads the log), so the bucket
    // holds RATE.
    let mut sub = sse_open_now(&s, "calm");
    let mut publisher = s.connect();
    let used = 3; // the poll of `sse_open_now`, the stream, the publisher

    let t = Instant::now();
    let answers: Vec<Response> = (0..4 * RATE)
        .map(|_| healthz_on(s.connect()).expect("an answer, 200 or 503"))
        .collect();
    let elapsed = t.elapsed();
    let served = answers.iter().filter(|r| r.status == 200).count();
    for r in answers.iter().filter(|r| r.status != 200) {
        assert_refused(r, "--accept-rate");
    }
    // Exactly the bucket, give or take what it refilled while the burst ran.
    let refill = (elapsed.as_millis() as usize * RATE).div_ceil(1000);
    assert!(
        (RATE - used..=RATE - used + refill).contains(&served),
        "{served} served in {elapsed:?}"
    );
    // The 200s come first: once the bucket is empty it stays so for the burst's length.
    assert!(answers[..RATE - used].iter().all(|r| r.status == 200));
    let refused = (answers.len() - served) as i64;
    // Asked on a connection made before the burst: a new one may still be refused.
    assert_eq!(
        metric_on(&mut publisher, "ringcast_accept_rate_refused_total"),
        refused
    );

    // The clients connected before never noticed.
    let id = publish_on(&mut publisher, "calm", b"still here");
    let ev = sse_read(&mut sub, &mut SseParser::new(), 1, Duration::from_secs(5));
    assert_eq!(
        (ev[0].id.as_str(), ev[0].data.as_str()),
        (id.as_str(), "still here")
    );

    // A second later the bucket has refilled: a new client is served again.
    let t = Instant::now();
    let mut again = None;
    while again.is_none() && t.elapsed() < Duration::from_secs(5) {
        match healthz_on(s.connect()) {
            Some(r) if r.status == 200 => again = Some(t.elapsed()),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(again.is_some(), "no connection served after the burst");
    assert!(s.log().contains("refused with 503: over --accept-rate"));
}

// ---- --max-connections-per-ip --------------------------------------------------------------

#[test]
fn per_ip_cap_refuses_the_next_connection_of_that_address_only_and_every_end_releases_it() {
    let s = Server::start(&["--shards", "2", "--max-connections-per-ip", "3"]);
    let a = Ipv4Addr::new(127, 0, 0, 1);
    let b = Ipv4Addr::new(127, 0, 0, 2);
    let ops = Ipv4Addr::new(127, 0, 0, 3);
    // Three kinds of connection from `a`: a parked SSE stream, a parked WebSocket, and a
    // keep-alive HTTP client.
    let open_three = || {
        let mut sse = connect_from(&s, a);
        write!(sse, "GET /sse/ip HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut sse, true).unwrap().status, 200);
        let mut ws = ws_on(connect_from(&s, a), &s, "/ws/ip", false);
        sync(&mut ws);
        let mut http = connect_from(&s, a);
        assert_eq!(exchange(&mut http, &get_raw("/healthz")).status, 200);
        (sse, ws, http)
    };
    let (sse, ws, mut http) = open_three();

    // The fourth from `a` is refused; `b` is another client and is served.
    let r = healthz_on(connect_from(&s, a)).expect("503 over the per-address cap");
    assert_refused(&r, "--max-connections-per-ip");
    assert_eq!(metric_from(&s, ops, "ringcast_per_ip_refused_total"), 1);
    let mut other = connect_from(&s, b);
    assert_eq!(exchange(&mut other, &get_raw("/healthz")).status, 200);
    assert_eq!(exchange(&mut http, &get_raw("/healthz")).status, 200);

    // A parked stream that ends gives back exactly one: one more from `a`, then 503 again.
    drop(sse);
    assert_eq!(wait_metric_from(&s, ops, "ringcast_sse_streams_open", 0), 0);
    let mut fourth = connect_from(&s, a);
    assert_eq!(exchange(&mut fourth, &get_raw("/healthz")).status, 200);
    let r = healthz_on(connect_from(&s, a)).expect("503 again");
    assert_refused(&r, "--max-connections-per-ip");

    // Everyone from `a` leaves (a WebSocket, two HTTP clients): the count returns to 0, so
    // the same three kinds can connect again, and exactly three.
    drop((ws, http, fourth, other));
    let open = wait_metric_from(&s, ops, "ringcast_connections_open", 1);
    assert_eq!(open, 1, "only the /metrics client is left");
    let again = open_three();
    let r = healthz_on(connect_from(&s, a)).expect("503 at the cap again");
    assert_refused(&r, "--max-connections-per-ip");
    assert_eq!(metric_from(&s, ops, "ringcast_per_ip_refused_total"), 3);
    drop(again);
}

#[test]
fn per_ip_cap_off_by_default_allows_many_from_one_address() {
    let s = Server::start(&["--shards", "1"]);
    let held: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut c = s.connect();
            assert_eq!(exchange(&mut c, &get_raw("/healthz")).status, 200);
            c
        })
        .collect();
    assert_eq!(s.metric("ringcast_per_ip_refused_total"), 0);
    drop(held);
}

// ---- --max-subscriptions-per-connection ----------------------------------------------------

#[test]
fn v1_subscribes_past_the_cap_get_an_error_envelope_and_the_connection_stays() {
    let s = Server::start(&["--shards", "2", "--max-subscriptions-per-connection", "3"]);
    let mut ws = ws_on(s.connect(), &s, "/ws/t0", true);
    assert_eq!(next_json(&mut ws)["type"], "subscribed");
    for t in ["t1", "t2", "t3"] {
        ws.send(Message::text(format!(
            r#"{{"type":"subscribe","topic":"{t}","ref":"{t}"}}"#
        )))
        .unwrap();
        let m = next_json(&mut ws);
        if t == "t3" {
            // The URL's topic counts: t0, t1, t2 are three.
            assert_eq!(m["type"], "error", "{m}");
            assert_eq!(m["ref"], "t3");
            assert!(m["message"].as_str().unwrap().contains("subscriptions"));
        } else {
            assert_eq!(
                (m["type"].as_str(), m["ref"].as_str()),
                (Some("subscribed"), Some(t))
            );
        }
    }
    assert_eq!(s.metric("ringcast_subscriptions_refused_total"), 1);

    // Still open and still subscribed; after an unsubscribe there is room again.
    let id = s.publish("t2", b"hello");
    let m = next_json(&mut ws);
    assert_eq!(
        (m["topic"].as_str(), m["id"].as_str()),
        (Some("t2"), Some(id.as_str()))
    );
    ws.send(Message::text(r#"{"type":"unsubscribe","topic":"t1"}"#))
        .unwrap();
    assert_eq!(next_json(&mut ws)["type"], "unsubscribed");
    ws.send(Message::text(
        r#"{"type":"subscribe","topic":"t3","ref":"r"}"#,
    ))
    .unwrap();
    assert_eq!(next_json(&mut ws)["type"], "subscribed");
    assert_eq!(s.metric("ringcast_subscriptions_refused_total"), 1);
}

// ---- --ws-publish-rate ---------------------------------------------------------------------

#[test]
fn raw_websocket_past_the_publish_rate_is_closed_1008_and_others_keep_going() {
    const RATE: usize = 5;
    let s = Server::start(&["--shards", "1", "--ws-publish-rate", &RATE.to_string()]);
    let mut watcher = ws_on(s.connect(), &s, "/ws/fast", false);
    sync(&mut watcher);
    let mut fast = ws_on(s.connect(), &s, "/ws/fast", false);
    sync(&mut fast);

    // One write with RATE + 1 messages: the bucket holds RATE, and the few milliseconds this
    // takes refill a fifth of a token at most.
    let mut burst = Vec::new();
    for i in 0..=RATE {
        burst.extend(masked_text(format!("m{i}").as_bytes()));
    }
    fast.get_mut().write_all(&burst).unwrap();

    let mut echoed = Vec::new();
    let close = loop {
        match fast.read() {
            Ok(Message::Text(t)) => echoed.push(t.to_string()),
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                break (u16::from(code), reason.to_string())
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            other => panic!("expected the echo then a close, got {other:?}"),
        }
    };
    assert_eq!(close, (1008, "publish rate".to_string()));
    let want: Vec<String> = (0..RATE).map(|i| format!("m{i}")).collect();
    assert_eq!(
        echoed, want,
        "the first RATE messages were published, in order"
    );
    assert_eq!(s.metric("ringcast_ws_publish_rate_refused_total"), 1);

    // The other client got exactly those, and keeps getting what is published.
    let got: Vec<String> = (0..RATE)
        .map(|_| match watcher.read().unwrap() {
            Message::Text(t) => t.to_string(),
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(got, want);
    s.publish("fast", b"after");
    match watcher.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), "after"),
        m => panic!("{m:?}"),
    }
}

#[test]
fn v1_publishes_past_the_rate_get_error_envelopes_and_the_connection_stays() {
    const RATE: usize = 5;
    let s = Server::start(&["--shards", "1", "--ws-publish-rate", &RATE.to_string()]);
    let mut ws = ws_on(s.connect(), &s, "/ws/other", true);
    assert_eq!(next_json(&mut ws)["type"], "subscribed");

    // RATE + 2 publishes in one write: RATE acks, then two errors, answered in order.
    let mut burst = Vec::new();
    for i in 0..RATE + 2 {
        let cmd = format!(r#"{{"type":"publish","topic":"v","data":"{i}","ref":"p{i}"}}"#);
        burst.push(Message::text(cmd));
    }
    for m in burst {
        ws.write(m).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..RATE + 2 {
        let m = next_json(&mut ws);
        assert_eq!(m["ref"], format!("p{i}"), "{m}");
        if i < RATE {
            assert_eq!(m["type"], "ack", "{m}");
        } else {
            assert_eq!(m["type"], "error", "{m}");
            assert!(m["message"].as_str().unwrap().contains("--ws-publish-rate"));
        }
    }
    assert_eq!(s.metric("ringcast_ws_publish_rate_refused_total"), 2);

    // The connection stays: once a token has come back (a fifth of a second), publishing works.
    let t = Instant::now();
    let acked = loop {
        ws.send(Message::text(
            r#"{"type":"publish","topic":"v","data":"later","ref":"l"}"#,
        ))
        .unwrap();
        let m = next_json(&mut ws);
        if m["type"] == "ack" {
            break true;
        }
        if t.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(acked, "no publish acknowledged after the rate refilled");
}

// ---- the flags themselves ------------------------------------------------------------------

#[test]
fn zero_rates_and_caps_are_refused_at_startup_with_the_flag_named() {
    for flag in [
        "--accept-rate",
        "--ws-publish-rate",
        "--max-subscriptions-per-connection",
    ] {
        let (status, err) = server::run_to_exit(&[flag, "0"], &[], Duration::from_secs(10));
        let status = status.expect("the server exits at once");
        assert!(!status.success(), "{flag} 0 started");
        assert!(err.contains(flag), "{flag}: {err}");
    }
    // 0 is "off" for the per-address cap, not an error.
    let s = Server::start(&["--max-connections-per-ip", "0"]);
    assert_eq!(s.get("/healthz").status, 200);
}
