//! Pipelined publishes: `POST /pub/{topic}` requests already complete in the read buffer behind
//! a publish, to the same home, go to it as one command (`publish_pipeline`).
//! Must not: wait for bytes to gather, or take a request the connection loop would answer
//! differently (`pipelined_publish` applies the same limits).

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;

use crate::codec::http1::{self, BodyKind, ChunkedDecoder, Head, Limits, Method, Status};
use crate::codec::route::{self, Route};
use crate::debug;
use crate::fanout::{home_of, NewMsg};
use crate::metrics::M;
use crate::shard::core::{Fail, Shard};
use crate::shard::routes::answer::{Answer, Next, Req};
use crate::shard::routes::connio::limits;
use crate::shard::routes::publish;

/// `POST /pub/{topic}`. When the topic's home is another shard, the publishes pipelined behind
/// this one that are already complete in `rest` (bytes after this request) and whose topics
/// have the same home go with it, as one command: the home publishes them in one inbox pass, so
/// a subscriber gets them in one write rather than one write per message (PERF.md, fanout at
/// 10,000 subscribers). Gathering stops at the first request that is not such a publish or
/// that `publish::message` refuses; it is left in the buffer for the connection loop, which
/// answers it after these, in order. Nothing waits for more bytes to gather. Returns what to do
/// next and how many bytes of `rest` were answered.
pub(crate) async fn publish_pipeline(
    sh: &Rc<Shard>,
    req: &Req<'_>,
    a: &mut Answer<'_>,
    topic: String,
    rest: &[u8],
) -> (Next, usize) {
    let shards = sh.node.bus.shards();
    let home = home_of(topic.as_bytes(), shards);
    if home == sh.id {
        // Publishes homed here batch by themselves: their deliveries wait for the shard's
        // writer (`Shard::publish_batched`).
        return (publish::single(sh, req, a, topic).await, 0);
    }
    let first = match publish::message(sh, req, &topic) {
        Ok(m) => m,
        Err(r) => return (publish::refuse(sh, a, r), 0),
    };
    let mut msgs: Vec<(Arc<str>, NewMsg)> = vec![(Arc::from(topic), first)];
    let mut used = 0;
    // A connection that closes after this request reads nothing behind it.
    if a.keep_alive {
        let lim = PipeLimits::of(sh);
        let mut head = Head::default();
        while msgs.len() < sh.node.cfg.max_pipelined_publishes {
            let buf = &rest[used..];
            let Some(p) = pipelined_publish(buf, &lim, &mut head) else {
                break;
            };
            if home_of(p.topic.as_bytes(), shards) != home {
                break;
            }
            let r = Req {
                buf,
                head: &head,
                body: &p.body,
                peer: req.peer,
            };
            // A browser's publish answers with its own CORS headers: it is served alone.
            if r.header("origin").is_some() {
                break;
            }
            let Ok(m) = publish::message(sh, &r, &p.topic) else {
                break;
            };
            msgs.push((Arc::from(p.topic), m));
            used += p.len;
            sh.metrics().inc(M::Requests);
        }
    }
    if msgs.len() > 1 {
        debug!(
            "shard {}: {} pipelined publishes to shard {home} in one command",
            sh.id,
            msgs.len()
        );
    }
    let mut results = publish::pipelined(sh, home, msgs).await.into_iter();
    // One result per request: the first is this request's.
    let next = publish::answer(a, results.next().unwrap_or(Err(Fail::Overloaded)));
    for r in results {
        publish::answer(&mut a.pipelined(), r);
    }
    (next, used)
}

/// The limits a request pipelined behind a publish must meet to join it (those the connection
/// loop would apply to it).
#[derive(Clone, Copy, Debug)]
pub struct PipeLimits {
    pub head: Limits,
    pub max_topic_bytes: usize,
    pub max_message_bytes: usize,
}

impl PipeLimits {
    fn of(sh: &Shard) -> PipeLimits {
        PipeLimits {
            head: limits(sh),
            max_topic_bytes: sh.node.cfg.max_topic_bytes,
            max_message_bytes: sh.node.cfg.max_message_bytes,
        }
    }
}

/// A `POST /pub/{topic}` complete at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Pipelined<'b> {
    /// Percent-decoded and valid.
    pub topic: String,
    /// The body: borrowed from the buffer, or decoded from chunks.
    pub body: Cow<'b, [u8]>,
    /// Bytes of the request (head and framed body).
    pub len: usize,
}

