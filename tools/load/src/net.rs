//! Sockets, clocks and limits: everything here touches the OS.
//!
//! Owns: connecting from a chosen source address (bind before connect with
//! `IP_BIND_ADDRESS_NO_PORT`, so the kernel picks the port at connect time per destination
//! instead of reserving it at bind time — otherwise one source address runs out of ports at ~28k
//! connections whatever the destination), a buffered connection with HTTP head/body reads, the
//! shared clock (CLOCK_MONOTONIC, the same in every process of the machine), and raising the
//! file descriptor limit.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpSocket, TcpStream};

use crate::http::{self, Dechunker, ResponseHead};
use crate::stamp;

/// Bytes asked of the kernel per read.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Largest response body the tool reads whole (poll answers, publish answers).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Largest response head.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Nanoseconds on clock `id` (CLOCK_MONOTONIC, CLOCK_REALTIME, CLOCK_THREAD_CPUTIME_ID: the
/// clocks Linux always has; 0 for one it does not).
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; a bad clock id is an error, not UB.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds on CLOCK_MONOTONIC: comparable across processes on one machine.
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Nanoseconds on CLOCK_REALTIME, the clock of the kernel's receive timestamps.
fn real_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// The tokio instant of a CLOCK_MONOTONIC time (tokio's clock is CLOCK_MONOTONIC too, but its
/// `Instant` has no public constructor from ns).
pub fn instant_at(ns: u64) -> tokio::time::Instant {
    let now_ns = mono_ns();
    let now = tokio::time::Instant::now();
    if ns >= now_ns {
        now + Duration::from_nanos(ns - now_ns)
    } else {
        now.checked_sub(Duration::from_nanos(now_ns - ns))
            .unwrap_or(now)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    if r.rlim_cur < r.rlim_max {
        let new = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: `new` is a valid rlimit; failure leaves the limit unchanged.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } == 0 {
            return new.rlim_cur;
        }
    }
    r.rlim_cur
}

