//! Local subscribers: who on this shard listens to which topic, and their bounded send buffers.
//!
//! Owns: the `Out` of every streaming connection (SSE, WebSocket, a waiting long poll) in a
//! slab, the `Sub`scriptions (connection × topic, with a cursor) in another, and the shard's
//! topic table (`topics/`: each topic's subscription keys, its home state or `Recent` run),
//! whose life it decides for remote topics. Delivery encodes a message once per wire format per
//! shard and appends the shared bytes (`Rc<[u8]>`) to each subscriber's chain (`Chains`); the
//! writer takes connections with a chain oldest first and writes each whole chain in one `send`
//! (or `writev`). It runs in slices (`flush_some`) between which the shard reads publishes and
//! inbox commands, so a message that arrives meanwhile joins the chains still waiting: under
//! load a write carries more messages by itself, and CPU per delivery falls.
//! Invariants: once a client's socket refuses bytes, what is queued for it never exceeds
//! `--client-buffer-bytes` plus one write (`Out::admit`); what only waits for the writer is
//! bounded per shard by `--max-pending-deliveries`; a cursor only moves forward, so a message
//! is never written twice to a subscription (the seam between a replayed window and live
//! messages is deduplicated by offset).
//! Must not: block or await; the connection task (or, for a parked stream, the shard's
//! readiness set) does the waiting.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::codec::position::Position;
use crate::codec::streampos::{self, StreamPos};
use crate::config::SlowClient;
use crate::fanout::{MsgRef, Since, Window};
use crate::metrics::{ShardMetrics, M};
use crate::shard::outbox::chains::Chains;
use crate::shard::outbox::out::{Kill, Out};
use crate::shard::outbox::wire::{self, Format, FORMATS};
use crate::shard::topics::recent::Recent;
use crate::shard::topics::ring::HistoryBounds;
use crate::shard::topics::{key32, Side, SubList, Topic, Topics};

/// One connection's interest in one topic.
pub struct Sub {
    pub out: u32,
    /// The topic's key in `Subscribers::topics`, valid while this `Sub` lives.
    pub topic: u32,
    pub epoch: u64,
    /// Offset of the last message given to this subscription.
    pub cursor: u64,
    /// The window (replay) has been applied; live messages may flow.
    pub ready: bool,
}

/// Wire encodings of one message on this shard, made at most once each.
#[derive(Default)]
pub struct Encoded {
    /// Each format's buffer in `Chains::bufs`, registered when first needed.
    bufs: [Option<u32>; FORMATS],
}

impl Encoded {
    fn get(&mut self, chains: &mut Chains, f: Format, msg: &MsgRef) -> u32 {
        *self.bufs[f as usize].get_or_insert_with(|| {
            let mut v = Vec::with_capacity(msg.data.len() + 64);
            wire::encode(f, msg, &mut v);
            chains.new_buf(v.into())
        })
    }

    /// Frees the buffers no connection took (every one refused by its bound).
    fn release(self, chains: &mut Chains) {
        for b in self.bufs.into_iter().flatten() {
            if chains.bufs[b as usize].refs == 0 {
                chains.bufs.remove(b as usize);
            }
        }
    }
}

#[derive(Default)]
pub struct Subscribers {
    pub outs: Slab<Out>,
    pub subs: Slab<Sub>,
    /// Every topic this shard knows: homed here or elsewhere, with its subscription keys.
    pub topics: Topics,
    /// The bytes each connection has waiting for the writer.
    pub chains: Chains,
    /// The writer's scratch: one chain taken out of the arena (kept for its capacity).
    pub(super) batch: Vec<Rc<[u8]>>,
}

/// The connection and the policy that a delivery needs.
pub struct Policy<'a> {
    pub limit: usize,
    pub slow: SlowClient,
    pub metrics: &'a ShardMetrics,
    pub bounds: HistoryBounds,
}