/// The request at the start of `buf` (head parsed into `head`), if it may be answered together
/// with the publish before it: a complete HTTP/1.1 `POST /pub/{topic}` — head and whole body
/// (`Content-Length` within `max_message_bytes`, or every chunk) — that keeps the connection
/// and expects no `100 Continue`. Anything else is `None`: another route or method, HTTP/1.0,
/// `Connection: close`, an incomplete head or body, a bad head, topic or chunk, a body over the
/// limit. The connection loop then answers it on its own, as it would have anyway.
pub fn pipelined_publish<'b>(
    buf: &'b [u8],
    lim: &PipeLimits,
    head: &mut Head,
) -> Option<Pipelined<'b>> {
    if buf.is_empty() || http1::parse_head(buf, &lim.head, head) != Ok(Status::Complete) {
        return None;
    }
    if head.method != Method::Post
        || head.minor_version != 1
        || !head.keep_alive
        || head.expect_continue
    {
        return None;
    }
    let Ok(Route::Publish(topic)) = route::route(head.path(buf), lim.max_topic_bytes) else {
        return None;
    };
    let start = head.head_len;
    let (body, len) = match head.body {
        BodyKind::None => (Cow::Borrowed(&[][..]), start),
        BodyKind::Length(n) => {
            if n > lim.max_message_bytes as u64 {
                return None;
            }
            let end = start.checked_add(usize::try_from(n).ok()?)?;
            (Cow::Borrowed(buf.get(start..end)?), end)
        }
        BodyKind::Chunked => {
            let mut dec = ChunkedDecoder::new(lim.max_message_bytes);
            let mut body = Vec::new();
            match dec.decode(buf.get(start..)?, &mut body) {
                Ok((used, true)) => (Cow::Owned(body), start + used),
                _ => return None,
            }
        }
    };
    Some(Pipelined { topic, body, len })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: PipeLimits = PipeLimits {
        head: Limits {
            max_request_line_bytes: 8 * 1024,
            max_head_bytes: 16 * 1024,
            max_headers: 64,
        },
        max_topic_bytes: 16,
        max_message_bytes: 8,
    };

    /// Which requests at the start of a buffer may join a publish before them, and how many
    /// bytes they are: (input, Some((topic, body, len)) or None).
    #[test]
    fn pipelined_publishes_that_may_join() {
        let p = |s: &str| s.as_bytes().to_vec();
        let one = p("POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc");
        let mut two = one.clone();
        two.extend_from_slice(b"POST /pub/b HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx");
        let chunked =
            p("POST /pub/c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
        /// (topic, body, bytes of the request)
        type Joins<'a> = Option<(&'a str, &'a [u8], usize)>;
        let cases: Vec<(Vec<u8>, Joins)> = vec![
            (one.clone(), Some(("a", b"abc", one.len()))),
            // Only the first request of the buffer.
            (two.clone(), Some(("a", b"abc", one.len()))),
            (two[one.len()..].to_vec(), Some(("b", b"x", two.len() - one.len()))),
            // Percent-decoded topic; the query is not part of it.
            (
                p("POST /pub/a%2Db?event=e HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
                Some(("a-b", b"", 64)),
            ),
            // No body framing: an empty message.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\n\r\n"), Some(("a", b"", 33))),
            (chunked.clone(), Some(("c", b"abc", chunked.len()))),
            // Incomplete: head, Content-Length body, chunked body.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\n"), None),
            (one[..one.len() - 1].to_vec(), None),
            (chunked[..chunked.len() - 2].to_vec(), None),
            (Vec::new(), None),
            // Over --max-message-bytes (8), either framing.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 9\r\n\r\n123456789"), None),
            (
                p("POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n"),
                None,
            ),
            // Bad chunk framing.
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"), None),
            // Other routes and methods.
            (p("POST /pub HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n[]"), None),
            (p("POST /sse/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), None),
            (p("GET /pub/a HTTP/1.1\r\nHost: t\r\n\r\n"), None),
            (p("HEAD /pub/a HTTP/1.1\r\nHost: t\r\n\r\n"), None),
            (p("PUT /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), None),
            // Bad or too long topic (max 16 bytes).
            (p("POST /pub/a%zz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"), None),
            (
                p("POST /pub/aaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"),
                None,
            ),
            // The connection ends with it, HTTP/1.0 (even kept alive), or it expects 100.
            (
                p("POST /pub/a HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
                None,
            ),
            (
                p("POST /pub/a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
                None,
            ),
            (
                p("POST /pub/a HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"),
                None,
            ),
            // A bad head.
            (p("POST /pub/a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), None),
            (p("POST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n"), None),
        ];
        let mut head = Head::default();
        for (input, want) in cases {
            let got = pipelined_publish(&input, &LIM, &mut head);
            let got = got.as_ref().map(|g| (g.topic.as_str(), &g.body[..], g.len));
            assert_eq!(got, want, "{}", String::from_utf8_lossy(&input));
        }
    }
}
