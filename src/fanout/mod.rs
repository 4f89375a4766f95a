//! The only code that crosses threads: shard inboxes, the commands they carry, and wake-ups.
//!
//! Owns: one bounded `crossbeam_queue::ArrayQueue` inbox per shard plus a waker slot
//! (`atomic_waker::AtomicWaker`). Waking a parked shard goes through monoio's cross-thread
//! unpark (an eventfd write), and only when the shard is actually parked: a shard that is busy
//! draining has taken its waker out of the slot, so a burst of pushes costs one wake at most.
//! What crosses is immutable: `Arc<Msg>` payloads and plain-data commands — never shard objects.
//! A full inbox hands the command back (`Err(cmd)`): backpressure, never a silent drop.
//! Must not: hold shard state, block, or allocate per message beyond the `Arc<Msg>` itself.

use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::codec::position::Position;

/// Shard count limit: a topic's set of interested shards is a `u64` bit mask.
pub const MAX_SHARDS: usize = 64;

/// One published message, immutable once its home gave it a position.
#[derive(Debug)]
pub struct Msg {
    pub topic: Arc<str>,
    pub pos: Position,
    pub event: Option<Box<str>>,
    pub data: Box<[u8]>,
    /// Binary payload (not valid UTF-8, or published as application/octet-stream).
    pub binary: bool,
    /// When the home accepted it (history age bound, latency metrics).
    pub at: Instant,
}

pub type MsgRef = Arc<Msg>;

/// A payload not yet given a position.
#[derive(Debug)]
pub struct NewMsg {
    pub event: Option<Box<str>>,
    pub data: Box<[u8]>,
    pub binary: bool,
}

/// Where a reply goes: a pending slot on a shard, with a generation so a reply for a slot that
/// was freed (client gone) and reused misses instead of hitting the new owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyTo {
    pub shard: u16,
    pub slot: u32,
    pub gen: u32,
}

/// A client's resume point as given: absent, unreadable, or a position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// No cursor: start from now.
    None,
    /// Could not be parsed: answered with a reset.
    Bad,
    At(Position),
    /// No position, `since=earliest`: every retained message.
    Earliest,
    /// No position, `rewind=N`: the newest N retained messages (N = 0: from now).
    Rewind(u64),
}

/// What a home answers to a window request (poll, subscribe).
#[derive(Debug)]
pub struct Window {
    /// The resume point was outside history: the client must refetch its state.
    pub reset: bool,
    /// Messages after the resume point, oldest first (empty on reset).
    pub msgs: Vec<MsgRef>,
    /// The topic's newest position (what `next` is when `msgs` is empty).
    pub current: Position,
}

/// Messages for one topic, in the order they were published.
#[derive(Debug)]
pub struct TopicMsgs {
    pub topic: Arc<str>,
    pub msgs: Vec<NewMsg>,
}

#[derive(Debug)]
pub enum PublishError {
    /// `--max-topics` reached.
    TooManyTopics,
    /// With `--redis`: the append was sent but Redis did not confirm it (an error, or the
    /// connection broke): it may or may not have been published.
    NotConfirmed,
}

#[derive(Debug)]
pub enum Reply {
    /// One result per group of a `Publish`, in the order of the groups.
    Published(Vec<Result<Vec<Position>, PublishError>>),
    /// The home's fanout is behind (its queues to other shards are full): the groups in `back`
    /// come back unpublished, so the publisher can wait and try again (`--publish-timeout-ms`).
    /// A home that is behind when the command arrives refuses it as a whole (`done` is empty);
    /// only a command whose own fanout fills the queues midway has its first groups published
    /// (`done`, in order) and the rest, always a suffix, in `back`.
    Busy {
        done: Vec<Result<Vec<Position>, PublishError>>,
        back: Vec<TopicMsgs>,
    },
    Window(Result<Window, PublishError>),
    /// How many subscriptions of the topic the shard has (`Cmd::Count`).
    Count(u64),
}