impl Subscribers {
    /// The key of `name`'s entry, made `Remote` when the shard does not know the topic yet
    /// (the caller knows its home is another shard; a home's entry is made by the home).
    pub fn remote_topic(&mut self, name: &Arc<str>) -> usize {
        let h = self.topics.hash(name);
        match self.topics.find_hashed(h, name) {
            Some(tk) => tk,
            None => self.topics.insert_hashed(
                h,
                Topic {
                    name: name.clone(),
                    subs: SubList::default(),
                    side: Side::Remote(None),
                },
            ),
        }
    }

    /// Adds a subscription of connection `out` to the topic with key `tk`; returns its key.
    pub fn subscribe(&mut self, out: usize, tk: usize) -> usize {
        let key = self.subs.insert(Sub {
            out: key32(out),
            topic: key32(tk),
            epoch: 0,
            cursor: 0,
            ready: false,
        });
        if let Some(t) = self.topics.get_mut(tk) {
            t.subs.push(key);
        }
        key
    }

    /// How many subscriptions of `topic` this shard has (streams, v1 subscriptions, waiting
    /// long polls: each is one `Sub`).
    pub fn count(&self, topic: &str) -> u64 {
        self.topics
            .find(topic)
            .and_then(|tk| self.topics.get(tk))
            .map_or(0, |t| t.subs.len() as u64)
    }

    /// The name of subscription `sk`'s topic.
    pub fn topic_of(&self, sk: usize) -> Option<&Arc<str>> {
        let sub = self.subs.get(sk)?;
        self.topics.get(sub.topic as usize).map(|t| &t.name)
    }

    /// Removes a subscription; returns its topic if it was the last one here and the shard's
    /// interest in the topic ends now (the home must be told).
    ///
    /// The interest in a remote-homed topic with a run of received messages outlives its last
    /// subscriber until the next sweeps ([`Self::sweep`]): a long poll leaves
    /// and comes back for every message, and when one message answers all of a topic's polls
    /// here, the list empties just before the re-polls arrive. Ending the interest then cost
    /// an `Unsubscribe` to the home, the run, and a window round trip for the next poll (35% of
    /// the re-polls of remote-homed topics at 2k long polls). A home's own topic stays until
    /// the idle-topic sweep.
    pub fn unsubscribe(&mut self, key: usize) -> Option<Arc<str>> {
        let sub = self.subs.try_remove(key)?;
        let tk = sub.topic as usize;
        let t = self.topics.get_mut(tk)?;
        t.subs.remove(key);
        if !t.subs.is_empty() {
            return None;
        }
        match &mut t.side {
            Side::Home(_) => None,
            Side::Remote(Some(r)) => {
                r.unsynced = true;
                None
            }
            Side::Remote(None) => self.topics.remove(tk).map(|t| t.name),
        }
    }

