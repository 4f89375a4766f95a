//! Group commit of publishes (`--redis`): at most one append script in flight per topic. What
//! arrives for a topic while its script is out waits, and goes to Redis whole as the next call.
//!
//! Why: a backend that publishes one request at a time from many connections would otherwise
//! cost one script call per message, and each call costs Redis (and the bridge) far more than
//! the messages in it. Busy topics now batch by themselves; an idle topic's publish still goes
//! out at once.
//!
//! Owns: the publishes the bridge has taken and not answered yet, and the parts that wait.
//! Must not: send a part whose publisher has answered already (its `until` passed), or answer
//! a publish before every one of its groups has its result.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::Value;
use slab::Slab;

use super::ctx::Ctx;
use super::scripts::{self, Appended};
use super::Keys;
use crate::codec::position::Position;
use crate::fanout::{NewMsg, PublishError, Reply, ReplyTo, TopicMsgs};
use crate::warn;

/// Most messages one script call carries (a bigger publish group still goes whole, alone):
/// bounds how long one call holds Redis.
const MAX_MESSAGES_PER_CALL: usize = 1024;

type Outcome = Result<Vec<Position>, PublishError>;

/// A publish taken from the bridge inbox: one result per group, in order.
struct Publish {
    reply: ReplyTo,
    until: Instant,
    done: Vec<Option<Outcome>>,
    left: usize,
}

impl Publish {
    /// Its answer: each group's outcome, "not confirmed" for a group without one (its call
    /// may or may not have been applied).
    fn answer(self) -> (ReplyTo, Reply) {
        let done = self
            .done
            .into_iter()
            .map(|d| d.unwrap_or(Err(PublishError::NotConfirmed)))
            .collect();
        (self.reply, Reply::Published(done))
    }
}

/// One group of one publish, waiting for its topic's script call.
struct Part {
    publish: usize,
    group: usize,
    msgs: Vec<NewMsg>,
}

/// One append script call to make: its topic's messages, and the parts they came from
/// (publish, group, message count, in the order of the messages).
pub(super) struct Call {
    topic: Arc<str>,
    parts: Vec<(usize, usize, usize)>,
    msgs: Vec<NewMsg>,
}

impl Call {
    fn of(topic: Arc<str>, parts: Vec<Part>) -> Call {
        let mut msgs = Vec::new();
        let mut carried = Vec::with_capacity(parts.len());
        for p in parts {
            carried.push((p.publish, p.group, p.msgs.len()));
            msgs.extend(p.msgs);
        }
        Call {
            topic,
            parts: carried,
            msgs,
        }
    }
}

/// A script call in flight.
pub(super) type Flight = Pin<Box<dyn Future<Output = Landed>>>;

/// What a script call brought: Redis's answer for the call's topic and parts.
pub(super) struct Landed {
    topic: Arc<str>,
    parts: Vec<(usize, usize, usize)>,
    appended: Option<Appended>,
}

pub(super) struct Commits {
    publishes: Slab<Publish>,
    /// Topics with script calls in flight, and the parts waiting for the next one.
    busy: HashMap<Arc<str>, Busy>,
    /// Most calls in flight for one topic (they run in the order sent, on one connection).
    max_in_flight: u8,
}

#[derive(Default)]
struct Busy {
    in_flight: u8,
    waiting: Vec<Part>,
}

/// Publish answers to hand to their shards.
pub(super) type Answers = Vec<(ReplyTo, Reply)>;

impl Commits {
    pub fn new(max_in_flight: u8) -> Commits {
        Commits {
            publishes: Slab::new(),
            busy: HashMap::new(),
            max_in_flight: max_in_flight.max(1),
        }
    }

    /// Takes a publish: each group goes out now if its topic has room in flight and nothing
    /// waiting ahead of it, else waits.
    pub fn take(&mut self, groups: Vec<TopicMsgs>, reply: ReplyTo, until: Instant) -> Vec<Call> {
        let n = groups.len();
        let publish = self.publishes.insert(Publish {
            reply,
            until,
            done: (0..n).map(|_| None).collect(),
            left: n,
        });
        let mut out = Vec::new();
        for (group, g) in groups.into_iter().enumerate() {
            let part = Part {
                publish,
                group,
                msgs: g.msgs,
            };
            let b = self.busy.entry(g.topic.clone()).or_default();
            if b.in_flight < self.max_in_flight && b.waiting.is_empty() {
                b.in_flight += 1;
                out.push(Call::of(g.topic, vec![part]));
            } else {
                b.waiting.push(part);
            }
        }
        out
    }

