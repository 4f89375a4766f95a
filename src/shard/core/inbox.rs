//! The inbox task and the home side of commands: what a shard does with the commands other
//! shards (and its own connections, for topics homed here) send it.
//!
//! Owns: executing each command in inbox order (`handle`), publishing on a topic homed here
//! (offsets, history, fanout to the shards with subscribers), windows, and the writer's slices
//! between passes.
//! Must not: await inside a pass — a pass borrows the state once and runs to its end.

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::codec::position::Position;
use crate::fanout::{
    Cmd, Fetched, MsgRef, NewMsg, PublishError, Reply, Since, TopicMsgs, Window, WindowAsk,
};
use crate::metrics::M;
use crate::shard::core::{complete, DriverTurn, Refused, Shard, State, OUTQ_RETRY};
use crate::shard::topics::home::{self, HomeTopic};
use crate::shard::topics::{Side, SubList, Topic};
use crate::sys::clock;

/// Commands executed per inbox pass before other tasks get a turn.
const MAX_CMDS_PER_PASS: usize = 4096;

/// Connections the writer writes per pass before other tasks get a turn: small enough that
/// publishes and commands arriving meanwhile join the chains still waiting (and a publisher
/// is answered within a slice), large enough that the turn's own cost (a yield and a look at
/// the ring) is noise beside the writes (~2–10 µs each).
const WRITE_SLICE: usize = 256;

/// A writer cycle whose writes cost less CPU than this is an unloaded shard's: the next starts
/// at once.
const PACE_FROM: Duration = Duration::from_millis(5);

/// A loaded writer's cycles start at most this often, relative to how long one takes: it is
/// busy at most a quarter of the time (until `--max-write-delay-ms` caps the spacing), and
/// each subscriber's write carries about this many times more messages than back-to-back
/// cycles would give it.
const WRITER_SPACING: u32 = 4;

impl Shard {
    // ---- home side ------------------------------------------------------------------------

