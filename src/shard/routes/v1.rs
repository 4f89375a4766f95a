//! `ringcast.v1` commands on a WebSocket: `subscribe` (from `since`, or `earliest`, or the
//! newest `rewind` messages), `unsubscribe`, `publish`, `refresh`, `presence` and `ping`, each
//! answered in order with an envelope (`subscribed`, `unsubscribed`, `ack`, `refreshed`,
//! `presence`, `pong` or `error`, echoing the command's `ref`).
//!
//! Owns: the command grammar and what each command may do on this connection (its grant when
//! auth is on, `--ws-client-publish`, the topic grammar). The session loop that reads the
//! frames is `ws.rs`.
//! Must not: borrow shard state across an await.

use std::rc::Rc;
use std::sync::Arc;

use serde::Deserialize;

use crate::codec::route;
use crate::codec::subscribe::{self, QueryError};
use crate::fanout::NewMsg;
use crate::fanout::Since;
use crate::metrics::M;
use crate::shard::core::{Fail, Shard};
use crate::shard::outbox::session::Session;
use crate::shard::outbox::wire::{self, error_json, subscribed_json};
use crate::shard::routes::authz;
use crate::shard::routes::poll::since_or;
use crate::shard::routes::publish::valid_event;
use crate::shard::routes::topics;

/// What a failed subscribe or publish says in its error envelope.
pub(super) fn fail_text(f: Fail) -> &'static str {
    match f {
        Fail::TooManyTopics => "too many topics",
        Fail::Overloaded => "overloaded",
        Fail::NotConfirmed => "not confirmed",
        Fail::RedisAway => "redis unavailable",
    }
}

