//! The shard's state and how it talks to other shards.
//!
//! Owns: `Shard` (what every task of the shard shares, behind an `Rc`) and its `RefCell<State>`
//! (subscribers and topics, pending replies, overflow queues, the read-buffer pool); sending a
//! command to another shard in order, parking it in a per-target FIFO (`outq`) when that inbox
//! is full; completing a reply in its pending slot. The home side of commands is `inbox.rs`,
//! the client side (publish, window, subscribe) `rpc.rs`, the once-a-second work `ticker.rs`.
//! Invariants: no `RefCell` borrow is held across an `.await`; commands to one other shard
//! leave in program order (the overflow queue keeps FIFO when an inbox is full), which is what
//! makes a subscription's window arrive before the live messages that follow it.
//! Must not: share any of its objects with another thread — only `fanout` types cross.

pub mod admit;
pub mod backplane;
pub mod follow;
pub mod inbox;
pub mod rpc;
pub mod signal;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::fanout::{Cmd, MsgRef, NewMsg, PublishError, Reply, ReplyTo, Since};
use crate::metrics::{ShardMetrics, M};
use crate::node::Node;
use crate::shard::core::signal::Signal;
use crate::shard::outbox::subs::{Policy, Subscribers};
use crate::shard::topics::ring::HistoryBounds;

/// Retry period for commands parked because another shard's inbox was full.
pub(crate) const OUTQ_RETRY: Duration = Duration::from_millis(1);

pub struct Pending {
    pub(crate) gen: u32,
    pub(crate) waker: Option<Waker>,
    pub(crate) reply: Option<Reply>,
    /// A subscription waiting for this window: it is applied when the reply is executed, in
    /// inbox order, so the `Deliver`s that follow the reply find the subscription ready.
    pub(crate) sub: Option<usize>,
}

/// A window request waiting for its home to follow the topic.
pub(crate) struct Parked {
    pub(crate) since: Since,
    pub(crate) limit: usize,
    /// The subscriber's shard, for a subscribing window.
    pub(crate) from: Option<usize>,
    pub(crate) reply: ReplyTo,
    /// Answered 503 past this (`--publish-timeout-ms`): Redis did not let the home follow.
    pub(crate) until: Instant,
}

/// A gap fetch in flight for a topic homed here (`core::backplane`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct GapFetch {
    /// The epoch of the cursor it was asked from: its answer is about that epoch only.
    pub epoch: u64,
    /// The highest offset pushed since it was asked.
    pub want: u64,
    /// A check (a resync after a reconnect) came while it was out: its answer may predate
    /// what the check is for, so the cursor is checked again once it lands.
    pub again: bool,
}

#[derive(Default)]
pub struct State {
    /// Connections, subscriptions and every topic the shard knows (its homes among them).
    pub subs: Subscribers,
    pub(crate) pending: Slab<Pending>,
    pub(crate) next_gen: u32,
    /// Commands waiting for room in another shard's inbox, FIFO per shard.
    pub(crate) outq: Vec<VecDeque<Cmd>>,
    pub(crate) outq_len: usize,
    pub(crate) epoch_counter: u64,
    /// `--redis`: topics homed here with a gap fetch in flight (`core::backplane`).
    pub(crate) fetching: std::collections::HashMap<Arc<str>, GapFetch>,
    /// `--redis`: topics homed here whose gap fetch found the bridge's inbox full, and the
    /// highest offset pushed meanwhile; the ticker asks again (`Shard::retry_gaps`).
    pub(crate) gap_retry: std::collections::HashMap<Arc<str>, u64>,
    /// `--redis`: pushes that came past a gap of a topic homed here, by offset, applied once
    /// the gap is filled (`core::backplane`, bounded per topic).
    pub(crate) held: std::collections::HashMap<Arc<str>, std::collections::BTreeMap<u64, MsgRef>>,
    /// `--redis`: topics homed here to check against Redis once quiet, and when they were
    /// last pushed (a lost *last* message shows no gap; `core::follow::check_quiet`).
    pub(crate) quiet: std::collections::HashMap<Arc<str>, Instant>,
    /// `--redis`: topics whose `BridgeCmd::Subscribe` or `Unsubscribe` found the bridge's inbox
    /// full; the ticker sends them again (`true`: subscribe).
    pub(crate) interest_retry: Vec<(Arc<str>, bool)>,
    /// `--redis`: window requests for topics homed here that this node does not follow yet,
    /// answered once it does (`core::follow`), or 503 past their deadline.
    pub(crate) parked: std::collections::HashMap<Arc<str>, Vec<Parked>>,
    /// Read buffers lent to connections while they parse a request.
    pub bufpool: Vec<Vec<u8>>,
}

