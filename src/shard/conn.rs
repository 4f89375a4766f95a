//! One HTTP/1.1 connection: read heads and bodies, route, answer in order, or hand the socket
//! to a stream (SSE, WebSocket).
//!
//! Owns: the connection loop — keep-alive, pipelining (responses leave in request order, one
//! write per batch; publishes to a remote home pipelined behind one another go to it as one
//! command, `publish_pipeline`), HTTP/1.0, `Connection: close`, `Expect: 100-continue`,
//! Content-Length and chunked bodies, HEAD, every limit and timeout of a request, CORS and the
//! accept-time connection cap. The read buffer comes from the shard's pool while a request is
//! being read and goes back before the connection waits for the next one, so an idle keep-alive
//! connection holds no buffer.
//! Must not: parse bytes itself (the codecs do), or hold a `RefCell` borrow across an await.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};

use crate::codec::http1::{self, BodyKind, ChunkedDecoder, Head, Limits, Method, Status};
use crate::codec::route::{self, Route};
use crate::config::OVERLOAD_ANSWER_SLACK;
use crate::fanout::{home_of, NewMsg};
use crate::metrics::M;
use crate::shard::answer::{
    cors, release_buf, take_pooled, Answer, Conn, Next, OriginDenied, Req, Waiting,
    MAX_POOLED_BUFFER_BYTES,
};
use crate::shard::core::{Counted, Fail, Shard};
use crate::shard::io::READ_CHUNK_BYTES;
use crate::shard::io::{self, ReadOutcome};
use crate::shard::poll;
use crate::shard::publish;
use crate::shard::sse;
use crate::shard::ws;
use crate::{debug, warn};