/// Connects to `dst`, from `src` if given, with TCP_NODELAY.
pub async fn connect(dst: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = src {
        stamp::set_flag(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
        )?;
        sock.bind(SocketAddr::new(ip.into(), 0))?;
    }
    let s = sock.connect(dst).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A connection with a read buffer; bytes in `buf` have been read but not consumed.
pub struct Conn {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    /// Reads take the kernel's receive stamps ([`stamp_arrivals`] was called).
    pub stamped: bool,
    /// When the newest segment of the last read reached the socket, CLOCK_MONOTONIC ns (as
    /// [`mono_ns`]); 0 when it carried no stamp.
    pub arrived_ns: u64,
}

/// Why a connection's exchange failed; short static text, counted in the report.
pub type Fail = String;

pub fn io_fail(what: &str, e: io::Error) -> Fail {
    format!("{what}: {}", e.kind())
}

impl Conn {
    pub fn new(s: TcpStream) -> Self {
        Conn {
            s,
            buf: Vec::with_capacity(1024),
            stamped: false,
            arrived_ns: 0,
        }
    }

    /// From now on, reads also say when their bytes reached the socket (`arrived_ns`).
    pub fn stamp_arrivals(&mut self) -> io::Result<()> {
        stamp::stamp_arrivals(self.s.as_raw_fd())?;
        self.stamped = true;
        Ok(())
    }

    /// Reads more bytes into `buf`; `Ok(0)` at EOF.
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 4 {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
        if !self.stamped {
            return self.s.read_buf(&mut self.buf).await;
        }
        let fd = self.s.as_raw_fd();
        loop {
            self.s.readable().await?;
            let buf = &mut self.buf;
            match self
                .s
                .try_io(Interest::READABLE, || stamp::recv_stamped(fd, buf))
            {
                Ok((n, stamp)) => {
                    // The stamp is wall-clock time: carried onto the monotonic clock by the
                    // two clocks' difference now (the same instant, to within a vDSO read).
                    self.arrived_ns = if stamp == 0 {
                        0
                    } else {
                        mono_ns().saturating_sub(real_ns().saturating_sub(stamp))
                    };
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn write_all(&mut self, b: &[u8]) -> Result<(), Fail> {
        self.s.write_all(b).await.map_err(|e| io_fail("write", e))
    }

    /// Reads a response head and consumes it from `buf`.
    pub async fn read_head(&mut self) -> Result<ResponseHead, Fail> {
        loop {
            match http::parse_response_head(&self.buf) {
                Ok(Some(h)) => {
                    self.buf.drain(..h.head_len);
                    return Ok(h);
                }
                Ok(None) if self.buf.len() > MAX_HEAD_BYTES => return Err("head too large".into()),
                Ok(None) => {}
                Err(e) => return Err(format!("bad response head: {e:?}")),
            }
            match self.fill().await {
                Ok(0) => return Err("eof before response head".into()),
                Ok(_) => {}
                Err(e) => return Err(io_fail("read", e)),
            }
        }
    }

    /// Reads a whole body (Content-Length, chunked, or until EOF) and consumes it.
    pub async fn read_body(&mut self, h: &ResponseHead) -> Result<Vec<u8>, Fail> {
        if h.status == 204 || h.status == 304 || (100..200).contains(&h.status) {
            return Ok(Vec::new());
        }
        if h.chunked {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            loop {
                let used = d
                    .feed(&self.buf, &mut out)
                    .map_err(|_| "bad chunked body")?;
                self.buf.drain(..used);
                if d.done {
                    return Ok(out);
                }
                if out.len() > MAX_BODY_BYTES {
                    return Err("body too large".into());
                }
                match self.fill().await {
                    Ok(0) => return Err("eof inside chunked body".into()),
                    Ok(_) => {}
                    Err(e) => return Err(io_fail("read", e)),
                }
            }
        }
        let want = match h.content_length {
            Some(n) if n as usize > MAX_BODY_BYTES => return Err("body too large".into()),
            Some(n) => Some(n as usize),
            None => None,
        };
        loop {
            if let Some(n) = want {
                if self.buf.len() >= n {
                    return Ok(self.buf.drain(..n).collect());
                }
            }
            match self.fill().await {
                Ok(0) if want.is_none() => return Ok(std::mem::take(&mut self.buf)),
                Ok(0) => return Err("eof inside body".into()),
                Ok(_) => {}
                Err(e) => return Err(io_fail("read", e)),
            }
        }
    }
}

/// Opens an SSE subscriber: GET with `Accept: text/event-stream`, a 200, and the first bytes
/// of the stream (ringcast `: ok`, nchan `: hi`) — by then the server has subscribed it.
/// Returns the connection (those bytes still in its buffer) and whether the body is chunked.
pub async fn open_sse(
    t: &crate::addr::Target,
    path: &str,
    src: Option<Ipv4Addr>,
) -> Result<(Conn, bool), Fail> {
    open_sse_from(t, path, src, None).await
}

/// [`open_sse`], resuming after `last_event_id` (sent as `Last-Event-ID`) when given.
pub async fn open_sse_from(
    t: &crate::addr::Target,
    path: &str,
    src: Option<Ipv4Addr>,
    last_event_id: Option<&str>,
) -> Result<(Conn, bool), Fail> {
    let s = connect(t.addr, src)
        .await
        .map_err(|e| io_fail("connect", e))?;
    let mut c = Conn::new(s);
    let mut req = Vec::with_capacity(128);
    let mut headers = vec![("Accept", "text/event-stream")];
    if let Some(id) = last_event_id {
        headers.push(("Last-Event-ID", id));
    }
    http::encode_request("GET", &t.host, path, &headers, None, &mut req);
    c.write_all(&req).await?;
    let h = c.read_head().await?;
    if h.status != 200 {
        return Err(format!("sse status {}", h.status));
    }
    while c.buf.is_empty() {
        match c.fill().await {
            Ok(0) => return Err("eof before first event bytes".into()),
            Ok(_) => {}
            Err(e) => return Err(io_fail("read", e)),
        }
    }
    Ok((c, h.chunked))
}