    /// The shard's once-a-second pass over its topics, in one walk of the table:
    /// - ends the interest in remote-homed topics that had no subscriber here at this sweep and
    ///   the one before (so an interest outlives its last subscriber by one to two sweep
    ///   periods; until then the home keeps sending every message, so the run stays exact);
    /// - frees the topics homed here that have no subscriber on any shard and no publish for
    ///   `idle` (`--topic-idle-secs`).
    ///
    /// Returns the remote topics whose homes must be told, and the home topics freed.
    pub fn sweep(&mut self, now: Instant, idle: Duration) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
        let gone = self.topics.retain(|t| match &mut t.side {
            Side::Home(h) => {
                h.mask != 0 || !t.subs.is_empty() || now.saturating_duration_since(h.touched) < idle
            }
            Side::Remote(Some(r)) if !t.subs.is_empty() => {
                r.idle = false;
                true
            }
            Side::Remote(Some(r)) if !r.idle => {
                r.idle = true;
                true
            }
            Side::Remote(_) => !t.subs.is_empty(),
        });
        let mut freed_homes = Vec::new();
        let mut ended = Vec::new();
        for t in gone {
            match t.side {
                Side::Home(_) => freed_homes.push(t.name),
                Side::Remote(_) => ended.push(t.name),
            }
        }
        (ended, freed_homes)
    }

    /// Starts the run of received messages for a remote-homed topic from the window its home
    /// sent for subscription `sk` (the home sends every later message here, in order).
    pub fn seed_recent(&mut self, sk: usize, w: &Window) {
        let Some(sub) = self.subs.get(sk) else {
            return;
        };
        let Some(t) = self.topics.get_mut(sub.topic as usize) else {
            return;
        };
        let Side::Remote(recent) = &mut t.side else {
            return;
        };
        if let Some(r) = recent {
            // The home's window came in inbox order, behind every message it sent before:
            // the run reaches the home's "now" again.
            r.unsynced = false;
            return;
        }
        *recent = Some(Recent::seed(w));
    }

    /// A window answered from this shard's run of received messages, when it can be.
    pub fn local_window(
        &mut self,
        topic: &str,
        since: Since,
        limit: usize,
        b: &HistoryBounds,
    ) -> Option<Window> {
        let tk = self.topics.find(topic)?;
        match &mut self.topics.get_mut(tk)?.side {
            Side::Remote(Some(r)) => r.window(since, limit, Instant::now(), b),
            _ => None,
        }
    }

    /// Delivers one live message from another shard's home to its topic's subscribers here.
    pub fn deliver(&mut self, msg: &MsgRef, p: &Policy<'_>) {
        if let Some(tk) = self.topics.find(&msg.topic) {
            self.deliver_to(tk, msg, p);
        }
    }

    /// Delivers one live message to every ready subscription of topic `tk` on this shard.
    pub fn deliver_to(&mut self, tk: usize, msg: &MsgRef, p: &Policy<'_>) {
        let Some(t) = self.topics.get_mut(tk) else {
            return;
        };
        if let Side::Remote(recent @ Some(_)) = &mut t.side {
            if !recent.as_mut().is_some_and(|r| r.push(msg, &p.bounds)) {
                // With no subscriber left, the next sweep ends the interest.
                *recent = None;
            }
        }
        let Some(t) = self.topics.get(tk) else {
            return;
        };
        let mut encoded = Encoded::default();
        for sk in t.subs.iter() {
            let Some(sub) = self.subs.get_mut(sk) else {
                continue;
            };
            // Not ready: its window (applied in inbox order) will contain this message.
            if !sub.ready {
                continue;
            }
            // --redis: a subscription made while the node knew no message of the topic has
            // epoch 0 (standalone epochs never are); the first message names the epoch.
            if sub.epoch == 0 && sub.cursor == 0 {
                sub.epoch = msg.pos.epoch;
                sub.cursor = msg.pos.offset - 1;
            }
            if msg.pos.epoch == sub.epoch && msg.pos.offset <= sub.cursor {
                continue;
            }
            // Not the next message: the topic started a new epoch in Redis, or the history
            // after the node's cursor was gone. The subscriber is told where it stands with a
            // reset before the message (a long poll's answer says `"reset": true`), never a
            // silent gap.
            let new_epoch = msg.pos.epoch != sub.epoch;
            let jumped = new_epoch || msg.pos.offset != sub.cursor + 1;
            sub.epoch = msg.pos.epoch;
            sub.cursor = msg.pos.offset;
            let ok = sub.out as usize;
            let Some(out) = self.outs.get_mut(ok) else {
                continue;
            };
            if out.kill.is_some() {
                continue;
            }
            if jumped {
                p.metrics.inc(M::StreamResets);
                if new_epoch {
                    p.metrics.inc(M::RedisEpochResets);
                }
                if out.format != Format::LongPoll {
                    out.set_gap(Some(Position::new(msg.pos.epoch, msg.pos.offset - 1)));
                }
            }
            if out.format == Format::LongPoll {
                out.polled.push(msg.clone());
                out.wake();
                continue;
            }
            let bytes = encoded.get(&mut self.chains, out.format, msg);
            // A multi-topic SSE event ends with this stream's own token: the shared `data:`
            // bytes, then a line written for this stream only.
            let id = (out.format == Format::SseMulti).then(|| {
                let mut v = Vec::with_capacity(16 + 24 * out.subs.len());
                stream_token(&self.subs, &self.topics, &out.subs, &mut v);
                Rc::from(v)
            });
            queue(&mut self.chains, ok, out, bytes, id, msg, p);
        }
        encoded.release(&mut self.chains);
    }

    /// Gives a multi-topic stream's subscription, before its window comes, the position its
    /// client resumes from, so the stream's token keeps it meanwhile (a subscription with no
    /// position is left out of the token until its window places it).
    pub fn preset(&mut self, sk: usize, at: Position) {
        if let Some(sub) = self.subs.get_mut(sk) {
            if !sub.ready {
                sub.epoch = at.epoch;
                sub.cursor = at.offset;
            }
        }
    }

    /// The token of multi-topic stream `ok` now (every topic's last delivered position).
    pub fn token_of(&self, ok: usize, v: &mut Vec<u8>) {
        if let Some(out) = self.outs.get(ok) {
            stream_token(&self.subs, &self.topics, &out.subs, v);
        }
    }

    /// Applies a home's window to a new subscription: queues the missed messages (or a reset
    /// notice) ahead of any live message, then lets live messages flow. The replay is bounded
    /// by the history bounds rather than by `--client-buffer-bytes`, so a client that is far
    /// behind catches up instead of being disconnected again and again.
    pub fn apply_window(&mut self, sk: usize, w: &Window, m: &ShardMetrics) {
        let Some(sub) = self.subs.get_mut(sk) else {
            return;
        };
        sub.epoch = w.current.epoch;
        sub.cursor = w.msgs.last().map_or(w.current.offset, |m| m.pos.offset);
        sub.ready = true;
        let msgs = &w.msgs;
        let ok = sub.out as usize;
        let Some(topic) = self.topics.get(sub.topic as usize).map(|t| t.name.clone()) else {
            return;
        };
        let Some(out) = self.outs.get_mut(ok) else {
            return;
        };
        if w.reset {
            m.inc(M::Resets);
        }
        if out.format == Format::LongPoll {
            out.polled.extend(msgs.iter().cloned());
            if !out.polled.is_empty() {
                out.wake();
            }
            return;
        }
        let mut v = Vec::new();
        if out.format == Format::SseMulti {
            // Each event's token holds this topic at that event: the cursor moves with the
            // replay (it ends where it was set above).
            let end = sub.cursor;
            if w.reset {
                wire::sse_multi_reset(&topic, w.current, &mut v);
                stream_token(&self.subs, &self.topics, &out.subs, &mut v);
            }
            for msg in msgs {
                if let Some(sub) = self.subs.get_mut(sk) {
                    sub.cursor = msg.pos.offset;
                }
                wire::encode(out.format, msg, &mut v);
                stream_token(&self.subs, &self.topics, &out.subs, &mut v);
            }
            if let Some(sub) = self.subs.get_mut(sk) {
                sub.cursor = end;
            }
        } else if w.reset {
            wire::reset(out.format, &topic, w.current, &mut v);
            if out.format == Format::WsRaw {
                // Raw frames cannot say "reset" in band: the close frame says it.
                out.kill = Some(Kill::Reset);
            }
        }
        if out.format != Format::SseMulti {
            for msg in msgs {
                wire::encode(out.format, msg, &mut v);
            }
        }
        m.add(M::Delivered, msgs.len() as i64);
        if !v.is_empty() {
            out.queued += v.len();
            out.active = true;
            self.chains.push(ok, out, v.into());
        }
    }

    /// Queues bytes that are not a message (a notice, a heartbeat) for one connection.
    pub fn queue_raw(&mut self, ok: usize, bytes: Rc<[u8]>, p: &Policy<'_>) -> bool {
        let Some(out) = self.outs.get_mut(ok) else {
            return false;
        };
        let n = bytes.len();
        if !out.admit(n, p.limit) {
            return false;
        }
        out.queued += n;
        out.active = true;
        self.chains.push(ok, out, bytes);
        true
    }
}

