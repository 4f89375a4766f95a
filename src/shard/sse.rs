//! `GET /sse/{topic}`: a Server-Sent Events stream, and the shard-wide stream chores
//! (heartbeats, staged drain) shared with WebSocket streams.
//!
//! Owns: the stream's first bytes (head, jittered `retry:`, an opening comment, flushed at
//! once), resume from `Last-Event-ID` (or `?last_event_id=` for clients that cannot set
//! headers), and the stream task, which sleeps until the client leaves, its backlog needs a
//! writable socket, or the shard wants it closed. Live messages are written by the inbox
//! task's flush, not by this task, so a quiet or busy stream costs no task wake-up per message.
//! The body is close-delimited (no chunked framing): an event stream never ends by itself, so
//! framing would buy nothing but bytes per event, and close-delimited bytes are exactly the
//! shared, encode-once event bytes.
//! Must not: hold a read buffer while idle (readiness only), or borrow shard state across an await.

use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::codec::{http1, sse as codec};
use crate::fanout::Since;
use crate::metrics::M;
use crate::shard::conn::{cors, Answer, Conn, Next, Req};
use crate::shard::poll::since_of;
use crate::shard::subs::{Format, Kill, Out};
use crate::shard::{io, route_since, Shard};

/// Heartbeat comment bytes.
const HEARTBEAT: &[u8] = b":\n\n";

/// What a stream needs once its request is gone.
pub struct Plan {
    pub(crate) topic: Arc<str>,
    pub(crate) since: Since,
    pub(crate) seed: u64,
}

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
        None => since_of(route_since(req.query(), "last_event_id").as_deref()),
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
    let seed = (c.fd as u64) ^ ((sh.id as u64) << 32) ^ sh.node.seed;
    codec::encode_retry(
        &mut c.wbuf,
        codec::jittered_retry_ms(sh.node.cfg.sse_retry_ms, seed),
    );
    codec::encode_comment(&mut c.wbuf, b"ok");
    Next::Sse(Plan {
        topic: Arc::from(topic),
        since,
        seed,
    })
}

