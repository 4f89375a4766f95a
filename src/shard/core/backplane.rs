//! The shard's side of the Redis backplane (`--redis`, issue 14).
//!
//! Owns: publishing through the bridge (one `BridgeCmd::Append` per call, awaited in a pending
//! slot until `--publish-timeout-ms`), and, on a topic's home shard, applying what Redis
//! pushed under the topic's cursor (`HomeTopic::last`): a duplicate is dropped, the next
//! offset is kept and fanned out as a local publish would be, a gap is fetched from the
//! Stream through the bridge (one fetch in flight per topic; pushes past the gap are held,
//! bounded, and follow on once it is filled, so the order stays Redis's).
//! Must not: wait on Redis inside an inbox pass; talk to Redis other than through the bridge.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::position::Position;
use crate::fanout::{
    Asked, BridgeCmd, MsgRef, PublishError, Reply, ReplyTo, Since, TopicMsgs, Window,
};
use crate::metrics::M;
use crate::shard::core::{Fail, GapFetch, Shard, State};
use crate::shard::topics::home::{HomeTopic, Live};
use crate::{debug, warn};

impl Shard {
    /// Gives `groups` their positions in Redis; one result per group, in order. The bridge's
    /// inbox full: `Fail::Overloaded`. No answer within `--publish-timeout-ms`:
    /// `Fail::NotConfirmed` if the bridge had taken the append (it may have sent it), else
    /// `Fail::RedisAway` (it never will). Sent but not confirmed: `Fail::NotConfirmed`.
    pub(crate) async fn publish_redis(
        self: &Rc<Self>,
        groups: Vec<TopicMsgs>,
    ) -> Vec<Result<Vec<Position>, Fail>> {
        let n = groups.len();
        let overloaded = |sh: &Shard| {
            sh.metrics().add(M::PublishOverload, n as i64);
            sh.metrics().add(M::RedisPublishRefused, n as i64);
            (0..n).map(|_| Err(Fail::Overloaded)).collect()
        };
        // The publish reply is a hint for the topics homed here: were its push lost, the
        // quiet check finds the message (`check_quiet`).
        let shards = self.node.bus.shards();
        let mine: Vec<Arc<str>> = groups
            .iter()
            .filter(|g| crate::fanout::home_of(g.topic.as_bytes(), shards) == self.id)
            .map(|g| g.topic.clone())
            .collect();
        let Some(bridge) = &self.node.bridge else {
            return overloaded(self);
        };
        let timeout = Duration::from_millis(self.node.cfg.publish_timeout_ms);
        let until = Instant::now() + timeout;
        let taken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reply = {
            let mut st = self.st.borrow_mut();
            let reply = self.new_slot(&mut st, None);
            let cmd = BridgeCmd::Append {
                groups,
                reply,
                until,
                taken: taken.clone(),
            };
            if bridge.send(cmd).is_err() {
                st.pending.try_remove(reply.slot as usize);
                return overloaded(self);
            }
            reply
        };
        match monoio::time::timeout(timeout, self.wait_slot(reply)).await {
            Ok(Reply::Published(done)) => {
                let refused = done.iter().filter(|r| r.is_err()).count();
                self.metrics().add(M::RedisPublishRefused, refused as i64);
                if !mine.is_empty() {
                    let now = Instant::now();
                    let mut st = self.st.borrow_mut();
                    for topic in mine {
                        st.quiet.entry(topic).or_insert(now);
                    }
                }
                done.into_iter().map(|r| r.map_err(Fail::from)).collect()
            }
            Ok(_) => overloaded(self),
            // The bridge took the append: it may have sent it, so the publisher cannot be told
            // "refused". Not taken: it will see the deadline passed and drop it unsent.
            Err(_) if taken.load(std::sync::atomic::Ordering::SeqCst) => {
                self.metrics().add(M::RedisPublishRefused, n as i64);
                (0..n).map(|_| Err(Fail::NotConfirmed)).collect()
            }
            Err(_) => {
                self.metrics().add(M::RedisPublishRefused, n as i64);
                (0..n).map(|_| Err(Fail::RedisAway)).collect()
            }
        }
    }

