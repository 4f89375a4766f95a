//! Parked streams: SSE and WebSocket connections that hold no task while idle.
//!
//! Owns: the shard's readiness set — one edge-triggered epoll instance, which monoio waits on
//! like any other fd — and the reactor task that serves it; the key wakers through which the
//! rest of the shard asks for a parked stream's attention (a kill, a backlog); and the end of
//! every parked stream (`finish`).
//! Why: a task per idle stream cost its future, monoio's task header and an armed readiness op
//! (about 1.8 KB per connection in all). A parked stream is its `Out` slab entry and one epoll
//! registration, nothing else: live messages are written by the inbox task's flush anyway, so
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
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::codec::sse as sse_codec;
use crate::codec::ws as ws_codec;
use crate::metrics::M;
use crate::shard::core::{self, Shard};
use crate::shard::io;
use crate::shard::sse;
use crate::shard::subs::Kill;
use crate::shard::wire::Format;
use crate::shard::ws;
use crate::sys::epoll::{self, Event};
use crate::sys::socket;
use crate::sys::waker::{self, KeyWake};

/// Events taken from the readiness set per pass.
const BATCH: usize = 512;
/// What a parked stream is registered for. Edge-triggered: an event per arrival of data, of the
/// peer's FIN, or of room in a send buffer that was full — never a repeat for the same state.
const INTEREST: u32 = epoll::IN | epoll::OUT | epoll::RDHUP | epoll::ET;
const READ_EVENTS: u32 = epoll::IN | epoll::RDHUP | epoll::HUP | epoll::ERR;

/// How a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The client vanished or closed the TCP connection.
    Gone,
    /// The shard ended it.
    Kill(Kill),
    /// WebSocket: a close handshake or a protocol error; send this close code.
    Close(u16),
}

/// Keys whose `Out` asked for the reactor (through a key waker), and the reactor's own waker.
#[derive(Default)]
struct Woken {
    keys: Vec<usize>,
    reactor: Option<Waker>,
}

thread_local! {
    /// One per shard thread: a key is a slab key of that shard's `Out`s.
    static WOKEN: RefCell<Woken> = RefCell::new(Woken::default());
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

/// The reactor: takes ready events and woken keys, one synchronous pass per batch.
pub async fn reactor(sh: Rc<Shard>) {
    // monoio waits on the epoll fd as on a socket: it is readable while an event is ready.
    let waiter = match epoll::waiter(sh.ep).and_then(monoio::net::TcpStream::from_std) {
        Ok(w) => w,
        Err(e) => {
            crate::error!("shard {}: readiness set: {e}", sh.id);
            return;
        }
    };
    let mut events = vec![Event::EMPTY; BATCH];
    let mut keys = Vec::new();
    loop {
        let n = epoll::harvest(sh.ep, &mut events);
        for e in &events[..n] {
            on_event(&sh, e.key() as usize, e.events());
        }
        WOKEN.with(|w| std::mem::swap(&mut w.borrow_mut().keys, &mut keys));
        for &k in &keys {
            serve(&sh, k);
        }
        keys.clear();
        if n == BATCH {
            core::yield_now().await;
            continue;
        }
        let woken = std::future::poll_fn(|cx| {
            WOKEN.with(|w| {
                let mut w = w.borrow_mut();
                if w.keys.is_empty() {
                    w.reactor = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
        });
        monoio::select! {
            _ = woken => {},
            r = waiter.readable(false) => if let Err(e) = r {
                crate::error!("shard {}: readiness set: {e}", sh.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            },
        }
    }
}

/// One readiness event of parked stream `k`.
fn on_event(sh: &Rc<Shard>, k: usize, ev: u32) {
    let (format, fd, start_burst) = {
        let mut st = sh.st.borrow_mut();
        let Some(out) = st.subs.outs.get_mut(k) else {
            return;
        };
        if !out.parked {
            return;
        }
        let ws = matches!(out.format, Format::WsRaw | Format::WsV1);
        let mut start = false;
        if ws && ev & READ_EVENTS != 0 {
            if out.busy {
                // The running burst task reads again before parking.
                out.unread = true;
            } else {
                out.busy = true;
                start = true;
            }
        }
        (out.format, out.fd, start)
    };
    if ev & epoll::OUT != 0 {
        serve(sh, k);
    }
    // Nothing more to do if there is no read event, or if `serve` just ended the stream (its
    // fd is closed then).
    if ev & READ_EVENTS == 0 || !sh.st.borrow().subs.outs.contains(k) {
        return;
    }
    match format {
        Format::Sse => {
            if sse::client_left(fd) {
                finish(sh, k, End::Gone);
            }
        }
        Format::WsRaw | Format::WsV1 => {
            if start_burst {
                monoio::spawn(ws::burst(sh.clone(), k));
            }
        }
        Format::LongPoll => {}
    }
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
    match sse::write_backlog(sh, k) {
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
        Format::Sse => {
            if end == End::Kill(Kill::Shutdown) {
                // Jittered, so clients do not all come back in the same instant.
                let seed = sse::retry_seed(sh, out.fd).rotate_left(17);
                sse_codec::encode_retry(
                    &mut last,
                    sse_codec::jittered_retry_ms(sh.node.cfg.sse_retry_ms, seed),
                );
            }
            M::SseOpen
        }
        Format::WsRaw | Format::WsV1 => {
            // Whatever is still queued goes first (best effort), then the close frame.
            last = std::mem::take(&mut out.backlog);
            if let Some((code, reason)) = ws::close_for(end) {
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
    // SAFETY: a parked stream's fd is owned by its `Out` (`park` moved it there out of the
    // monoio stream, and only `finish` closes it), which was just removed from the slab, so
    // nothing uses the fd after this; closing it also takes it out of the readiness set.
    unsafe { socket::close(out.fd) };
    sh.metrics().dec(gauge);
    core::uncount(sh);
}
