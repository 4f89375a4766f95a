//! The shard's writer: which connections' chains are written when. A cycle is one turn over
//! the connections waiting when it starts, taken oldest first in slices (`write_cycle`, called
//! by the inbox task, which paces cycles under load); `flush` writes everything at once (the
//! ticker's heartbeats), `flush_out` one connection out of turn (a WebSocket's own answers, a
//! new subscription's replay). What a write is: `chains.rs`.
//! Must not: block or await.

use crate::shard::outbox::chains::write_chain;
use crate::shard::outbox::out::Out;
use crate::shard::outbox::subs::{Policy, Subscribers};

impl Subscribers {
    /// Removes a connection's `Out` and frees its chain: the writer may not have got round to
    /// it yet, and its slab key may be reused by the next connection before it does.
    pub fn remove_out(&mut self, k: usize) -> Option<Out> {
        let mut out = self.outs.try_remove(k)?;
        if out.dirty {
            self.chains.take(&mut out, &mut Vec::new());
        }
        Some(out)
    }

    /// Connection `k`'s chain as bytes, taken out of the arena: the last words of a
    /// connection that ends before the writer got round to it.
    pub fn take_chain(&mut self, k: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let Some(out) = self.outs.get_mut(k).filter(|o| o.dirty) else {
            return v;
        };
        let mut chain = Vec::new();
        self.chains.take(out, &mut chain);
        for b in &chain {
            v.extend_from_slice(b);
        }
        out.wrote(v.len());
        v
    }

    /// Whether a chain is waiting for a connection the shard is ending: its task closes as
    /// soon as it sees the kill with an empty backlog, so such bytes (a raw WebSocket's reset
    /// close frame) must be written before any connection task runs again.
    pub fn must_flush_now(&self) -> bool {
        self.chains.dirty.iter().any(|&k| {
            self.outs
                .get(k as usize)
                .is_some_and(|o| o.dirty && o.kill.is_some())
        })
    }

    /// Writes every chain now: one syscall per connection (more only past `IOV_CHUNK`
    /// messages).
    pub fn flush(&mut self, p: &Policy<'_>) {
        self.flush_some(p, usize::MAX);
    }

    /// Writes the chains of at most `max` connections, oldest first. What a socket does not
    /// take goes to the connection's backlog and its task (or the readiness set) is woken to
    /// wait for writability. Returns whether connections are still waiting.
    pub fn flush_some(&mut self, p: &Policy<'_>, max: usize) -> bool {
        self.take_and_write(p, max);
        self.chains.has_work()
    }

    /// Starts a writer cycle: one turn over the connections waiting now. A connection queued
    /// to again after the cycle took it waits for the next one; one still waiting in the
    /// cycle takes the new bytes in the same write. Returns whether any connection waits.
    pub fn start_cycle(&mut self) -> bool {
        self.chains.cycle_left = self.chains.dirty.len();
        self.chains.cycle_left > 0
    }

    /// Writes at most `max` connections of the current cycle. Returns whether the cycle has
    /// connections left.
    pub fn write_cycle(&mut self, p: &Policy<'_>, max: usize) -> bool {
        let left = self.chains.cycle_left.min(self.chains.dirty.len());
        let n = left.min(max);
        self.take_and_write(p, n);
        self.chains.cycle_left = left - n;
        self.chains.cycle_left > 0
    }

    /// Takes `n` keys off the front of the queue (stale ones included) and writes the chains
    /// of those that still have one.
    fn take_and_write(&mut self, p: &Policy<'_>, n: usize) {
        let mut batch = std::mem::take(&mut self.batch);
        for _ in 0..n {
            let Some(k) = self.chains.dirty.pop_front() else {
                break;
            };
            let Some(out) = self.outs.get_mut(k as usize).filter(|o| o.dirty) else {
                continue;
            };
            self.chains.take(out, &mut batch);
            write_chain(out, &batch, p.metrics);
            batch.clear();
        }
        self.batch = batch;
    }

    /// Writes connection `k`'s chain now, out of turn (a WebSocket's own answers, a new
    /// subscription's replay).
    pub fn flush_out(&mut self, k: usize, p: &Policy<'_>) {
        let Some(out) = self.outs.get_mut(k).filter(|o| o.dirty) else {
            return;
        };
        let mut batch = std::mem::take(&mut self.batch);
        self.chains.take(out, &mut batch);
        write_chain(out, &batch, p.metrics);
        batch.clear();
        self.batch = batch;
    }
}
