//! `ringcast-writecost`: the machine's price of one small `write()` to each of K loopback
//! sockets — the floor under "one message per subscriber per flush".
//!
//! Opens K connected loopback TCP pairs, pins itself to one core, then per round writes `--size`
//! bytes once to each of the K server-side sockets (timed) and drains the K client sides (not
//! timed), so every timed write finds an empty queue, as a server whose clients keep up does. On
//! loopback a `write()` also runs the receive path (TCP input, socket wake-up) in the writer's
//! context, as it does for ringcast on the same loopback. Reports wall and thread-CPU ns per
//! write and writes/s for the core as one JSON line.
//!
//! `--readers drained` (the default) drains the client sides between rounds from the writing
//! thread, so no write finds a reader waiting for it. `--readers waiting` gives them to a thread
//! on `--reader-core` that sleeps in `epoll_wait` until data comes, as a subscriber does: a
//! write then also wakes that thread when it is asleep, the price every delivery to a waiting
//! client pays (`sock_def_readable` → the epoll wake-up). Each round still starts only once the
//! reader has drained everything, so every timed write finds an empty queue.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Who reads the client sides: `drained` between rounds by the writer, or `waiting` in
    /// `epoll_wait` on a thread of their own (on `--reader-core`).
    #[arg(long, value_enum, default_value_t = Readers::Drained)]
    readers: Readers,
    /// Core of the waiting reader thread.
    #[arg(long, default_value_t = 1)]
    reader_core: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Readers {
    Drained,
    Waiting,
}

fn thread_cpu_ns() -> u64 {
    ringcast_load::net::clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
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
    let waiting = match a.readers {
        Readers::Waiting => Some(WaitingReader::start(
            std::mem::take(&mut readers),
            a.reader_core,
        )?),
        Readers::Drained => None,
    };
    // Bytes written so far: a waiting reader has drained a round once it has read them all.
    let mut expected = 0u64;
    // Returns the bytes read this round (a waiting reader: once its total reaches `expected`).
    let round_bytes = (fds.len() * msg.len()) as u64;
    let mut drain = |readers: &mut [TcpStream], expected: u64| -> Result<u64, String> {
        if let Some(w) = &waiting {
            w.wait_for(expected)?;
            return Ok(round_bytes);
        }
        let mut got = 0;
        for r in readers.iter_mut() {
            while let Ok(n) = r.read(&mut sink) {
                if n == 0 {
                    break;
                }
                got += n as u64;
            }
        }
        Ok(got)
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
        expected += round_bytes;
        drain(&mut readers, expected)?;
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
        expected += round_bytes;
        bytes_read += drain(&mut readers, expected)?;
    }
    let reader_cpu_ns = waiting.map(WaitingReader::stop);
    per_round_ns.sort_by(f64::total_cmp);
    let q = |p: f64| per_round_ns[((per_round_ns.len() - 1) as f64 * p) as usize];
    let ns_per_write = wall as f64 / writes.max(1) as f64;
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let out = json!({
        "mode": "writecost",
        "readers": format!("{:?}", a.readers).to_lowercase(),
        "reader_cpu_ns_per_write": reader_cpu_ns.map(|n| r1(n as f64 / writes.max(1) as f64)),
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

/// The client sides on a thread of their own that sleeps in `epoll_wait` until data comes.
struct WaitingReader {
    read: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl WaitingReader {
    fn start(readers: Vec<TcpStream>, core: usize) -> Result<WaitingReader, String> {
        // SAFETY: plain syscall; the fd is checked below and closed by the thread.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if ep < 0 {
            return Err(format!(
                "epoll_create1: {}",
                std::io::Error::last_os_error()
            ));
        }
        for (i, r) in readers.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: `ep` and the socket are open; `ev` is a valid event for the call.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, r.as_raw_fd(), &mut ev) } < 0 {
                return Err(format!("epoll_ctl: {}", std::io::Error::last_os_error()));
            }
        }
        let read = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r2, s2) = (read.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            if let Some(c) = core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.id == core)
            {
                core_affinity::set_for_current(c);
            }
            let mut readers = readers;
            let mut sink = vec![0u8; 64 * 1024];
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
            let c0 = thread_cpu_ns();
            while !s2.load(Ordering::Relaxed) {
                // SAFETY: `events` has room for its length; `ep` is open until the end.
                let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 1024, 100) };
                for ev in events.iter().take(n.max(0) as usize) {
                    let r = &mut readers[ev.u64 as usize];
                    while let Ok(k) = r.read(&mut sink) {
                        if k == 0 {
                            break;
                        }
                        r2.fetch_add(k as u64, Ordering::Release);
                    }
                }
            }
            let cpu = thread_cpu_ns() - c0;
            // SAFETY: `ep` was created above and is closed once.
            unsafe { libc::close(ep) };
            cpu
        });
        Ok(WaitingReader { read, stop, thread })
    }

    /// Waits (at most 10 s) until the reader has read `expected` bytes in all.
    fn wait_for(&self, expected: u64) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let got = self.read.load(Ordering::Acquire);
            if got >= expected {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "the reader drained {got} of {expected} bytes in 10 s"
                ));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Stops the thread; returns its CPU time in ns.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}
