//! The client side of requests between shards: publish, window and subscribe, each sent to the
//! topic's home and answered in a pending slot (or done in place when the home is this shard).
//!
//! Owns: the pending slots' life (a dropped request frees its slot; a late reply misses on the
//! generation), backpressure towards a congested home, retries of what a busy home handed back.
//! Must not: hold a `RefCell` borrow across an `.await`.

use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::codec::position::Position;
use crate::fanout::{home_of, Cmd, NewMsg, Reply, ReplyTo, Since, TopicMsgs, Window, WindowAsk};
use crate::metrics::M;
use crate::shard::core::{Fail, Pending, Refused, Shard, State, OUTQ_RETRY};
use crate::shard::outbox::out::Out;

impl Shard {
    // ---- client side ----------------------------------------------------------------------

    /// Waits (bounded by `--publish-timeout-ms`) while the way to `home` is congested.
    pub(crate) async fn backpressure(&self, home: usize) -> Result<(), Fail> {
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
    /// left to the shard's writer (the inbox task's slices), so the publisher is answered at
    /// once and the messages read meanwhile (pipelined, on other connections, or from other
    /// shards) share the subscriber's next write. One message per write costs ~10 µs of kernel
    /// time per delivery here; batched, ~2 µs (PERF.md, fanout at 10k subscribers).
    pub async fn publish_batched(
        self: &Rc<Self>,
        topic: Arc<str>,
        msgs: Vec<NewMsg>,
    ) -> Result<Vec<Position>, Fail> {
        self.publish_with(topic, msgs, true).await
    }

    pub(crate) async fn publish_with(
        self: &Rc<Self>,
        topic: Arc<str>,
        msgs: Vec<NewMsg>,
        batched: bool,
    ) -> Result<Vec<Position>, Fail> {
        if self.node.bridge.is_some() {
            let done = self.publish_redis(vec![TopicMsgs { topic, msgs }]).await;
            return done.into_iter().next().unwrap_or(Err(Fail::Overloaded));
        }
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
                    self.want_write();
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
    pub(crate) fn may_retry(&self, deadline: &mut Option<Instant>) -> bool {
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
        if self.node.bridge.is_some() {
            return self.publish_redis(groups).await;
        }
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
                        Reply::Window(_) | Reply::Count(_) => {
                            unreachable!("a publish is answered with positions")
                        }
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
            let asked = {
                let mut st = self.st.borrow_mut();
                if !self.follows(&mut st, &topic) {
                    let reply = self.new_slot(&mut st, None);
                    self.park_window(&mut st, topic, since, limit, None, reply);
                    reply
                } else {
                    match self.must_ask_redis(&mut st, &topic, since) {
                        None => {
                            return self
                                .home_window(&mut st, &topic, since, limit, None)
                                .map_err(Fail::from)
                        }
                        Some(p) => {
                            let reply = self.new_slot(&mut st, None);
                            self.ask_redis(&mut st, topic, p, limit, reply);
                            reply
                        }
                    }
                }
            };
            return match self.wait_slot(asked).await {
                Reply::Window(r) => r.map_err(Fail::from),
                _ => Err(Fail::Overloaded),
            };
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
            .request(home, |reply| {
                Cmd::Window(Box::new(WindowAsk {
                    topic,
                    since,
                    limit,
                    subscribe: false,
                    reply,
                }))
            })
            .await
        {
            Reply::Window(r) => r.map_err(Fail::from),
            Reply::Published(_) | Reply::Busy { .. } | Reply::Count(_) => {
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
        let sk = self.add_sub(out, &topic)?;
        self.open_sub(sk, topic, since, limit).await
    }

    /// The first half of [`Shard::subscribe`]: the subscription of `out` to `topic`, not ready
    /// yet (no message flows to it before [`Shard::open_sub`] applies its window). A
    /// multi-topic stream makes all of its subscriptions first, so its token names them all.
    pub fn add_sub(&self, out: usize, topic: &Arc<str>) -> Result<usize, Fail> {
        let home = home_of(topic.as_bytes(), self.node.bus.shards());
        let mut st = self.st.borrow_mut();
        let tk = if home == self.id {
            let tk = self.home_topic(&mut st, topic).map_err(Fail::from)?.0;
            self.want_live(&mut st, topic);
            tk
        } else {
            st.subs.remote_topic(topic)
        };
        Ok(st.subs.subscribe(out, tk))
    }

    /// The second half of [`Shard::subscribe`]: the window of subscription `sk` from `since`,
    /// applied ahead of every live message. On failure the subscription is gone.
    pub async fn open_sub(
        self: &Rc<Self>,
        sk: usize,
        topic: Arc<str>,
        since: Since,
        limit: usize,
    ) -> Result<(usize, Window), Fail> {
        let home = home_of(topic.as_bytes(), self.node.bus.shards());
        let asked = if home == self.id {
            let mut st = self.st.borrow_mut();
            if !self.follows(&mut st, &topic) {
                // The window is applied by `complete` when the home, following, answers.
                let reply = self.new_slot(&mut st, Some(sk));
                self.park_window(&mut st, topic.clone(), since, limit, Some(self.id), reply);
                Some(reply)
            } else {
                self.must_ask_redis(&mut st, &topic, since).map(|p| {
                    // The window is applied by `complete` when the home answers.
                    let reply = self.new_slot(&mut st, Some(sk));
                    self.ask_redis(&mut st, topic.clone(), p, limit, reply);
                    reply
                })
            }
        } else {
            None
        };
        let w = if let Some(reply) = asked {
            match self.wait_slot(reply).await {
                Reply::Window(r) => r.map_err(Fail::from),
                _ => Err(Fail::Overloaded),
            }
        } else if home == self.id {
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
                .request_for(home, Some(sk), |reply| {
                    Cmd::Window(Box::new(WindowAsk {
                        topic: t,
                        since,
                        limit,
                        subscribe: true,
                        reply,
                    }))
                })
                .await;
            match r {
                Reply::Window(r) => r.map_err(Fail::from),
                Reply::Published(_) | Reply::Busy { .. } | Reply::Count(_) => {
                    unreachable!("a window request is answered with a window")
                }
            }
        };
        match w {
            Ok(w) => {
                let mut st = self.st.borrow_mut();
                let policy = self.policy();
                // The replay goes out now, ahead of the writer's turn.
                if let Some(out) = st.subs.subs.get(sk).map(|s| s.out as usize) {
                    st.subs.flush_out(out, &policy);
                }
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
    pub(crate) fn subscribe_locally(
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

    /// How many subscriptions of `topic` there are on every shard now: this shard's count,
    /// plus one `Cmd::Count` asked of each other shard (answered in its next inbox pass). Asked
    /// rather than kept: a count costs one round trip per shard when someone asks, and nothing
    /// on the subscribe and unsubscribe paths.
    pub async fn count_subscribers(self: &Rc<Self>, topic: &Arc<str>) -> u64 {
        let mut n = self.st.borrow().subs.count(topic);
        for s in 0..self.node.bus.shards() {
            if s == self.id {
                continue;
            }
            let t = topic.clone();
            if let Reply::Count(c) = self
                .request(s, |reply| Cmd::Count { topic: t, reply })
                .await
            {
                n += c;
            }
        }
        n
    }

    /// Ends a subscription; when the shard's interest in the topic ends, tells its home.
    pub fn unsubscribe(&self, sk: usize) {
        let mut st = self.st.borrow_mut();
        if let Some(topic) = st.subs.unsubscribe(sk) {
            self.interest_ended(&mut st, topic);
        }
    }

    pub(crate) fn interest_ended(&self, st: &mut State, topic: Arc<str>) {
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
    pub fn free_stream(&self, k: usize) -> Option<Out> {
        let (mut out, chain) = {
            let mut st = self.st.borrow_mut();
            let chain = st.subs.take_chain(k);
            (st.subs.remove_out(k)?, chain)
        };
        if !out.backlog.is_empty() {
            self.metrics()
                .add(M::BufferedBytes, -(out.backlog.len() as i64));
        }
        // What the writer had not got round to follows the backlog, for the last words.
        out.backlog.extend_from_slice(&chain);
        for sk in out.subs.iter() {
            self.unsubscribe(sk);
        }
        Some(out)
    }

    /// Sends a request to another shard and waits for its reply. Dropping the future (the
    /// client left) frees the slot; a late reply then misses on the generation.
    pub(crate) async fn request(
        self: &Rc<Self>,
        to: usize,
        make: impl FnOnce(ReplyTo) -> Cmd,
    ) -> Reply {
        self.request_for(to, None, make).await
    }

    /// `request`, naming the subscription a window reply is for.
    pub(crate) async fn request_for(
        self: &Rc<Self>,
        to: usize,
        sub: Option<usize>,
        make: impl FnOnce(ReplyTo) -> Cmd,
    ) -> Reply {
        let reply_to = {
            let mut st = self.st.borrow_mut();
            let r = self.new_slot(&mut st, sub);
            self.send(&mut st, to, make(r));
            r
        };
        self.wait_slot(reply_to).await
    }

    /// A pending slot for one reply, with a fresh generation.
    pub(crate) fn new_slot(&self, st: &mut State, sub: Option<usize>) -> ReplyTo {
        st.next_gen = st.next_gen.wrapping_add(1);
        let gen = st.next_gen;
        let slot = st.pending.insert(Pending {
            gen,
            waker: None,
            reply: None,
            sub,
        });
        ReplyTo {
            shard: self.id as u16,
            slot: slot as u32,
            gen,
        }
    }

    /// The reply for `reply_to`'s slot; the slot is freed when this returns or is dropped
    /// (a late reply then misses on the generation).
    pub(crate) async fn wait_slot(&self, reply_to: ReplyTo) -> Reply {
        let guard = SlotGuard {
            shard: self,
            slot: reply_to.slot as usize,
        };
        std::future::poll_fn(|cx| {
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
        .await
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
