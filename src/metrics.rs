//! Per-shard counters and gauges, rendered as Prometheus text on `GET /metrics`.
//!
//! Owns: one cache-line-aligned block of relaxed atomics per shard. A shard only ever writes its
//! own block (so there is no contention); `/metrics` on any shard reads them all and sums.
//! Must not: be used for control decisions that need exact cross-shard agreement (except the
//! connection and topic totals, which are deliberately approximate caps).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};

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
    LongPollWaiting => "ringcast_longpoll_waiting", "gauge", "Long polls waiting for a message.";
    Resets => "ringcast_resets_total", "counter", "Resume points answered with a reset.";
    AuthRefused => "ringcast_auth_refused_total", "counter", "Subscribes and publishes refused by the token rules (401/403).";
    LocalWindows => "ringcast_windows_local_total", "counter", "Windows answered from the messages a shard already received, with no round trip to the topic's home.";
    BufferedBytes => "ringcast_client_buffered_bytes", "gauge", "Bytes waiting in client send buffers.";
    StreamWrites => "ringcast_stream_writes_total", "counter", "Write syscalls the writer made to streaming clients (delivered per write: how much it batches).";
    PendingDeliveries => "ringcast_pending_deliveries", "gauge", "Deliveries queued for subscribers that the shard's writer has not written yet (--max-pending-deliveries).";
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
}
