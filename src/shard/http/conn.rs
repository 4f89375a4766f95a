//! One HTTP/1.1 connection: read heads and bodies, route, answer in order, or hand the socket
//! to a stream (SSE, WebSocket).
//!
//! Owns: the connection loop — keep-alive, pipelining (responses leave in request order, one
//! write per batch; publishes to a remote home pipelined behind one another go to it as one
//! command, `pipeline.rs`), HTTP/1.0, `Connection: close`, HEAD, every limit and timeout of a
//! request, the router, CORS preflight. Bodies are read by `body.rs`, the socket and its
//! buffers are `connio.rs`, the accept loop and its caps `accept.rs`.
//! Must not: parse bytes itself (the codecs do), or hold a `RefCell` borrow across an await.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;

use crate::codec::http1::{self, BodyKind, Head, Method, Status};
use crate::codec::route::{self, Route};
use crate::debug;
use crate::metrics::M;
use crate::shard::core::{Counted, Shard};
use crate::shard::http::body::{body_limit, read_body};
use crate::shard::http::pipeline::publish_pipeline;
use crate::shard::io;
use crate::shard::routes::answer::{cors, Answer, Next, OriginDenied, Req, Waiting};
use crate::shard::routes::connio::{limits, release_buf, Conn, ReadErr};
use crate::shard::routes::poll;
use crate::shard::routes::publish;
use crate::shard::routes::sse;
use crate::shard::routes::stats;
use crate::shard::routes::ws;
use crate::shard::routes::{multi, topics};

pub(crate) async fn serve(sh: Rc<Shard>, stream: TcpStream, peer: SocketAddr, counted: Counted) {
    let fd = stream.as_raw_fd();
    if io::set_nonblocking(fd).is_err() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let mut c = Conn {
        sh: sh.clone(),
        stream,
        fd,
        peer,
        rbuf: Vec::new(),
        wbuf: Vec::new(),
    };
    let mut head = Head::default();
    let lim = limits(&sh);
    let header_timeout = Duration::from_secs(sh.node.cfg.header_timeout_secs);
    let idle_timeout = Duration::from_secs(sh.node.cfg.idle_timeout_secs);
    let mut first = true;
    // A long poll waiting for news; `fill` answers it.
    let mut waiting: Option<Waiting> = None;
    loop {
        // ---- a head ----------------------------------------------------------------------
        let mut started: Option<Instant> = if first { Some(Instant::now()) } else { None };
        loop {
            if waiting.is_none() && !c.rbuf.is_empty() {
                started.get_or_insert_with(Instant::now);
                match http1::parse_head(&c.rbuf, &lim, &mut head) {
                    Ok(Status::Complete) => break,
                    Ok(Status::Partial) => {}
                    Err(e) => {
                        sh.metrics().inc(M::BadRequests);
                        debug!("{peer}: bad request head: {e}");
                        reject(&mut c, e.status(), e.reason()).await;
                        return;
                    }
                }
            }
            if c.rbuf.is_empty() && c.flush().await.is_err() {
                return;
            }
            if !c.wbuf.is_empty() && c.flush().await.is_err() {
                return;
            }
            let (deadline, idle) = match started {
                Some(t) => (t + header_timeout, false),
                None => (Instant::now() + idle_timeout, true),
            };
            let eager = first || !c.rbuf.is_empty();
            match c.fill(deadline, idle, eager, &mut waiting).await {
                Ok(_) => {}
                Err(ReadErr::Timeout) if started.is_some() => {
                    sh.metrics().inc(M::Timeouts);
                    debug!("{peer}: request head not complete within --header-timeout-secs");
                    reject(&mut c, 408, "request head not received in time").await;
                    return;
                }
                Err(ReadErr::Timeout) => {
                    sh.metrics().inc(M::Timeouts);
                    return;
                }
                Err(ReadErr::Gone) | Err(ReadErr::Draining) => return,
            }
        }
        first = false;
        sh.metrics().inc(M::Requests);
        // ---- its body and its answer -------------------------------------------------------
        match request(&mut c, &head).await {
            Next::KeepAlive if !sh.is_draining() => {}
            Next::KeepAlive | Next::Close => {
                let _ = c.flush().await;
                io::shutdown_write(c.fd);
                return;
            }
            Next::Done => return,
            Next::LongPoll(w) => waiting = Some(w),
            // A stream continues in a task of its own, sized for the stream alone: a task is
            // as large as its future's largest state, and the request states (long polls,
            // cross-shard publishes) would otherwise be paid by every idle stream.
            Next::Sse(mut plan) => {
                if c.begin_stream(&mut head).await.is_ok() {
                    match plan.multi.take() {
                        Some(starts) => {
                            monoio::spawn(multi::sse_stream(c, *starts, plan.exp, counted));
                        }
                        None => {
                            monoio::spawn(sse::stream(c, plan, counted));
                        }
                    }
                }
                return;
            }
            Next::Ws(plan) => {
                if c.begin_stream(&mut head).await.is_ok() {
                    monoio::spawn(ws::stream(c, plan, counted));
                }
                return;
            }
        }
    }
}

