//! A connection's syscalls: non-blocking `recv`, `send` and `writev` on borrowed buffers,
//! `shutdown`, `close`.
//!
//! Owns: the syscalls the shard makes on a connection itself (`shard::io` says why readiness
//! plus a syscall, not io_uring completions; `shard::outbox::subs` why one `writev` per connection per
//! pass). Every call is non-blocking: `WouldBlock` is an outcome, `EINTR` is retried.
//! Must not: block, keep a buffer, or close an fd it was not given ownership of ([`close`] is
//! the only function that ends an fd, and it is `unsafe` for that reason).

use std::io::{self, IoSlice};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Outcome of one non-blocking read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    Data(usize),
    /// Nothing to read now.
    WouldBlock,
    /// Orderly shutdown by the peer.
    Eof,
}

/// Most slices one `writev` takes (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;

pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL/F_SETFL) takes no pointers; on an fd that is not open it fails with
    // EBADF, which is returned.
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
    n == 0 || (n < 0 && failed_now())
}

/// Reads whatever the peer sent into a small stack buffer and discards it, until the socket
/// has nothing more. True when the peer closed (or the socket failed).
pub fn discard_input(fd: RawFd) -> bool {
    let mut scratch = [0u8; 512];
    loop {
        // SAFETY: recv of at most scratch.len() bytes into a live stack buffer.
        let n = unsafe {
            libc::recv(
                fd,
                scratch.as_mut_ptr() as *mut libc::c_void,
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return n == 0 || failed_now();
        }
    }
}

/// Reads and discards at most `max` bytes of what the peer has sent already, without waiting:
/// for a socket about to be closed, whose unread request would turn the close into a reset.
/// Bounded, so a peer that keeps sending cannot hold the caller.
pub fn discard_upto(fd: RawFd, max: usize) {
    let mut scratch = [0u8; 512];
    let mut left = max;
    while left > 0 {
        let want = left.min(scratch.len());
        // SAFETY: recv of at most `want` (≤ scratch.len()) bytes into a live stack buffer.
        let n = unsafe {
            libc::recv(
                fd,
                scratch.as_mut_ptr() as *mut libc::c_void,
                want,
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return;
        }
        left -= n as usize;
    }
}

/// After a `recv` returned -1: did the socket fail (true), or is there only nothing to read
/// now (would block, or a signal interrupted the call)?
fn failed_now() -> bool {
    !matches!(
        io::Error::last_os_error().kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
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

/// One `writev` of `slices`, in order: a short write leaves the tail to the caller, so no loop
/// here. At most IOV_MAX (1024) slices go in one call; the rest count as not written. A full
/// socket is `Ok(0)`.
pub fn writev_some(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let cnt = slices.len().min(IOV_MAX) as libc::c_int;
    loop {
        // SAFETY: `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix, and each
        // one borrows live memory for the duration of this call; `cnt` is at most their number.
        let n = unsafe { libc::writev(fd, slices.as_ptr() as *const libc::iovec, cnt) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => return Ok(0),
            io::ErrorKind::Interrupted => continue,
            _ => return Err(e),
        }
    }
}

/// Shuts down the write side, then lets the kernel finish sending what is queued.
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown(2) takes no pointers and does not close the fd; errors (a peer already
    // gone, an fd that is not a socket) are irrelevant here.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Closes `fd`, which also takes it out of every epoll set it is in.
///
/// # Safety
///
/// The caller owns `fd` (nothing else will use or close it) and does not use it afterwards:
/// closing an fd someone else owns would let the number be reused under them.
pub unsafe fn close(fd: RawFd) {
    // SAFETY: the caller hands over ownership of `fd`, which the OwnedFd closes on drop.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (UnixStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn writev_writes_the_slices_in_order() {
        let (a, mut b) = pair();
        let parts: [&[u8]; 3] = [b"one ", b"", b"two"];
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        assert_eq!(writev_some(a.as_raw_fd(), &slices).unwrap(), 7);
        let mut got = [0u8; 7];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one two");
    }

    #[test]
    fn reads_peeks_and_discards() {
        let (a, mut b) = pair();
        let fd = a.as_raw_fd();
        let mut buf = b"x".to_vec();
        assert_eq!(
            read_some(fd, &mut buf, 16).unwrap(),
            ReadOutcome::WouldBlock
        );
        assert!(!peer_closed(fd));
        assert!(!discard_input(fd));
        b.write_all(b"hello").unwrap();
        assert!(!peer_closed(fd));
        assert_eq!(read_some(fd, &mut buf, 3).unwrap(), ReadOutcome::Data(3));
        assert_eq!(buf, b"xhel");
        assert_eq!(write_some(fd, b"back").unwrap(), 4);
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"back");
        assert!(
            !discard_input(fd),
            "the rest is discarded, the peer is still there"
        );
        assert_eq!(
            read_some(fd, &mut buf, 16).unwrap(),
            ReadOutcome::WouldBlock
        );
        drop(b);
        assert!(peer_closed(fd));
        assert_eq!(read_some(fd, &mut buf, 16).unwrap(), ReadOutcome::Eof);
        assert!(discard_input(fd));
    }
}
