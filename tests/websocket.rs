//! `GET /ws/{topic}` end to end: the real binary on 127.0.0.1:0, an independent client
//! (tungstenite's sync client), and raw bytes where a client library refuses to send bad frames.
//!
//! Covers the handshake answers, echo, fanout across shards, the close codes of
//! `src/shard/outbox/close.rs` (1000 echo, 1001, 1002, 1007, 1008, 1009, 1011, 4000), ping/pong, resume and
//! reset, `ringcast.v1`, heartbeats, slow clients, drain and the connection gauges.
//! Every wait is bounded; nothing asserts a speed.

#[path = "support/server.rs"]
mod server;
#[path = "support/wsraw.rs"]
mod wsraw;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use server::{read_response, Server};
use tungstenite::client::IntoClientRequest as _;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use wsraw::{read_frame, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

type Ws = WebSocket<TcpStream>;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// ---------------------------------------------------------------------------------------------
// Helpers

/// Connects with tungstenite; `protocol` is offered in `Sec-WebSocket-Protocol`.
fn connect(s: &Server, path: &str, protocol: Option<&str>) -> Ws {
    let mut req = format!("ws://{}{path}", s.addr)
        .into_client_request()
        .unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    let (ws, resp) = tungstenite::client::client(req, s.connect()).expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// A barrier: the server answers a ping only once the connection's subscription is live, so
/// after the pong, messages published to the topic reach this client.
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

/// Reads the next data message (skipping pings/pongs).
fn next_message(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("read a message") {
            Message::Ping(_) | Message::Pong(_) => {}
            m => return m,
        }
    }
}

fn next_text(ws: &mut Ws) -> String {
    match next_message(ws) {
        Message::Text(t) => t.to_string(),
        m => panic!("expected a text message, got {m:?}"),
    }
}

fn next_json(ws: &mut Ws) -> serde_json::Value {
    let t = next_text(ws);
    serde_json::from_str(&t).unwrap_or_else(|_| panic!("not JSON: {t}"))
}

/// Reads until the server's close frame and returns its code and reason.
fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                return (u16::from(code), reason.to_string())
            }
            Ok(Message::Close(None)) => panic!("close frame without a code"),
            Ok(_) => {}
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Opens a WebSocket by hand and returns the socket after the 101.
fn raw_connect(s: &Server, path: &str) -> TcpStream {
    let mut t = s.connect();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    t.write_all(req.as_bytes()).unwrap();
    let r = read_response(&mut t, false).expect("upgrade response");
    assert_eq!(r.status, 101, "{}", r.text());
    t
}

/// One frame; `mask` as a client must (None: the unmasked frame a server would send).
fn frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(fin as u8) << 7 | op];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

