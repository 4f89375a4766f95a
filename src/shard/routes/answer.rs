//! What a route handler is given and gives back: the request (`Req`), where its answer goes
//! (`Answer`), what the connection does next (`Next`, with what a stream or a long poll needs
//! once the request is gone) and the CORS check.
//! Must not: route or serve a request — the connection loop (`conn.rs`) and the routes do, both
//! above this file.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::http1::{self, Head};
use crate::codec::position::Position;
use crate::fanout::Since;
use crate::shard::core::Shard;
use crate::shard::outbox::out::Out;
use crate::shard::outbox::wire::Format;

/// What the connection does after a request.
pub enum Next {
    KeepAlive,
    Close,
    /// The socket was handed to a stream that has finished with it.
    Done,
    /// Become an SSE stream: the head is in `wbuf`, the request is no longer needed.
    Sse(SsePlan),
    /// Become a WebSocket: the 101 is in `wbuf`.
    Ws(WsPlan),
    /// A long poll waits for news: the connection loop answers it when it comes (see `fill`).
    LongPoll(Waiting),
}

/// One request, as handlers see it.
pub struct Req<'a> {
    pub buf: &'a [u8],
    pub head: &'a Head,
    pub body: &'a [u8],
    pub peer: SocketAddr,
}

impl Req<'_> {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.header(self.buf, name)
    }
    pub fn query(&self) -> &[u8] {
        self.head.query(self.buf)
    }
}

/// Where handlers write their answer.
pub struct Answer<'a> {
    pub out: &'a mut Vec<u8>,
    pub keep_alive: bool,
    /// HTTP/1.0 request: a kept connection must say `Connection: keep-alive`.
    pub http10: bool,
    pub head_only: bool,
    pub date: [u8; 29],
    /// `Access-Control-Allow-Origin` value when the request was cross-origin and allowed.
    pub cors: Option<Vec<u8>>,
}

impl Answer<'_> {
    pub fn send(&mut self, status: u16, headers: &[(&str, &[u8])], body: &[u8]) {
        self.head(status, headers, body.len());
        if !self.head_only && !http1::bodyless(status) {
            self.out.extend_from_slice(body);
        }
    }

    /// `send` for a body that `body` writes straight into the output buffer, so it needs no
    /// buffer of its own: the body is written first, the head after it, and the two swap
    /// places (a memmove of a few hundred bytes instead of an allocation per answer).
    pub fn send_with(
        &mut self,
        status: u16,
        headers: &[(&str, &[u8])],
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.out.len();
        body(self.out);
        let body_len = self.out.len() - start;
        self.head(status, headers, body_len);
        let head_len = self.out.len() - start - body_len;
        self.out[start..].rotate_right(head_len);
        if self.head_only || http1::bodyless(status) {
            self.out.truncate(start + head_len);
        }
    }

    /// The head of an answer with a `body_len`-byte body: `headers`, plus what HTTP/1.0
    /// keep-alive and CORS need.
    fn head(&mut self, status: u16, headers: &[(&str, &[u8])], body_len: usize) {
        if self.http10 && self.keep_alive {
            let mut h: Vec<(&str, &[u8])> = headers.to_vec();
            h.push(("Connection", b"keep-alive"));
            self.http10 = false;
            self.head(status, &h, body_len);
            self.http10 = true;
            return;
        }
        if let Some(origin) = self.cors.take() {
            let mut h: Vec<(&str, &[u8])> = headers.to_vec();
            h.push(("Access-Control-Allow-Origin", &origin));
            h.push(("Vary", b"Origin"));
            if origin != b"*" {
                h.push(("Access-Control-Expose-Headers", b"ETag, X-Ringcast-Next"));
            }
            http1::write_response_head(self.out, status, &h, body_len, self.keep_alive, &self.date);
            self.cors = Some(origin);
        } else {
            http1::write_response_head(
                self.out,
                status,
                headers,
                body_len,
                self.keep_alive,
                &self.date,
            );
        }
    }

    /// Where the answer to a request pipelined behind this one goes (the same buffer), for a
    /// request known to be HTTP/1.1, keep-alive, not HEAD and without CORS (a publish that
    /// joined this one, see `pipelined_publish`).
    pub fn pipelined(&mut self) -> Answer<'_> {
        Answer {
            out: &mut *self.out,
            keep_alive: true,
            http10: false,
            head_only: false,
            date: self.date,
            cors: None,
        }
    }

    /// A plain-text error with a one-line reason.
    pub fn error(&mut self, status: u16, reason: &str) {
        self.error_with(status, reason, &[]);
    }

    /// The one writer of plain-text errors: `reason` and a newline as the body, `extra`
    /// headers after the `Content-Type`.
    pub fn error_with(&mut self, status: u16, reason: &str, extra: &[(&str, &[u8])]) {
        let mut h: Vec<(&str, &[u8])> = vec![("Content-Type", b"text/plain; charset=utf-8")];
        h.extend_from_slice(extra);
        self.send_with(status, &h, |out| {
            out.extend_from_slice(reason.as_bytes());
            out.push(b'\n');
        });
    }
}

/// What a stream needs once its request is gone.
pub struct SsePlan {
    pub(crate) topic: Arc<str>,
    pub(crate) since: Since,
    /// A multi-topic stream (`GET /sse?topic=..`): every topic and where it starts (`topic`
    /// and `since` are unused then). Boxed: a single-topic stream's task stays as small.
    pub(crate) multi: Option<Box<Starts>>,
    /// The token's `exp` (`authz::exp_of`): 0 when nothing expires.
    pub(crate) exp: u32,
}