/// Appends the `id:` line of a multi-topic stream whose subscriptions are `list`: the token of
/// every placed topic's last delivered position.
fn stream_token(subs: &Slab<Sub>, topics: &Topics, list: &SubList, v: &mut Vec<u8>) {
    let mut small = [(0u64, Position::new(0, 0)); 16];
    let mut big;
    let e: &mut [(u64, Position)] = if list.len() <= small.len() {
        &mut small[..]
    } else {
        big = vec![(0u64, Position::new(0, 0)); list.len()];
        &mut big[..]
    };
    let mut n = 0;
    for sk in list.iter() {
        let Some(sub) = subs.get(sk) else { continue };
        // Epochs are never 0: a subscription with no position yet.
        if sub.epoch == 0 {
            continue;
        }
        let Some(t) = topics.get(sub.topic as usize) else {
            continue;
        };
        e[n] = (
            streampos::tag(&t.name),
            Position::new(sub.epoch, sub.cursor),
        );
        n += 1;
    }
    v.extend_from_slice(b"id: ");
    StreamPos::encode_tagged(&mut e[..n], v);
    v.extend_from_slice(b"\n\n");
}

#[allow(clippy::too_many_arguments)]
fn queue(
    chains: &mut Chains,
    ok: usize,
    out: &mut Out,
    bytes: u32,
    id: Option<Rc<[u8]>>,
    msg: &MsgRef,
    p: &Policy<'_>,
) {
    let mut need = chains.len_of(bytes) + id.as_ref().map_or(0, |i| i.len());
    let notice = out.gap().map(|g| {
        let mut v = Vec::new();
        wire::reset(out.format, &msg.topic, g, &mut v);
        v
    });
    if let Some(n) = &notice {
        need += n.len();
    }
    if !out.admit(need, p.limit) {
        // A multi-topic stream's token would have to say which topics lost what; it is closed
        // instead, and resumes every topic exactly from the last token it got.
        let slow = match out.format {
            Format::SseMulti => SlowClient::Disconnect,
            _ => p.slow,
        };
        match slow {
            SlowClient::Disconnect => {
                out.kill = Some(Kill::Slow);
                p.metrics.inc(M::SlowDisconnects);
                out.wake();
            }
            SlowClient::Drop => {
                // The client will be told where it stands when it catches up.
                out.set_gap(Some(msg.pos));
                p.metrics.inc(M::SlowDrops);
            }
        }
        return;
    }
    if let Some(n) = notice {
        out.set_gap(None);
        if out.format == Format::WsRaw {
            // The reset is a close frame: nothing may follow it. The writer wakes the
            // connection once it has written it.
            out.queued += n.len();
            out.kill = Some(Kill::Reset);
            chains.push(ok, out, n.into());
            return;
        }
        chains.push(ok, out, n.into());
    }
    out.queued += need;
    out.active = true;
    chains.push_buf(ok, out, bytes);
    if let Some(id) = id {
        chains.push(ok, out, id);
    }
    p.metrics.inc(M::Delivered);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::codec::position::Position;
    use crate::shard::topics::recent::tests::{bounds, msg, offsets};

    /// The policy the tests below deliver with: a 1 MiB client buffer, disconnect when full.
    pub(super) fn test_policy(metrics: &ShardMetrics) -> Policy<'_> {
        Policy {
            limit: 1 << 20,
            slow: SlowClient::Disconnect,
            metrics,
            bounds: HistoryBounds {
                messages: 10,
                bytes: 1 << 20,
                age: Duration::from_secs(60),
            },
        }
    }

    fn sub_remote(s: &mut Subscribers, out: usize, topic: &Arc<str>) -> usize {
        let tk = s.remote_topic(topic);
        s.subscribe(out, tk)
    }

    #[test]
    fn interest_outlives_the_last_subscriber_until_two_sweeps() {
        let t0 = Instant::now();
        let mut s = Subscribers::default();
        let topic: Arc<str> = Arc::from("t");
        let a = sub_remote(&mut s, 0, &topic);
        let w = Window {
            reset: false,
            msgs: vec![msg(7, 1, t0)],
            current: Position::new(7, 1),
        };
        s.seed_recent(a, &w);
        assert_eq!(s.unsubscribe(a), None, "kept for its run");
        let tk = s.topics.find("t").expect("kept for its run");
        assert!(s.topics.get(tk).unwrap().subs.is_empty());
        // A poll coming back is answered from the run; a window from "now" is not, until a
        // window from the home has been applied.
        let b = sub_remote(&mut s, 1, &topic);
        let w = s
            .local_window("t", Since::At(Position::new(7, 0)), 10, &bounds(10))
            .unwrap();
        assert_eq!(offsets(&w), [1]);
        assert!(s.local_window("t", Since::None, 10, &bounds(10)).is_none());
        let home = Window {
            reset: false,
            msgs: vec![],
            current: Position::new(7, 1),
        };
        s.seed_recent(b, &home);
        assert!(s.local_window("t", Since::None, 10, &bounds(10)).is_some());
        assert_eq!(s.unsubscribe(b), None);
        assert!(
            s.sweep(t0, Duration::MAX).0.is_empty(),
            "first sweep marks it"
        );
        let c = sub_remote(&mut s, 2, &topic);
        assert!(
            s.sweep(t0, Duration::MAX).0.is_empty(),
            "a subscriber: kept"
        );
        assert_eq!(s.unsubscribe(c), None);
        assert!(s.sweep(t0, Duration::MAX).0.is_empty());
        assert_eq!(
            s.sweep(t0, Duration::MAX).0,
            std::slice::from_ref(&topic),
            "second empty sweep"
        );
        assert!(s.topics.is_empty());
        // No run (a home's topic, or a broken run): the last subscriber ends the interest.
        let d = sub_remote(&mut s, 3, &topic);
        assert_eq!(s.unsubscribe(d), Some(topic));
        assert!(s.topics.is_empty());
    }

    /// The same sweep frees a home topic only when no shard follows it, nobody here
    /// subscribes, and nothing was published for the idle period.
    #[test]
    fn sweep_frees_idle_home_topics_only() {
        use crate::shard::topics::home::HomeTopic;
        let t0 = Instant::now();
        let idle = Duration::from_secs(60);
        let mut s = Subscribers::default();
        let home = |name: &str, s: &mut Subscribers| {
            let h = s.topics.hash(name);
            s.topics.insert_hashed(
                h,
                Topic {
                    name: Arc::from(name),
                    subs: SubList::default(),
                    side: Side::Home(HomeTopic::new(1, t0)),
                },
            )
        };
        let _quiet = home("quiet", &mut s);
        let followed = home("followed", &mut s);
        let watched = home("watched", &mut s);
        if let Some(Side::Home(h)) = s.topics.get_mut(followed).map(|t| &mut t.side) {
            h.mask = 0b10;
        }
        s.subscribe(0, watched);
        assert_eq!(
            s.sweep(t0 + Duration::from_secs(59), idle),
            (vec![], vec![])
        );
        assert_eq!(
            s.sweep(t0 + Duration::from_secs(61), idle),
            (vec![], vec![Arc::from("quiet")])
        );
        assert_eq!(s.topics.find("quiet"), None);
        assert!(s.topics.find("followed").is_some() && s.topics.find("watched").is_some());
    }
}

