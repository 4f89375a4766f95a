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
    // A client reads the 10 on A, once A's pushes have brought them (a publish is answered
    // when Redis confirms it; its push reaches the node's replica a moment later).
    wait_current(a, topic, &first[9]);
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

#[test]
fn a_node_that_never_saw_the_messages_asks_redis() {
    let r = RedisServer::start();
    let a = node(&r, &[]);
    let topic = "late";
    let ids: Vec<String> = (1..=30)
        .map(|i| a.publish(topic, format!("m{i}").as_bytes()))
        .collect();
    let want: Vec<(String, String)> = ids[10..]
        .iter()
        .enumerate()
        .map(|(j, id)| (id.clone(), format!("m{}", j + 11)))
        .collect();
    // D starts after all 30: it holds none of them.
    let d = node(&r, &[]);
    let v = d.get(&format!("/poll/{topic}?since={}", ids[9])).json();
    assert_eq!(pubsub::msgs(&v), want, "poll on D: {v}");
    assert_eq!(v["next"], ids[29].as_str());
    // SSE on D from the same point: the 20, then live messages once each.
    let mut s = pubsub::sse_open(&d, topic, &format!("Last-Event-ID: {}\r\n", ids[9]));
    let mut p = SseParser::default();
    let evs = sse_read(&mut s, &mut p, 20, Duration::from_secs(10));
    let got: Vec<_> = evs.iter().map(|e| (e.id.clone(), e.data.clone())).collect();
    assert_eq!(got, want, "SSE on D");
    let live = a.publish(topic, b"m31");
    let evs = sse_read(&mut s, &mut p, 1, Duration::from_secs(10));
    assert_eq!(
        evs.iter()
            .map(|e| (e.id.as_str(), e.data.as_str()))
            .collect::<Vec<_>>(),
        [(live.as_str(), "m31")]
    );
    assert!(sse_read(&mut s, &mut p, 1, Duration::from_millis(300)).is_empty());
    // Older than Redis keeps (another epoch): the one case that is a reset.
    let v = d.get(&format!("/poll/{topic}?since=abc:3")).json();
    assert_eq!(v["reset"], true, "{v}");
}

