//! `GET /topics/{topic}` and the v1 `presence` command: a topic's current position and how
//! many subscribers it has on every shard.
//!
//! Owns: the answer `{"topic","id","subscribers"}` (v1: with `"type":"presence"` and `ref`).
//! The position comes from the topic's home (a window from now, which makes the topic like a
//! poll does); the count is asked of every shard (`Shard::count_subscribers`: streams, v1
//! subscriptions and waiting long polls, each one subscription).
//! Must not: keep per-topic counters on the subscribe path, or label metrics per topic.

use std::rc::Rc;
use std::sync::Arc;

use crate::codec::position::Position;
use crate::fanout::Since;
use crate::metrics::M;
use crate::shard::core::{Fail, Shard};
use crate::shard::outbox::wire::json_str;
use crate::shard::routes::answer::{cors, Answer, Next, Req};
use crate::shard::routes::authz;

/// The topic's current position and its subscriber count on every shard.
pub async fn info(sh: &Rc<Shard>, topic: Arc<str>) -> Result<(Position, u64), Fail> {
    let w = sh.window(topic.clone(), Since::None, 0).await?;
    let n = sh.count_subscribers(&topic).await;
    Ok((w.current, n))
}

/// `{"type":"presence"?,"topic","ref"?,"id","subscribers"}`.
pub fn write_json(
    presence: Option<Option<&str>>,
    topic: &str,
    at: Position,
    n: u64,
    out: &mut Vec<u8>,
) {
    out.push(b'{');
    if let Some(r) = presence {
        out.extend_from_slice(b"\"type\":\"presence\",");
        if let Some(r) = r {
            out.extend_from_slice(b"\"ref\":");
            json_str(r, out);
            out.push(b',');
        }
    }
    out.extend_from_slice(b"\"topic\":");
    json_str(topic, out);
    out.extend_from_slice(b",\"id\":\"");
    at.write(out);
    out.extend_from_slice(b"\",\"subscribers\":");
    crate::codec::decimal::write_u64(out, n);
    out.push(b'}');
}

/// `GET /topics/{topic}`: read permission as for subscribing.
pub async fn get(sh: &Rc<Shard>, req: &Req<'_>, a: &mut Answer<'_>, topic: String) -> Next {
    match cors(sh, req.buf, req.head) {
        Ok(c) => a.cors = c,
        Err(_) => {
            sh.metrics().inc(M::BadRequests);
            a.error(403, "origin not allowed");
            return Next::KeepAlive;
        }
    }
    if let Err(d) = authz::may_read(sh, req, &topic) {
        authz::refuse(a, d);
        return Next::KeepAlive;
    }
    match info(sh, Arc::from(topic.as_str())).await {
        Ok((at, n)) => a.send_with(
            200,
            &[
                ("Content-Type", b"application/json"),
                ("Cache-Control", b"no-cache"),
            ],
            |out| write_json(None, &topic, at, n, out),
        ),
        Err(Fail::TooManyTopics) => a.error(503, "too many topics (--max-topics)"),
        Err(Fail::Overloaded) => a.send(503, &[("Retry-After", b"1")], b"overloaded\n"),
        // --redis: the window had to come from Redis, which did not answer in time.
        Err(Fail::NotConfirmed | Fail::RedisAway) => {
            a.send(503, &[("Retry-After", b"1")], b"redis did not answer\n")
        }
    }
    Next::KeepAlive
}