#[cfg(test)]
mod pass_tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::tests::test_policy;
    use super::*;

    /// Bytes queued for a connection that ends before the flush never reach the connection
    /// that reuses its slab key.
    #[test]
    fn a_removed_connection_takes_its_queued_bytes_with_it() {
        let metrics = ShardMetrics::default();
        let p = test_policy(&metrics);
        let (old_srv, _old_client) = UnixStream::pair().unwrap();
        let (new_srv, mut new_client) = UnixStream::pair().unwrap();
        let mut s = Subscribers::default();
        let k = s.outs.insert(Out::new(old_srv.as_raw_fd(), Format::Sse));
        assert!(s.queue_raw(k, Rc::from(&b"for the old one\n"[..]), &p));
        s.remove_out(k);
        let k2 = s.outs.insert(Out::new(new_srv.as_raw_fd(), Format::Sse));
        assert_eq!(k, k2, "the slab reuses the key");
        assert!(s.queue_raw(k2, Rc::from(&b"new\n"[..]), &p));
        s.flush(&p);
        new_client.set_nonblocking(true).unwrap();
        let mut got = [0u8; 64];
        let n = new_client.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"new\n");
    }

    /// The writer takes connections oldest first, a slice at a time; bytes queued for a
    /// connection still waiting join its one write, and one written already waits its turn
    /// again behind the others.
    #[test]
    fn the_writer_takes_connections_in_turn_and_waiting_bytes_join_their_write() {
        let metrics = ShardMetrics::default();
        let p = test_policy(&metrics);
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..3).map(|_| UnixStream::pair().unwrap()).collect();
        let mut s = Subscribers::default();
        let keys: Vec<usize> = pairs
            .iter()
            .map(|(srv, _)| s.outs.insert(Out::new(srv.as_raw_fd(), Format::Sse)))
            .collect();
        let q = |s: &mut Subscribers, i: usize, b: &str| {
            assert!(s.queue_raw(keys[i], Rc::from(b.as_bytes()), &p));
        };
        let read = |i: usize| {
            let c = &pairs[i].1;
            c.set_nonblocking(true).unwrap();
            let mut got = [0u8; 64];
            match (&*c).read(&mut got) {
                Ok(n) => String::from_utf8_lossy(&got[..n]).into_owned(),
                Err(_) => String::new(),
            }
        };
        q(&mut s, 0, "a1 ");
        q(&mut s, 1, "b1 ");
        q(&mut s, 2, "c1 ");
        assert_eq!(s.chains.pending(), 3);
        assert!(s.flush_some(&p, 1), "two connections still wait");
        assert_eq!((read(0), read(1)), ("a1 ".to_string(), String::new()));
        // More for 0 (written: it waits behind 1 and 2) and for 1 (waiting: joins its write).
        q(&mut s, 0, "a2 ");
        q(&mut s, 1, "b2 ");
        assert!(s.flush_some(&p, 1));
        assert_eq!((read(0), read(1)), (String::new(), "b1 b2 ".to_string()));
        assert!(s.flush_some(&p, 1));
        assert_eq!((read(0), read(2)), (String::new(), "c1 ".to_string()));
        assert!(!s.flush_some(&p, 1), "nothing left");
        assert_eq!(read(0), "a2 ");
        assert_eq!(s.chains.pending(), 0);
        assert!(s
            .outs
            .iter()
            .all(|(_, o)| o.queued == 0 && o.backlog.is_empty()));
    }
}

