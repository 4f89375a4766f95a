//! Who may read and write, checked once per request or connection by the route that opens it
//! (poll, SSE, the WebSocket upgrade before its 101, publish) — never on the delivery path.
//! Owns: the token of a request (from its carrier), the read and publish rules, the refusal
//! answers (401 with `WWW-Authenticate: Bearer`, 403) and the auth log lines.
//! Must not: log a token or a request target unredacted; the log names the client by `sub`.

use std::borrow::Cow;

use crate::auth::{carrier, Denied, Grant};
use crate::metrics::M;
use crate::shard::core::Shard;
use crate::shard::routes::answer::{Answer, Req};

/// The request's token: `Authorization: Bearer`, then `?token=`, then the `--jwt-cookie` cookie.
pub fn token_of<'a>(sh: &Shard, req: &Req<'a>) -> Option<Cow<'a, [u8]>> {
    let name = sh.node.cfg.jwt_cookie.as_deref();
    let cookies: Vec<&'a [u8]> = match name {
        Some(_) => req
            .head
            .headers(req.buf)
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
            .map(|(_, v)| v)
            .collect(),
        None => Vec::new(),
    };
    carrier::token_of(
        req.head.header(req.buf, "authorization"),
        req.head.query(req.buf),
        &cookies,
        name,
    )
}

/// May this request read `topic`? `Ok(None)`: no key configured, or a public topic read
/// without a token. `Ok(Some(grant))`: the stream remembers `grant.exp`.
pub fn may_read(sh: &Shard, req: &Req<'_>, topic: &str) -> Result<Option<Grant>, Denied> {
    may_read_all(sh, req, [topic])
}

/// May this request read every one of `topics` (a multi-topic stream or poll)? Answers as
/// [`may_read`] would for each, but verifies the token once: a signature check (RSA above all)
/// costs far more than matching a topic, and a bad token naming `--max-topics-per-stream`
/// topics must not buy that many checks.
pub fn may_read_all<'t>(
    sh: &Shard,
    req: &Req<'_>,
    topics: impl IntoIterator<Item = &'t str>,
) -> Result<Option<Grant>, Denied> {
    let Some(auth) = &sh.node.auth else {
        return Ok(None);
    };
    let mut topics = topics.into_iter().peekable();
    let first = topics.peek().copied().unwrap_or("");
    let token = token_of(sh, req);
    let grant = match token.as_deref().map(|t| auth.verify(t)).transpose() {
        Ok(g) => g,
        Err(d) => {
            refused(sh, req, first, None, d);
            return Err(d);
        }
    };
    let mut n = 0;
    for t in topics {
        if let Err(d) = auth.covers(grant.as_ref(), t) {
            refused(sh, req, t, grant.as_ref(), d);
            return Err(d);
        }
        n += 1;
    }
    // One line per request, however many topics (the target names them all).
    crate::debug!(
        "{}: auth read {} ({}): allowed, sub {}",
        req.peer,
        Topics(first, n),
        carrier::redact(req.head.target(req.buf)),
        grant.as_ref().and_then(|g| g.sub.as_deref()).unwrap_or("-")
    );
    Ok(grant)
}

/// A request's topics in a log line: the topic itself, or how many.
struct Topics<'a>(&'a str, usize);

impl std::fmt::Display for Topics<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.1 {
            1 => f.write_str(self.0),
            n => write!(f, "{n} topics"),
        }
    }
}

/// What a stream remembers of its grant: `exp` in seconds since the epoch, saturated to
/// `u32` (until 2106), 0 when nothing expires (auth off or a public topic without a token).
pub fn exp_of(g: Option<&Grant>) -> u32 {
    g.map_or(0, |g| u32::try_from(g.exp).unwrap_or(u32::MAX).max(1))
}

/// Counts a read refusal and writes one debug line: the peer, the topic, the target with any
/// `token=` redacted, `sub` when the token was valid (a 403) — never the token.
fn refused(sh: &Shard, req: &Req<'_>, topic: &str, grant: Option<&Grant>, d: Denied) {
    sh.metrics().inc(M::AuthRefused);
    crate::debug!(
        "{}: auth read {topic} ({}): {} {}, sub {}",
        req.peer,
        carrier::redact(req.head.target(req.buf)),
        d.status(),
        d.reason(),
        grant.and_then(|g| g.sub.as_deref()).unwrap_or("-")
    );
}

/// A refusal as an HTTP answer: 401 carries the Bearer challenge.
pub fn refuse(a: &mut Answer<'_>, d: Denied) {
    write_refusal(a, d.status(), d.reason());
}

/// 401 (with `WWW-Authenticate: Bearer`) or any other status, with a one-line reason.
pub fn write_refusal(a: &mut Answer<'_>, status: u16, reason: &str) {
    if status == 401 {
        let mut body = reason.as_bytes().to_vec();
        body.push(b'\n');
        a.send(
            401,
            &[
                ("WWW-Authenticate", b"Bearer"),
                ("Content-Type", b"text/plain; charset=utf-8"),
            ],
            &body,
        );
    } else {
        a.error(status, reason);
    }
}

/// Who is publishing, once per request.
pub enum Publisher {
    /// The backend (`--publish-token`), or a loopback peer with neither keys nor a publish
    /// token configured: any topic.
    Any,
    /// A JWT: the topics its `publish` claim covers.
    Grant(Grant),
}

