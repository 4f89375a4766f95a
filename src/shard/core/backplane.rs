//! The shard's side of the Redis backplane (`--redis`, issue 14).
//!
//! Owns: publishing through the bridge (one `BridgeCmd::Append` per call, awaited in a pending
//! slot until `--publish-timeout-ms`), and, on a topic's home shard, applying what Redis
//! pushed under the topic's cursor (`HomeTopic::last`): a duplicate is dropped, the next
//! offset is kept and fanned out as a local publish would be, a gap is fetched from the
//! Stream through the bridge (one fetch in flight per topic; pushes past the gap meanwhile
//! are dropped and fetched again, so the order stays Redis's).
//! Must not: wait on Redis inside an inbox pass; talk to Redis other than through the bridge.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::position::Position;
use crate::fanout::{BridgeCmd, MsgRef, Reply, TopicMsgs, Window};
use crate::metrics::M;
use crate::shard::core::{Fail, Shard, State};
use crate::{debug, warn};

impl Shard {
    /// Gives `groups` their positions in Redis; one result per group, in order. Redis away
    /// or too slow: `Fail::Overloaded` after `--publish-timeout-ms` (nothing is sent after
    /// that); sent but not confirmed: `Fail::NotConfirmed`.
    pub(crate) async fn publish_redis(
        self: &Rc<Self>,
        groups: Vec<TopicMsgs>,
    ) -> Vec<Result<Vec<Position>, Fail>> {
        let n = groups.len();
        let overloaded = |sh: &Shard| {
            sh.metrics().add(M::PublishOverload, n as i64);
            (0..n).map(|_| Err(Fail::Overloaded)).collect()
        };
        let Some(bridge) = &self.node.bridge else {
            return overloaded(self);
        };
        let timeout = Duration::from_millis(self.node.cfg.publish_timeout_ms);
        let until = Instant::now() + timeout;
        let reply = {
            let mut st = self.st.borrow_mut();
            let reply = self.new_slot(&mut st, None);
            let cmd = BridgeCmd::Append {
                groups,
                reply,
                until,
            };
            if bridge.send(cmd).is_err() {
                st.pending.try_remove(reply.slot as usize);
                return overloaded(self);
            }
            reply
        };
        match monoio::time::timeout(timeout, self.wait_slot(reply)).await {
            Ok(Reply::Published(done)) => done.into_iter().map(|r| r.map_err(Fail::from)).collect(),
            Ok(_) => overloaded(self),
            Err(_) => overloaded(self),
        }
    }

    /// A message Redis pushed on a topic homed here.
    pub(crate) fn apply_pushed(&self, st: &mut State, msg: MsgRef) {
        let topic = msg.topic.clone();
        let fetching = st.fetching.contains_key(&topic);
        let Ok((tk, t)) = self.home_topic(st, &topic) else {
            warn!("redis: push on {topic} dropped: too many topics (--max-topics)");
            return;
        };
        let p = msg.pos;
        if p.offset == 0 {
            return;
        }
        if t.epoch != p.epoch {
            if t.epoch != 0 {
                warn!(
                    "redis: {topic} is in a new epoch ({:x} after {:x})",
                    p.epoch, t.epoch
                );
            }
            // First sight of the topic (or a new epoch): its cursor starts at this message.
            t.reset_to(p.epoch, p.offset - 1);
        }
        if p.offset <= t.last {
            debug!("redis: duplicate push {topic} {p} dropped");
            return;
        }
        if p.offset > t.last + 1 {
            let since = t.current();
            self.ask_gap(st, topic, since, p.offset);
            return;
        }
        if fetching {
            // The fetch in flight will bring it, in order.
            return;
        }
        let now = Instant::now();
        t.apply(msg.clone(), now, &self.bounds);
        let mask = t.mask;
        self.metrics().inc(M::Published);
        self.fan_out(st, tk, mask, &msg);
    }

    /// Asks the bridge for the messages after `since` (one fetch in flight per topic).
    fn ask_gap(&self, st: &mut State, topic: Arc<str>, since: Position, seen: u64) {
        if let Some(want) = st.fetching.get_mut(&topic) {
            *want = (*want).max(seen);
            return;
        }
        let Some(bridge) = &self.node.bridge else {
            return;
        };
        let cmd = BridgeCmd::Fetch {
            topic: topic.clone(),
            since,
            home: self.id as u16,
        };
        if bridge.send(cmd).is_ok() {
            st.fetching.insert(topic, seen);
        } else {
            // The next push asks again.
            warn!("redis: bridge inbox full; gap on {topic} after {since} fetched later");
        }
    }

    /// The window a gap fetch brought: applied in order; still behind what was pushed
    /// meanwhile: fetched again.
    pub(crate) fn apply_fetched(&self, st: &mut State, topic: Arc<str>, w: Window) {
        let want = st.fetching.remove(&topic).unwrap_or(0);
        if w.reset {
            // The Stream no longer has what this node missed: it starts again at Redis's
            // current position (an explicit reset to subscribers is not built yet).
            warn!(
                "redis: history of {topic} after this node's cursor is gone; now at {}",
                w.current
            );
            if let Ok((_, t)) = self.home_topic(st, &topic) {
                t.reset_to(w.current.epoch, w.current.offset);
            }
            return;
        }
        for m in w.msgs {
            self.apply_pushed(st, m);
        }
        let Ok((_, t)) = self.home_topic(st, &topic) else {
            return;
        };
        let (last, since) = (t.last, t.current());
        if last < want && !st.fetching.contains_key(&topic) {
            self.ask_gap(st, topic, since, want);
        }
    }
}
