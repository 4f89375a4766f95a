//! Parent ↔ worker protocol, in one process or across several.
//!
//! A run has one parent (it publishes, measures the server, merges and prints) and K workers that
//! hold the connections. With `--processes 1` the worker is a task in the parent's runtime and
//! the messages go through channels; with K > 1 each worker is a copy of this binary started with
//! `--worker-index I --worker-count K`, and the same messages are JSON lines on its stdin
//! (parent → worker) and stdout (worker → parent). Stderr is the worker's own.

use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// Worker → parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "up")]
pub enum Up {
    /// Every connection of the worker is up or has failed.
    Ready { connected: u64, failed: u64 },
    /// Once a second: connections up, and the mode's unit of work done (deliveries, round trips).
    Progress { connected: u64, done: u64 },
    /// The worker's result; the last message.
    Report { report: serde_json::Value },
    /// The worker went away without a report (synthesised by the parent).
    Gone { why: String },
}

/// Parent → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "down")]
pub enum Down {
    /// Start: the run's time origin on CLOCK_MONOTONIC.
    Go { t0_ns: u64 },
    /// Finish now and report.
    Stop,
    /// `fanout --resume`: the publisher has finished; what became of each message, per topic
    /// (`track::TopicLog`'s wire form).
    Published { topics: Vec<Vec<String>> },
}

/// The worker's end.
pub struct WorkerLink {
    up: Box<dyn Fn(Up)>,
    pub down: UnboundedReceiver<Down>,
}

impl WorkerLink {
    pub fn send(&self, u: Up) {
        (self.up)(u)
    }

    /// The link of a worker process: stdout lines up, stdin lines down (read on a task).
    pub fn from_stdio() -> WorkerLink {
        let (tx, rx) = unbounded_channel();
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(d) = serde_json::from_str::<Down>(&l) {
                    let _ = tx.send(d);
                }
            }
            // The parent is gone: stop.
            let _ = tx.send(Down::Stop);
        });
        WorkerLink {
            up: Box::new(|u| {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = serde_json::to_writer(&mut out, &u);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            }),
            down: rx,
        }
    }
}

/// The parent's end of all workers.
pub struct Workers {
    pub rx: UnboundedReceiver<(usize, Up)>,
    downs: Vec<Box<dyn Fn(Down)>>,
    pub ready: Vec<Option<(u64, u64)>>,
    pub progress: Vec<(u64, u64)>,
    pub reports: Vec<Option<Result<serde_json::Value, String>>>,
    children: Vec<tokio::process::Child>,
}

impl Workers {
    /// One worker in this process, run by `spawn(link)` on the current LocalSet.
    pub fn local(spawn: impl FnOnce(WorkerLink)) -> Workers {
        let (up_tx, up_rx) = unbounded_channel();
        let (down_tx, down_rx) = unbounded_channel();
        spawn(WorkerLink {
            up: Box::new(move |u| {
                let _ = up_tx.send((0, u));
            }),
            down: down_rx,
        });
        Workers::with(
            up_rx,
            vec![Box::new(move |d| {
                let _ = down_tx.send(d);
            })],
        )
    }

    /// `k` copies of this binary with `args` plus `--worker-index I --worker-count k`.
    pub fn spawn_processes(k: usize, args: &[String]) -> Result<Workers, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let (up_tx, up_rx) = unbounded_channel::<(usize, Up)>();
        let mut downs: Vec<Box<dyn Fn(Down)>> = Vec::new();
        let mut children = Vec::new();
        for i in 0..k {
            let mut child = tokio::process::Command::new(&exe)
                .args(args)
                .args([
                    "--worker-index",
                    &i.to_string(),
                    "--worker-count",
                    &k.to_string(),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("spawning worker {i}: {e}"))?;
            let stdout = child.stdout.take().ok_or("no worker stdout")?;
            let mut stdin = child.stdin.take().ok_or("no worker stdin")?;
            let tx = up_tx.clone();
            tokio::task::spawn_local(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut reported = false;
                while let Ok(Some(l)) = lines.next_line().await {
                    match serde_json::from_str::<Up>(&l) {
                        Ok(u) => {
                            reported |= matches!(u, Up::Report { .. });
                            let _ = tx.send((i, u));
                        }
                        Err(_) => eprintln!("worker {i}: {l}"),
                    }
                }
                if !reported {
                    let why = "exited without a report".to_string();
                    let _ = tx.send((i, Up::Gone { why }));
                }
            });
            let (dtx, mut drx) = unbounded_channel::<Down>();
            tokio::task::spawn_local(async move {
                while let Some(d) = drx.recv().await {
                    let mut line = serde_json::to_vec(&d).unwrap_or_default();
                    line.push(b'\n');
                    if stdin.write_all(&line).await.is_err() {
                        break;
                    }
                    let _ = stdin.flush().await;
                }
            });
            downs.push(Box::new(move |d| {
                let _ = dtx.send(d);
            }));
            children.push(child);
        }
        let mut w = Workers::with(up_rx, downs);
        w.children = children;
        Ok(w)
    }

    fn with(rx: UnboundedReceiver<(usize, Up)>, downs: Vec<Box<dyn Fn(Down)>>) -> Workers {
        let k = downs.len();
        Workers {
            rx,
            downs,
            ready: vec![None; k],
            progress: vec![(0, 0); k],
            reports: vec![None; k],
            children: Vec::new(),
        }
    }

    /// The worker processes' ids (none when the worker runs in this process).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().filter_map(|c| c.id()).collect()
    }

    pub fn len(&self) -> usize {
        self.downs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.downs.is_empty()
    }

    pub fn broadcast(&self, d: Down) {
        for f in &self.downs {
            f(d.clone());
        }
    }

    /// Books one message from worker `i`.
    pub fn apply(&mut self, i: usize, u: Up) {
        match u {
            Up::Ready { connected, failed } => {
                self.ready[i] = Some((connected, failed));
                self.progress[i].0 = connected;
            }
            Up::Progress { connected, done } => self.progress[i] = (connected, done),
            Up::Report { report } => self.reports[i] = Some(Ok(report)),
            Up::Gone { why } => {
                self.ready[i].get_or_insert((0, 0));
                self.reports[i].get_or_insert(Err(why));
            }
        }
    }

    /// Connections up and work done, summed over workers.
    pub fn totals(&self) -> (u64, u64) {
        self.progress
            .iter()
            .fold((0, 0), |(c, d), &(pc, pd)| (c + pc, d + pd))
    }

    /// Processes messages until `done(self)` or `deadline`; calls `tick` once a second.
    /// Returns false on the deadline.
    pub async fn pump_until(
        &mut self,
        deadline: Option<tokio::time::Instant>,
        mut done: impl FnMut(&Workers) -> bool,
        mut tick: impl FnMut(&Workers),
    ) -> bool {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        ticker.tick().await;
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let sleep = tokio::time::sleep_until(deadline.unwrap_or(far));
        tokio::pin!(sleep);
        while !done(self) {
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some((i, u)) => self.apply(i, u),
                    None => return done(self),
                },
                _ = ticker.tick() => tick(self),
                _ = &mut sleep => return false,
            }
        }
        true
    }

    pub fn all_ready(&self) -> bool {
        self.ready.iter().all(Option::is_some)
    }

    pub fn all_reported(&self) -> bool {
        self.reports.iter().all(Option::is_some)
    }

    /// Waits for the worker processes to exit (after their reports).
    pub async fn reap(&mut self) {
        for c in &mut self.children {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
        }
    }
}
