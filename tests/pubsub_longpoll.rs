//! Long polling end to end: answers on publish, 204 on timeout, freed on disconnect, pipelined
//! and keep-alive requests behind a long poll, chains answered from a shard's received run.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use pubsub::*;
use server::{publish_on, read_response, Server};

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
