//! Per-shard counters and gauges, rendered as Prometheus text on `GET /metrics`.
//!
//! Owns: one cache-line-aligned block of relaxed atomics per shard. A shard only ever writes its
//! own block (so there is no contention); `/metrics` on any shard reads them all and sums.
//! Must not: be used for control decisions that need exact cross-shard agreement (except the
//! connection and topic totals, which are deliberately approximate caps).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident => $prom:literal, $kind:literal, $help:literal;)*) => {
        /// Every metric the node exports.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        pub enum M { $($name,)* }
        const ALL: &[(M, &str, &str, &str)] = &[$((M::$name, $prom, $kind, $help),)*];
        const COUNT: usize = ALL.len();
    };
}

counters! {
    ConnectionsOpen => "ringcast_connections_open", "gauge", "Open client connections.";
    ConnectionsAccepted => "ringcast_connections_accepted_total", "counter", "Connections accepted.";
    ConnectionsRejected => "ringcast_connections_rejected_total", "counter", "Connections refused over --max-connections (503 or closed at accept).";
    Requests => "ringcast_http_requests_total", "counter", "HTTP requests parsed.";
    BadRequests => "ringcast_http_bad_requests_total", "counter", "Requests answered 4xx/5xx for bad input or limits.";
    Timeouts => "ringcast_http_timeouts_total", "counter", "Connections closed by the header or idle timeout.";
    Published => "ringcast_messages_published_total", "counter", "Messages given a position by this shard (as a topic's home).";
    Delivered => "ringcast_messages_delivered_total", "counter", "Messages written (or queued) to subscribers on this shard.";
    SlowDisconnects => "ringcast_slow_client_disconnects_total", "counter", "Clients closed by --slow-client disconnect.";
    SlowDrops => "ringcast_slow_client_drops_total", "counter", "Messages skipped by --slow-client drop.";
    InboxFull => "ringcast_inbox_full_total", "counter", "Pushes refused by a full shard inbox (backpressure).";
    PublishOverload => "ringcast_publish_overload_total", "counter", "Publishes answered 503 after --publish-timeout-ms of backpressure.";
    Topics => "ringcast_topics", "gauge", "Topics alive whose home is this shard.";
    TopicsFreed => "ringcast_topics_freed_total", "counter", "Idle topics freed.";
    SseOpen => "ringcast_sse_streams_open", "gauge", "Open SSE streams.";
    WsOpen => "ringcast_websockets_open", "gauge", "Open WebSocket connections.";
    WsV1Open => "ringcast_websockets_v1_open", "gauge", "Open WebSocket connections speaking ringcast.v1 (also counted in ringcast_websockets_open).";
    LongPollWaiting => "ringcast_longpoll_waiting", "gauge", "Long polls waiting for a message.";
    Resets => "ringcast_resets_total", "counter", "Resume points answered with a reset.";
    AuthRefused => "ringcast_auth_refused_total", "counter", "Subscribes and publishes refused by the token rules (401/403).";
    LocalWindows => "ringcast_windows_local_total", "counter", "Windows answered from the messages a shard already received, with no round trip to the topic's home.";
    BufferedBytes => "ringcast_client_buffered_bytes", "gauge", "Bytes waiting in client send buffers.";
    // Admission (issue 15): one counter per bound.
    AcceptRateRefused => "ringcast_accept_rate_refused_total", "counter", "Connections answered 503 at accept over --accept-rate.";
    PerIpRefused => "ringcast_per_ip_refused_total", "counter", "Connections answered 503 at accept over --max-connections-per-ip.";
    SubscriptionsRefused => "ringcast_subscriptions_refused_total", "counter", "ringcast.v1 subscribes refused over --max-subscriptions-per-connection.";
    WsPublishRateRefused => "ringcast_ws_publish_rate_refused_total", "counter", "WebSocket publishes refused over --ws-publish-rate.";
    StreamWrites => "ringcast_stream_writes_total", "counter", "Write syscalls the writer made to streaming clients (delivered per write: how much it batches).";
    PendingDeliveries => "ringcast_pending_deliveries", "gauge", "Deliveries queued for subscribers that the shard's writer has not written yet (--max-pending-deliveries).";
    // The Redis backplane (--redis, issue 14). The bridge's own series are on shard 0.
    RedisConnected => "ringcast_redis_connected", "gauge", "1 while the bridge is connected and subscribed to Redis (shard 0 only).";
    RedisReconnects => "ringcast_redis_reconnects_total", "counter", "Times the bridge connected to Redis again after losing it (shard 0 only).";
    RedisPushesDropped => "ringcast_redis_pushes_dropped_total", "counter", "Pushes the bridge dropped on purpose (--debug-drop-pushes; shard 0 only).";
    RedisResyncs => "ringcast_redis_resyncs_total", "counter", "Topics homed here checked against Redis: after a reconnect, or while quiet (once, then every 30 s).";
    RedisEpochResets => "ringcast_redis_epoch_resets_total", "counter", "Open subscriptions told of a reset because Redis started their topic in a new epoch (a restart that may have lost writes).";
    RedisGapsRepaired => "ringcast_redis_gaps_repaired_total", "counter", "Messages this home missed from pub/sub and fetched from the topic's Stream.";
    RedisPublishRefused => "ringcast_redis_publish_refused_total", "counter", "Publishes answered 503 because Redis was away, too slow, or did not confirm.";
    StreamResets => "ringcast_stream_resets_total", "counter", "Open subscriptions told of a reset: the topic's epoch changed in Redis, or history after the node's cursor was gone.";
}

