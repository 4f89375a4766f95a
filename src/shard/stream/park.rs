//! Parked streams: SSE and WebSocket connections that hold no task while idle.
//!
//! Owns: the shard's readiness set — one edge-triggered epoll instance, which monoio waits on
//! like any other fd (its reactor task is `reactor.rs`); the key wakers through which the
//! rest of the shard asks for a parked stream's attention (a kill, a backlog); writing a parked
//! stream's backlog (SSE or WebSocket alike); and the end of every parked stream (`finish`,
//! with the close code that says why).
//! Why: a task per idle stream cost its future, monoio's task header and an armed readiness op
//! (about 1.8 KB per connection in all). A parked stream is its `Out` slab entry and one epoll
//! registration, nothing else: live messages are written by the shard's writer anyway, so
//! an idle stream only needs someone to notice that its client left, sent a frame, or that its
//! socket has room again for a backlog. That someone is the reactor, once per batch of events.
//! A WebSocket frame from the client starts a short task (`ws::burst`) that reads and acts on
//! what arrived and parks the session again.
//! Invariants: a parked stream's fd is owned by its `Out` (closed by `finish` only); its `Out`
//! waker is its key waker, re-armed whenever the reactor serves it; while a burst task runs
//! (`Out::busy`) nothing ends the stream (the task parks it again and the reactor acts on what
//! happened then).
//! Must not: await inside the reactor's dispatch (it is one synchronous pass per batch), or
//! wake a key waker on another thread (the woken list is the shard thread's).

use std::cell::RefCell;
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::task::Waker;

use crate::codec::sse as sse_codec;
use crate::codec::ws as ws_codec;
use crate::metrics::M;
use crate::shard::core::{self, Shard};
use crate::shard::io;
use crate::shard::outbox::close::{CLOSE_PONG_TIMEOUT, CLOSE_SLOW_CLIENT, CLOSE_TOKEN_EXPIRED};
use crate::shard::outbox::out::Kill;
use crate::shard::outbox::wire::Format;
use crate::sys::epoll;
use crate::sys::socket;
use crate::sys::waker::{self, KeyWake};

/// What a parked stream is registered for. Edge-triggered: an event per arrival of data, of the
/// peer's FIN, or of room in a send buffer that was full — never a repeat for the same state.
const INTEREST: u32 = epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET;

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client vanished or closed the TCP connection.
    Gone,
    /// The shard ended it.
    Kill(Kill),
    /// WebSocket: a close handshake or a protocol error; send this close code.
    Close(u16),
    /// WebSocket: the server's policy ended it; send this close code and reason.
    Policy(u16, &'static str),
}

/// Keys whose `Out` asked for the reactor (through a key waker), and the reactor's own waker.
#[derive(Default)]
pub(crate) struct Woken {
    pub(crate) keys: Vec<usize>,
    pub(crate) reactor: Option<Waker>,
}

thread_local! {
    /// One per shard thread: a key is a slab key of that shard's `Out`s.
    pub(crate) static WOKEN: RefCell<Woken> = RefCell::new(Woken::default());
}

/// What waking a parked stream's key waker does: put its key on this thread's woken list and
/// wake the reactor. (Woken on another thread, a key would land on that thread's list, where it
/// names nothing or another stream: wrong, though never unsound — hence "Must not" above.)
struct Reactor;

impl KeyWake for Reactor {
    fn wake(key: usize) {
        let reactor = WOKEN.with(|w| {
            let mut w = w.borrow_mut();
            w.keys.push(key);
            w.reactor.take()
        });
        if let Some(r) = reactor {
            r.wake();
        }
    }
}

/// A waker that asks the reactor to serve parked stream `k`. It allocates nothing: the key is
/// the waker's data.
fn key_waker(k: usize) -> Waker {
    waker::key_waker::<Reactor>(k)
}

/// The shard's readiness set.
pub fn create_set() -> std::io::Result<RawFd> {
    epoll::create()
}

/// Parks stream `ok` (its `Out` is in place, its subscriptions made): takes the socket from
/// monoio, registers it in the readiness set, and ends the calling task's hold on it. The
/// connection count taken at accept is released by `finish`.
pub fn park(sh: &Rc<Shard>, stream: monoio::net::TcpStream, ok: usize) {
    let fd = stream.into_raw_fd();
    let r = epoll::add(sh.ep, fd, INTEREST, ok as u64);
    {
        let mut st = sh.st.borrow_mut();
        let out = &mut st.subs.outs[ok];
        out.parked = true;
        out.waker = Some(key_waker(ok));
    }
    if let Err(e) = r {
        crate::warn!("shard {}: cannot watch a stream: {e}", sh.id);
        finish(sh, ok, End::Gone);
        return;
    }
    // A kill or a backlog that came while the stream was being set up.
    serve(sh, ok);
}