pub struct Shard {
    pub id: usize,
    pub node: Arc<Node>,
    pub st: RefCell<State>,
    pub bounds: HistoryBounds,
    /// IMF-fixdate refreshed once a second by the ticker.
    pub date: Cell<[u8; 29]>,
    /// Fired when the node starts draining.
    pub draining: Signal,
    /// Commands wait in the overflow queues (`State::outq`): the inbox task retries them every
    /// millisecond while this is set.
    pub outq_nonempty: Cell<bool>,
    /// The readiness set of parked streams (an epoll fd; see `park.rs`).
    pub ep: std::os::fd::RawFd,
    /// Something on this shard queued bytes for streaming clients outside the inbox task (a
    /// publish homed here, the ticker's heartbeats): the inbox task's writer takes them.
    pub flush_wanted: Cell<bool>,
    /// This shard's side of the admission bounds (`--accept-rate`, per-address counts).
    pub adm: admit::Admit,
}

/// Why a home did not publish: the messages come back when it may work later.
pub(crate) enum Refused {
    TooManyTopics,
    Busy(Vec<NewMsg>),
}

/// Why a publish or window request could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    TooManyTopics,
    Overloaded,
    /// `--redis`: sent to Redis, not confirmed (`PublishError::NotConfirmed`).
    NotConfirmed,
    /// `--redis`: Redis is away; nothing was sent, nor will be.
    RedisAway,
}

impl From<PublishError> for Fail {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::TooManyTopics => Fail::TooManyTopics,
            PublishError::NotConfirmed => Fail::NotConfirmed,
        }
    }
}

impl Shard {
    pub fn metrics(&self) -> &ShardMetrics {
        &self.node.metrics.shards[self.id]
    }

    pub fn policy(&self) -> Policy<'_> {
        Policy {
            limit: self.node.cfg.client_buffer_bytes,
            slow: self.node.cfg.slow_client,
            metrics: self.metrics(),
            bounds: self.bounds,
        }
    }

    /// Hands the bytes just queued for streaming clients to the writer (the inbox task).
    pub fn want_write(&self) {
        self.flush_wanted.set(true);
        self.node.bus.wake(self.id);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.fired()
    }

    /// Sends a command to another shard, in order; parks it if that inbox is full.
    pub(crate) fn send(&self, st: &mut State, to: usize, cmd: Cmd) {
        debug_assert_ne!(to, self.id);
        let q = &mut st.outq[to];
        if q.is_empty() {
            match self.node.bus.try_push(to, cmd) {
                Ok(()) => {
                    self.node.bus.wake(to);
                    return;
                }
                Err(cmd) => {
                    self.metrics().inc(M::InboxFull);
                    q.push_back(cmd);
                }
            }
        } else {
            q.push_back(cmd);
        }
        st.outq_len += 1;
        self.outq_nonempty.set(true);
        // The inbox task retries; make sure it is awake to arm its retry timer.
        self.node.bus.wake(self.id);
    }

    pub(crate) fn retry_outq(&self, st: &mut State) {
        for to in 0..st.outq.len() {
            let mut pushed = false;
            while let Some(cmd) = st.outq[to].pop_front() {
                match self.node.bus.try_push(to, cmd) {
                    Ok(()) => {
                        st.outq_len -= 1;
                        pushed = true;
                    }
                    Err(cmd) => {
                        st.outq[to].push_front(cmd);
                        break;
                    }
                }
            }
            if pushed {
                self.node.bus.wake(to);
            }
        }
        self.outq_nonempty.set(st.outq_len > 0);
    }

    pub(crate) fn reply(&self, st: &mut State, to: ReplyTo, reply: Reply) {
        if to.shard as usize == self.id {
            complete(st, to, reply, self.metrics());
        } else {
            self.send(
                st,
                to.shard as usize,
                Cmd::Reply {
                    to,
                    reply: Box::new(reply),
                },
            );
        }
    }
}

pub(crate) fn complete(st: &mut State, to: ReplyTo, reply: Reply, m: &ShardMetrics) {
    let State { pending, subs, .. } = st;
    if let Some(p) = pending.get_mut(to.slot as usize) {
        if p.gen == to.gen {
            if let (Some(sk), Reply::Window(Ok(w))) = (p.sub, &reply) {
                subs.apply_window(sk, w, m);
                subs.seed_recent(sk, w);
            }
            p.reply = Some(reply);
            if let Some(w) = p.waker.take() {
                w.wake();
            }
        }
    }
}

