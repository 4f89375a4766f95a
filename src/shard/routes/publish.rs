//! `POST /pub/{topic}` and `POST /pub` (batch): authorisation, payload kind, positions.
//!
//! Owns: applying who may publish (`authz::publisher`), the text/binary rule
//! (text = valid UTF-8 and not `Content-Type: application/octet-stream`), event-name checks and
//! the all-or-nothing validation of a batch before anything is published. `message` is the one
//! set of checks a `POST /pub/{topic}` passes, whether it is published alone or with the
//! requests pipelined behind it (`pipelined`, gathered by `conn.rs`).
//! Must not: order messages (the topic's home does).

use std::rc::Rc;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;

use crate::codec::position::Position;
use crate::codec::route;
use crate::fanout::{NewMsg, TopicMsgs};
use crate::metrics::M;
use crate::shard::core::{Fail, Shard};
use crate::shard::routes::answer::{Answer, Next, Req};
use crate::shard::routes::authz;

/// Longest event name, bytes.
pub const MAX_EVENT_NAME_BYTES: usize = 64;

/// An event name: 1..=64 bytes of printable ASCII without spaces or ':' at the start.
pub fn valid_event(e: &[u8]) -> bool {
    !e.is_empty() && e.len() <= MAX_EVENT_NAME_BYTES && e.iter().all(|&b| (0x21..0x7f).contains(&b))
}

fn deny(sh: &Shard, a: &mut Answer<'_>, status: u16, reason: &str) -> Next {
    sh.metrics().inc(M::BadRequests);
    crate::debug!("publish refused: {status} {reason}");
    authz::write_refusal(a, status, reason);
    Next::KeepAlive
}

fn fail(a: &mut Answer<'_>, f: Fail) -> Next {
    match f {
        Fail::TooManyTopics => a.error(503, "too many topics (--max-topics)"),
        Fail::NotConfirmed => {
            a.send(
                503,
                &[
                    ("Retry-After", b"1"),
                    ("Content-Type", b"text/plain; charset=utf-8"),
                ],
                b"not confirmed: Redis did not answer; it may or may not be published\n",
            );
        }
        Fail::RedisAway => {
            a.send(
                503,
                &[
                    ("Retry-After", b"1"),
                    ("Content-Type", b"text/plain; charset=utf-8"),
                ],
                b"Redis is unavailable: not published; retry shortly\n",
            );
        }
        Fail::Overloaded => {
            let body = b"fanout is behind; retry shortly\n";
            a.send(
                503,
                &[
                    ("Retry-After", b"1"),
                    ("Content-Type", b"text/plain; charset=utf-8"),
                ],
                body,
            );
        }
    }
    Next::KeepAlive
}

fn ids_json(ps: &[Position], batch: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ps.len() * 24);
    if batch {
        out.extend_from_slice(b"{\"ids\":[");
        for (i, p) in ps.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            p.write(&mut out);
            out.push(b'"');
        }
        out.extend_from_slice(b"]}");
    } else {
        out.extend_from_slice(b"{\"id\":\"");
        // A home gives every message a position: one message, one.
        if let Some(p) = ps.first() {
            p.write(&mut out);
        }
        out.extend_from_slice(b"\"}");
    }
    out
}

