//! Listening sockets: created, flagged, bound and put in LISTEN by hand, so that every shard can
//! have its own SO_REUSEPORT listener on one port (std has no way to set SO_REUSEPORT before
//! `bind`), and taken out of LISTEN at drain.
//!
//! Owns: `socket`, `setsockopt`, `bind`, `listen` and `shutdown` on listening sockets, and the
//! `sockaddr` a `SocketAddr` becomes. `runtime` decides which flags and what to say on failure.
//! Must not: accept connections (monoio does) or pick addresses.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// A new non-blocking, close-on-exec TCP socket for `addr`'s family, not yet bound.
pub fn new_socket(addr: SocketAddr) -> io::Result<TcpListener> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2), no pointers; the fd is owned by the TcpListener below.
    let fd = unsafe {
        libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nothing else owns; the listener closes it on drop.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

/// SO_REUSEADDR: bind even while old connections on the port are in TIME_WAIT.
pub fn set_reuseaddr(sock: &TcpListener) -> io::Result<()> {
    set_flag(sock, libc::SO_REUSEADDR)
}

/// SO_REUSEPORT: several sockets (one per shard) listen on one port; the kernel spreads new
/// connections among them.
pub fn set_reuseport(sock: &TcpListener) -> io::Result<()> {
    set_flag(sock, libc::SO_REUSEPORT)
}

fn set_flag(sock: &TcpListener, opt: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with the socket's open fd and a pointer to a live c_int of the size
    // given.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn bind(sock: &TcpListener, addr: SocketAddr) -> io::Result<()> {
    let (sa, len) = sockaddr_of(addr);
    // SAFETY: sa is an initialised sockaddr_storage whose first `len` bytes are the address.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn listen(sock: &TcpListener, backlog: i32) -> io::Result<()> {
    // SAFETY: listen(2) on the socket's open fd; no pointers.
    if unsafe { libc::listen(sock.as_raw_fd(), backlog) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes a listening socket out of LISTEN now, whoever else still holds its file. A closed
/// listener's file lives on while an io_uring accept refers to it (until the ring's teardown,
/// after the process exits): meanwhile the kernel would keep completing handshakes nobody
/// accepts, and a restarted node could not bind the port. After this, connection attempts are
/// refused at once and the port is free.
pub fn stop_listening(fd: RawFd) {
    // SAFETY: shutdown(2) takes no pointers and does not close the fd; on Linux it stops a
    // listening socket's queue (pending accepts fail), and the fd stays valid for its owner.
    unsafe {
        libc::shutdown(fd, libc::SHUT_RDWR);
    }
}

/// A `sockaddr_storage` and its length for `addr`, for bind(2).
fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
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