/// What a WebSocket needs once its request is gone.
pub struct WsPlan {
    pub(crate) topic: Arc<str>,
    pub(crate) since: Since,
    pub(crate) v1: bool,
    /// The token's `exp` (`authz::exp_of`): 0 when nothing expires.
    pub(crate) exp: u32,
    /// The connection's grant, for its publishes and v1 subscribes (`None`: auth off or a
    /// public topic read without a token).
    pub(crate) publish: Option<Box<crate::auth::Grant>>,
}

/// A long poll waiting for news, held by its connection loop (`conn::Conn::fill`), which waits
/// for it together with the socket's readiness: the one armed readiness poll is both the
/// disconnect watch of the wait and the wait for the connection's next request, so a long poll
/// costs no extra poll and no cancellation. (Arming a separate watch and cancelling it when a
/// message came was 8% of the server's profile at 10k long polls: io_uring's cancel looks the
/// poll up among every armed one.) Dropping it — answered, or the client gone — frees the
/// subscription and the connection state.
pub struct Waiting {
    pub(crate) sh: Rc<Shard>,
    pub(crate) out: usize,
    pub(crate) sub: Option<usize>,
    /// Counted in `ringcast_longpoll_waiting`.
    pub(crate) counted: bool,
    /// When the wait ends with a 204.
    pub deadline: Instant,
    pub(crate) limit: usize,
    /// The topic's position when the wait began (the 204's `X-Ringcast-Next`).
    pub(crate) current: Position,
    /// The request let the connection be kept after the answer.
    pub keep_alive: bool,
    pub(crate) http10: bool,
    pub(crate) head_only: bool,
    pub(crate) cors: Option<Vec<u8>>,
    /// A multi-topic long poll (`GET /poll?topic=..`): its topics and subscriptions.
    pub(crate) multi: Option<Box<MultiWait>>,
}

impl Waiting {
    /// A long poll about to wait on fd `fd`: its `Out` in the shard (collecting messages), not
    /// yet subscribed or counted, answering as `a`'s request asked. Dropped before it answers
    /// (the client left), it frees that state.
    pub(crate) fn open(
        sh: &Rc<Shard>,
        fd: RawFd,
        limit: usize,
        a: &Answer<'_>,
        multi: Option<Box<MultiWait>>,
    ) -> Waiting {
        let out = sh
            .st
            .borrow_mut()
            .subs
            .outs
            .insert(Out::new(fd, Format::LongPoll));
        Waiting {
            sh: sh.clone(),
            out,
            sub: None,
            counted: false,
            deadline: Instant::now(),
            limit,
            current: Position::new(0, 0),
            keep_alive: a.keep_alive,
            http10: a.http10,
            head_only: a.head_only,
            cors: None,
            multi,
        }
    }
}

/// A browser request from an origin `--allow-origin` does not list (403).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginDenied;

/// Cross-origin check for browser routes (`--allow-origin`). `Ok(None)`: no CORS headers
/// (no Origin, or same origin); `Ok(Some(v))`: answer `Access-Control-Allow-Origin: v`.
pub fn cors(sh: &Shard, buf: &[u8], head: &Head) -> Result<Option<Vec<u8>>, OriginDenied> {
    let Some(origin) = head.header(buf, "origin") else {
        return Ok(None);
    };
    let allow = &sh.node.cfg.allow_origin;
    if allow.iter().any(|a| a == "*") {
        return Ok(Some(b"*".to_vec()));
    }
    if allow.iter().any(|a| a.as_bytes() == origin) {
        return Ok(Some(origin.to_vec()));
    }
    // Same origin: the Origin's authority is this request's Host.
    let host = head.header(buf, "host").unwrap_or(b"");
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"))
        .unwrap_or(b"");
    if !host.is_empty() && authority.eq_ignore_ascii_case(host) {
        return Ok(None);
    }
    Err(OriginDenied)
}

/// The topics of a multi-topic request, each with where it starts.
pub type Starts = Vec<(Arc<str>, Since)>;

/// A multi-topic long poll while it waits: its topics' positions and its subscriptions (the
/// `Waiting`'s `Out` collects their messages).
pub struct MultiWait {
    pub(crate) topics: Vec<(Arc<str>, Position)>,
    pub(crate) subs: Vec<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `send_with` (body first, then swapped behind the head) writes exactly what `send` does,
    /// for every combination of HTTP/1.0, CORS, HEAD and a bodyless status.
    #[test]
    fn send_with_matches_send() {
        let body = b"{\"messages\":[],\"next\":\"a:1\"}";
        for status in [200u16, 204, 304] {
            for http10 in [false, true] {
                for head_only in [false, true] {
                    for cors in [None, Some(b"*".to_vec()), Some(b"http://x".to_vec())] {
                        let answer = |out: &mut Vec<u8>| {
                            Answer {
                                out: &mut *out,
                                keep_alive: true,
                                http10,
                                head_only,
                                date: [b'D'; 29],
                                cors: cors.clone(),
                            }
                            .send(
                                status,
                                &[("ETag", b"\"a:1\"")],
                                body,
                            )
                        };
                        let answer_with = |out: &mut Vec<u8>| {
                            Answer {
                                out: &mut *out,
                                keep_alive: true,
                                http10,
                                head_only,
                                date: [b'D'; 29],
                                cors: cors.clone(),
                            }
                            .send_with(
                                status,
                                &[("ETag", b"\"a:1\"")],
                                |o| o.extend_from_slice(body),
                            )
                        };
                        // After an earlier pipelined answer, too.
                        let (mut a, mut b) = (b"earlier".to_vec(), b"earlier".to_vec());
                        answer(&mut a);
                        answer_with(&mut b);
                        assert_eq!(
                            String::from_utf8_lossy(&a),
                            String::from_utf8_lossy(&b),
                            "{status} http10={http10} head={head_only}"
                        );
                    }
                }
            }
        }
    }
}
