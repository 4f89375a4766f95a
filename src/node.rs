//! What all shards share, read-only: the configuration, the token rules, the bus, the metrics,
//! two approximate totals used as caps and the per-address connection counts. Everything here
//! is `Sync`; nothing here is a shard object.
//! Kept apart from `fanout` so that `fanout` is only queues and commands, below `config`.

use std::sync::atomic::{AtomicBool, AtomicUsize};

use crate::admission::PerIp;
use crate::auth::Auth;
use crate::config::Config;
use crate::fanout::{BridgeInbox, Bus};
use crate::metrics::Metrics;

/// Built once by `runtime::run`, then shared by every shard thread behind an `Arc`.
pub struct Node {
    pub cfg: Config,
    /// The token rules (`--jwt-*`), loaded once at startup; `None` when no key is configured.
    pub auth: Option<Auth>,
    pub bus: Bus,
    /// With `--redis`: the bridge thread's inbox (`backplane::bridge`); `None` standalone.
    pub bridge: Option<BridgeInbox>,
    pub metrics: Metrics,
    /// Open connections on all shards (the `--max-connections` cap).
    pub connections: AtomicUsize,
    /// Topics alive on all shards (the `--max-topics` cap).
    pub topics: AtomicUsize,
    /// Open connections per client address (`--max-connections-per-ip`; untouched when 0):
    /// counted at accept, released when the connection ends (`shard::core::Counted`).
    pub per_ip: PerIp,
    /// Set once by the signal thread.
    pub shutting_down: AtomicBool,
    /// Random per process: mixed into topic epochs so a restarted node never reuses one.
    pub seed: u64,
    // ---- /stats (issue 17) ----
    /// When the node started: `/stats` uptime.
    pub started: std::time::Instant,
    /// The last minutes of per-second totals, written by shard 0's ticker (`/stats` rates).
    pub samples: crate::metrics::Samples,
}

impl Node {
    pub fn new(cfg: Config, auth: Option<Auth>) -> Node {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        let shards = cfg.shards;
        Node {
            bus: Bus::new(shards, cfg.inbox_capacity),
            bridge: cfg
                .redis
                .is_some()
                .then(|| BridgeInbox::new(cfg.inbox_capacity)),
            metrics: Metrics::new(shards),
            connections: Default::default(),
            topics: Default::default(),
            per_ip: PerIp::new(cfg.max_connections_per_ip),
            shutting_down: Default::default(),
            seed: h.finish(),
            started: std::time::Instant::now(),
            samples: Default::default(),
            auth,
            cfg,
        }
    }
}
