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

use monoio::net::TcpStream;

use crate::codec::position::Position;
use crate::codec::route;
use crate::fanout::{MsgRef, Since};
use crate::metrics::M;
use crate::shard::conn::{cors, Answer, Next, Req};
use crate::shard::subs::{Format, Out};
use crate::shard::{io, wire, Fail, Shard};

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

/// The poll answer body.
pub fn body(msgs: &[MsgRef], reset: bool, next: Position) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + msgs.iter().map(|m| m.data.len() + 48).sum::<usize>());
    out.extend_from_slice(b"{\"messages\":[");
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        wire::poll_message(m, &mut out);
    }
    out.extend_from_slice(b"],\"next\":\"");
    next.write(&mut out);
    out.push(b'"');
    if reset {
        out.extend_from_slice(b",\"reset\":true");
    }
    out.push(b'}');
    out
}

fn etag(p: Position) -> Vec<u8> {
    let mut v = Vec::with_capacity(26);
    v.push(b'"');
    p.write(&mut v);
    v.push(b'"');
    v
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
    let tag = etag(current);
    if msgs.is_empty() && !reset && inm.is_some_and(|v| matches_etag(v, &tag)) {
        a.send(304, &[("ETag", &tag), ("Cache-Control", b"no-cache")], b"");
        return;
    }
    a.send(
        200,
        &[
            ("Content-Type", b"application/json"),
            ("Cache-Control", b"no-cache"),
            ("ETag", &tag),
        ],
        &body(msgs, reset, next),
    );
}

fn fail(a: &mut Answer<'_>, f: Fail) -> Next {
    match f {
        Fail::TooManyTopics => a.error(503, "too many topics (--max-topics)"),
        Fail::Overloaded => a.send(503, &[("Retry-After", b"1")], b"overloaded\n"),
    }
    Next::KeepAlive
}

