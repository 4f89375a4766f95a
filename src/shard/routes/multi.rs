//! Many topics, one stream: `GET /sse?topic=A&topic=B…` and `GET /poll?topic=A&topic=B…`.
//!
//! Owns: the multi-topic query (at most `--max-topics-per-stream` topics, each checked like a
//! route's topic and read permission on every one), where each topic starts (the stream
//! position token, `codec::streampos`, placing each topic it names; `since=earliest` or
//! `rewind=N` for the others), the multi-topic SSE task (its subscriptions made first, so the
//! stream's token names them all, then each window applied) and the multi-topic poll answer
//! `{"messages":[v1 envelopes],"next":TOKEN}`. A token that cannot be read places no topic:
//! every topic then gets a reset. One token serves both routes, so a client may switch.
//! Must not: borrow shard state across an await, or write a message's shared bytes per stream
//! (only the `id:` line is per stream: `outbox::subs`).

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::position::Position;
use crate::codec::streampos::StreamPos;
use crate::codec::subscribe::{self, QueryError};
use crate::codec::{route, sse as codec};
use crate::fanout::{MsgRef, Since};
use crate::metrics::M;
use crate::shard::core::{Counted, Fail, Shard};
use crate::shard::io;
use crate::shard::outbox::out::Out;
use crate::shard::outbox::wire::{self, Format};
use crate::shard::routes::answer::{cors, Answer, MultiWait, Next, Req, Starts, Waiting};
use crate::shard::routes::authz;
use crate::shard::routes::connio::Conn;
use crate::shard::routes::poll::since_or;
use crate::shard::stream::park::{self, StreamGuard};

/// Reads the topics of `q` and where each starts: its entry in the token `pos` (a stream
/// position) when there is one, else `since=earliest` / `rewind=N` / now. A token that cannot
/// be read starts every topic from a bad position, so each gets a reset.
pub fn starts(sh: &Shard, q: &[u8], pos: Option<&[u8]>) -> Result<Starts, QueryError> {
    let cfg = &sh.node.cfg;
    let topics = subscribe::topics(q, cfg.max_topics_per_stream, cfg.max_topic_bytes)?;
    let since = route::query_param(q, "since");
    let rewind = route::query_param(q, "rewind");
    let fresh = subscribe::fresh_start(since.as_deref(), rewind.as_deref())?;
    let pos = pos.filter(|p| !p.is_empty() && *p != subscribe::SINCE_EARLIEST);
    let token = pos.map(|p| StreamPos::parse(p, cfg.max_topics_per_stream));
    if let Some(Err(e)) = &token {
        crate::debug!("stream position unreadable ({e:?}): every topic resets");
    }
    Ok(topics
        .into_iter()
        .map(|t| {
            let s = match &token {
                None => since_or(None, fresh),
                Some(Err(_)) => Since::Bad,
                Some(Ok(sp)) => match sp.get(&t) {
                    Some(p) => Since::At(p),
                    None => since_or(None, fresh),
                },
            };
            (Arc::from(t), s)
        })
        .collect())
}

/// Read permission on every topic (`authz::may_read_all`, the token verified once); the
/// grant's `exp` for the stream.
pub fn may_read_all(sh: &Shard, req: &Req<'_>, s: &Starts) -> Result<u32, crate::auth::Denied> {
    let g = authz::may_read_all(sh, req, s.iter().map(|(t, _)| &**t))?;
    Ok(authz::exp_of(g.as_ref()))
}

/// Runs a multi-topic SSE stream whose first bytes are sent: makes every subscription (each
/// placed at its resume point, so the token names it from the first event), applies each
/// window (replay or reset) in turn, writes the stream's token as an `id:` with no data, then
/// parks it like a single-topic stream.
pub async fn sse_stream(c: Conn, starts: Starts, exp: u32, counted: Counted) {
    let sh = c.sh.clone();
    let mut out = Out::new(c.fd, Format::SseMulti);
    out.exp = exp;
    let ok = sh.st.borrow_mut().subs.outs.insert(out);
    let g = StreamGuard::new(&sh, ok);
    let mut keys = Vec::with_capacity(starts.len());
    let mut failed = None;
    for (t, since) in &starts {
        match sh.add_sub(ok, t) {
            Ok(sk) => {
                g.add_sub(sk);
                if let Since::At(p) = since {
                    sh.st.borrow_mut().subs.preset(sk, *p);
                }
                keys.push(sk);
            }
            Err(f) => {
                failed = Some(f);
                break;
            }
        }
    }
    if failed.is_none() {
        for ((t, since), sk) in starts.into_iter().zip(keys) {
            if let Err(f) = sh.open_sub(sk, t, since, usize::MAX).await {
                failed = Some(f);
                break;
            }
        }
    }
    if let Some(f) = failed {
        crate::debug!("{}: multi-topic sse subscribe failed: {f:?}", c.peer);
        let mut v = Vec::new();
        codec::encode_comment(&mut v, b"unavailable: too many topics or overloaded");
        let _ = io::write_some(c.fd, &v);
        io::shutdown_write(c.fd);
        return;
    }
    sh.metrics().inc(M::SseOpen);
    {
        let mut st = sh.st.borrow_mut();
        let mut v = Vec::new();
        st.subs.token_of(ok, &mut v);
        let policy = sh.policy();
        st.subs.queue_raw(ok, v.into(), &policy);
        st.subs.flush_out(ok, &policy);
    }
    g.disarm();
    counted.disarm();
    park::park(&sh, c.stream, ok);
}

