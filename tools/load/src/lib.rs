//! ringcast-load: the load generator shipped with ringcast, and the raw `write()` baseline.
//!
//! # Layout
//! - Pure, unit-tested pieces (no sockets, no clock): [`payload`] (what every message carries),
//!   [`sse`] (event-stream parsing across arbitrary splits), [`ws`] (client frames, masking,
//!   handshake), [`http`] (request encoding, response heads, chunked bodies), [`track`]
//!   (missing / duplicated / out-of-order accounting, and with `--resume` what is uncertain
//!   or skipped by a reset), [`resume`] (`--resume`'s backoff, v1 envelopes, reset closes,
//!   what a publish's answer means), [`addr`] (URL templates, source ranges), [`stats`]
//!   (histograms, /proc parsing).
//! - I/O: [`net`] (connect from a source address, buffered reads, CLOCK_MONOTONIC, nofile),
//!   [`stamp`] (the kernel's receive timestamps; `tests/storm.rs` uses the same file),
//!   [`wsconn`] (a WebSocket client connection), [`link`] (parent ↔ worker messages, in one
//!   process or across several), [`run`] (what the modes share).
//! - Modes: [`fanout`] (its publisher: [`publisher`]), [`hold`], [`echo`]; `main.rs` is
//!   flags → mode.
//!
//! The tool runs one tokio current-thread runtime per process; every connection is a task on a
//! `LocalSet`, so per-run state is `Rc`/`Cell` and nothing is locked.

pub mod addr;
pub mod cli;
pub mod echo;
pub mod fanout;
pub mod hold;
pub mod http;
pub mod link;
pub mod net;
pub mod payload;
pub mod publisher;
pub mod resume;
pub mod run;
pub mod sse;
pub mod stamp;
pub mod stats;
pub mod track;
pub mod ws;
pub mod wsconn;
