//! A bounded run of consecutive messages and the bounds that cut it: one eviction rule for a
//! home's history (`home.rs`) and a remote topic's run (`recent.rs`).
//! Must not: know which of the two it serves, or do I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::fanout::MsgRef;

/// Bounds of one topic's history.
#[derive(Clone, Copy, Debug)]
pub struct HistoryBounds {
    pub messages: usize,
    pub bytes: usize,
    pub age: Duration,
}

impl HistoryBounds {
    pub fn from_config(c: &Config) -> Self {
        HistoryBounds {
            messages: c.history_messages,
            bytes: c.history_bytes,
            age: Duration::from_secs(c.history_secs),
        }
    }
}

/// A bounded run of consecutive messages, oldest first: a home's history, or the run of a
/// remote-homed topic a shard has received (`recent.rs`). One eviction rule for both.
/// One pointer while empty: most topics of a node with many idle subscribers have no history,
/// and every topic has a ring (or two, home and `Recent`), so an empty one must cost little.
#[derive(Default)]
pub struct Ring(pub(super) Option<Box<RingInner>>);

#[derive(Default)]
pub(super) struct RingInner {
    msgs: VecDeque<MsgRef>,
    /// Payload bytes in `msgs`.
    bytes: usize,
}

impl Ring {
    pub fn push(&mut self, m: MsgRef) {
        let r = self.0.get_or_insert_with(Box::default);
        r.bytes += m.data.len();
        r.msgs.push_back(m);
    }

    /// Drops what is past any bound: count, bytes, age. The newest message is kept even if it
    /// alone exceeds the byte bound, so a client one message behind can still catch up.
    /// Returns how many were dropped; an emptied ring frees its storage.
    pub fn evict(&mut self, now: Instant, b: &HistoryBounds) -> usize {
        let Some(r) = self.0.as_mut() else {
            return 0;
        };
        let mut dropped = 0;
        while let Some(front) = r.msgs.front() {
            let over = r.msgs.len() > b.messages
                || (r.bytes > b.bytes && r.msgs.len() > 1)
                || now.saturating_duration_since(front.at) > b.age;
            if !over {
                break;
            }
            r.bytes -= front.data.len();
            r.msgs.pop_front();
            dropped += 1;
        }
        if r.msgs.is_empty() {
            self.0 = None;
        }
        dropped
    }

    pub fn front(&self) -> Option<&MsgRef> {
        self.0.as_ref()?.msgs.front()
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.msgs.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |r| r.bytes)
    }

    /// Up to `limit` messages after the first `skip`.
    pub fn after(&self, skip: usize, limit: usize) -> Vec<MsgRef> {
        match &self.0 {
            Some(r) => r.msgs.iter().skip(skip).take(limit).cloned().collect(),
            None => Vec::new(),
        }
    }
}