#[test]
fn a_position_ahead_of_this_nodes_cursor_is_asked_of_redis_never_reset() {
    use ringcast::backplane::scripts::{self, Limits, Scripts};
    use ringcast::backplane::Keys;
    let r = RedisServer::start();
    let b = node(&r, &[]);
    let topic = "ahead";
    let first = b.publish(topic, b"m1");
    let (epoch, _) = server::pos(&first);
    wait_current(&b, topic, &first);
    // Two more appended in Redis whose pushes this node never gets (another channel): as if
    // another node handed out positions before this node's pushes arrived.
    let mut keys = Keys::new("rc", topic);
    keys.channel = "elsewhere".into();
    let mut con = redis::Client::open(r.url())
        .unwrap()
        .get_connection()
        .unwrap();
    let msgs: Vec<_> = ["m2", "m3"]
        .iter()
        .map(|m| ringcast::fanout::NewMsg {
            event: None,
            data: m.as_bytes().into(),
            binary: false,
        })
        .collect();
    let limits = Limits {
        history_messages: 1000,
        history_secs: 3600,
    };
    let info: String = scripts::server_info().query(&mut con).unwrap();
    let run_id = scripts::run_id(&info).unwrap().to_string();
    let v: redis::Value = scripts::append(&Scripts::default(), &keys, &limits, 1, &run_id, &msgs)
        .invoke(&mut con)
        .unwrap();
    let a = scripts::parse_appended(&v).unwrap();
    assert_eq!(
        (a.epoch, a.first, a.last),
        (u64::from_str_radix(&epoch, 16).unwrap(), 2, 3)
    );

    // A stream resuming at 2 on this node (whose cursor is 1): a replay of 3, not a reset.
    let mut st = pubsub::sse_open(&b, topic, &format!("Last-Event-ID: {epoch}:2\r\n"));
    let mut p = SseParser::default();
    let evs = sse_read(&mut st, &mut p, 1, Duration::from_secs(10));
    let got: Vec<_> = evs
        .iter()
        .map(|e| (e.event.as_str(), e.id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(got, [("message", format!("{epoch}:3").as_str(), "m3")]);
    // A poll at 2: the same.
    let v = b.get(&format!("/poll/{topic}?since={epoch}:2")).json();
    assert_eq!(
        pubsub::msgs(&v),
        [(format!("{epoch}:3"), "m3".to_string())],
        "{v}"
    );
    assert_ne!(v["reset"], true);
    // A client at 3: nothing missed, no reset.
    let v = b.get(&format!("/poll/{topic}?since={epoch}:3")).json();
    assert!(pubsub::msgs(&v).is_empty() && v["reset"] != true, "{v}");
    // The home caught up from Redis: 2 and 3 are now answered from this node too.
    wait_current(&b, topic, &format!("{epoch}:3"));
    let v = b.get(&format!("/poll/{topic}?since={first}")).json();
    assert_eq!(
        pubsub::msgs(&v),
        [
            (format!("{epoch}:2"), "m2".to_string()),
            (format!("{epoch}:3"), "m3".to_string())
        ]
    );
}

/// Waits until `node`'s log says "redis: connected" `n` times (bounded).
fn wait_connected(node: &Server, n: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    while node.log().matches("redis: connected").count() < n {
        assert!(Instant::now() < end, "no reconnect:\n{}", node.log());
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_redis_connections_come_back_and_nothing_is_lost() {
    let r = RedisServer::start();
    let (a, b) = (node(&r, &[]), node(&r, &[]));
    let topic = "kill";
    let mut s = pubsub::sse_open_now(&b, topic);
    let mut p = SseParser::default();
    let mut ids = vec![a.publish(topic, b"m1")];

    // The script connections (CLIENT KILL TYPE normal): publishes answer 503 for a moment at
    // most, then work again, numbered on.
    assert!(r
        .cmd(&["CLIENT", "KILL", "TYPE", "normal"])
        .starts_with(':'));
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = a.post(&format!("/pub/{topic}"), b"m2");
        if resp.status == 200 {
            ids.push(resp.json()["id"].as_str().unwrap().to_string());
            break;
        }
        assert_eq!(resp.status, 503, "{}", resp.text());
        assert!(resp.header("Retry-After").is_some());
        assert!(Instant::now() < end, "publishes never came back");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The pub/sub connections (CLIENT KILL TYPE pubsub: B's, subscribed to the topic; A has
    // no subscriber, so no channel): what is published while B's is away reaches B once it
    // has subscribed again and resynced, exactly once and in order.
    assert!(r
        .cmd(&["CLIENT", "KILL", "TYPE", "pubsub"])
        .starts_with(':'));
    ids.push(a.publish(topic, b"m3"));
    ids.push(a.publish(topic, b"m4"));
    wait_connected(&b, 2);
    ids.push(a.publish(topic, b"m5"));
    assert_streamed(&mut s, &mut p, &ids);
    let offsets: Vec<u64> = ids.iter().map(|id| server::pos(id).1).collect();
    assert_eq!(offsets, [1, 2, 3, 4, 5], "no number lost or reused");
}

#[test]
fn a_node_started_before_redis_serves_once_it_connects() {
    let port = redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let n = Server::start(&[
        "--redis",
        &url,
        "--shards",
        "2",
        "--publish-timeout-ms",
        "200",
    ]);
    assert_eq!(n.get("/healthz").status, 200, "serves without Redis");
    let resp = n.post("/pub/early", b"refused");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert!(resp.header("Retry-After").is_some());
    let _r = RedisServer::start_on(Some(port));
    assert!(
        n.wait_log("redis: connected", Duration::from_secs(10)),
        "{}",
        n.log()
    );
    let mut s = sse_open_now(&n, "early");
    let mut p = SseParser::default();
    let ids: Vec<String> = (1..=10)
        .map(|i| n.publish("early", format!("m{i}").as_bytes()))
        .collect();
    let offsets: Vec<u64> = ids.iter().map(|id| server::pos(id).1).collect();
    assert_eq!(
        offsets,
        (1..=10).collect::<Vec<_>>(),
        "numbered from 1: the refused publish was never sent later"
    );
    // Served like any node: every message once, in order.
    assert_streamed(&mut s, &mut p, &ids);
}

/// The stream `s` brings exactly `ids`, in order, the i-th carrying `m{i+1}` (bounded wait).
fn assert_streamed(s: &mut std::net::TcpStream, p: &mut SseParser, ids: &[String]) {
    let evs = sse_read(s, p, ids.len(), Duration::from_secs(10));
    let got: Vec<_> = evs.iter().map(|e| (e.id.clone(), e.data.clone())).collect();
    let want: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.clone(), format!("m{}", i + 1)))
        .collect();
    assert_eq!(got, want);
}

/// Redis's count of subscribers to `topic`'s channel: the nodes following it.
fn followers(r: &RedisServer, topic: &str) -> i64 {
    let mut con = redis::Client::open(r.url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to redis");
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("rc:{{{topic}}}"))
        .query(&mut con)
        .expect("PUBSUB NUMSUB");
    n
}

/// Polls `followers` until it is `want` (bounded); returns the last value.
fn wait_followers(r: &RedisServer, topic: &str, want: i64) -> i64 {
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        let n = followers(r, topic);
        if n == want || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_node_follows_only_the_topics_it_has_subscribers_for() {
    let r = RedisServer::start();
    let (a, b) = (node(&r, &[]), node(&r, &["--topic-idle-secs", "1"]));
    let topic = "followed";
    // Published before anyone subscribes: no node follows the topic.
    let ids: Vec<String> = (1..=5)
        .map(|i| a.publish(topic, format!("m{i}").as_bytes()))
        .collect();
    assert_eq!(followers(&r, topic), 0);
    // A subscriber on B resuming after m2: B starts following the topic (Redis's retained
    // history first), and the subscriber gets exactly m3..m5, then live messages.
    let mut s = pubsub::sse_open(&b, topic, &format!("Last-Event-ID: {}\r\n", ids[1]));
    let mut p = SseParser::default();
    let evs = sse_read(&mut s, &mut p, 3, Duration::from_secs(10));
    let got: Vec<_> = evs.iter().map(|e| (e.id.clone(), e.data.clone())).collect();
    let want: Vec<_> = (3..=5)
        .map(|i| (ids[i - 1].clone(), format!("m{i}")))
        .collect();
    assert_eq!(got, want);
    assert_eq!(wait_followers(&r, topic, 1), 1, "B follows");
    let live = a.publish(topic, b"m6");
    let evs = sse_read(&mut s, &mut p, 1, Duration::from_secs(10));
    assert_eq!(evs.first().map(|e| e.id.as_str()), Some(live.as_str()));
    // A (publishing only) followed nothing; an `earliest` poll there loads what Redis retains.
    let v = a.get(&format!("/poll/{topic}?since=earliest")).json();
    let all: Vec<String> = pubsub::msgs(&v).into_iter().map(|(id, _)| id).collect();
    assert_eq!(all.len(), 6, "{v}");
    assert_eq!(all[5], live);
    assert_eq!(followers(&r, topic), 2, "A follows it since its poll");
    // B's subscriber leaves: B stops following once the topic is idle (--topic-idle-secs 1).
    drop(s);
    assert_eq!(wait_followers(&r, topic, 1), 1, "only A is left");
    assert_eq!(b.metric("ringcast_topics"), 0, "B freed the topic");
}

#[test]
fn a_window_on_a_topic_nobody_follows_waits_for_redis_a_bounded_time() {
    let r = RedisServer::start();
    let a = node(&r, &["--publish-timeout-ms", "500"]);
    drop(r); // stopped by PID
    let t = Instant::now();
    let resp = a.get("/poll/unfollowed?since=abc:1");
    assert_eq!(resp.status, 503, "{}", resp.text());
    assert_eq!(resp.text(), "redis did not answer\n", "says why");
    assert!(resp.header("Retry-After").is_some());
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
