//! Socket I/O by readiness: io_uring (or epoll) says when, a non-blocking syscall does it.
//!
//! Owns: the shard's view of a connection's I/O — the syscalls themselves live in
//! `sys::socket` and are re-exported here — and the waits for readiness.
//! Why not completion-based reads: an armed io_uring recv needs an owned buffer per waiting
//! connection, which is exactly the memory a million idle connections cannot afford. A readiness
//! poll (`IORING_OP_POLL_ADD`) costs no buffer; the read then goes into a shard-wide buffer.
//! Writes are attempted at once (a socket send buffer almost always has room for a push), so a
//! fanout pass makes one `send` per subscriber and no task switch; only a full socket waits.
//! Must not: hold buffers across waits, or block (every fd is O_NONBLOCK).

use std::io;
use std::os::fd::RawFd;

pub use crate::sys::listener::stop_listening;
pub use crate::sys::socket::{
    discard_input, discard_upto, peer_closed, read_some, set_nonblocking, shutdown_write,
    write_some, writev_some, ReadOutcome,
};

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

/// Bytes asked of the kernel per read.
pub(crate) const READ_CHUNK_BYTES: usize = 16 * 1024;