#[repr(align(128))]
pub struct ShardMetrics {
    v: [AtomicI64; COUNT],
}

impl Default for ShardMetrics {
    fn default() -> Self {
        ShardMetrics {
            v: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }
}

impl ShardMetrics {
    #[inline]
    pub fn add(&self, m: M, n: i64) {
        self.v[m as usize].fetch_add(n, Ordering::Relaxed);
    }
    #[inline]
    pub fn inc(&self, m: M) {
        self.add(m, 1);
    }
    #[inline]
    pub fn dec(&self, m: M) {
        self.add(m, -1);
    }
    #[inline]
    pub fn set(&self, m: M, v: i64) {
        self.v[m as usize].store(v, Ordering::Relaxed);
    }
    pub fn get(&self, m: M) -> i64 {
        self.v[m as usize].load(Ordering::Relaxed)
    }
}

/// All shards' blocks.
#[derive(Default)]
pub struct Metrics {
    pub shards: Vec<ShardMetrics>,
}

impl Metrics {
    pub fn new(shards: usize) -> Self {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
        }
    }

    pub fn total(&self, m: M) -> i64 {
        self.shards.iter().map(|s| s.get(m)).sum()
    }

    /// Prometheus text exposition format 0.0.4, one series per shard plus no totals (sum in PromQL).
    pub fn render(&self, out: &mut String) {
        for &(m, name, kind, help) in ALL {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (i, s) in self.shards.iter().enumerate() {
                let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", s.get(m));
            }
        }
    }
}

// ---- /stats: per-second samples (issue 17) ----

/// How many per-second samples `/stats` keeps: five minutes.
pub const SAMPLES: usize = 300;

/// One second's totals over every shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub unix_ms: u64,
    pub published: i64,
    pub delivered: i64,
    pub connections: i64,
}

/// A ring of the last [`SAMPLES`] per-second totals, so `/stats` can say publishes/s and
/// deliveries/s without a lock or a question to each shard. One writer (shard 0's ticker,
/// once a second); readers on any shard. The hot path is untouched: a sample sums the
/// counters the shards keep anyway.
pub struct Samples {
    /// How many samples were ever written; slot `i % SAMPLES` holds sample `i`.
    written: AtomicU64,
    slots: [[AtomicI64; 4]; SAMPLES],
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            written: AtomicU64::new(0),
            slots: std::array::from_fn(|_| std::array::from_fn(|_| AtomicI64::new(0))),
        }
    }
}

