//! Threads, core pinning, the I/O driver, signals and shutdown.
//!
//! Owns: binding one SO_REUSEPORT listener per shard (all on the same port, so `:0` works),
//! starting one monoio runtime per shard on its own thread (pinned with core_affinity), choosing
//! io_uring or epoll, and turning SIGINT/SIGTERM into a `Shutdown` command on every inbox.
//! Must not: serve requests or hold shard state.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, Driver, OVERLOAD_ANSWER_SLACK};
use crate::fanout::Cmd;
use crate::node::Node;
use crate::sys::{fds, listener, signal};
use crate::{error, info, warn};

/// io_uring submission queue size per shard. Readiness polls for idle connections stay in the
/// kernel once submitted, so this bounds one submit batch, not the connections a shard holds.
const URING_ENTRIES: u32 = 16384;

/// File descriptors the node holds besides connections: listeners, io_uring and epoll
/// instances, eventfds, the Redis bridge's sockets, the log.
const FD_SPARE: usize = 256;

/// Which driver the shards actually run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActiveDriver {
    Uring,
    Epoll,
}

impl ActiveDriver {
    pub fn name(self) -> &'static str {
        match self {
            ActiveDriver::Uring => "io_uring",
            ActiveDriver::Epoll => "epoll",
        }
    }
}

/// Picks the driver: `auto` tries to build an io_uring runtime once and falls back with one
/// log line saying why.
pub fn choose_driver(d: Driver) -> io::Result<ActiveDriver> {
    match d {
        Driver::Epoll => Ok(ActiveDriver::Epoll),
        Driver::Uring => probe_uring().map(|_| ActiveDriver::Uring).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "io_uring is unavailable ({e}); run with --driver epoll or --driver auto \
                     (check seccomp, kernel >= 5.6 and RLIMIT_MEMLOCK)"
                ),
            )
        }),
        Driver::Auto => match probe_uring() {
            Ok(()) => Ok(ActiveDriver::Uring),
            Err(e) => {
                warn!(
                    "io_uring unavailable ({e}); running on the epoll driver \
                     (check seccomp, kernel >= 5.6 and RLIMIT_MEMLOCK)"
                );
                Ok(ActiveDriver::Epoll)
            }
        },
    }
}

/// The io_uring setup every shard uses. COOP_TASKRUN: a completion's task work waits for the
/// shard's next syscall instead of interrupting it (an IPI per readiness event otherwise — about
/// 6% of a keep-alive benchmark's samples were that interrupt path); SINGLE_ISSUER: only the
/// shard thread submits (other shards wake it through an eventfd, not the ring).
pub fn uring_builder() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun().setup_single_issuer();
    b
}

fn probe_uring() -> io::Result<()> {
    if std::env::var_os("RINGCAST_TEST_DISABLE_URING").is_some() {
        // Lets the test suite exercise the `auto` fallback on a machine that has io_uring.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "disabled by RINGCAST_TEST_DISABLE_URING",
        ));
    }
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .uring_builder(uring_builder())
        .with_entries(8)
        .build()
        .map(drop)
}

/// Binds `n` listeners on the same address with SO_REUSEPORT: the first bind chooses the port
/// when it is 0, the others reuse it; the kernel spreads new connections among them.
pub fn bind_listeners(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_port_free(addr)?;
    }
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let l = bind_reuseport(addr)?;
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// SO_REUSEPORT would let this node silently *join* another process's listener on the same
/// port (same user), and the kernel would then split clients between two unrelated nodes. So
/// first bind a plain socket (SO_REUSEADDR only, which still refuses a port that has a
/// listener): if that fails, someone is there, and we say so instead of sharing.
fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = listener::new_socket(addr)?;
    listener::set_reuseaddr(&probe)?;
    listener::bind(&probe, addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on {addr}: {e} — another process is listening there \
                 (stop it, or choose another --listen)"
            ),
        )
    })
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = listener::new_socket(addr)?;
    listener::set_reuseaddr(&l)?;
    listener::set_reuseport(&l)?;
    listener::bind(&l, addr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot bind {addr}: {e} (is another process on that port? try --listen)"),
        )
    })?;
    listener::listen(&l, 65535)?;
    Ok(l)
}

