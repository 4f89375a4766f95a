//! One core's world: listener, connections, subscribers, the topics it is home of.
//!
//! Owns: everything a shard thread touches — a `RefCell<State>` behind an `Rc<Shard>`, never
//! `Send`. These tasks run on it: the accept loop, one task per HTTP connection (`conn.rs`),
//! the inbox task that executes commands from other shards (and from this one's connections
//! when a topic is homed elsewhere) and flushes subscribers once per pass, the ticker, and the
//! reactor of parked streams (`park.rs`), which need no task of their own while idle.
//! Invariants: no `RefCell` borrow is held across an `.await`; commands to one other shard
//! leave in program order (the overflow queue `outq` keeps FIFO when an inbox is full), which is
//! what makes a subscription's window arrive before the live messages that follow it.
//! Must not: share any of its objects with another thread — only `fanout` types cross.

pub mod conn;
pub mod io;
pub mod park;
pub mod poll;
pub mod publish;
pub mod signal;
pub mod sse;
pub mod subs;
pub mod topics;
pub mod wire;
pub mod ws;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::codec::position::Position;
use crate::fanout::{
    home_of, Cmd, MsgRef, NewMsg, PublishError, Reply, ReplyTo, Since, TopicMsgs, Window,
};
use crate::metrics::{ShardMetrics, M};
use crate::node::Node;
use crate::{debug, info};
use signal::Signal;
use subs::{Policy, Subscribers};
use topics::home::{self, HomeTopic};
use topics::ring::HistoryBounds;
use topics::{Side, SubList, Topic};

/// Commands executed per inbox pass before other tasks get a turn.
const MAX_CMDS_PER_PASS: usize = 4096;
/// Retry period for commands parked because another shard's inbox was full.
const OUTQ_RETRY: Duration = Duration::from_millis(1);

pub struct Pending {
    gen: u32,
    waker: Option<Waker>,
    reply: Option<Reply>,
    /// A subscription waiting for this window: it is applied when the reply is executed, in
    /// inbox order, so the `Deliver`s that follow the reply find the subscription ready.
    sub: Option<usize>,
}

#[derive(Default)]
pub struct State {
    /// Connections, subscriptions and every topic the shard knows (its homes among them).
    pub subs: Subscribers,
    pending: Slab<Pending>,
    next_gen: u32,
    /// Commands waiting for room in another shard's inbox, FIFO per shard.
    outq: Vec<VecDeque<Cmd>>,
    outq_len: usize,
    epoch_counter: u64,
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
    /// Fired whenever the inbox task has work (its waker lives in the bus).
    pub outq_nonempty: Cell<bool>,
    /// The readiness set of parked streams (an epoll fd; see `park.rs`).
    pub ep: std::os::fd::RawFd,
    /// A publish on this shard queued deliveries: the inbox task flushes them at the end of
    /// this turn of the executor, together with whatever else the turn queued.
    pub flush_wanted: Cell<bool>,
}

/// Why a home did not publish: the messages come back when it may work later.
enum Refused {
    TooManyTopics,
    Busy(Vec<NewMsg>),
}

/// Why a publish or window request could not be served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fail {
    TooManyTopics,
    Overloaded,
}

impl From<PublishError> for Fail {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::TooManyTopics => Fail::TooManyTopics,
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

    pub fn is_draining(&self) -> bool {
        self.draining.fired()
    }