/// A multi-topic poll, read.
pub struct MultiPoll {
    starts: Starts,
    limit: usize,
    wait: u64,
    /// The request had no `since` (nor `earliest`/`rewind`): answer at once with `next`.
    bootstrap: bool,
}

/// One entry of a multi-topic poll answer.
pub(crate) enum Item {
    Msg(MsgRef),
    Reset(Arc<str>, Position),
}

/// Checks a multi-topic poll; `Err` is the answer already written (400, 401/403).
pub fn prepare_poll(sh: &Shard, req: &Req<'_>, a: &mut Answer<'_>) -> Result<MultiPoll, Next> {
    match cors(sh, req.buf, req.head) {
        Ok(c) => a.cors = c,
        Err(_) => {
            sh.metrics().inc(M::BadRequests);
            a.error(403, "origin not allowed");
            return Err(Next::KeepAlive);
        }
    }
    let q = req.query();
    let since = route::query_param(q, "since");
    let starts = match starts(sh, q, since.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            sh.metrics().inc(M::BadRequests);
            crate::debug!("{}: multi-topic poll refused: {}", req.peer, e.reason());
            a.error(400, e.reason());
            return Err(Next::KeepAlive);
        }
    };
    if let Err(d) = may_read_all(sh, req, &starts) {
        authz::refuse(a, d);
        return Err(Next::KeepAlive);
    }
    let cfg = &sh.node.cfg;
    let num = |name| match route::query_param(q, name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or(()),
    };
    let (limit, wait) = match (num("limit"), num("wait")) {
        (Ok(l), Ok(w)) => (
            l.map_or(cfg.poll_limit, |l| (l as usize).clamp(1, cfg.poll_limit)),
            w.unwrap_or(0).min(cfg.longpoll_max_secs),
        ),
        _ => {
            sh.metrics().inc(M::BadRequests);
            a.error(400, "limit and wait must be whole numbers");
            return Err(Next::KeepAlive);
        }
    };
    let bootstrap = starts.iter().all(|(_, s)| *s == Since::None);
    Ok(MultiPoll {
        starts,
        limit,
        wait,
        bootstrap,
    })
}

/// Answers a multi-topic poll at once (each topic's window after its position, `limit`
/// messages per topic), or returns the long poll that waits for the first news on any topic.
pub async fn run_poll(sh: &Rc<Shard>, p: MultiPoll, a: &mut Answer<'_>, fd: RawFd) -> Next {
    let mut items = Vec::new();
    let mut topics: Vec<(Arc<str>, Position)> = Vec::with_capacity(p.starts.len());
    for (t, since) in p.starts {
        let w = match sh.window(t.clone(), since, p.limit).await {
            Ok(w) => w,
            Err(f) => return fail(a, f),
        };
        if w.reset {
            sh.metrics().inc(M::Resets);
            items.push(Item::Reset(t.clone(), w.current));
        }
        let next = w.msgs.last().map_or(w.current, |m| m.pos);
        items.extend(w.msgs.into_iter().map(Item::Msg));
        topics.push((t, next));
    }
    if !items.is_empty() || p.wait == 0 || p.bootstrap {
        answer(a, &items, &topics);
        return Next::KeepAlive;
    }
    // Long poll: subscribe every topic from where its window ended; the first message on any
    // of them (or a reset, if a topic was freed meanwhile) answers.
    let multi = Box::new(MultiWait {
        topics: Vec::new(),
        subs: Vec::with_capacity(topics.len()),
    });
    let mut waiting = Waiting::open(sh, fd, p.limit, a, Some(multi));
    let ok = waiting.out;
    let mut keys = Vec::with_capacity(topics.len());
    for (t, _) in &topics {
        match sh.add_sub(ok, t) {
            Ok(sk) => {
                keys.push(sk);
                if let Some(m) = waiting.multi.as_mut() {
                    m.subs.push(sk);
                }
            }
            Err(f) => return fail(a, f),
        }
    }
    for ((t, at), sk) in topics.iter_mut().zip(keys) {
        match sh.open_sub(sk, t.clone(), Since::At(*at), usize::MAX).await {
            Ok((_, w)) => {
                if w.reset {
                    items.push(Item::Reset(t.clone(), w.current));
                    *at = w.current;
                }
            }
            Err(f) => {
                // Gone already: the `Waiting` must not free it again.
                if let Some(m) = waiting.multi.as_mut() {
                    m.subs.retain(|&k| k != sk);
                }
                return fail(a, f);
            }
        }
    }
    if let Some(m) = waiting.multi.as_mut() {
        m.topics = topics;
    }
    let news = !sh.st.borrow().subs.outs[ok].polled.is_empty();
    if !items.is_empty() || news {
        // Answered now: the resets, and whatever came while the other topics subscribed.
        waiting.answer_multi(a, items);
        return Next::KeepAlive;
    }
    sh.metrics().inc(M::LongPollWaiting);
    waiting.counted = true;
    waiting.deadline = Instant::now() + Duration::from_secs(p.wait);
    waiting.cors = a.cors.take();
    Next::LongPoll(waiting)
}

