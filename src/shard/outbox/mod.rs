//! What the shard sends to streaming clients: `close.rs` (the WebSocket close codes, one
//! table), `subs.rs` (the slabs of streaming connections and
//! subscriptions, delivery, the slow-client policy), `writer.rs` (the writer's cycles and
//! slices),
//! `chains.rs` (the bytes waiting for the writer, and one connection's write), `out.rs` (`Out`, one client's
//! bounded send queue), `session.rs` (a WebSocket's state between bursts) and `wire.rs` (what a
//! message is in each wire format).
//! Must not: import the shard's core, streams, routes or `http/`; below it is only `topics/`.

pub mod chains;
pub mod close;
pub mod out;
pub mod session;
pub mod subs;
pub mod wire;
pub mod writer;
