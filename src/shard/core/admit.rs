//! A shard's side of the admission bounds (the rules are `crate::admission`): its share of
//! `--accept-rate`, and which client address each of its connections was counted under for
//! `--max-connections-per-ip`, so the count is released exactly once however it ends.
//!
//! Owns: the shard's accept bucket and its clock (milliseconds since the shard started), the
//! `Counted` guard every admitted connection carries, and the addresses of parked streams
//! (an idle stream's `Out` does not carry one: the map is empty while the cap is off).
//! Must not: block — the per-address table's lock is taken only at accept and at close.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::admission::Bucket;
use crate::config::Config;
use crate::metrics::M;
use crate::shard::core::Shard;

pub struct Admit {
    born: Instant,
    /// This shard's share of `--accept-rate`, tokens a second (and its burst).
    rate: u32,
    accept: Cell<Bucket>,
    /// With `--max-connections-per-ip`: the address of each parked stream, by its fd (which
    /// its `Out` owns until `park::finish` closes it).
    parked_ips: RefCell<HashMap<RawFd, IpAddr>>,
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
