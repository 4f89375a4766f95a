//! ringcast — a real-time push edge node.
//!
//! One HTTP/1.1 port serves short polling, long polling, Server-Sent Events and WebSockets over
//! topic pub/sub, one monoio shard per core.
//!
//! # Layout
//! - [`config`]: command-line flags, validation and defaults (clap); the same flags from
//!   `RINGCAST_*` variables and a `--config` TOML file.
//! - [`runtime`]: shard threads, core pinning, io_uring/epoll driver choice, signals and shutdown.
//! - [`codec`]: pure protocol code — HTTP/1.1 heads and bodies, routes and topics, positions,
//!   SSE events, WebSocket frames. No I/O, no clock, no shard state.
//! - [`shard`]: one core's world (`!Send`): listener, connections in a slab, topics, history.
//! - [`fanout`]: the only code that crosses threads: per-shard lock-free inboxes and wake-ups.
//! - [`backplane`]: with `--redis`, Redis gives positions and keeps history (issue 14): key
//!   names, the Lua scripts, pushed messages.
//! - [`node`]: what all shards share, read-only: config, the bus, metrics, two global caps.
//! - [`sys`]: every libc call and `unsafe` block — sockets, listeners, the epoll readiness set,
//!   key wakers, signals — each argued.
//! - [`metrics`]: per-shard counters, rendered as Prometheus text on `GET /metrics`.
//! - [`log`]: leveled one-line logging to stderr, as text or JSON.

// Unsafe is rare, fenced and argued: every block says why it is sound, every `unsafe fn` what
// its caller must guarantee.
#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

pub mod admission;
pub mod auth;
pub mod backplane;
pub mod codec;
pub mod config;
pub mod fanout;
pub mod log;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod shard;
pub mod sys;