pub async fn accept_loop(sh: &Rc<Shard>, listener: &TcpListener) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = sh.draining.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => admit(sh, stream, peer),
            Err(e) => {
                // EMFILE/ENFILE and friends: say so and back off instead of spinning.
                warn!("shard {}: accept failed: {e} (raise `ulimit -n`?)", sh.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn admit(sh: &Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let m = sh.metrics();
    m.inc(M::ConnectionsAccepted);
    let n = sh.node.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let max = sh.node.cfg.max_connections;
    if n > max {
        m.inc(M::ConnectionsRejected);
        if n > max + OVERLOAD_ANSWER_SLACK {
            sh.node.connections.fetch_sub(1, Ordering::Relaxed);
            debug!("connection from {peer} closed at accept: over the hard cap");
            return;
        }
        let sh = sh.clone();
        monoio::spawn(async move {
            let fd = stream.as_raw_fd();
            let mut out = Vec::new();
            let date = sh.date.get();
            http1::write_response(
                &mut out,
                503,
                &[("Retry-After", b"1"), ("Content-Type", b"text/plain")],
                b"over --max-connections\n",
                false,
                false,
                &date,
            );
            let _ = io::set_nonblocking(fd);
            let _ = io::write_some(fd, &out);
            drop(stream);
            sh.node.connections.fetch_sub(1, Ordering::Relaxed);
        });
        return;
    }
    m.inc(M::ConnectionsOpen);
    monoio::spawn(serve(sh.clone(), stream, peer));
}

#[derive(Debug)]
pub enum ReadErr {
    /// Peer closed or the socket failed: nothing to answer.
    Gone,
    /// The deadline passed.
    Timeout,
    /// The node is draining and nothing of a request has arrived.
    Draining,
}

/// Lends a pooled read buffer to `rbuf` if it has none.
fn take_buf(sh: &Shard, rbuf: &mut Vec<u8>) {
    if rbuf.capacity() == 0 {
        *rbuf = take_pooled(sh);
    }
}

impl Conn {
    fn release_buf(&mut self) {
        release_buf(&self.sh, &mut self.rbuf);
    }

    pub async fn flush(&mut self) -> std::io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = io::write_all(&self.stream, self.fd, &self.wbuf).await;
        self.wbuf.clear();
        if self.wbuf.capacity() > MAX_POOLED_BUFFER_BYTES {
            self.wbuf = Vec::new();
        }
        r
    }

    /// Sends what is written (a stream's head) and frees everything a request needed, so a
    /// long-lived stream keeps no request buffers. Bytes a client sent after its stream request
    /// are dropped: a stream's client has nothing more to say in HTTP.
    async fn begin_stream(&mut self, head: &mut Head) -> std::io::Result<()> {
        *head = Head::default();
        self.flush().await?;
        self.wbuf = Vec::new();
        self.rbuf.clear();
        self.release_buf();
        self.rbuf = Vec::new();
        Ok(())
    }

    /// Reads more bytes, waiting until `deadline`. With `idle`, the wait also ends when the
    /// node starts draining. With `eager`, a read is tried before waiting: worth it when bytes
    /// are likely there already (a new connection, the rest of a body), a wasted syscall when
    /// the peer is waiting for our answer first (keep-alive ping-pong).
    ///
    /// With a long poll `waiting`, the same readiness wait first serves the poll: it watches
    /// for the client leaving (then the poll is freed and the connection ends) while the poll
    /// waits for news or its deadline; the answer is written and the readiness poll, still
    /// armed, goes on to wait for the next request — one armed poll per request, never a
    /// cancelled one. Bytes the client sends behind its long poll stay unread until the poll
    /// is answered (responses leave in request order).
    pub async fn fill(
        &mut self,
        deadline: Instant,
        idle: bool,
        eager: bool,
        waiting: &mut Option<Waiting>,
    ) -> Result<usize, ReadErr> {
        let mut deadline = deadline;
        // Readiness has fired (or the caller asks for a read first): try a read.
        let mut try_read = eager && waiting.is_none();
        let mut ready = std::pin::pin!(self.stream.readable(false));
        // `ready` is armed and has not fired.
        let mut armed = !try_read;
        loop {
            if let Some(w) = waiting.as_ref() {
                release_buf(&self.sh, &mut self.rbuf);
                let fired = if armed {
                    monoio::select! {
                        _ = w.news() => None,
                        _ = monoio::time::sleep_until(w.deadline.into()) => None,
                        r = &mut ready => Some(r),
                    }
                } else {
                    monoio::select! {
                        _ = w.news() => None,
                        _ = monoio::time::sleep_until(w.deadline.into()) => None,
                    }
                };
                if let Some(r) = fired {
                    armed = false;
                    if r.is_err() || io::peer_closed(self.fd) {
                        *waiting = None;
                        return Err(ReadErr::Gone);
                    }
                    // A request pipelined behind the poll: read it once the poll is answered.
                    try_read = true;
                    continue;
                }
                let w = waiting.take().expect("checked above");
                let keep_alive = w.keep_alive;
                w.answer(&mut self.wbuf);
                let written = io::write_all(&self.stream, self.fd, &self.wbuf).await;
                self.wbuf.clear();
                if self.wbuf.capacity() > MAX_POOLED_BUFFER_BYTES {
                    self.wbuf = Vec::new();
                }
                if written.is_err() {
                    return Err(ReadErr::Gone);
                }
                if !keep_alive || self.sh.is_draining() {
                    io::shutdown_write(self.fd);
                    return Err(ReadErr::Gone);
                }
                if !self.rbuf.is_empty() {
                    // The next request is here already.
                    return Ok(0);
                }
                deadline = Instant::now() + Duration::from_secs(self.sh.node.cfg.idle_timeout_secs);
                continue;
            }
            if try_read {
                take_buf(&self.sh, &mut self.rbuf);
                match io::read_some(self.fd, &mut self.rbuf, READ_CHUNK_BYTES) {
                    Ok(ReadOutcome::Data(n)) => return Ok(n),
                    Ok(ReadOutcome::Eof) | Err(_) => return Err(ReadErr::Gone),
                    Ok(ReadOutcome::WouldBlock) => {}
                }
            }
            release_buf(&self.sh, &mut self.rbuf);
            // From here on `ready` is armed: the wait below ends only by returning or by
            // readiness firing (which sets `armed` and `try_read` again).
            if !armed {
                ready.set(self.stream.readable(false));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ReadErr::Timeout);
            }
            let fired = if idle {
                monoio::select! {
                    r = monoio::time::timeout(left, &mut ready) => Some(r),
                    _ = self.sh.draining.wait() => None,
                }
            } else {
                Some(monoio::time::timeout(left, &mut ready).await)
            };
            match fired {
                None => return Err(ReadErr::Draining),
                Some(Err(_)) => return Err(ReadErr::Timeout),
                Some(Ok(Err(_))) => return Err(ReadErr::Gone),
                Some(Ok(Ok(()))) => {
                    armed = false;
                    try_read = true;
                }
            }
        }
    }
}

