//! `GET /ws/{topic}`: a WebSocket connection on the pub/sub core (RFC 6455).
//!
//! Owns: the upgrade (origin check, handshake validation, `ringcast.v1` negotiation), resume
//! with `?since=`, the connection loop (client frames in, control frames and replies out), the
//! `ringcast.v1` commands, and the close codes that say why the server ended a connection:
//!
//! | code | why |
//! |---|---|
//! | 1000 | the client closed; echoed |
//! | 1001 | the node is draining (`--drain-timeout-secs`) |
//! | 1002 / 1007 / 1009 | protocol error / invalid UTF-8 / message over `--max-message-bytes` |
//! | 1008 | slow client: its send buffer hit `--client-buffer-bytes` (`--slow-client disconnect`) |
//! | 1011 | no pong within `--pong-timeout-secs` of a ping |
//! | 4000 | raw mode only: reset — the resume point is outside history, or messages were dropped; the reason is `reset EPOCH:OFFSET` (the current position) |
//!
//! Live messages are written by the inbox task's flush; this task only wakes for client input,
//! a backlog, or a close. Everything it writes goes through the same per-connection queue, so a
//! pong or an ack never lands inside another frame.
//! Must not: hold a read buffer while idle, or borrow shard state across an await.

use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use serde::Deserialize;

use crate::codec::position::Position;
use crate::codec::{route, ws};
use crate::fanout::{NewMsg, Since};
use crate::metrics::M;
use crate::shard::conn::{cors, Answer, Conn, Next, Req};
use crate::shard::io::{self, ReadOutcome};
use crate::shard::poll::since_of;
use crate::shard::publish::valid_event;
use crate::shard::sse::StreamGuard;
use crate::shard::subs::{Format, Kill, Out};
use crate::shard::{wire, Fail, Shard};

/// The subprotocol with JSON envelopes, ids and commands.
pub const SUBPROTOCOL_V1: &str = "ringcast.v1";
/// Close code for a slow client.
pub const CLOSE_SLOW_CLIENT: u16 = 1008;
/// Close code for a missing pong.
pub const CLOSE_PONG_TIMEOUT: u16 = 1011;
/// Most topics one `ringcast.v1` connection may subscribe to.
pub const MAX_TOPICS_PER_CONNECTION: usize = 64;
/// Bytes asked of the kernel per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// What a WebSocket needs once its request is gone.
pub struct Plan {
    pub(crate) topic: Arc<str>,
    pub(crate) since: Since,
    pub(crate) v1: bool,
}

/// Checks an upgrade request and writes the 101 into `c.wbuf`; refusals are plain HTTP.
pub fn prepare(c: &mut Conn, req: &Req<'_>, topic: String) -> Next {
    let sh = c.sh.clone();
    let deny = |c: &mut Conn, status: u16, reason: &str, extra: &[(&str, &[u8])]| {
        sh.metrics().inc(M::BadRequests);
        crate::debug!("{}: websocket upgrade refused: {status} {reason}", c.peer);
        let mut a = Answer {
            http10: false,
            out: &mut c.wbuf,
            keep_alive: false,
            head_only: false,
            date: sh.date.get(),
            cors: None,
        };
        let mut h: Vec<(&str, &[u8])> = vec![("Content-Type", b"text/plain; charset=utf-8")];
        h.extend_from_slice(extra);
        let mut body = reason.as_bytes().to_vec();
        body.push(b'\n');
        a.send(status, &h, &body);
        Next::Close
    };
    // Cross-site WebSocket hijacking: a browser says where the page came from.
    if cors(&sh, req.buf, req.head).is_err() {
        return deny(c, 403, "origin not allowed", &[]);
    }
    let up = match ws::validate_upgrade(
        req.head.method == crate::codec::http1::Method::Get,
        req.head.minor_version,
        req.head.headers(req.buf),
    ) {
        Ok(u) => u,
        Err(e) if e.status() == 426 => {
            return deny(c, 426, e.reason(), &[("Sec-WebSocket-Version", b"13")]);
        }
        Err(e) => return deny(c, e.status(), e.reason(), &[]),
    };
    if sh.is_draining() {
        return deny(c, 503, "draining", &[("Retry-After", b"1")]);
    }
    let v1 = ws::offers_protocol(up.protocols, SUBPROTOCOL_V1);
    let since = since_of(route::query_param(req.query(), "since").as_deref());
    ws::write_101(
        &mut c.wbuf,
        &ws::accept_key(up.key),
        v1.then_some(SUBPROTOCOL_V1),
    );
    Next::Ws(Plan {
        topic: Arc::from(topic),
        since,
        v1,
    })
}