#[cfg(test)]
mod jump_tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::tests::test_policy;
    use super::*;
    use crate::shard::topics::recent::tests::msg;

    /// A live message that is not the next one of a subscription (the topic's epoch changed
    /// in Redis, or its history after the node's cursor was gone) comes after one reset to
    /// just before it; a duplicate is dropped; the next one passes as is.
    #[test]
    fn a_message_that_is_not_the_next_comes_after_one_reset() {
        let metrics = ShardMetrics::default();
        let p = test_policy(&metrics);
        let mut s = Subscribers::default();
        let t: Arc<str> = Arc::from("t");
        let tk = s.remote_topic(&t);
        let ok = s.outs.insert(Out::new(-1, Format::Sse));
        let sk = s.subscribe(ok, tk);
        s.outs[ok].subs.push(sk);
        let sub = s.subs.get_mut(sk).unwrap();
        (sub.epoch, sub.cursor, sub.ready) = (7, 4, true);
        let now = Instant::now();
        let chain = |s: &mut Subscribers| {
            let mut v = Vec::new();
            s.chains.take(&mut s.outs[ok], &mut v);
            v.iter()
                .flat_map(|b| b.iter().copied())
                .collect::<Vec<u8>>()
        };
        s.deliver_to(tk, &msg(7, 5, now), &p);
        s.deliver_to(tk, &msg(7, 5, now), &p);
        let got = String::from_utf8(chain(&mut s)).unwrap();
        assert_eq!(got.matches("id: 7:5").count(), 1, "{got}");
        assert!(!got.contains("reset"), "{got}");
        // A new epoch: one reset to 9:0, then its first message.
        s.deliver_to(tk, &msg(9, 1, now), &p);
        s.deliver_to(tk, &msg(9, 2, now), &p);
        let got = String::from_utf8(chain(&mut s)).unwrap();
        assert_eq!(got.matches("event: reset").count(), 1, "{got}");
        let (reset, rest) = got.split_at(got.find("id: 9:1").unwrap());
        assert!(reset.contains("9:0"), "{got}");
        assert!(rest.contains("id: 9:2"), "{got}");
        // Offsets that jump in the same epoch: a reset to just before the message.
        s.deliver_to(tk, &msg(9, 6, now), &p);
        let got = String::from_utf8(chain(&mut s)).unwrap();
        assert!(got.starts_with("event: reset\nid: 9:5\n"), "{got}");
        assert!(got.contains("id: 9:6"), "{got}");
        assert_eq!(metrics.get(M::StreamResets), 2);
        assert_eq!(
            metrics.get(M::RedisEpochResets),
            1,
            "one of them for a new epoch"
        );
    }
}