/// Why a publish request is refused before anything is published: (status, reason).
pub type Refusal = (u16, &'static str);

/// The message a `POST /pub/{topic}` carries, after the checks every such request passes —
/// publisher, event name, text or binary. The body limit is the connection's (it read the
/// body). A request pipelined behind a remote-homed publish passes the same checks before it
/// may join its batch (`conn.rs`).
pub fn message(sh: &Shard, req: &Req<'_>, topic: &str) -> Result<NewMsg, Refusal> {
    authz::publisher(sh, req)?.may(topic)?;
    let event = match route::query_param(req.query(), "event") {
        None => None,
        Some(e) if valid_event(&e) => Some(String::from_utf8_lossy(&e).into()),
        Some(_) => {
            return Err((
                400,
                "bad event name (1-64 printable ASCII bytes, no spaces)",
            ))
        }
    };
    let octet = req
        .header("content-type")
        .map(|v| {
            let mime = v.split(|&b| b == b';').next().unwrap_or(b"").trim_ascii();
            mime.eq_ignore_ascii_case(b"application/octet-stream")
        })
        .unwrap_or(false);
    let binary = octet || std::str::from_utf8(req.body).is_err();
    Ok(NewMsg {
        event,
        data: req.body.into(),
        binary,
    })
}

/// Answers a request `message` refused.
pub fn refuse(sh: &Shard, a: &mut Answer<'_>, (status, reason): Refusal) -> Next {
    deny(sh, a, status, reason)
}

/// Answers a `POST /pub/{topic}` with its position or why it was not published.
pub fn answer(a: &mut Answer<'_>, r: Result<Vec<Position>, Fail>) -> Next {
    match r {
        Ok(ps) => {
            a.send(
                200,
                &[("Content-Type", b"application/json")],
                &ids_json(&ps, false),
            );
            Next::KeepAlive
        }
        Err(f) => fail(a, f),
    }
}

pub async fn single(sh: &Rc<Shard>, req: &Req<'_>, a: &mut Answer<'_>, topic: String) -> Next {
    let msg = match message(sh, req, &topic) {
        Ok(m) => m,
        Err(r) => return refuse(sh, a, r),
    };
    answer(a, sh.publish_batched(Arc::from(topic), vec![msg]).await)
}

/// `POST /pub/{topic}` requests of one connection, in order, whose topics are all homed on
/// shard `home` (another shard): checked with `message` already, published as one command
/// (`Shard::publish_remote`). Returns one result per request, in order.
pub async fn pipelined(
    sh: &Rc<Shard>,
    home: usize,
    msgs: Vec<(Arc<str>, NewMsg)>,
) -> Vec<Result<Vec<Position>, Fail>> {
    let groups = msgs
        .into_iter()
        .map(|(topic, m)| TopicMsgs {
            topic,
            msgs: vec![m],
        })
        .collect();
    sh.publish_remote(home, groups).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
    topic: String,
    data: String,
    #[serde(default)]
    event: Option<String>,
    /// "base64": `data` is base64 of a binary payload.
    #[serde(default)]
    encoding: Option<String>,
}

pub async fn batch(sh: &Rc<Shard>, req: &Req<'_>, a: &mut Answer<'_>) -> Next {
    let publisher = match authz::publisher(sh, req) {
        Ok(p) => p,
        Err((s, r)) => return deny(sh, a, s, r),
    };
    let items: Vec<BatchItem> = match serde_json::from_slice(req.body) {
        Ok(v) => v,
        Err(_) => {
            return deny(
                sh,
                a,
                400,
                "body must be a JSON array of {\"topic\",\"data\",\"event\"?}",
            )
        }
    };
    if items.is_empty() {
        return deny(sh, a, 400, "empty batch");
    }
    // Validate everything before publishing anything.
    let cfg = &sh.node.cfg;
    let mut groups: Vec<(Arc<str>, Vec<NewMsg>, Vec<usize>)> = Vec::new();
    for (i, it) in items.into_iter().enumerate() {
        if route::validate_topic(it.topic.as_bytes(), cfg.max_topic_bytes).is_err() {
            return deny(sh, a, 400, "bad topic in batch");
        }
        if let Err((s, r)) = publisher.may(&it.topic) {
            return deny(sh, a, s, r);
        }
        if let Some(e) = &it.event {
            if !valid_event(e.as_bytes()) {
                return deny(sh, a, 400, "bad event name in batch");
            }
        }
        let (data, binary): (Box<[u8]>, bool) = match it.encoding.as_deref() {
            None => (it.data.into_bytes().into(), false),
            Some("base64") => match base64::engine::general_purpose::STANDARD.decode(&it.data) {
                Ok(d) => (d.into(), true),
                Err(_) => return deny(sh, a, 400, "bad base64 data in batch"),
            },
            Some(_) => return deny(sh, a, 400, "unknown encoding in batch (only \"base64\")"),
        };
        if data.len() > cfg.max_message_bytes {
            return deny(
                sh,
                a,
                413,
                "message in batch larger than --max-message-bytes",
            );
        }
        let msg = NewMsg {
            event: it.event.map(Into::into),
            data,
            binary,
        };
        match groups.iter_mut().find(|g| *g.0 == *it.topic) {
            Some(g) => {
                g.1.push(msg);
                g.2.push(i);
            }
            None => groups.push((Arc::from(it.topic), vec![msg], vec![i])),
        }
    }
    let n = groups.iter().map(|g| g.2.len()).sum();
    let mut ids = vec![Position::new(0, 0); n];
    for (topic, msgs, idx) in groups {
        match sh.publish_batched(topic, msgs).await {
            Ok(ps) => {
                for (p, i) in ps.into_iter().zip(idx) {
                    ids[i] = p;
                }
            }
            Err(f) => return fail(a, f),
        }
    }
    a.send(
        200,
        &[("Content-Type", b"application/json")],
        &ids_json(&ids, true),
    );
    Next::KeepAlive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names() {
        assert!(valid_event(b"price"));
        assert!(valid_event(b"a.b-c_d:e"));
        assert!(!valid_event(b""));
        assert!(!valid_event(b"two words"));
        assert!(!valid_event(b"line\nbreak"));
        assert!(!valid_event(&[b'x'; 65]));
    }
}
