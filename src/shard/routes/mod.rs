//! What the router dispatches to: `poll.rs` (short and long polls), `publish.rs`, `sse.rs`
//! (event streams), `ws.rs` (the WebSocket upgrade and its bursts, v1 commands), `multi.rs`
//! (many topics on one SSE stream or poll) and `topics.rs` (a topic's position and
//! subscriber count), with what
//! every route shares: `answer.rs` (`Req`, `Answer`, `Next`, CORS) and `connio.rs` (`Conn`, a
//! connection's socket and buffers). `stats.rs` serves the operators' `/stats` and `/status`.
//! Must not: import `http/` (the router is above the routes, not beside them).

pub mod answer;
pub mod authz;
pub mod connio;
pub mod multi;
pub mod poll;
pub mod publish;
pub mod sse;
pub mod stats;
pub mod topics;
pub mod v1;
pub mod ws;