/// Runs an SSE stream whose first bytes are sent: subscribe (replay or reset first), then
/// live until the client leaves or the shard ends it.
pub async fn stream(c: &mut Conn, plan: Plan) {
    let sh = c.sh.clone();
    let ok = sh
        .st
        .borrow_mut()
        .subs
        .outs
        .insert(Out::new(c.fd, Format::Sse));
    let mut g = StreamGuard {
        sh: &sh,
        out: ok,
        subs: Vec::new(),
        gauge: None,
    };
    match sh.subscribe(ok, plan.topic, plan.since, usize::MAX).await {
        Ok((sk, _)) => {
            g.subs.push(sk);
            sh.metrics().inc(M::SseOpen);
            g.gauge = Some(M::SseOpen);
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
    let kill = run_stream(&sh, c, ok).await;
    if kill == Some(Kill::Shutdown) {
        // A last retry, jittered, so clients do not all come back in the same instant.
        let mut v = Vec::new();
        codec::encode_retry(
            &mut v,
            codec::jittered_retry_ms(sh.node.cfg.sse_retry_ms, plan.seed.rotate_left(17)),
        );
        let _ = io::write_some(c.fd, &v);
    }
    io::shutdown_write(c.fd);
}

/// Waits on a stream until it ends; returns why the shard ended it (None: the client left).
pub async fn run_stream(sh: &Rc<Shard>, c: &mut Conn, ok: usize) -> Option<Kill> {
    loop {
        let Ok((kill, backlog)) = write_backlog(sh, ok) else {
            return None;
        };
        if let Some(k) = kill {
            return Some(k);
        }
        let notified = std::future::poll_fn(|cx| {
            let mut st = sh.st.borrow_mut();
            let out = &mut st.subs.outs[ok];
            if out.kill.is_some() || (!backlog && !out.backlog.is_empty()) {
                Poll::Ready(())
            } else {
                out.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        if backlog {
            monoio::select! {
                _ = notified => {},
                r = c.stream.writable(false) => if r.is_err() { return None },
            }
        } else {
            let gone = monoio::select! {
                _ = notified => false,
                r = c.stream.readable(false) => r.is_err() || client_left(c),
            };
            if gone {
                return None;
            }
        }
    }
}

/// Writes what the socket takes of a stream's backlog. Returns the kill reason (if the shard
/// wants the stream closed) and whether a backlog remains; Err when the socket failed.
pub fn write_backlog(sh: &Shard, ok: usize) -> std::io::Result<(Option<Kill>, bool)> {
    let mut st = sh.st.borrow_mut();
    let out = &mut st.subs.outs[ok];
    if !out.backlog.is_empty() {
        let n = io::write_some(out.fd, &out.backlog)?;
        out.backlog.drain(..n);
        out.wrote(n);
        sh.metrics().add(M::BufferedBytes, -(n as i64));
        if out.backlog.is_empty() {
            out.backlog = Vec::new();
        } else if out.backlog.capacity() > 64 * 1024 && out.backlog.len() < 4096 {
            out.backlog.shrink_to_fit();
        }
    }
    // A queued reset close frame must go out before the stream ends.
    if out.kill == Some(Kill::Reset) && !out.backlog.is_empty() {
        return Ok((None, true));
    }
    Ok((out.kill, !out.backlog.is_empty()))
}

/// The client sent bytes or closed: read them into a small stack buffer and discard (an SSE
/// client has nothing to say after its request). True when it closed.
fn client_left(c: &Conn) -> bool {
    let mut scratch = [0u8; 512];
    loop {
        // SAFETY: recv into a live stack buffer of the given length.
        let n = unsafe {
            libc::recv(
                c.fd,
                scratch.as_mut_ptr() as *mut libc::c_void,
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return true;
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            );
        }
    }
}

/// Frees a stream's subscriptions and state however it ends.
pub struct StreamGuard<'a> {
    pub sh: &'a Shard,
    pub out: usize,
    pub subs: Vec<usize>,
    /// The open-streams gauge, counted once the subscription is in place.
    pub gauge: Option<M>,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        for &sk in &self.subs {
            self.sh.unsubscribe(sk);
        }
        if let Some(out) = self.sh.st.borrow_mut().subs.outs.try_remove(self.out) {
            if !out.backlog.is_empty() {
                self.sh
                    .metrics()
                    .add(M::BufferedBytes, -(out.backlog.len() as i64));
            }
        }
        if let Some(g) = self.gauge {
            self.sh.metrics().dec(g);
        }
    }
}

/// Queues a heartbeat: a comment on every SSE stream that had nothing written since the last
/// sweep, a ping on every WebSocket (closing those whose last ping went unanswered past
/// `--pong-timeout-secs`).
pub fn heartbeat(sh: &Shard, tick: u64) {
    let mut st = sh.st.borrow_mut();
    let policy = sh.policy();
    let comment: Rc<[u8]> = Rc::from(HEARTBEAT);
    let mut ping = Vec::new();
    crate::codec::ws::encode_frame(&mut ping, crate::codec::ws::OpCode::Ping, b"");
    let ping: Rc<[u8]> = ping.into();
    let pong_timeout = sh.node.cfg.pong_timeout_secs.max(1);
    let mut beats: Vec<(usize, Rc<[u8]>)> = Vec::new();
    for (k, o) in st.subs.outs.iter_mut() {
        let active = std::mem::replace(&mut o.active, false);
        if o.kill.is_some() {
            continue;
        }
        match o.format {
            Format::Sse if !active => beats.push((k, comment.clone())),
            Format::WsRaw | Format::WsV1 => {
                if o.pong_due != 0 && tick >= o.pong_due {
                    o.kill = Some(Kill::PongTimeout);
                    o.wake();
                    continue;
                }
                if o.pong_due == 0 {
                    o.pong_due = tick + pong_timeout;
                }
                beats.push((k, ping.clone()));
            }
            _ => {}
        }
    }
    for (k, b) in beats {
        st.subs.queue_raw(k, b, &policy);
        if let Some(o) = st.subs.outs.get_mut(k) {
            o.active = false;
        }
    }
    st.subs.flush(&policy);
}

/// Closes WebSockets whose pong is overdue (checked every second, between heartbeats).
pub fn check_pongs(sh: &Shard, tick: u64) {
    let mut st = sh.st.borrow_mut();
    for (_, o) in st.subs.outs.iter_mut() {
        if o.pong_due != 0 && tick >= o.pong_due && o.kill.is_none() {
            o.kill = Some(Kill::PongTimeout);
            o.wake();
        }
    }
}

/// Closes every stream in ten stages spread over `span`, so clients do not all reconnect in
/// the same millisecond.
pub async fn drain_streams(sh: &Rc<Shard>, span: Duration) {
    const STAGES: usize = 10;
    for stage in 0..STAGES {
        let keys: Vec<usize> = sh
            .st
            .borrow()
            .subs
            .outs
            .iter()
            .filter(|(_, o)| o.kill.is_none())
            .map(|(k, _)| k)
            .collect();
        if keys.is_empty() {
            return;
        }
        let left = STAGES - stage;
        let n = keys.len().div_ceil(left);
        {
            let mut st = sh.st.borrow_mut();
            for &k in keys.iter().take(n) {
                if let Some(o) = st.subs.outs.get_mut(k) {
                    if o.kill.is_none() {
                        o.kill = Some(Kill::Shutdown);
                    }
                    o.wake();
                }
            }
        }
        monoio::time::sleep(span / STAGES as u32).await;
    }
}