fn limits(sh: &Shard) -> Limits {
    let c = &sh.node.cfg;
    Limits {
        max_request_line_bytes: c.max_request_line_bytes,
        max_head_bytes: c.max_head_bytes,
        max_headers: c.max_headers,
    }
}

pub async fn serve(sh: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let counted = Counted(sh.clone());
    let fd = stream.as_raw_fd();
    if io::set_nonblocking(fd).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        sh: sh.clone(),
        stream,
        fd,
        peer,
        rbuf: Vec::new(),
        wbuf: Vec::new(),
    };
    let mut head = Head::default();
    let lim = limits(&sh);
    let header_timeout = Duration::from_secs(sh.node.cfg.header_timeout_secs);
    let idle_timeout = Duration::from_secs(sh.node.cfg.idle_timeout_secs);
    let mut first = true;
    // A long poll waiting for news; `fill` answers it.
    let mut waiting: Option<Waiting> = None;
    loop {
        // ---- a head ----------------------------------------------------------------------
        let mut started: Option<Instant> = if first { Some(Instant::now()) } else { None };
        loop {
            if waiting.is_none() && !c.rbuf.is_empty() {
                started.get_or_insert_with(Instant::now);
                match http1::parse_head(&c.rbuf, &lim, &mut head) {
                    Ok(Status::Complete) => break,
                    Ok(Status::Partial) => {}
                    Err(e) => {
                        sh.metrics().inc(M::BadRequests);
                        debug!("{peer}: bad request head: {e}");
                        reject(&mut c, e.status(), e.reason()).await;
                        return;
                    }
                }
            }
            if c.rbuf.is_empty() && c.flush().await.is_err() {
                return;
            }
            if !c.wbuf.is_empty() && c.flush().await.is_err() {
                return;
            }
            let (deadline, idle) = match started {
                Some(t) => (t + header_timeout, false),
                None => (Instant::now() + idle_timeout, true),
            };
            let eager = first || !c.rbuf.is_empty();
            match c.fill(deadline, idle, eager, &mut waiting).await {
                Ok(_) => {}
                Err(ReadErr::Timeout) if started.is_some() => {
                    sh.metrics().inc(M::Timeouts);
                    debug!("{peer}: request head not complete within --header-timeout-secs");
                    reject(&mut c, 408, "request head not received in time").await;
                    return;
                }
                Err(ReadErr::Timeout) => {
                    sh.metrics().inc(M::Timeouts);
                    return;
                }
                Err(ReadErr::Gone) | Err(ReadErr::Draining) => return,
            }
        }
        first = false;
        sh.metrics().inc(M::Requests);
        // ---- its body and its answer -------------------------------------------------------
        match request(&mut c, &head).await {
            Next::KeepAlive if !sh.is_draining() => {}
            Next::KeepAlive | Next::Close => {
                let _ = c.flush().await;
                io::shutdown_write(c.fd);
                return;
            }
            Next::Done => return,
            Next::LongPoll(w) => waiting = Some(w),
            // A stream continues in a task of its own, sized for the stream alone: a task is
            // as large as its future's largest state, and the request states (long polls,
            // cross-shard publishes) would otherwise be paid by every idle stream.
            Next::Sse(plan) => {
                if c.begin_stream(&mut head).await.is_ok() {
                    monoio::spawn(sse::stream(c, plan, counted));
                }
                return;
            }
            Next::Ws(plan) => {
                if c.begin_stream(&mut head).await.is_ok() {
                    monoio::spawn(ws::stream(c, plan, counted));
                }
                return;
            }
        }
    }
}

/// Answers an unreadable request and closes.
async fn reject(c: &mut Conn, status: u16, reason: &str) {
    let mut a = Answer {
        http10: false,
        out: &mut c.wbuf,
        keep_alive: false,
        head_only: false,
        date: c.sh.date.get(),
        cors: None,
    };
    a.error(status, reason);
    let _ = c.flush().await;
    io::shutdown_write(c.fd);
}

