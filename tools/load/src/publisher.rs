//! The fanout publisher: P keep-alive connections, topic t always on connection t mod P, so a
//! topic's messages reach the server in order; each message goes out at its intended time.
//!
//! Without `--resume` a failed publish is counted and not sent again (the plain connection
//! retries once on a fresh connection, as a client of a keep-alive server does). With
//! `--resume` ([`pub_conn_resume`]) every message ends in a [`Fate`]: a publish refused before
//! it was sent is sent again, in topic order, until the run's time is up; one whose outcome is
//! unknown is never sent again and is *uncertain*.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::addr::Target;
use crate::fanout::Cfg;
use crate::http;
use crate::net::{self, mono_ns, Conn, Fail};
use crate::payload::encode_payload;
use crate::resume::{classify_publish, Backoff, PubAnswer};
use crate::run::Errors;
use crate::stats::{self, new_histogram};
use crate::track::Fate;

/// How long a publish's answer may take before its outcome counts as unknown (`--resume`):
/// well above a node's own `--publish-timeout-ms` (2 s by default), after which it answers.
const PUBLISH_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connect may take (`--resume`) before the next template is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the publisher did.
pub struct PubReport {
    pub published: u64,
    pub errors: BTreeMap<String, u64>,
    pub latency: Histogram<u64>,
    /// How late each publish left the load tool: the write's start − its intended time. The
    /// delivery latency is measured from the intended time, so this is the load tool's own
    /// share of it (a late timer wake-up, a busy core), not the server's.
    pub send_lag: Histogram<u64>,
    pub end_ns: u64,
    /// `--resume`: publishes sent again after a refusal, and those whose outcome is unknown.
    pub retries: u64,
    pub uncertain: u64,
    /// `--resume`: what became of each message, per topic, by sequence number.
    pub fates: Vec<Vec<Fate>>,
}

struct Job {
    topic: usize,
    seq: u64,
    due_ns: u64,
}

/// Publishes every message on its schedule from `t0`; `published` counts answered publishes.
pub async fn publish(cfg: Rc<Cfg>, t0: u64, published: Rc<Cell<u64>>) -> PubReport {
    let p = cfg.a.pub_connections.clamp(1, cfg.a.topics);
    let errors = Rc::new(Errors::default());
    let hist = Rc::new(RefCell::new(new_histogram()));
    let lag = Rc::new(RefCell::new(new_histogram()));
    let planned_end = t0 + (cfg.messages as f64 * 1e9 / cfg.a.rate) as u64;
    let resume = Rc::new(Resume {
        fates: RefCell::new(
            (0..cfg.a.topics)
                .map(|t| vec![Fate::Failed; cfg.expected_for_topic(t) as usize])
                .collect(),
        ),
        retries: Cell::new(0),
        uncertain: Cell::new(0),
        give_up_ns: planned_end + (cfg.a.timeout * 1e9) as u64,
    });
    let mut senders = Vec::with_capacity(p);
    let mut tasks = Vec::with_capacity(p);
    for i in 0..p {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        senders.push(tx);
        let (cfg, errors, hist, lag, published) = (
            cfg.clone(),
            errors.clone(),
            hist.clone(),
            lag.clone(),
            published.clone(),
        );
        let t = cfg.pubs[i % cfg.pubs.len()].clone();
        tasks.push(if cfg.a.resume {
            let shared = Shared {
                errors,
                hist,
                lag,
                published,
                resume: resume.clone(),
            };
            tokio::task::spawn_local(pub_conn_resume(cfg, i, rx, shared))
        } else if cfg.a.pub_pipeline > 1 {
            tokio::task::spawn_local(pub_conn_pipelined(cfg, t, rx, errors, hist, lag, published))
        } else {
            tokio::task::spawn_local(pub_conn(cfg, t, rx, errors, hist, lag, published))
        });
    }
    let period = 1e9 / cfg.a.rate;
    let tt = cfg.a.topics as u64;
    let mut i = 0u64;
    while i < cfg.messages {
        let now = mono_ns();
        // Everything due by now goes out; then sleep until the next one is due.
        loop {
            let due = t0 + (i as f64 * period) as u64;
            if i >= cfg.messages || due > now {
                break;
            }
            let topic = (i % tt) as usize;
            let _ = senders[topic % p].send(Job {
                topic,
                seq: i / tt,
                due_ns: due,
            });
            i += 1;
        }
        if i < cfg.messages {
            let due = t0 + (i as f64 * period) as u64;
            let wake = due.saturating_sub(cfg.a.spin_us * 1000);
            if wake > mono_ns() {
                tokio::time::sleep_until(net::instant_at(wake)).await;
            }
            while cfg.a.spin_us > 0 && mono_ns() < due {
                tokio::task::yield_now().await;
            }
        }
    }
    drop(senders);
    for t in tasks {
        let _ = t.await;
    }
    let latency = hist.borrow().clone();
    let send_lag = lag.borrow().clone();
    PubReport {
        published: published.get(),
        errors: errors.take(),
        latency,
        send_lag,
        end_ns: mono_ns(),
        retries: resume.retries.get(),
        uncertain: resume.uncertain.get(),
        fates: resume.fates.take(),
    }
}

