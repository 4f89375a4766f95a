//! Several ringcast nodes, each its own process, sharing one real redis-server (`--redis`,
//! issue 14): positions come from Redis and every node delivers every publish; a Redis that
//! is away makes a publish answer 503 with Retry-After, never a reset.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/redis.rs"]
mod redis_server;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::io::Write;
use std::time::{Duration, Instant};

use pubsub::{sse_open_now, sse_read};
use redis_server::RedisServer;
use server::{read_response, Server};
use sse_parser::SseParser;

/// A node on `redis`, once its bridge is connected and subscribed.
fn node(redis: &RedisServer, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--shards", "2"];
    args.extend_from_slice(extra);
    let s = Server::start(&args);
    assert!(
        s.wait_log("redis: connected", Duration::from_secs(10)),
        "bridge never connected:\n{}",
        s.log()
    );
    s
}

#[test]
fn publish_on_a_reaches_subscribers_on_a_b_and_c_with_as_position() {
    let r = RedisServer::start();
    let nodes = [node(&r, &[]), node(&r, &[]), node(&r, &[])];
    let topic = "news";
    let mut streams: Vec<_> = nodes.iter().map(|n| sse_open_now(n, topic)).collect();
    let mut parsers: Vec<_> = nodes.iter().map(|_| SseParser::default()).collect();

    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(nodes[0].publish(topic, format!("m{i}").as_bytes()));
    }
    let (epoch, first) = server::pos(&ids[0]);
    assert_eq!(first, 1, "Redis numbers the topic from 1: {ids:?}");
    assert_eq!(ids[2], format!("{epoch}:3"));
    for (i, (s, p)) in streams.iter_mut().zip(parsers.iter_mut()).enumerate() {
        let evs = sse_read(s, p, 3, Duration::from_secs(10));
        let got: Vec<_> = evs.iter().map(|e| (e.id.clone(), e.data.clone())).collect();
        let want: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(j, id)| (id.clone(), format!("m{}", j + 1)))
            .collect();
        assert_eq!(got, want, "node {i}");
    }
    // A publish on B continues the same numbering.
    assert_eq!(nodes[1].publish(topic, b"m4"), format!("{epoch}:4"));
}

#[test]
fn a_publish_while_redis_is_away_is_503_with_retry_after() {
    let r = RedisServer::start();
    let n = node(&r, &["--publish-timeout-ms", "300"]);
    let id = n.publish("t", b"before");
    assert_eq!(server::pos(&id).1, 1);
    drop(r); // stopped by PID
    let t = Instant::now();
    let mut s = n.connect();
    write!(
        s,
        "POST /pub/t HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nafter"
    )
    .unwrap();
    let resp = read_response(&mut s, false).expect("an answer, not a reset");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("Retry-After").is_some());
    // Within --publish-timeout-ms (300 ms) and some slack, never hanging.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The connection is still usable: keep-alive after a 503.
    write!(s, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s, false).unwrap().status, 200);
}

/// Polls `node` until its position of `topic` is `want` (its pushes have arrived), bounded.
fn wait_current(node: &Server, topic: &str, want: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let cur = node.current(topic);
        if cur == want {
            return;
        }
        assert!(Instant::now() < end, "node stuck at {cur}, want {want}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn resume_on_any_node_with_any_transport_gets_exactly_the_missed() {
    let r = RedisServer::start();
    let nodes = [node(&r, &[]), node(&r, &[]), node(&r, &[])];
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let topic = "feed";
    let first: Vec<String> = (1..=10)
        .map(|i| a.publish(topic, format!("m{i}").as_bytes()))
        .collect();
    let (epoch, _) = server::pos(&first[0]);
    // A client reads the 10 on A.
    let v = a.get(&format!("/poll/{topic}?since=0:0")).json();
    let got = pubsub::msgs(&v);
    assert_eq!(got.len(), 10, "{v}");
    let seen = v["next"].as_str().unwrap().to_string();
    assert_eq!(seen, format!("{epoch}:10"));
    // 20 more, published on every node in turn.
    let more: Vec<String> = (11..=30)
        .map(|i| nodes[i % 3].publish(topic, format!("m{i}").as_bytes()))
        .collect();
    let want: Vec<(String, String)> = more
        .iter()
        .enumerate()
        .map(|(j, id)| (id.clone(), format!("m{}", j + 11)))
        .collect();
    assert_eq!(more[19], format!("{epoch}:30"));
    for n in &nodes {
        wait_current(n, topic, &more[19]);
    }

    // B, over SSE with Last-Event-ID.
    let mut s = pubsub::sse_open(b, topic, &format!("Last-Event-ID: {seen}\r\n"));
    let mut p = SseParser::default();
    let evs = sse_read(&mut s, &mut p, 20, Duration::from_secs(10));
    let got: Vec<_> = evs.iter().map(|e| (e.id.clone(), e.data.clone())).collect();
    assert_eq!(got, want, "SSE on B");
    assert!(
        sse_read(&mut s, &mut p, 1, Duration::from_millis(300)).is_empty(),
        "nothing more on B"
    );

    // C, over a poll with `since`.
    let v = c.get(&format!("/poll/{topic}?since={seen}")).json();
    assert_eq!(pubsub::msgs(&v), want, "poll on C: {v}");
    assert_eq!(v["next"], more[19].as_str());

    // A, over a ringcast.v1 WebSocket with `since`.
    let mut req = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/ws/{topic}?since={seen}",
        a.addr
    ))
    .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "ringcast.v1".parse().unwrap());
    let (mut ws, _) = tungstenite::client::client(req, a.connect()).expect("handshake");
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(10);
    while got.len() < 20 && Instant::now() < end {
        let m = ws.read().expect("a v1 envelope");
        let tungstenite::Message::Text(t) = m else {
            continue;
        };
        let e: serde_json::Value = serde_json::from_str(&t).unwrap();
        match e["type"].as_str() {
            Some("message") => got.push((
                e["id"].as_str().unwrap().to_string(),
                e["data"].as_str().unwrap().to_string(),
            )),
            Some("subscribed") => {}
            other => panic!("unexpected envelope {other:?}: {e}"),
        }
    }
    assert_eq!(got, want, "WebSocket v1 on A");
}