/// Which body a route accepts, in bytes.
fn body_limit(sh: &Shard, r: &Route) -> Option<usize> {
    let c = &sh.node.cfg;
    match r {
        Route::Publish(_) => Some(c.max_message_bytes),
        Route::PublishBatch => Some(c.max_body_bytes),
        _ => None,
    }
}

/// Reads the body of the current request into `body`, answering 100 Continue when asked.
/// Returns the total bytes of head + framed body consumed from `rbuf` is left to the caller
/// through `consumed`.
async fn read_body(
    c: &mut Conn,
    head: &Head,
    limit: usize,
    body: &mut Vec<u8>,
) -> Result<usize, (u16, &'static str)> {
    let start = head.head_len;
    let idle = Duration::from_secs(c.sh.node.cfg.idle_timeout_secs);
    let deadline = move || Instant::now() + idle;
    match head.body {
        BodyKind::None => Ok(start),
        BodyKind::Length(n) => {
            if n > limit as u64 {
                return Err((413, "request body larger than the limit"));
            }
            let n = n as usize;
            if head.expect_continue && c.rbuf.len() < start + n {
                c.wbuf.extend_from_slice(http1::CONTINUE_100);
                c.flush().await.map_err(|_| (400, "gone"))?;
            }
            while c.rbuf.len() < start + n {
                let d = deadline();
                c.fill(d, false, true, &mut None)
                    .await
                    .map_err(|_| (408, "request body not received in time"))?;
            }
            body.extend_from_slice(&c.rbuf[start..start + n]);
            Ok(start + n)
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(limit);
            let mut pos = start;
            if head.expect_continue && c.rbuf.len() == start {
                c.wbuf.extend_from_slice(http1::CONTINUE_100);
                c.flush().await.map_err(|_| (400, "gone"))?;
            }
            loop {
                let (used, done) = dec
                    .decode(&c.rbuf[pos..], body)
                    .map_err(|e| (e.status(), e.reason()))?;
                pos += used;
                if done {
                    return Ok(pos);
                }
                let d = deadline();
                c.fill(d, false, true, &mut None)
                    .await
                    .map_err(|_| (408, "request body not received in time"))?;
            }
        }
    }
}

