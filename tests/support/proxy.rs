//! Test harness: a loopback TCP proxy between a node and its Redis, with the two network
//! faults the backplane must survive (issue 14):
//! - **blackhole**: nothing is forwarded in either direction and nothing is closed, as in a
//!   network partition. Bytes already read are held, the rest waits in the kernel's buffers
//!   (TCP flow control), and on `heal` everything held goes through in order, the way TCP
//!   retransmits after a partition — so a request a client sent, and then gave up on, may still
//!   reach Redis after the heal. A client that closes meanwhile is closed upstream only after
//!   its held bytes.
//! - **cut**: every open connection is shut down both ways at once (each peer reads EOF).
//!   New connections are served as usual afterwards.
//!
//! std threads, two per connection; a proxy lives for one test. Included with
//! `#[path = "support/proxy.rs"] mod proxy;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

pub struct Proxy {
    /// The loopback port clients connect to.
    pub port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: u16,
    /// True while blackholed. Forwarding writes happen with this lock held, so once
    /// `blackhole` returns no byte goes through until `heal`.
    holding: Mutex<bool>,
    healed: Condvar,
    conns: Mutex<Vec<Conn>>,
    stop: AtomicBool,
}

/// The two sockets of one proxied connection (clones, to shut them down from outside).
struct Conn {
    client: TcpStream,
    upstream: TcpStream,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    /// A proxy on a free loopback port forwarding to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            holding: Mutex::new(false),
            healed: Condvar::new(),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let accept = std::thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", sh.upstream)) else {
                    // Nothing listens upstream (Redis is down): a refused connection.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let cut = Arc::new(AtomicBool::new(false));
                let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
                    client.try_clone(),
                    upstream.try_clone(),
                    client.try_clone(),
                    upstream.try_clone(),
                ) else {
                    continue;
                };
                sh.conns.lock().unwrap().push(Conn {
                    client: c3,
                    upstream: u3,
                    cut: cut.clone(),
                });
                let (sh1, cut1) = (sh.clone(), cut.clone());
                std::thread::spawn(move || pump(&sh1, &cut1, client, u2));
                let sh2 = sh.clone();
                std::thread::spawn(move || pump(&sh2, &cut, upstream, c2));
            }
        });
        Proxy {
            port,
            shared,
            accept: Some(accept),
        }
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops forwarding in both directions, closing nothing.
    pub fn blackhole(&self) {
        *self.shared.holding.lock().unwrap() = true;
    }

    /// Forwards again, what was held first.
    pub fn heal(&self) {
        *self.shared.holding.lock().unwrap() = false;
        self.shared.healed.notify_all();
    }

    /// The local addresses of the proxy's connections to the upstream: how the upstream
    /// (Redis's `CLIENT LIST` `addr`) sees this proxy's clients.
    pub fn upstream_addrs(&self) -> Vec<std::net::SocketAddr> {
        let conns = self.shared.conns.lock().unwrap();
        conns
            .iter()
            .filter_map(|c| c.upstream.local_addr().ok())
            .collect()
    }

    /// Shuts down every open connection both ways (held bytes are dropped); returns how many.
    pub fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for c in &conns {
            c.cut.store(true, Ordering::SeqCst);
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.upstream.shutdown(Shutdown::Both);
        }
        // Wake the pumps that hold bytes, so they see the cut and end.
        let _g = self.shared.holding.lock().unwrap();
        self.shared.healed.notify_all();
        conns.len()
    }
}

/// Copies `from` to `to` until EOF, an error or a cut; while blackholed, holds what it read
/// (and the EOF) until the heal.
fn pump(sh: &Shared, cut: &AtomicBool, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).unwrap_or(0);
        let mut holding = sh.holding.lock().unwrap();
        while *holding && !cut.load(Ordering::SeqCst) && !sh.stop.load(Ordering::SeqCst) {
            holding = sh.healed.wait(holding).unwrap();
        }
        if cut.load(Ordering::SeqCst) || sh.stop.load(Ordering::SeqCst) {
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            drop(holding);
            let _ = to.shutdown(Shutdown::Write);
            let _ = from.shutdown(Shutdown::Read);
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Proxy;
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    /// An echo server on a free loopback port: every connection gets its bytes back.
    fn echo() -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { return };
                std::thread::spawn(move || {
                    let mut b = [0u8; 1024];
                    while let Ok(n @ 1..) = s.read(&mut b) {
                        if s.write_all(&b[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    fn roundtrip(s: &mut TcpStream, what: &[u8]) {
        s.write_all(what).unwrap();
        let mut got = vec![0u8; what.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, what);
    }

    #[test]
    fn proxy_forwards_holds_while_blackholed_and_cuts() {
        let p = Proxy::start(echo());
        let mut s = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        roundtrip(&mut s, b"ping");

        // Blackholed: nothing comes back within 300 ms, and the connection stays open.
        p.blackhole();
        s.write_all(b"held").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 16];
        let e = s
            .read(&mut b)
            .expect_err("nothing forwarded while blackholed");
        assert!(
            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        );
        // A connection made meanwhile is accepted and silent too.
        let mut late = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        late.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        late.write_all(b"late").unwrap();
        assert!(late.read(&mut b).is_err(), "nothing forwarded");

        // Healed: what was held arrives, in order, on both connections.
        p.heal();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        late.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 4];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"held");
        late.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
        roundtrip(&mut s, b"after");

        // Cut: both open connections end (EOF or reset), and a new one works.
        assert_eq!(p.cut(), 2);
        for c in [&mut s, &mut late] {
            match c.read(&mut b) {
                Ok(0) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                other => panic!("expected the connection cut, got {other:?}"),
            }
        }
        let mut again = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        roundtrip(&mut again, b"again");
    }
}
