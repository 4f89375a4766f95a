//! `Out`: one streaming connection's shard-side state (SSE, WebSocket, a waiting long poll) —
//! its fd, format, bounded send queue and backlog, kill reason, subscriptions, and for a parked
//! WebSocket its session — and `Kill`, why the shard wants a connection closed.
//! Invariant: once the socket has refused bytes (a backlog), `queued` never exceeds
//! `--client-buffer-bytes` plus the one over-sized message an empty backlog may take (`admit`).
//! Bytes that wait only for the shard's writer (`subs::Subscribers`' chains) are bounded per
//! shard by `--max-pending-deliveries`, not per client: a client is never cut for the server's
//! own schedule.

use std::os::fd::RawFd;
use std::task::Waker;

use crate::admission::SmallBucket;
use crate::codec::position::Position;
use crate::fanout::MsgRef;
use crate::shard::outbox::session::Session;
use crate::shard::outbox::wire::Format;
use crate::shard::topics::SubList;

/// No link: an empty chain.
pub const NIL: u32 = u32::MAX;

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
    /// Bytes waiting for the writer (the chain) plus the backlog: what the bound applies to,
    /// once there is a backlog.
    pub queued: usize,
    /// The first and last links of the bytes waiting for the shard's writer, in
    /// `Subscribers::links` (`NIL` when none).
    pub head: u32,
    pub tail: u32,
    pub waker: Option<Waker>,
    pub kill: Option<Kill>,
    /// `--slow-client drop` skipped messages from here: the next thing written is a reset
    /// notice. Epoch 0 (no epoch is 0): none, which keeps `Out` 8 bytes smaller than an
    /// `Option` would (`gap`, `set_gap`).
    gap_at: Position,
    /// Messages for a long poll (Format::LongPoll only).
    pub polled: Vec<MsgRef>,
    /// Something was written (or queued) since the last heartbeat sweep.
    pub active: bool,
    /// In `Subscribers::dirty` already (has a chain to write).
    pub dirty: bool,
    /// WebSocket: shard tick by which a pong must have come (0: no ping outstanding).
    /// (A u32: ticks are seconds, 136 years of them; the 4 bytes saved keep `publish_bucket`
    /// inside `parked_stream_sizes`.)
    pub pong_due: u32,
    /// Bytes of an over-sized message (larger than `--client-buffer-bytes`, taken into an
    /// empty queue) not yet written: the bound is raised by this much while it drains.
    pub allowance: u32,
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
            head: NIL,
            tail: NIL,
            waker: None,
            kill: None,
            gap_at: Position::new(0, 0),
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

    /// Whether `need` more bytes may be queued under `limit`. While the socket takes
    /// everything it is given (no backlog), anything may be queued: it waits for the shard's
    /// writer, not for the client. Once there is a backlog, everything queued counts, against
    /// the bound raised by what the socket refused of the write that began the backlog
    /// (`allowance`, set by the writer, falling as it drains): so a message larger than
    /// `limit` still reaches a client that keeps up, and the bound is the buffer plus one write.
    pub fn admit(&self, need: usize, limit: usize) -> bool {
        self.backlog.is_empty() || self.queued + need <= limit + self.allowance as usize
    }

    /// `n` queued bytes were written (or dropped with the connection).
    pub fn wrote(&mut self, n: usize) {
        self.queued -= n;
        self.allowance = self
            .allowance
            .saturating_sub(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Where `--slow-client drop` began skipping messages, if it did.
    pub fn gap(&self) -> Option<Position> {
        (self.gap_at.epoch != 0).then_some(self.gap_at)
    }

    pub fn set_gap(&mut self, g: Option<Position>) {
        self.gap_at = g.unwrap_or(Position::new(0, 0));
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
        // No backlog: a 300-byte message is taken under a 100-byte bound, and so is anything
        // behind it while the socket has refused nothing.
        assert!(o.admit(300, 100));
        o.queued += 300;
        // The socket took 100 of the 300: the writer keeps 200 as a backlog and raises the
        // bound by them.
        o.wrote(100);
        o.backlog = vec![0; 200];
        o.allowance = 200;
        // While it drains, small messages still fit within bound + what remains of it.
        assert!(o.admit(50, 100));
        o.queued += 50;
        assert!(o.admit(50, 100));
        assert!(
            !o.admit(51, 100),
            "bound 100 + remaining 200, with 250 queued"
        );
        o.wrote(150); // 100 remain, the bound raised by the 50 left of the write.
        o.backlog = vec![0; 100];
        assert_eq!((o.queued, o.allowance), (100, 50));
        assert!(o.admit(50, 100));
        assert!(!o.admit(51, 100));
    }

    /// Bytes that only wait for the writer never count against the client.
    #[test]
    fn without_a_backlog_the_bound_does_not_apply() {
        let mut o = Out::new(-1, Format::Sse);
        for _ in 0..100 {
            assert!(o.admit(60, 100));
            o.queued += 60;
        }
        o.backlog = vec![0; 1];
        assert!(!o.admit(1, 100));
    }
}