async fn request(c: &mut Conn, head: &Head) -> Next {
    let sh = c.sh.clone();
    let r = match route::route(head.path(&c.rbuf), sh.node.cfg.max_topic_bytes) {
        Ok(r) => r,
        Err(e) => {
            sh.metrics().inc(M::BadRequests);
            debug!("{}: {e}", c.peer);
            return answer_without_body(c, head, e.status(), e.reason(), &[]);
        }
    };
    let method = head.method;
    let head_only = method == Method::Head;
    if method == Method::Other {
        sh.metrics().inc(M::BadRequests);
        return answer_without_body(c, head, 501, "method not implemented", &[]);
    }
    // Method checks per route.
    let allow: &[u8] = match &r {
        Route::Healthz | Route::Metrics => b"GET, HEAD",
        Route::Publish(_) | Route::PublishBatch => b"POST",
        Route::Poll(_) | Route::Sse(_) => b"GET, HEAD, OPTIONS",
        Route::Ws(_) => b"GET",
        Route::NotFound => b"",
    };
    if matches!(r, Route::NotFound) {
        sh.metrics().inc(M::BadRequests);
        return answer_without_body(c, head, 404, "no such route", &[]);
    }
    let method_name: &[u8] = match method {
        Method::Get => b"GET",
        Method::Head => b"HEAD",
        Method::Post => b"POST",
        Method::Put => b"PUT",
        Method::Delete => b"DELETE",
        Method::Options => b"OPTIONS",
        Method::Patch => b"PATCH",
        Method::Other => b"",
    };
    let allowed = allow
        .split(|&b| b == b',')
        .any(|m| m.trim_ascii() == method_name);
    if !allowed {
        sh.metrics().inc(M::BadRequests);
        return answer_without_body(
            c,
            head,
            405,
            "method not allowed on this route",
            &[("Allow", allow)],
        );
    }
    if method == Method::Options {
        return preflight(c, head);
    }
    // The body, for the routes that take one.
    let mut body = Vec::new();
    let consumed = match body_limit(&sh, &r) {
        Some(limit) => match read_body(c, head, limit, &mut body).await {
            Ok(n) => n,
            Err((status, reason)) => {
                sh.metrics().inc(M::BadRequests);
                debug!("{}: {reason}", c.peer);
                // The rest of the body is unread: close after answering.
                let mut a = Answer {
                    http10: head.minor_version == 0,
                    out: &mut c.wbuf,
                    keep_alive: false,
                    head_only,
                    date: sh.date.get(),
                    cors: None,
                };
                a.error(status, reason);
                return Next::Close;
            }
        },
        None => {
            if head.body != BodyKind::None && head.body != BodyKind::Length(0) {
                sh.metrics().inc(M::BadRequests);
                return answer_without_body(c, head, 413, "this route takes no request body", &[]);
            }
            head.head_len
        }
    };
    let keep_alive = head.keep_alive && !sh.is_draining();
    // Bytes of requests pipelined behind this one that were answered with it.
    let mut answered_behind = 0;
    // Streams take the socket once their head is written (after earlier pipelined answers).
    let is_sse = matches!(r, Route::Sse(_));
    let next = match r {
        Route::Poll(topic) => {
            // A long poll may wait: answers to earlier pipelined requests go first.
            if c.flush().await.is_err() {
                return Next::Done;
            }
            let mut a = Answer {
                http10: head.minor_version == 0,
                out: &mut c.wbuf,
                keep_alive,
                head_only,
                date: sh.date.get(),
                cors: None,
            };
            let req = Req {
                buf: &c.rbuf[..consumed],
                head,
                body: &[],
                peer: c.peer,
            };
            let prepared = poll::prepare(&sh, &req, &mut a, topic);
            // The request is read: its bytes go, and the read buffer back to the pool, before
            // the poll may wait for another shard (a burst of re-polls waiting on the home
            // emptied the pool, and the 16 KiB buffers it then allocated and freed were most of
            // the malloc time in the long-poll profile).
            c.rbuf.drain(..consumed.min(c.rbuf.len()));
            release_buf(&sh, &mut c.rbuf);
            let next = match prepared {
                Ok(p) => poll::run(&sh, p, &mut a, c.fd).await,
                Err(next) => next,
            };
            if matches!(next, Next::LongPoll(_)) || keep_alive {
                return next;
            }
            return Next::Close;
        }
        Route::Sse(topic) | Route::Ws(topic) => {
            let prepare = if is_sse { sse::prepare } else { ws::prepare };
            let buf = std::mem::take(&mut c.rbuf);
            let req = Req {
                buf: &buf,
                head,
                body: &[],
                peer: c.peer,
            };
            let n = prepare(c, &req, topic);
            c.rbuf = buf;
            n
        }
        other => {
            let buf = std::mem::take(&mut c.rbuf);
            let req = Req {
                buf: &buf[..consumed],
                head,
                body: &body,
                peer: c.peer,
            };
            let mut a = Answer {
                http10: head.minor_version == 0,
                out: &mut c.wbuf,
                keep_alive,
                head_only,
                date: sh.date.get(),
                cors: None,
            };
            let n = match other {
                Route::Healthz => {
                    a.send(200, &[("Content-Type", b"text/plain")], b"ok\n");
                    Next::KeepAlive
                }
                Route::Metrics => {
                    let mut s = String::with_capacity(8192);
                    sh.node.metrics.render(&mut s);
                    a.send(
                        200,
                        &[("Content-Type", b"text/plain; version=0.0.4")],
                        s.as_bytes(),
                    );
                    Next::KeepAlive
                }
                Route::Publish(topic) => {
                    let (next, used) =
                        publish_pipeline(&sh, &req, &mut a, topic, &buf[consumed..]).await;
                    answered_behind = used;
                    next
                }
                Route::PublishBatch => publish::batch(&sh, &req, &mut a).await,
                _ => unreachable!("polls and streams handled above"),
            };
            c.rbuf = buf;
            n
        }
    };
    if matches!(next, Next::Done | Next::Sse(_) | Next::Ws(_)) {
        return next;
    }
    let consumed = consumed + answered_behind;
    if c.rbuf.len() >= consumed {
        c.rbuf.drain(..consumed);
    }
    if !keep_alive {
        return Next::Close;
    }
    next
}

