//! `--redis`: which topics a node follows through pub/sub, and keeping those current.
//!
//! Owns: a home's `HomeTopic::live` state (no → asked → loading → yes: `want_live`, `live`,
//! `loaded`), the window requests that wait for it (`State::parked`), interest changes sent to
//! the bridge (`send_interest`, retried by the ticker), the resync after a reconnect, the
//! once-quiet check that finds a lost last message (`check_quiet`), and gap fetches the
//! bridge's full inbox refused, asked again by the ticker (`retry_gaps`).
//! Must not: answer a window from a home that does not follow its topic; wait on Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fanout::{BridgeCmd, PublishError, Reply, ReplyTo, Since};
use crate::metrics::M;
use crate::shard::core::{Parked, Shard, State};
use crate::shard::topics::home::{HomeTopic, Live};
use crate::shard::topics::Side;
use crate::{debug, warn};

/// How long a topic homed here must have had no push before it is checked against Redis
/// (`Shard::check_quiet`): the bound on how late a lost last message arrives, less a second.
const QUIET: Duration = Duration::from_secs(1);

/// How often a followed topic that stays quiet is checked again: the bound on how late a
/// message whose push was lost on a long-quiet topic arrives (no push reveals it, and the
/// first check may have come before it). One window call per followed topic per period.
const RECHECK: Duration = Duration::from_secs(30);

impl Shard {
    /// After the bridge (re)connected and subscribed: asks Redis for what each topic homed
    /// here missed meanwhile (a message published while the node was away shows no gap until
    /// the topic's next one, which may never come).
    pub(crate) fn resync(&self, st: &mut State) {
        let mut live = Vec::new();
        let mut asked = Vec::new();
        for t in st.subs.topics.all() {
            match &t.side {
                Side::Home(h) if h.live == Live::Yes => live.push(t.name.clone()),
                Side::Home(h) if matches!(h.live, Live::Asked | Live::Loading) => {
                    asked.push(t.name.clone())
                }
                _ => {}
            }
        }
        debug!("redis: shard {} resyncs {} topics", self.id, live.len());
        for topic in live {
            self.check(st, topic);
        }
        // Their subscribe may have been lost with the connection: asked again (the bridge
        // answers at once for a channel it has).
        for topic in asked {
            self.send_interest(st, topic, true);
        }
    }

    /// A subscription to `topic` (homed here) opens on this node: the bridge is asked to
    /// subscribe to its channel unless it was already.
    pub(crate) fn want_live(&self, st: &mut State, topic: &Arc<str>) {
        if self.node.bridge.is_none() {
            return;
        }
        let Some((_, t)) = self.known_home(st, topic) else {
            return;
        };
        t.touched = Instant::now();
        if t.live == Live::No {
            t.live = Live::Asked;
            self.send_interest(st, topic.clone(), true);
        }
    }

    /// The bridge is subscribed to `topic`'s channel: from now on pushes keep this home
    /// current, once it has asked Redis what came before.
    pub(crate) fn live(&self, st: &mut State, topic: Arc<str>) {
        let Some((_, t)) = self.known_home(st, &topic) else {
            return;
        };
        if t.live != Live::Yes {
            t.live = Live::Loading;
        }
        // `loaded` follows the fetch's answer. A fetch the bridge's inbox refused leaves the
        // home loading until the ticker asks again (`retry_gaps`); meanwhile its waiting
        // windows are not answered from what it does not hold.
        self.check(st, topic);
    }

    /// Whether this home answers windows of `topic` itself: always standalone; with `--redis`
    /// only while it follows the topic and is caught up.
    pub(crate) fn follows(&self, st: &mut State, topic: &Arc<str>) -> bool {
        self.node.bridge.is_none()
            || self
                .known_home(st, topic)
                .is_some_and(|(_, t)| t.live == Live::Yes)
    }

