//! The state a WebSocket keeps between bursts of reading, boxed in its `Out`: the URL's topic,
//! the subprotocol, and the frame decoder with the partial header carried between reads. What a
//! session does with frames is `ws.rs`; this file only holds the state, so the outbox (`subs.rs`)
//! can own it without importing the WebSocket route.

use std::sync::Arc;

use crate::codec::ws;

/// A WebSocket's state between reads. A parked connection keeps it only when it holds anything
/// (see `Out::session`).
pub struct Session {
    /// The URL's topic: where a raw client's messages go, a v1 `publish`'s default.
    pub(crate) topic: Arc<str>,
    pub(crate) v1: bool,
    /// The frame decoder and the partial header carried between reads.
    pub(crate) rx: ws::Inbound,
    /// A v1 connection's grant (auth on, token given): its subscribes and publishes are checked
    /// against it, a `refresh` replaces it.
    pub(crate) grant: Option<Box<crate::auth::Grant>>,
}