impl Session {
    pub(super) async fn command(
        &mut self,
        sh: &Rc<Shard>,
        ok: usize,
        cmd: Command,
        reply: &mut Vec<u8>,
    ) {
        let r = cmd.r#ref.as_deref();
        let cfg = &sh.node.cfg;
        let topic_ok = |t: &str| route::validate_topic(t.as_bytes(), cfg.max_topic_bytes).is_ok();
        match cmd.r#type.as_str() {
            "subscribe" => {
                let Some(t) = cmd.topic.filter(|t| topic_ok(t)) else {
                    return error_json(r, "subscribe needs a valid \"topic\"", reply);
                };
                let (already, count) = {
                    let st = sh.st.borrow();
                    let subs = &st.subs.outs[ok].subs;
                    let already = subs
                        .iter()
                        .any(|sk| st.subs.topic_of(sk).is_some_and(|s| **s == *t));
                    (already, subs.len())
                };
                if already {
                    return error_json(r, "already subscribed", reply);
                }
                if count >= cfg.max_subscriptions_per_connection {
                    sh.metrics().inc(M::SubscriptionsRefused);
                    crate::debug!(
                        "v1 subscribe refused: {count} subscriptions on this connection \
                         (--max-subscriptions-per-connection)"
                    );
                    return error_json(r, "too many subscriptions on this connection", reply);
                }
                if let Err(d) = authz::v1_may_read(sh, self.grant.as_deref(), &t) {
                    return error_json(r, d.reason(), reply);
                }
                let since = match start_of_v1(cmd.since.as_deref(), cmd.rewind.as_ref()) {
                    Ok(s) => s,
                    Err(e) => {
                        crate::debug!("v1 subscribe refused: {}", e.reason());
                        return error_json(r, e.reason(), reply);
                    }
                };
                match sh
                    .subscribe(ok, Arc::from(t.as_str()), since, usize::MAX)
                    .await
                {
                    Ok((sk, w)) => {
                        if let Some(o) = sh.st.borrow_mut().subs.outs.get_mut(ok) {
                            o.subs.push(sk);
                        }
                        subscribed_json(&t, w.current, r, reply);
                    }
                    Err(f) => error_json(r, fail_text(f), reply),
                }
            }
            "unsubscribe" => {
                let Some(t) = cmd.topic else {
                    return error_json(r, "unsubscribe needs \"topic\"", reply);
                };
                let found = {
                    let mut st = sh.st.borrow_mut();
                    let st = &mut *st;
                    let found = st.subs.outs[ok]
                        .subs
                        .iter()
                        .find(|&sk| st.subs.topic_of(sk).is_some_and(|s| **s == *t));
                    if let Some(sk) = found {
                        st.subs.outs[ok].subs.remove(sk);
                    }
                    found
                };
                match found {
                    Some(sk) => {
                        sh.unsubscribe(sk);
                        reply.extend_from_slice(b"{\"type\":\"unsubscribed\",\"topic\":");
                        wire::json_str(&t, reply);
                        if let Some(r) = r {
                            reply.extend_from_slice(b",\"ref\":");
                            wire::json_str(r, reply);
                        }
                        reply.push(b'}');
                    }
                    None => error_json(r, "not subscribed", reply),
                }
            }
            "publish" => {
                if !cfg.client_publish() {
                    return error_json(r, "client publishing is off (--ws-client-publish)", reply);
                }
                let t = cmd.topic.unwrap_or_else(|| self.topic.to_string());
                if !topic_ok(&t) {
                    return error_json(r, "bad topic", reply);
                }
                if !authz::ws_may_publish(sh, self.grant.as_deref(), &t) {
                    return error_json(r, "token does not allow publishing to this topic", reply);
                }
                if let Some(e) = &cmd.event {
                    if !valid_event(e.as_bytes()) {
                        return error_json(r, "bad event name", reply);
                    }
                }
                let Some(d) = cmd.data else {
                    return error_json(r, "publish needs \"data\"", reply);
                };
                if !authz::may_publish_now(sh, ok) {
                    return error_json(r, "over the publish rate (--ws-publish-rate)", reply);
                }
                let (data, binary): (Box<[u8]>, bool) = match cmd.encoding.as_deref() {
                    None => (d.into_bytes().into(), false),
                    Some("base64") => {
                        use base64::Engine as _;
                        match base64::engine::general_purpose::STANDARD.decode(&d) {
                            Ok(b) => (b.into(), true),
                            Err(_) => return error_json(r, "bad base64", reply),
                        }
                    }
                    Some(_) => return error_json(r, "unknown encoding", reply),
                };
                let msg = NewMsg {
                    event: cmd.event.map(Into::into),
                    data,
                    binary,
                };
                match sh.publish(Arc::from(t.as_str()), vec![msg]).await {
                    Ok(ps) => {
                        reply.extend_from_slice(b"{\"type\":\"ack\"");
                        if let Some(r) = r {
                            reply.extend_from_slice(b",\"ref\":");
                            wire::json_str(r, reply);
                        }
                        reply.extend_from_slice(b",\"id\":\"");
                        ps[0].write(reply);
                        reply.extend_from_slice(b"\"}");
                    }
                    Err(f) => error_json(r, fail_text(f), reply),
                }
            }
            "refresh" => {
                let token = cmd.token.as_deref().unwrap_or("");
                match authz::refresh(sh, ok, token.as_bytes()) {
                    Ok(g) => {
                        self.grant = Some(Box::new(g));
                        reply.extend_from_slice(b"{\"type\":\"refreshed\"");
                        if let Some(r) = r {
                            reply.extend_from_slice(b",\"ref\":");
                            wire::json_str(r, reply);
                        }
                        reply.push(b'}');
                    }
                    Err(d) => error_json(r, d.reason(), reply),
                }
            }
            "ping" => {
                reply.extend_from_slice(b"{\"type\":\"pong\"");
                if let Some(r) = r {
                    reply.extend_from_slice(b",\"ref\":");
                    wire::json_str(r, reply);
                }
                reply.push(b'}');
            }
            "presence" => {
                let Some(t) = cmd.topic.filter(|t| topic_ok(t)) else {
                    return error_json(r, "presence needs a valid \"topic\"", reply);
                };
                if let Err(d) = authz::v1_may_read(sh, self.grant.as_deref(), &t) {
                    return error_json(r, d.reason(), reply);
                }
                match topics::info(sh, Arc::from(t.as_str())).await {
                    Ok((at, n)) => topics::write_json(Some(r), &t, at, n, reply),
                    Err(f) => error_json(r, fail_text(f), reply),
                }
            }
            _ => error_json(r, "unknown command type", reply),
        }
    }
}

/// Where a v1 `subscribe` starts: `since` (a position, or `earliest`) and `rewind`, read as
/// the query parameters of the other transports are.
fn start_of_v1(
    since: Option<&str>,
    rewind: Option<&serde_json::Value>,
) -> Result<Since, QueryError> {
    let rewind = match rewind {
        None => None,
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(QueryError::BadRewind),
    };
    let since = since.map(str::as_bytes);
    let fresh = subscribe::fresh_start(since, rewind.as_deref().map(str::as_bytes))?;
    Ok(since_or(since, fresh))
}

/// A `ringcast.v1` client command.
#[derive(Deserialize)]
pub(super) struct Command {
    r#type: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    since: Option<String>,
    /// `subscribe` without a position: the newest N retained messages first (a count, as a
    /// JSON number or a decimal string).
    #[serde(default)]
    rewind: Option<serde_json::Value>,
    /// `refresh`: the new token.
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    /// Echoed in the ack or error, so a client can match replies.
    #[serde(default)]
    r#ref: Option<String>,
}