/// Runs the node until a signal drains it. Returns when every shard has stopped.
pub fn run(cfg: Config, auth: Option<crate::auth::Auth>) -> io::Result<()> {
    crate::log::set_level(cfg.log_level);
    crate::log::set_format(cfg.log_format);
    // Before any thread starts, so every shard thread inherits the mask.
    let signals = signal::block_shutdown_signals();
    let driver = choose_driver(cfg.driver)?;
    let listeners = bind_listeners(cfg.listen, cfg.shards)?;
    let local = listeners[0].local_addr()?;
    let cores = if cfg.pin {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    info!(
        "ringcast {} listening on {local} shards={} driver={} pin={} max_connections={} \
         max_head_bytes={} max_message_bytes={} client_buffer_bytes={} slow_client={:?} \
         history={}msgs/{}B/{}s",
        env!("CARGO_PKG_VERSION"),
        cfg.shards,
        driver.name(),
        cfg.pin && !cores.is_empty(),
        cfg.max_connections,
        cfg.max_head_bytes,
        cfg.max_message_bytes,
        cfg.client_buffer_bytes,
        cfg.slow_client,
        cfg.history_messages,
        cfg.history_bytes,
        cfg.history_secs,
    );
    // While this is the only thread: see `sys::fds` for the stall this avoids.
    let want = cfg.max_connections + OVERLOAD_ANSWER_SLACK + FD_SPARE;
    match fds::reserve_table(listeners[0].as_raw_fd(), want) {
        Ok(n) if n < want => info!(
            "ulimit -n is {n}: this node holds about that many connections, not \
             --max-connections ({}); tools/million.sh says how to raise it",
            cfg.max_connections
        ),
        Ok(_) => {}
        Err(e) => warn!("cannot reserve the file-descriptor table: {e}"),
    }
    let node = Arc::new(Node::new(cfg, auth));
    if node.bridge.is_some() {
        // Detached: it stops on the shutdown flag, and holds nothing a shard waits for.
        crate::backplane::bridge::spawn(node.clone())?;
    }
    let mut threads = Vec::new();
    for (id, listener) in listeners.into_iter().enumerate() {
        let node = node.clone();
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let t = std::thread::Builder::new()
            .name(format!("shard-{id}"))
            .spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                if let Err(e) = run_shard(node, id, listener, driver) {
                    error!("shard {id} failed: {e}");
                }
            })?;
        threads.push(t);
    }
    wait_for_signal(&signals, &node, &threads);
    for t in threads {
        let _ = t.join();
    }
    info!("stopped");
    Ok(())
}

fn run_shard(
    node: Arc<Node>,
    id: usize,
    listener: TcpListener,
    driver: ActiveDriver,
) -> io::Result<()> {
    let fut = crate::shard::run(node, id, listener);
    match driver {
        ActiveDriver::Uring => {
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .uring_builder(uring_builder())
                .with_entries(URING_ENTRIES)
                .enable_timer()
                .build()?
                .block_on(fut);
        }
        ActiveDriver::Epoll => {
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()?
                .block_on(fut);
        }
    }
    Ok(())
}

/// Waits for SIGINT/SIGTERM (or for every shard to have stopped on its own), then tells every
/// shard to drain.
fn wait_for_signal(
    signals: &signal::ShutdownSignals,
    node: &Node,
    threads: &[std::thread::JoinHandle<()>],
) {
    loop {
        if let Some(sig) = signals.wait(Duration::from_millis(200)) {
            info!(
                "signal {sig}: draining (up to {}s)",
                node.cfg.drain_timeout_secs
            );
            break;
        }
        if threads.iter().all(|t| t.is_finished()) {
            return;
        }
    }
    node.shutting_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for s in 0..node.bus.shards() {
        // The inbox may be full under load: retry briefly, the shard also polls the flag.
        for _ in 0..100 {
            if node.bus.send(s, Cmd::Shutdown).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