fn masked(op: u8, payload: &[u8]) -> Vec<u8> {
    frame(true, op, payload, Some(MASK))
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Reads frames until a close frame; returns its (code, reason), or None if the connection
/// ended without one.
fn raw_close_of(t: &mut TcpStream) -> Option<(u16, String)> {
    while let Some((_, op, p)) = read_frame(t) {
        if op == OP_CLOSE {
            assert!(p.len() >= 2, "close frame without a code");
            let code = u16::from_be_bytes([p[0], p[1]]);
            return Some((code, String::from_utf8(p[2..].to_vec()).unwrap()));
        }
    }
    None
}

/// After a close: the server ends the TCP connection (EOF, or a reset).
fn assert_ends(t: &mut TcpStream) {
    let mut b = [0u8; 64];
    let t0 = Instant::now();
    loop {
        match t.read(&mut b) {
            Ok(0) | Err(_) => return,
            Ok(_) => assert!(t0.elapsed() < Duration::from_secs(10), "never closed"),
        }
    }
}

/// An upgrade request with the usual headers plus `extra`, for the handshake vectors.
fn upgrade_request(method: &str, key: Option<&str>, version: &str, extra: &str) -> Vec<u8> {
    let key = key.map_or(String::new(), |k| format!("Sec-WebSocket-Key: {k}\r\n"));
    format!(
        "{method} /ws/hs HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         {key}Sec-WebSocket-Version: {version}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// One shard's value of a metric.
fn metric_of_shard(s: &Server, name: &str, shard: usize) -> i64 {
    let prefix = format!("{name}{{shard=\"{shard}\"}} ");
    s.get("/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(|v| v.parse().unwrap()))
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Handshake

#[test]
fn handshake_vectors() {
    let s = Server::start(&[]);
    let status = |raw: &[u8]| s.request(raw);
    assert_eq!(status(&upgrade_request("GET", None, "13", "")).status, 400);
    assert_eq!(
        status(&upgrade_request("GET", Some("abc"), "13", "")).status,
        400
    );
    // 16 bytes are required: this is 15, base64-encoded.
    let short = status(&upgrade_request(
        "GET",
        Some("AAAAAAAAAAAAAAAAAAAA"),
        "13",
        "",
    ));
    assert_eq!(short.status, 400);
    let v8 = status(&upgrade_request("GET", Some(KEY), "8", ""));
    assert_eq!(v8.status, 426);
    assert_eq!(v8.header("Sec-WebSocket-Version"), Some("13"));
    assert_eq!(
        status(&upgrade_request("POST", Some(KEY), "13", "")).status,
        405
    );
    let evil = "Origin: http://evil.example\r\n";
    assert_eq!(
        status(&upgrade_request("GET", Some(KEY), "13", evil)).status,
        403
    );
    // Same origin (the Origin's authority is the Host) is allowed.
    let same = status(&upgrade_request(
        "GET",
        Some(KEY),
        "13",
        "Origin: http://t\r\n",
    ));
    assert_eq!(same.status, 101);
    // RFC 6455 §1.3's example key and accept value.
    assert_eq!(
        same.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );

    let s = Server::start(&["--allow-origin", "http://evil.example"]);
    let ok = s.request(&upgrade_request("GET", Some(KEY), "13", evil));
    assert_eq!(ok.status, 101);
}

// ---------------------------------------------------------------------------------------------
// Raw mode: echo, fanout, limits, close codes

#[test]
fn lone_subscriber_gets_its_own_text_and_binary_messages_back() {
    let s = Server::start(&[]);
    let mut ws = connect(&s, "/ws/echo", None);
    assert!(ws.get_ref().peer_addr().is_ok());
    ws.send(Message::text("hello, ringcast")).unwrap();
    assert_eq!(next_text(&mut ws), "hello, ringcast");
    let bin: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    ws.send(Message::binary(bin.clone())).unwrap();
    match next_message(&mut ws) {
        Message::Binary(b) => assert_eq!(&b[..], &bin[..]),
        m => panic!("expected binary, got {m:?}"),
    }
    // A message in fragments with a ping between them comes back whole.
    let mut t = raw_connect(&s, "/ws/frag");
    t.write_all(&frame(false, OP_TEXT, b"frag", Some(MASK)))
        .unwrap();
    t.write_all(&masked(OP_PING, b"mid")).unwrap();
    t.write_all(&frame(true, 0x0, b"mented", Some(MASK)))
        .unwrap();
    assert_eq!(read_frame(&mut t), Some((true, OP_PONG, b"mid".to_vec())));
    assert_eq!(
        read_frame(&mut t),
        Some((true, OP_TEXT, b"fragmented".to_vec()))
    );
}

#[test]
fn http_publish_reaches_websocket_subscribers_on_both_shards() {
    let s = Server::start(&["--shards", "2"]);
    let gauge = "ringcast_websockets_open";
    let mut clients = Vec::new();
    // The kernel spreads connections over the shards' listeners; open until both have one.
    while clients.len() < 64
        && (metric_of_shard(&s, gauge, 0) == 0 || metric_of_shard(&s, gauge, 1) == 0)
    {
        let mut ws = connect(&s, "/ws/fan", None);
        sync(&mut ws);
        clients.push(ws);
    }
    assert!(metric_of_shard(&s, gauge, 0) > 0 && metric_of_shard(&s, gauge, 1) > 0);
    s.publish("fan", b"one");
    s.publish("fan", b"two");
    for ws in &mut clients {
        assert_eq!(next_text(ws), "one");
        assert_eq!(next_text(ws), "two");
    }
}

#[test]
fn message_over_the_limit_is_closed_with_1009() {
    let s = Server::start(&["--max-message-bytes", "1000"]);
    // A 64 MiB frame: refused on its header, before its payload.
    let mut t = raw_connect(&s, "/ws/big");
    let mut h = vec![0x80 | OP_BINARY, 0x80 | 127];
    h.extend_from_slice(&(64u64 << 20).to_be_bytes());
    h.extend_from_slice(&MASK);
    t.write_all(&h).unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1009));
    assert_ends(&mut t);
    // Fragments each under the limit whose total is over it.
    let mut t = raw_connect(&s, "/ws/big");
    t.write_all(&frame(false, OP_TEXT, &[b'a'; 600], Some(MASK)))
        .unwrap();
    t.write_all(&frame(true, 0x0, &[b'b'; 600], Some(MASK)))
        .unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1009));
    // Exactly at the limit is fine.
    let mut ws = connect(&s, "/ws/big", None);
    ws.send(Message::text("x".repeat(1000))).unwrap();
    assert_eq!(next_text(&mut ws).len(), 1000);
}

#[test]
fn protocol_violations_get_their_close_codes() {
    let s = Server::start(&[]);
    // Unmasked client frame.
    let mut t = raw_connect(&s, "/ws/bad");
    t.write_all(&frame(true, OP_TEXT, b"hi", None)).unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1002));
    assert_ends(&mut t);
    // Invalid UTF-8 in a text message, also when split across fragments.
    let mut t = raw_connect(&s, "/ws/bad");
    t.write_all(&masked(OP_TEXT, b"ok \xff")).unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1007));
    let mut t = raw_connect(&s, "/ws/bad");
    t.write_all(&frame(false, OP_TEXT, b"\xce", Some(MASK)))
        .unwrap();
    t.write_all(&frame(true, 0x0, b"\x28", Some(MASK))).unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1007));
    // Reserved bits, reserved opcode, oversized control frame.
    for bad in [
        {
            let mut f = masked(OP_TEXT, b"x");
            f[0] |= 0x40;
            f
        },
        masked(0x3, b"x"),
        masked(OP_PING, &[0u8; 126]),
    ] {
        let mut t = raw_connect(&s, "/ws/bad");
        t.write_all(&bad).unwrap();
        assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1002));
    }
}