    /// Keeps a window request until this home follows `topic` (asking the bridge to subscribe
    /// if nobody has yet).
    pub(crate) fn park_window(
        &self,
        st: &mut State,
        topic: Arc<str>,
        since: Since,
        limit: usize,
        from: Option<usize>,
        reply: ReplyTo,
    ) {
        if self.home_topic(st, &topic).is_err() {
            self.reply(st, reply, Reply::Window(Err(PublishError::TooManyTopics)));
            return;
        }
        self.want_live(st, &topic);
        let until = Instant::now() + Duration::from_millis(self.node.cfg.publish_timeout_ms);
        st.parked.entry(topic).or_default().push(Parked {
            since,
            limit,
            from,
            reply,
            until,
        });
    }

    /// The home follows `topic` and is caught up: it answers the windows that waited.
    pub(crate) fn loaded(&self, st: &mut State, topic: &Arc<str>) {
        let Some((_, t)) = self.known_home(st, topic) else {
            return;
        };
        if t.live != Live::Loading {
            return;
        }
        t.live = Live::Yes;
        // Checked when quiet from now on, pushed or not (`check_quiet`).
        st.quiet.entry(topic.clone()).or_insert_with(Instant::now);
        for p in st.parked.remove(topic).unwrap_or_default() {
            self.answer_window(st, topic.clone(), p.since, p.limit, p.from, p.reply);
        }
    }

    /// Once a second: windows that waited past their deadline are answered 503, and their
    /// topic starts following from scratch on the next request.
    pub(crate) fn expire_parked(&self, now: Instant) {
        let mut st = self.st.borrow_mut();
        if st.parked.is_empty() {
            return;
        }
        let mut late = Vec::new();
        st.parked.retain(|topic, list| {
            list.retain(|p| {
                let keep = p.until > now;
                if !keep {
                    late.push((topic.clone(), p.reply));
                }
                keep
            });
            !list.is_empty()
        });
        for (topic, reply) in late {
            warn!("redis: a window of {topic} waited too long for Redis");
            if let Some((_, t)) = self.known_home(&mut st, &topic) {
                if t.live != Live::Yes {
                    t.live = Live::No;
                }
            }
            self.reply(
                &mut st,
                reply,
                Reply::Window(Err(PublishError::NotConfirmed)),
            );
        }
    }

    /// The window of `topic` after `since` for `reply`, from this home or from Redis (a home
    /// that follows the topic but does not hold `since`); `from`: a subscriber's shard.
    pub(crate) fn answer_window(
        &self,
        st: &mut State,
        topic: Arc<str>,
        since: Since,
        limit: usize,
        from: Option<usize>,
        reply: ReplyTo,
    ) {
        if let Some(p) = self.must_ask_redis(st, &topic, since) {
            // Answered when Redis's window is back (`apply_fetched`).
            self.watch(st, &topic, from);
            self.ask_redis(st, topic, p, limit, reply);
            return;
        }
        let r = self.home_window(st, &topic, since, limit, from);
        self.reply(st, reply, Reply::Window(r));
    }

    /// Tells the bridge of interest starting (`on`) or ending; a full inbox is retried by the
    /// ticker (`retry_interest`).
    pub(crate) fn send_interest(&self, st: &mut State, topic: Arc<str>, on: bool) {
        let Some(bridge) = &self.node.bridge else {
            return;
        };
        let cmd = if on {
            BridgeCmd::Subscribe {
                topic,
                home: self.id as u16,
            }
        } else {
            BridgeCmd::Unsubscribe { topic }
        };
        if let Err(cmd) = bridge.send(cmd) {
            let topic = match cmd {
                BridgeCmd::Subscribe { topic, .. } | BridgeCmd::Unsubscribe { topic } => topic,
                _ => return,
            };
            st.interest_retry.push((topic, on));
        }
    }

