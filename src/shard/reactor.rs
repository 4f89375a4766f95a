//! The reactor of parked streams: one task per shard that takes ready events from the readiness
//! set and the keys woken by the shard, and serves them in one synchronous pass per batch. A
//! WebSocket frame from the client starts a short `ws::burst` task; everything else is served
//! in the pass (`park::serve`, `park::finish`).
//! Must not: await inside a pass, or serve a key woken on another thread.

use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use crate::shard::core::{self, Shard};
use crate::shard::outbox::wire::Format;
use crate::shard::routes::ws;
use crate::shard::stream::park::{self, finish, serve, End, WOKEN};
use crate::sys::epoll::{self, Event};

/// Events taken from the readiness set per pass.
const BATCH: usize = 512;
const READ_EVENTS: u32 = epoll::IN | epoll::RDHUP | epoll::HUP | epoll::ERR;

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
        Format::Sse | Format::SseMulti => {
            if park::client_left(fd) {
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