/// `POST /pub/{topic}`. When the topic's home is another shard, the publishes pipelined behind
/// this one that are already complete in `rest` (bytes after this request) and whose topics
/// have the same home go with it, as one command: the home publishes them in one inbox pass, so
/// a subscriber gets them in one write rather than one write per message (PERF.md, fanout at
/// 10,000 subscribers). Gathering stops at the first request that is not such a publish or
/// that `publish::message` refuses; it is left in the buffer for the connection loop, which
/// answers it after these, in order. Nothing waits for more bytes to gather. Returns what to do
/// next and how many bytes of `rest` were answered.
async fn publish_pipeline(
    sh: &Rc<Shard>,
    req: &Req<'_>,
    a: &mut Answer<'_>,
    topic: String,
    rest: &[u8],
) -> (Next, usize) {
    let shards = sh.node.bus.shards();
    let home = home_of(topic.as_bytes(), shards);
    if home == sh.id {
        // Publishes homed here batch by themselves: their deliveries are flushed at the end
        // of the executor turn (`Shard::publish_batched`).
        return (publish::single(sh, req, a, topic).await, 0);
    }
    let first = match publish::message(sh, req) {
        Ok(m) => m,
        Err(r) => return (publish::refuse(sh, a, r), 0),
    };
    let mut msgs: Vec<(Arc<str>, NewMsg)> = vec![(Arc::from(topic), first)];
    let mut used = 0;
    // A connection that closes after this request reads nothing behind it.
    if a.keep_alive {
        let lim = PipeLimits::of(sh);
        let mut head = Head::default();
        while msgs.len() < sh.node.cfg.max_pipelined_publishes {
            let buf = &rest[used..];
            let Some(p) = pipelined_publish(buf, &lim, &mut head) else {
                break;
            };
            if home_of(p.topic.as_bytes(), shards) != home {
                break;
            }
            let r = Req {
                buf,
                head: &head,
                body: &p.body,
                peer: req.peer,
            };
            let Ok(m) = publish::message(sh, &r) else {
                break;
            };
            msgs.push((Arc::from(p.topic), m));
            used += p.len;
            sh.metrics().inc(M::Requests);
        }
    }
    if msgs.len() > 1 {
        debug!(
            "shard {}: {} pipelined publishes to shard {home} in one command",
            sh.id,
            msgs.len()
        );
    }
    let mut results = publish::pipelined(sh, home, msgs).await.into_iter();
    // One result per request: the first is this request's.
    let next = publish::answer(a, results.next().unwrap_or(Err(Fail::Overloaded)));
    for r in results {
        publish::answer(&mut a.pipelined(), r);
    }
    (next, used)
}

/// The limits a request pipelined behind a publish must meet to join it (those the connection
/// loop would apply to it).
#[derive(Clone, Copy, Debug)]
pub struct PipeLimits {
    pub head: Limits,
    pub max_topic_bytes: usize,
    pub max_message_bytes: usize,
}

impl PipeLimits {
    fn of(sh: &Shard) -> PipeLimits {
        PipeLimits {
            head: limits(sh),
            max_topic_bytes: sh.node.cfg.max_topic_bytes,
            max_message_bytes: sh.node.cfg.max_message_bytes,
        }
    }
}

/// A `POST /pub/{topic}` complete at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Pipelined<'b> {
    /// Percent-decoded and valid.
    pub topic: String,
    /// The body: borrowed from the buffer, or decoded from chunks.
    pub body: Cow<'b, [u8]>,
    /// Bytes of the request (head and framed body).
    pub len: usize,
}