async fn pub_conn(
    cfg: Rc<Cfg>,
    t: Target,
    mut rx: mpsc::UnboundedReceiver<Job>,
    errors: Rc<Errors>,
    hist: Rc<RefCell<Histogram<u64>>>,
    lag: Rc<RefCell<Histogram<u64>>>,
    published: Rc<Cell<u64>>,
) {
    let t = &t;
    let mut conn: Option<Conn> = None;
    let mut body = Vec::with_capacity(cfg.a.size + 64);
    let mut req = Vec::with_capacity(cfg.a.size + 256);
    while let Some(job) = rx.recv().await {
        body.clear();
        stats::record(&mut lag.borrow_mut(), mono_ns().saturating_sub(job.due_ns));
        encode_payload(job.seq, job.due_ns, job.topic as u64, cfg.a.size, &mut body);
        req.clear();
        let path = t.path(&cfg.topic(job.topic));
        http::encode_request("POST", &t.host, &path, &[], Some(&body), &mut req);
        // One retry on a fresh connection: a keep-alive connection may have been closed.
        let mut ok = false;
        for _attempt in 0..2 {
            let mut c = match conn.take() {
                Some(c) => c,
                None => match net::connect(t.addr, None).await {
                    Ok(s) => Conn::new(s),
                    Err(e) => {
                        errors.add(&net::io_fail("publish connect", e));
                        continue;
                    }
                },
            };
            let r = async {
                c.write_all(&req).await?;
                let h = c.read_head().await?;
                c.read_body(&h).await?;
                Ok::<_, Fail>(h)
            }
            .await;
            match r {
                Ok(h) => {
                    if (200..300).contains(&h.status) {
                        ok = true;
                    } else {
                        errors.add(&format!("publish status {}", h.status));
                    }
                    if !h.close {
                        conn = Some(c);
                    }
                    break;
                }
                Err(e) => errors.add(&format!("publish: {e}")),
            }
        }
        if ok {
            published.set(published.get() + 1);
            stats::record(&mut hist.borrow_mut(), mono_ns().saturating_sub(job.due_ns));
        }
    }
}