/// Runs a WebSocket whose 101 is sent.
pub async fn stream(c: &mut Conn, plan: Plan) {
    let sh = c.sh.clone();
    let Plan { topic, since, v1 } = plan;
    let format = if v1 { Format::WsV1 } else { Format::WsRaw };
    let ok = sh.st.borrow_mut().subs.outs.insert(Out::new(c.fd, format));
    let mut g = StreamGuard {
        sh: &sh,
        out: ok,
        subs: Vec::new(),
        gauge: None,
    };
    match sh.subscribe(ok, topic.clone(), since, usize::MAX).await {
        Ok((sk, w)) => {
            g.subs.push(sk);
            sh.metrics().inc(M::WsOpen);
            g.gauge = Some(M::WsOpen);
            if v1 {
                let mut j = Vec::new();
                subscribed_json(&topic, w.current, None, &mut j);
                send_frame(&sh, ok, &j);
            }
        }
        Err(f) => {
            let mut v = Vec::new();
            ws::encode_close(&mut v, ws::CLOSE_INTERNAL_ERROR, fail_text(f));
            let _ = io::write_some(c.fd, &v);
            io::shutdown_write(c.fd);
            return;
        }
    }
    let mut session = Session {
        topic,
        v1,
        dec: ws::Decoder::new(sh.node.cfg.max_message_bytes),
        carry: [0; ws::MAX_HEADER_BYTES],
        carry_len: 0,
    };
    let end = session.run(&sh, c, &mut g).await;
    let code = match end {
        End::Gone => None,
        End::Kill(Kill::Slow) => Some((CLOSE_SLOW_CLIENT, "slow client")),
        End::Kill(Kill::Shutdown) => Some((ws::CLOSE_GOING_AWAY, "going away")),
        End::Kill(Kill::PongTimeout) => Some((CLOSE_PONG_TIMEOUT, "ping timeout")),
        // The reset close frame is already queued.
        End::Kill(Kill::Reset) => None,
        End::Close(code) => Some((code, "")),
    };
    // Whatever is still queued goes first (best effort), then our close frame.
    let backlog = {
        let st = sh.st.borrow();
        st.subs
            .outs
            .get(ok)
            .map(|o| o.backlog.clone())
            .unwrap_or_default()
    };
    let mut v = backlog;
    if let Some((code, reason)) = code {
        ws::encode_close(&mut v, code, reason);
    }
    if !v.is_empty() {
        let _ = io::write_some(c.fd, &v);
    }
    io::shutdown_write(c.fd);
}

fn fail_text(f: Fail) -> &'static str {
    match f {
        Fail::TooManyTopics => "too many topics",
        Fail::Overloaded => "overloaded",
    }
}

/// How a connection ended.
enum End {
    /// The client vanished or closed the TCP connection.
    Gone,
    /// The shard ended it.
    Kill(Kill),
    /// A close handshake or a protocol error: send this close code.
    Close(u16),
}

/// Queues one text frame for the connection, then writes it.
fn send_frame(sh: &Shard, ok: usize, payload: &[u8]) {
    let mut f = Vec::with_capacity(payload.len() + 10);
    ws::encode_frame(&mut f, ws::OpCode::Text, payload);
    queue(sh, ok, f);
}