#[derive(Debug)]
pub enum Cmd {
    /// To the home of every topic in `groups`: give the messages positions, group after
    /// group, and fan them out, all in one inbox pass (so a subscriber gets them in one write).
    /// One group is one `POST /pub/{topic}`, a topic's share of a `POST /pub` batch, or a
    /// WebSocket's publishes; several are the publishes one connection pipelined (`conn.rs`).
    Publish {
        groups: Vec<TopicMsgs>,
        reply: ReplyTo,
    },
    /// To a topic's home: answer the window after `since`; if `subscribe`, also start sending
    /// this shard every new message of the topic (in the same queue, so after the window).
    /// (Boxed, like the other large variants, so that `Cmd` stays small: every inbox slot is
    /// a `Cmd`, and `ArrayQueue` touches all of them when it is made.)
    Window(Box<WindowAsk>),
    /// To every other shard, for `GET /topics/{topic}` and v1 `presence`: how many
    /// subscriptions (streams, v1 subscriptions, waiting long polls) of `topic` it has now.
    Count { topic: Arc<str>, reply: ReplyTo },
    /// To a topic's home: shard `from` has no subscriber left for `topic`.
    Unsubscribe { topic: Arc<str>, from: u16 },
    /// From a topic's home to a shard with subscribers: new messages, in order.
    Deliver(MsgRef),
    /// An answer for a pending slot.
    Reply { to: ReplyTo, reply: Box<Reply> },
    /// With `--redis`, from the bridge to a topic's home: a message Redis pushed on the topic's
    /// channel, applied under the topic's cursor (a duplicate is dropped, a gap fetched).
    Pushed(MsgRef),
    /// With `--redis`, from the bridge to a topic's home: the window a [`BridgeCmd::Fetch`]
    /// asked for, `None` when Redis did not answer.
    Fetched(Box<Fetched>),
    /// With `--redis`, from the bridge to every shard once it is connected and subscribed
    /// again: check every topic homed there against Redis (what was published while the node
    /// was away reaches it now, not with the topic's next message).
    Resync,
    /// With `--redis`, from the bridge to a topic's home: the bridge is subscribed to the
    /// topic's channel (`BridgeCmd::Subscribe` confirmed); the home resyncs it and follows it.
    Live(Arc<str>),
    /// Stop accepting and drain (sent by the signal thread).
    Shutdown,
}

/// `Cmd::Window`: the window of `topic` after `since`, at most `limit` messages; with
/// `subscribe`, the asking shard (`reply.shard`) is sent every later message too.
#[derive(Debug)]
pub struct WindowAsk {
    pub topic: Arc<str>,
    pub since: Since,
    pub limit: usize,
    pub subscribe: bool,
    pub reply: ReplyTo,
}

/// `Cmd::Fetched`: the window of `topic` Redis answered (`None`: it did not), for the client
/// window `asked` if there is one, else for the home's own gap.
#[derive(Debug)]
pub struct Fetched {
    pub topic: Arc<str>,
    pub window: Option<Window>,
    pub asked: Option<Asked>,
}

/// What shards ask of the Redis bridge thread (`--redis`, `backplane::bridge`).
#[derive(Debug)]
pub enum BridgeCmd {
    /// Give `groups` their positions in Redis (one append script per group) and answer
    /// `reply` with `Reply::Published`, one result per group, in order.
    Append {
        groups: Vec<TopicMsgs>,
        reply: ReplyTo,
        /// The publisher answers 503 at this instant (`--publish-timeout-ms`): an append not
        /// sent by then is dropped unsent, so a refused publish is never published later.
        until: Instant,
        /// Set by the bridge *before* it looks at `until` and sends: a publisher that times out
        /// and finds it unset knows nothing was or will be sent ("not published"); set, only
        /// "not confirmed".
        taken: Arc<std::sync::atomic::AtomicBool>,
    },
    /// The messages of `topic` after `since`, for the topic's home shard `home`: answered with
    /// `Cmd::Fetched`. `asked`: a client's window the home could not answer itself (else a gap
    /// of the home's own).
    Fetch {
        topic: Arc<str>,
        since: Position,
        home: u16,
        asked: Option<Asked>,
    },
    /// A subscription to `topic` opened on this node: subscribe to its channel (batched), and
    /// answer its home shard `home` with `Cmd::Live` once Redis confirmed it.
    Subscribe { topic: Arc<str>, home: u16 },
    /// `topic`'s home freed it (no subscriber for `--topic-idle-secs`): unsubscribe.
    Unsubscribe { topic: Arc<str> },
}

/// A window request a home passed on to Redis: answered by the home once Redis's window is
/// back (`Cmd::Fetched`), through its own inbox order.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    pub limit: usize,
    pub reply: ReplyTo,
}

