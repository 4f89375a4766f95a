//! The shard's readiness set: one edge-triggered epoll instance for its parked streams.
//!
//! Owns: creating the set, registering an fd with a key, harvesting ready events without
//! blocking, and the duplicate of the set's fd that monoio waits on as if it were a socket
//! (readable while an event is ready). `shard::stream::park` says why parked streams live here.
//! Must not: block (every harvest has timeout 0), or close a registered fd (its owner does,
//! which also removes it from the set).

use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// Readable (data, or the peer's FIN).
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable: the send buffer has room.
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// The peer shut down its write side.
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Hung up (always reported).
pub const HUP: u32 = libc::EPOLLHUP as u32;
/// An error on the fd (always reported).
pub const ERR: u32 = libc::EPOLLERR as u32;
/// Edge-triggered: one event per change of state, never a repeat.
pub const ET: u32 = libc::EPOLLET as u32;

/// One ready event: the key it was registered with and what happened.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Event(libc::epoll_event);

impl Event {
    /// An event slot for [`harvest`] to fill.
    pub const EMPTY: Event = Event(libc::epoll_event { events: 0, u64: 0 });

    /// The key given to [`add`].
    pub fn key(&self) -> u64 {
        self.0.u64
    }

    /// What happened: [`IN`], [`OUT`], [`RDHUP`], [`HUP`], [`ERR`] bits.
    pub fn events(&self) -> u32 {
        self.0.events
    }
}

/// A new, empty readiness set (close-on-exec).
pub fn create() -> io::Result<RawFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ep)
}

/// Registers `fd` in set `ep` for `events`; its events come back with `key`.
pub fn add(ep: RawFd, fd: RawFd, events: u32, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: key };
    // SAFETY: epoll_ctl reads the live event struct it is given; bad fds are errors (EBADF).
    let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes up to `events.len()` ready events from set `ep` without waiting; returns how many of
/// `events` it filled (none on an error: the caller's next wait on the set tells again).
pub fn harvest(ep: RawFd, events: &mut [Event]) -> usize {
    let max = events.len().min(i32::MAX as usize) as i32;
    // SAFETY: `Event` is a transparent `epoll_event`, and the kernel writes at most `max`
    // of them into the exclusively borrowed slice; timeout 0 never blocks.
    let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr() as *mut libc::epoll_event, max, 0) };
    n.max(0) as usize
}

/// A new fd for set `ep`, wrapped as a `TcpStream` so an async runtime can wait for it to be
/// readable (which it is while an event is ready). Only readiness is ever asked of it; it is
/// closed when the stream is dropped, and the set lives on through `ep`.
pub fn waiter(ep: RawFd) -> io::Result<std::net::TcpStream> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes no pointers; a bad `ep` is an error (EBADF).
    let dup = unsafe { libc::fcntl(ep, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh fd nothing else owns; the stream closes it on drop. It is not a
    // socket, but the stream is only ever polled for readiness, never read or written.
    Ok(unsafe { std::net::TcpStream::from_raw_fd(dup) })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn harvest_gives_back_the_key_and_the_events() {
        let ep = create().unwrap();
        // SAFETY: `ep` is a fresh fd nothing else owns; the OwnedFd closes it at the end.
        let _owner = unsafe { OwnedFd::from_raw_fd(ep) };
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut events = [Event::EMPTY; 4];
        add(ep, a.as_raw_fd(), IN | ET, 42).unwrap();
        assert_eq!(harvest(ep, &mut events), 0);
        b.write_all(b"x").unwrap();
        assert_eq!(harvest(ep, &mut events), 1);
        assert_eq!(events[0].key(), 42);
        assert_eq!(events[0].events() & IN, IN);
        // Edge-triggered: no repeat for the same state.
        assert_eq!(harvest(ep, &mut events), 0);
        assert!(add(ep, -1, IN, 0).is_err());
        assert_eq!(harvest(-1, &mut events), 0);
        assert!(waiter(ep).is_ok());
    }
}
