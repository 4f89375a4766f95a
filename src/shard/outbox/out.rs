//! `Out`: one streaming connection's shard-side state (SSE, WebSocket, a waiting long poll) —
//! its fd, format, bounded send queue and backlog, kill reason, subscriptions, and for a parked
//! WebSocket its session — and `Kill`, why the shard wants a connection closed.
//! Invariant: `queued` never exceeds `--client-buffer-bytes` plus the one over-sized message an
//! empty queue may take (`admit`).

use std::os::fd::RawFd;
use std::task::Waker;

use crate::admission::SmallBucket;
use crate::codec::position::Position;
use crate::fanout::MsgRef;
use crate::shard::outbox::session::Session;
use crate::shard::outbox::wire::Format;
use crate::shard::topics::SubList;

/// Why the shard wants a connection closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// Its send buffer hit `--client-buffer-bytes` under `--slow-client disconnect`.
    Slow,
    /// The node is draining.
    Shutdown,
    /// Raw WebSocket only: a reset close frame (4000) is queued; close once it is written.
    Reset,
    /// WebSocket: no pong within `--pong-timeout-secs` of a ping.
    PongTimeout,
    /// The token's `exp` passed (SSE: `event: expired`; WebSocket: close 4001).
    Expired,
}

/// One streaming connection's shard-side state.
pub struct Out {
    pub fd: RawFd,
    pub format: Format,
    /// Bytes not yet written, in order (a backlog; empty in the common case).
    pub backlog: Vec<u8>,
    /// Bytes queued in the current pass plus the backlog: what the bound applies to.
    pub queued: usize,
    pub waker: Option<Waker>,
    pub kill: Option<Kill>,
    /// `--slow-client drop` skipped messages: the next thing written is a reset notice.
    pub gap: Option<Position>,
    /// Messages for a long poll (Format::LongPoll only).
    pub polled: Vec<MsgRef>,
    /// Something was written (or queued) since the last heartbeat sweep.
    pub active: bool,
    /// In `State::dirty` already.
    pub dirty: bool,
    /// WebSocket: shard tick by which a pong must have come (0: no ping outstanding).
    /// (A u32: ticks are seconds, 136 years of them; the 4 bytes saved keep `publish_bucket`
    /// inside `parked_stream_sizes`.)
    pub pong_due: u32,
    /// Bytes of an over-sized message (larger than `--client-buffer-bytes`, taken into an
    /// empty queue) not yet written: the bound is raised by this much while it drains.
    pub allowance: usize,
    /// A stream's subscriptions (SSE, WebSocket), freed with it.
    pub subs: SubList,
    /// A parked stream: no task holds it, the shard's readiness set drives it and its `fd` is
    /// owned here (see `park.rs`).
    pub parked: bool,
    /// A parked WebSocket's session state between bursts, kept only when there is any: a
    /// `ringcast.v1` connection, or a frame or message cut by the end of a read. An idle raw
    /// WebSocket keeps nothing here.
    pub session: Option<Box<Session>>,
    /// A parked WebSocket's burst task is running (it owns the session state meanwhile).
    pub busy: bool,
    /// The client sent more while the burst task was awaiting: it reads again before parking
    /// (the edge-triggered event for it has been taken already).
    pub unread: bool,
    /// With auth on: the token's `exp` in seconds since the epoch (`authz::exp_of`), 0 when
    /// nothing expires. The ticker's `expiry::sweep` ends the stream past it.
    pub exp: u32,
    /// A `ringcast.v1` client was sent `{"type":"expired"}` for this `exp`.
    pub warned: bool,
    /// A raw WebSocket's messages may be published to its topic (`authz::ws_may_publish`).
    pub may_publish: bool,
    /// A WebSocket's `--ws-publish-rate` (raw and v1): filled when the stream opens.
    pub publish_bucket: SmallBucket,
}

impl Out {
    pub fn new(fd: RawFd, format: Format) -> Out {
        Out {
            fd,
            format,
            backlog: Vec::new(),
            queued: 0,
            waker: None,
            kill: None,
            gap: None,
            polled: Vec::new(),
            active: false,
            dirty: false,
            pong_due: 0,
            allowance: 0,
            subs: SubList::default(),
            parked: false,
            session: None,
            busy: false,
            unread: false,
            exp: 0,
            warned: false,
            may_publish: true,
            publish_bucket: SmallBucket::default(),
        }
    }

    /// Whether `need` more bytes may be queued under `limit`. An empty queue always takes one
    /// message, however large (up to `--max-message-bytes`), and the bound stays raised by what
    /// remains of it until it is written: the bound is the buffer plus one message.
    pub fn admit(&mut self, need: usize, limit: usize) -> bool {
        if self.queued == 0 {
            self.allowance = if need > limit { need } else { 0 };
            return true;
        }
        self.queued + need <= limit + self.allowance
    }

    /// `n` queued bytes were written (or dropped with the connection).
    pub fn wrote(&mut self, n: usize) {
        self.queued -= n;
        self.allowance = self.allowance.saturating_sub(n);
    }

    pub fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_message_raises_the_bound_while_it_drains() {
        let mut o = Out::new(-1, Format::Sse);
        // Empty queue: a 300-byte message is taken under a 100-byte bound.
        assert!(o.admit(300, 100));
        o.queued += 300;
        // While it drains, small messages still fit within bound + what remains of it.
        assert!(o.admit(50, 100));
        o.queued += 50;
        o.wrote(200); // 100 of the big one and nothing else remain, plus the 50.
        assert_eq!((o.queued, o.allowance), (150, 100));
        assert!(o.admit(50, 100));
        assert!(
            !o.admit(51, 100),
            "bound 100 + remaining 100, with 150 queued"
        );
        o.wrote(150); // The big one is gone: the plain bound again.
        assert_eq!((o.queued, o.allowance), (0, 0));
        assert!(o.admit(100, 100));
        o.queued += 100;
        assert!(!o.admit(1, 100));
    }
}
