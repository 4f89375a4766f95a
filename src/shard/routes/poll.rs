//! `GET /poll/{topic}`: short polling (answer at once) and long polling (`wait=`).
//!
//! Owns: the poll JSON `{"messages":[{"id","event"?,"data","encoding"?}],"next":POS,"reset"?}`,
//! `ETag`/`If-None-Match` (the ETag is the topic's current position), and the long-poll wait:
//! a waiting poll is a subscriber like an SSE stream (so the message that ends the wait is the
//! first one after `since`, with no gap and no duplicate across a chain of polls), freed at once
//! when its client disconnects.
//! Must not: keep anything after answering.

use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::codec::position::{Position, MAX_POSITION_BYTES};
use crate::codec::route;
use crate::codec::subscribe::{self, Fresh, QueryError};
use crate::fanout::{MsgRef, Since};
use crate::metrics::M;
use crate::shard::core::{Fail, Shard};
use crate::shard::outbox::wire;
use crate::shard::routes::answer::{cors, Answer, Next, Req, Waiting};
use crate::shard::routes::authz;

/// Reads `since`-like query parameters: absent, unreadable, or a position.
pub fn since_of(v: Option<&[u8]>) -> Since {
    match v {
        None => Since::None,
        Some([]) => Since::None,
        Some(b) => match Position::parse(b) {
            Ok(p) => Since::At(p),
            Err(_) => Since::Bad,
        },
    }
}

/// Where a subscription starts: `pos` (a position: `since`, `Last-Event-ID`) wins; without
/// one, `since=earliest` or `rewind=N` from query `q` (`codec::subscribe`); else from now.
/// A bad `rewind` (or `earliest` with `rewind`) is a 400 whether or not a position wins.
pub fn start_of(pos: Option<&[u8]>, q: &[u8]) -> Result<Since, QueryError> {
    let since = route::query_param(q, "since");
    let rewind = route::query_param(q, "rewind");
    let fresh = subscribe::fresh_start(since.as_deref(), rewind.as_deref())?;
    Ok(since_or(pos, fresh))
}

/// `pos` as a position when there is one (not empty, not `earliest`), else the fresh start.
pub fn since_or(pos: Option<&[u8]>, fresh: Fresh) -> Since {
    match pos.filter(|p| !p.is_empty() && *p != subscribe::SINCE_EARLIEST) {
        Some(p) => since_of(Some(p)),
        None => match fresh {
            Fresh::Now => Since::None,
            Fresh::Earliest => Since::Earliest,
            Fresh::Rewind(n) => Since::Rewind(n),
        },
    }
}

fn number(q: &[u8], name: &str) -> Result<Option<u64>, ()> {
    match route::query_param(q, name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or(()),
    }
}

/// Appends the poll answer body to `out`.
pub fn write_body(msgs: &[MsgRef], reset: bool, next: Position, out: &mut Vec<u8>) {
    out.reserve(32 + msgs.iter().map(|m| m.data.len() + 48).sum::<usize>());
    out.extend_from_slice(b"{\"messages\":[");
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        wire::poll_message(m, out);
    }
    out.extend_from_slice(b"],\"next\":\"");
    next.write(out);
    out.push(b'"');
    if reset {
        out.extend_from_slice(b",\"reset\":true");
    }
    out.push(b'}');
}

/// The ETag of a topic at `p`: the position, quoted (no allocation).
struct Etag {
    buf: [u8; MAX_POSITION_BYTES + 2],
    len: usize,
}

impl Etag {
    fn new(p: Position) -> Etag {
        let mut pos = [0u8; MAX_POSITION_BYTES];
        let n = p.encode(&mut pos);
        let mut buf = [0u8; MAX_POSITION_BYTES + 2];
        buf[0] = b'"';
        buf[1..=n].copy_from_slice(&pos[..n]);
        buf[n + 1] = b'"';
        Etag { buf, len: n + 2 }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `If-None-Match` holds `tag` (weak or strong, in a list, or `*`).
fn matches_etag(inm: &[u8], tag: &[u8]) -> bool {
    inm.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        let t = t.strip_prefix(b"W/").unwrap_or(t);
        t == b"*" || t == tag
    })
}

