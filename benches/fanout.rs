//! The pub/sub core without sockets: messages/s through a shard inbox (one producer thread,
//! one consumer thread, the bounded ArrayQueue + wake path), and history lookups on a topic's
//! home (`HomeTopic::window`) for a resume near the head and far back.
//!
//! `cargo bench --bench fanout`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringcast::codec::position::Position;
use ringcast::fanout::{Bus, Cmd, Msg, NewMsg, Since};
use ringcast::shard::topics::home::HomeTopic;
use ringcast::shard::topics::ring::HistoryBounds;

fn msg(offset: u64) -> Arc<Msg> {
    Arc::new(Msg {
        topic: Arc::from("bench"),
        pos: Position::new(1, offset),
        event: None,
        data: vec![b'x'; 128].into_boxed_slice(),
        binary: false,
        at: Instant::now(),
    })
}

/// Moves `n` Deliver commands from a producer thread to this thread through one inbox,
/// retrying on a full inbox (the backpressure path), as a shard's inbox task would drain it.
fn through_inbox(bus: &Arc<Bus>, n: u64, m: &Arc<Msg>) {
    let producer = {
        let bus = bus.clone();
        let m = m.clone();
        std::thread::spawn(move || {
            for _ in 0..n {
                let mut cmd = Cmd::Deliver(m.clone());
                loop {
                    match bus.try_push(1, cmd) {
                        Ok(()) => break,
                        Err(back) => {
                            cmd = back;
                            std::hint::spin_loop();
                        }
                    }
                }
                bus.wake(1);
            }
        })
    };
    let mut got = 0;
    while got < n {
        match bus.pop(1) {
            Some(c) => {
                black_box(c);
                got += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    producer.join().unwrap();
}

fn bench_inbox(c: &mut Criterion) {
    let mut group = c.benchmark_group("inbox");
    group.measurement_time(Duration::from_secs(5));
    let m = msg(1);
    for cap in [1024usize, 65536] {
        let bus = Arc::new(Bus::new(2, cap));
        let n = 100_000u64;
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(
            BenchmarkId::new("deliver_cross_thread", cap),
            &n,
            |b, &n| b.iter(|| through_inbox(&bus, n, &m)),
        );
    }
    group.finish();
}

fn bench_history(c: &mut Criterion) {
    let mut group = c.benchmark_group("history_window");
    let topic: Arc<str> = Arc::from("bench");
    let b = HistoryBounds {
        messages: 1000,
        bytes: 1 << 30,
        age: Duration::from_secs(3600),
    };
    let now = Instant::now();
    let mut home = HomeTopic::new(1, now);
    for _ in 0..5000 {
        home.append(
            &topic,
            NewMsg {
                event: None,
                data: vec![b'x'; 128].into_boxed_slice(),
                binary: false,
            },
            now,
            &b,
        );
    }
    // Ring holds offsets 4001..=5000.
    for (name, since, limit) in [
        ("caught_up", 5000u64, 100usize),
        ("behind_10", 4990, 100),
        ("behind_900_limit_100", 4100, 100),
        ("behind_900_all", 4100, usize::MAX),
        ("too_old_reset", 10, 100),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |bch| {
            bch.iter(|| {
                let w = home.window(
                    Since::At(Position::new(1, black_box(since))),
                    limit,
                    now,
                    &b,
                );
                black_box(w.msgs.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_inbox, bench_history);
criterion_main!(benches);