pub async fn handle(
    sh: &Rc<Shard>,
    req: &Req<'_>,
    a: &mut Answer<'_>,
    topic: String,
    fd: RawFd,
    stream: &TcpStream,
) -> Next {
    match cors(sh, req.buf, req.head) {
        Ok(c) => a.cors = c,
        Err(_) => {
            sh.metrics().inc(M::BadRequests);
            a.error(403, "origin not allowed");
            return Next::KeepAlive;
        }
    }
    let q = req.query();
    let since = since_of(route::query_param(q, "since").as_deref());
    let cfg = &sh.node.cfg;
    let (limit, wait) = match (number(q, "limit"), number(q, "wait")) {
        (Ok(l), Ok(w)) => (
            l.map_or(cfg.poll_limit, |l| (l as usize).clamp(1, cfg.poll_limit)),
            w.unwrap_or(0).min(cfg.longpoll_max_secs),
        ),
        _ => {
            sh.metrics().inc(M::BadRequests);
            a.error(400, "limit and wait must be whole numbers");
            return Next::KeepAlive;
        }
    };
    let inm = req.header("if-none-match");
    let topic: Arc<str> = Arc::from(topic);
    if wait == 0 || since == Since::Bad {
        return match sh.window(topic, since, limit).await {
            Ok(w) => {
                if w.reset {
                    sh.metrics().inc(M::Resets);
                }
                answer(a, &w.msgs, w.reset, w.current, inm);
                Next::KeepAlive
            }
            Err(f) => fail(a, f),
        };
    }
    // Long poll: subscribe, answer as soon as there is anything after `since`.
    let ok = sh
        .st
        .borrow_mut()
        .subs
        .outs
        .insert(Out::new(fd, Format::LongPoll));
    let guard = LongPollGuard {
        sh,
        out: ok,
        sub: None,
    };
    let sub = sh.subscribe(ok, topic, since, limit).await;
    let (sk, w) = match sub {
        Ok(x) => x,
        Err(f) => return fail(a, f),
    };
    let guard = LongPollGuard {
        sub: Some(sk),
        ..guard
    };
    if w.reset || !w.msgs.is_empty() {
        drop(guard);
        answer(a, &w.msgs, w.reset, w.current, None);
        return Next::KeepAlive;
    }
    sh.metrics().inc(M::LongPollWaiting);
    let deadline = Instant::now() + Duration::from_secs(wait);
    // The disconnect watch (a readiness poll, cancelled when a message comes) is armed only
    // once the poll has waited WATCH_PEER_AFTER: on a busy topic most polls are answered
    // sooner, and the arm + cancel was a tenth of the long-poll profile at 10k clients.
    let armed_at = Instant::now() + WATCH_PEER_AFTER;
    let mut watch_peer = Watch::Later;
    let woke = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = std::future::poll_fn(|cx| {
            let mut st = sh.st.borrow_mut();
            let out = &mut st.subs.outs[ok];
            if !out.polled.is_empty() || out.kill.is_some() {
                Poll::Ready(())
            } else {
                out.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let w = match watch_peer {
            Watch::Now => monoio::select! {
                _ = msg => Wake::Message,
                _ = monoio::time::sleep(left) => Wake::Timeout,
                r = stream.readable(false) => {
                    if r.is_err() || io::peer_closed(fd) { Wake::Gone } else { Wake::PeerData }
                }
            },
            Watch::Later => {
                let until_arm = armed_at.saturating_duration_since(Instant::now());
                if until_arm < left {
                    monoio::select! {
                        _ = msg => Wake::Message,
                        _ = monoio::time::sleep(until_arm) => Wake::Arm,
                    }
                } else {
                    monoio::select! {
                        _ = msg => Wake::Message,
                        _ = monoio::time::sleep(left) => Wake::Timeout,
                    }
                }
            }
            Watch::Never => monoio::select! {
                _ = msg => Wake::Message,
                _ = monoio::time::sleep(left) => Wake::Timeout,
            },
        };
        match w {
            Wake::Arm => watch_peer = Watch::Now,
            // A pipelined request behind the poll: stop watching, answer in order later.
            Wake::PeerData => watch_peer = Watch::Never,
            other => break other,
        }
    };
    sh.metrics().dec(M::LongPollWaiting);
    let mut msgs = std::mem::take(&mut sh.st.borrow_mut().subs.outs[ok].polled);
    drop(guard);
    match woke {
        Wake::Gone => Next::Done,
        _ if msgs.is_empty() => {
            let mut next = Vec::with_capacity(24);
            w.current.write(&mut next);
            let tag = etag(w.current);
            a.send(
                204,
                &[
                    ("X-Ringcast-Next", &next),
                    ("ETag", &tag),
                    ("Cache-Control", b"no-cache"),
                ],
                b"",
            );
            Next::KeepAlive
        }
        _ => {
            msgs.truncate(limit);
            answer(a, &msgs, false, w.current, None);
            Next::KeepAlive
        }
    }
}

/// How long a long poll waits before it watches for its client leaving.
const WATCH_PEER_AFTER: Duration = Duration::from_millis(50);

#[derive(Clone, Copy)]
enum Watch {
    Later,
    Now,
    Never,
}

enum Wake {
    Message,
    Timeout,
    /// Time to arm the disconnect watch.
    Arm,
    /// The client disconnected while waiting.
    Gone,
    PeerData,
}

/// Frees a long poll's subscription and connection state however the wait ends.
struct LongPollGuard<'a> {
    sh: &'a Shard,
    out: usize,
    sub: Option<usize>,
}

impl Drop for LongPollGuard<'_> {
    fn drop(&mut self) {
        if let Some(sk) = self.sub {
            self.sh.unsubscribe(sk);
        }
        self.sh.st.borrow_mut().subs.remove_out(self.out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        let tag = etag(Position::new(0xab, 3));
        assert_eq!(tag, b"\"ab:3\"");
        assert!(matches_etag(b"\"ab:3\"", &tag));
        assert!(matches_etag(b"W/\"ab:3\"", &tag));
        assert!(matches_etag(b"\"x\", \"ab:3\"", &tag));
        assert!(matches_etag(b"*", &tag));
        assert!(!matches_etag(b"\"ab:4\"", &tag));
    }

    #[test]
    fn since_values() {
        assert_eq!(since_of(None), Since::None);
        assert_eq!(since_of(Some(b"")), Since::None);
        assert_eq!(since_of(Some(b"zz")), Since::Bad);
        assert_eq!(since_of(Some(b"a:1")), Since::At(Position::new(10, 1)));
    }
}