    /// A call came back: its parts get their positions (or "not confirmed"), finished publishes
    /// are answered, and the topic's waiting parts go out as its next call.
    pub fn landed(&mut self, l: Landed, now: Instant) -> (Answers, Option<Call>) {
        let mut answers = Vec::new();
        let mut next = l.appended.map(|a| a.first);
        for &(publish, group, count) in &l.parts {
            let outcome = match (l.appended, next) {
                (Some(a), Some(first)) => {
                    next = Some(first + count as u64);
                    Ok((first..first + count as u64)
                        .map(|o| Position::new(a.epoch, o))
                        .collect())
                }
                _ => Err(PublishError::NotConfirmed),
            };
            self.finish(publish, group, outcome, &mut answers);
        }
        let Some(b) = self.busy.get_mut(&l.topic) else {
            return (answers, None);
        };
        b.in_flight = b.in_flight.saturating_sub(1);
        let publishes = &self.publishes;
        // Parts whose publisher has answered 503 already are never sent.
        let (late, live): (Vec<Part>, Vec<Part>) = b
            .waiting
            .drain(..)
            .partition(|p| publishes.get(p.publish).is_none_or(|x| x.until <= now));
        let idle = b.in_flight == 0 && live.is_empty();
        if idle {
            self.busy.remove(&l.topic);
        }
        for p in late {
            self.finish(
                p.publish,
                p.group,
                Err(PublishError::NotConfirmed),
                &mut answers,
            );
        }
        if live.is_empty() {
            return (answers, None);
        }
        let mut live = live.into_iter();
        let mut batch = Vec::new();
        let mut msgs = 0;
        for p in live.by_ref() {
            msgs += p.msgs.len();
            batch.push(p);
            if msgs >= MAX_MESSAGES_PER_CALL {
                break;
            }
        }
        if let Some(b) = self.busy.get_mut(&l.topic) {
            b.in_flight += 1;
            b.waiting = live.collect();
        }
        (answers, Some(Call::of(l.topic, batch)))
    }

    /// The connection is gone: every publish still open is answered "not confirmed" for the
    /// groups without a result (a call in flight may or may not have been applied).
    pub fn abandon(&mut self) -> Answers {
        self.busy.clear();
        let mut answers = Vec::new();
        for p in self.publishes.drain() {
            answers.push(p.answer());
        }
        answers
    }

    fn finish(&mut self, publish: usize, group: usize, outcome: Outcome, answers: &mut Answers) {
        let Some(p) = self.publishes.get_mut(publish) else {
            return;
        };
        if let Some(slot) = p.done.get_mut(group) {
            *slot = Some(outcome);
        }
        p.left -= 1;
        if p.left == 0 {
            answers.push(self.publishes.remove(publish).answer());
        }
    }
}

