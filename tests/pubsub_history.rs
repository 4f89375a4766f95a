//! Positions and history end to end: resets outside history, history bounded by bytes and
//! age, idle topics freed and back with a new epoch, SSE and polls seeing the same positions.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::net::TcpStream;
use std::time::Duration;

use pubsub::*;
use server::{pos, Server};
use sse_parser::SseParser;

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