#[test]
fn ping_gets_a_pong_with_the_same_payload() {
    let s = Server::start(&[]);
    let mut ws = connect(&s, "/ws/ping", None);
    ws.send(Message::Ping(b"payload-42"[..].into())).unwrap();
    match ws.read().unwrap() {
        Message::Pong(p) => assert_eq!(&p[..], b"payload-42"),
        m => panic!("expected a pong, got {m:?}"),
    }
    let mut t = raw_connect(&s, "/ws/ping");
    t.write_all(&masked(OP_PING, b"")).unwrap();
    assert_eq!(read_frame(&mut t), Some((true, OP_PONG, Vec::new())));
}

#[test]
fn close_handshake_is_echoed() {
    let s = Server::start(&[]);
    let mut ws = connect(&s, "/ws/bye", None);
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    }))
    .unwrap();
    let mut echoed = None;
    loop {
        match ws.read() {
            Ok(Message::Close(f)) => echoed = f.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(echoed, Some(1000));
    // Raw: an application code is echoed; an empty close is answered with 1000.
    let mut t = raw_connect(&s, "/ws/bye");
    t.write_all(&masked(OP_CLOSE, &close_payload(3000, "app")))
        .unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(3000));
    assert_ends(&mut t);
    let mut t = raw_connect(&s, "/ws/bye");
    t.write_all(&masked(OP_CLOSE, b"")).unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1000));
    // A close code that may not be sent (1005) is a protocol error.
    let mut t = raw_connect(&s, "/ws/bye");
    t.write_all(&masked(OP_CLOSE, &close_payload(1005, "")))
        .unwrap();
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1002));
}

// ---------------------------------------------------------------------------------------------
// Resume and reset

