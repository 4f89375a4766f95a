//! `hold`: N idle connections; what they cost the server (RSS, given its PIDs) and the kernel
//! (socket buffer pages from /proc/net/sockstat, slab from /proc/meminfo), reported separately.
//!
//! Measured: before any connection, after all are up (plus `--settle-ms`), and at the end of the
//! hold. Kernel figures are machine-wide and include the client's end of every connection (both
//! ends live on this machine); the client's sockets are idle with empty queues, so they add
//! little to sockstat's pages but a full socket each to the slab figure.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{watch, Notify, Semaphore};

use crate::addr::Target;
use crate::cli::{HoldArgs, Transport};
use crate::link::{Down, Up, WorkerLink};
use crate::net::{self, mono_ns, Conn, Fail};
use crate::run::{connect_phase, merge_errors, Env, Errors};
use crate::stats::{self, Rollup, Sockstat};
use crate::ws::Rng;
use crate::wsconn;

pub struct Cfg {
    pub a: HoldArgs,
    pub env: Env,
    pub target: Target,
    pub topics: usize,
}

impl Cfg {
    pub fn new(a: HoldArgs) -> Result<Cfg, String> {
        let env = Env::new(&a.common, "hold-")?;
        if a.transport == Transport::Longpoll {
            return Err("hold: --transport sse or ws".into());
        }
        let target = Target::parse(a.url.as_deref().unwrap_or(a.transport.default_route()))?;
        let topics = a.topics.unwrap_or(a.connections).max(1);
        Ok(Cfg {
            a,
            env,
            target,
            topics,
        })
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub connected: u64,
    pub failed: u64,
    pub disconnected: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
}

struct State {
    connected: Cell<u64>,
    failed: Cell<u64>,
    disconnected: Cell<u64>,
    errors: Errors,
    changed: Notify,
}

pub async fn worker(cfg: Rc<Cfg>, mut link: WorkerLink) {
    let st = Rc::new(State {
        connected: Cell::new(0),
        failed: Cell::new(0),
        disconnected: Cell::new(0),
        errors: Errors::default(),
        changed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let sem = Rc::new(Semaphore::new(cfg.env.connect_concurrency));
    let mine: Vec<usize> = cfg.env.mine(cfg.a.connections).collect();
    let n = mine.len() as u64;
    let tasks: Vec<_> = mine
        .iter()
        .map(|&i| {
            let (cfg, st, sem, stop) = (cfg.clone(), st.clone(), sem.clone(), stop_rx.clone());
            tokio::task::spawn_local(idle(cfg, st, sem, i, stop))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + cfg.env.connect_timeout;
    connect_phase(&st.connected, &st.failed, &st.changed, n, deadline, &link).await;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            d = link.down.recv() => match d {
                Some(Down::Go { .. } | Down::Published { .. }) => {}
                Some(Down::Stop) | None => break,
            },
            _ = ticker.tick() => link.send(Up::Progress {
                connected: st.connected.get() - st.disconnected.get(),
                done: st.disconnected.get(),
            }),
        }
    }
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let r = WorkerReport {
        connected: st.connected.get(),
        failed: n - st.connected.get(),
        disconnected: st.disconnected.get(),
        errors: st.errors.take(),
    };
    link.send(Up::Report {
        report: serde_json::to_value(&r).unwrap_or_default(),
    });
}

async fn idle(
    cfg: Rc<Cfg>,
    st: Rc<State>,
    sem: Rc<Semaphore>,
    i: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng::new(mono_ns() ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let path = cfg
        .target
        .path(&format!("{}{}", cfg.env.prefix, i % cfg.topics));
    let src = cfg.env.src(i);
    let opened = {
        let Ok(_permit) = sem.acquire().await else {
            return;
        };
        tokio::select! {
            r = open(&cfg, &path, src, &mut rng) => r,
            _ = stop.wait_for(|s| *s) => Err("stopped while connecting".into()),
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
    let ws = cfg.a.transport == Transport::Ws;
    let mut reader = wsconn::Reader::default();
    let mut replies = Vec::new();
    let why: Fail = loop {
        if ws {
            match reader.drain(&mut c, &mut replies, &mut rng, |_| {}) {
                Ok(None) => {}
                Ok(Some(wsconn::Closed::Code(code))) => break format!("ws close {code}"),
                Err(e) => break e,
            }
            if !replies.is_empty() {
                if let Err(e) = c.write_all(&replies).await {
                    break e;
                }
                replies.clear();
            }
        } else {
            c.buf.clear();
        }
        tokio::select! {
            r = c.fill() => match r {
                Ok(0) => break "eof".into(),
                Ok(_) => {}
                Err(e) => break net::io_fail("read", e),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    };
    st.errors.add(&why);
    st.disconnected.set(st.disconnected.get() + 1);
}

async fn open(
    cfg: &Cfg,
    path: &str,
    src: Option<std::net::Ipv4Addr>,
    rng: &mut Rng,
) -> Result<Conn, Fail> {
    let t = &cfg.target;
    if cfg.a.transport == Transport::Ws {
        return wsconn::connect(t, path, src, rng).await;
    }
    let (mut c, _) = net::open_sse(t, path, src).await?;
    c.buf = Vec::new();
    Ok(c)
}

/// One look at the server and the kernel.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Snapshot {
    /// Sum of VmRSS over the server PIDs, bytes.
    rss: u64,
    rollup: Rollup,
    sockstat: Sockstat,
    slab: u64,
    slab_unreclaimable: u64,
}

fn snapshot(pids: &[u32]) -> Result<Snapshot, String> {
    let read = |p: String| std::fs::read_to_string(&p).map_err(|e| format!("{p}: {e}"));
    let mut s = Snapshot::default();
    for pid in pids {
        s.rss +=
            stats::parse_status_rss(&read(format!("/proc/{pid}/status"))?).ok_or("no VmRSS")?;
        if let Some(r) = read(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| stats::parse_smaps_rollup(&t))
        {
            s.rollup.rss += r.rss;
            s.rollup.pss += r.pss;
            s.rollup.anonymous += r.anonymous;
        }
    }
    s.sockstat = stats::parse_sockstat(&read("/proc/net/sockstat".into())?).ok_or("no TCP line")?;
    if let Some((a, b)) = read("/proc/meminfo".into())
        .ok()
        .and_then(|t| stats::parse_meminfo_slab(&t))
    {
        s.slab = a;
        s.slab_unreclaimable = b;
    }
    Ok(s)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

pub async fn run(cfg: Rc<Cfg>) -> Result<serde_json::Value, String> {
    let env = &cfg.env;
    let pids = &cfg.a.server_pid;
    let before = snapshot(pids)?;
    let c2 = cfg.clone();
    let mut w = env.start_workers(move |link| {
        tokio::task::spawn_local(worker(c2, link));
    })?;
    let n = cfg.a.connections as u64;
    let t_start = mono_ns();
    w.pump_until(
        None,
        |w| w.all_ready(),
        |w| env.progress(format_args!("connecting: {}/{n} up", w.totals().0)),
    )
    .await;
    let connect_secs = (mono_ns() - t_start) as f64 / 1e9;
    let up: u64 = w.ready.iter().flatten().map(|r| r.0).sum();
    env.progress(format_args!("{up}/{n} up in {connect_secs:.1}s; settling"));
    tokio::time::sleep(Duration::from_millis(cfg.a.settle_ms)).await;
    let after = snapshot(pids)?;
    env.progress(format_args!("holding {} s", cfg.a.seconds));
    let until = tokio::time::Instant::now() + Duration::from_secs_f64(cfg.a.seconds);
    w.pump_until(
        Some(until),
        |_| false,
        |w| {
            let (c, d) = w.totals();
            env.progress(format_args!("holding: {c} up, {d} disconnected"))
        },
    )
    .await;
    let end = snapshot(pids)?;
    w.broadcast(Down::Stop);
    w.pump_until(None, |w| w.all_reported(), |_| {}).await;
    w.reap().await;
    let mut total = WorkerReport::default();
    let mut worker_failures = Vec::new();
    for r in &w.reports {
        match r {
            Some(Ok(v)) => match serde_json::from_value::<WorkerReport>(v.clone()) {
                Ok(r) => {
                    total.connected += r.connected;
                    total.failed += r.failed;
                    total.disconnected += r.disconnected;
                    merge_errors(&mut total.errors, r.errors);
                }
                Err(e) => worker_failures.push(format!("bad report: {e}")),
            },
            Some(Err(e)) => worker_failures.push(e.clone()),
            None => {}
        }
    }
    let per = |a: u64, b: u64| {
        if up == 0 {
            0.0
        } else {
            ((b as f64 - a as f64) / up as f64).round()
        }
    };
    let page = page_size();
    Ok(json!({
        "mode": "hold",
        "transport": cfg.a.transport,
        "url": cfg.a.url.as_deref().unwrap_or(cfg.a.transport.default_route()),
        "connections": n,
        "topics": cfg.topics,
        "processes": w.len(),
        "connected": up,
        "connect_failed": n - up,
        "connect_seconds": (connect_secs * 100.0).round() / 100.0,
        "hold_seconds": cfg.a.seconds,
        "disconnected_during_hold": total.disconnected,
        "server_pids": pids,
        "server_rss_before_bytes": before.rss,
        "server_rss_after_bytes": after.rss,
        "server_rss_end_bytes": end.rss,
        "server_rss_bytes_per_conn": per(before.rss, after.rss),
        "server_rss_bytes_per_conn_end": per(before.rss, end.rss),
        "server_anon_bytes_per_conn": per(before.rollup.anonymous, after.rollup.anonymous),
        "server_pss_bytes_per_conn": per(before.rollup.pss, after.rollup.pss),
        "page_size": page,
        "tcp_mem_pages_before": before.sockstat.mem_pages,
        "tcp_mem_pages_after": after.sockstat.mem_pages,
        "tcp_mem_pages_end": end.sockstat.mem_pages,
        "kernel_tcp_mem_bytes_per_conn": per(before.sockstat.mem_pages * page, after.sockstat.mem_pages * page),
        "tcp_sockets_inuse_before": before.sockstat.inuse,
        "tcp_sockets_inuse_after": after.sockstat.inuse,
        "kernel_slab_bytes_per_conn_both_ends": per(before.slab, after.slab),
        "kernel_slab_unreclaimable_bytes_per_conn_both_ends": per(before.slab_unreclaimable, after.slab_unreclaimable),
        "errors": total.errors,
        "worker_failures": worker_failures,
    }))
}
