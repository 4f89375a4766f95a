//! The accept loop and the connection caps taken at accept.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use monoio::net::{TcpListener, TcpStream};

use crate::codec::http1;
use crate::config::OVERLOAD_ANSWER_SLACK;
use crate::metrics::M;
use crate::shard::core::Shard;
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

fn admit(sh: &Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let m = sh.metrics();
    m.inc(M::ConnectionsAccepted);
    let n = sh.node.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let max = sh.node.cfg.max_connections;
    if n > max {
        m.inc(M::ConnectionsRejected);
        if n > max + OVERLOAD_ANSWER_SLACK {
            sh.node.connections.fetch_sub(1, Ordering::Relaxed);
            debug!("connection from {peer} closed at accept: over the hard cap");
            return;
        }
        let sh = sh.clone();
        monoio::spawn(async move {
            let fd = stream.as_raw_fd();
            let mut out = Vec::new();
            let date = sh.date.get();
            http1::write_response(
                &mut out,
                503,
                &[("Retry-After", b"1"), ("Content-Type", b"text/plain")],
                b"over --max-connections\n",
                false,
                false,
                &date,
            );
            let _ = io::set_nonblocking(fd);
            let _ = io::write_some(fd, &out);
            drop(stream);
            sh.node.connections.fetch_sub(1, Ordering::Relaxed);
        });
        return;
    }
    m.inc(M::ConnectionsOpen);
    monoio::spawn(serve(sh.clone(), stream, peer));
}
