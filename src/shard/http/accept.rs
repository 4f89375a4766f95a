//! The accept loop and the bounds taken at accept: `--accept-rate` (this shard's bucket),
//! `--max-connections`, `--max-connections-per-ip` — each refusal a complete 503 with a
//! jittered `Retry-After`, written once without waiting, then a close.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use crate::admission::jittered_retry_after_secs;
use crate::codec::{decimal, http1};
use crate::config::{ADMISSION_RETRY_AFTER_SECS, OVERLOAD_ANSWER_SLACK};
use crate::metrics::M;
use crate::shard::core::{Counted, Shard};
use crate::shard::http::conn::serve;
use crate::shard::io;
use crate::{debug, warn};

pub async fn accept_loop(sh: &Rc<Shard>, listener: &TcpListener) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = sh.draining.wait() => return,
        };
        match accepted {
            Ok((stream, peer)) => admit(sh, stream, peer),
            Err(e) => {
                // EMFILE/ENFILE and friends: say so and back off instead of spinning.
                warn!("shard {}: accept failed: {e} (raise `ulimit -n`?)", sh.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Why a connection is refused at accept: each bound its answer, counter and log line.
#[derive(Clone, Copy)]
enum Refusal {
    /// `--accept-rate`: new connections come faster than this shard's share.
    Rate,
    /// `--max-connections`.
    Connections,
    /// `--max-connections-per-ip`.
    PerIp,
}

impl Refusal {
    fn body(self) -> &'static [u8] {
        match self {
            Refusal::Rate => b"over --accept-rate\n",
            Refusal::Connections => b"over --max-connections\n",
            Refusal::PerIp => b"over --max-connections-per-ip\n",
        }
    }

    fn counter(self) -> M {
        match self {
            Refusal::Rate => M::AcceptRateRefused,
            Refusal::Connections => M::ConnectionsRejected,
            Refusal::PerIp => M::PerIpRefused,
        }
    }
}

/// The bounds in order, cheapest and most global first: the accept bucket before any
/// per-connection work, then the node's connection cap, then the client address's.
fn admit(sh: &Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let m = sh.metrics();
    m.inc(M::ConnectionsAccepted);
    if !sh.adm.try_accept() {
        return refuse(sh, stream, peer, Refusal::Rate);
    }
    let n = sh.node.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let max = sh.node.cfg.max_connections;
    if n > max {
        sh.node.connections.fetch_sub(1, Ordering::Relaxed);
        // A refusal is answered here and now (no task holds the count), so the total passes
        // the cap only by what other shards admit at the same instant; the hard cap stays as
        // the guard that a flood never makes the node write.
        if n > max + OVERLOAD_ANSWER_SLACK {
            m.inc(M::ConnectionsRejected);
            debug!("connection from {peer} closed at accept: over the hard cap");
            return;
        }
        return refuse(sh, stream, peer, Refusal::Connections);
    }
    let ip = (sh.node.cfg.max_connections_per_ip > 0).then(|| peer.ip());
    if let Some(ip) = ip {
        if !sh.node.per_ip.try_add(ip) {
            sh.node.connections.fetch_sub(1, Ordering::Relaxed);
            return refuse(sh, stream, peer, Refusal::PerIp);
        }
    }
    let counted = Counted::new(sh.clone(), stream.as_raw_fd(), ip);
    monoio::spawn(serve(sh.clone(), stream, peer, counted));
}

/// Answers a refused connection a complete `503` with a jittered `Retry-After` and
/// `Connection: close`, in one non-blocking write (a client that does not read it loses it,
/// nothing waits), then closes it. No task, no buffer kept: a storm costs a write and a close
/// per connection.
fn refuse(sh: &Shard, stream: TcpStream, peer: SocketAddr, why: Refusal) {
    sh.metrics().inc(why.counter());
    let refused = REFUSED.with(|r| {
        let n = r.get() + 1;
        r.set(n);
        n
    });
    // One line per refusal would flood the log in the storm it refuses: the first, then every
    // 1024th (the counter has them all).
    if refused == 1 || refused.is_multiple_of(1024) {
        crate::info!(
            "shard {}: connection from {peer} refused with 503: {} ({refused} refused at accept on this shard)",
            sh.id,
            String::from_utf8_lossy(why.body()).trim_end()
        );
    } else {
        debug!(
            "connection from {peer} refused with 503: {}",
            String::from_utf8_lossy(why.body()).trim_end()
        );
    }
    let fd = stream.as_raw_fd();
    let seed = (fd as u64) ^ (u64::from(peer.port()) << 32) ^ sh.node.seed;
    let secs = jittered_retry_after_secs(ADMISSION_RETRY_AFTER_SECS, seed);
    let mut digits = [0u8; decimal::MAX_U64_DIGITS];
    let secs = decimal::u64_digits(u64::from(secs), &mut digits);
    let mut out = Vec::with_capacity(192);
    http1::write_response(
        &mut out,
        503,
        &[("Retry-After", secs), ("Content-Type", b"text/plain")],
        why.body(),
        false,
        false,
        &sh.date.get(),
    );
    if io::set_nonblocking(fd).is_ok() {
        let _ = io::write_some(fd, &out);
        // The request the client sent already would turn the close into a reset, which can
        // destroy the answer before the client reads it: send FIN first, take what arrived.
        io::shutdown_write(fd);
        io::discard_upto(fd, REFUSED_DISCARD_BYTES);
    }
    drop(stream);
}

/// What a refused connection's request may have brought already (a head, at most).
const REFUSED_DISCARD_BYTES: usize = 16 * 1024;

thread_local! {
    /// Connections this shard refused at accept: the log keeps one line in 1024.
    static REFUSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}