fn answer(a: &mut Answer<'_>, msgs: &[MsgRef], reset: bool, current: Position, inm: Option<&[u8]>) {
    let next = msgs.last().map_or(current, |m| m.pos);
    let tag = Etag::new(current);
    let tag = tag.as_bytes();
    if msgs.is_empty() && !reset && inm.is_some_and(|v| matches_etag(v, tag)) {
        a.send(304, &[("ETag", tag), ("Cache-Control", b"no-cache")], b"");
        return;
    }
    a.send_with(
        200,
        &[
            ("Content-Type", b"application/json"),
            ("Cache-Control", b"no-cache"),
            ("ETag", tag),
        ],
        |out| write_body(msgs, reset, next, out),
    );
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

/// A poll request, read: everything it needs once its bytes are gone.
pub struct PollReq {
    topic: Arc<str>,
    since: Since,
    limit: usize,
    wait: u64,
    if_none_match: Option<Vec<u8>>,
}

/// Checks a poll request and takes what it needs from it; `Err` is the answer already written
/// (403, 400).
pub fn prepare(
    sh: &Shard,
    req: &Req<'_>,
    a: &mut Answer<'_>,
    topic: String,
) -> Result<PollReq, Next> {
    match cors(sh, req.buf, req.head) {
        Ok(c) => a.cors = c,
        Err(_) => {
            sh.metrics().inc(M::BadRequests);
            a.error(403, "origin not allowed");
            return Err(Next::KeepAlive);
        }
    }
    if let Err(d) = authz::may_read(sh, req, &topic) {
        authz::refuse(a, d);
        return Err(Next::KeepAlive);
    }
    let q = req.query();
    let since = match start_of(route::query_param(q, "since").as_deref(), q) {
        Ok(s) => s,
        Err(e) => {
            sh.metrics().inc(M::BadRequests);
            crate::debug!("{}: poll refused: {}", req.peer, e.reason());
            a.error(400, e.reason());
            return Err(Next::KeepAlive);
        }
    };
    let cfg = &sh.node.cfg;
    let (limit, wait) = match (number(q, "limit"), number(q, "wait")) {
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
    Ok(PollReq {
        topic: Arc::from(topic),
        since,
        limit,
        wait,
        if_none_match: req.header("if-none-match").map(<[u8]>::to_vec),
    })
}

/// Answers a poll at once, or returns the long poll that waits for news.
pub async fn run(sh: &Rc<Shard>, p: PollReq, a: &mut Answer<'_>, fd: RawFd) -> Next {
    let PollReq {
        topic,
        since,
        limit,
        wait,
        if_none_match,
    } = p;
    if wait == 0 || since == Since::Bad {
        return match sh.window(topic, since, limit).await {
            Ok(w) => {
                if w.reset {
                    sh.metrics().inc(M::Resets);
                }
                answer(a, &w.msgs, w.reset, w.current, if_none_match.as_deref());
                Next::KeepAlive
            }
            Err(f) => fail(a, f),
        };
    }
    // Long poll: subscribe, answer as soon as there is anything after `since`.
    // Frees the connection state if the subscribe below never completes (client gone).
    let mut waiting = Waiting::open(sh, fd, limit, a, None);
    let ok = waiting.out;
    let (sk, w) = match sh.subscribe(ok, topic, since, limit).await {
        Ok(x) => x,
        Err(f) => return fail(a, f),
    };
    waiting.sub = Some(sk);
    if w.reset || !w.msgs.is_empty() {
        drop(waiting);
        answer(a, &w.msgs, w.reset, w.current, None);
        return Next::KeepAlive;
    }
    sh.metrics().inc(M::LongPollWaiting);
    waiting.counted = true;
    waiting.deadline = Instant::now() + Duration::from_secs(wait);
    waiting.current = w.current;
    waiting.cors = a.cors.take();
    Next::LongPoll(waiting)
}

impl Waiting {
    /// Ready once a message came for the poll, or the shard wants the connection closed
    /// (draining): either way it is time to answer.
    pub fn news(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let mut st = self.sh.st.borrow_mut();
            let out = &mut st.subs.outs[self.out];
            if !out.polled.is_empty() || out.kill.is_some() {
                Poll::Ready(())
            } else {
                out.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Writes the answer — the messages that came, or a 204 with the position to poll from
    /// next — into `out`, and frees the poll.
    pub fn answer(mut self, out: &mut Vec<u8>) {
        let mut a = Answer {
            out,
            keep_alive: self.keep_alive,
            http10: self.http10,
            head_only: self.head_only,
            date: self.sh.date.get(),
            cors: self.cors.take(),
        };
        if self.multi.is_some() {
            return self.answer_multi(&mut a, Vec::new());
        }
        let mut msgs = std::mem::take(&mut self.sh.st.borrow_mut().subs.outs[self.out].polled);
        if msgs.is_empty() {
            let mut next = Vec::with_capacity(24);
            self.current.write(&mut next);
            let tag = Etag::new(self.current);
            a.send(
                204,
                &[
                    ("X-Ringcast-Next", &next),
                    ("ETag", tag.as_bytes()),
                    ("Cache-Control", b"no-cache"),
                ],
                b"",
            );
        } else {
            msgs.truncate(self.limit);
            // The topic moved on without this poll's position (a new epoch in Redis, or its
            // history gone): say so rather than leave a silent gap.
            let (first, c) = (msgs[0].pos, self.current);
            let reset = c.epoch != 0 && (first.epoch != c.epoch || first.offset != c.offset + 1);
            answer(&mut a, &msgs, reset, self.current, None);
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.counted {
            self.sh.metrics().dec(M::LongPollWaiting);
        }
        if let Some(sk) = self.sub {
            self.sh.unsubscribe(sk);
        }
        if let Some(m) = self.multi.take() {
            for sk in m.subs {
                self.sh.unsubscribe(sk);
            }
        }
        self.sh.st.borrow_mut().subs.remove_out(self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let tag = Etag::new(Position::new(0xab, 3));
        let tag = tag.as_bytes();
        assert_eq!(tag, b"\"ab:3\"");
        assert!(matches_etag(b"\"ab:3\"", tag));
        assert!(matches_etag(b"W/\"ab:3\"", tag));
        assert!(matches_etag(b"\"x\", \"ab:3\"", tag));
        assert!(matches_etag(b"*", tag));
        assert!(!matches_etag(b"\"ab:4\"", tag));
    }

    #[test]
    fn since_values() {
        assert_eq!(since_of(None), Since::None);
        assert_eq!(since_of(Some(b"")), Since::None);
        assert_eq!(since_of(Some(b"zz")), Since::Bad);
        assert_eq!(since_of(Some(b"a:1")), Since::At(Position::new(10, 1)));
    }

    #[test]
    fn starts() {
        let st = |pos: Option<&str>, q: &str| start_of(pos.map(str::as_bytes), q.as_bytes());
        let at = Since::At(Position::new(10, 1));
        assert_eq!(st(None, ""), Ok(Since::None));
        assert_eq!(st(Some("earliest"), "since=earliest"), Ok(Since::Earliest));
        assert_eq!(st(None, "rewind=7"), Ok(Since::Rewind(7)));
        assert_eq!(
            st(Some("a:1"), "since=a:1&rewind=7"),
            Ok(at),
            "a position wins"
        );
        assert_eq!(st(Some("a:1"), "since=earliest"), Ok(at), "a position wins");
        assert_eq!(st(Some("zz"), "rewind=3"), Ok(Since::Bad));
        assert_eq!(st(None, "rewind=-1"), Err(QueryError::BadRewind));
        assert_eq!(st(Some("a:1"), "rewind=abc"), Err(QueryError::BadRewind));
        assert_eq!(
            st(None, "since=earliest&rewind=1"),
            Err(QueryError::EarliestAndRewind)
        );
    }
}