#[cfg(test)]
mod multi_tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::tests::test_policy;
    use super::*;
    use crate::shard::topics::recent::tests::msg;

    /// A message on several multi-topic streams is encoded once: every stream queues the same
    /// shared `data:` bytes, followed by its own `id:` line, whose token holds each of its
    /// topics at its last delivered position.
    #[test]
    fn multi_topic_streams_share_the_message_bytes_and_differ_by_token() {
        let metrics = ShardMetrics::default();
        let p = test_policy(&metrics);
        let mut s = Subscribers::default();
        let t: Arc<str> = Arc::from("t");
        let u: Arc<str> = Arc::from("u");
        let (tt, tu) = (s.remote_topic(&t), s.remote_topic(&u));
        let ready = |s: &mut Subscribers, sk: usize, epoch: u64, cursor: u64| {
            let sub = s.subs.get_mut(sk).unwrap();
            (sub.epoch, sub.cursor, sub.ready) = (epoch, cursor, true);
        };
        let mut outs = Vec::new();
        for u_at in [3, 9] {
            let ok = s.outs.insert(Out::new(-1, Format::SseMulti));
            let a = s.subscribe(ok, tt);
            let b = s.subscribe(ok, tu);
            s.outs[ok].subs.push(a);
            s.outs[ok].subs.push(b);
            ready(&mut s, a, 7, 0);
            ready(&mut s, b, 5, u_at);
            outs.push(ok);
        }
        s.deliver_to(tt, &msg(7, 1, Instant::now()), &p);
        // Each stream's chain: the shared data, then its own id line.
        let chains: Vec<Vec<Rc<[u8]>>> = outs
            .iter()
            .map(|&ok| {
                let mut v = Vec::new();
                s.chains.take(&mut s.outs[ok], &mut v);
                v
            })
            .collect();
        assert!(
            chains.iter().all(|c| c.len() == 2),
            "data and id for each stream"
        );
        let (d0, d1) = (&chains[0][0], &chains[1][0]);
        assert!(Rc::ptr_eq(d0, d1), "one encoding of the message");
        assert!(d0.starts_with(b"data: {\"type\":\"message\",\"topic\":\"t\""));
        for (i, u_at) in [3u64, 9].into_iter().enumerate() {
            let id = &chains[i][1];
            let tok = id
                .strip_prefix(b"id: ")
                .unwrap()
                .strip_suffix(b"\n\n")
                .unwrap();
            let sp = StreamPos::parse(tok, 64).unwrap();
            assert_eq!(sp.get("t"), Some(Position::new(7, 1)));
            assert_eq!(sp.get("u"), Some(Position::new(5, u_at)));
        }
        // A subscription not placed yet (epoch 0) is left out of the token.
        let ok = s.outs.insert(Out::new(-1, Format::SseMulti));
        let c = s.subscribe(ok, tt);
        let d = s.subscribe(ok, tu);
        s.outs[ok].subs.push(c);
        s.outs[ok].subs.push(d);
        ready(&mut s, c, 7, 1);
        let mut v = Vec::new();
        s.token_of(ok, &mut v);
        let sp = StreamPos::parse(&v[4..v.len() - 2], 64).unwrap();
        assert_eq!((sp.len(), sp.get("t")), (1, Some(Position::new(7, 1))));
    }
}
