//! The home side of a topic: positions, history and who to fan out to.
//!
//! Owns: for each topic whose home (`hash(topic) % shards`) is this shard, its epoch, last
//! offset, bounded history ring and the bit mask of other shards that have subscribers. A topic
//! has exactly one home, so positions are one total order even with publishers on every core.
//! Must not: touch connections (delivery to local subscribers is the outbox's), or do I/O.

use std::sync::Arc;
use std::time::Instant;

use crate::codec::position::Position;
use crate::fanout::{Msg, MsgRef, NewMsg, Since, Window};
use crate::shard::topics::ring::{HistoryBounds, Ring};

pub struct HomeTopic {
    pub epoch: u64,
    /// Offset of the newest message (0 before the first).
    pub last: u64,
    pub ring: Ring,
    /// Other shards with subscribers (bit per shard).
    pub mask: u64,
    /// Last publish, or creation (`--redis`: the last subscription, or creation).
    pub touched: Instant,
    /// `--redis`: whether the node's bridge is subscribed to the topic's channel for this home.
    pub live: Live,
}

/// `--redis`: how far this node follows a topic homed here through pub/sub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Live {
    /// Not subscribed: what the home holds may be stale, so it answers no position itself.
    No,
    /// The bridge was asked to subscribe; not confirmed yet.
    Asked,
    /// Subscribed; Redis's retained history (or what followed this home's cursor) is being
    /// fetched. Windows wait for it.
    Loading,
    /// Subscribed and caught up: pushes keep the home current; it answers windows.
    Yes,
}

/// A fresh epoch for a topic incarnation: 48 bits of a hash of the process seed, the topic
/// and a shard-local counter, never 0.
pub fn new_epoch(seed: u64, topic: &str, counter: u64) -> u64 {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for chunk in [crate::fanout::topic_hash(topic.as_bytes()), counter] {
        h ^= chunk;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
    }
    (h & 0xffff_ffff_ffff).max(1)
}

impl HomeTopic {
    pub fn new(epoch: u64, now: Instant) -> Self {
        HomeTopic {
            epoch,
            last: 0,
            ring: Ring::default(),
            mask: 0,
            touched: now,
            live: Live::No,
        }
    }

    pub fn current(&self) -> Position {
        Position::new(self.epoch, self.last)
    }

    /// Gives `m` the next position and keeps it in history within `b`.
    pub fn append(
        &mut self,
        topic: &Arc<str>,
        m: NewMsg,
        now: Instant,
        b: &HistoryBounds,
    ) -> MsgRef {
        self.last += 1;
        self.touched = now;
        let msg = Arc::new(Msg {
            topic: topic.clone(),
            pos: Position::new(self.epoch, self.last),
            event: m.event,
            data: m.data,
            binary: m.binary,
            at: now,
        });
        self.ring.push(msg.clone());
        self.evict(now, b);
        msg
    }

    /// `--redis`: the cursor moves to `epoch:last` with nothing held (a topic first seen, a new
    /// epoch, or history Redis no longer has).
    pub fn reset_to(&mut self, epoch: u64, last: u64) {
        self.epoch = epoch;
        self.last = last;
        self.ring = Ring::default();
    }

    /// `--redis`: keeps `msg`, the next message Redis gave this topic, and moves the cursor.
    pub fn apply(&mut self, msg: MsgRef, now: Instant, b: &HistoryBounds) {
        debug_assert_eq!(msg.pos, Position::new(self.epoch, self.last + 1));
        // Not `touched`: a topic with no subscriber left is freed (and unsubscribed) after
        // `--topic-idle-secs` however busy Redis keeps it.
        self.last = msg.pos.offset;
        self.ring.push(msg);
        self.evict(now, b);
    }

    /// Drops what is past any bound (see [`Ring::evict`]).
    pub fn evict(&mut self, now: Instant, b: &HistoryBounds) {
        self.ring.evict(now, b);
    }

