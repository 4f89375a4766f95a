//! One core's world: listener, connections, subscribers, the topics it is home of.
//!
//! Owns: starting a shard's tasks and stopping them. Everything a shard thread touches is a
//! `RefCell<State>` behind an `Rc<Shard>` (`core/`), never `Send`. These tasks run on it: the
//! accept loop and one task per HTTP connection (`http/`), the inbox task that executes
//! commands from other shards and flushes subscribers once per pass (`core/inbox.rs`), the
//! ticker (`ticker.rs`), and the reactor (`reactor.rs`) of streams parked by `stream/park.rs`,
//! which need no task of their own while idle.
//! The folders below are a stack, each importing only those after it: `http/` → `routes/` →
//! `stream/` → `core/` → `outbox/` → `topics/`; `io.rs` is a leaf any of them may use.
//! Must not: hold shard logic — this file only wires the tasks together; nothing below imports
//! it.

pub mod core;
pub mod http;
pub mod io;
pub mod outbox;
pub mod reactor;
pub mod routes;
pub mod stream;
pub mod ticker;
pub mod topics;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::info;
use crate::metrics::M;
use crate::node::Node;
use crate::shard::core::signal::Signal;
use crate::shard::core::{Shard, State};
use crate::shard::topics::ring::HistoryBounds;

/// Runs one shard until the node has drained.
pub async fn run(node: Arc<Node>, id: usize, listener: std::net::TcpListener) {
    let shards = node.bus.shards();
    let ep = match stream::park::create_set() {
        Ok(ep) => ep,
        Err(e) => {
            crate::error!("shard {id}: cannot create its readiness set: {e}");
            return;
        }
    };
    let sh = Rc::new(Shard {
        id,
        bounds: HistoryBounds::from_config(&node.cfg),
        adm: core::admit::Admit::new(&node.cfg),
        node,
        st: RefCell::new(State {
            outq: (0..shards).map(|_| VecDeque::new()).collect(),
            ..State::default()
        }),
        date: Cell::new([b' '; 29]),
        draining: Signal::default(),
        outq_nonempty: Cell::new(false),
        ep,
        flush_wanted: Cell::new(false),
    });
    ticker::refresh_date(&sh);
    monoio::spawn(core::inbox::inbox_task(sh.clone()));
    monoio::spawn(reactor::reactor(sh.clone()));
    monoio::spawn(ticker::ticker_task(sh.clone()));
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::error!("shard {id}: cannot adopt listener: {e}");
            return;
        }
    };
    http::accept::accept_loop(&sh, &listener).await;
    io::stop_listening(std::os::fd::AsRawFd::as_raw_fd(&listener));
    drop(listener);
    drain(&sh).await;
    info!("shard {id} stopped");
}

/// Closes streams in stages over most of `--drain-timeout`, waits for requests in flight, and
/// returns when no connection is left or the timeout is over.
async fn drain(sh: &Rc<Shard>) {
    let total = Duration::from_secs(sh.node.cfg.drain_timeout_secs);
    let start = Instant::now();
    stream::chores::close_in_stages(sh, total.mul_f32(0.8)).await;
    while sh.metrics().get(M::ConnectionsOpen) > 0 && start.elapsed() < total {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// Reports what a parked (idle) stream holds: its `Out` and `Sub` slab entries — no task;
    /// a `ringcast.v1` WebSocket (or one cut mid-frame) also a boxed session. The idle-cost target (PERF.md, ≤ 512 B per
    /// connection) depends on these staying small; the bounds leave room for allocator overhead
    /// and the topic's subscriber list.
    #[test]
    fn parked_stream_sizes() {
        let out = std::mem::size_of::<outbox::out::Out>();
        let sub = std::mem::size_of::<outbox::subs::Sub>();
        let session = std::mem::size_of::<outbox::session::Session>();
        for (n, s) in [
            ("out::Out", out),
            ("subs::Sub", sub),
            ("ws::Session", session),
            (
                "codec::ws::Decoder",
                std::mem::size_of::<crate::codec::ws::Decoder>(),
            ),
        ] {
            eprintln!("{n}: {s} bytes");
        }
        assert!(out + sub <= 200, "Out + Sub = {} bytes", out + sub);
        // Every topic has one entry on its home and on each other shard with subscribers.
        let home = std::mem::size_of::<topics::home::HomeTopic>();
        let topic = std::mem::size_of::<topics::Topic>();
        eprintln!("home::HomeTopic: {home} bytes, topics::Topic: {topic} bytes");
        assert!(home <= 56, "HomeTopic = {home} bytes");
        assert!(topic <= 96, "Topic = {topic} bytes");
        assert_eq!(
            std::mem::size_of::<topics::ring::Ring>(),
            8,
            "an empty ring is one pointer"
        );
        assert!(session <= 192, "ws::Session = {session} bytes");
    }
}
