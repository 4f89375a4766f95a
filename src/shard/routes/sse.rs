//! `GET /sse/{topic}`: a Server-Sent Events stream. Its heartbeats (and the staged drain) are
//! chores of every stream, SSE or WebSocket: `stream/chores.rs`.
//!
//! Owns: the stream's first bytes (head, jittered `retry:`, an opening comment, flushed at
//! once), resume from `Last-Event-ID` (or `?last_event_id=` for clients that cannot set
//! headers), and the task that subscribes the stream and then parks it (`park.rs`): an idle
//! stream holds no task; the shard's readiness set notices when its client leaves or its
//! backlog can be written. Live messages are written by the shard's writer (the inbox task),
//! so a quiet or busy stream costs no task wake-up per message.
//! The body is close-delimited (no chunked framing): an event stream never ends by itself, so
//! framing would buy nothing but bytes per event, and close-delimited bytes are exactly the
//! shared, encode-once event bytes.
//! Must not: hold a read buffer while idle (readiness only), or borrow shard state across an await.

use std::sync::Arc;

use crate::codec::position::Position;
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
use crate::shard::routes::multi;
use crate::shard::routes::poll::start_of;
use crate::shard::stream::park::{self, retry_seed, StreamGuard};

/// Checks an SSE request and writes the stream's first bytes into `c.wbuf`: the head, a
/// jittered `retry:` and an opening comment. Errors are answered as plain HTTP.
pub fn prepare(c: &mut Conn, req: &Req<'_>, topic: String) -> Next {
    open(c, req, Some(topic))
}

/// [`prepare`] for `GET /sse?topic=A&topic=B…` (`multi.rs`): a 400 for a bad topic list, a
/// bad `rewind`, and read permission needed on every topic.
pub fn prepare_multi(c: &mut Conn, req: &Req<'_>) -> Next {
    open(c, req, None)
}

fn open(c: &mut Conn, req: &Req<'_>, topic: Option<String>) -> Next {
    let sh = c.sh.clone();
    let answer = |out, keep_alive, cors| Answer {
        http10: req.head.minor_version == 0,
        out,
        keep_alive,
        head_only: req.head.method == http1::Method::Head,
        date: sh.date.get(),
        cors,
    };
    let origin = match cors(&sh, req.buf, req.head) {
        Ok(o) => o,
        Err(_) => {
            sh.metrics().inc(M::BadRequests);
            answer(&mut c.wbuf, req.head.keep_alive, None).error(403, "origin not allowed");
            return Next::KeepAlive;
        }
    };
    // Where the client stands: `Last-Event-ID` (or `?last_event_id=`), a position or, on a
    // multi-topic stream, a stream position token.
    let last = match req.header("last-event-id") {
        Some(v) => Some(std::borrow::Cow::Borrowed(v.trim_ascii())),
        None => query_param(req.query(), "last_event_id"),
    };
    let starts = match &topic {
        Some(t) => start_of(last.as_deref(), req.query()).map(|s| vec![(Arc::from(&**t), s)]),
        None => multi::starts(&sh, req.query(), last.as_deref()),
    };
    let starts = match starts {
        Ok(s) => s,
        Err(e) => {
            sh.metrics().inc(M::BadRequests);
            crate::debug!("{}: sse refused: {}", req.peer, e.reason());
            answer(&mut c.wbuf, req.head.keep_alive, origin).error(400, e.reason());
            return Next::KeepAlive;
        }
    };
    let exp = match multi::may_read_all(&sh, req, &starts) {
        Ok(e) => e,
        Err(d) => {
            authz::refuse(&mut answer(&mut c.wbuf, req.head.keep_alive, origin), d);
            return Next::KeepAlive;
        }
    };
    if sh.is_draining() {
        let mut a = answer(&mut c.wbuf, false, origin);
        a.head_only = false;
        a.send(503, &[("Retry-After", b"1")], b"draining\n");
        return Next::Close;
    }
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
    match topic {
        Some(_) => {
            let (topic, since) = starts.into_iter().next().expect("one topic");
            Next::Sse(SsePlan {
                topic,
                since,
                exp,
                multi: None,
            })
        }
        None => Next::Sse(SsePlan {
            topic: Arc::from(""),
            since: crate::fanout::Since::None,
            exp,
            multi: Some(Box::new(starts)),
        }),
    }
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
            // Where the stream stands, as an `id:` with no data (it dispatches nothing): a
            // browser that reconnects before the first message resumes from here. After the
            // replay, and from the subscription's cursor, so it equals the last id written.
            let mut st = sh.st.borrow_mut();
            let st = &mut *st;
            if let Some(sub) = st.subs.subs.get(sk) {
                let mut v = b"id: ".to_vec();
                Position::new(sub.epoch, sub.cursor).write(&mut v);
                v.extend_from_slice(b"\n\n");
                let policy = sh.policy();
                st.subs.queue_raw(ok, v.into(), &policy);
                st.subs.flush_out(ok, &policy);
            }
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
