//! WebSocket protocol, server side (RFC 6455): the opening handshake and the frame codec.
//!
//! Owns: validating an upgrade request and writing the 101 answer (`handshake`, §4.2), frame
//! headers (`frame`, §5.2), unmasking (`mask`, §5.3), incremental UTF-8 validation (`utf8`,
//! §5.6/§8.1), close payloads and codes (`close`, §5.5.1/§7.4) and the client stream decoder
//! (`decoder`, §5.4-§6.2) with what a connection carries between reads (`inbound`). Errors map to one close code or HTTP status each (`error`).
//!
//! Must not: do I/O, read the clock, import the async runtime, the socket API or the shard, panic on peer data,
//! or keep memory for an idle connection. Server frames are never masked (§5.1); no extension is
//! negotiated, so RSV bits are always a protocol error (§5.2).
//!
//! Typical use by a connection: `validate_upgrade` → `accept_key` → `write_101`; then give each
//! read to [`Inbound`] (the decoder plus the partial header carried between reads) until it
//! says the buffer is exhausted, answer [`Event::Ping`] with a pong
//! (`encode_frame`), and on an error send `encode_close(err.close_code(), err.reason())`.

mod close;
mod decoder;
mod error;
mod frame;
mod handshake;
mod inbound;
mod mask;
mod utf8;

#[cfg(test)]
mod tests;

pub use close::{
    encode_close, is_valid_close_code, parse_close_payload, CLOSE_GOING_AWAY, CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, MAX_CLOSE_REASON_BYTES,
};
pub use decoder::{Decoder, Event};
pub use error::{WsError, CLOSE_INVALID_PAYLOAD, CLOSE_MESSAGE_TOO_BIG, CLOSE_PROTOCOL_ERROR};
pub use frame::{
    encode_frame, encode_frame_header, parse_frame_header, FrameHeader, OpCode,
    MAX_CONTROL_PAYLOAD_BYTES, MAX_HEADER_BYTES,
};
pub use handshake::{
    accept_key, offers_protocol, validate_upgrade, write_101, HandshakeError, Upgrade,
    WEBSOCKET_VERSION,
};
pub use inbound::Inbound;
pub use mask::unmask;
pub use utf8::Utf8Validator;