    /// The key and home state of `topic`, whose home is this shard; made on first use (a new
    /// epoch), within `--max-topics`.
    pub(crate) fn home_topic<'a>(
        &self,
        st: &'a mut State,
        topic: &Arc<str>,
    ) -> Result<(usize, &'a mut HomeTopic), PublishError> {
        let topics = &mut st.subs.topics;
        // One hash of the topic per poll or publish.
        let h = topics.hash(topic);
        let tk = match topics.find_hashed(h, topic) {
            Some(tk) => tk,
            None => self.new_home_topic(st, h, topic)?,
        };
        // Only `home_of(topic)` makes a `Home` entry, so this shard's entry for it is one.
        match st.subs.topics.get_mut(tk).and_then(Topic::home) {
            Some(t) => Ok((tk, t)),
            None => {
                debug_assert!(false, "topic {topic} homed here has a remote entry");
                Err(PublishError::TooManyTopics)
            }
        }
    }

    pub(crate) fn new_home_topic(
        &self,
        st: &mut State,
        h: u64,
        topic: &Arc<str>,
    ) -> Result<usize, PublishError> {
        let n = self.node.topics.fetch_add(1, Ordering::Relaxed);
        if n >= self.node.cfg.max_topics {
            self.node.topics.fetch_sub(1, Ordering::Relaxed);
            return Err(PublishError::TooManyTopics);
        }
        st.epoch_counter += 1;
        // With --redis, Redis gives the epoch: 0 until the first push or window says it.
        let epoch = if self.node.bridge.is_some() {
            0
        } else {
            home::new_epoch(self.node.seed, topic, st.epoch_counter)
        };
        self.metrics().inc(M::Topics);
        Ok(st.subs.topics.insert_hashed(
            h,
            Topic {
                name: topic.clone(),
                subs: SubList::default(),
                side: Side::Home(HomeTopic::new(epoch, Instant::now())),
            },
        ))
    }

    pub(crate) fn home_publish(
        &self,
        st: &mut State,
        topic: &Arc<str>,
        msgs: Vec<NewMsg>,
    ) -> Result<Vec<Position>, Refused> {
        // Fanout that cannot leave, or that the writer has not got round to, is backpressure
        // for new publishes, not unbounded memory: the messages go back to the publisher,
        // which waits and retries.
        if st.outq_len > self.node.cfg.inbox_capacity
            || st.subs.chains.pending() > self.node.cfg.max_pending_deliveries
        {
            return Err(Refused::Busy(msgs));
        }
        let now = Instant::now();
        let b = self.bounds;
        let (tk, t) = self
            .home_topic(st, topic)
            .map_err(|_| Refused::TooManyTopics)?;
        let mask = t.mask;
        let appended: Vec<MsgRef> = msgs
            .into_iter()
            .map(|m| t.append(topic, m, now, &b))
            .collect();
        self.metrics().add(M::Published, appended.len() as i64);
        let positions = appended.iter().map(|m| m.pos).collect();
        for msg in &appended {
            self.fan_out(st, tk, mask, msg);
        }
        Ok(positions)
    }

    /// One message of a topic homed here: to every shard in `mask`, and to this shard's
    /// subscribers of topic `tk`.
    pub(crate) fn fan_out(&self, st: &mut State, tk: usize, mask: u64, msg: &MsgRef) {
        let mut rest = mask;
        while rest != 0 {
            let to = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            self.send(st, to, Cmd::Deliver(msg.clone()));
        }
        let policy = self.policy();
        st.subs.deliver_to(tk, msg, &policy);
    }

    pub(crate) fn home_window(
        &self,
        st: &mut State,
        topic: &Arc<str>,
        since: Since,
        limit: usize,
        subscriber: Option<usize>,
    ) -> Result<Window, PublishError> {
        let now = Instant::now();
        let b = self.bounds;
        let me = self.id;
        let (_, t) = self.home_topic(st, topic)?;
        if let Some(s) = subscriber.filter(|&s| s != me) {
            t.mask |= 1 << s;
        }
        let since = self.redis_since(t, since);
        Ok(t.window(since, limit, now, &b))
    }

    pub(crate) fn handle(&self, st: &mut State, cmd: Cmd) {
        match cmd {
            Cmd::Publish { groups, reply } => {
                // Every message of the command is delivered here before this pass flushes, so
                // a subscriber gets the command's messages in one write.
                let mut done = Vec::with_capacity(groups.len());
                let mut groups = groups.into_iter();
                let mut back = Vec::new();
                while let Some(TopicMsgs { topic, msgs }) = groups.next() {
                    match self.home_publish(st, &topic, msgs) {
                        Ok(ps) => done.push(Ok(ps)),
                        Err(Refused::TooManyTopics) => done.push(Err(PublishError::TooManyTopics)),
                        // Refused before the first group: the whole command comes back. Later,
                        // only because this command's own fanout filled the queues: the rest
                        // comes back, and the publisher retries it before anything else.
                        Err(Refused::Busy(msgs)) => {
                            back.push(TopicMsgs { topic, msgs });
                            back.extend(groups);
                            break;
                        }
                    }
                }
                let r = if back.is_empty() {
                    Reply::Published(done)
                } else {
                    Reply::Busy { done, back }
                };
                self.reply(st, reply, r);
            }
            Cmd::Window(w) => {
                let WindowAsk {
                    topic,
                    since,
                    limit,
                    subscribe,
                    reply,
                } = *w;
                let from = subscribe.then_some(reply.shard as usize);
                if self.follows(st, &topic) {
                    self.answer_window(st, topic, since, limit, from, reply);
                } else {
                    self.park_window(st, topic, since, limit, from, reply);
                }
            }
            Cmd::Count { topic, reply } => {
                let n = st.subs.count(&topic);
                self.reply(st, reply, Reply::Count(n));
            }
            Cmd::Unsubscribe { topic, from } => {
                let topics = &mut st.subs.topics;
                if let Some(t) = topics.find(&topic).and_then(|tk| topics.get_mut(tk)) {
                    if let Some(h) = t.home() {
                        h.mask &= !(1u64 << from);
                    }
                }
            }
            Cmd::Deliver(msg) => {
                let policy = self.policy();
                st.subs.deliver(&msg, &policy);
            }
            Cmd::Reply { to, reply } => complete(st, to, *reply, self.metrics()),
            Cmd::Pushed(msg) => self.apply_pushed(st, msg),
            Cmd::Fetched(f) => {
                let Fetched {
                    topic,
                    window,
                    asked,
                } = *f;
                self.apply_fetched(st, topic, window, asked)
            }
            Cmd::Resync => self.resync(st),
            Cmd::Live(topic) => self.live(st, topic),
            Cmd::Shutdown => self.draining.fire(),
        }
    }
}