/// Answers an unreadable request and closes.
async fn reject(c: &mut Conn, status: u16, reason: &str) {
    let mut a = Answer {
        http10: false,
        out: &mut c.wbuf,
        keep_alive: false,
        head_only: false,
        date: c.sh.date.get(),
        cors: None,
    };
    a.error(status, reason);
    let _ = c.flush().await;
    io::shutdown_write(c.fd);
}

async fn request(c: &mut Conn, head: &Head) -> Next {
    let sh = c.sh.clone();
    let r = match route::route(head.path(&c.rbuf), sh.node.cfg.max_topic_bytes) {
        Ok(r) => r,
        Err(e) => {
            sh.metrics().inc(M::BadRequests);
            debug!("{}: {e}", c.peer);
            return answer_without_body(c, head, e.status(), e.reason(), &[]);
        }
    };
    let method = head.method;
    let head_only = method == Method::Head;
    if method == Method::Other {
        sh.metrics().inc(M::BadRequests);
        return answer_without_body(c, head, 501, "method not implemented", &[]);
    }
    // Method checks per route.
    let allow: &[u8] = match &r {
        Route::Healthz | Route::Metrics => b"GET, HEAD",
        Route::Stats | Route::Status => b"GET, HEAD",
        Route::Publish(_) | Route::PublishBatch => b"POST",
        Route::Poll(_) | Route::Sse(_) => b"GET, HEAD, OPTIONS",
        Route::Ws(_) => b"GET",
        // Issue 16: many topics on one stream or poll, and a topic's counts.
        Route::PollMulti | Route::SseMulti => b"GET, HEAD, OPTIONS",
        Route::TopicInfo(_) => b"GET, HEAD, OPTIONS",
        Route::NotFound => b"",
    };
    if matches!(r, Route::NotFound) {
        sh.metrics().inc(M::BadRequests);
        return answer_without_body(c, head, 404, "no such route", &[]);
    }
    let method_name: &[u8] = match method {
        Method::Get => b"GET",
        Method::Head => b"HEAD",
        Method::Post => b"POST",
        Method::Put => b"PUT",
        Method::Delete => b"DELETE",
        Method::Options => b"OPTIONS",
        Method::Patch => b"PATCH",
        Method::Other => b"",
    };
    // Browser publishers send a preflight (`publish` answers it); `Allow` still says POST.
    let publish = matches!(r, Route::Publish(_) | Route::PublishBatch);
    let allowed = allow
        .split(|&b| b == b',')
        .any(|m| m.trim_ascii() == method_name)
        || (publish && method == Method::Options);
    if !allowed {
        sh.metrics().inc(M::BadRequests);
        return answer_without_body(
            c,
            head,
            405,
            "method not allowed on this route",
            &[("Allow", allow)],
        );
    }
    if method == Method::Options {
        return preflight(c, head, publish);
    }
    // The body, for the routes that take one.
    let mut body = Vec::new();
    let consumed = match body_limit(&sh, &r) {
        Some(limit) => match read_body(c, head, limit, &mut body).await {
            Ok(n) => n,
            Err((status, reason)) => {
                sh.metrics().inc(M::BadRequests);
                debug!("{}: {reason}", c.peer);
                // The rest of the body is unread: close after answering.
                let mut a = Answer {
                    http10: head.minor_version == 0,
                    out: &mut c.wbuf,
                    keep_alive: false,
                    head_only,
                    date: sh.date.get(),
                    cors: None,
                };
                a.error(status, reason);
                return Next::Close;
            }
        },
        None => {
            if head.body != BodyKind::None && head.body != BodyKind::Length(0) {
                sh.metrics().inc(M::BadRequests);
                return answer_without_body(c, head, 413, "this route takes no request body", &[]);
            }
            head.head_len
        }
    };
    let keep_alive = head.keep_alive && !sh.is_draining();
    // Bytes of requests pipelined behind this one that were answered with it.
    let mut answered_behind = 0;
    // Streams take the socket once their head is written (after earlier pipelined answers).
    let is_sse = matches!(r, Route::Sse(_));
    let next = match r {
        Route::Poll(_) | Route::PollMulti => {
            // A long poll may wait: answers to earlier pipelined requests go first.
            if c.flush().await.is_err() {
                return Next::Done;
            }
            let mut a = Answer {
                http10: head.minor_version == 0,
                out: &mut c.wbuf,
                keep_alive,
                head_only,
                date: sh.date.get(),
                cors: None,
            };
            let req = Req {
                buf: &c.rbuf[..consumed],
                head,
                body: &[],
                peer: c.peer,
            };
            let prepared = match r {
                Route::Poll(topic) => poll::prepare(&sh, &req, &mut a, topic).map(Polled::One),
                _ => multi::prepare_poll(&sh, &req, &mut a).map(Polled::Many),
            };
            // The request is read: its bytes go, and the read buffer back to the pool, before
            // the poll may wait for another shard (a burst of re-polls waiting on the home
            // emptied the pool, and the 16 KiB buffers it then allocated and freed were most of
            // the malloc time in the long-poll profile).
            c.rbuf.drain(..consumed.min(c.rbuf.len()));
            release_buf(&sh, &mut c.rbuf);
            let next = match prepared {
                Ok(Polled::One(p)) => poll::run(&sh, p, &mut a, c.fd).await,
                Ok(Polled::Many(p)) => multi::run_poll(&sh, p, &mut a, c.fd).await,
                Err(next) => next,
            };
            if matches!(next, Next::LongPoll(_)) || keep_alive {
                return next;
            }
            return Next::Close;
        }
        Route::SseMulti => {
            let buf = std::mem::take(&mut c.rbuf);
            let req = Req {
                buf: &buf,
                head,
                body: &[],
                peer: c.peer,
            };
            let n = sse::prepare_multi(c, &req);
            c.rbuf = buf;
            n
        }
        Route::Sse(topic) | Route::Ws(topic) => {
            let prepare = if is_sse { sse::prepare } else { ws::prepare };
            let buf = std::mem::take(&mut c.rbuf);
            let req = Req {
                buf: &buf,
                head,
                body: &[],
                peer: c.peer,
            };
            let n = prepare(c, &req, topic);
            c.rbuf = buf;
            n
        }
        other => {
            let buf = std::mem::take(&mut c.rbuf);
            let req = Req {
                buf: &buf[..consumed],
                head,
                body: &body,
                peer: c.peer,
            };
            let mut a = Answer {
                http10: head.minor_version == 0,
                out: &mut c.wbuf,
                keep_alive,
                head_only,
                date: sh.date.get(),
                cors: None,
            };
            // A browser publisher reads the answer (its position) only with CORS headers.
            let origin = if publish {
                cors(&sh, &buf, head)
            } else {
                Ok(None)
            };
            a.cors = origin.clone().unwrap_or(None);
            let n = match other {
                Route::Publish(_) | Route::PublishBatch if origin.is_err() => {
                    sh.metrics().inc(M::BadRequests);
                    a.error(403, "origin not allowed");
                    Next::KeepAlive
                }
                Route::Healthz => {
                    a.send(200, &[("Content-Type", b"text/plain")], b"ok\n");
                    Next::KeepAlive
                }
                Route::Metrics => {
                    let mut s = String::with_capacity(8192);
                    sh.node.metrics.render(&mut s);
                    a.send(
                        200,
                        &[("Content-Type", b"text/plain; version=0.0.4")],
                        s.as_bytes(),
                    );
                    Next::KeepAlive
                }
                Route::Stats | Route::Status => {
                    stats::serve(&sh, &req, &mut a, matches!(other, Route::Status));
                    Next::KeepAlive
                }
                Route::Publish(topic) => {
                    let (next, used) =
                        publish_pipeline(&sh, &req, &mut a, topic, &buf[consumed..]).await;
                    answered_behind = used;
                    next
                }
                Route::PublishBatch => publish::batch(&sh, &req, &mut a).await,
                Route::TopicInfo(topic) => topics::get(&sh, &req, &mut a, topic).await,
                _ => unreachable!("polls and streams handled above"),
            };
            c.rbuf = buf;
            n
        }
    };
    if matches!(next, Next::Done | Next::Sse(_) | Next::Ws(_)) {
        return next;
    }
    let consumed = consumed + answered_behind;
    if c.rbuf.len() >= consumed {
        c.rbuf.drain(..consumed);
    }
    if !keep_alive {
        return Next::Close;
    }
    next
}