impl Samples {
    /// Sums the shards' counters into the next slot (the one writer).
    pub fn record(&self, m: &Metrics, unix_ms: u64) {
        let n = self.written.load(Ordering::Relaxed);
        let slot = &self.slots[(n % SAMPLES as u64) as usize];
        slot[0].store(unix_ms as i64, Ordering::Relaxed);
        slot[1].store(m.total(M::Published), Ordering::Relaxed);
        slot[2].store(m.total(M::Delivered), Ordering::Relaxed);
        slot[3].store(m.total(M::ConnectionsOpen), Ordering::Relaxed);
        // Release: a reader that sees the new count sees the slot.
        self.written.store(n + 1, Ordering::Release);
    }

    /// The samples held, oldest first (at most `SAMPLES - 1`: the oldest slot may be being
    /// rewritten while it is read).
    pub fn recent(&self) -> Vec<Sample> {
        let n = self.written.load(Ordering::Acquire);
        let first = n.saturating_sub(SAMPLES as u64 - 1);
        (first..n)
            .map(|i| {
                let s = &self.slots[(i % SAMPLES as u64) as usize];
                Sample {
                    unix_ms: s[0].load(Ordering::Relaxed) as u64,
                    published: s[1].load(Ordering::Relaxed),
                    delivered: s[2].load(Ordering::Relaxed),
                    connections: s[3].load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// Per-second rates between consecutive samples: `(unix_secs, publishes/s, deliveries/s,
/// connections)` for each sample after the first.
pub fn rates(samples: &[Sample]) -> Vec<(u64, f64, f64, i64)> {
    samples
        .windows(2)
        .map(|w| {
            let secs = (w[1].unix_ms.saturating_sub(w[0].unix_ms)).max(1) as f64 / 1000.0;
            (
                w[1].unix_ms / 1000,
                (w[1].published - w[0].published).max(0) as f64 / secs,
                (w[1].delivered - w[0].delivered).max(0) as f64 / secs,
                w[1].connections,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_per_shard() {
        let m = Metrics::new(2);
        m.shards[0].inc(M::Published);
        m.shards[1].add(M::Published, 2);
        m.shards[1].inc(M::ConnectionsOpen);
        m.shards[1].dec(M::ConnectionsOpen);
        assert_eq!(m.total(M::Published), 3);
        assert_eq!(m.total(M::ConnectionsOpen), 0);
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("ringcast_messages_published_total{shard=\"1\"} 2\n"));
        assert!(s.contains("# TYPE ringcast_connections_open gauge\n"));
    }

    #[test]
    fn samples_ring_and_rates() {
        let m = Metrics::new(2);
        let s = Samples::default();
        assert!(s.recent().is_empty());
        for i in 0..(SAMPLES as i64 + 10) {
            m.shards[(i % 2) as usize].add(M::Published, 3);
            m.shards[0].add(M::Delivered, 10);
            s.record(&m, 1_000 * i as u64);
        }
        let r = s.recent();
        assert_eq!(r.len(), SAMPLES - 1);
        assert!(r.windows(2).all(|w| w[1].unix_ms == w[0].unix_ms + 1000));
        assert_eq!(r.last().unwrap().published, 3 * (SAMPLES as i64 + 10));
        let rates = rates(&r);
        assert_eq!(rates.len(), SAMPLES - 2);
        assert!(rates.iter().all(|&(_, p, d, _)| p == 3.0 && d == 10.0));
        // Two seconds between samples halve the rate.
        let two = [
            Sample {
                unix_ms: 0,
                published: 0,
                delivered: 0,
                connections: 1,
            },
            Sample {
                unix_ms: 2000,
                published: 8,
                delivered: 4,
                connections: 2,
            },
        ];
        assert_eq!(super::rates(&two), vec![(2, 4.0, 2.0, 2)]);
    }
}
