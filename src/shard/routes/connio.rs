//! A connection's socket and buffers: `Conn`, its reads (with the deadline, the drain and a
//! long poll's wait folded into one readiness wait) and writes, and the shard's pool of read
//! buffers, lent while a request is being read so an idle keep-alive connection holds none.
//! Must not: parse or route a request (`conn.rs` does, above this file).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::codec::http1::{Head, Limits};
use crate::shard::core::Shard;
use crate::shard::io::{self, ReadOutcome, READ_CHUNK_BYTES};
use crate::shard::routes::answer::Waiting;

/// A pooled read buffer larger than this is freed instead of kept.
pub(crate) const MAX_POOLED_BUFFER_BYTES: usize = 64 * 1024;
/// Buffers kept in a shard's pool.
pub(crate) const MAX_POOLED_BUFFERS: usize = 32;

/// The connection's I/O state.
pub struct Conn {
    pub sh: Rc<Shard>,
    pub stream: TcpStream,
    pub fd: RawFd,
    pub peer: SocketAddr,
    pub rbuf: Vec<u8>,
    pub wbuf: Vec<u8>,
}

/// A pooled read buffer (or a new, empty one when the pool has none).
pub(crate) fn take_pooled(sh: &Shard) -> Vec<u8> {
    sh.st.borrow_mut().bufpool.pop().unwrap_or_default()
}

/// Gives an empty read buffer back to the pool so an idle connection holds none.
pub(crate) fn release_buf(sh: &Shard, rbuf: &mut Vec<u8>) {
    if rbuf.is_empty() && rbuf.capacity() > 0 {
        let b = std::mem::take(rbuf);
        let mut st = sh.st.borrow_mut();
        if b.capacity() <= MAX_POOLED_BUFFER_BYTES && st.bufpool.len() < MAX_POOLED_BUFFERS {
            st.bufpool.push(b);
        }
    }
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
    pub(crate) fn release_buf(&mut self) {
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
    pub(crate) async fn begin_stream(&mut self, head: &mut Head) -> std::io::Result<()> {
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

/// The head limits of every request, from the flags.
pub(crate) fn limits(sh: &Shard) -> Limits {
    let c = &sh.node.cfg;
    Limits {
        max_request_line_bytes: c.max_request_line_bytes,
        max_head_bytes: c.max_head_bytes,
        max_headers: c.max_headers,
    }
}
