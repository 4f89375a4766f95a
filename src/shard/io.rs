//! Socket I/O by readiness: io_uring (or epoll) says when, a non-blocking syscall does it.
//!
//! Owns: the few syscalls the shard makes on a connection itself — `recv` into a borrowed
//! buffer, `send` from a borrowed slice — and the waits for readiness.
//! Why not completion-based reads: an armed io_uring recv needs an owned buffer per waiting
//! connection, which is exactly the memory a million idle connections cannot afford. A readiness
//! poll (`IORING_OP_POLL_ADD`) costs no buffer; the read then goes into a shard-wide buffer.
//! Writes are attempted at once (a socket send buffer almost always has room for a push), so a
//! fanout pass makes one `send` per subscriber and no task switch; only a full socket waits.
//! Must not: hold buffers across waits, or block (every fd is O_NONBLOCK).

use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Outcome of one non-blocking read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// Orderly shutdown by the peer.
    Eof,
}

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd owned by the caller's stream.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Reads once into the spare capacity of `buf` (at most `max` more bytes).
pub fn read_some(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<ReadOutcome> {
    if buf.capacity() - buf.len() < max {
        buf.reserve(max);
    }
    let spare = buf.capacity() - buf.len();
    let want = spare.min(max.max(1));
    loop {
        // SAFETY: writes at most `want` bytes into the vector's spare capacity, which is
        // allocated and exclusively borrowed; len is advanced only by what recv reported.
        let n = unsafe {
            libc::recv(
                fd,
                buf.as_mut_ptr().add(buf.len()) as *mut libc::c_void,
                want,
                0,
            )
        };
        if n > 0 {
            // SAFETY: recv initialised exactly n bytes past len, and n <= want <= spare.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(ReadOutcome::Data(n as usize));
        }
        if n == 0 {
            return Ok(ReadOutcome::Eof);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(ReadOutcome::WouldBlock),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Is the peer gone? Peeks one byte without consuming it.
pub fn peer_closed(fd: RawFd) -> bool {
    let mut b = 0u8;
    // SAFETY: recv of at most 1 byte into a live local, with MSG_PEEK so nothing is consumed.
    let n = unsafe {
        libc::recv(
            fd,
            &mut b as *mut u8 as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n == 0 {
        return true;
    }
    if n < 0 {
        let e = io::Error::last_os_error();
        return !matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
        );
    }
    false
}

/// Writes as much of `buf` as the socket takes now. `Ok(n)` with `n < buf.len()` means full.
pub fn write_some(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: send from a live, borrowed slice; MSG_NOSIGNAL so a closed peer is an
        // EPIPE error, not a SIGPIPE.
        let n = unsafe {
            libc::send(
                fd,
                buf[done..].as_ptr() as *const libc::c_void,
                buf.len() - done,
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => break,
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
    Ok(done)
}

/// Writes all of `buf`, waiting for writability when the socket is full.
pub async fn write_all(stream: &monoio::net::TcpStream, fd: RawFd, buf: &[u8]) -> io::Result<()> {
    let mut done = 0;
    loop {
        done += write_some(fd, &buf[done..])?;
        if done == buf.len() {
            return Ok(());
        }
        stream.writable(false).await?;
    }
}

/// Shuts down the write side, then lets the kernel finish sending what is queued.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown(2) on an fd owned by the caller's stream; errors are irrelevant here.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Takes a listening socket out of LISTEN now, whoever else still holds its file. A closed
/// listener's file lives on while an io_uring accept refers to it (until the ring's teardown,
/// after the process exits): meanwhile the kernel would keep completing handshakes nobody
/// accepts, and a restarted node could not bind the port. After this, connection attempts are
/// refused at once and the port is free.
pub fn stop_listening(fd: RawFd) {
    // SAFETY: shutdown(2) on a listening socket the caller owns; on Linux it stops the listen
    // queue (pending accepts fail) and the fd stays valid until the caller closes it.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// A `sockaddr_storage` and its length for `addr`, for bind(2).
pub fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: an all-zero sockaddr_storage is a valid value; the family-specific view written
    // below fits inside it (sockaddr_storage is the largest sockaddr).
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage; both are plain old data.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage; both are plain old data.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            (
                ss,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}
