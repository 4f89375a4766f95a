//! `ringcast-writecost`: the machine's price of one small `write()` to each of K loopback
//! sockets — the floor under "one message per subscriber per flush".
//!
//! Opens K connected loopback TCP pairs, pins itself to one core, then per round writes `--size`
//! bytes once to each of the K server-side sockets (timed) and drains the K client sides (not
//! timed), so every timed write finds an empty queue, as a server whose clients keep up does. On
//! loopback a `write()` also runs the receive path (TCP input, socket wake-up) in the writer's
//! context, as it does for ringcast on the same loopback. Reports wall and thread-CPU ns per
//! write and writes/s for the core as one JSON line.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(name = "ringcast-writecost", version, about)]
struct Args {
    /// Socket pairs (each costs two file descriptors; the per-process cap is 20,000 here).
    #[arg(long, default_value_t = 1000)]
    pairs: usize,
    /// Bytes per write.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Timed rounds (one write per socket each).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
    /// Core to pin to.
    #[arg(long, default_value_t = 0)]
    core: usize,
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("ringcast-writecost: {e}");
        std::process::exit(2);
    }
}

fn run(a: &Args) -> Result<(), String> {
    let nofile = ringcast_load::net::raise_nofile();
    if (a.pairs as u64) * 2 + 16 > nofile {
        return Err(format!(
            "--pairs {} needs {} file descriptors; the limit is {nofile} (raise `ulimit -Hn`)",
            a.pairs,
            a.pairs * 2 + 16
        ));
    }
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let pinned = cores
        .iter()
        .find(|c| c.id == a.core)
        .is_some_and(|c| core_affinity::set_for_current(*c));
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut writers = Vec::with_capacity(a.pairs);
    let mut readers = Vec::with_capacity(a.pairs);
    for i in 0..a.pairs {
        let c = TcpStream::connect(addr).map_err(|e| format!("connect #{i}: {e}"))?;
        let (s, _) = listener.accept().map_err(|e| format!("accept #{i}: {e}"))?;
        for t in [&c, &s] {
            t.set_nodelay(true).map_err(|e| e.to_string())?;
            t.set_nonblocking(true).map_err(|e| e.to_string())?;
        }
        writers.push(s);
        readers.push(c);
    }
    let fds: Vec<i32> = writers.iter().map(|w| w.as_raw_fd()).collect();
    let msg = vec![b'x'; a.size];
    let mut sink = vec![0u8; 64 * 1024];
    let mut drain = |readers: &mut [TcpStream]| -> u64 {
        let mut got = 0;
        for r in readers.iter_mut() {
            while let Ok(n) = r.read(&mut sink) {
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
        }
        got
    };
    let write_round = |fds: &[i32]| -> (u64, u64) {
        let mut short = 0;
        for &fd in fds {
            // SAFETY: `fd` is an open socket owned by `writers`; `msg` is valid for `size` bytes.
            let n = unsafe { libc::write(fd, msg.as_ptr().cast(), msg.len()) };
            if n != msg.len() as isize {
                short += 1;
            }
        }
        (fds.len() as u64, short)
    };
    // Warm-up: caches, the sockets' first buffers.
    for _ in 0..3 {
        write_round(&fds);
        drain(&mut readers);
    }
    let mut per_round_ns = Vec::with_capacity(a.rounds);
    let (mut wall, mut cpu, mut writes, mut short, mut bytes_read) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for _ in 0..a.rounds {
        let c0 = thread_cpu_ns();
        let t0 = Instant::now();
        let (w, s) = write_round(&fds);
        let dt = t0.elapsed().as_nanos() as u64;
        cpu += thread_cpu_ns() - c0;
        wall += dt;
        writes += w;
        short += s;
        per_round_ns.push(dt as f64 / w.max(1) as f64);
        bytes_read += drain(&mut readers);
    }
    per_round_ns.sort_by(f64::total_cmp);
    let q = |p: f64| per_round_ns[((per_round_ns.len() - 1) as f64 * p) as usize];
    let ns_per_write = wall as f64 / writes.max(1) as f64;
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let out = json!({
        "mode": "writecost",
        "pairs": a.pairs,
        "size": a.size,
        "rounds": a.rounds,
        "core": a.core,
        "pinned": pinned,
        "writes": writes,
        "short_writes": short,
        "bytes_drained": bytes_read,
        "ns_per_write": r1(ns_per_write),
        "cpu_ns_per_write": r1(cpu as f64 / writes.max(1) as f64),
        "writes_per_sec_per_core": (1e9 / ns_per_write).round(),
        "round_ns_per_write_min": r1(q(0.0)),
        "round_ns_per_write_p50": r1(q(0.5)),
        "round_ns_per_write_max": r1(q(1.0)),
    });
    println!("{out}");
    Ok(())
}
