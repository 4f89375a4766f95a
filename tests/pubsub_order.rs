//! One order per topic end to end: publishers on both shards, long-poll chains under a bursty
//! stream, full inboxes as backpressure rather than loss.

#[path = "support/pubsub.rs"]
mod pubsub;
#[path = "support/server.rs"]
mod server;
#[path = "support/sse_parser.rs"]
mod sse_parser;

use std::collections::HashSet;
use std::net::TcpStream;
use std::time::Duration;

use pubsub::*;
use server::{pos, publish_on, Server};
use sse_parser::SseParser;

#[test]
fn one_order_per_topic_with_publishers_on_both_shards() {
    const THREADS: usize = 4;
    const PER: usize = 250;
    const N: usize = THREADS * PER;
    let srv = Server::start(&["--shards", "2", "--history-messages", "2000"]);
    let start = current(&srv, "order");
    let (epoch, _) = pos(&start);
    let mut sse = sse_open(&srv, "order", &format!("Last-Event-ID: {start}\r\n"));
    assert_eq!(
        srv.wait_metric("ringcast_sse_streams_open", 1, Duration::from_secs(5)),
        1
    );

    // Extra topics so homes land on both shards; each gets 30 messages from every thread.
    let extra: Vec<String> = (0..6).map(|i| format!("multi-{i}")).collect();
    let extra_start: Vec<String> = extra.iter().map(|t| current(&srv, t)).collect();

    let (sse_events, chain, ids) = std::thread::scope(|sc| {
        let chain =
            sc.spawn(|| long_poll_chain(&srv, "order", &start, 37, N, Duration::from_secs(60)));
        let sse_reader = sc.spawn(move || {
            let mut p = SseParser::new();
            sse_read(&mut sse, &mut p, N, Duration::from_secs(60))
        });
        let pubs: Vec<_> = (0..THREADS)
            .map(|t| {
                let srv = &srv;
                let extra = &extra;
                sc.spawn(move || {
                    let mut s = srv.connect();
                    let mut ids = Vec::new();
                    for i in 0..PER {
                        ids.push(publish_on(&mut s, "order", format!("{t}-{i}").as_bytes()));
                        if i % 25 == 0 {
                            for x in extra {
                                publish_on(&mut s, x, format!("{t}-{i}").as_bytes());
                            }
                        }
                    }
                    ids
                })
            })
            .collect();
        let ids: Vec<String> = pubs.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (sse_reader.join().unwrap(), chain.join().unwrap(), ids)
    });

    // The publishers' answers: one epoch, offsets 1..=N, each once.
    let mut offs: Vec<u64> = ids
        .iter()
        .map(|id| {
            let (e, o) = pos(id);
            assert_eq!(e, epoch);
            o
        })
        .collect();
    offs.sort_unstable();
    assert_eq!(offs, (1..=N as u64).collect::<Vec<_>>());

    let check = |what: &str, got: Vec<(String, String)>| {
        assert_eq!(got.len(), N, "{what}: got {} of {N}", got.len());
        let mut seen = HashSet::new();
        let mut last_per_thread = [None::<usize>; THREADS];
        for (i, (id, data)) in got.iter().enumerate() {
            assert_eq!(
                pos(id),
                (epoch.clone(), i as u64 + 1),
                "{what}: contiguous offsets"
            );
            assert!(seen.insert(data.clone()), "{what}: {data} twice");
            // Each publisher's messages keep its own order.
            let (t, n) = data.split_once('-').unwrap();
            let (t, n): (usize, usize) = (t.parse().unwrap(), n.parse().unwrap());
            assert!(
                last_per_thread[t].is_none_or(|l| l < n),
                "{what}: thread {t} reordered"
            );
            last_per_thread[t] = Some(n);
        }
    };
    check(
        "sse",
        sse_events
            .into_iter()
            .map(|e| {
                assert_eq!(e.event, "message");
                (e.id, e.data)
            })
            .collect(),
    );
    check("long-poll chain", chain);

    // The extra topics: each contiguous and complete.
    for (t, s) in extra.iter().zip(&extra_start) {
        let got = long_poll_chain(&srv, t, s, 100, THREADS * 10, Duration::from_secs(10));
        let (e, _) = pos(s);
        let offs: Vec<(String, u64)> = got.iter().map(|m| pos(&m.0)).collect();
        let want: Vec<(String, u64)> = (1..=(THREADS * 10) as u64)
            .map(|o| (e.clone(), o))
            .collect();
        assert_eq!(offs, want, "topic {t}");
    }
    let per_shard = srv.get("/metrics").text();
    let homes: Vec<&str> = per_shard
        .lines()
        .filter(|l| l.starts_with("ringcast_topics{"))
        .collect();
    assert_eq!(homes.len(), 2);
    assert!(
        homes.iter().all(|l| !l.ends_with(" 0")),
        "topics should have homes on both shards: {homes:?}"
    );
}

