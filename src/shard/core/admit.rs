//! A shard's side of the admission bounds (the rules are `crate::admission`): its share of
//! `--accept-rate`, and which client address each of its connections was counted under for
//! `--max-connections-per-ip`, so the count is released exactly once however it ends.
//!
//! Owns: the shard's accept bucket and its clock (milliseconds since the shard started), and
//! the addresses of parked streams (an idle stream's `Out` does not carry one: the map is
//! empty while the cap is off). The `Counted` guard every admitted connection carries, which
//! releases the counts, is `core/mod.rs`'s (it holds the shard).
//! Must not: block — the per-address table's lock is taken only at accept and at close.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::admission::Bucket;
use crate::config::Config;

pub struct Admit {
    born: Instant,
    /// This shard's share of `--accept-rate`, tokens a second (and its burst).
    rate: u32,
    accept: Cell<Bucket>,
    /// With `--max-connections-per-ip`: the address of each parked stream, by its fd (which
    /// its `Out` owns until `park::finish` closes it).
    pub(super) parked_ips: RefCell<HashMap<RawFd, IpAddr>>,
}

impl Admit {
    pub fn new(cfg: &Config) -> Admit {
        // The node's rate split over its shards (the kernel spreads connections evenly over
        // SO_REUSEPORT listeners), rounded up so a small rate still admits someone.
        let rate = cfg.accept_rate.div_ceil(cfg.shards.max(1) as u32).max(1);
        Admit {
            born: Instant::now(),
            rate,
            accept: Cell::new(Bucket::full(rate, 0)),
            parked_ips: RefCell::default(),
        }
    }

    /// Milliseconds since the shard started: the clock of its buckets.
    pub fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    /// Takes a token for a new connection; false past `--accept-rate`.
    pub fn try_accept(&self) -> bool {
        let mut b = self.accept.get();
        let ok = b.try_take(self.rate, self.rate, self.now_ms());
        self.accept.set(b);
        ok
    }
}
