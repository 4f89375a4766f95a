//! What every task of the Redis bridge shares (`Ctx`), and its one way to reach a shard
//! (`deliver`).
//!
//! Owns: the scripts, limits and key prefix, the node's wanted channels (outliving
//! connections), the broken-connection flag, and the counters that make every append's
//! proposed epoch fresh.
//! Must not: hold shard state or block a shard.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::scripts::{Limits, Scripts};
use crate::fanout::{BridgeCmd, Cmd};
use crate::node::Node;

/// What every task of the bridge shares.
pub(super) struct Ctx {
    pub(super) node: Arc<Node>,
    pub(super) scripts: Scripts,
    pub(super) limits: Limits,
    pub(super) prefix: String,
    pub(super) seed: u64,
    /// A script call found the connection broken: `serve` returns and the bridge reconnects
    /// (redis-rs's multiplexed connection does not come back by itself).
    pub(super) broken: AtomicBool,
    /// The topics this node has subscribers for, and each one's home shard: subscribed again on
    /// every new connection (`channels`).
    want: std::sync::Mutex<std::collections::HashMap<Arc<str>, u16>>,
    /// Pushes received, for `--debug-drop-pushes`.
    pushes: std::sync::atomic::AtomicU64,
    /// Script calls that may begin an epoch, so each proposes its own (`Ctx::fresh_epoch`).
    proposed: std::sync::atomic::AtomicU64,
}

impl Ctx {
    pub(super) fn new(node: Arc<Node>) -> Ctx {
        Ctx {
            limits: Limits {
                history_messages: node.cfg.history_messages,
                history_secs: node.cfg.history_secs,
            },
            prefix: node.cfg.redis_prefix.clone(),
            scripts: Scripts::default(),
            seed: node.seed,
            broken: AtomicBool::new(false),
            want: std::sync::Mutex::default(),
            pushes: std::sync::atomic::AtomicU64::new(0),
            proposed: std::sync::atomic::AtomicU64::new(0),
            node,
        }
    }

    /// Counts a push; returns how many there were so far, this one included.
    pub(super) fn count_push(&self) -> u64 {
        self.pushes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The topics to subscribe to on a new connection.
    pub(super) fn wanted(&self) -> Vec<Arc<str>> {
        self.want_set().keys().cloned().collect()
    }

    fn want_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<Arc<str>, u16>> {
        // Only the bridge thread takes it: a poisoned lock still holds a whole map.
        self.want.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes interest starting or ending (`BridgeCmd::Subscribe`, `Unsubscribe`).
    pub(super) fn note_interest(&self, cmd: &BridgeCmd) {
        match cmd {
            BridgeCmd::Subscribe { topic, home } => {
                self.want_set().insert(topic.clone(), *home);
            }
            BridgeCmd::Unsubscribe { topic } => {
                self.want_set().remove(topic);
            }
            _ => {}
        }
    }

    /// A fresh epoch for every script call this process makes that may begin one (appends and
    /// windows), across reconnects: a topic that starts again never gets an epoch it had.
    pub(super) fn fresh_epoch(&self) -> u64 {
        let n = self.proposed.fetch_add(1, Ordering::Relaxed);
        super::scripts::fresh_epoch(self.seed, n)
    }

    /// Notes an error that means the connection is gone (not a script's own error).
    pub(super) fn check(&self, e: &redis::RedisError) {
        if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

/// Hands `cmd` to shard `to`, waiting while its inbox is full (the bridge waits, a shard never
/// does; nothing is dropped).
pub(super) async fn deliver(node: &Node, to: usize, cmd: Cmd) {
    let mut cmd = cmd;
    loop {
        match node.bus.send(to, cmd) {
            Ok(()) => return,
            Err(back) => {
                if node.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                cmd = back;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}