/// A turn of the I/O driver for a task that runs in slices (the writer): monoio reaps
/// completions, fires timers and takes other threads' wakes only when it enters the kernel,
/// which a task that merely yields never makes it do (ARCHITECTURE.md, "How a message
/// travels", step 4). Waiting for the readiness of a socket that always has a byte to read
/// takes one `io_uring_enter`; on the epoll driver that readiness is answered at once, so a
/// turn yields first.
pub(crate) struct DriverTurn {
    /// The end that is always readable, and the end that keeps its byte there.
    ready: Option<(monoio::net::UnixStream, std::os::unix::net::UnixStream)>,
}

impl DriverTurn {
    /// One always-readable socket pair; without one (no fds left) a turn is a plain yield.
    pub(crate) fn new() -> DriverTurn {
        let ready = (|| {
            use std::io::Write;
            let (r, mut w) = std::os::unix::net::UnixStream::pair()?;
            w.write_all(&[0])?;
            r.set_nonblocking(true)?;
            Ok::<_, std::io::Error>((monoio::net::UnixStream::from_std(r)?, w))
        })();
        DriverTurn { ready: ready.ok() }
    }

    /// Lets other ready tasks run, then waits until the driver has entered the kernel once.
    pub(crate) async fn pass(&self) {
        yield_now().await;
        if let Some((r, _)) = &self.ready {
            let _ = r.readable(false).await;
        }
    }
}

/// Returns Pending once, so other ready tasks run before this one continues.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Undoes the counts taken when a connection was admitted, however it ends: dropped with the
/// connection's task, or — once the connection is parked — by `park::finish` (`uncount_parked`).
pub struct Counted {
    sh: Rc<Shard>,
    fd: RawFd,
    /// Counted under this address in `Node::per_ip` (only while the cap is on).
    ip: Option<IpAddr>,
}

impl Counted {
    /// Counts an admitted connection (the node total was taken already by the accept loop).
    pub fn new(sh: Rc<Shard>, fd: RawFd, ip: Option<IpAddr>) -> Counted {
        sh.metrics().inc(M::ConnectionsOpen);
        Counted { sh, fd, ip }
    }

    /// The connection is parked: `park::finish` undoes the counts when it ends.
    pub fn disarm(self) {
        if let Some(ip) = self.ip {
            self.sh.adm.parked_ips.borrow_mut().insert(self.fd, ip);
        }
        std::mem::forget(self);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        uncount(&self.sh, self.ip);
    }
}

/// Undoes the counts of parked stream `fd`, before its fd is closed.
pub fn uncount_parked(sh: &Shard, fd: RawFd) {
    let ip = sh.adm.parked_ips.borrow_mut().remove(&fd);
    uncount(sh, ip);
}

fn uncount(sh: &Shard, ip: Option<IpAddr>) {
    sh.metrics().dec(M::ConnectionsOpen);
    sh.node.connections.fetch_sub(1, Ordering::Relaxed);
    if let Some(ip) = ip {
        sh.node.per_ip.remove(ip);
    }
}

#[cfg(test)]
mod turn_tests {
    use std::cell::Cell;
    use std::io::Write;
    use std::rc::Rc;

    use super::{yield_now, DriverTurn};

    /// After a turn, a completion that was ready has reached its task; after a plain yield it
    /// has not: the reason the writer takes turns between slices.
    #[test]
    fn a_turn_delivers_the_completions_a_yield_leaves_waiting() {
        let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().build() else {
            eprintln!("io_uring unavailable here: nothing to check");
            return;
        };
        rt.block_on(async {
            let turn = DriverTurn::new();
            assert!(turn.ready.is_some());
            // A client's request, already in its socket.
            let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
            b.write_all(b"GET").unwrap();
            a.set_nonblocking(true).unwrap();
            let a = monoio::net::UnixStream::from_std(a).unwrap();
            let read = Rc::new(Cell::new(false));
            let r = read.clone();
            let reader = monoio::spawn(async move {
                a.readable(false).await.unwrap();
                r.set(true);
            });
            let writer = monoio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..2 {
                    yield_now().await;
                    seen.push(read.get());
                }
                turn.pass().await;
                seen.push(read.get());
                seen
            });
            assert_eq!(writer.await, [false, false, true]);
            reader.await;
        });
    }
}
