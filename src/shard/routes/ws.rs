//! `GET /ws/{topic}`: a WebSocket connection on the pub/sub core (RFC 6455).
//!
//! Owns: the upgrade (origin check, handshake validation, `ringcast.v1` negotiation), resume
//! with `?since=`, the connection loop (client frames in, control frames and replies out). The
//! `ringcast.v1` commands are `v1.rs`; which close code says why the server ended a connection
//! is `outbox/close.rs`.
//!
//! Live messages are written by the shard's writer (the inbox task). Once subscribed, the connection is
//! parked (`park.rs`): it holds no task while idle, and a short task (`burst`) runs only while
//! the client's frames are read and acted on. Everything written goes through the same
//! per-connection queue, so a pong or an ack never lands inside another frame.
//! Must not: hold a read buffer while idle, or borrow shard state across an await.

use std::rc::Rc;
use std::sync::Arc;

use crate::admission::SmallBucket;
use crate::codec::{route, ws};
use crate::fanout::NewMsg;
use crate::metrics::M;
use crate::shard::core::Counted;
use crate::shard::core::Shard;
use crate::shard::io::READ_CHUNK_BYTES;
use crate::shard::io::{self, ReadOutcome};
use crate::shard::outbox::close::CLOSE_PUBLISH_RATE;
use crate::shard::outbox::out::{Kill, Out};
use crate::shard::outbox::session::Session;
use crate::shard::outbox::wire::Format;
use crate::shard::outbox::wire::{error_json, subscribed_json};
use crate::shard::routes::answer::{cors, Answer, Next, Req, WsPlan};
use crate::shard::routes::authz;
use crate::shard::routes::connio::{release_buf, take_pooled, Conn};
use crate::shard::routes::poll::start_of;
use crate::shard::routes::v1::{fail_text, Command};
use crate::shard::stream::park::StreamGuard;
use crate::shard::stream::park::{self, End};

/// The subprotocol with JSON envelopes, ids and commands.
pub const SUBPROTOCOL_V1: &str = "ringcast.v1";
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
        a.error_with(status, reason, extra);
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
    let grant = match authz::may_read(&sh, req, &topic) {
        Ok(g) => g,
        Err(d) if d.status() == 401 => {
            return deny(c, 401, d.reason(), &[("WWW-Authenticate", b"Bearer")])
        }
        Err(d) => return deny(c, d.status(), d.reason(), &[]),
    };
    let v1 = ws::offers_protocol(up.protocols, SUBPROTOCOL_V1);
    let since = match start_of(
        route::query_param(req.query(), "since").as_deref(),
        req.query(),
    ) {
        Ok(s) => s,
        Err(e) => return deny(c, 400, e.reason(), &[]),
    };
    ws::write_101(
        &mut c.wbuf,
        &ws::accept_key(up.key),
        v1.then_some(SUBPROTOCOL_V1),
    );
    Next::Ws(WsPlan {
        topic: Arc::from(topic),
        since,
        v1,
        exp: authz::exp_of(grant.as_ref()),
        publish: grant.map(Box::new),
    })
}

