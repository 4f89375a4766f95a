//! No allocation per delivery: a shard's delivery path (encode once per message and format,
//! append to each subscriber's chain, write the chains) allocates per message, never per
//! subscriber, once its arena and buffers have grown. Counted with a global allocator that
//! counts this thread's allocations while the measured part runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringcast::codec::position::Position;
use ringcast::config::SlowClient;
use ringcast::fanout::{Msg, Window};
use ringcast::metrics::ShardMetrics;
use ringcast::shard::outbox::out::Out;
use ringcast::shard::outbox::subs::{Policy, Subscribers};
use ringcast::shard::outbox::wire::Format;
use ringcast::shard::topics::ring::HistoryBounds;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call is passed through to the system allocator unchanged; counting touches
// only this thread's `Cell`s, which need no allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: the caller's contract is System's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: the caller's contract is System's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const SUBSCRIBERS: usize = 200;
const PER_ROUND: u64 = 40;

fn msg(topic: &Arc<str>, offset: u64) -> Arc<Msg> {
    Arc::new(Msg {
        topic: topic.clone(),
        pos: Position::new(7, offset),
        event: None,
        data: vec![b'x'; 100].into_boxed_slice(),
        binary: false,
        at: Instant::now(),
    })
}

#[test]
fn delivering_allocates_per_message_not_per_subscriber() {
    let metrics = ShardMetrics::default();
    let p = Policy {
        limit: 1 << 20,
        slow: SlowClient::Disconnect,
        metrics: &metrics,
        bounds: HistoryBounds {
            messages: 100,
            bytes: 1 << 20,
            age: Duration::from_secs(60),
        },
    };
    let topic: Arc<str> = Arc::from("alloc");
    let mut s = Subscribers::default();
    let tk = s.remote_topic(&topic);
    let pairs: Vec<(UnixStream, UnixStream)> = (0..SUBSCRIBERS)
        .map(|_| UnixStream::pair().unwrap())
        .collect();
    let start = Window {
        reset: false,
        msgs: vec![],
        current: Position::new(7, 0),
    };
    for (i, (srv, client)) in pairs.iter().enumerate() {
        client.set_nonblocking(true).unwrap();
        // Half SSE, half raw WebSocket: two encodings per message.
        let f = if i % 2 == 0 {
            Format::Sse
        } else {
            Format::WsRaw
        };
        let ok = s.outs.insert(Out::new(srv.as_raw_fd(), f));
        let sk = s.subscribe(ok, tk);
        s.apply_window(sk, &start, &metrics);
    }
    s.flush(&p);
    let mut sink = vec![0u8; 1 << 16];
    let drain = |sink: &mut Vec<u8>| {
        let mut bytes = 0;
        for (_, c) in &pairs {
            while let Ok(n) = (&*c).read(sink) {
                if n == 0 {
                    break;
                }
                bytes += n;
            }
        }
        bytes
    };
    let mut offset = 0;
    let mut round = |s: &mut Subscribers, count: bool| {
        // The messages arrive from the home already made: not the delivery path's allocations.
        let msgs: Vec<Arc<Msg>> = (0..PER_ROUND)
            .map(|_| {
                offset += 1;
                msg(&topic, offset)
            })
            .collect();
        COUNTING.with(|c| c.set(count));
        for m in &msgs {
            s.deliver(m, &p);
        }
        // In slices, as the inbox task writes.
        while s.flush_some(&p, 64) {}
        COUNTING.with(|c| c.set(false));
    };
    // Warm-up: the arena, the writer's scratch and the slabs grow to their working size.
    round(&mut s, false);
    assert!(drain(&mut sink) > 0);
    let rounds = 3;
    for _ in 0..rounds {
        round(&mut s, true);
        assert!(drain(&mut sink) > 0);
    }
    let allocations = COUNT.with(Cell::get);
    let messages = rounds * PER_ROUND as usize;
    let deliveries = messages * SUBSCRIBERS;
    eprintln!("{allocations} allocations for {messages} messages, {deliveries} deliveries");
    // Per message: each encoding's buffer and its shared copy (2 formats × 2).
    assert!(
        allocations <= messages * 4,
        "{allocations} allocations for {messages} messages and {deliveries} deliveries"
    );
    assert!(s
        .outs
        .iter()
        .all(|(_, o)| o.queued == 0 && o.kill.is_none()));
}