/// A publisher connection with up to `--pub-pipeline` requests in flight: requests go out as
/// they are due (several in one write when several are due), answers come back in order. A
/// failed connection fails the publishes in flight on it (no retry: they may have been
/// published) and the next ones use a new connection.
async fn pub_conn_pipelined(
    cfg: Rc<Cfg>,
    t: Target,
    mut rx: mpsc::UnboundedReceiver<Job>,
    errors: Rc<Errors>,
    hist: Rc<RefCell<Histogram<u64>>>,
    lag: Rc<RefCell<Histogram<u64>>>,
    published: Rc<Cell<u64>>,
) {
    let t = &t;
    let depth = cfg.a.pub_pipeline;
    let mut conn: Option<Conn> = None;
    let mut inflight: std::collections::VecDeque<u64> = Default::default();
    let mut body = Vec::with_capacity(cfg.a.size + 64);
    let mut req = Vec::with_capacity((cfg.a.size + 256) * depth);
    let mut open = true;
    loop {
        // Fill the pipe with what is due; wait for a job only when nothing is in flight.
        let mut unsent = 0;
        while open && inflight.len() < depth {
            let job = if inflight.is_empty() {
                match rx.recv().await {
                    Some(j) => j,
                    None => {
                        open = false;
                        break;
                    }
                }
            } else {
                match rx.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            body.clear();
            stats::record(&mut lag.borrow_mut(), mono_ns().saturating_sub(job.due_ns));
            encode_payload(job.seq, job.due_ns, job.topic as u64, cfg.a.size, &mut body);
            let path = t.path(&cfg.topic(job.topic));
            http::encode_request("POST", &t.host, &path, &[], Some(&body), &mut req);
            inflight.push_back(job.due_ns);
            unsent += 1;
        }
        if inflight.is_empty() {
            return;
        }
        let mut c = match conn.take() {
            Some(c) => c,
            None => match net::connect(t.addr, None).await {
                Ok(s) => Conn::new(s),
                Err(e) => {
                    // Only the requests not yet sent can be in `req`: the pipe was empty.
                    let why = net::io_fail("publish connect", e);
                    for _ in 0..inflight.len() {
                        errors.add(&why);
                    }
                    inflight.clear();
                    req.clear();
                    continue;
                }
            },
        };
        let r = async {
            if unsent > 0 {
                c.write_all(&req).await?;
            }
            let h = c.read_head().await?;
            c.read_body(&h).await?;
            Ok::<_, Fail>(h)
        }
        .await;
        req.clear();
        let due = inflight.pop_front().unwrap_or_default();
        match r {
            Ok(h) => {
                if (200..300).contains(&h.status) {
                    published.set(published.get() + 1);
                    stats::record(&mut hist.borrow_mut(), mono_ns().saturating_sub(due));
                } else {
                    errors.add(&format!("publish status {}", h.status));
                }
                if h.close {
                    for _ in 0..inflight.len() {
                        errors.add("publish: connection closed with requests in flight");
                    }
                    inflight.clear();
                } else {
                    conn = Some(c);
                }
            }
            Err(e) => {
                errors.add(&format!("publish: {e}"));
                for _ in 0..inflight.len() {
                    errors.add(&format!("publish: {e}"));
                }
                inflight.clear();
            }
        }
    }
}

/// What every `--resume` publisher connection shares.
struct Resume {
    fates: RefCell<Vec<Vec<Fate>>>,
    retries: Cell<u64>,
    uncertain: Cell<u64>,
    /// After this (CLOCK_MONOTONIC) a refused publish is given up: the run's own bound.
    give_up_ns: u64,
}

struct Shared {
    errors: Rc<Errors>,
    hist: Rc<RefCell<Histogram<u64>>>,
    lag: Rc<RefCell<Histogram<u64>>>,
    published: Rc<Cell<u64>>,
    resume: Rc<Resume>,
}

/// One publish attempt's outcome, before the retry rules.
enum Attempt {
    /// No connection (refused, timed out): nothing was sent.
    NoConnection(Fail),
    /// The request could not be written: nothing the server could act on was sent.
    NotSent(Fail),
    /// Written, then no answer (connection lost, timeout): the outcome is unknown.
    Lost(Fail),
    Answered(PubAnswer, u16),
}

/// A `--resume` publisher connection (index `p`, starting on template p mod n): one publish
/// at a time, each until it has a [`Fate`]. Refused before it was sent — no connection, a
/// write that failed, a 503 that is not "not confirmed" — it is sent again after the backoff
/// (or `Retry-After`), on the next template when the connection failed, before any later
/// message of the connection (so in topic order). Sent with no answer, or answered 503 "not
/// confirmed": uncertain, never sent again.
async fn pub_conn_resume(cfg: Rc<Cfg>, p: usize, mut rx: mpsc::UnboundedReceiver<Job>, sh: Shared) {
    let n = cfg.pubs.len();
    let mut tpl = p % n;
    let mut conn: Option<Conn> = None;
    let mut body = Vec::with_capacity(cfg.a.size + 64);
    let mut req = Vec::with_capacity(cfg.a.size + 256);
    let r = &sh.resume;
    while let Some(job) = rx.recv().await {
        body.clear();
        stats::record(
            &mut sh.lag.borrow_mut(),
            mono_ns().saturating_sub(job.due_ns),
        );
        encode_payload(job.seq, job.due_ns, job.topic as u64, cfg.a.size, &mut body);
        let mut backoff = Backoff::default();
        let fate = loop {
            let t = &cfg.pubs[tpl];
            req.clear();
            let path = t.path(&cfg.topic(job.topic));
            http::encode_request("POST", &t.host, &path, &[], Some(&body), &mut req);
            let (attempt, c) = attempt(t, conn.take(), &req).await;
            conn = c;
            let wait = match attempt {
                Attempt::Answered(PubAnswer::Confirmed(pos), _) => break Fate::Confirmed(pos),
                Attempt::Answered(PubAnswer::Uncertain, status) => {
                    sh.errors
                        .add(&format!("publish uncertain: status {status}"));
                    break Fate::Uncertain;
                }
                Attempt::Lost(e) => {
                    sh.errors.add(&format!("publish uncertain: {e}"));
                    break Fate::Uncertain;
                }
                Attempt::Answered(PubAnswer::Refused, status) => {
                    sh.errors.add(&format!("publish status {status}"));
                    break Fate::Failed;
                }
                Attempt::Answered(PubAnswer::Retry(after), status) => {
                    sh.errors.add(&format!("publish retried: status {status}"));
                    after.unwrap_or_else(|| backoff.next_delay())
                }
                Attempt::NoConnection(e) | Attempt::NotSent(e) => {
                    sh.errors.add(&format!("publish retried: {e}"));
                    tpl = (tpl + 1) % n;
                    backoff.next_delay()
                }
            };
            if mono_ns() + wait.as_nanos() as u64 > r.give_up_ns {
                sh.errors.add("publish given up: the run's time is over");
                break Fate::Failed;
            }
            r.retries.set(r.retries.get() + 1);
            tokio::time::sleep(wait).await;
        };
        match &fate {
            Fate::Confirmed(_) => {
                sh.published.set(sh.published.get() + 1);
                stats::record(
                    &mut sh.hist.borrow_mut(),
                    mono_ns().saturating_sub(job.due_ns),
                );
            }
            Fate::Uncertain => r.uncertain.set(r.uncertain.get() + 1),
            Fate::Failed => {}
        }
        if let Some(f) = r.fates.borrow_mut()[job.topic].get_mut(job.seq as usize) {
            *f = fate;
        }
    }
}

/// Sends one publish on `conn` (or a new connection to `t`) and reads its answer; gives the
/// connection back when it may be used again.
async fn attempt(t: &Target, conn: Option<Conn>, req: &[u8]) -> (Attempt, Option<Conn>) {
    let mut c = match conn {
        Some(c) => c,
        None => match tokio::time::timeout(CONNECT_TIMEOUT, net::connect(t.addr, None)).await {
            Ok(Ok(s)) => Conn::new(s),
            Ok(Err(e)) => return (Attempt::NoConnection(net::io_fail("connect", e)), None),
            Err(_) => return (Attempt::NoConnection("connect timed out".into()), None),
        },
    };
    if let Err(e) = c.write_all(req).await {
        return (Attempt::NotSent(e), None);
    }
    let answer = async {
        let h = c.read_head().await?;
        let body = c.read_body(&h).await?;
        Ok::<_, Fail>((h, body))
    };
    match tokio::time::timeout(PUBLISH_ANSWER_TIMEOUT, answer).await {
        Err(_) => (Attempt::Lost("no answer in time".into()), None),
        Ok(Err(e)) => (Attempt::Lost(e), None),
        Ok(Ok((h, body))) => {
            let a = classify_publish(h.status, h.retry_after.as_deref(), &body);
            (Attempt::Answered(a, h.status), (!h.close).then_some(c))
        }
    }
}
