//! What every mode shares: where a connection comes from, which connections a worker owns,
//! starting workers, counting errors, progress lines.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::addr::parse_source_ips;
use crate::cli::Common;
use crate::link::{Up, WorkerLink, Workers};

/// Distinct error texts kept in a report; the rest are counted under "other".
const MAX_ERROR_KINDS: usize = 32;

/// The run-wide settings of one process.
#[derive(Debug, Clone)]
pub struct Env {
    pub source_ips: Vec<Ipv4Addr>,
    pub index: usize,
    pub count: usize,
    pub prefix: String,
    pub quiet: bool,
    pub connect_concurrency: usize,
    pub connect_timeout: Duration,
    pub processes: usize,
}

impl Env {
    pub fn new(c: &Common, default_prefix: &str) -> Result<Env, String> {
        let source_ips = match &c.source_ips {
            Some(s) => parse_source_ips(s)?,
            None => Vec::new(),
        };
        if c.processes == 0 || c.worker_count == 0 {
            return Err("--processes must be at least 1".into());
        }
        let prefix = match &c.topic_prefix {
            Some(p) => p.clone(),
            // A fresh prefix per run, so a run never sees another run's messages.
            None => format!("{default_prefix}{:x}-", crate::net::mono_ns() % 0xff_ffff),
        };
        Ok(Env {
            source_ips,
            index: c.worker_index.unwrap_or(0),
            count: c.worker_count,
            prefix,
            quiet: c.quiet || c.worker_index.is_some(),
            connect_concurrency: c.connect_concurrency.max(1),
            connect_timeout: Duration::from_secs_f64(c.connect_timeout_secs.max(0.1)),
            processes: c.processes,
        })
    }

    /// The source address of global connection `i`.
    pub fn src(&self, i: usize) -> Option<Ipv4Addr> {
        (!self.source_ips.is_empty()).then(|| self.source_ips[i % self.source_ips.len()])
    }

    /// The global connection numbers this process owns, out of `n`.
    pub fn mine(&self, n: usize) -> impl Iterator<Item = usize> {
        (self.index..n).step_by(self.count)
    }

    pub fn progress(&self, line: std::fmt::Arguments<'_>) {
        if !self.quiet {
            eprintln!("[ringcast-load] {line}");
        }
    }

    /// Starts the workers: one task here, or `--processes` copies of this binary.
    pub fn start_workers(&self, run_local: impl FnOnce(WorkerLink)) -> Result<Workers, String> {
        if self.processes <= 1 {
            return Ok(Workers::local(run_local));
        }
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let args = child_args(&argv, &self.prefix);
        Workers::spawn_processes(self.processes, &args)
    }
}

/// The parent's arguments for a worker: without `--processes`, `--topic-prefix`, `--quiet`,
/// then with the resolved prefix.
pub fn child_args(argv: &[String], prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--processes" | "--topic-prefix" => {
                it.next();
            }
            "--quiet" => {}
            s if s.starts_with("--processes=") || s.starts_with("--topic-prefix=") => {}
            _ => out.push(a.clone()),
        }
    }
    out.push("--topic-prefix".into());
    out.push(prefix.into());
    out
}

/// Error texts and how often each happened.
#[derive(Debug, Default)]
pub struct Errors(RefCell<BTreeMap<String, u64>>);

impl Errors {
    pub fn add(&self, what: &str) {
        let mut m = self.0.borrow_mut();
        if let Some(n) = m.get_mut(what) {
            *n += 1;
        } else if m.len() < MAX_ERROR_KINDS {
            m.insert(what.to_string(), 1);
        } else {
            *m.entry("other".into()).or_default() += 1;
        }
    }

    pub fn take(&self) -> BTreeMap<String, u64> {
        self.0.take()
    }
}

/// Adds `from` into `into`.
pub fn merge_errors(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// The connect phase of a worker: waits until its `n` connections are up or failed (or
/// `deadline`), reporting progress once a second, then tells the parent it is ready.
pub async fn connect_phase(
    connected: &Cell<u64>,
    failed: &Cell<u64>,
    changed: &tokio::sync::Notify,
    n: u64,
    deadline: tokio::time::Instant,
    link: &WorkerLink,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while connected.get() + failed.get() < n {
        tokio::select! {
            _ = changed.notified() => {}
            _ = ticker.tick() => link.send(Up::Progress { connected: connected.get(), done: 0 }),
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    link.send(Up::Ready {
        connected: connected.get(),
        failed: n - connected.get(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_args_drop_parent_only_flags() {
        let argv: Vec<String> = [
            "fanout",
            "--processes",
            "4",
            "--subscribers",
            "10",
            "--topic-prefix=x",
            "--quiet",
            "--processes=2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            child_args(&argv, "p-"),
            ["fanout", "--subscribers", "10", "--topic-prefix", "p-"]
        );
    }

    #[test]
    fn ownership_is_round_robin() {
        let mut e = Env::new(
            &Common {
                source_ips: Some("127.0.0.2-127.0.0.4".into()),
                processes: 1,
                connect_concurrency: 1,
                connect_timeout_secs: 1.0,
                topic_prefix: Some("t".into()),
                quiet: true,
                worker_index: Some(1),
                worker_count: 3,
            },
            "x",
        )
        .unwrap();
        assert_eq!(e.mine(8).collect::<Vec<_>>(), [1, 4, 7]);
        assert_eq!(e.src(4), Some(Ipv4Addr::new(127, 0, 0, 3)));
        e.source_ips.clear();
        assert_eq!(e.src(4), None);
    }
}