/// The request at the start of `buf` (head parsed into `head`), if it may be answered together
/// with the publish before it: a complete HTTP/1.1 `POST /pub/{topic}` — head and whole body
/// (`Content-Length` within `max_message_bytes`, or every chunk) — that keeps the connection
/// and expects no `100 Continue`. Anything else is `None`: another route or method, HTTP/1.0,
/// `Connection: close`, an incomplete head or body, a bad head, topic or chunk, a body over the
/// limit. The connection loop then answers it on its own, as it would have anyway.
pub fn pipelined_publish<'b>(
    buf: &'b [u8],
    lim: &PipeLimits,
    head: &mut Head,
) -> Option<Pipelined<'b>> {
    if buf.is_empty() || http1::parse_head(buf, &lim.head, head) != Ok(Status::Complete) {
        return None;
    }
    if head.method != Method::Post
        || head.minor_version != 1
        || !head.keep_alive
        || head.expect_continue
    {
        return None;
    }
    let Ok(Route::Publish(topic)) = route::route(head.path(buf), lim.max_topic_bytes) else {
        return None;
    };
    let start = head.head_len;
    let (body, len) = match head.body {
        BodyKind::None => (Cow::Borrowed(&[][..]), start),
        BodyKind::Length(n) => {
            if n > lim.max_message_bytes as u64 {
                return None;
            }
            let end = start.checked_add(usize::try_from(n).ok()?)?;
            (Cow::Borrowed(buf.get(start..end)?), end)
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(lim.max_message_bytes);
            let mut body = Vec::new();
            match dec.decode(buf.get(start..)?, &mut body) {
                Ok((used, true)) => (Cow::Owned(body), start + used),
                _ => return None,
            }
        }
    };
    Some(Pipelined { topic, body, len })
}

/// Answers a request whose body (if any) is not read: keep the connection only when there is
/// no body to skip.
fn answer_without_body(
    c: &mut Conn,
    head: &Head,
    status: u16,
    reason: &str,
    extra: &[(&str, &[u8])],
) -> Next {
    let no_body = matches!(head.body, BodyKind::None | BodyKind::Length(0));
    let keep_alive = head.keep_alive && no_body && !c.sh.is_draining();
    let mut a = Answer {
        http10: head.minor_version == 0,
        out: &mut c.wbuf,
        keep_alive,
        head_only: head.method == Method::Head,
        date: c.sh.date.get(),
        cors: None,
    };
    let mut body = Vec::with_capacity(reason.len() + 1);
    body.extend_from_slice(reason.as_bytes());
    body.push(b'\n');
    let mut h: Vec<(&str, &[u8])> = vec![("Content-Type", b"text/plain; charset=utf-8")];
    h.extend_from_slice(extra);
    a.send(status, &h, &body);
    if !keep_alive {
        return Next::Close;
    }
    c.rbuf.drain(..head.head_len.min(c.rbuf.len()));
    Next::KeepAlive
}

