//! `GET /stats` (the node's figures as JSON) and `GET /status` (the live page that charts
//! them), for operators.
//!
//! Owns: who may read them (`--admin-token`, `--admin-loopback`) and what they say. Every
//! figure comes from what all shards share (`Node`: the per-shard counters summed, the
//! per-second samples shard 0's ticker keeps, the inbox queues' lengths) and the process's
//! RSS, so a request on any shard answers for the node without asking the others.
//! Must not: hold a lock or touch another shard's state; log a token (the target is logged
//! through `carrier::redact`).

use serde_json::json;

use crate::auth::carrier;
use crate::config::OnOff;
use crate::metrics::{rates, M};
use crate::node::Node;
use crate::shard::core::Shard;
use crate::shard::routes::answer::{Answer, Req};
use crate::shard::routes::authz::{constant_time_eq, write_refusal};

/// The status page: one HTML file, its CSS and script inline, no external URL.
const STATUS_HTML: &str = include_str!("status.html");

/// How many seconds the `rates` figure averages over.
const RATE_WINDOW_SECS: usize = 10;

/// Answers `/stats` (`page` false) or `/status` (`page` true).
pub fn serve(sh: &Shard, req: &Req<'_>, a: &mut Answer<'_>, page: bool) {
    if let Err((status, reason)) = may_admin(&sh.node, req) {
        sh.metrics().inc(M::AuthRefused);
        crate::debug!(
            "{}: admin ({}): {status} {reason}",
            req.peer,
            carrier::redact(req.head.target(req.buf))
        );
        write_refusal(a, status, reason);
        return;
    }
    if page {
        a.send(
            200,
            &[
                ("Content-Type", b"text/html; charset=utf-8"),
                ("Cache-Control", b"no-store"),
                ("X-Content-Type-Options", b"nosniff"),
            ],
            STATUS_HTML.as_bytes(),
        );
        return;
    }
    let body = stats_json(&sh.node).to_string();
    a.send(
        200,
        &[
            ("Content-Type", b"application/json"),
            ("Cache-Control", b"no-store"),
        ],
        body.as_bytes(),
    );
}

/// The admin rule, like publishing's: a loopback peer (unless `--admin-loopback off`), or
/// `--admin-token` as `Authorization: Bearer` or `?token=` (a page load cannot set a header).
/// Err: 401 without credentials, 403 with wrong ones or when no token is configured.
pub fn may_admin(node: &Node, req: &Req<'_>) -> Result<(), (u16, &'static str)> {
    if node.cfg.admin_loopback == OnOff::On && req.peer.ip().is_loopback() {
        return Ok(());
    }
    let Some(want) = &node.cfg.admin_token else {
        return Err((
            403,
            "/stats and /status are for loopback peers; set --admin-token",
        ));
    };
    let token = carrier::token_of(
        req.head.header(req.buf, "authorization"),
        req.head.query(req.buf),
        &[],
        None,
    );
    match token {
        Some(t) if constant_time_eq(&t, want.as_bytes()) => Ok(()),
        Some(_) => Err((403, "wrong admin token")),
        None => Err((401, "needs Authorization: Bearer <admin token> or ?token=")),
    }
}

/// The node's figures. Counters are sums of relaxed per-shard counters: each is exact for its
/// shard, the sum a moment's picture.
pub fn stats_json(node: &Node) -> serde_json::Value {
    let m = &node.metrics;
    let total = |k: M| m.total(k).max(0);
    let (sse, ws, v1, waiting) = (
        total(M::SseOpen),
        total(M::WsOpen),
        total(M::WsV1Open),
        total(M::LongPollWaiting),
    );
    let open = total(M::ConnectionsOpen);
    let inbox: Vec<usize> = (0..node.bus.shards()).map(|s| node.bus.len(s)).collect();
    let series = rates(&node.samples.recent());
    let last = series.last().copied();
    let window = &series[series.len().saturating_sub(RATE_WINDOW_SECS)..];
    let avg = |f: fn(&(u64, f64, f64, i64)) -> f64| {
        if window.is_empty() {
            0.0
        } else {
            window.iter().map(f).sum::<f64>() / window.len() as f64
        }
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": node.started.elapsed().as_secs(),
        "shards": node.cfg.shards,
        "connections": {
            "total": open,
            "sse": sse,
            "websocket_raw": (ws - v1).max(0),
            "websocket_v1": v1,
            "long_polls_waiting": waiting,
            "http": (open - sse - ws - waiting).max(0),
        },
        "topics": node.topics.load(std::sync::atomic::Ordering::Relaxed),
        "publishes_per_sec": round1(last.map_or(0.0, |r| r.1)),
        "deliveries_per_sec": round1(last.map_or(0.0, |r| r.2)),
        "rates": {
            "window_secs": window.len(),
            "publishes_per_sec": round1(avg(|r| r.1)),
            "deliveries_per_sec": round1(avg(|r| r.2)),
        },
        "totals": {
            "published": total(M::Published),
            "delivered": total(M::Delivered),
            "connections_accepted": total(M::ConnectionsAccepted),
            "requests": total(M::Requests),
            "auth_refused": total(M::AuthRefused),
        },
        "slow_clients": {
            "disconnects": total(M::SlowDisconnects),
            "drops": total(M::SlowDrops),
        },
        "inbox": {
            "depth": inbox.iter().sum::<usize>(),
            "max": inbox.iter().copied().max().unwrap_or(0),
            "per_shard": inbox,
            "capacity": node.cfg.inbox_capacity,
            "full_total": total(M::InboxFull),
        },
        "rss_bytes": rss_bytes(),
        "series": {
            "interval_secs": 1,
            "t": series.iter().map(|r| r.0).collect::<Vec<_>>(),
            "publishes_per_sec": series.iter().map(|r| round1(r.1)).collect::<Vec<_>>(),
            "deliveries_per_sec": series.iter().map(|r| round1(r.2)).collect::<Vec<_>>(),
            "connections": series.iter().map(|r| r.3).collect::<Vec<_>>(),
        },
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Resident memory from `/proc/self/status` (`VmRSS`, in kB there); 0 where there is none.
fn rss_bytes() -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    parse_vm_rss(&s)
}

fn parse_vm_rss(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   1234 kB\nVmSwap: 0 kB\n"),
            1234 * 1024
        );
        assert_eq!(parse_vm_rss("Name:\tx\n"), 0);
        assert!(rss_bytes() > 0, "this process has a resident set");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for external in [
            "http://",
            "https://",
            "//cdn",
            "<link",
            "src=\"http",
            "@import",
        ] {
            assert!(!STATUS_HTML.contains(external), "{external} in status.html");
        }
        assert!(STATUS_HTML.contains("name=\"viewport\""));
        assert!(STATUS_HTML.contains("/stats"));
    }
}