#[test]
fn long_poll_chains_see_every_message_once_under_a_bursty_stream() {
    const N: usize = 600;
    let srv = Server::start(&["--shards", "2", "--history-messages", "1000"]);
    let start = current(&srv, "chain");
    let seed = 0x5eed_1234_u64;
    let (published, chains) = std::thread::scope(|sc| {
        let chains: Vec<_> = [1usize, 3, 17, 100]
            .into_iter()
            .map(|limit| {
                let srv = &srv;
                let start = &start;
                sc.spawn(move || {
                    long_poll_chain(srv, "chain", start, limit, N, Duration::from_secs(60))
                })
            })
            .collect();
        let publisher = sc.spawn(|| {
            let mut rng = Rng(seed);
            let mut s = srv.connect();
            let mut out = Vec::new();
            while out.len() < N {
                let burst = 1 + rng.below(25) as usize;
                for _ in 0..burst.min(N - out.len()) {
                    let data = format!("m{}-{}", out.len(), rng.below(1_000_000));
                    let id = publish_on(&mut s, "chain", data.as_bytes());
                    out.push((id, data));
                }
                std::thread::sleep(Duration::from_millis(rng.below(40)));
            }
            out
        });
        let published = publisher.join().unwrap();
        let chains: Vec<_> = chains.into_iter().map(|h| h.join().unwrap()).collect();
        (published, chains)
    });
    for (i, got) in chains.iter().enumerate() {
        assert_eq!(got.len(), published.len(), "chain {i} (seed {seed:#x})");
        assert_eq!(
            got, &published,
            "chain {i}: no gap, no duplicate, in order (seed {seed:#x})"
        );
    }
}

#[test]
fn full_inboxes_are_backpressure_not_loss() {
    // Inboxes of 2 commands: cross-shard publishes, replies and deliveries overflow them at
    // once. The overflow must wait (in order) and be retried — never dropped — so subscribers
    // on both shards still see every message, in order.
    const TOPICS: usize = 4;
    const PER_TOPIC: usize = 150;
    // Publishes wait while fanout is behind; a generous bound keeps a busy test machine from
    // turning that wait into 503s.
    let srv = Server::start(&[
        "--shards",
        "2",
        "--inbox-capacity",
        "2",
        "--publish-timeout-ms",
        "30000",
    ]);
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("tight-{i}")).collect();
    let starts: Vec<String> = topics.iter().map(|t| current(&srv, t)).collect();
    // Two subscribers per topic, so connections (spread by the kernel) land on both shards.
    let mut streams: Vec<(usize, TcpStream)> = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        for _ in 0..2 {
            streams.push((
                i,
                sse_open(&srv, t, &format!("Last-Event-ID: {}\r\n", starts[i])),
            ));
        }
    }
    assert_eq!(
        srv.wait_metric(
            "ringcast_sse_streams_open",
            (2 * TOPICS) as i64,
            Duration::from_secs(10)
        ),
        (2 * TOPICS) as i64
    );
    std::thread::scope(|sc| {
        for (i, t) in topics.iter().enumerate() {
            let srv = &srv;
            sc.spawn(move || {
                let mut s = srv.connect();
                for k in 0..PER_TOPIC {
                    publish_on(&mut s, t, format!("{i}-{k}").as_bytes());
                }
            });
        }
    });
    for (i, mut s) in streams {
        let mut p = SseParser::new();
        let ev = sse_read(&mut s, &mut p, PER_TOPIC, Duration::from_secs(30));
        let got: Vec<String> = ev.iter().map(|e| e.data.clone()).collect();
        let want: Vec<String> = (0..PER_TOPIC).map(|k| format!("{i}-{k}")).collect();
        assert_eq!(got, want, "topic {i}: every message, in order");
    }
    assert!(
        srv.metric("ringcast_inbox_full_total") > 0,
        "the test must have exercised the full-inbox path"
    );
}