    /// A message Redis pushed on a topic homed here.
    pub(crate) fn apply_pushed(&self, st: &mut State, msg: MsgRef) {
        let topic = msg.topic.clone();
        let fetching = st.fetching.contains_key(&topic);
        // A push for a topic this home has freed (its unsubscribe is on its way): no interest.
        let Some((tk, t)) = self.known_home(st, &topic) else {
            return;
        };
        let p = msg.pos;
        if p.offset == 0 {
            return;
        }
        if t.epoch != p.epoch {
            if t.epoch == 0 && t.live != Live::Yes {
                // The home is about to load what Redis retains of the topic (it asked to
                // follow it): a push before the load ran is in the load's answer, one after
                // it follows on from there. Starting the cursor here would drop the older
                // messages the load brings.
                if fetching {
                    hold(st, msg);
                }
                return;
            }
            if t.epoch == 0 {
                // First sight of the topic: its cursor starts at this message.
                t.reset_to(p.epoch, p.offset - 1);
            } else {
                // Redis started the topic again (it lost acknowledged writes): the new epoch
                // is followed from its start, so nothing of it is skipped; subscribers are
                // told with one reset each when its first message reaches them
                // (`Subscribers::deliver_to`).
                warn!(
                    "redis: {topic} is in a new epoch ({:x} after {:x})",
                    p.epoch, t.epoch
                );
                t.reset_to(p.epoch, 0);
            }
        }
        if p.offset <= t.last {
            debug!("redis: duplicate push {topic} {p} dropped");
            return;
        }
        if p.offset > t.last + 1 || fetching {
            // Past a gap, or while one is fetched: held (bounded) until the gap is filled, so
            // the fetch need not bring it again.
            let since = t.current();
            hold(st, msg);
            self.ask_gap(st, topic, since, p.offset);
            return;
        }
        let now = Instant::now();
        t.apply(msg.clone(), now, &self.bounds);
        let mask = t.mask;
        self.metrics().inc(M::Published);
        self.fan_out(st, tk, mask, &msg);
        match st.quiet.get_mut(&topic) {
            Some(at) => *at = now,
            None => {
                st.quiet.insert(topic, now);
            }
        }
    }

    /// The pushes held past a gap that now follow on: applied in order (the rest wait for the
    /// next fetch; those at or below the cursor are dropped).
    fn apply_held(&self, st: &mut State, topic: &Arc<str>) {
        loop {
            let Some((_, t)) = self.known_home(st, topic) else {
                st.held.remove(topic);
                return;
            };
            let (epoch, last) = (t.epoch, t.last);
            let Some(held) = st.held.get_mut(topic) else {
                return;
            };
            let Some(entry) = held.first_entry() else {
                st.held.remove(topic);
                return;
            };
            let m = entry.get().clone();
            if m.pos.epoch == epoch && m.pos.offset > last + 1 {
                return;
            }
            entry.remove();
            if m.pos.epoch == epoch && m.pos.offset == last + 1 {
                self.apply_pushed(st, m);
            }
        }
    }

    /// Asks the bridge for the messages after `since` (one fetch in flight per topic).
    pub(crate) fn ask_gap(&self, st: &mut State, topic: Arc<str>, since: Position, seen: u64) {
        if let Some(f) = st.fetching.get_mut(&topic) {
            f.want = f.want.max(seen);
            return;
        }
        let Some(bridge) = &self.node.bridge else {
            return;
        };
        let cmd = BridgeCmd::Fetch {
            topic: topic.clone(),
            since,
            home: self.id as u16,
            asked: None,
        };
        if bridge.send(cmd).is_ok() {
            let f = GapFetch {
                epoch: since.epoch,
                want: seen,
                again: false,
            };
            st.fetching.insert(topic, f);
        } else {
            // Asked again by the ticker (or by the next push, whichever comes first): a quiet
            // topic may have no next push.
            warn!("redis: bridge inbox full; gap on {topic} after {since} fetched later");
            let w = st.gap_retry.entry(topic).or_insert(0);
            *w = (*w).max(seen);
        }
    }

    /// --redis: `0:0` is what a node answers for a topic it has seen no message of; a client
    /// there has missed nothing while the topic's first epoch is whole on this home.
    pub(crate) fn redis_since(&self, t: &HomeTopic, since: Since) -> Since {
        match since {
            Since::At(p) if p == Position::new(0, 0) && self.node.bridge.is_some() => {
                let whole = t.ring.front().map_or(t.last == 0, |m| m.pos.offset == 1);
                if whole {
                    Since::At(Position::new(t.epoch, 0))
                } else {
                    since
                }
            }
            _ => since,
        }
    }