#[test]
fn resume_inside_history_replays_exactly_the_missed_messages() {
    let s = Server::start(&[]);
    let p: Vec<String> = (1..=4)
        .map(|i| s.publish("resume", format!("m{i}").as_bytes()))
        .collect();
    let mut ws = connect(&s, &format!("/ws/resume?since={}", p[1]), None);
    assert_eq!(next_text(&mut ws), "m3");
    assert_eq!(next_text(&mut ws), "m4");
    s.publish("resume", b"m5");
    assert_eq!(next_text(&mut ws), "m5", "no duplicate, nothing skipped");
    // Resuming at the newest position replays nothing.
    let newest = s.publish("resume", b"m6");
    let mut ws = connect(&s, &format!("/ws/resume?since={newest}"), None);
    sync(&mut ws);
    s.publish("resume", b"m7");
    assert_eq!(next_text(&mut ws), "m7");
}

#[test]
fn resume_outside_history_is_closed_with_4000_and_the_current_position() {
    let s = Server::start(&["--history-messages", "2"]);
    let p: Vec<String> = (1..=5)
        .map(|i| s.publish("reset", format!("m{i}").as_bytes()))
        .collect();
    let (epoch, _) = p[4].split_once(':').unwrap();
    let want = (4000, format!("reset {}", p[4]));
    for since in [p[0].clone(), format!("{epoch}0:1"), "junk".to_string()] {
        let mut ws = connect(&s, &format!("/ws/reset?since={since}"), None);
        assert_eq!(close_of(&mut ws), want, "since={since}");
    }
}

// ---------------------------------------------------------------------------------------------
// ringcast.v1