    /// The messages after `since`, or a reset when `since` is outside retained history.
    pub fn window(
        &mut self,
        since: Since,
        limit: usize,
        now: Instant,
        b: &HistoryBounds,
    ) -> Window {
        self.evict(now, b);
        let current = self.current();
        let reset = |current| Window {
            reset: true,
            msgs: Vec::new(),
            current,
        };
        let p = match since {
            Since::None => {
                return Window {
                    reset: false,
                    msgs: Vec::new(),
                    current,
                }
            }
            Since::Bad => return reset(current),
            Since::At(p) => p,
            // History on first subscribe: the newest `n` retained (all of them for
            // `earliest`), bounded by what the ring keeps after the eviction above.
            Since::Earliest | Since::Rewind(_) => {
                let n = match since {
                    Since::Rewind(n) => (n.min(self.ring.len() as u64)) as usize,
                    _ => self.ring.len(),
                };
                return Window {
                    reset: false,
                    msgs: self.ring.after(self.ring.len() - n, limit),
                    current,
                };
            }
        };
        // Oldest offset a client may stand at and still miss nothing: just before the first
        // retained message, or the current offset when history is empty.
        let first_kept = self.ring.front().map_or(self.last + 1, |m| m.pos.offset);
        if p.epoch != self.epoch || p.offset > self.last || p.offset + 1 < first_kept {
            return reset(current);
        }
        let skip = (p.offset + 1 - first_kept) as usize;
        let msgs = self.ring.after(skip, limit);
        Window {
            reset: false,
            msgs,
            current,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bounds(messages: usize, bytes: usize, secs: u64) -> HistoryBounds {
        HistoryBounds {
            messages,
            bytes,
            age: Duration::from_secs(secs),
        }
    }

    fn new_msg(s: &str) -> NewMsg {
        NewMsg {
            event: None,
            data: s.as_bytes().into(),
            binary: false,
        }
    }

    fn offsets(w: &Window) -> Vec<u64> {
        w.msgs.iter().map(|m| m.pos.offset).collect()
    }

    #[test]
    fn window_inside_and_outside_history() {
        let t0 = Instant::now();
        let b = bounds(3, 1 << 20, 3600);
        let topic: Arc<str> = "t".into();
        let mut h = HomeTopic::new(7, t0);
        assert_eq!(
            h.window(Since::None, 10, t0, &b).current,
            Position::new(7, 0)
        );
        // Empty topic, client at 0: nothing missed.
        let w = h.window(Since::At(Position::new(7, 0)), 10, t0, &b);
        assert!(!w.reset && w.msgs.is_empty());
        for i in 1..=5 {
            let m = h.append(&topic, new_msg(&format!("m{i}")), t0, &b);
            assert_eq!(m.pos, Position::new(7, i));
        }
        // Ring keeps 3, 4, 5.
        assert_eq!(
            offsets(&h.window(Since::At(Position::new(7, 2)), 10, t0, &b)),
            [3, 4, 5]
        );
        assert_eq!(
            offsets(&h.window(Since::At(Position::new(7, 3)), 10, t0, &b)),
            [4, 5]
        );
        assert_eq!(
            offsets(&h.window(Since::At(Position::new(7, 3)), 1, t0, &b)),
            [4]
        );
        let w = h.window(Since::At(Position::new(7, 5)), 10, t0, &b);
        assert!(!w.reset && w.msgs.is_empty());
        // Too old, future, other epoch, malformed: reset with the current position.
        for since in [
            Since::At(Position::new(7, 1)),
            Since::At(Position::new(7, 6)),
            Since::At(Position::new(8, 4)),
            Since::Bad,
        ] {
            let w = h.window(since, 10, t0, &b);
            assert!(w.reset, "{since:?}");
            assert!(w.msgs.is_empty());
            assert_eq!(w.current, Position::new(7, 5));
        }
    }

    #[test]
    fn earliest_and_rewind_take_the_newest_retained() {
        let t0 = Instant::now();
        let b = bounds(3, 1 << 20, 3600);
        let topic: Arc<str> = "t".into();
        let mut h = HomeTopic::new(7, t0);
        let w = h.window(Since::Earliest, 10, t0, &b);
        assert!(!w.reset && w.msgs.is_empty() && w.current == Position::new(7, 0));
        for i in 1..=5 {
            h.append(&topic, new_msg(&format!("m{i}")), t0, &b);
        }
        assert_eq!(offsets(&h.window(Since::Earliest, 10, t0, &b)), [3, 4, 5]);
        assert_eq!(offsets(&h.window(Since::Earliest, 2, t0, &b)), [3, 4]);
        assert_eq!(offsets(&h.window(Since::Rewind(2), 10, t0, &b)), [4, 5]);
        assert_eq!(offsets(&h.window(Since::Rewind(2), 1, t0, &b)), [4]);
        assert_eq!(offsets(&h.window(Since::Rewind(50), 10, t0, &b)), [3, 4, 5]);
        assert_eq!(
            offsets(&h.window(Since::Rewind(u64::MAX), 10, t0, &b)),
            [3, 4, 5]
        );
        let w = h.window(Since::Rewind(0), 10, t0, &b);
        assert!(!w.reset && w.msgs.is_empty() && w.current == Position::new(7, 5));
    }

    #[test]
    fn history_bounded_by_bytes_and_age() {
        let t0 = Instant::now();
        let topic: Arc<str> = "t".into();
        let b = bounds(100, 10, 3600);
        let mut h = HomeTopic::new(1, t0);
        for _ in 0..5 {
            h.append(&topic, new_msg("abcd"), t0, &b);
        }
        assert_eq!(h.ring.len(), 2);
        assert_eq!(h.ring.bytes(), 8);
        // One message bigger than the byte bound is still kept alone.
        h.append(&topic, new_msg("0123456789abcdef"), t0, &b);
        assert_eq!(h.ring.len(), 1);

        let b = bounds(100, 1 << 20, 10);
        let mut h = HomeTopic::new(1, t0);
        h.append(&topic, new_msg("old"), t0, &b);
        h.append(&topic, new_msg("new"), t0 + Duration::from_secs(8), &b);
        let w = h.window(
            Since::At(Position::new(1, 0)),
            10,
            t0 + Duration::from_secs(11),
            &b,
        );
        assert!(w.reset, "message 1 aged out, so resuming from 0 is a gap");
        let w = h.window(
            Since::At(Position::new(1, 1)),
            10,
            t0 + Duration::from_secs(11),
            &b,
        );
        assert_eq!(offsets(&w), [2]);
        // Everything aged out: the ring frees its storage, and a window past it is still exact.
        h.evict(t0 + Duration::from_secs(30), &b);
        assert!(h.ring.is_empty() && h.ring.0.is_none());
        let w = h.window(
            Since::At(Position::new(1, 2)),
            10,
            t0 + Duration::from_secs(30),
            &b,
        );
        assert!(!w.reset && w.msgs.is_empty());
        assert_eq!(w.current, Position::new(1, 2));
    }

    #[test]
    fn epochs_differ_per_incarnation_and_seed() {
        let a = new_epoch(1, "t", 0);
        assert_ne!(a, new_epoch(1, "t", 1));
        assert_ne!(a, new_epoch(2, "t", 0));
        assert_ne!(a, new_epoch(1, "u", 0));
        assert!(a > 0 && a < 1 << 48);
    }
}