/// Waits until the inbox has commands, something on this shard wants the writer, the
/// overflow queues need their retry timer, or `until` (the writer's next cycle) comes.
async fn wait_for_work(sh: &Shard, until: Option<Instant>) {
    let bus = &sh.node.bus;
    let retrying = sh.outq_nonempty.get();
    let wait = std::future::poll_fn(|cx| {
        bus.register(sh.id, cx.waker());
        // A command parked in the overflow queue since this wait began must end it too,
        // so the retry timer gets armed (a connection task wakes us after parking one).
        if !bus.is_empty(sh.id) || sh.flush_wanted.get() || (!retrying && sh.outq_nonempty.get()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let mut timeout = until.map(|t| t.saturating_duration_since(Instant::now()));
    if retrying {
        timeout = Some(timeout.map_or(OUTQ_RETRY, |t| t.min(OUTQ_RETRY)));
    }
    match timeout {
        Some(t) => {
            monoio::select! {
                _ = wait => {},
                _ = monoio::time::sleep(t) => {},
            }
        }
        None => wait.await,
    }
}

/// When the writer starts its next cycle. A cycle whose writes cost `busy` of the shard's CPU
/// (the writer's own work: the sends and their kernel time, not the other tasks that ran
/// between its slices nor the time the thread waited for a core) was a loaded shard's, so the
/// next one waits until the cycle's start plus `WRITER_SPACING` times that, at most
/// `max_delay` (`--max-write-delay-ms`), and never before the cycle ended (`took`, wall time):
/// the messages that arrive meanwhile share each subscriber's next write. Below `PACE_FROM` the
/// writer is not what loads the shard, and the next cycle starts at once: a connect storm or a
/// burst of requests keeps a shard busy without making its subscribers wait for a rest.
fn next_cycle(started: Instant, took: Duration, busy: Duration, max_delay: Duration) -> Instant {
    if busy < PACE_FROM {
        return started;
    }
    started + (busy * WRITER_SPACING).min(max_delay).max(took)
}

/// The inbox task: executes commands, then gives the writer one slice, once per pass. While
/// a writer cycle is under way it yields between passes instead of waiting.
pub(crate) async fn inbox_task(sh: Rc<Shard>) {
    let bus = &sh.node.bus;
    let max_pending = sh.node.cfg.max_pending_deliveries;
    let max_delay = Duration::from_millis(sh.node.cfg.max_write_delay_ms);
    // The writer's cycle under way (when it started, and the CPU its slices have cost), and
    // when the next may start.
    let mut cycle: Option<(Instant, Duration)> = None;
    let mut next = Instant::now();
    let turn = DriverTurn::new();
    loop {
        if cycle.is_none() {
            let waiting = sh.st.borrow().subs.chains.has_work();
            if !(waiting && Instant::now() >= next) {
                wait_for_work(&sh, waiting.then_some(next)).await;
            }
        }
        {
            let mut st = sh.st.borrow_mut();
            for _ in 0..MAX_CMDS_PER_PASS {
                // Past the bound on unwritten deliveries the inbox waits: it fills, and the
                // homes that send here hold their publishers back (`home_publish`).
                if st.subs.chains.pending() > max_pending {
                    break;
                }
                match bus.pop(sh.id) {
                    Some(cmd) => sh.handle(&mut st, cmd),
                    None => break,
                }
            }
            let policy = sh.policy();
            sh.flush_wanted.set(false);
            if cycle.is_none() && st.subs.chains.has_work() {
                let now = Instant::now();
                if now >= next && st.subs.start_cycle() {
                    cycle = Some((now, Duration::ZERO));
                }
            }
            if let Some((started, busy)) = cycle.as_mut() {
                let cpu = clock::thread_cpu_time();
                let more = st.subs.write_cycle(&policy, WRITE_SLICE);
                *busy += clock::thread_cpu_time().saturating_sub(cpu);
                if !more {
                    next = next_cycle(*started, started.elapsed(), *busy, max_delay);
                    cycle = None;
                }
            }
            policy
                .metrics
                .set(M::PendingDeliveries, st.subs.chains.pending() as i64);
            if st.outq_len > 0 {
                sh.retry_outq(&mut st);
            }
        }
        if cycle.is_some() || !bus.is_empty(sh.id) {
            // Let connection tasks run between slices and big passes, with what the driver
            // has completed meanwhile: what they publish joins the chains still waiting.
            turn.pass().await;
        }
    }
}

#[cfg(test)]
pub(crate) mod publish_tests {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    use super::*;
    use crate::fanout::ReplyTo;
    use crate::node::Node;
    use crate::shard::core::signal::Signal;
    use crate::shard::topics::ring::HistoryBounds;

    /// Shard 0 of a two-shard node with these flags, outside any runtime: enough to run the
    /// home's side of commands, with shard 1's inbox as the place its sends land.
    pub(crate) fn home_shard(args: &[&str]) -> Shard {
        let mut argv = vec!["ringcast", "--shards", "2"];
        argv.extend_from_slice(args);
        let cfg = crate::config::Config::from_args(argv).unwrap();
        let bounds = HistoryBounds::from_config(&cfg);
        Shard {
            id: 0,
            bounds,
            adm: crate::shard::core::admit::Admit::new(&cfg),
            node: Arc::new(Node::new(cfg, None)),
            st: RefCell::new(State {
                outq: (0..2).map(|_| VecDeque::new()).collect(),
                ..State::default()
            }),
            date: Cell::new([b' '; 29]),
            draining: Signal::default(),
            outq_nonempty: Cell::new(false),
            ep: -1,
            flush_wanted: Cell::new(false),
        }
    }

    pub(crate) const TO_SHARD_1: ReplyTo = ReplyTo {
        shard: 1,
        slot: 7,
        gen: 1,
    };

    /// A publish group of `n` messages `TOPIC-i`.
    pub(crate) fn group(topic: &str, n: usize) -> TopicMsgs {
        TopicMsgs {
            topic: Arc::from(topic),
            msgs: (0..n)
                .map(|i| NewMsg {
                    event: None,
                    data: format!("{topic}-{i}").into_bytes().into(),
                    binary: false,
                })
                .collect(),
        }
    }

    /// The commands shard 0 sent to shard 1: its inbox, then what waits in the overflow.
    pub(crate) fn sent_to_1(sh: &Shard) -> Vec<Cmd> {
        let mut v = Vec::new();
        while let Some(c) = sh.node.bus.pop(1) {
            v.push(c);
        }
        v.extend(sh.st.borrow_mut().outq[1].drain(..));
        sh.st.borrow_mut().outq_len = 0;
        v
    }

    fn offsets(r: &Result<Vec<Position>, PublishError>) -> Vec<u64> {
        r.as_ref().unwrap().iter().map(|p| p.offset).collect()
    }

    /// Groups are published in order, each topic's offsets following on, and one topic the
    /// home may not create is refused alone.
    #[test]
    fn a_publish_command_publishes_its_groups_in_order() {
        let sh = home_shard(&["--max-topics", "2"]);
        let mut st = sh.st.borrow_mut();
        let groups = vec![group("a", 2), group("b", 1), group("c", 1), group("a", 1)];
        sh.handle(
            &mut st,
            Cmd::Publish {
                groups,
                reply: TO_SHARD_1,
            },
        );
        drop(st);
        let sent = sent_to_1(&sh);
        let [Cmd::Reply { to, reply }] = &sent[..] else {
            panic!("expected one reply, got {sent:?}");
        };
        let Reply::Published(done) = &**reply else {
            panic!("expected Published, got {reply:?}");
        };
        assert_eq!(*to, TO_SHARD_1);
        assert_eq!(done.len(), 4);
        assert_eq!(offsets(&done[0]), [1, 2]);
        assert_eq!(offsets(&done[1]), [1]);
        assert!(matches!(done[2], Err(PublishError::TooManyTopics)));
        assert_eq!(offsets(&done[3]), [3]);
    }

    /// Deliveries the writer has not got round to hold publishes back past
    /// `--max-pending-deliveries`: the command comes back whole, and goes through once the
    /// writer has written.
    #[test]
    fn unwritten_deliveries_past_the_bound_hand_publishes_back() {
        use std::os::fd::AsRawFd;
        use std::os::unix::net::UnixStream;

        use crate::shard::outbox::out::Out;
        use crate::shard::outbox::wire::Format;

        let sh = home_shard(&["--max-pending-deliveries", "1"]);
        let pairs: Vec<(UnixStream, UnixStream)> =
            (0..2).map(|_| UnixStream::pair().unwrap()).collect();
        {
            let mut st = sh.st.borrow_mut();
            let topic: Arc<str> = Arc::from("a");
            let tk = sh.home_topic(&mut st, &topic).unwrap().0;
            let w = sh
                .home_window(&mut st, &topic, Since::None, 0, None)
                .unwrap();
            for (srv, _) in &pairs {
                let ok = st.subs.outs.insert(Out::new(srv.as_raw_fd(), Format::Sse));
                let sk = st.subs.subscribe(ok, tk);
                st.subs.apply_window(sk, &w, sh.metrics());
            }
        }
        let publish = |n| {
            sh.handle(
                &mut sh.st.borrow_mut(),
                Cmd::Publish {
                    groups: vec![group("a", n)],
                    reply: TO_SHARD_1,
                },
            );
            match sent_to_1(&sh).pop() {
                Some(Cmd::Reply { reply, .. }) => *reply,
                other => panic!("expected a reply, got {other:?}"),
            }
        };
        // One message for two subscribers: two deliveries wait for the writer, past the bound.
        assert!(matches!(publish(1), Reply::Published(_)));
        assert_eq!(sh.st.borrow().subs.chains.pending(), 2);
        match publish(2) {
            Reply::Busy { done, back } => {
                assert!(done.is_empty());
                assert_eq!(back[0].msgs.len(), 2);
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        // The writer writes them; the same publish goes through, right after the first.
        let policy = sh.policy();
        assert!(!sh.st.borrow_mut().subs.flush_some(&policy, usize::MAX));
        assert_eq!(sh.st.borrow().subs.chains.pending(), 0);
        match publish(2) {
            Reply::Published(done) => assert_eq!(offsets(&done[0]), [2, 3]),
            other => panic!("expected Published, got {other:?}"),
        }
    }

    /// A home that is behind refuses a command whole; one whose own fanout fills the queue
    /// midway publishes a prefix and hands back the rest, in order.
    #[test]
    fn a_busy_home_hands_back_the_whole_command_or_a_suffix() {
        // Shard 1's inbox holds one command; more waits in shard 0's overflow, whose bound
        // (`--inbox-capacity`, 1) refuses new publishes once exceeded.
        let sh = home_shard(&["--inbox-capacity", "1"]);
        // Shard 1 subscribes to "a", so each message of "a" is a `Deliver` to it.
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Window(Box::new(WindowAsk {
                topic: Arc::from("a"),
                since: Since::None,
                limit: 0,
                subscribe: true,
                reply: TO_SHARD_1,
            })),
        );
        assert_eq!(sent_to_1(&sh).len(), 1, "the window reply");

        // Three deliveries of "a": one fits the inbox, two overflow (2 > 1), so "b" and "c"
        // come back.
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Publish {
                groups: vec![group("a", 3), group("b", 1), group("c", 2)],
                reply: TO_SHARD_1,
            },
        );
        let sent = sent_to_1(&sh);
        assert_eq!(sent.len(), 4, "three deliveries and the reply: {sent:?}");
        let Cmd::Reply { reply, .. } = &sent[3] else {
            panic!("expected a reply, got {:?}", sent[3]);
        };
        match &**reply {
            Reply::Busy { done, back } => {
                assert_eq!(done.len(), 1);
                assert_eq!(offsets(&done[0]), [1, 2, 3]);
                let back: Vec<(&str, usize)> =
                    back.iter().map(|g| (&*g.topic, g.msgs.len())).collect();
                assert_eq!(back, [("b", 1), ("c", 2)]);
            }
            other => panic!("expected Busy, got {other:?}"),
        }

        // Behind from the start: nothing is published, everything comes back.
        {
            let mut st = sh.st.borrow_mut();
            st.outq[1].extend([Cmd::Shutdown, Cmd::Shutdown]);
            st.outq_len = 2;
        }
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Publish {
                groups: vec![group("a", 1), group("b", 1)],
                reply: TO_SHARD_1,
            },
        );
        let sent = sent_to_1(&sh);
        let [Cmd::Shutdown, Cmd::Shutdown, Cmd::Reply { reply, .. }] = &sent[..] else {
            panic!("expected two commands and a reply, got {sent:?}");
        };
        match &**reply {
            Reply::Busy { done, back } => {
                assert!(done.is_empty());
                assert_eq!(back.len(), 2);
                assert_eq!(&*back[0].topic, "a");
                assert_eq!(&*back[1].topic, "b");
            }
            other => panic!("expected a whole refusal, got {other:?}"),
        }
        // Nothing of the refused command was published: "a" goes on at 4.
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Publish {
                groups: vec![group("a", 1)],
                reply: TO_SHARD_1,
            },
        );
        let sent = sent_to_1(&sh);
        match sent.last() {
            Some(Cmd::Reply { reply, .. }) => match &**reply {
                Reply::Published(done) => assert_eq!(offsets(&done[0]), [4]),
                other => panic!("expected Published, got {other:?}"),
            },
            other => panic!("expected a reply, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod pacing_tests {
    use super::*;

    const MAX: Duration = Duration::from_millis(100);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_cycle_that_cost_little_cpu_is_followed_at_once_however_long_it_took() {
        let t = Instant::now();
        // 40 ms of wall time, most of it other tasks (a connect storm's accepts) or a wait
        // for a core: the writer is not what loads the shard.
        assert_eq!(next_cycle(t, ms(40), ms(2), MAX), t);
    }

    #[test]
    fn a_writer_that_cost_the_cpu_rests_four_times_its_cost_up_to_the_bound() {
        let t = Instant::now();
        assert_eq!(next_cycle(t, ms(12), ms(10), MAX), t + ms(40));
        assert_eq!(next_cycle(t, ms(60), ms(50), MAX), t + MAX);
        // Never before the cycle ended: a cycle that took longer than the rest is followed
        // when it ends.
        assert_eq!(next_cycle(t, ms(150), ms(40), MAX), t + ms(150));
    }
}
