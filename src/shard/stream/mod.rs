//! Streams once subscribed: `chores.rs` sweeps every stream (heartbeats and pings, overdue
//! pongs, the staged drain); `park.rs` parks an SSE or WebSocket stream in the shard's readiness
//! set, writes its backlog and ends it with the close code that says why.
//! Must not: import `routes/` or `http/`.

pub mod chores;
pub mod expiry;
pub mod park;
