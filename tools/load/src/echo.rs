//! `echo`: WebSocket round trips. Each connection (topic PREFIX + i, so ringcast's raw mode
//! publishes what it sends back to it alone) sends one masked text frame carrying its sequence
//! number and send time, waits for that payload to come back, and repeats for `--seconds`.
//! Closed loop by design: one message in flight per connection, as in the peers' echo benches.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Notify, Semaphore};

use crate::addr::Target;
use crate::cli::EchoArgs;
use crate::link::{Down, Up, WorkerLink};
use crate::net::{self, mono_ns, Conn, Fail};
use crate::payload::{encode_payload, parse_payload};
use crate::run::{connect_phase, merge_errors, Env, Errors};
use crate::stats::{self, histogram_pairs, latency_us, merge_pairs, new_histogram};
use crate::ws::{self, Rng};
use crate::wsconn;

pub struct Cfg {
    pub a: EchoArgs,
    pub env: Env,
    pub target: Target,
}

impl Cfg {
    pub fn new(a: EchoArgs) -> Result<Cfg, String> {
        let env = Env::new(&a.common, "echo-")?;
        let target = Target::parse(&a.url)?;
        Ok(Cfg { a, env, target })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub connected: u64,
    pub failed: u64,
    pub disconnected: u64,
    pub round_trips: u64,
    pub latency: Vec<(u64, u64)>,
    pub errors: BTreeMap<String, u64>,
}

struct State {
    hist: RefCell<Histogram<u64>>,
    round_trips: Cell<u64>,
    connected: Cell<u64>,
    failed: Cell<u64>,
    disconnected: Cell<u64>,
    errors: Errors,
    changed: Notify,
}

pub async fn worker(cfg: Rc<Cfg>, mut link: WorkerLink) {
    let st = Rc::new(State {
        hist: RefCell::new(new_histogram()),
        round_trips: Cell::new(0),
        connected: Cell::new(0),
        failed: Cell::new(0),
        disconnected: Cell::new(0),
        errors: Errors::default(),
        changed: Notify::new(),
    });
    // The end time: 0 until the parent says go.
    let (end_tx, end_rx) = watch::channel(0u64);
    let sem = Rc::new(Semaphore::new(cfg.env.connect_concurrency));
    let mine: Vec<usize> = cfg.env.mine(cfg.a.connections).collect();
    let n = mine.len() as u64;
    let tasks: Vec<_> = mine
        .iter()
        .map(|&i| {
            let (cfg, st, sem, end) = (cfg.clone(), st.clone(), sem.clone(), end_rx.clone());
            tokio::task::spawn_local(conn(cfg, st, sem, i, end))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + cfg.env.connect_timeout;
    connect_phase(&st.connected, &st.failed, &st.changed, n, deadline, &link).await;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut finished = std::pin::pin!(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    loop {
        tokio::select! {
            _ = &mut finished => break,
            d = link.down.recv() => match d {
                Some(Down::Go { t0_ns }) => {
                    let _ = end_tx.send(t0_ns + (cfg.a.seconds * 1e9) as u64);
                }
                // Stop: end now (a connection still connecting gives up too).
                Some(Down::Stop) | None => { let _ = end_tx.send(1); }
                Some(Down::Published { .. }) => {}
            },
            _ = ticker.tick() => link.send(Up::Progress {
                connected: st.connected.get(),
                done: st.round_trips.get(),
            }),
        }
    }
    let r = WorkerReport {
        connected: st.connected.get(),
        failed: n - st.connected.get(),
        disconnected: st.disconnected.get(),
        round_trips: st.round_trips.get(),
        latency: histogram_pairs(&st.hist.borrow()),
        errors: st.errors.take(),
    };
    link.send(Up::Report {
        report: serde_json::to_value(&r).unwrap_or_default(),
    });
}

async fn conn(
    cfg: Rc<Cfg>,
    st: Rc<State>,
    sem: Rc<Semaphore>,
    i: usize,
    mut end: watch::Receiver<u64>,
) {
    let mut rng = Rng::new(mono_ns() ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let path = cfg.target.path(&format!("{}{i}", cfg.env.prefix));
    let opened = {
        let Ok(_permit) = sem.acquire().await else {
            return;
        };
        tokio::select! {
            r = wsconn::connect(&cfg.target, &path, cfg.env.src(i), &mut rng) => r,
            _ = end.wait_for(|&e| e == 1) => Err("stopped while connecting".into()),
        }
    };
    let mut c = match opened {
        Ok(c) => c,
        Err(e) => {
            st.errors.add(&e);
            st.failed.set(st.failed.get() + 1);
            st.changed.notify_one();
            return;
        }
    };
    st.connected.set(st.connected.get() + 1);
    st.changed.notify_one();
    let end_ns = match end.wait_for(|&e| e != 0).await {
        Ok(e) => *e,
        Err(_) => return,
    };
    let mut reader = wsconn::Reader::default();
    let mut out = Vec::with_capacity(cfg.a.size + 16);
    let mut payload = Vec::with_capacity(cfg.a.size + 16);
    let mut seq = 0u64;
    while mono_ns() < end_ns {
        let sent = mono_ns();
        payload.clear();
        encode_payload(seq, sent, i as u64, cfg.a.size, &mut payload);
        out.clear();
        ws::encode_client_frame(ws::OP_TEXT, &payload, rng.mask_key(), &mut out);
        let r = tokio::select! {
            r = round_trip(&mut c, &mut reader, &out, seq, i as u64, &mut rng) => r,
            _ = tokio::time::sleep_until(net::instant_at(end_ns + 5_000_000_000)) => Err("no echo".into()),
            _ = end.wait_for(|&e| e == 1) => return,
        };
        match r {
            Ok(()) => {
                stats::record(&mut st.hist.borrow_mut(), mono_ns() - sent);
                st.round_trips.set(st.round_trips.get() + 1);
            }
            Err(e) => {
                st.errors.add(&e);
                st.disconnected.set(st.disconnected.get() + 1);
                return;
            }
        }
        seq += 1;
    }
}

/// Sends `frame` and reads until the message with `seq` comes back.
async fn round_trip(
    c: &mut Conn,
    reader: &mut wsconn::Reader,
    frame: &[u8],
    seq: u64,
    tag: u64,
    rng: &mut Rng,
) -> Result<(), Fail> {
    c.write_all(frame).await?;
    let mut replies = Vec::new();
    loop {
        let mut got = false;
        let closed = reader.drain(c, &mut replies, rng, |m| {
            if let Some(f) = parse_payload(m) {
                got |= f.seq == seq && f.tag == tag;
            }
        })?;
        if let Some(wsconn::Closed::Code(code)) = closed {
            return Err(format!("ws close {code}"));
        }
        if !replies.is_empty() {
            c.write_all(&replies).await?;
            replies.clear();
        }
        if got {
            return Ok(());
        }
        match c.fill().await {
            Ok(0) => return Err("eof".into()),
            Ok(_) => {}
            Err(e) => return Err(net::io_fail("read", e)),
        }
    }
}

pub async fn run(cfg: Rc<Cfg>) -> Result<serde_json::Value, String> {
    let env = &cfg.env;
    let c2 = cfg.clone();
    let mut w = env.start_workers(move |link| {
        tokio::task::spawn_local(worker(c2, link));
    })?;
    let n = cfg.a.connections as u64;
    w.pump_until(
        None,
        |w| w.all_ready(),
        |w| env.progress(format_args!("connecting: {}/{n} up", w.totals().0)),
    )
    .await;
    let up: u64 = w.ready.iter().flatten().map(|r| r.0).sum();
    env.progress(format_args!("{up}/{n} up; echoing for {} s", cfg.a.seconds));
    let t0 = mono_ns() + 20_000_000;
    w.broadcast(Down::Go { t0_ns: t0 });
    let deadline = net::instant_at(t0 + ((cfg.a.seconds + 10.0) * 1e9) as u64);
    let done = w
        .pump_until(
            Some(deadline),
            |w| w.all_reported(),
            |w| env.progress(format_args!("round trips: {}", w.totals().1)),
        )
        .await;
    if !done {
        w.broadcast(Down::Stop);
        w.pump_until(None, |w| w.all_reported(), |_| {}).await;
    }
    w.reap().await;
    let mut hist = new_histogram();
    let mut total = WorkerReport::default();
    let mut worker_failures = Vec::new();
    for r in &w.reports {
        match r {
            Some(Ok(v)) => match serde_json::from_value::<WorkerReport>(v.clone()) {
                Ok(r) => {
                    total.connected += r.connected;
                    total.failed += r.failed;
                    total.disconnected += r.disconnected;
                    total.round_trips += r.round_trips;
                    merge_pairs(&mut hist, &r.latency);
                    merge_errors(&mut total.errors, r.errors);
                }
                Err(e) => worker_failures.push(format!("bad report: {e}")),
            },
            Some(Err(e)) => worker_failures.push(e.clone()),
            None => {}
        }
    }
    Ok(json!({
        "mode": "echo",
        "url": cfg.a.url,
        "connections": n,
        "size": cfg.a.size,
        "seconds": cfg.a.seconds,
        "processes": w.len(),
        "connected": up,
        "connect_failed": n - up,
        "disconnected": total.disconnected,
        "round_trips": total.round_trips,
        "round_trips_per_sec": ((total.round_trips as f64 / cfg.a.seconds) * 10.0).round() / 10.0,
        "latency_us": latency_us(&hist),
        "errors": total.errors,
        "worker_failures": worker_failures,
    }))
}