#[test]
fn v1_subscribed_commands_acks_resets_and_errors() {
    let s = Server::start(&[]);
    let mut ws = connect(&s, "/ws/a", Some("ringcast.v1"));
    let hello = next_json(&mut ws);
    assert_eq!(hello["type"], "subscribed");
    assert_eq!(hello["topic"], "a");
    assert!(hello["id"].as_str().unwrap().contains(':'));

    // HTTP publish → envelope.
    let id = s.publish("a", b"from http");
    let m = next_json(&mut ws);
    assert_eq!(
        (m["type"].as_str(), m["topic"].as_str(), m["id"].as_str()),
        (Some("message"), Some("a"), Some(id.as_str()))
    );
    assert_eq!(m["data"], "from http");

    // Subscribe to b; publish to b with an ack; the message comes too (order not promised).
    ws.send(Message::text(
        r#"{"type":"subscribe","topic":"b","ref":"s1"}"#,
    ))
    .unwrap();
    let sub = next_json(&mut ws);
    assert_eq!(
        (
            sub["type"].as_str(),
            sub["topic"].as_str(),
            sub["ref"].as_str()
        ),
        (Some("subscribed"), Some("b"), Some("s1"))
    );
    ws.send(Message::text(
        r#"{"type":"publish","topic":"b","event":"note","data":"hi","ref":"r1"}"#,
    ))
    .unwrap();
    let (x, y) = (next_json(&mut ws), next_json(&mut ws));
    let (ack, msg) = if x["type"] == "ack" { (x, y) } else { (y, x) };
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["ref"], "r1");
    assert_eq!(msg["type"], "message");
    assert_eq!(msg["topic"], "b");
    assert_eq!(msg["event"], "note");
    assert_eq!(msg["data"], "hi");
    assert_eq!(ack["id"], msg["id"]);

    // Binary data as base64 round-trips.
    ws.send(Message::text(
        r#"{"type":"publish","topic":"b","data":"AAEC/w==","encoding":"base64","ref":"r2"}"#,
    ))
    .unwrap();
    let (x, y) = (next_json(&mut ws), next_json(&mut ws));
    let msg = if x["type"] == "ack" { y } else { x };
    assert_eq!(
        (msg["data"].as_str(), msg["encoding"].as_str()),
        (Some("AAEC/w=="), Some("base64"))
    );

    // Unsubscribe: b's messages stop, a's still come.
    ws.send(Message::text(
        r#"{"type":"unsubscribe","topic":"b","ref":"u1"}"#,
    ))
    .unwrap();
    let un = next_json(&mut ws);
    assert_eq!(
        (
            un["type"].as_str(),
            un["topic"].as_str(),
            un["ref"].as_str()
        ),
        (Some("unsubscribed"), Some("b"), Some("u1"))
    );
    s.publish("b", b"not for you");
    s.publish("a", b"for you");
    assert_eq!(next_json(&mut ws)["data"], "for you");

    // A bad since on subscribe: a reset envelope carrying the current position.
    let cur = s.publish("c", b"c1");
    ws.send(Message::text(
        r#"{"type":"subscribe","topic":"c","since":"junk"}"#,
    ))
    .unwrap();
    let (x, y) = (next_json(&mut ws), next_json(&mut ws));
    let (reset, sub) = if x["type"] == "reset" { (x, y) } else { (y, x) };
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["topic"], "c");
    assert_eq!(reset["id"], cur.as_str());
    assert_eq!(sub["type"], "subscribed");

    // Junk, unknown commands and bad arguments get errors (with the ref when there is one);
    // the connection stays open.
    for (junk, r) in [
        ("not json", None),
        (r#"{"type":"dance","ref":"r3"}"#, Some("r3")),
        (r#"{"type":"subscribe","ref":"r4"}"#, Some("r4")),
        (r#"{"type":"subscribe","topic":"a","ref":"r5"}"#, Some("r5")),
        (r#"{"type":"unsubscribe","topic":"zzz"}"#, None),
        (r#"{"type":"publish","topic":"a"}"#, None),
    ] {
        ws.send(Message::text(junk)).unwrap();
        let e = next_json(&mut ws);
        assert_eq!(e["type"], "error", "{junk}");
        assert!(e["message"].is_string());
        assert_eq!(e["ref"].as_str(), r, "{junk}");
    }
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(next_json(&mut ws)["type"], "error");
    s.publish("a", b"still open");
    assert_eq!(next_json(&mut ws)["data"], "still open");
}

#[test]
fn v1_resume_with_since_on_the_url() {
    let s = Server::start(&["--history-messages", "2"]);
    let p: Vec<String> = (1..=4)
        .map(|i| s.publish("v1r", format!("m{i}").as_bytes()))
        .collect();
    let mut ws = connect(&s, &format!("/ws/v1r?since={}", p[2]), Some("ringcast.v1"));
    // The replay is queued by the subscription; the subscribed notice follows it today (the
    // order of the two is not part of the protocol, so either is accepted).
    let (x, y) = (next_json(&mut ws), next_json(&mut ws));
    let (sub, m) = if x["type"] == "subscribed" {
        (x, y)
    } else {
        (y, x)
    };
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["id"], p[3].as_str());
    assert_eq!(
        (m["id"].as_str(), m["data"].as_str()),
        (Some(p[3].as_str()), Some("m4"))
    );
    // Outside history: a reset envelope, and the connection stays open for new messages.
    let mut ws = connect(&s, &format!("/ws/v1r?since={}", p[0]), Some("ringcast.v1"));
    let (x, y) = (next_json(&mut ws), next_json(&mut ws));
    let reset = if x["type"] == "reset" { x } else { y };
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["id"], p[3].as_str());
    let id = s.publish("v1r", b"m5");
    assert_eq!(next_json(&mut ws)["id"], id.as_str());
}

#[test]
fn client_publish_off() {
    let s = Server::start(&["--ws-client-publish", "off"]);
    let mut ws = connect(&s, "/ws/ro", None);
    sync(&mut ws);
    // Server → client still works.
    s.publish("ro", b"news");
    assert_eq!(next_text(&mut ws), "news");
    ws.send(Message::text("may I?")).unwrap();
    assert_eq!(close_of(&mut ws).0, 1008);

    let mut ws = connect(&s, "/ws/ro", Some("ringcast.v1"));
    assert_eq!(next_json(&mut ws)["type"], "subscribed");
    ws.send(Message::text(r#"{"type":"publish","data":"x","ref":"p"}"#))
        .unwrap();
    let e = next_json(&mut ws);
    assert_eq!(
        (e["type"].as_str(), e["ref"].as_str()),
        (Some("error"), Some("p"))
    );
    // Subscribing is still allowed.
    ws.send(Message::text(r#"{"type":"subscribe","topic":"other"}"#))
        .unwrap();
    assert_eq!(next_json(&mut ws)["type"], "subscribed");
}

// ---------------------------------------------------------------------------------------------
// Heartbeat, slow clients, drain, gauges

#[test]
fn heartbeat_pings_then_1011_without_pongs_and_a_ponging_client_stays() {
    let s = Server::start(&["--heartbeat-secs", "1", "--pong-timeout-secs", "2"]);
    let mut t = raw_connect(&s, "/ws/hb");
    let mut good = connect(&s, "/ws/hb", None);
    good.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();

    let t0 = Instant::now();
    let mut pings = 0;
    let mut closed = None;
    // The silent client: frames until the close (the read timeout is 10 s, past every bound).
    while let Some((_, op, p)) = read_frame(&mut t) {
        match op {
            OP_PING => pings += 1,
            OP_CLOSE => {
                closed = Some(u16::from_be_bytes([p[0], p[1]]));
                break;
            }
            _ => {}
        }
        // The well-behaved client reads (tungstenite answers pings while reading).
        while let Ok(m) = good.read() {
            assert!(matches!(m, Message::Ping(_) | Message::Pong(_)), "{m:?}");
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "no close");
    }
    assert!(pings >= 1, "no ping before the close");
    assert_eq!(closed, Some(1011));
    assert_ends(&mut t);

    // Keep the good client answering for longer than a heartbeat plus the pong timeout.
    while t0.elapsed() < Duration::from_secs(5) {
        match good.read() {
            Ok(m) => assert!(matches!(m, Message::Ping(_) | Message::Pong(_)), "{m:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the ponging client was closed: {e}"),
        }
    }
    good.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    good.send(Message::text("alive")).unwrap();
    assert_eq!(next_text(&mut good), "alive");
}

#[test]
fn slow_client_is_disconnected() {
    let s = Server::start(&["--client-buffer-bytes", "65536"]);
    let metric = "ringcast_slow_client_disconnects_total";
    assert_eq!(s.metric(metric), 0);
    let mut t = raw_connect(&s, "/ws/slow");
    // The barrier: once the pong is back, the subscription is live.
    t.write_all(&masked(OP_PING, b"s")).unwrap();
    assert_eq!(read_frame(&mut t), Some((true, OP_PONG, b"s".to_vec())));
    // Never read again while messages pile up; the kernel's buffers fill, then ours.
    let body = vec![b'x'; 32 * 1024];
    let mut published = 0;
    while s.metric(metric) == 0 && published < 2000 {
        for _ in 0..20 {
            s.publish("slow", &body);
        }
        published += 20;
    }
    assert_eq!(s.metric(metric), 1, "after {published} messages of 32 KiB");
    // The close frame is written after whatever of the backlog the socket takes, if it fits.
    if let Some((code, _)) = raw_close_of(&mut t) {
        assert_eq!(code, 1008);
    }
    assert_eq!(
        s.wait_metric("ringcast_websockets_open", 0, Duration::from_secs(10)),
        0
    );
}

#[test]
fn sigterm_closes_websockets_with_1001_and_exits_0() {
    let mut s = Server::start(&["--drain-timeout-secs", "3"]);
    let mut a = connect(&s, "/ws/drain", None);
    let mut b = connect(&s, "/ws/drain", Some("ringcast.v1"));
    sync(&mut a);
    assert_eq!(next_json(&mut b)["type"], "subscribed");
    let mut t = raw_connect(&s, "/ws/drain");
    s.signal(libc::SIGTERM);
    assert_eq!(close_of(&mut a).0, 1001);
    assert_eq!(close_of(&mut b).0, 1001);
    assert_eq!(raw_close_of(&mut t).map(|c| c.0), Some(1001));
    // tungstenite answered the close while reading; let it finish.
    drop((a, b, t));
    let st = s
        .wait_exit(Duration::from_secs(10))
        .expect("exit after drain");
    assert!(st.success(), "{st:?}");
}

#[test]
fn connection_gauges_return_to_baseline() {
    let s = Server::start(&["--shards", "2"]);
    let conns = "ringcast_connections_open";
    // The /metrics request itself is one open connection.
    let base = s.metric(conns);
    let mut clients: Vec<Ws> = (0..6).map(|_| connect(&s, "/ws/gauge", None)).collect();
    let mut raws: Vec<TcpStream> = (0..3).map(|_| raw_connect(&s, "/ws/gauge")).collect();
    for ws in &mut clients {
        sync(ws);
    }
    assert_eq!(s.metric("ringcast_websockets_open"), 9);
    // Each /metrics request is a connection of its own: the previous one may still be closing
    // on its shard when the next is counted, so the gauge is awaited, not read once.
    let within = Duration::from_secs(10);
    assert_eq!(s.wait_metric(conns, base + 9, within), base + 9);
    // Half leave with a close handshake, the rest drop the TCP connection.
    for ws in clients.iter_mut().take(3) {
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    drop(clients);
    for t in &mut raws {
        t.write_all(&masked(OP_TEXT, b"bye")).unwrap();
    }
    drop(raws);
    assert_eq!(s.wait_metric("ringcast_websockets_open", 0, within), 0);
    assert_eq!(s.wait_metric(conns, base, within), base);
    assert_eq!(
        s.wait_metric("ringcast_client_buffered_bytes", 0, within),
        0
    );
}

/// Parked streams on both drivers: a client's burst larger than one read comes back whole and
/// in order (also when the topic's home is the other shard), an SSE stream on the same node
/// gets the same messages, and closing frees both.
#[test]
fn parked_streams_on_both_drivers_take_bursts_in_order_and_free_on_close() {
    for driver in ["uring", "epoll"] {
        let s = Server::start(&["--shards", "2", "--driver", driver]);
        for topic in ["burst-a", "burst-b", "burst-c"] {
            let mut t = raw_connect(&s, &format!("/ws/{topic}"));
            let mut sse = s.connect();
            write!(sse, "GET /sse/{topic} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            let head = read_response(&mut sse, true).expect("sse head");
            assert_eq!(head.status, 200);
            // Both are subscribed once a ping through the WebSocket is answered and the SSE
            // gauge counts the stream.
            t.write_all(&masked(OP_PING, b"p")).unwrap();
            assert_eq!(read_frame(&mut t), Some((true, OP_PONG, b"p".to_vec())));
            let t0 = Instant::now();
            while s.metric("ringcast_sse_streams_open") < 1 && t0.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            // 200 messages of 512 bytes in one write: about 100 KB, several reads' worth.
            let mut burst = Vec::new();
            for i in 0..200u32 {
                let mut p = format!("{i:05}-").into_bytes();
                p.resize(512, b'x');
                burst.extend_from_slice(&masked(OP_TEXT, &p));
            }
            t.write_all(&burst).unwrap();
            for i in 0..200u32 {
                let (fin, op, p) = read_frame(&mut t).expect("an echoed frame");
                assert!(fin && op == OP_TEXT, "{driver} {topic}: frame {i}: op {op}");
                assert_eq!(&p[..6], format!("{i:05}-").as_bytes(), "{driver} {topic}");
            }
            sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            while got.windows(11).filter(|w| w.starts_with(b"data: ")).count() < 200 {
                let n = sse.read(&mut buf).expect("sse data");
                assert!(n > 0, "{driver} {topic}: sse stream ended");
                got.extend_from_slice(&buf[..n]);
            }
            let last = b"data: 00199-";
            assert!(got.windows(last.len()).any(|w| w == last));
            t.write_all(&masked(OP_CLOSE, &close_payload(1000, "")))
                .unwrap();
            assert_eq!(raw_close_of(&mut t), Some((1000, String::new())));
            drop(sse);
        }
        let within = Duration::from_secs(10);
        assert_eq!(
            s.wait_metric("ringcast_websockets_open", 0, within),
            0,
            "{driver}"
        );
        assert_eq!(
            s.wait_metric("ringcast_sse_streams_open", 0, within),
            0,
            "{driver}"
        );
        assert_eq!(s.metric("ringcast_client_buffered_bytes"), 0, "{driver}");
    }
}