/// Answers a request whose body (if any) is not read: keep the connection only when there is
/// no body to skip.
fn answer_without_body(
    c: &mut Conn,
    head: &Head,
    status: u16,
    reason: &str,
    extra: &[(&str, &[u8])],
) -> Next {
    let no_body = matches!(head.body, BodyKind::None | BodyKind::Length(0));
    let keep_alive = head.keep_alive && no_body && !c.sh.is_draining();
    let mut a = Answer {
        http10: head.minor_version == 0,
        out: &mut c.wbuf,
        keep_alive,
        head_only: head.method == Method::Head,
        date: c.sh.date.get(),
        cors: None,
    };
    a.error_with(status, reason, extra);
    if !keep_alive {
        return Next::Close;
    }
    c.rbuf.drain(..head.head_len.min(c.rbuf.len()));
    Next::KeepAlive
}

/// CORS preflight for the browser routes: the read routes, and `POST /pub` for browser
/// publishers (who send `Authorization` and a JSON `Content-Type`).
fn preflight(c: &mut Conn, head: &Head, publish: bool) -> Next {
    let (methods, headers): (&[u8], &[u8]) = if publish {
        // Only the method the page will send: the preflight's own OPTIONS is never checked
        // against the list.
        (b"POST", b"Authorization, Content-Type")
    } else {
        (
            b"GET, HEAD, OPTIONS",
            b"Last-Event-ID, If-None-Match, Cache-Control, Authorization",
        )
    };
    let sh = c.sh.clone();
    let keep_alive = head.keep_alive && !sh.is_draining();
    let verdict = cors(&sh, &c.rbuf, head);
    let mut a = Answer {
        http10: head.minor_version == 0,
        out: &mut c.wbuf,
        keep_alive,
        head_only: false,
        date: sh.date.get(),
        cors: None,
    };
    match verdict {
        Ok(Some(origin)) => {
            a.send(
                204,
                &[
                    ("Access-Control-Allow-Origin", &origin),
                    ("Access-Control-Allow-Methods", methods),
                    ("Access-Control-Allow-Headers", headers),
                    ("Access-Control-Max-Age", b"600"),
                    ("Vary", b"Origin"),
                ],
                b"",
            );
        }
        Ok(None) => a.send(204, &[("Allow", methods)], b""),
        Err(OriginDenied) => {
            sh.metrics().inc(M::BadRequests);
            a.error(403, "origin not allowed");
        }
    }
    if head.body != BodyKind::None && head.body != BodyKind::Length(0) {
        return Next::Close;
    }
    c.rbuf.drain(..head.head_len.min(c.rbuf.len()));
    if keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    }
}

/// A poll read by its route: one topic (`/poll/{topic}`) or many (`/poll?topic=..`).
enum Polled {
    One(poll::PollReq),
    Many(multi::MultiPoll),
}