/// Makes `call` on `con`, whose Redis process is `run_id`.
pub(super) fn flight(
    ctx: &Arc<Ctx>,
    con: &MultiplexedConnection,
    run_id: &Arc<str>,
    call: Call,
) -> Flight {
    let (ctx, mut con, run_id) = (ctx.clone(), con.clone(), run_id.clone());
    let Call {
        topic,
        parts: carried,
        msgs,
    } = call;
    Box::pin(async move {
        let keys = Keys::new(&ctx.prefix, &topic);
        let epoch = ctx.fresh_epoch();
        let inv = scripts::append(&ctx.scripts, &keys, &ctx.limits, epoch, &run_id, &msgs);
        let r: redis::RedisResult<Value> = inv.invoke_async(&mut con).await;
        if let Err(e) = &r {
            ctx.check(e);
        }
        let appended = match r.ok().as_ref().map(scripts::parse_appended) {
            Some(Ok(a)) if a.last + 1 - a.first == msgs.len() as u64 => Some(a),
            Some(Ok(_)) => {
                warn!("redis: append on {topic} answered another count of positions");
                None
            }
            Some(Err(e)) => {
                warn!("redis: append on {topic}: {e}");
                None
            }
            None => {
                warn!("redis: append on {topic} not confirmed");
                None
            }
        };
        Landed {
            topic,
            parts: carried,
            appended,
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::shard::core::inbox::publish_tests::group;

    fn to(slot: u32) -> ReplyTo {
        ReplyTo {
            shard: 0,
            slot,
            gen: 1,
        }
    }

    /// Redis's answer to `call`: offsets from `first` in `epoch`.
    fn land(call: &Call, epoch: u64, first: u64) -> Landed {
        Landed {
            topic: call.topic.clone(),
            parts: call.parts.clone(),
            appended: Some(Appended {
                epoch,
                first,
                last: first + call.msgs.len() as u64 - 1,
                new_epoch: false,
            }),
        }
    }

    fn positions(a: &(ReplyTo, Reply)) -> Vec<Option<Vec<u64>>> {
        match &a.1 {
            Reply::Published(done) => done
                .iter()
                .map(|r| {
                    r.as_ref()
                        .ok()
                        .map(|v| v.iter().map(|p| p.offset).collect())
                })
                .collect(),
            _ => panic!("not a publish answer"),
        }
    }

    /// One call per topic in flight: what comes meanwhile goes whole in the next call, and
    /// each publish gets exactly its own consecutive positions.
    #[test]
    fn a_busy_topic_batches_what_waits_and_each_publish_gets_its_positions() {
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        let mut c = Commits::new(1);
        let first = c.take(vec![group("t", 2)], to(1), until);
        assert_eq!(first.len(), 1, "an idle topic's publish goes out at once");
        assert!(c.take(vec![group("t", 1)], to(2), until).is_empty());
        assert!(c.take(vec![group("t", 3)], to(3), until).is_empty());
        let (answers, next) = c.landed(land(&first[0], 7, 1), now);
        assert_eq!(answers.len(), 1);
        assert_eq!(answers[0].0.slot, 1);
        assert_eq!(positions(&answers[0]), [Some(vec![1, 2])]);
        let next = next.expect("the waiting publishes, in one call");
        assert_eq!(next.msgs.len(), 4);
        assert_eq!(&*next.msgs[0].data, b"t-0");
        let (answers, after) = c.landed(land(&next, 7, 3), now);
        assert!(after.is_none(), "nothing waits: the topic is idle again");
        let got: Vec<_> = answers.iter().map(|a| (a.0.slot, positions(a))).collect();
        assert_eq!(
            got,
            [(2, vec![Some(vec![3])]), (3, vec![Some(vec![4, 5, 6])])]
        );
        assert_eq!(c.take(vec![group("t", 1)], to(4), until).len(), 1);
    }

    /// A publish over several topics is answered once every topic's call has landed, in the
    /// order of its groups; a failed call says "not confirmed" for its groups only.
    #[test]
    fn a_publish_is_answered_once_all_its_groups_landed() {
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        let mut c = Commits::new(1);
        let calls = c.take(vec![group("a", 1), group("b", 2)], to(1), until);
        assert_eq!(calls.len(), 2);
        let (answers, _) = c.landed(land(&calls[1], 9, 10), now);
        assert!(answers.is_empty(), "group a has no result yet");
        let failed = Landed {
            topic: calls[0].topic.clone(),
            parts: calls[0].parts.clone(),
            appended: None,
        };
        let (answers, _) = c.landed(failed, now);
        assert_eq!(positions(&answers[0]), [None, Some(vec![10, 11])]);
    }

    /// A part whose publisher has answered 503 meanwhile is never sent; a lost connection
    /// answers every open publish "not confirmed".
    #[test]
    fn late_parts_are_never_sent_and_a_lost_connection_answers_everyone() {
        let now = Instant::now();
        let mut c = Commits::new(1);
        let first = c.take(vec![group("t", 1)], to(1), now + Duration::from_secs(5));
        assert!(c
            .take(vec![group("t", 1)], to(2), now + Duration::from_millis(1))
            .is_empty());
        assert!(c
            .take(vec![group("t", 1)], to(3), now + Duration::from_secs(5))
            .is_empty());
        let later = now + Duration::from_millis(10);
        let (answers, next) = c.landed(land(&first[0], 7, 1), later);
        let got: Vec<_> = answers.iter().map(|a| (a.0.slot, positions(a))).collect();
        assert_eq!(got, [(1, vec![Some(vec![1])]), (2, vec![None])]);
        let next = next.unwrap();
        assert_eq!(
            next.parts.len(),
            1,
            "only the publish still waiting for its answer"
        );
        assert_eq!(next.parts[0].0, c.publishes.iter().next().unwrap().0);
        let answers = c.abandon();
        assert_eq!(answers.len(), 1);
        assert_eq!((answers[0].0.slot, positions(&answers[0])), (3, vec![None]));
        assert!(c.busy.is_empty());
    }

    /// With room for two calls a topic, two publishes go out at once and the third waits for
    /// the first to land; positions still follow the order the calls were sent in.
    #[test]
    fn calls_in_flight_are_bounded_per_topic() {
        let now = Instant::now();
        let until = now + Duration::from_secs(1);
        let mut c = Commits::new(2);
        let a = c.take(vec![group("t", 1)], to(1), until);
        let b = c.take(vec![group("t", 1)], to(2), until);
        assert_eq!((a.len(), b.len()), (1, 1));
        assert!(c.take(vec![group("t", 1)], to(3), until).is_empty());
        assert!(c.take(vec![group("t", 2)], to(4), until).is_empty());
        let (answers, next) = c.landed(land(&a[0], 7, 1), now);
        assert_eq!(positions(&answers[0]), [Some(vec![1])]);
        let next = next.expect("the waiting two, in one call");
        assert_eq!(next.msgs.len(), 3);
        let (answers, more) = c.landed(land(&b[0], 7, 2), now);
        assert!(more.is_none());
        assert_eq!(positions(&answers[0]), [Some(vec![2])]);
        let (answers, _) = c.landed(land(&next, 7, 3), now);
        let got: Vec<_> = answers.iter().map(|a| (a.0.slot, positions(a))).collect();
        assert_eq!(got, [(3, vec![Some(vec![3])]), (4, vec![Some(vec![4, 5])])]);
        assert!(c.busy.is_empty());
    }
}