fn fail(a: &mut Answer<'_>, f: Fail) -> Next {
    match f {
        Fail::TooManyTopics => a.error(503, "too many topics (--max-topics)"),
        Fail::Overloaded => a.send(503, &[("Retry-After", b"1")], b"overloaded\n"),
        // --redis: the window had to come from Redis, which did not answer in time.
        Fail::NotConfirmed | Fail::RedisAway => {
            a.send(503, &[("Retry-After", b"1")], b"redis did not answer\n")
        }
    }
    Next::KeepAlive
}

/// Writes `{"messages":[...],"next":TOKEN}`.
fn answer(a: &mut Answer<'_>, items: &[Item], topics: &[(Arc<str>, Position)]) {
    a.send_with(
        200,
        &[
            ("Content-Type", b"application/json"),
            ("Cache-Control", b"no-cache"),
        ],
        |out| {
            out.extend_from_slice(b"{\"messages\":[");
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                match it {
                    Item::Msg(m) => wire::envelope(m, out),
                    Item::Reset(t, p) => wire::reset_json(t, *p, out),
                }
            }
            out.extend_from_slice(b"],\"next\":\"");
            StreamPos::encode(topics.iter().map(|(t, p)| (&**t, *p)), out);
            out.extend_from_slice(b"\"}");
        },
    );
}

impl Waiting {
    /// A multi-topic long poll's answer: `items` (resets found when it subscribed), then the
    /// messages that came, at most `limit` per topic; each topic's position moves past exactly
    /// what the answer holds. A 204 with `X-Ringcast-Next: TOKEN` when nothing came.
    pub(crate) fn answer_multi(mut self, a: &mut Answer<'_>, mut items: Vec<Item>) {
        let polled = std::mem::take(&mut self.sh.st.borrow_mut().subs.outs[self.out].polled);
        let Some(mut m) = self.multi.take() else {
            return;
        };
        // `multi` is taken: free the subscriptions here.
        for &sk in &m.subs {
            self.sh.unsubscribe(sk);
        }
        let mut counts = vec![0usize; m.topics.len()];
        for msg in polled {
            let Some(i) = m.topics.iter().position(|(t, _)| *t == msg.topic) else {
                continue;
            };
            // Past the limit, the topic's later messages wait for the next poll.
            if counts[i] == self.limit {
                continue;
            }
            // Not the next message of the topic (a new epoch in Redis, or its history gone):
            // a reset to just before it, then the message.
            let at = m.topics[i].1;
            if at.epoch != 0 && (msg.pos.epoch != at.epoch || msg.pos.offset != at.offset + 1) {
                let before = Position::new(msg.pos.epoch, msg.pos.offset - 1);
                items.push(Item::Reset(m.topics[i].0.clone(), before));
            }
            counts[i] += 1;
            m.topics[i].1 = msg.pos;
            items.push(Item::Msg(msg));
        }
        if items.is_empty() {
            let mut next = Vec::with_capacity(64);
            StreamPos::encode(m.topics.iter().map(|(t, p)| (&**t, *p)), &mut next);
            a.send(
                204,
                &[("X-Ringcast-Next", &next), ("Cache-Control", b"no-cache")],
                b"",
            );
            return;
        }
        answer(a, &items, &m.topics);
    }
}