impl Publisher {
    /// May this publisher write `topic`? Err: (403, reason).
    pub fn may(&self, topic: &str) -> Result<(), (u16, &'static str)> {
        match self {
            Publisher::Any => Ok(()),
            Publisher::Grant(g) if g.can_publish(topic) => Ok(()),
            Publisher::Grant(_) => Err((403, "token does not allow publishing to this topic")),
        }
    }
}

/// The publish rule: `--publish-token`, or a JWT (its `publish` claim is checked per topic by
/// `Publisher::may`), or a loopback peer when neither keys nor a publish token are configured.
/// Err: (status, reason); a 401 is answered with the Bearer challenge.
pub fn publisher(sh: &Shard, req: &Req<'_>) -> Result<Publisher, (u16, &'static str)> {
    let node = &sh.node;
    let token = token_of(sh, req);
    let r = match (&node.cfg.publish_token, token.as_deref()) {
        (Some(p), Some(t)) if constant_time_eq(t, p.as_bytes()) => Ok(Publisher::Any),
        _ => match (&node.auth, token.as_deref()) {
            (Some(auth), Some(t)) => match auth.verify(t) {
                Ok(g) => {
                    crate::debug!(
                        "{}: auth publish: sub {}",
                        req.peer,
                        g.sub.as_deref().unwrap_or("-")
                    );
                    Ok(Publisher::Grant(g))
                }
                Err(d) => Err((d.status(), d.reason())),
            },
            (Some(_), None) => Err((401, "publishing needs a token")),
            (None, _) => match &node.cfg.publish_token {
                // Today's rule without keys: no credentials 401, wrong ones 403.
                Some(_)
                    if token.is_none() && req.head.header(req.buf, "authorization").is_none() =>
                {
                    Err((401, "publishing needs Authorization: Bearer <token>"))
                }
                Some(_) => Err((403, "wrong publish token")),
                None if req.peer.ip().is_loopback() => Ok(Publisher::Any),
                None => Err((
                    403,
                    "publishing is allowed from loopback only; set --publish-token",
                )),
            },
        },
    };
    if let Err((status, reason)) = &r {
        sh.metrics().inc(M::AuthRefused);
        crate::debug!(
            "{}: auth publish ({}): {status} {reason}",
            req.peer,
            carrier::redact(req.head.target(req.buf))
        );
    }
    r
}

/// May a WebSocket with this grant publish to `topic`? Without keys, yes (today's rule:
/// `--ws-client-publish`); with keys, only under a `publish` claim covering it.
pub fn ws_may_publish(sh: &Shard, grant: Option<&Grant>, topic: &str) -> bool {
    sh.node.auth.is_none() || grant.is_some_and(|g| g.can_publish(topic))
}

/// A v1 `subscribe` to one more topic: covered by the connection's grant, or public.
pub fn v1_may_read(sh: &Shard, grant: Option<&Grant>, topic: &str) -> Result<(), Denied> {
    let Some(auth) = &sh.node.auth else {
        return Ok(());
    };
    if auth.is_public(topic) || grant.is_some_and(|g| g.can_read(topic)) {
        return Ok(());
    }
    sh.metrics().inc(M::AuthRefused);
    crate::debug!(
        "auth v1 subscribe {topic}: refused (sub {})",
        grant.and_then(|g| g.sub.as_deref()).unwrap_or("-")
    );
    Err(if grant.is_some() {
        Denied::NotCovered
    } else {
        Denied::Missing
    })
}

/// A v1 `refresh`: a valid token that covers every topic of stream `ok` replaces its grant
/// and its `exp` (and re-arms the warning).
pub fn refresh(sh: &Shard, ok: usize, token: &[u8]) -> Result<Grant, Denied> {
    let Some(auth) = &sh.node.auth else {
        return Err(Denied::Missing);
    };
    let r = auth.verify(token).and_then(|g| {
        let st = sh.st.borrow();
        let covers = st.subs.outs.get(ok).is_some_and(|o| {
            o.subs.iter().all(|sk| {
                st.subs
                    .topic_of(sk)
                    .is_none_or(|t| g.can_read(t) || auth.is_public(t))
            })
        });
        if covers {
            Ok(g)
        } else {
            Err(Denied::NotCovered)
        }
    });
    match &r {
        Ok(g) => {
            crate::debug!("auth v1 refresh: sub {}", g.sub.as_deref().unwrap_or("-"));
            if let Some(o) = sh.st.borrow_mut().subs.outs.get_mut(ok) {
                o.exp = exp_of(Some(g));
                o.warned = false;
            }
        }
        Err(d) => {
            sh.metrics().inc(M::AuthRefused);
            crate::debug!("auth v1 refresh: {} {}", d.status(), d.reason());
        }
    }
    r
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Takes a token from WebSocket `ok`'s `--ws-publish-rate` bucket; past the rate, counts and
/// logs the refusal (at debug: one per message would flood anything louder; the counter has
/// them all).
pub fn may_publish_now(sh: &Shard, ok: usize) -> bool {
    let rate = sh.node.cfg.ws_publish_rate;
    let now = sh.adm.now_ms();
    let allowed = sh
        .st
        .borrow_mut()
        .subs
        .outs
        .get_mut(ok)
        .is_some_and(|o| o.publish_bucket.try_take(rate, rate, now));
    if !allowed {
        sh.metrics().inc(M::WsPublishRateRefused);
        crate::debug!("websocket publish refused: over --ws-publish-rate {rate}/s");
    }
    allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
