//! Numbers a run reports: latency histograms (HDR, mergeable across processes) and what the
//! kernel says about a process and about sockets (/proc), parsed from text so it is testable.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Longest latency a histogram holds, ns (longer values are clamped to it).
pub const MAX_LATENCY_NS: u64 = 600_000_000_000;

/// A latency histogram in ns, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}

/// Records `ns` (at least 1, at most `MAX_LATENCY_NS`).
pub fn record(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
}

/// A histogram as (value, count) pairs: how workers hand theirs to the parent.
pub fn histogram_pairs(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds (value, count) pairs into `h`.
pub fn merge_pairs(h: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(v, n) in pairs {
        let _ = h.record_n(v.clamp(1, MAX_LATENCY_NS), n);
    }
}

/// Percentiles in microseconds, as reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyUs {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

pub fn latency_us(h: &Histogram<u64>) -> LatencyUs {
    if h.is_empty() {
        return LatencyUs::default();
    }
    let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
    LatencyUs {
        count: h.len(),
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
        mean: (h.mean() / 100.0).round() / 10.0,
    }
}

/// `VmRSS` from /proc/PID/status, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    kb_field(status, "VmRSS:")
}

/// `Rss`, `Pss`, `Anonymous` from /proc/PID/smaps_rollup, in bytes.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rollup {
    pub rss: u64,
    pub pss: u64,
    pub anonymous: u64,
}

pub fn parse_smaps_rollup(s: &str) -> Option<Rollup> {
    Some(Rollup {
        rss: kb_field(s, "Rss:")?,
        pss: kb_field(s, "Pss:")?,
        anonymous: kb_field(s, "Anonymous:")?,
    })
}

/// `Slab` and `SUnreclaim` from /proc/meminfo, bytes.
pub fn parse_meminfo_slab(s: &str) -> Option<(u64, u64)> {
    Some((kb_field(s, "Slab:")?, kb_field(s, "SUnreclaim:")?))
}

fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The TCP line of /proc/net/sockstat.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sockstat {
    pub inuse: u64,
    pub orphan: u64,
    pub tw: u64,
    pub alloc: u64,
    /// Pages of socket buffer memory charged to TCP.
    pub mem_pages: u64,
}

pub fn parse_sockstat(s: &str) -> Option<Sockstat> {
    let line = s.lines().find_map(|l| l.strip_prefix("TCP: "))?;
    let mut st = Sockstat::default();
    let mut it = line.split_whitespace();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let v: u64 = v.parse().ok()?;
        match k {
            "inuse" => st.inuse = v,
            "orphan" => st.orphan = v,
            "tw" => st.tw = v,
            "alloc" => st.alloc = v,
            "mem" => st.mem_pages = v,
            _ => {}
        }
    }
    Some(st)
}

/// utime + stime of a process (all its threads), in clock ticks, from /proc/PID/stat.
///
/// The command name (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`: after it come state (field 3) … utime (14), stime (15).
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The machine's CPU time from the `cpu ` line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineTicks {
    /// Everything but idle, iowait and steal.
    pub busy: u64,
    /// Time the hypervisor ran someone else while this VM wanted the CPU.
    pub steal: u64,
}

pub fn parse_proc_stat(s: &str) -> Option<MachineTicks> {
    let line = s.lines().find_map(|l| l.strip_prefix("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    // counted in user and nice.
    if v.len() < 8 {
        return None;
    }
    Some(MachineTicks {
        busy: v[0] + v[1] + v[2] + v[5] + v[6],
        steal: v[7],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_counts_from_the_last_paren() {
        let stat = "4242 (ring cast) (x)) S 1 4242 4242 0 -1 4194560 1 0 0 0 731 269 0 0 20 0 3 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_stat_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn proc_stat_busy_excludes_idle_iowait_and_steal() {
        let s = "cpu  100 5 50 1000 7 3 2 11 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(
            parse_proc_stat(s),
            Some(MachineTicks {
                busy: 160,
                steal: 11
            })
        );
    }

    #[test]
    fn histogram_round_trip_through_pairs() {
        let mut a = new_histogram();
        for v in [1u64, 1000, 1000, 5_000_000, 0, u64::MAX] {
            record(&mut a, v);
        }
        let mut b = new_histogram();
        merge_pairs(&mut b, &histogram_pairs(&a));
        assert_eq!(a.len(), b.len());
        assert_eq!(a.max(), b.max());
        assert_eq!(a.value_at_quantile(0.5), b.value_at_quantile(0.5));
        let l = latency_us(&b);
        assert_eq!(l.count, 6);
        assert_eq!(l.p50, 1.0);
        assert_eq!(latency_us(&new_histogram()), LatencyUs::default());
    }

    #[test]
    fn proc_files() {
        let status = "Name:\tringcast\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads: 3\n";
        assert_eq!(parse_status_rss(status), Some(1234 * 1024));
        let rollup = "5555-7777 ---p 00000000 00:00 0   [rollup]\nRss:  100 kB\nPss:   90 kB\n\
                      Pss_Anon: 80 kB\nAnonymous:  70 kB\n";
        assert_eq!(
            parse_smaps_rollup(rollup),
            Some(Rollup {
                rss: 102400,
                pss: 92160,
                anonymous: 71680
            })
        );
        let sockstat =
            "sockets: used 290\nTCP: inuse 5 orphan 1 tw 2 alloc 7 mem 3\nUDP: inuse 0 mem 0\n";
        assert_eq!(
            parse_sockstat(sockstat),
            Some(Sockstat {
                inuse: 5,
                orphan: 1,
                tw: 2,
                alloc: 7,
                mem_pages: 3
            })
        );
        assert_eq!(parse_sockstat("UDP: inuse 0\n"), None);
        let meminfo = "MemTotal: 1 kB\nSlab:  200 kB\nSReclaimable: 50 kB\nSUnreclaim: 150 kB\n";
        assert_eq!(parse_meminfo_slab(meminfo), Some((200 * 1024, 150 * 1024)));
    }
}