/// CORS preflight for the browser routes.
fn preflight(c: &mut Conn, head: &Head) -> Next {
    let sh = c.sh.clone();
    let keep_alive = head.keep_alive && !sh.is_draining();
    let verdict = cors(&sh, &c.rbuf, head);
    let mut a = Answer {
        http10: head.minor_version == 0,
        out: &mut c.wbuf,
        keep_alive,
        head_only: false,
        date: sh.date.get(),
        cors: None,
    };
    match verdict {
        Ok(Some(origin)) => {
            a.send(
                204,
                &[
                    ("Access-Control-Allow-Origin", &origin),
                    ("Access-Control-Allow-Methods", b"GET, HEAD, OPTIONS"),
                    (
                        "Access-Control-Allow-Headers",
                        b"Last-Event-ID, If-None-Match, Cache-Control",
                    ),
                    ("Access-Control-Max-Age", b"600"),
                    ("Vary", b"Origin"),
                ],
                b"",
            );
        }
        Ok(None) => a.send(204, &[("Allow", b"GET, HEAD, OPTIONS")], b""),
        Err(OriginDenied) => {
            sh.metrics().inc(M::BadRequests);
            a.error(403, "origin not allowed");
        }
    }
    if head.body != BodyKind::None && head.body != BodyKind::Length(0) {
        return Next::Close;
    }
    c.rbuf.drain(..head.head_len.min(c.rbuf.len()));
    if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: PipeLimits = PipeLimits {
        head: Limits {
            max_request_line_bytes: 8 * 1024,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        },
        max_topic_bytes: 16,
        max_message_bytes: 8,
    };

    /// Which requests at the start of a buffer may join a publish before them, and how many
    /// bytes they are: (input, Some((topic, body, len)) or None).
    #[test]
    fn pipelined_publishes_that_may_join() {
        let p = |s: &str| s.as_bytes().to_vec();
        let one = p("POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let mut two = one.clone();
        two.extend_from_slice(b"POST /pub/b HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
        let chunked =
            p("POST /pub/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
        /// (topic, body, bytes of the request)
        type Joins<'a> = Option<(&'a str, &'a [u8], usize)>;
        let cases: Vec<(Vec<u8>, Joins)> = vec![
            (one.clone(), Some(("a", b"abc", one.len()))),
            // Only the first request of the buffer.
            (two.clone(), Some(("a", b"abc", one.len()))),
            (two[one.len()..].to_vec(), Some(("b", b"x", two.len() - one.len()))),
            // Percent-decoded topic; the query is not part of it.
            (
                p("POST /pub/a%2Db?event=e HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
                Some(("a-b", b"", 64)),
            ),
            // No body framing: an empty message.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\n\r\n"), Some(("a", b"", 33))),
            (chunked.clone(), Some(("c", b"abc", chunked.len()))),
            // Incomplete: head, Content-Length body, chunked body.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\n"), None),
            (one[..one.len() - 1].to_vec(), None),
            (chunked[..chunked.len() - 2].to_vec(), None),
            (Vec::new(), None),
            // Over --max-message-bytes (8), either framing.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n123456789"), None),
            (
                p("POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n"),
                None,
            ),
            // Bad chunk framing.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), None),
            // Other routes and methods.
            (p("POST /pub HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n[]"), None),
            (p("POST /sse/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), None),
            (p("GET /pub/a HTTP/1.1\r\nHost: t\r\n\r\n"), None),
            (p("HEAD /pub/a HTTP/1.1\r\nHost: t\r\n\r\n"), None),
            (p("PUT /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), None),
            // Bad or too long topic (max 16 bytes).
            (p("POST /pub/a%zz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), None),
            (
                p("POST /pub/aaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
                None,
            ),
            // The connection ends with it, HTTP/1.0 (even kept alive), or it expects 100.
            (
                p("POST /pub/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
                None,
            ),
            (
                p("POST /pub/a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
                None,
            ),
            (
                p("POST /pub/a HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"),
                None,
            ),
            // A bad head.
            (p("POST /pub/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), None),
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n"), None),
        ];
        let mut head = Head::default();
        for (input, want) in cases {
            let got = pipelined_publish(&input, &LIM, &mut head);
            let got = got.as_ref().map(|g| (g.topic.as_str(), &g.body[..], g.len));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&input));
        }
    }

    /// `send_with` (body first, then swapped behind the head) writes exactly what `send` does,
    /// for every combination of HTTP/1.0, CORS, HEAD and a bodyless status.
    #[test]
    fn send_with_matches_send() {
        let body = b"{\"messages\":[],\"next\":\"a:1\"}";
        for status in [200u16, 204, 304] {
            for http10 in [false, true] {
                for head_only in [false, true] {
                    for cors in [None, Some(b"*".to_vec()), Some(b"http://x".to_vec())] {
                        let answer = |out: &mut Vec<u8>| {
                            Answer {
                                out: &mut *out,
                                keep_alive: true,
                                http10,
                                head_only,
                                date: [b'D'; 29],
                                cors: cors.clone(),
                            }
                            .send(
                                status,
                                &[("ETag", b"\"a:1\"")],
                                body,
                            )
                        };
                        let answer_with = |out: &mut Vec<u8>| {
                            Answer {
                                out: &mut *out,
                                keep_alive: true,
                                http10,
                                head_only,
                                date: [b'D'; 29],
                                cors: cors.clone(),
                            }
                            .send_with(
                                status,
                                &[("ETag", b"\"a:1\"")],
                                |o| o.extend_from_slice(body),
                            )
                        };
                        // After an earlier pipelined answer, too.
                        let (mut a, mut b) = (b"earlier".to_vec(), b"earlier".to_vec());
                        answer(&mut a);
                        answer_with(&mut b);
                        assert_eq!(
                            String::from_utf8_lossy(&a),
                            String::from_utf8_lossy(&b),
                            "{status} http10={http10} head={head_only}"
                        );
                    }
                }
            }
        }
    }
}