/// The bridge thread's inbox: the same bounded queue and waker as a shard's, so a shard never
/// blocks on the bridge; a full queue hands the command back.
pub struct BridgeInbox {
    queue: ArrayQueue<BridgeCmd>,
    waker: AtomicWaker,
}

impl BridgeInbox {
    pub fn new(capacity: usize) -> BridgeInbox {
        BridgeInbox {
            queue: ArrayQueue::new(capacity.max(1)),
            waker: AtomicWaker::new(),
        }
    }

    /// Pushes and wakes the bridge; `Err(cmd)` when the queue is full.
    pub fn send(&self, cmd: BridgeCmd) -> Result<(), BridgeCmd> {
        self.queue.push(cmd)?;
        self.waker.wake();
        Ok(())
    }

    pub fn pop(&self) -> Option<BridgeCmd> {
        self.queue.pop()
    }

    /// Registers the bridge's waker; the caller must check the queue again afterwards.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }
}

struct Inbox {
    queue: ArrayQueue<Cmd>,
    waker: AtomicWaker,
}

/// All shards' inboxes.
pub struct Bus {
    inboxes: Box<[Inbox]>,
}

impl Bus {
    pub fn new(shards: usize, capacity: usize) -> Bus {
        assert!((1..=MAX_SHARDS).contains(&shards));
        Bus {
            inboxes: (0..shards)
                .map(|_| Inbox {
                    queue: ArrayQueue::new(capacity.max(1)),
                    waker: AtomicWaker::new(),
                })
                .collect(),
        }
    }

    pub fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Pushes without waking; `Err(cmd)` gives the command back when the inbox is full.
    #[inline]
    pub fn try_push(&self, to: usize, cmd: Cmd) -> Result<(), Cmd> {
        self.inboxes[to].queue.push(cmd)
    }

    /// Wakes shard `to` if it is parked on its inbox.
    #[inline]
    pub fn wake(&self, to: usize) {
        self.inboxes[to].waker.wake();
    }

    /// Pushes and wakes; for callers outside any shard (signal thread).
    pub fn send(&self, to: usize, cmd: Cmd) -> Result<(), Cmd> {
        self.try_push(to, cmd)?;
        self.wake(to);
        Ok(())
    }

    #[inline]
    pub fn pop(&self, me: usize) -> Option<Cmd> {
        self.inboxes[me].queue.pop()
    }

    /// Registers the shard's waker; the caller must check the queue again afterwards.
    pub fn register(&self, me: usize, waker: &Waker) {
        self.inboxes[me].waker.register(waker);
    }

    pub fn is_empty(&self, me: usize) -> bool {
        self.inboxes[me].queue.is_empty()
    }

    pub fn len(&self, me: usize) -> usize {
        self.inboxes[me].queue.len()
    }
}

/// FNV-1a 64 of the topic name: stable across processes and builds, so every node (and a
/// future backplane) agrees on a topic's home for a given shard count.
pub fn topic_hash(topic: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in topic {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The shard that orders and keeps the history of `topic`.
pub fn home_of(topic: &[u8], shards: usize) -> usize {
    (topic_hash(topic) % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every slot of every inbox is a `Cmd`, and `ArrayQueue::new` writes each slot's stamp,
    /// so the inboxes are resident from the start: `--inbox-capacity` × shards × this size.
    #[test]
    fn a_command_stays_small() {
        let n = std::mem::size_of::<Cmd>();
        eprintln!("Cmd: {n} bytes");
        assert!(n <= 48, "Cmd = {n} bytes");
    }

    #[test]
    fn full_inbox_gives_the_command_back() {
        let bus = Bus::new(2, 2);
        for _ in 0..2 {
            assert!(bus.try_push(1, Cmd::Shutdown).is_ok());
        }
        match bus.try_push(1, Cmd::Shutdown) {
            Err(Cmd::Shutdown) => {}
            other => panic!("expected the command back, got {other:?}"),
        }
        assert_eq!(bus.len(1), 2);
        assert!(bus.is_empty(0));
        assert!(matches!(bus.pop(1), Some(Cmd::Shutdown)));
    }

    #[test]
    fn homes_spread_and_are_stable() {
        assert_eq!(topic_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(topic_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[home_of(format!("topic-{i}").as_bytes(), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
