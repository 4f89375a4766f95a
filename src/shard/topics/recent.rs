//! `Recent`: the run of a remote-homed topic's messages a shard has received, which answers
//! windows without asking the home.
//! Must not: answer anything it cannot answer exactly — an older position, another epoch, a
//! bad one, and every reset are the home's.

use std::time::Instant;

use crate::codec::position::Position;
use crate::fanout::{MsgRef, Since, Window};
use crate::shard::topics::ring::{HistoryBounds, Ring};

/// The contiguous run of a remote-homed topic's messages that this shard has received since
/// its interest in the topic began. While the interest lasts (its subscribers here, and one to
/// two sweeps after the last one left), the home sends this shard every message after the
/// window it seeded the run with, in order, so the run has no gap; a window inside it (a long poll's re-request, an SSE reconnect) is answered here, with
/// no round trip to the home. Bounded by the same history bounds as the home's ring. Anything
/// it cannot answer (an older position, another epoch, a bad one) goes to the home.
pub struct Recent {
    /// No subscriber here at the last sweep (the outbox's sweep).
    pub(crate) idle: bool,
    /// The run outlived its last subscriber here and no window from the home has been applied
    /// since: it is exact for positions inside it, but its end is not "now" (a message the home
    /// published may still be on its way here), so a window from now is the home's to answer.
    /// A new connection then starts after every message published before it subscribed, as it
    /// did when the interest ended with the last subscriber.
    pub(crate) unsynced: bool,
    epoch: u64,
    /// Offset just before the first message of `ring` (the newest offset when it is empty).
    base: u64,
    ring: Ring,
}

impl Recent {
    /// Starts a run from the window the home sent for a new subscription here (the home sends
    /// every later message here, in order).
    pub(crate) fn seed(w: &Window) -> Recent {
        let contiguous = w.msgs.last().is_some_and(|m| m.pos == w.current);
        let mut ring = Ring::default();
        let base = if contiguous {
            w.msgs.iter().for_each(|m| ring.push(m.clone()));
            w.msgs[0].pos.offset - 1
        } else {
            w.current.offset
        };
        Recent {
            idle: false,
            unsynced: false,
            epoch: w.current.epoch,
            base,
            ring,
        }
    }

    fn last(&self) -> u64 {
        self.base + self.ring.len() as u64
    }

    /// Appends the next message; false when it is not the next one (the run is broken).
    pub(crate) fn push(&mut self, m: &MsgRef, b: &HistoryBounds) -> bool {
        if m.pos.epoch != self.epoch {
            return false;
        }
        if m.pos.offset <= self.last() {
            return true;
        }
        if m.pos.offset != self.last() + 1 {
            return false;
        }
        self.ring.push(m.clone());
        self.evict(m.at, b);
        true
    }

    fn evict(&mut self, now: Instant, b: &HistoryBounds) {
        self.base += self.ring.evict(now, b) as u64;
    }

    /// The window after `since` if this run can answer it exactly.
    pub(crate) fn window(
        &mut self,
        since: Since,
        limit: usize,
        now: Instant,
        b: &HistoryBounds,
    ) -> Option<Window> {
        self.evict(now, b);
        let current = Position::new(self.epoch, self.last());
        let from = match since {
            Since::None if self.unsynced => return None,
            Since::None => current.offset,
            Since::At(p)
                if p.epoch == self.epoch && p.offset >= self.base && p.offset <= self.last() =>
            {
                p.offset
            }
            _ => return None,
        };
        let skip = (from - self.base) as usize;
        Some(Window {
            reset: false,
            msgs: self.ring.after(skip, limit),
            current,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::fanout::Msg;

    /// Shared with the outbox's tests, which feed the same kind of runs.
    pub(crate) fn msg(epoch: u64, offset: u64, at: Instant) -> MsgRef {
        Arc::new(Msg {
            topic: Arc::from("t"),
            pos: Position::new(epoch, offset),
            event: None,
            data: vec![b'x'; 10].into_boxed_slice(),
            binary: false,
            at,
        })
    }

    pub(crate) fn bounds(messages: usize) -> HistoryBounds {
        HistoryBounds {
            messages,
            bytes: 1 << 20,
            age: Duration::from_secs(60),
        }
    }

    pub(crate) fn offsets(w: &Window) -> Vec<u64> {
        w.msgs.iter().map(|m| m.pos.offset).collect()
    }

    #[test]
    fn recent_answers_only_inside_its_run() {
        let t0 = Instant::now();
        let b = bounds(3);
        let mut r = Recent {
            idle: false,
            unsynced: false,
            epoch: 7,
            base: 10,
            ring: Ring::default(),
        };
        for o in 11..=14 {
            assert!(r.push(&msg(7, o, t0), &b));
        }
        // A duplicate is ignored; the ring keeps 12..=14 (bound 3).
        assert!(r.push(&msg(7, 13, t0), &b));
        assert_eq!(r.base, 11);
        let w = r
            .window(Since::At(Position::new(7, 12)), 10, t0, &b)
            .unwrap();
        assert_eq!(offsets(&w), [13, 14]);
        assert_eq!(w.current, Position::new(7, 14));
        assert_eq!(
            offsets(
                &r.window(Since::At(Position::new(7, 11)), 1, t0, &b)
                    .unwrap()
            ),
            [12]
        );
        assert!(r
            .window(Since::At(Position::new(7, 14)), 10, t0, &b)
            .unwrap()
            .msgs
            .is_empty());
        assert!(r.window(Since::None, 10, t0, &b).unwrap().msgs.is_empty());
        // Outside the run: the home must answer (too old, future, other epoch, bad).
        for since in [
            Since::At(Position::new(7, 10)),
            Since::At(Position::new(7, 15)),
            Since::At(Position::new(8, 12)),
            Since::Bad,
        ] {
            assert!(r.window(since, 10, t0, &b).is_none(), "{since:?}");
        }
        // A gap or another epoch breaks the run.
        assert!(!r.push(&msg(7, 16, t0), &b));
        assert!(!r.push(&msg(8, 15, t0), &b));
    }

    /// A remote-homed topic's interest (and its run) outlives its last subscriber by one to
    /// two sweeps; a topic with no run ends its interest with its last subscriber.

    #[test]
    fn recent_ages_out_like_the_home() {
        let t0 = Instant::now();
        let b = HistoryBounds {
            messages: 100,
            bytes: 1 << 20,
            age: Duration::from_secs(5),
        };
        let mut r = Recent {
            idle: false,
            unsynced: false,
            epoch: 1,
            base: 0,
            ring: Ring::default(),
        };
        r.push(&msg(1, 1, t0), &b);
        r.push(&msg(1, 2, t0 + Duration::from_secs(4)), &b);
        let later = t0 + Duration::from_secs(6);
        assert!(r
            .window(Since::At(Position::new(1, 0)), 10, later, &b)
            .is_none());
        assert_eq!(
            offsets(
                &r.window(Since::At(Position::new(1, 1)), 10, later, &b)
                    .unwrap()
            ),
            [2]
        );
    }
}