    /// Sends a command to another shard, in order; parks it if that inbox is full.
    fn send(&self, st: &mut State, to: usize, cmd: Cmd) {
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

    fn retry_outq(&self, st: &mut State) {
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

    fn reply(&self, st: &mut State, to: ReplyTo, reply: Reply) {
        if to.shard as usize == self.id {
            complete(st, to, reply, self.metrics());
        } else {
            self.send(st, to.shard as usize, Cmd::Reply { to, reply });
        }
    }

    // ---- home side ------------------------------------------------------------------------

    /// The key and home state of `topic`, whose home is this shard; made on first use (a new
    /// epoch), within `--max-topics`.
    fn home_topic<'a>(
        &self,
        st: &'a mut State,
        topic: &Arc<str>,
    ) -> Result<(usize, &'a mut HomeTopic), PublishError> {
        let topics = &mut st.subs.topics;
        // One hash of the topic per poll or publish.
        let h = topics.hash(topic);
        let tk = match topics.find_hashed(h, topic) {
            Some(tk) => tk,
            None => self.new_home_topic(st, h, topic)?,
        };
        // Only `home_of(topic)` makes a `Home` entry, so this shard's entry for it is one.
        match st.subs.topics.get_mut(tk).and_then(Topic::home) {
            Some(t) => Ok((tk, t)),
            None => {
                debug_assert!(false, "topic {topic} homed here has a remote entry");
                Err(PublishError::TooManyTopics)
            }
        }
    }

    fn new_home_topic(
        &self,
        st: &mut State,
        h: u64,
        topic: &Arc<str>,
    ) -> Result<usize, PublishError> {
        let n = self.node.topics.fetch_add(1, Ordering::Relaxed);
        if n >= self.node.cfg.max_topics {
            self.node.topics.fetch_sub(1, Ordering::Relaxed);
            return Err(PublishError::TooManyTopics);
        }
        st.epoch_counter += 1;
        let epoch = home::new_epoch(self.node.seed, topic, st.epoch_counter);
        self.metrics().inc(M::Topics);
        Ok(st.subs.topics.insert_hashed(
            h,
            Topic {
                name: topic.clone(),
                subs: SubList::default(),
                side: Side::Home(HomeTopic::new(epoch, Instant::now())),
            },
        ))
    }

    fn home_publish(
        &self,
        st: &mut State,
        topic: &Arc<str>,
        msgs: Vec<NewMsg>,
    ) -> Result<Vec<Position>, Refused> {
        // Fanout that cannot leave is backpressure for new publishes, not unbounded memory:
        // the messages go back to the publisher, which waits and retries.
        if st.outq_len > self.node.cfg.inbox_capacity {
            return Err(Refused::Busy(msgs));
        }
        let now = Instant::now();
        let b = self.bounds;
        let (tk, t) = self
            .home_topic(st, topic)
            .map_err(|_| Refused::TooManyTopics)?;
        let mask = t.mask;
        let appended: Vec<MsgRef> = msgs
            .into_iter()
            .map(|m| t.append(topic, m, now, &b))
            .collect();
        self.metrics().add(M::Published, appended.len() as i64);
        let positions = appended.iter().map(|m| m.pos).collect();
        for msg in &appended {
            let mut rest = mask;
            while rest != 0 {
                let to = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                self.send(st, to, Cmd::Deliver(msg.clone()));
            }
            let policy = self.policy();
            st.subs.deliver_to(tk, msg, &policy);
        }
        Ok(positions)
    }

    fn home_window(
        &self,
        st: &mut State,
        topic: &Arc<str>,
        since: Since,
        limit: usize,
        subscriber: Option<usize>,
    ) -> Result<Window, PublishError> {
        let now = Instant::now();
        let b = self.bounds;
        let me = self.id;
        let (_, t) = self.home_topic(st, topic)?;
        if let Some(s) = subscriber.filter(|&s| s != me) {
            t.mask |= 1 << s;
        }
        Ok(t.window(since, limit, now, &b))
    }

    fn handle(&self, st: &mut State, cmd: Cmd) {
        match cmd {
            Cmd::Publish { groups, reply } => {
                // Every message of the command is delivered here before this pass flushes, so
                // a subscriber gets the command's messages in one write.
                let mut done = Vec::with_capacity(groups.len());
                let mut groups = groups.into_iter();
                let mut back = Vec::new();
                while let Some(TopicMsgs { topic, msgs }) = groups.next() {
                    match self.home_publish(st, &topic, msgs) {
                        Ok(ps) => done.push(Ok(ps)),
                        Err(Refused::TooManyTopics) => done.push(Err(PublishError::TooManyTopics)),
                        // Refused before the first group: the whole command comes back. Later,
                        // only because this command's own fanout filled the queues: the rest
                        // comes back, and the publisher retries it before anything else.
                        Err(Refused::Busy(msgs)) => {
                            back.push(TopicMsgs { topic, msgs });
                            back.extend(groups);
                            break;
                        }
                    }
                }
                let r = if back.is_empty() {
                    Reply::Published(done)
                } else {
                    Reply::Busy { done, back }
                };
                self.reply(st, reply, r);
            }
            Cmd::Window {
                topic,
                since,
                limit,
                subscribe,
                reply,
            } => {
                let from = subscribe.then_some(reply.shard as usize);
                let r = self.home_window(st, &topic, since, limit, from);
                self.reply(st, reply, Reply::Window(r));
            }
            Cmd::Unsubscribe { topic, from } => {
                let topics = &mut st.subs.topics;
                if let Some(t) = topics.find(&topic).and_then(|tk| topics.get_mut(tk)) {
                    if let Some(h) = t.home() {
                        h.mask &= !(1u64 << from);
                    }
                }
            }
            Cmd::Deliver(msg) => {
                let policy = self.policy();
                st.subs.deliver(&msg, &policy);
            }
            Cmd::Reply { to, reply } => complete(st, to, reply, self.metrics()),
            Cmd::Shutdown => self.draining.fire(),
        }
    }

    // ---- client side ----------------------------------------------------------------------

    /// Waits (bounded by `--publish-timeout-ms`) while the way to `home` is congested.
    async fn backpressure(&self, home: usize) -> Result<(), Fail> {
        // Read the clock only once the way is found congested.
        let mut deadline: Option<Instant> = None;
        loop {
            let congested = {
                let st = self.st.borrow();
                if home == self.id {
                    st.outq_len > self.node.cfg.inbox_capacity
                } else {
                    !st.outq[home].is_empty()
                }
            };
            if !congested {
                return Ok(());
            }
            let timeout = Duration::from_millis(self.node.cfg.publish_timeout_ms);
            if Instant::now() >= *deadline.get_or_insert_with(|| Instant::now() + timeout) {
                self.metrics().inc(M::PublishOverload);
                return Err(Fail::Overloaded);
            }
            monoio::time::sleep(OUTQ_RETRY).await;
        }
    }

    /// Gives `msgs` positions on the topic's home (here or on another shard). Deliveries on
    /// this shard are written before it returns, so a WebSocket that publishes and then closes
    /// (a raw echo followed by a bad frame) has its message out first.
    pub async fn publish(
        self: &Rc<Self>,
        topic: Arc<str>,
        msgs: Vec<NewMsg>,
    ) -> Result<Vec<Position>, Fail> {
        self.publish_with(topic, msgs, false).await
    }

    /// [`Shard::publish`] for HTTP publishers: when this shard is the home, deliveries are
    /// left to the inbox task's flush at the end of this turn of the executor, after the tasks
    /// already runnable (more publishes read in the same turn, pipelined or on other
    /// connections), so a subscriber gets every message of the turn in one write, as it does
    /// for the `Deliver`s of one inbox pass. One message per write costs ~10 µs of kernel time
    /// per delivery here; batched, 2.4–2.9 µs (PERF.md, fanout at 10k subscribers).
    pub async fn publish_batched(
        self: &Rc<Self>,
        topic: Arc<str>,
        msgs: Vec<NewMsg>,
    ) -> Result<Vec<Position>, Fail> {
        self.publish_with(topic, msgs, true).await
    }

    async fn publish_with(
        self: &Rc<Self>,
        topic: Arc<str>,
        msgs: Vec<NewMsg>,
        batched: bool,
    ) -> Result<Vec<Position>, Fail> {
        let home = home_of(topic.as_bytes(), self.node.bus.shards());
        if home != self.id {
            let done = self
                .publish_remote(home, vec![TopicMsgs { topic, msgs }])
                .await;
            // One result per group.
            return done.into_iter().next().unwrap_or(Err(Fail::Overloaded));
        }
        // Read the clock only when a busy home first hands the messages back.
        let mut deadline: Option<Instant> = None;
        let mut msgs = msgs;
        loop {
            self.backpressure(home).await?;
            let r = {
                let mut st = self.st.borrow_mut();
                let r = self.home_publish(&mut st, &topic, msgs);
                // A connection the shard is ending closes as soon as its task runs: bytes
                // queued for it cannot wait for the end of the turn.
                if !batched || st.subs.must_flush_now() {
                    let policy = self.policy();
                    st.subs.flush(&policy);
                } else {
                    self.flush_wanted.set(true);
                    self.node.bus.wake(self.id);
                }
                r
            };
            match r {
                Ok(ps) => return Ok(ps),
                Err(Refused::TooManyTopics) => return Err(Fail::TooManyTopics),
                Err(Refused::Busy(back)) if self.may_retry(&mut deadline) => {
                    msgs = back;
                    monoio::time::sleep(OUTQ_RETRY).await;
                }
                Err(Refused::Busy(_)) => {
                    self.metrics().inc(M::PublishOverload);
                    return Err(Fail::Overloaded);
                }
            }
        }
    }

    /// Whether a publish the home handed back may be tried again: until `--publish-timeout-ms`
    /// after the first refusal (`deadline` is set then, so the clock is read only once busy).
    fn may_retry(&self, deadline: &mut Option<Instant>) -> bool {
        let timeout = Duration::from_millis(self.node.cfg.publish_timeout_ms);
        Instant::now() < *deadline.get_or_insert_with(|| Instant::now() + timeout)
    }

    /// Publishes `groups`, whose topics are all homed on shard `home` (not this one), as one
    /// `Cmd::Publish`, and returns one result per group, in order. The same waits as a
    /// publish homed here: while the way to the home is congested, and while the home hands
    /// the messages back (`Reply::Busy`), retried every millisecond until
    /// `--publish-timeout-ms`; then `Fail::Overloaded` for every group not published. One
    /// command is in flight per call, and what comes back is retried before the call returns,
    /// so the groups are published in their order (ARCHITECTURE.md, pipelined publishes).
    pub async fn publish_remote(
        self: &Rc<Self>,
        home: usize,
        groups: Vec<TopicMsgs>,
    ) -> Vec<Result<Vec<Position>, Fail>> {
        debug_assert_ne!(home, self.id);
        let mut results: Vec<Result<Vec<Position>, Fail>> = Vec::with_capacity(groups.len());
        let mut deadline: Option<Instant> = None;
        let mut groups = groups;
        loop {
            // How many overloaded publishes `backpressure` counted already.
            let (overloaded, counted) = match self.backpressure(home).await {
                Ok(()) => {
                    let reply = self
                        .request(home, |reply| Cmd::Publish { groups, reply })
                        .await;
                    let (done, back) = match reply {
                        Reply::Published(done) => (done, Vec::new()),
                        Reply::Busy { done, back } => (done, back),
                        Reply::Window(_) => unreachable!("a publish is answered with positions"),
                    };
                    results.extend(done.into_iter().map(|r| r.map_err(Fail::from)));
                    groups = back;
                    if groups.is_empty() {
                        return results;
                    }
                    (!self.may_retry(&mut deadline), 0)
                }
                Err(_) => (true, 1),
            };
            if overloaded {
                self.metrics()
                    .add(M::PublishOverload, groups.len() as i64 - counted);
                results.extend(groups.iter().map(|_| Err(Fail::Overloaded)));
                return results;
            }
            monoio::time::sleep(OUTQ_RETRY).await;
        }
    }

    /// The messages after `since` on `topic` (a poll), without subscribing.
    pub async fn window(
        self: &Rc<Self>,
        topic: Arc<str>,
        since: Since,
        limit: usize,
    ) -> Result<Window, Fail> {
        let home = home_of(topic.as_bytes(), self.node.bus.shards());
        if home == self.id {
            let mut st = self.st.borrow_mut();
            return self
                .home_window(&mut st, &topic, since, limit, None)
                .map_err(Fail::from);
        }
        if let Some(w) = self
            .st
            .borrow_mut()
            .subs
            .local_window(&topic, since, limit, &self.bounds)
        {
            self.metrics().inc(M::LocalWindows);
            return Ok(w);
        }
        match self
            .request(home, |reply| Cmd::Window {
                topic,
                since,
                limit,
                subscribe: false,
                reply,
            })
            .await
        {
            Reply::Window(r) => r.map_err(Fail::from),
            Reply::Published(_) | Reply::Busy { .. } => {
                unreachable!("a window request is answered with a window")
            }
        }
    }

    /// Subscribes connection `out` to `topic` from `since`: the replay (or reset) is queued for
    /// it ahead of every live message. Returns the subscription key and the window.
    pub async fn subscribe(
        self: &Rc<Self>,
        out: usize,
        topic: Arc<str>,
        since: Since,
        limit: usize,
    ) -> Result<(usize, Window), Fail> {
        let home = home_of(topic.as_bytes(), self.node.bus.shards());
        let sk = {
            let mut st = self.st.borrow_mut();
            let tk = if home == self.id {
                self.home_topic(&mut st, &topic).map_err(Fail::from)?.0
            } else {
                st.subs.remote_topic(&topic)
            };
            st.subs.subscribe(out, tk)
        };
        let w = if home == self.id {
            let mut st = self.st.borrow_mut();
            let w = self.home_window(&mut st, &topic, since, limit, Some(self.id));
            if let Ok(w) = &w {
                st.subs.apply_window(sk, w, self.metrics());
            }
            w.map_err(Fail::from)
        } else if let Some(w) = self.subscribe_locally(sk, &topic, since, limit) {
            Ok(w)
        } else {
            let t = topic.clone();
            // The window is applied by `complete` when the reply is executed.
            let r = self
                .request_for(home, Some(sk), |reply| Cmd::Window {
                    topic: t,
                    since,
                    limit,
                    subscribe: true,
                    reply,
                })
                .await;
            match r {
                Reply::Window(r) => r.map_err(Fail::from),
                Reply::Published(_) | Reply::Busy { .. } => {
                    unreachable!("a window request is answered with a window")
                }
            }
        };
        match w {
            Ok(w) => {
                let mut st = self.st.borrow_mut();
                let policy = self.policy();
                st.subs.flush(&policy);
                Ok((sk, w))
            }
            Err(e) => {
                self.unsubscribe(sk);
                Err(e)
            }
        }
    }

    /// A window inside the messages this shard already received for a remote-homed topic needs
    /// no round trip to the home: applies it to subscription `sk` and returns it.
    fn subscribe_locally(
        &self,
        sk: usize,
        topic: &str,
        since: Since,
        limit: usize,
    ) -> Option<Window> {
        let mut st = self.st.borrow_mut();
        let w = st.subs.local_window(topic, since, limit, &self.bounds)?;
        st.subs.apply_window(sk, &w, self.metrics());
        self.metrics().inc(M::LocalWindows);
        Some(w)
    }

    /// Ends a subscription; when the shard's interest in the topic ends, tells its home.
    pub fn unsubscribe(&self, sk: usize) {
        let mut st = self.st.borrow_mut();
        if let Some(topic) = st.subs.unsubscribe(sk) {
            self.interest_ended(&mut st, topic);
        }
    }

    fn interest_ended(&self, st: &mut State, topic: Arc<str>) {
        let home = home_of(topic.as_bytes(), self.node.bus.shards());
        if home != self.id {
            self.send(
                st,
                home,
                Cmd::Unsubscribe {
                    topic,
                    from: self.id as u16,
                },
            );
        }
    }

    /// Frees a stream's shard state however it ends: its `Out` (with any bytes still queued
    /// for it) and its subscriptions. Returns the `Out` for the caller's last words and fd.
    pub fn free_stream(&self, k: usize) -> Option<subs::Out> {
        let out = self.st.borrow_mut().subs.remove_out(k)?;
        if !out.backlog.is_empty() {
            self.metrics()
                .add(M::BufferedBytes, -(out.backlog.len() as i64));
        }
        for sk in out.subs.iter() {
            self.unsubscribe(sk);
        }
        Some(out)
    }

    /// Sends a request to another shard and waits for its reply. Dropping the future (the
    /// client left) frees the slot; a late reply then misses on the generation.
    async fn request(self: &Rc<Self>, to: usize, make: impl FnOnce(ReplyTo) -> Cmd) -> Reply {
        self.request_for(to, None, make).await
    }

    /// `request`, naming the subscription a window reply is for.
    async fn request_for(
        self: &Rc<Self>,
        to: usize,
        sub: Option<usize>,
        make: impl FnOnce(ReplyTo) -> Cmd,
    ) -> Reply {
        let reply_to = {
            let mut st = self.st.borrow_mut();
            st.next_gen = st.next_gen.wrapping_add(1);
            let gen = st.next_gen;
            let slot = st.pending.insert(Pending {
                gen,
                waker: None,
                reply: None,
                sub,
            });
            let r = ReplyTo {
                shard: self.id as u16,
                slot: slot as u32,
                gen,
            };
            self.send(&mut st, to, make(r));
            r
        };
        let guard = SlotGuard {
            shard: self,
            slot: reply_to.slot as usize,
        };
        let reply = std::future::poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            let p = &mut st.pending[guard.slot];
            match p.reply.take() {
                Some(r) => Poll::Ready(r),
                None => {
                    p.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
        reply
    }
}

struct SlotGuard<'a> {
    shard: &'a Shard,
    slot: usize,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.shard.st.borrow_mut().pending.try_remove(self.slot);
    }
}

fn complete(st: &mut State, to: ReplyTo, reply: Reply, m: &ShardMetrics) {
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

/// The inbox task: executes commands, then flushes subscribers, once per pass.
async fn inbox_task(sh: Rc<Shard>) {
    let bus = &sh.node.bus;
    loop {
        let retrying = sh.outq_nonempty.get();
        let wait = std::future::poll_fn(|cx| {
            bus.register(sh.id, cx.waker());
            // A command parked in the overflow queue since this wait began must end it too,
            // so the retry timer gets armed (a connection task wakes us after parking one).
            if !bus.is_empty(sh.id)
                || sh.flush_wanted.get()
                || (!retrying && sh.outq_nonempty.get())
            {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        if retrying {
            monoio::select! {
                _ = wait => {},
                _ = monoio::time::sleep(OUTQ_RETRY) => {},
            }
        } else {
            wait.await;
        }
        {
            let mut st = sh.st.borrow_mut();
            for _ in 0..MAX_CMDS_PER_PASS {
                match bus.pop(sh.id) {
                    Some(cmd) => sh.handle(&mut st, cmd),
                    None => break,
                }
            }
            let policy = sh.policy();
            sh.flush_wanted.set(false);
            st.subs.flush(&policy);
            if st.outq_len > 0 {
                sh.retry_outq(&mut st);
            }
        }
        if !bus.is_empty(sh.id) {
            // Let connection tasks run between big passes.
            yield_now().await;
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

/// Once a second: refresh the Date, free idle topics, send heartbeats on quiet streams.
async fn ticker_task(sh: Rc<Shard>) {
    let mut tick: u64 = 0;
    loop {
        refresh_date(&sh);
        monoio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        sweep_topics(&sh);
        let hb = sh.node.cfg.heartbeat_secs;
        if hb > 0 && tick % hb == 0 {
            sse::heartbeat(&sh, tick);
        } else {
            sse::check_pongs(&sh, tick);
        }
    }
}

fn refresh_date(sh: &Shard) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut d = [0u8; 29];
    crate::codec::http1::http_date(secs, &mut d);
    sh.date.set(d);
}

/// Ends the interests that outlived their last subscriber (see `Subscribers::unsubscribe`) and
/// frees idle topics homed here, in one walk of the topic table.
fn sweep_topics(sh: &Shard) {
    let idle = Duration::from_secs(sh.node.cfg.topic_idle_secs);
    let mut st = sh.st.borrow_mut();
    let (ended, freed) = st.subs.sweep(Instant::now(), idle);
    for topic in ended {
        sh.interest_ended(&mut st, topic);
    }
    if freed > 0 {
        sh.node.topics.fetch_sub(freed, Ordering::Relaxed);
        sh.metrics().add(M::Topics, -(freed as i64));
        sh.metrics().add(M::TopicsFreed, freed as i64);
        debug!("shard {} freed {freed} idle topics", sh.id);
    }
}

/// Runs one shard until the node has drained.
pub async fn run(node: Arc<Node>, id: usize, listener: std::net::TcpListener) {
    let shards = node.bus.shards();
    let ep = match park::create_set() {
        Ok(ep) => ep,
        Err(e) => {
            crate::error!("shard {id}: cannot create its readiness set: {e}");
            return;
        }
    };
    let sh = Rc::new(Shard {
        id,
        bounds: HistoryBounds::from_config(&node.cfg),
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
    refresh_date(&sh);
    monoio::spawn(inbox_task(sh.clone()));
    monoio::spawn(park::reactor(sh.clone()));
    monoio::spawn(ticker_task(sh.clone()));
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            crate::error!("shard {id}: cannot adopt listener: {e}");
            return;
        }
    };
    conn::accept_loop(&sh, &listener).await;
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
    sse::drain_streams(sh, total.mul_f32(0.8)).await;
    while sh.metrics().get(M::ConnectionsOpen) > 0 && start.elapsed() < total {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A query parameter, percent-decoded.
pub fn route_since<'q>(q: &'q [u8], name: &str) -> Option<std::borrow::Cow<'q, [u8]>> {
    crate::codec::route::query_param(q, name)
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
        let out = std::mem::size_of::<subs::Out>();
        let sub = std::mem::size_of::<subs::Sub>();
        let session = std::mem::size_of::<ws::Session>();
        for (n, s) in [
            ("subs::Out", out),
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
        let home = std::mem::size_of::<home::HomeTopic>();
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

#[cfg(test)]
mod publish_tests {
    use super::*;

    /// Shard 0 of a two-shard node with these flags, outside any runtime: enough to run the
    /// home's side of commands, with shard 1's inbox as the place its sends land.
    fn home_shard(args: &[&str]) -> Shard {
        let mut argv = vec!["ringcast", "--shards", "2"];
        argv.extend_from_slice(args);
        let cfg = crate::config::Config::from_args(argv).unwrap();
        let bounds = HistoryBounds::from_config(&cfg);
        Shard {
            id: 0,
            bounds,
            node: Arc::new(Node::new(cfg)),
            st: RefCell::new(State {
                outq: (0..2).map(|_| VecDeque::new()).collect(),
                ..State::default()
            }),
            date: Cell::new([b' '; 29]),
            draining: Signal::default(),
            outq_nonempty: Cell::new(false),
            ep: -1,
            flush_wanted: Cell::new(false),
        }
    }

    const TO_SHARD_1: ReplyTo = ReplyTo {
        shard: 1,
        slot: 7,
        gen: 1,
    };

    fn group(topic: &str, n: usize) -> TopicMsgs {
        TopicMsgs {
            topic: Arc::from(topic),
            msgs: (0..n)
                .map(|i| NewMsg {
                    event: None,
                    data: format!("{topic}-{i}").into_bytes().into(),
                    binary: false,
                })
                .collect(),
        }
    }

    /// The commands shard 0 sent to shard 1: its inbox, then what waits in the overflow.
    fn sent_to_1(sh: &Shard) -> Vec<Cmd> {
        let mut v = Vec::new();
        while let Some(c) = sh.node.bus.pop(1) {
            v.push(c);
        }
        v.extend(sh.st.borrow_mut().outq[1].drain(..));
        sh.st.borrow_mut().outq_len = 0;
        v
    }

    fn offsets(r: &Result<Vec<Position>, PublishError>) -> Vec<u64> {
        r.as_ref().unwrap().iter().map(|p| p.offset).collect()
    }

    /// Groups are published in order, each topic's offsets following on, and one topic the
    /// home may not create is refused alone.
    #[test]
    fn a_publish_command_publishes_its_groups_in_order() {
        let sh = home_shard(&["--max-topics", "2"]);
        let mut st = sh.st.borrow_mut();
        let groups = vec![group("a", 2), group("b", 1), group("c", 1), group("a", 1)];
        sh.handle(
            &mut st,
            Cmd::Publish {
                groups,
                reply: TO_SHARD_1,
            },
        );
        drop(st);
        let sent = sent_to_1(&sh);
        let [Cmd::Reply {
            to,
            reply: Reply::Published(done),
        }] = &sent[..]
        else {
            panic!("expected one Published reply, got {sent:?}");
        };
        assert_eq!(*to, TO_SHARD_1);
        assert_eq!(done.len(), 4);
        assert_eq!(offsets(&done[0]), [1, 2]);
        assert_eq!(offsets(&done[1]), [1]);
        assert!(matches!(done[2], Err(PublishError::TooManyTopics)));
        assert_eq!(offsets(&done[3]), [3]);
    }

    /// A home that is behind refuses a command whole; one whose own fanout fills the queue
    /// midway publishes a prefix and hands back the rest, in order.
    #[test]
    fn a_busy_home_hands_back_the_whole_command_or_a_suffix() {
        // Shard 1's inbox holds one command; more waits in shard 0's overflow, whose bound
        // (`--inbox-capacity`, 1) refuses new publishes once exceeded.
        let sh = home_shard(&["--inbox-capacity", "1"]);
        // Shard 1 subscribes to "a", so each message of "a" is a `Deliver` to it.
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Window {
                topic: Arc::from("a"),
                since: Since::None,
                limit: 0,
                subscribe: true,
                reply: TO_SHARD_1,
            },
        );
        assert_eq!(sent_to_1(&sh).len(), 1, "the window reply");

        // Three deliveries of "a": one fits the inbox, two overflow (2 > 1), so "b" and "c"
        // come back.
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Publish {
                groups: vec![group("a", 3), group("b", 1), group("c", 2)],
                reply: TO_SHARD_1,
            },
        );
        let sent = sent_to_1(&sh);
        assert_eq!(sent.len(), 4, "three deliveries and the reply: {sent:?}");
        match &sent[3] {
            Cmd::Reply {
                reply: Reply::Busy { done, back },
                ..
            } => {
                assert_eq!(done.len(), 1);
                assert_eq!(offsets(&done[0]), [1, 2, 3]);
                let back: Vec<(&str, usize)> =
                    back.iter().map(|g| (&*g.topic, g.msgs.len())).collect();
                assert_eq!(back, [("b", 1), ("c", 2)]);
            }
            other => panic!("expected Busy, got {other:?}"),
        }

        // Behind from the start: nothing is published, everything comes back.
        {
            let mut st = sh.st.borrow_mut();
            st.outq[1].extend([Cmd::Shutdown, Cmd::Shutdown]);
            st.outq_len = 2;
        }
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Publish {
                groups: vec![group("a", 1), group("b", 1)],
                reply: TO_SHARD_1,
            },
        );
        let sent = sent_to_1(&sh);
        match &sent[..] {
            [Cmd::Shutdown, Cmd::Shutdown, Cmd::Reply {
                reply: Reply::Busy { done, back },
                ..
            }] => {
                assert!(done.is_empty());
                assert_eq!(back.len(), 2);
                assert_eq!(&*back[0].topic, "a");
                assert_eq!(&*back[1].topic, "b");
            }
            other => panic!("expected a whole refusal, got {other:?}"),
        }
        // Nothing of the refused command was published: "a" goes on at 4.
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Publish {
                groups: vec![group("a", 1)],
                reply: TO_SHARD_1,
            },
        );
        let sent = sent_to_1(&sh);
        match sent.last() {
            Some(Cmd::Reply {
                reply: Reply::Published(done),
                ..
            }) => assert_eq!(offsets(&done[0]), [4]),
            other => panic!("expected Published, got {other:?}"),
        }
    }
}
