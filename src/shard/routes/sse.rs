//! `GET /sse/{topic}`: a Server-Sent Events stream. Its heartbeats (and the staged drain) are
//! chores of every stream, SSE or WebSocket: `stream/chores.rs`.
//!
//! Owns: the stream's first bytes (head, jittered `retry:`, an opening comment, flushed at
//! once), resume from `Last-Event-ID` (or `?last_event_id=` for clients that cannot set
//! headers), and the task that subscribes the stream and then parks it (`park.rs`): an idle
//! stream holds no task; the shard's readiness set notices when its client leaves or its
//! backlog can be written. Live messages are written by the inbox task's flush, so a quiet or
//! busy stream costs no task wake-up per message.
//! The body is close-delimited (no chunked framing): an event stream never ends by itself, so
//! framing would buy nothing but bytes per event, and close-delimited bytes are exactly the
//! shared, encode-once event bytes.
//! Must not: hold a read buffer while idle (readiness only), or borrow shard state across an await.

use std::sync::Arc;

use crate::codec::route::query_param;
use crate::codec::{http1, sse as codec};
use crate::metrics::M;
use crate::shard::core::Counted;
use crate::shard::io;
use crate::shard::outbox::out::Out;
use crate::shard::outbox::wire::Format;
use crate::shard::routes::answer::{cors, Answer, Next, Req, SsePlan};
use crate::shard::routes::authz;
use crate::shard::routes::connio::Conn;
use crate::shard::routes::poll::since_of;
use crate::shard::stream::park::{self, retry_seed, StreamGuard};

/// Checks an SSE request and writes the stream's first bytes into `c.wbuf`: the head, a
/// jittered `retry:` and an opening comment. Errors are answered as plain HTTP.
pub fn prepare(c: &mut Conn, req: &Req<'_>, topic: String) -> Next {
    let sh = c.sh.clone();
    let origin = match cors(&sh, req.buf, req.head) {
        Ok(o) => o,
        Err(_) => {
            sh.metrics().inc(M::BadRequests);
            let mut a = Answer {
                http10: req.head.minor_version == 0,
                out: &mut c.wbuf,
                keep_alive: req.head.keep_alive,
                head_only: false,
                date: sh.date.get(),
                cors: None,
            };
            a.error(403, "origin not allowed");
            return Next::KeepAlive;
        }
    };
    let exp = match authz::may_read(&sh, req, &topic) {
        Ok(g) => authz::exp_of(g.as_ref()),
        Err(d) => {
            let mut a = Answer {
                http10: req.head.minor_version == 0,
                out: &mut c.wbuf,
                keep_alive: req.head.keep_alive,
                head_only: req.head.method == http1::Method::Head,
                date: sh.date.get(),
                cors: origin,
            };
            authz::refuse(&mut a, d);
            return Next::KeepAlive;
        }
    };
    if sh.is_draining() {
        let mut a = Answer {
            http10: req.head.minor_version == 0,
            out: &mut c.wbuf,
            keep_alive: false,
            head_only: false,
            date: sh.date.get(),
            cors: origin,
        };
        a.send(503, &[("Retry-After", b"1")], b"draining\n");
        return Next::Close;
    }
    let since = match req.header("last-event-id") {
        Some(v) => since_of(Some(v.trim_ascii())),
        None => since_of(query_param(req.query(), "last_event_id").as_deref()),
    };
    let mut h: Vec<(&str, &[u8])> = vec![
        ("Content-Type", b"text/event-stream"),
        ("Cache-Control", b"no-cache, no-transform"),
        ("X-Accel-Buffering", b"no"),
        ("Connection", b"keep-alive"),
    ];
    if let Some(o) = &origin {
        h.push(("Access-Control-Allow-Origin", o));
        h.push(("Vary", b"Origin"));
    }
    http1::write_stream_head(&mut c.wbuf, 200, &h, &sh.date.get());
    if req.head.method == http1::Method::Head {
        return Next::Close;
    }
    let seed = retry_seed(&sh, c.fd);
    codec::encode_retry(
        &mut c.wbuf,
        codec::jittered_retry_ms(sh.node.cfg.sse_retry_ms, seed),
    );
    codec::encode_comment(&mut c.wbuf, b"ok");
    Next::Sse(SsePlan {
        topic: Arc::from(topic),
        since,
        exp,
    })
}

/// Runs an SSE stream whose first bytes are sent: subscribe (replay or reset first), then park
/// it — from then on it holds no task (see `park.rs`).
pub async fn stream(c: Conn, plan: SsePlan, counted: Counted) {
    let sh = c.sh.clone();
    let mut out = Out::new(c.fd, Format::Sse);
    out.exp = plan.exp;
    let ok = sh.st.borrow_mut().subs.outs.insert(out);
    let g = StreamGuard::new(&sh, ok);
    match sh.subscribe(ok, plan.topic, plan.since, usize::MAX).await {
        Ok((sk, _)) => {
            g.add_sub(sk);
            sh.metrics().inc(M::SseOpen);
        }
        Err(f) => {
            crate::debug!("{}: sse subscribe failed: {f:?}", c.peer);
            let mut v = Vec::new();
            codec::encode_comment(&mut v, b"unavailable: too many topics or overloaded");
            let _ = io::write_some(c.fd, &v);
            io::shutdown_write(c.fd);
            return;
        }
    }
    g.disarm();
    counted.disarm();
    park::park(&sh, c.stream, ok);
}