    /// --redis: the position to ask Redis from when this home cannot answer `since` exactly
    /// (another epoch, ahead of its cursor, older than what it holds). Never a local reset for
    /// a position: only Redis knows whether its history is gone.
    pub(crate) fn must_ask_redis(
        &self,
        st: &mut State,
        topic: &Arc<str>,
        since: Since,
    ) -> Option<Position> {
        self.node.bridge.as_ref()?;
        let Since::At(_) = since else {
            return None;
        };
        let (_, t) = self.home_topic(st, topic).ok()?;
        let Since::At(p) = self.redis_since(t, since) else {
            return None;
        };
        t.evict(Instant::now(), &self.bounds);
        let first_kept = t.ring.front().map_or(t.last + 1, |m| m.pos.offset);
        // `0:0` on a home that has seen nothing of the topic: nothing missed here either.
        if t.epoch == 0 && p == Position::new(0, 0) {
            return None;
        }
        // Only a home that follows the topic is current; any other asks Redis.
        let held = t.live == Live::Yes
            && t.epoch != 0
            && p.epoch == t.epoch
            && p.offset <= t.last
            && p.offset + 1 >= first_kept;
        (!held).then_some(p)
    }

    /// Marks shard `from` (a subscriber's) in the topic's fanout mask.
    pub(crate) fn watch(&self, st: &mut State, topic: &Arc<str>, from: Option<usize>) {
        let me = self.id;
        if let Ok((_, t)) = self.home_topic(st, topic) {
            if let Some(s) = from.filter(|&s| s != me) {
                t.mask |= 1 << s;
            }
        }
    }

    /// Passes a window this home cannot answer to Redis; the answer goes to `reply` from
    /// [`Shard::apply_fetched`]. A full bridge inbox is answered "not confirmed" (a 503),
    /// never a reset.
    pub(crate) fn ask_redis(
        &self,
        st: &mut State,
        topic: Arc<str>,
        since: Position,
        limit: usize,
        reply: ReplyTo,
    ) {
        let asked = Asked { limit, reply };
        let cmd = BridgeCmd::Fetch {
            topic,
            since,
            home: self.id as u16,
            asked: Some(asked),
        };
        let sent = self.node.bridge.as_ref().map(|b| b.send(cmd).is_ok());
        if sent != Some(true) {
            self.reply(st, reply, Reply::Window(Err(PublishError::NotConfirmed)));
        }
    }

    /// What a [`BridgeCmd::Fetch`] brought. Its messages extend this home first (in order,
    /// duplicates dropped, so a home behind its clients catches up); then a gap fetch that is
    /// still behind what was pushed meanwhile asks again, and a client's window is answered:
    /// Redis's entries, then what this home holds after them, so the subscription's seam with
    /// the `Deliver`s already sent is exact.
    pub(crate) fn apply_fetched(
        &self,
        st: &mut State,
        topic: Arc<str>,
        w: Option<Window>,
        asked: Option<Asked>,
    ) {
        let gap_answered = asked.is_none() && w.is_some();
        let again = asked.is_none() && st.fetching.get(&topic).is_some_and(|f| f.again);
        self.apply_window_or_gap(st, topic.clone(), w, asked);
        if again && !st.fetching.contains_key(&topic) {
            if let Some((_, t)) = self.known_home(st, &topic) {
                let since = t.current();
                self.ask_gap(st, topic.clone(), since, 0);
            }
        }
        // A gap fetch that asks no further: a home loading its topic is caught up.
        if gap_answered && !st.fetching.contains_key(&topic) {
            self.loaded(st, &topic);
        }
    }