/// Writes what parked stream `k` has queued and ends it if the shard asked (unless a task
/// holds its session: the task parks it again, then this runs).
pub fn serve(sh: &Rc<Shard>, k: usize) {
    let busy = {
        let mut st = sh.st.borrow_mut();
        let Some(out) = st.subs.outs.get_mut(k) else {
            return;
        };
        if !out.parked {
            return;
        }
        out.waker = Some(key_waker(k));
        out.busy
    };
    match write_backlog(sh, k) {
        Err(_) if !busy => finish(sh, k, End::Gone),
        Ok((Some(kill), _)) if !busy => finish(sh, k, End::Kill(kill)),
        _ => {}
    }
}

/// Ends parked stream `k`: its last words (a jittered `retry:` for a draining SSE client; the
/// backlog and a close frame for a WebSocket), then its fd, subscriptions, `Out` and counts.
pub fn finish(sh: &Rc<Shard>, k: usize, end: End) {
    let Some(mut out) = sh.free_stream(k) else {
        return;
    };
    let mut last = Vec::new();
    let gauge = match out.format {
        Format::Sse | Format::SseMulti => {
            if end == End::Kill(Kill::Shutdown) {
                // Jittered, so clients do not all come back in the same instant.
                let seed = retry_seed(sh, out.fd).rotate_left(17);
                sse_codec::encode_retry(
                    &mut last,
                    sse_codec::jittered_retry_ms(sh.node.cfg.sse_retry_ms, seed),
                );
            }
            if end == End::Kill(Kill::Expired) {
                // Behind what is still queued (it may end mid-event), best effort; with data,
                // or a browser dispatches no event.
                last = std::mem::take(&mut out.backlog);
                last.extend_from_slice(b"event: expired\ndata: token expired\n\n");
            }
            M::SseOpen
        }
        Format::WsRaw | Format::WsV1 => {
            if matches!(out.format, Format::WsV1) {
                sh.metrics().dec(M::WsV1Open);
            }
            // Whatever is still queued goes first (best effort), then the close frame.
            last = std::mem::take(&mut out.backlog);
            if let Some((code, reason)) = close_for(end) {
                ws_codec::encode_close(&mut last, code, reason);
            }
            M::WsOpen
        }
        Format::LongPoll => M::LongPollWaiting,
    };
    if !last.is_empty() {
        let _ = io::write_some(out.fd, &last);
    }
    io::shutdown_write(out.fd);
    // Before the close: the fd names the stream's client address until then.
    core::uncount_parked(sh, out.fd);
    // `park` moved the fd out of the monoio stream into the `Out`, and only `finish` closes
    // it; closing it also takes it out of the readiness set.
    // SAFETY: the fd is owned by the `Out` just removed from the slab: nothing uses it after.
    unsafe { socket::close(out.fd) };
    sh.metrics().dec(gauge);
}

/// The close frame that says why a WebSocket ended (None: no frame to send).
pub fn close_for(end: End) -> Option<(u16, &'static str)> {
    match end {
        End::Gone => None,
        End::Kill(Kill::Slow) => Some((CLOSE_SLOW_CLIENT, "slow client")),
        End::Kill(Kill::Shutdown) => Some((ws_codec::CLOSE_GOING_AWAY, "going away")),
        End::Kill(Kill::PongTimeout) => Some((CLOSE_PONG_TIMEOUT, "ping timeout")),
        End::Kill(Kill::Expired) => Some((CLOSE_TOKEN_EXPIRED, "token expired")),
        // The reset close frame is already queued.
        End::Kill(Kill::Reset) => None,
        End::Close(code) => Some((code, "")),
        End::Policy(code, reason) => Some((code, reason)),
    }
}

/// The seed of a stream's `retry:` jitter: stable for the connection, different across them.
pub fn retry_seed(sh: &Shard, fd: std::os::fd::RawFd) -> u64 {
    (fd as u64) ^ ((sh.id as u64) << 32) ^ sh.node.seed
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
pub fn client_left(fd: std::os::fd::RawFd) -> bool {
    io::discard_input(fd)
}

/// Frees a stream's subscriptions and `Out` if it ends before it is parked.
pub struct StreamGuard<'a> {
    sh: &'a Shard,
    out: usize,
}

impl<'a> StreamGuard<'a> {
    pub fn new(sh: &'a Shard, out: usize) -> Self {
        StreamGuard { sh, out }
    }

    /// Records one of the stream's subscriptions (freed with the stream).
    pub fn add_sub(&self, sk: usize) {
        let mut st = self.sh.st.borrow_mut();
        let o = &mut st.subs.outs[self.out];
        o.subs.push(sk);
    }

    /// The stream is parked: from now on `park::finish` frees it.
    pub fn disarm(mut self) {
        self.out = usize::MAX;
    }
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        if self.out == usize::MAX {
            return;
        }
        self.sh.free_stream(self.out);
    }
}
