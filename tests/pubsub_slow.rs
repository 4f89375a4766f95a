//! The slow-client policies end to end: disconnect (and resume without a gap), drop (skip,
//! then reset).

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pubsub::*;
use server::{pos, publish_on, read_response, Server};
use sse_parser::SseParser;

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
        // As in the drop test below: a write holds only a few 1 KiB messages.
        "--max-write-delay-ms",
        "0",
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
    // Each subscriber's bound is the buffer plus one write (`Out::admit`).
    assert!(
        max_buffered <= (65536 + 32768) * 2,
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
        // No rest between writer cycles: a write carries only what was published during one
        // cycle, a few of the 1 KiB messages.
        "--max-write-delay-ms",
        "0",
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
    // The bound is the buffer plus what the socket refused of the write that began the
    // backlog (`Out::admit`): far below the megabytes published at it.
    assert!(max_buffered <= 65536 + 32768, "buffered {max_buffered}");
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
