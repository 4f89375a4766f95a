//! Who may read and write, end to end: JWTs on every transport and carrier, refusals with their
//! statuses, publish grants, expiry of open streams and a v1 refresh, CORS for browser
//! publishers, and no token in any log line.

#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;
#[path = "support/wsraw.rs"]
mod wsraw;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use server::{read_response, run_to_exit, Response, Server};
use sse_parser::SseParser;
use wsraw::*;

fn key(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs(claims: serde_json::Value) -> String {
    let raw = std::fs::read(key("hmac.secret")).unwrap();
    let secret = raw.strip_suffix(b"\n").unwrap_or(&raw);
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret).unwrap(),
    )
    .unwrap()
}

fn rs(claims: serde_json::Value) -> String {
    let pem = std::fs::read(key("rsa.key")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

/// A reader of `chat/*` who may publish to `chat/42`, valid for `secs`.
fn reader(secs: u64) -> String {
    hs(json!({"exp": now() + secs, "sub": "user-42", "topics": ["chat/*"], "publish": ["chat/42"]}))
}

fn start(extra: &[&str]) -> Server {
    let secret = key("hmac.secret");
    let public = key("rsa.pub");
    let mut args = vec![
        "--shards",
        "2",
        "--jwt-secret-file",
        secret.to_str().unwrap(),
        "--jwt-public-key-file",
        public.to_str().unwrap(),
        "--public-topic",
        "public/*",
        "--jwt-cookie",
        "rc_token",
        "--allow-origin",
        "https://app.example",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn a_private_key_as_the_public_key_stops_the_start() {
    // Accepted, it would refuse every RS*/PS* token with a 401 and no word why.
    let k = key("rsa.key");
    let (status, err) = run_to_exit(
        &["--jwt-public-key-file", k.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert!(!status.expect("exits on its own").success(), "{err}");
    assert!(
        err.contains("is a private key") && err.contains("openssl pkey -in"),
        "{err}"
    );
}

fn get(s: &Server, path: &str, headers: &str) -> Response {
    s.request(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
}

fn post(s: &Server, path: &str, headers: &str, body: &str) -> Response {
    s.request(
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn every_transport_needs_a_covering_token_from_any_carrier() {
    let s = start(&[]);
    let t = reader(600);
    // Missing: 401 with a Bearer challenge, on each transport.
    for path in ["/poll/chat/1", "/poll/chat/1?wait=1", "/sse/chat/1"] {
        let r = get(&s, path, "");
        assert_eq!(r.status, 401, "{path}: {}", r.text());
        assert!(
            r.header("www-authenticate").unwrap().starts_with("Bearer"),
            "{path}"
        );
    }
    let mut ws = s.connect();
    ws.write_all(b"GET /ws/chat/1 HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let r = read_response(&mut ws, false).unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "ws");
    // Each carrier.
    let auth = format!("Authorization: Bearer {t}\r\n");
    let cookie = format!("Cookie: a=b; rc_token={t}\r\n");
    assert_eq!(get(&s, "/poll/chat/1", &auth).status, 200);
    assert_eq!(get(&s, &format!("/poll/chat/1?token={t}"), "").status, 200);
    assert_eq!(get(&s, "/poll/chat/1", &cookie).status, 200);
    // Valid but not covering: 403, on every transport.
    assert_eq!(get(&s, "/poll/news", &auth).status, 403);
    assert_eq!(get(&s, &format!("/sse/news?token={t}"), "").status, 403);
    assert_eq!(get(&s, "/poll/chatroom", &auth).status, 403);
    // A 403's log line names the client by `sub`, as the other auth lines do.
    assert!(s.wait_log("auth read news", Duration::from_secs(5)));
    let log = s.log();
    let line = log.lines().find(|l| l.contains("auth read news")).unwrap();
    assert!(
        line.contains("403") && line.contains("sub user-42"),
        "{line}"
    );
    // A public topic needs none.
    assert_eq!(get(&s, "/poll/public/x", "").status, 200);
    // SSE and WebSocket open with a token in the query (what browsers can send).
    let mut sse = s.connect();
    write!(sse, "GET /sse/chat/1?token={t} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut sse, true).unwrap().status, 200);
    upgrade(s.addr, &format!("/ws/chat/1?token={t}"));
}

#[test]
fn bad_tokens_are_401_and_oversized_ones_431() {
    // The request line's bound may not exceed the head's (the server refuses to start).
    let s = start(&[
        "--max-head-bytes",
        "4096",
        "--max-request-line-bytes",
        "4096",
    ]);
    let good = reader(600);
    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now() + 600, "topics": ["*"]}),
        &EncodingKey::from_secret(&std::fs::read(key("rsa.pub")).unwrap()).unwrap(),
    )
    .unwrap();
    let bad = [
        hs(json!({"exp": now() - 5, "topics": ["*"]})),
        hs(json!({"exp": now() + 600, "nbf": now() + 300, "topics": ["*"]})),
        hs(json!({"topics": ["*"]})),
        format!(
            "{}.{}.",
            b64(json!({"alg": "none"})),
            b64(json!({"exp": now() + 600, "topics": ["*"]}))
        ),
        forged,
        good[..good.len() - 5].to_string(),
        "not-a-token".to_string(),
        "a.b.c".to_string(),
        format!("{}.{}.x", b64(json!({"alg": "HS256"})), "bm90IGpzb24"),
    ];
    for t in &bad {
        let r = get(
            &s,
            "/poll/chat/1",
            &format!("Authorization: Bearer {t}\r\n"),
        );
        assert_eq!(r.status, 401, "{t}: {}", r.text());
    }
    // RS256 from the configured public key works beside the HMAC secret.
    let r = get(
        &s,
        "/poll/chat/1",
        &format!(
            "Authorization: Bearer {}\r\n",
            rs(json!({"exp": now() + 600, "topics": ["chat/*"]}))
        ),
    );
    assert_eq!(r.status, 200);
    // A token that does not fit the head bound is the head's problem: 431. (In the query it
    // would make the request line too long first: 414.)
    let long = "x".repeat(5000);
    assert_eq!(
        get(
            &s,
            "/poll/chat/1",
            &format!("Authorization: Bearer {long}\r\n")
        )
        .status,
        431
    );
    assert!(s.metric("ringcast_auth_refused_total") >= bad.len() as i64);
}

#[test]
fn publishing_needs_a_publish_grant_or_the_publish_token() {
    let s = start(&["--publish-token", "backend-secret"]);
    let t = reader(600);
    // With keys configured, loopback alone is not enough.
    let r = post(&s, "/pub/chat/42", "", "x");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        post(
            &s,
            "/pub/chat/42",
            &format!("Authorization: Bearer {t}\r\n"),
            "x"
        )
        .status,
        200
    );
    assert_eq!(
        post(
            &s,
            "/pub/chat/7",
            &format!("Authorization: Bearer {t}\r\n"),
            "x"
        )
        .status,
        403
    );
    assert_eq!(
        post(
            &s,
            "/pub/news",
            "Authorization: Bearer backend-secret\r\n",
            "x"
        )
        .status,
        200
    );
    let r = post(&s, "/pub/news", "Authorization: Bearer wrong\r\n", "x");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // A raw WebSocket may read chat/7 but not publish there: close 1008.
    let mut w = upgrade(s.addr, &format!("/ws/chat/7?token={t}"));
    let mut f = Vec::new();
    client_frame(&mut f, true, OP_TEXT, b"hello", [1, 2, 3, 4]);
    w.write_all(&f).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let close = loop {
        match read_frame(&mut w) {
            Some((_, OP_CLOSE, p)) => break close_code(&p).0,
            Some(_) => {}
            None => panic!("no close"),
        }
    };
    assert_eq!(close, 1008);
}

#[test]
fn page_publishers_get_a_cors_preflight() {
    let s = start(&[]);
    let pre = |origin: &str| {
        s.request(format!("OPTIONS /pub/chat/42 HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\nConnection: close\r\n\r\n").as_bytes())
    };
    let ok = pre("https://app.example");
    assert_eq!(ok.status, 204);
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(ok.header("access-control-allow-methods"), Some("POST"));
    let h = ok
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        h.contains("authorization") && h.contains("content-type"),
        "{h}"
    );
    assert_eq!(pre("https://evil.example").status, 403);
}

#[test]
fn open_streams_end_when_their_token_expires() {
    let s = start(&[]);
    let short = reader(2);
    // SSE: one `event: expired` with data, then the end of the stream.
    let mut sse = s.connect();
    write!(
        sse,
        "GET /sse/chat/1?token={short} HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    assert_eq!(read_response(&mut sse, true).unwrap().status, 200);
    let t0 = Instant::now();
    let mut p = SseParser::new();
    let events = sse_parser::read_events(&mut sse, &mut p, 1, Duration::from_secs(10));
    assert_eq!(events.len(), 1, "one event at expiry");
    assert_eq!(events[0].event, "expired");
    assert!(!events[0].data.is_empty());
    // The server ends the stream: EOF, not the read timeout of a stream kept open.
    let mut rest = Vec::new();
    sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let end = sse.read_to_end(&mut rest);
    assert!(
        end.is_ok(),
        "the stream is still open after `event: expired` ({end:?}), then {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        !String::from_utf8_lossy(&rest).contains("data:"),
        "nothing after the expiry: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(t0.elapsed() < Duration::from_secs(8));

    // Raw WebSocket: close 4001 "token expired".
    let mut w = upgrade(s.addr, &format!("/ws/chat/1?token={}", reader(2)));
    w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (code, reason) = loop {
        match read_frame(&mut w) {
            Some((_, OP_CLOSE, p)) => break close_code(&p),
            Some(_) => {}
            None => panic!("no close"),
        }
    };
    assert_eq!((code, reason.as_str()), (4001, "token expired"));
}

/// A `ringcast.v1` text frame's JSON, skipping pings.
fn next_json(t: &mut TcpStream) -> serde_json::Value {
    loop {
        match read_frame(t) {
            Some((_, OP_TEXT, p)) => return serde_json::from_slice(&p).unwrap(),
            Some((_, OP_CLOSE, p)) => panic!("closed: {:?}", close_code(&p)),
            Some(_) => {}
            None => panic!("connection ended"),
        }
    }
}

fn upgrade_v1(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut t = TcpStream::connect(addr).unwrap();
    write!(t, "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ringcast.v1\r\n\r\n").unwrap();
    let r = read_response(&mut t, true).unwrap();
    assert_eq!(r.status, 101);
    t
}

#[test]
fn a_v1_client_is_warned_and_may_refresh() {
    let s = start(&["--publish-token", "backend-secret"]);
    // Expires in 3 s: inside the 30 s warning window at once.
    let mut t = upgrade_v1(s.addr, &format!("/ws/chat/1?token={}", reader(3)));
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(next_json(&mut t)["type"], "subscribed");
    assert_eq!(next_json(&mut t)["type"], "expired");
    // A token that does not cover the connection's topics is refused; a covering one extends.
    let mut f = Vec::new();
    let narrow = hs(json!({"exp": now() + 600, "topics": ["news"]}));
    client_frame(
        &mut f,
        true,
        OP_TEXT,
        json!({"type": "refresh", "token": narrow, "ref": "r1"})
            .to_string()
            .as_bytes(),
        [9, 9, 9, 9],
    );
    t.write_all(&f).unwrap();
    let e = next_json(&mut t);
    assert_eq!(
        (e["type"].as_str(), e["ref"].as_str()),
        (Some("error"), Some("r1"))
    );
    f.clear();
    client_frame(
        &mut f,
        true,
        OP_TEXT,
        json!({"type": "refresh", "token": reader(600), "ref": "r2"})
            .to_string()
            .as_bytes(),
        [9, 9, 9, 9],
    );
    t.write_all(&f).unwrap();
    let a = next_json(&mut t);
    assert_eq!(
        (a["type"].as_str(), a["ref"].as_str()),
        (Some("refreshed"), Some("r2"))
    );
    // Past the first token's exp the connection still delivers.
    std::thread::sleep(Duration::from_secs(4));
    // With keys configured the backend publishes with its token (loopback is not enough).
    let r = post(
        &s,
        "/pub/chat/1",
        "Authorization: Bearer backend-secret\r\n",
        "after",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let m = next_json(&mut t);
    assert_eq!(
        (m["type"].as_str(), m["data"].as_str()),
        (Some("message"), Some("after"))
    );

    // Without a refresh: closed with 4001 at exp.
    let mut u = upgrade_v1(s.addr, &format!("/ws/chat/1?token={}", reader(2)));
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let code = loop {
        match read_frame(&mut u) {
            Some((_, OP_CLOSE, p)) => break close_code(&p).0,
            Some(_) => {}
            None => panic!("no close"),
        }
    };
    assert_eq!(code, 4001);
}

#[test]
fn no_token_reaches_the_log() {
    no_token_reaches_the_log_in("text");
    no_token_reaches_the_log_in("json");
}

fn no_token_reaches_the_log_in(format: &str) {
    let s = start(&[
        "--publish-token",
        "backend-secret-token-value",
        "--log-format",
        format,
        "--admin-token",
        "admin-secret-token-value",
        "--admin-loopback",
        "off",
    ]);
    let ok = reader(600);
    let expired = hs(json!({"exp": now() - 5, "topics": ["*"], "sub": "old"}));
    let uncovered = hs(json!({"exp": now() + 600, "topics": ["news"]}));
    for t in [&ok, &expired, &uncovered] {
        get(&s, &format!("/poll/chat/1?token={t}"), "");
        get(
            &s,
            "/poll/chat/1",
            &format!("Authorization: Bearer {t}\r\n"),
        );
        get(&s, "/poll/chat/1", &format!("Cookie: rc_token={t}\r\n"));
        get(&s, &format!("/sse/nope%ZZ?token={t}"), "");
        let mut w = s.connect();
        write!(w, "GET /ws/chat/1?token={t} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
        let _ = read_response(&mut w, false);
    }
    post(
        &s,
        "/pub/x",
        "Authorization: Bearer backend-secret-token-value\r\n",
        "m",
    );
    post(
        &s,
        "/pub/x",
        "Authorization: Bearer wrong-token-value\r\n",
        "m",
    );
    for t in ["admin-secret-token-value", "wrong-token-value"] {
        get(&s, &format!("/status?token={t}"), "");
        get(&s, "/stats", &format!("Authorization: Bearer {t}\r\n"));
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = s.log();
    let debug = if format == "json" {
        "\"level\":\"debug\""
    } else {
        "DEBUG"
    };
    assert!(log.contains(debug), "the server logged at debug level");
    assert!(log.contains("admin ("), "the admin refusals were logged");
    for secret in [
        ok.as_str(),
        expired.as_str(),
        uncovered.as_str(),
        "backend-secret-token-value",
        "wrong-token-value",
        "admin-secret-token-value",
    ] {
        // Any third of a token would do to replay or brute-force it; none may appear.
        let piece = &secret[secret.len() / 3..secret.len() / 3 * 2];
        assert!(!log.contains(piece), "a token piece is in the log:\n{log}");
    }
}

#[test]
fn v1_subscribes_and_page_publishes_are_checked_too() {
    let s = start(&[]);
    // A v1 subscribe to a topic the token does not cover: an error envelope; a covered one and
    // a public one are subscribed.
    let mut t = upgrade_v1(s.addr, &format!("/ws/chat/1?token={}", reader(600)));
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(next_json(&mut t)["type"], "subscribed");
    for (topic, want) in [
        ("news", "error"),
        ("chat/2", "subscribed"),
        ("public/x", "subscribed"),
    ] {
        let mut f = Vec::new();
        client_frame(
            &mut f,
            true,
            OP_TEXT,
            json!({"type": "subscribe", "topic": topic, "ref": topic})
                .to_string()
                .as_bytes(),
            [1, 2, 3, 4],
        );
        t.write_all(&f).unwrap();
        let e = next_json(&mut t);
        assert_eq!(e["type"], want, "{topic}: {e}");
    }
    // A browser's POST from an allowed origin can read its answer (the position).
    let r = post(
        &s,
        "/pub/chat/42",
        &format!(
            "Origin: https://app.example\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\n",
            reader(600)
        ),
        "{\"a\":1}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = post(
        &s,
        "/pub/chat/42",
        &format!(
            "Origin: https://evil.example\r\nAuthorization: Bearer {}\r\n",
            reader(600)
        ),
        "x",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn a_v1_publish_needs_a_publish_grant_for_its_topic() {
    let s = start(&[]);
    let send = |t: &mut TcpStream, topic: &str, r: &str| {
        let mut f = Vec::new();
        client_frame(
            &mut f,
            true,
            OP_TEXT,
            json!({"type": "publish", "topic": topic, "data": "x", "ref": r})
                .to_string()
                .as_bytes(),
            [5, 6, 7, 8],
        );
        t.write_all(&f).unwrap();
        let a = next_json(t);
        (a["type"].as_str().unwrap().to_string(), a["ref"].clone())
    };
    // Reads chat/*, has no `publish` claim at all.
    let reads_only = hs(json!({"exp": now() + 600, "sub": "user-7", "topics": ["chat/*"]}));
    let mut t = upgrade_v1(s.addr, &format!("/ws/chat/1?token={reads_only}"));
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(next_json(&mut t)["type"], "subscribed");
    assert_eq!(send(&mut t, "chat/1", "p1"), ("error".into(), json!("p1")));
    // `publish: ["chat/42"]`: chat/1, the topic it reads, is still refused; chat/42 is acked.
    let mut u = upgrade_v1(s.addr, &format!("/ws/chat/1?token={}", reader(600)));
    u.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(next_json(&mut u)["type"], "subscribed");
    assert_eq!(send(&mut u, "chat/1", "p2"), ("error".into(), json!("p2")));
    assert_eq!(send(&mut u, "chat/42", "p3"), ("ack".into(), json!("p3")));
    // The refused publishes published nothing.
    let auth = format!("Authorization: Bearer {}\r\n", reader(600));
    let count = |topic: &str| {
        let r = get(&s, &format!("/poll/{topic}?since=earliest"), &auth);
        assert_eq!(r.status, 200, "{topic}: {}", r.text());
        r.json()["messages"].as_array().unwrap().len()
    };
    assert_eq!((count("chat/1"), count("chat/42")), (0, 1));
}

#[test]
fn a_multi_topic_request_verifies_its_token_once() {
    // One signature check per request, not one per topic (up to --max-topics-per-stream): with
    // an RSA key, bad tokens naming 64 topics each would otherwise burn the shard's CPU. Each
    // check writes one `auth read` debug line, so a request writes one.
    let s = start(&[]);
    let t = reader(600);
    let q = "topic=chat/once-a&topic=chat/once-b&topic=public/once-c";
    assert_eq!(get(&s, &format!("/poll?{q}&token={t}"), "").status, 200);
    assert_eq!(sse_status(&s, &format!("/sse?{q}&token={t}"), ""), 200);
    assert!(s.wait_log("/sse?topic=chat/once-a", Duration::from_secs(5)));
    std::thread::sleep(Duration::from_millis(200));
    let log = s.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("auth read") && l.contains("topic=chat/once-a"))
        .collect();
    assert_eq!(lines.len(), 2, "one per request: {lines:#?}");
    // What each topic needs is as before: one uncovered topic refuses the request, a bad
    // token is refused even where every topic is public, public topics need no token.
    let status = |path: &str| get(&s, path, "").status;
    assert_eq!(
        status(&format!("/poll?topic=chat/1&topic=news&token={t}")),
        403
    );
    assert_eq!(
        status("/poll?topic=public/a&topic=public/b&token=x.y.z"),
        401
    );
    assert_eq!(status("/poll?topic=public/a&topic=public/b"), 200);
    assert_eq!(status("/poll?topic=public/a&topic=chat/1"), 401);
}

// ---- the token vectors on the real server (issue 15, admission half) ---------------
// `src/auth/tests.rs` checks `Auth::verify` alone; these check that what reaches the routes
// gets the same answers, through each carrier.

/// A token for `alg`, signed with the matching test key from `tests/keys/`.
fn signed(alg: Algorithm, claims: serde_json::Value) -> String {
    let read = |n: &str| std::fs::read(key(n)).unwrap();
    let k = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let raw = read("hmac.secret");
            EncodingKey::from_secret(raw.strip_suffix(b"\n").unwrap_or(&raw)).unwrap()
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec256.key")).unwrap(),
        Algorithm::ES384 => EncodingKey::from_ec_pem(&read("ec384.key")).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&read("ed25519.key")).unwrap(),
        _ => EncodingKey::from_rsa_pem(&read("rsa.key")).unwrap(),
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, &k).unwrap()
}

/// Opens an SSE stream with `headers` and returns its status.
fn sse_status(s: &Server, path: &str, headers: &str) -> u16 {
    let mut c = s.connect();
    write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
    read_response(&mut c, true).unwrap().status
}

/// Asks for a WebSocket upgrade with `headers` and returns the answer's status (101 or a refusal).
fn ws_status(s: &Server, path: &str, headers: &str) -> u16 {
    let mut c = s.connect();
    write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n").unwrap();
    read_response(&mut c, true).unwrap().status
}

#[test]
fn every_algorithm_reads_through_every_carrier_on_the_real_server() {
    let keys: Vec<PathBuf> = ["rsa.pub", "ec256.pub", "ec384.pub", "ed25519.pub"]
        .iter()
        .map(|k| key(k))
        .collect();
    let mut extra = Vec::new();
    for k in &keys {
        extra.extend(["--jwt-public-key-file", k.to_str().unwrap()]);
    }
    let s = start(&extra);
    let algs = [
        Algorithm::HS256,
        Algorithm::HS384,
        Algorithm::HS512,
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    for alg in algs {
        let t = signed(alg, json!({"exp": now() + 600, "topics": ["chat/*"]}));
        let (bearer, cookie) = (
            format!("Authorization: Bearer {t}\r\n"),
            format!("Cookie: rc_token={t}\r\n"),
        );
        let query = format!("?token={t}");
        // Every carrier on every transport: header, query, cookie × poll, SSE, WebSocket.
        for (path, headers) in [
            ("/poll/chat/1".to_string(), bearer.as_str()),
            (format!("/poll/chat/1{query}"), ""),
            ("/poll/chat/1".to_string(), cookie.as_str()),
        ] {
            assert_eq!(
                get(&s, &path, headers).status,
                200,
                "{alg:?} poll {headers}"
            );
        }
        for (path, headers) in [
            ("/sse/chat/1".to_string(), bearer.as_str()),
            (format!("/sse/chat/1{query}"), ""),
            ("/sse/chat/1".to_string(), cookie.as_str()),
        ] {
            assert_eq!(sse_status(&s, &path, headers), 200, "{alg:?} sse");
            assert_eq!(
                ws_status(&s, &path.replace("/sse/", "/ws/"), headers),
                101,
                "{alg:?} ws"
            );
        }
        // `chat/*` covers chat/1, not the longer sibling `chatroom`.
        assert_eq!(get(&s, "/poll/chatroom", &bearer).status, 403, "{alg:?}");
        assert_eq!(sse_status(&s, "/sse/chatroom", &cookie), 403, "{alg:?}");
    }
}

#[test]
fn audience_and_issuer_are_checked_only_when_configured() {
    let s = start(&[
        "--jwt-audience",
        "push",
        "--jwt-issuer",
        "https://auth.example",
    ]);
    let tok = |aud: &str, iss: &str| {
        hs(json!({"exp": now() + 600, "topics": ["chat/*"], "aud": aud, "iss": iss}))
    };
    let status = |t: String| get(&s, &format!("/poll/chat/1?token={t}"), "").status;
    assert_eq!(status(tok("push", "https://auth.example")), 200);
    assert_eq!(status(tok("other", "https://auth.example")), 401);
    assert_eq!(status(tok("push", "https://evil.example")), 401);
    // A WebSocket is refused before its 101 the same way.
    let t = tok("other", "https://auth.example");
    assert_eq!(ws_status(&s, &format!("/ws/chat/1?token={t}"), ""), 401);
    // A node told neither accepts any aud and iss.
    let plain = start(&[]);
    let t = tok("anyone", "anywhere");
    assert_eq!(
        get(&plain, &format!("/poll/chat/1?token={t}"), "").status,
        200
    );
}

#[test]
fn malformed_tokens_are_401_in_every_carrier() {
    let s = start(&[]);
    let good = reader(600);
    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let bad = [
        // Truncated.
        good[..good.len() / 2].to_string(),
        // Bad base64 (characters outside the URL-safe alphabet, in each part).
        "!!!.$$$.***".to_string(),
        format!(
            "{}.{}.@@",
            b64(json!({"alg": "HS256"})),
            b64(json!({"exp": 1}))
        ),
        // Bad JSON: valid base64 of text that is not a JSON object.
        format!("{}.{}.x", b64(json!({"alg": "HS256"})), "bm90IGpzb24"),
        format!("{}.{}.x", "e30", "W10"),
        // alg none, unsigned.
        format!(
            "{}.{}.",
            b64(json!({"alg": "none"})),
            b64(json!({"exp": now() + 600, "topics": ["*"]}))
        ),
    ];
    for t in &bad {
        assert_eq!(
            get(
                &s,
                "/poll/chat/1",
                &format!("Authorization: Bearer {t}\r\n")
            )
            .status,
            401,
            "header {t}"
        );
        assert_eq!(
            get(&s, &format!("/poll/chat/1?token={t}"), "").status,
            401,
            "query {t}"
        );
        assert_eq!(
            sse_status(&s, "/sse/chat/1", &format!("Cookie: rc_token={t}\r\n")),
            401,
            "cookie {t}"
        );
    }
    // The node is unharmed: the good token still reads.
    assert_eq!(
        get(&s, &format!("/poll/chat/1?token={good}"), "").status,
        200
    );
}
