//! The WebSocket close codes ringcast sends, and why each one: the one table.
//!
//! Owns: ringcast's own codes (the 4000–4999 private range of RFC 6455 §7.4.2) and the names
//! under which the shard uses RFC 6455's codes, which `codec::ws` defines (§7.4.1):
//!
//! | code | why |
//! |---|---|
//! | 1000 | the client closed; echoed |
//! | 1001 | the node is draining (`--drain-timeout-secs`) |
//! | 1002 / 1007 / 1009 | protocol error / invalid UTF-8 / message over `--max-message-bytes` (`codec::ws::WsError::close_code`) |
//! | 1008 | slow client: its send buffer hit `--client-buffer-bytes` (`--slow-client disconnect`) |
//! | 1008 | raw mode: a message the client may not publish (`--ws-client-publish off`, or no `publish` claim) |
//! | 1008 | raw mode: messages past `--ws-publish-rate` (`publish rate`); `ringcast.v1` gets an error envelope instead |
//! | 1011 | no pong within `--pong-timeout-secs` of a ping |
//! | 4000 | raw mode only: reset — the resume point is outside history, or messages were dropped; the reason is `reset EPOCH:OFFSET` (the current position) |
//! | 4001 | the stream's token expired (`token expired`); a `ringcast.v1` client may `refresh` before |
//!
//! Must not: repeat a number `codec::ws` already names.

use crate::codec::ws;

/// A slow client (its send buffer hit `--client-buffer-bytes`): a policy violation.
pub(crate) const CLOSE_SLOW_CLIENT: u16 = ws::CLOSE_POLICY_VIOLATION;

/// A raw WebSocket published past `--ws-publish-rate`: a policy violation (reason
/// `publish rate`). A `ringcast.v1` client is answered an error envelope and stays.
pub(crate) const CLOSE_PUBLISH_RATE: u16 = ws::CLOSE_POLICY_VIOLATION;

/// No pong within `--pong-timeout-secs` of a ping.
pub(crate) const CLOSE_PONG_TIMEOUT: u16 = ws::CLOSE_INTERNAL_ERROR;

/// Sent to a raw (no subprotocol) WebSocket whose resume point is outside history or that
/// missed messages under `--slow-client drop`: raw frames carry no envelope to say "reset" in
/// band, so the connection is closed with this code and the current position as the reason;
/// the client reconnects with `?since=` that position after refetching its state.
pub const CLOSE_RESET: u16 = 4000;

/// The stream's token expired (a `ringcast.v1` client could have sent `refresh` before).
pub(crate) const CLOSE_TOKEN_EXPIRED: u16 = 4001;