    fn apply_window_or_gap(
        &self,
        st: &mut State,
        topic: Arc<str>,
        w: Option<Window>,
        asked: Option<Asked>,
    ) {
        let (want, asked_in) = match asked {
            None => st
                .fetching
                .remove(&topic)
                .map_or((0, 0), |f| (f.want, f.epoch)),
            Some(_) => (0, 0),
        };
        let Some(w) = w else {
            match asked {
                Some(a) => self.reply(st, a.reply, Reply::Window(Err(PublishError::NotConfirmed))),
                // Redis did not answer (the bridge waited its backoff first): ask again, so a
                // gap is filled even when no later push comes.
                None => {
                    if let Some((_, t)) = self.known_home(st, &topic) {
                        let (last, since) = (t.last, t.current());
                        if last < want {
                            self.ask_gap(st, topic, since, want);
                        }
                    }
                }
            }
            return;
        };
        let before = match self.known_home(st, &topic) {
            Some((_, t)) => t.current(),
            // Freed meanwhile: a gap of a topic nobody here follows any more.
            None if asked.is_none() => return,
            None => Position::new(0, 0),
        };
        if asked.is_none() && asked_in != 0 && asked_in != before.epoch {
            // A push of a new epoch moved the cursor while this fetch was out: its answer is
            // about the old epoch and says nothing of the new one (whose messages Redis still
            // has). The held pushes follow on; what is still missing is asked from the cursor.
            self.apply_held(st, &topic);
            if let Some((_, t)) = self.known_home(st, &topic) {
                let (last, since) = (t.last, t.current());
                if last < want {
                    self.ask_gap(st, topic, since, want);
                }
            }
            return;
        }
        if before.epoch == 0 && asked.is_none() && w.current.epoch != 0 && w.msgs.is_empty() {
            // A home that knew nothing of the topic, and Redis retains none of it: it follows
            // the topic from Redis's position now.
            if let Some((_, t)) = self.known_home(st, &topic) {
                if t.epoch == 0 {
                    t.reset_to(w.current.epoch, w.current.offset);
                }
            }
            self.apply_held(st, &topic);
            return;
        }
        if w.reset && asked.is_none() {
            if before.epoch != 0 && w.current.epoch != before.epoch {
                // Epoch 0: Redis has no message of the topic yet. The cursor stays in the old
                // epoch, so the new one's first push, whatever its offset, counts as a new
                // epoch and is followed from offset 1 (a gap before it is fetched).
                if w.current.epoch != 0 {
                    // A new epoch: followed from offset 1.
                    if let Ok((_, t)) = self.home_topic(st, &topic) {
                        t.reset_to(w.current.epoch, 0);
                    }
                    self.ask_gap(st, topic, Position::new(w.current.epoch, 0), want);
                }
                return;
            }
            // The Stream no longer has what this node missed: it goes on from Redis's current
            // position; each subscriber is told with a reset at the next message it gets (the
            // offsets jump, `Subscribers::deliver_to`).
            warn!(
                "redis: history of {topic} after this node's cursor is gone; now at {}",
                w.current
            );
            if let Ok((_, t)) = self.home_topic(st, &topic) {
                t.reset_to(w.current.epoch, w.current.offset);
            }
            return;
        }
        // Redis's answer starts a cursor that has none (a pushed message would not: see
        // `apply_pushed`).
        if let (Some((_, t)), Some(first)) = (self.known_home(st, &topic), w.msgs.first()) {
            if t.epoch == 0 {
                t.reset_to(first.pos.epoch, first.pos.offset.saturating_sub(1));
            }
        }
        for m in &w.msgs {
            self.apply_pushed(st, m.clone());
        }
        if asked.is_none() {
            self.apply_held(st, &topic);
        }
        let Ok((_, t)) = self.home_topic(st, &topic) else {
            return;
        };
        if asked.is_some() && t.epoch == 0 && !w.reset && w.current.epoch != 0 {
            // A client's window from Redis on a home that knows nothing yet: the home goes on
            // from there, so what its resync brings next reaches that subscription too.
            t.reset_to(w.current.epoch, w.current.offset);
        }
        let (last, since) = (t.last, t.current());
        let Some(a) = asked else {
            if since.epoch == before.epoch && last > before.offset {
                self.metrics()
                    .add(M::RedisGapsRepaired, (last - before.offset) as i64);
            }
            // Still behind what was pushed meanwhile, or what Redis had when it answered (a
            // fetch brings at most `MAX_FETCH_ENTRIES`): ask on, while each answer moves the
            // cursor.
            let redis_ahead = w.current.epoch == since.epoch && w.current.offset > last;
            let moved = since != before;
            if (last < want || (redis_ahead && moved)) && !st.fetching.contains_key(&topic) {
                self.ask_gap(st, topic, since, want.max(w.current.offset));
            }
            return;
        };
        let mut w = w;
        if !w.reset && t.epoch == w.current.epoch {
            // What this home holds past Redis's answer: already sent to subscribers' shards,
            // so the window must carry it.
            let end = w.msgs.last().map_or(w.current.offset, |m| m.pos.offset);
            if end < t.last && w.msgs.len() < a.limit {
                let first_kept = t.ring.front().map_or(t.last + 1, |m| m.pos.offset);
                if end + 1 >= first_kept {
                    let skip = (end + 1 - first_kept) as usize;
                    w.msgs.extend(t.ring.after(skip, a.limit - w.msgs.len()));
                }
            }
            if t.last > w.current.offset {
                w.current = t.current();
            }
        }
        self.reply(st, a.reply, Reply::Window(Ok(w)));
    }
}

/// Most pushes held past a gap for one topic; more are dropped and fetched with the gap.
const MAX_HELD: usize = 1024;

/// Keeps a push that came past a gap (or while one is fetched), bounded by [`MAX_HELD`].
fn hold(st: &mut State, msg: MsgRef) {
    let held = st.held.entry(msg.topic.clone()).or_default();
    if held.len() < MAX_HELD {
        held.insert(msg.pos.offset, msg);
    }
}