/// Runs a WebSocket whose 101 is sent: subscribe (replay or reset first), then park it — from
/// then on a task runs only while the client's frames are being read (`burst`).
pub async fn stream(c: Conn, plan: WsPlan, counted: Counted) {
    let sh = c.sh.clone();
    let WsPlan {
        topic,
        since,
        v1,
        exp,
        publish,
    } = plan;
    let format = if v1 { Format::WsV1 } else { Format::WsRaw };
    let mut out = Out::new(c.fd, format);
    out.exp = exp;
    out.may_publish = authz::ws_may_publish(&sh, publish.as_deref(), &topic);
    out.publish_bucket = SmallBucket::full(sh.node.cfg.ws_publish_rate, sh.adm.now_ms());
    let ok = sh.st.borrow_mut().subs.outs.insert(out);
    let g = StreamGuard::new(&sh, ok);
    match sh.subscribe(ok, topic.clone(), since, usize::MAX).await {
        Ok((sk, w)) => {
            g.add_sub(sk);
            sh.metrics().inc(M::WsOpen);
            if v1 {
                sh.metrics().inc(M::WsV1Open);
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
    if v1 {
        // A v1 connection keeps its URL topic (the default of `publish`) between bursts.
        let mut s = Session::new(&sh, topic, true);
        s.grant = publish;
        sh.st.borrow_mut().subs.outs[ok].session = Some(Box::new(s));
    }
    g.disarm();
    counted.disarm();
    park::park(&sh, c.stream, ok);
}

/// Reads and acts on what the client of parked WebSocket `k` sent, until its socket is empty
/// (or the shard wants it ended), then parks the session again.
pub async fn burst(sh: Rc<Shard>, k: usize) {
    let taken = {
        let mut st = sh.st.borrow_mut();
        let st = &mut *st;
        let Some(o) = st.subs.outs.get_mut(k) else {
            return;
        };
        match o.session.take() {
            Some(s) => Some(*s),
            // An idle raw WebSocket: its topic is its one subscription's.
            None => o
                .subs
                .first()
                .and_then(|sk| st.subs.topic_of(sk))
                .map(|topic| Session::new(&sh, topic.clone(), false)),
        }
    };
    let Some(mut s) = taken else {
        // No session and no subscription: nothing can serve this stream (not expected, but
        // a stream left `busy` would never end).
        park::finish(&sh, k, End::Close(ws::CLOSE_INTERNAL_ERROR));
        return;
    };
    loop {
        let (fd, killed) = match sh.st.borrow_mut().subs.outs.get_mut(k) {
            Some(o) => {
                o.unread = false;
                (o.fd, o.kill.is_some())
            }
            None => return,
        };
        if killed {
            break;
        }
        match s.read(&sh, k, fd).await {
            Step::More => {}
            Step::Idle => {
                // Data that came while this task was awaiting (a publish, a subscription).
                if !sh.st.borrow().subs.outs.get(k).is_some_and(|o| o.unread) {
                    break;
                }
            }
            Step::End(end) => {
                drop(s);
                park::finish(&sh, k, end);
                return;
            }
        }
    }
    if let Some(o) = sh.st.borrow_mut().subs.outs.get_mut(k) {
        o.busy = false;
        if s.v1 || !s.rx.is_idle() {
            o.session = Some(Box::new(s));
        }
    }
    // Whatever happened while the session was out (a kill, a backlog).
    park::serve(&sh, k);
}

/// What one read of a burst came to.
enum Step {
    /// The read filled its chunk: there may be more.
    More,
    /// The socket is empty for now.
    Idle,
    End(End),
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
    st.subs.flush_out(ok, &policy);
}

impl Session {
    fn new(sh: &Shard, topic: Arc<str>, v1: bool) -> Session {
        Session {
            topic,
            v1,
            rx: ws::Inbound::new(sh.node.cfg.max_message_bytes),
            grant: None,
        }
    }

    /// Reads once what the client sent and acts on every complete frame.
    async fn read(&mut self, sh: &Rc<Shard>, k: usize, fd: std::os::fd::RawFd) -> Step {
        let mut buf = take_pooled(sh);
        // The buffer starts with the carried partial header; the carry stays in `rx` until the
        // buffer is decoded to its end, so a read that brings nothing loses nothing.
        self.rx.start(&mut buf);
        let step = match io::read_some(fd, &mut buf, READ_CHUNK_BYTES) {
            Ok(ReadOutcome::Data(n)) => {
                let more = n == READ_CHUNK_BYTES;
                match self.feed(sh, k, &mut buf).await {
                    Some(end) => Step::End(end),
                    // Edge-triggered: a short read emptied the socket; more data is a new event.
                    None if more => Step::More,
                    None => Step::Idle,
                }
            }
            Ok(ReadOutcome::WouldBlock) => Step::Idle,
            Ok(ReadOutcome::Eof) | Err(_) => Step::End(End::Gone),
        };
        buf.clear();
        release_buf(sh, &mut buf);
        if self.rx.is_idle() {
            self.rx.decoder().release_buffers();
        }
        step
    }

    /// Acts on every complete frame in `buf`. A raw client's messages are published together,
    /// once the read is decoded: one publish (one flush, or one round trip to the topic's home)
    /// per read instead of one per message, in the order they came.
    async fn feed(&mut self, sh: &Rc<Shard>, ok: usize, buf: &mut [u8]) -> Option<End> {
        let mut batch = Vec::new();
        let end = self.decode(sh, ok, buf, &mut batch).await;
        if !batch.is_empty() {
            // Boxed, as is `message` below: a burst task exists for every WebSocket with
            // something to read, all of them at once when many clients send together (pongs,
            // or a mass close), so its future is kept to what every burst needs.
            if let Err(f) = Box::pin(sh.publish(self.topic.clone(), batch)).await {
                crate::debug!("websocket publish failed: {f:?}");
                return Some(End::Close(ws::CLOSE_INTERNAL_ERROR));
            }
        }
        end
    }

    async fn decode(
        &mut self,
        sh: &Rc<Shard>,
        ok: usize,
        buf: &mut [u8],
        batch: &mut Vec<NewMsg>,
    ) -> Option<End> {
        let mut pos = 0;
        loop {
            let ev = match self.rx.next(buf, &mut pos) {
                Ok(Some(ev)) => ev,
                // The read is used up; its trailing partial header is carried.
                Ok(None) => return None,
                Err(e) => {
                    sh.metrics().inc(M::BadRequests);
                    crate::debug!("websocket on topic {}: protocol error: {e}", self.topic);
                    return Some(End::Close(e.close_code()));
                }
            };
            match ev {
                ws::Event::Ping => {
                    let ping = self.rx.decoder().control_payload();
                    let mut f = Vec::with_capacity(2 + ping.len());
                    ws::encode_frame(&mut f, ws::OpCode::Pong, ping);
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
                    let data = self.rx.decoder().take_message().into_boxed_slice();
                    if !self.v1 {
                        let allowed = sh
                            .st
                            .borrow()
                            .subs
                            .outs
                            .get(ok)
                            .is_some_and(|o| o.may_publish);
                        if !sh.node.cfg.client_publish() || !allowed {
                            return Some(End::Close(ws::CLOSE_POLICY_VIOLATION));
                        }
                        if !authz::may_publish_now(sh, ok) {
                            return Some(End::Policy(CLOSE_PUBLISH_RATE, "publish rate"));
                        }
                        batch.push(NewMsg {
                            event: None,
                            data,
                            binary,
                        });
                        continue;
                    }
                    if let Some(end) = Box::pin(self.message(sh, ok, data, binary)).await {
                        return Some(end);
                    }
                }
            }
        }
    }

    /// A `ringcast.v1` command, answered in order.
    async fn message(
        &mut self,
        sh: &Rc<Shard>,
        ok: usize,
        data: Box<[u8]>,
        binary: bool,
    ) -> Option<End> {
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
                Ok(cmd) => self.command(sh, ok, cmd, &mut reply).await,
            }
        }
        send_frame(sh, ok, &reply);
        None
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use crate::shard::core::inbox::publish_tests::home_shard;

    /// Every WebSocket with something to read has a burst task at once (all of them when
    /// clients answer a ping round or leave together), so its future stays small: what a
    /// publish or a v1 command needs is boxed inside it, only while it runs.
    #[test]
    fn a_burst_task_is_small() {
        let sh = Rc::new(home_shard(&[]));
        let n = std::mem::size_of_val(&super::burst(sh, 0));
        eprintln!("ws::burst future: {n} bytes");
        assert!(n <= 1024, "{n} bytes");
    }
}
