//! The operating system, fenced: every libc call and every `unsafe` block of the node, each
//! argued where it stands.
//!
//! Owns, one concern per file: `socket.rs` — a connection's syscalls (`recv`, `send`, `writev`,
//! `shutdown`, non-blocking mode, `close`); `listener.rs` — SO_REUSEPORT listening sockets
//! (`socket`, `setsockopt`, `bind`, `listen`) and taking one out of LISTEN; `epoll.rs` — the
//! shard's readiness set for parked streams; `waker.rs` — wakers that carry a key instead of a
//! pointer and allocate nothing; `signal.rs` — blocking SIGINT/SIGTERM, ignoring SIGPIPE, and
//! waiting for a signal; `fds.rs` — growing the process's fd table once, before the shards
//! start; `clock.rs` — the calling thread's CPU clock.
//! Must not: know about shards, connections or topics (fds, buffers and keys in; results out),
//! or hold state. A safe function here is sound for every argument; an `unsafe fn` says in
//! `# Safety` what its caller must guarantee, and each caller says why it does. There is one
//! such caller outside `sys`: `shard::stream::park::finish` closes the fd a parked stream's `Out`
//! owns, an ownership only the shard can vouch for (`tests/layout.rs` lists it and fails on
//! any other `unsafe` or `libc::` outside this module).

pub mod clock;
pub mod epoll;
pub mod fds;
pub mod listener;
pub mod signal;
pub mod socket;
pub mod waker;