fn queue(sh: &Shard, ok: usize, bytes: Vec<u8>) {
    let mut st = sh.st.borrow_mut();
    let policy = sh.policy();
    if !st.subs.queue_raw(ok, bytes.into(), &policy) {
        if let Some(o) = st.subs.outs.get_mut(ok) {
            o.kill.get_or_insert(Kill::Slow);
            o.wake();
        }
    }
    st.subs.flush(&policy);
}

/// `{"type":"subscribed","topic","id","ref"?}`: sent after the replay (or reset) of the
/// subscription, so `id` is the position live messages continue from.
fn subscribed_json(topic: &str, current: Position, r: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"subscribed\",\"topic\":");
    wire::json_str(topic, out);
    if let Some(r) = r {
        out.extend_from_slice(b",\"ref\":");
        wire::json_str(r, out);
    }
    out.extend_from_slice(b",\"id\":\"");
    current.write(out);
    out.extend_from_slice(b"\"}");
}

struct Session {
    topic: Arc<str>,
    v1: bool,
    dec: ws::Decoder,
    /// An incomplete frame header left from the last read (at most 14 bytes).
    carry: [u8; ws::MAX_HEADER_BYTES],
    carry_len: usize,
}

impl Session {
    async fn run(&mut self, sh: &Rc<Shard>, c: &mut Conn, g: &mut StreamGuard<'_>) -> End {
        let ok = g.out;
        loop {
            let (kill, backlog) = match crate::shard::sse::write_backlog(sh, ok) {
                Ok(x) => x,
                Err(_) => return End::Gone,
            };
            if let Some(k) = kill {
                return End::Kill(k);
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
            let readable = if backlog {
                monoio::select! {
                    _ = notified => false,
                    r = c.stream.writable(false) => { if r.is_err() { return End::Gone } false }
                    r = c.stream.readable(false) => { if r.is_err() { return End::Gone } true }
                }
            } else {
                monoio::select! {
                    _ = notified => false,
                    r = c.stream.readable(false) => { if r.is_err() { return End::Gone } true }
                }
            };
            if readable {
                if let Some(end) = self.read(sh, c, g).await {
                    return end;
                }
            }
        }
    }

    /// Reads what the client sent and acts on every complete event.
    async fn read(&mut self, sh: &Rc<Shard>, c: &mut Conn, g: &mut StreamGuard<'_>) -> Option<End> {
        let mut buf = sh.st.borrow_mut().bufpool.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(&self.carry[..self.carry_len]);
        self.carry_len = 0;
        let end = match io::read_some(c.fd, &mut buf, READ_CHUNK_BYTES) {
            Ok(ReadOutcome::Data(_)) => self.feed(sh, c, g, &mut buf).await,
            Ok(ReadOutcome::WouldBlock) => None,
            Ok(ReadOutcome::Eof) | Err(_) => Some(End::Gone),
        };
        if buf.capacity() <= 64 * 1024 {
            buf.clear();
            sh.st.borrow_mut().bufpool.push(buf);
        }
        if self.dec.is_idle() {
            self.dec.release_buffers();
        }
        end
    }

    async fn feed(
        &mut self,
        sh: &Rc<Shard>,
        c: &mut Conn,
        g: &mut StreamGuard<'_>,
        buf: &mut [u8],
    ) -> Option<End> {
        let ok = g.out;
        let mut pos = 0;
        loop {
            let (used, ev) = match self.dec.decode(&mut buf[pos..]) {
                Ok(x) => x,
                Err(e) => {
                    sh.metrics().inc(M::BadRequests);
                    crate::debug!("{}: websocket protocol error: {e}", c.peer);
                    return Some(End::Close(e.close_code()));
                }
            };
            pos += used;
            let Some(ev) = ev else {
                if used == 0 {
                    // An incomplete header: keep it for the next read.
                    let rest = &buf[pos..];
                    self.carry[..rest.len()].copy_from_slice(rest);
                    self.carry_len = rest.len();
                    return None;
                }
                continue;
            };
            match ev {
                ws::Event::Ping => {
                    let mut f = Vec::with_capacity(2 + self.dec.control_payload().len());
                    ws::encode_frame(&mut f, ws::OpCode::Pong, self.dec.control_payload());
                    queue(sh, ok, f);
                }
                ws::Event::Pong => {
                    if let Some(o) = sh.st.borrow_mut().subs.outs.get_mut(ok) {
                        o.pong_due = 0;
                    }
                }
                ws::Event::Close { code } => {
                    // Echo the code (1000 for an empty close), then close.
                    return Some(End::Close(code.unwrap_or(ws::CLOSE_NORMAL)));
                }
                ws::Event::Message { binary } => {
                    let data: Box<[u8]> = self.dec.message().into();
                    self.dec.clear_message();
                    // Boxed: message handling awaits publishes and subscriptions; inlined, its state would
                    // make every idle WebSocket task as large (2.5 KB instead of ~0.5 KB).
                    if let Some(end) = Box::pin(self.message(sh, g, data, binary)).await {
                        return Some(end);
                    }
                }
            }
        }
    }

    async fn message(
        &mut self,
        sh: &Rc<Shard>,
        g: &mut StreamGuard<'_>,
        data: Box<[u8]>,
        binary: bool,
    ) -> Option<End> {
        let ok = g.out;
        if !self.v1 {
            if !sh.node.cfg.client_publish() {
                return Some(End::Close(ws::CLOSE_POLICY_VIOLATION));
            }
            let msg = NewMsg {
                event: None,
                data,
                binary,
            };
            if let Err(f) = sh.publish(self.topic.clone(), vec![msg]).await {
                crate::debug!("websocket publish failed: {f:?}");
                return Some(End::Close(ws::CLOSE_INTERNAL_ERROR));
            }
            return None;
        }
        let mut reply = Vec::with_capacity(96);
        if binary {
            error_json(
                None,
                "binary frames are not ringcast.v1 commands",
                &mut reply,
            );
        } else {
            match serde_json::from_slice::<Command>(&data) {
                Err(_) => error_json(None, "not a ringcast.v1 command", &mut reply),
                Ok(cmd) => self.command(sh, g, cmd, &mut reply).await,
            }
        }
        send_frame(sh, ok, &reply);
        None
    }

    async fn command(
        &mut self,
        sh: &Rc<Shard>,
        g: &mut StreamGuard<'_>,
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
                let already = {
                    let st = sh.st.borrow();
                    g.subs
                        .iter()
                        .any(|&sk| st.subs.subs.get(sk).is_some_and(|s| *s.topic == *t))
                };
                if already {
                    return error_json(r, "already subscribed", reply);
                }
                if g.subs.len() >= MAX_TOPICS_PER_CONNECTION {
                    return error_json(r, "too many topics on this connection", reply);
                }
                let since = since_of(cmd.since.as_deref().map(str::as_bytes));
                match sh
                    .subscribe(g.out, Arc::from(t.as_str()), since, usize::MAX)
                    .await
                {
                    Ok((sk, w)) => {
                        g.subs.push(sk);
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
                    let st = sh.st.borrow();
                    g.subs
                        .iter()
                        .position(|&sk| st.subs.subs.get(sk).is_some_and(|s| *s.topic == *t))
                };
                match found {
                    Some(i) => {
                        let sk = g.subs.swap_remove(i);
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
                if let Some(e) = &cmd.event {
                    if !valid_event(e.as_bytes()) {
                        return error_json(r, "bad event name", reply);
                    }
                }
                let Some(d) = cmd.data else {
                    return error_json(r, "publish needs \"data\"", reply);
                };
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
            _ => error_json(r, "unknown command type", reply),
        }
    }
}

/// A `ringcast.v1` client command.
#[derive(Deserialize)]
struct Command {
    r#type: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    since: Option<String>,
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

fn error_json(r: Option<&str>, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"error\"");
    if let Some(r) = r {
        out.extend_from_slice(b",\"ref\":");
        wire::json_str(r, out);
    }
    out.extend_from_slice(b",\"message\":");
    wire::json_str(message, out);
    out.push(b'}');
}