    /// Once a second: interest changes that found the bridge's inbox full, sent again.
    pub(crate) fn retry_interest(&self) {
        let mut st = self.st.borrow_mut();
        for (topic, on) in std::mem::take(&mut st.interest_retry) {
            // A subscribe for a topic freed meanwhile is moot.
            if on && self.known_home(&mut st, &topic).is_none() {
                continue;
            }
            self.send_interest(&mut st, topic, on);
        }
    }

    /// Once a second: gap fetches (resyncs and loads among them) that found the bridge's
    /// inbox full, asked again from the cursor as it is now.
    pub(crate) fn retry_gaps(&self) {
        let mut st = self.st.borrow_mut();
        for (topic, want) in std::mem::take(&mut st.gap_retry) {
            // Freed meanwhile: nobody here follows it any more.
            let Some((_, t)) = self.known_home(&mut st, &topic) else {
                continue;
            };
            let since = t.current();
            self.ask_gap(&mut st, topic, since, want);
        }
    }

    /// The home entry of `topic` if this shard has one (never makes one).
    pub(crate) fn known_home<'a>(
        &self,
        st: &'a mut State,
        topic: &Arc<str>,
    ) -> Option<(usize, &'a mut HomeTopic)> {
        let topics = &mut st.subs.topics;
        let tk = topics.find(topic)?;
        topics.get_mut(tk)?.home().map(|h| (tk, h))
    }

    /// Once a second: the topics pushed here that have been quiet for [`QUIET`] are checked
    /// against Redis, so a lost *last* message (which no later push reveals) arrives; then
    /// again every [`RECHECK`] while they stay quiet and followed.
    pub(crate) fn check_quiet(&self, now: Instant) {
        let mut st = self.st.borrow_mut();
        if st.quiet.is_empty() {
            return;
        }
        let mut due = Vec::new();
        for (topic, at) in st.quiet.iter_mut() {
            if now.saturating_duration_since(*at) >= QUIET {
                due.push(topic.clone());
                // Due again after RECHECK (`at` is when the topic counts as last pushed).
                *at = now + (RECHECK - QUIET);
            }
        }
        for topic in due {
            if self
                .known_home(&mut st, &topic)
                .is_none_or(|(_, t)| t.live == Live::No)
            {
                // Nobody here follows it any more.
                st.quiet.remove(&topic);
                continue;
            }
            self.check(&mut st, topic);
        }
    }

    /// Asks Redis for the messages of `topic` after this home's cursor (nothing, when it has
    /// them all).
    fn check(&self, st: &mut State, topic: Arc<str>) {
        // A home that does not follow the topic holds nothing anyone reads.
        let Some((_, t)) = self
            .known_home(st, &topic)
            .filter(|(_, t)| t.live != Live::No)
        else {
            return;
        };
        let since = t.current();
        self.metrics().inc(M::RedisResyncs);
        match st.fetching.get_mut(&topic) {
            // Its answer may have been made before what this check is for (a reconnect).
            Some(f) => f.again = true,
            None => self.ask_gap(st, topic, since, 0),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::position::Position;
    use crate::fanout::{
        home_of, BridgeCmd, Cmd, Fetched, Msg, MsgRef, Reply, Since, Window, WindowAsk,
    };
    use crate::shard::core::inbox::publish_tests::{home_shard, sent_to_1, TO_SHARD_1};
    use crate::shard::core::Shard;

    use super::*;

    /// A topic name homed on shard 0 of two.
    fn topic_on_0(prefix: &str) -> Arc<str> {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .find(|t| home_of(t.as_bytes(), 2) == 0)
            .map(Arc::from)
            .unwrap()
    }

    /// Message `o` of `topic` in epoch 9.
    fn msg_at(topic: &Arc<str>, o: u64, at: Instant) -> MsgRef {
        Arc::new(Msg {
            topic: topic.clone(),
            pos: Position::new(9, o),
            event: None,
            data: b"x".to_vec().into(),
            binary: false,
            at,
        })
    }

    fn bridge_cmds(sh: &Shard) -> Vec<BridgeCmd> {
        let b = sh.node.bridge.as_ref().unwrap();
        std::iter::from_fn(|| b.pop()).collect()
    }

    /// Whether `sent` is one window answer, "not confirmed" (a 503 to the client).
    fn one_not_confirmed(sent: &[Cmd]) -> bool {
        matches!(
            sent,
            [Cmd::Reply { reply, .. }]
                if matches!(**reply, Reply::Window(Err(PublishError::NotConfirmed)))
        )
    }

    fn window(topic: &Arc<str>, since: Since) -> Cmd {
        Cmd::Window(Box::new(WindowAsk {
            topic: topic.clone(),
            since,
            limit: 10,
            subscribe: false,
            reply: TO_SHARD_1,
        }))
    }

    /// A window on a topic the node does not follow waits while the home subscribes and loads
    /// what Redis retains; then it is answered from the home, `earliest` included.
    #[test]
    fn a_window_waits_for_its_home_to_follow_and_load_the_topic() {
        let sh = home_shard(&["--redis", "redis://127.0.0.1:1"]);
        let topic = topic_on_0("t");
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::Earliest));
        assert!(
            sent_to_1(&sh).is_empty(),
            "not answered before the home follows"
        );
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Subscribe { topic: t, home: 0 }] if *t == topic),
            "{cmds:?}"
        );
        // A second request neither subscribes again nor is answered yet.
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        assert!(bridge_cmds(&sh).is_empty());
        // Subscribed: the home loads what Redis retains (`0:0` from a home).
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Live(topic.clone()));
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Fetch { since, asked: None, .. }] if *since == Position::new(0, 0)),
            "{cmds:?}"
        );
        assert!(sent_to_1(&sh).is_empty(), "not answered while loading");
        let now = Instant::now();
        let msg = |o| msg_at(&topic, o, now);
        let loaded = Window {
            reset: false,
            msgs: vec![msg(4), msg(5)],
            current: Position::new(9, 5),
        };
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Fetched(Box::new(Fetched {
                topic: topic.clone(),
                window: Some(loaded),
                asked: None,
            })),
        );
        let got: Vec<(Vec<u64>, Position)> = sent_to_1(&sh)
            .into_iter()
            .map(|c| match c {
                Cmd::Reply { reply, .. } => match *reply {
                    Reply::Window(Ok(w)) => {
                        (w.msgs.iter().map(|m| m.pos.offset).collect(), w.current)
                    }
                    other => panic!("{other:?}"),
                },
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                (vec![4, 5], Position::new(9, 5)),
                (vec![], Position::new(9, 5))
            ]
        );
        // Following now: the next window is answered at once.
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        assert_eq!(sent_to_1(&sh).len(), 1);
        assert!(bridge_cmds(&sh).is_empty());
    }

    /// Past `--publish-timeout-ms` a waiting window is answered "not confirmed" (a 503), and
    /// the topic starts following from scratch on the next request.
    #[test]
    fn a_window_that_waited_too_long_is_refused_and_the_next_asks_again() {
        let sh = home_shard(&[
            "--redis",
            "redis://127.0.0.1:1",
            "--publish-timeout-ms",
            "50",
        ]);
        let topic = topic_on_0("u");
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        assert_eq!(bridge_cmds(&sh).len(), 1);
        sh.expire_parked(Instant::now() + Duration::from_secs(1));
        let sent = sent_to_1(&sh);
        assert!(one_not_confirmed(&sent), "{sent:?}");
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Subscribe { .. }]),
            "{cmds:?}"
        );
    }

    /// Pushes past a gap are held: once the fetch fills the gap they follow on, and no second
    /// fetch is needed for them.
    #[test]
    fn pushes_past_a_gap_are_held_until_it_is_filled() {
        let sh = home_shard(&["--redis", "redis://127.0.0.1:1"]);
        let topic = topic_on_0("h");
        let now = Instant::now();
        let msg = |o| msg_at(&topic, o, now);
        let fetched = |msgs: Vec<u64>, current| {
            Cmd::Fetched(Box::new(Fetched {
                topic: topic.clone(),
                window: Some(Window {
                    reset: false,
                    msgs: msgs.into_iter().map(msg).collect(),
                    current: Position::new(9, current),
                }),
                asked: None,
            }))
        };
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Live(topic.clone()));
        sh.handle(&mut sh.st.borrow_mut(), fetched(vec![], 0));
        assert_eq!(sent_to_1(&sh).len(), 1, "following");
        bridge_cmds(&sh);
        let last = |sh: &Shard| {
            sh.known_home(&mut sh.st.borrow_mut(), &topic)
                .unwrap()
                .1
                .last
        };
        for o in [1, 3, 4] {
            sh.handle(&mut sh.st.borrow_mut(), Cmd::Pushed(msg(o)));
        }
        assert_eq!(last(&sh), 1);
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Fetch { since, .. }] if *since == Position::new(9, 1)),
            "one fetch for the gap: {cmds:?}"
        );
        sh.handle(&mut sh.st.borrow_mut(), fetched(vec![2], 2));
        assert_eq!(last(&sh), 4, "the held pushes followed the fetched one");
        assert!(bridge_cmds(&sh).is_empty(), "nothing left to fetch");
        assert!(sh.st.borrow().held.is_empty());
    }

    /// A following home at `9:5` whose resync fetch is out; `Fetched` answers for it.
    fn resyncing_home(prefix: &str) -> (Shard, Arc<str>) {
        let sh = home_shard(&["--redis", "redis://127.0.0.1:1"]);
        let topic = topic_on_0(prefix);
        let now = Instant::now();
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Live(topic.clone()));
        let load = Window {
            reset: false,
            msgs: (1..=5).map(|o| msg_at(&topic, o, now)).collect(),
            current: Position::new(9, 5),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, load));
        sent_to_1(&sh);
        bridge_cmds(&sh);
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Resync);
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Fetch { since, asked: None, .. }] if *since == Position::new(9, 5)),
            "{cmds:?}"
        );
        (sh, topic)
    }

    fn fetched(topic: &Arc<str>, w: Window) -> Cmd {
        Cmd::Fetched(Box::new(Fetched {
            topic: topic.clone(),
            window: Some(w),
            asked: None,
        }))
    }

    /// Message `o` of `topic` in epoch 10 (Redis's after a restart that lost writes).
    fn new_epoch_msg(topic: &Arc<str>, o: u64) -> MsgRef {
        Arc::new(Msg {
            topic: topic.clone(),
            pos: Position::new(10, o),
            event: None,
            data: b"y".to_vec().into(),
            binary: false,
            at: Instant::now(),
        })
    }

    fn cursor(sh: &Shard, topic: &Arc<str>) -> Position {
        sh.known_home(&mut sh.st.borrow_mut(), topic)
            .unwrap()
            .1
            .current()
    }

    /// Redis restarted and the new epoch's first push arrives while the resync fetch (asked in
    /// the old epoch) is out; Redis ran that fetch after three appends of the new epoch, so it
    /// answers "reset, now at 10:3". That answer is about the old epoch: the home must still
    /// apply 10:1, 10:2 and 10:3, not jump past them.
    #[test]
    fn a_resync_answer_from_the_old_epoch_skips_nothing_of_the_new_one() {
        let (sh, topic) = resyncing_home("e");
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Pushed(new_epoch_msg(&topic, 1)),
        );
        let reset = Window {
            reset: true,
            msgs: vec![],
            current: Position::new(10, 3),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, reset));
        for o in [2, 3] {
            sh.handle(
                &mut sh.st.borrow_mut(),
                Cmd::Pushed(new_epoch_msg(&topic, o)),
            );
        }
        let ring: Vec<Position> = sh
            .known_home(&mut sh.st.borrow_mut(), &topic)
            .unwrap()
            .1
            .ring
            .after(0, 10)
            .iter()
            .map(|m| m.pos)
            .collect();
        assert_eq!(
            ring,
            (1..=3).map(|o| Position::new(10, o)).collect::<Vec<_>>(),
            "every message of the new epoch kept, in order"
        );
        assert!(sh.st.borrow().held.is_empty());
    }

    /// The same race, with Redis running the fetch before any append of the new epoch: it
    /// answers "no such topic" (`0:0`). The held 10:1 and the next push 10:2 both follow.
    #[test]
    fn a_resync_answer_of_no_topic_skips_nothing_of_the_new_epoch() {
        let (sh, topic) = resyncing_home("n");
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Pushed(new_epoch_msg(&topic, 1)),
        );
        let gone = Window {
            reset: true,
            msgs: vec![],
            current: Position::new(0, 0),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, gone));
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Pushed(new_epoch_msg(&topic, 2)),
        );
        assert_eq!(cursor(&sh, &topic), Position::new(10, 2));
        let ring = sh
            .known_home(&mut sh.st.borrow_mut(), &topic)
            .unwrap()
            .1
            .ring
            .after(0, 10)
            .len();
        assert_eq!(ring, 2, "10:1 and 10:2 both kept");
    }

    /// Redis lost the topic (`0:0`) and the first push of its new epoch that reaches this home
    /// is 10:2 (10:1's push was lost): the home fetches 10:1 rather than start at 10:2.
    #[test]
    fn after_redis_lost_a_topic_its_new_epoch_is_followed_from_its_start() {
        let (sh, topic) = resyncing_home("s");
        let gone = Window {
            reset: true,
            msgs: vec![],
            current: Position::new(0, 0),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, gone));
        bridge_cmds(&sh);
        sh.handle(
            &mut sh.st.borrow_mut(),
            Cmd::Pushed(new_epoch_msg(&topic, 2)),
        );
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Fetch { since, asked: None, .. }] if *since == Position::new(10, 0)),
            "the gap before 10:2 is fetched: {cmds:?}"
        );
    }

    /// A resync that comes while a fetch asked before the reconnect is out is not merged
    /// into it (its answer may predate what was missed): the cursor is checked again.
    #[test]
    fn a_resync_during_a_fetch_checks_again_once_it_lands() {
        let (sh, topic) = resyncing_home("a");
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Resync);
        assert!(bridge_cmds(&sh).is_empty(), "one fetch in flight at a time");
        let caught_up = || Window {
            reset: false,
            msgs: vec![],
            current: Position::new(9, 5),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, caught_up()));
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Fetch { since, asked: None, .. }] if *since == Position::new(9, 5)),
            "checked again: {cmds:?}"
        );
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, caught_up()));
        assert!(bridge_cmds(&sh).is_empty(), "and only once");
    }

    /// A followed topic that stays quiet is checked when it turns quiet and then every
    /// RECHECK, so a lost push on a long-quiet topic is found; one nobody follows is not.
    #[test]
    fn a_quiet_topic_is_checked_again_while_it_stays_quiet() {
        let (sh, topic) = resyncing_home("q");
        let caught_up = || Window {
            reset: false,
            msgs: vec![],
            current: Position::new(9, 5),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, caught_up()));
        let t0 = Instant::now();
        let fetches = |sh: &Shard| {
            bridge_cmds(sh)
                .iter()
                .filter(|c| matches!(c, BridgeCmd::Fetch { .. }))
                .count()
        };
        sh.check_quiet(t0 + Duration::from_secs(2));
        assert_eq!(fetches(&sh), 1, "checked once quiet");
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, caught_up()));
        sh.check_quiet(t0 + Duration::from_secs(3));
        assert_eq!(fetches(&sh), 0, "not every second");
        sh.check_quiet(t0 + Duration::from_secs(2) + RECHECK);
        assert_eq!(fetches(&sh), 1, "checked again after RECHECK");
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, caught_up()));
        sh.known_home(&mut sh.st.borrow_mut(), &topic)
            .unwrap()
            .1
            .live = Live::No;
        sh.check_quiet(t0 + Duration::from_secs(3) + RECHECK * 2);
        assert_eq!(fetches(&sh), 0, "not once nobody follows it");
        assert!(sh.st.borrow().quiet.is_empty());
    }

    /// A push that reaches a home while it loads the topic (Redis confirmed the SUBSCRIBE
    /// and pushed before the load's answer came) does not start the cursor: the load's older
    /// messages are kept too, so `earliest` gets everything Redis retains.
    #[test]
    fn a_push_during_the_load_keeps_what_the_load_brings() {
        let sh = home_shard(&["--redis", "redis://127.0.0.1:1"]);
        let topic = topic_on_0("l");
        let now = Instant::now();
        let msg = |o| msg_at(&topic, o, now);
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::Earliest));
        // A push before the home even heard that the channel is subscribed: the load to come
        // brings it.
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Pushed(msg(5)));
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Live(topic.clone()));
        bridge_cmds(&sh);
        // One while the load is out, appended after Redis ran it.
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Pushed(msg(6)));
        let load = Window {
            reset: false,
            msgs: vec![msg(4), msg(5)],
            current: Position::new(9, 5),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, load));
        let got: Vec<u64> = match &sent_to_1(&sh)[..] {
            [Cmd::Reply { reply, .. }] => match &**reply {
                Reply::Window(Ok(w)) => w.msgs.iter().map(|m| m.pos.offset).collect(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(got, [4, 5, 6]);
        assert_eq!(cursor(&sh, &topic), Position::new(9, 6));
        assert!(sh.st.borrow().held.is_empty());
    }

    /// A home whose load the bridge's inbox refused does not count as following: its waiting
    /// windows are not answered from what it does not hold, but refused at their deadline.
    #[test]
    fn a_load_the_bridge_refused_leaves_the_window_waiting() {
        let sh = home_shard(&["--redis", "redis://127.0.0.1:1", "--inbox-capacity", "1"]);
        let topic = topic_on_0("f");
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::Earliest));
        // The subscribe fills the bridge's one slot: the load cannot be asked for.
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Live(topic.clone()));
        assert!(sent_to_1(&sh).is_empty(), "not answered from nothing");
        sh.expire_parked(Instant::now() + Duration::from_secs(60));
        let sent = sent_to_1(&sh);
        assert!(one_not_confirmed(&sent), "{sent:?}");
    }

    /// A load (or resync) the bridge's full inbox refused is asked again by the ticker: a
    /// quiet topic has no next push to ask it, and its window is then answered.
    #[test]
    fn a_refused_load_is_asked_again_by_the_ticker() {
        let sh = home_shard(&["--redis", "redis://127.0.0.1:1", "--inbox-capacity", "1"]);
        let topic = topic_on_0("r");
        sh.handle(&mut sh.st.borrow_mut(), window(&topic, Since::None));
        sh.handle(&mut sh.st.borrow_mut(), Cmd::Live(topic.clone()));
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Subscribe { .. }]),
            "the load found no room: {cmds:?}"
        );
        sh.retry_gaps();
        let cmds = bridge_cmds(&sh);
        assert!(
            matches!(&cmds[..], [BridgeCmd::Fetch { since, asked: None, .. }] if *since == Position::new(0, 0)),
            "asked again: {cmds:?}"
        );
        let loaded = Window {
            reset: false,
            msgs: vec![],
            current: Position::new(9, 0),
        };
        sh.handle(&mut sh.st.borrow_mut(), fetched(&topic, loaded));
        assert_eq!(sent_to_1(&sh).len(), 1, "the window is answered");
        sh.retry_gaps();
        assert!(bridge_cmds(&sh).is_empty(), "asked once");
    }
}
