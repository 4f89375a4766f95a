//! What a message looks like on each transport, encoded once per shard.
//!
//! Owns: the mapping from a message (or a reset notice) to bytes for SSE, raw WebSocket
//! frames, `ringcast.v1` JSON envelopes in WebSocket frames, and poll JSON.
//! Must not: do I/O. The codecs do the framing; this file chooses fields.

use std::io::Write;

use base64::Engine as _;

use crate::codec::position::Position;
use crate::codec::{sse, ws};
use crate::fanout::Msg;
use crate::shard::outbox::close;

/// How a connection wants messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Collects messages for one long-poll answer.
    LongPoll,
    Sse,
    /// WebSocket without a subprotocol: the raw payload in a text or binary frame.
    WsRaw,
    /// WebSocket `ringcast.v1`: JSON envelopes.
    WsV1,
    /// A multi-topic SSE stream (`GET /sse?topic=A&topic=B`): `data:` holds the v1 envelope,
    /// and the `id:` line, a stream position token that differs per stream, is written per
    /// stream after these shared bytes (`id_line`): the event is dispatched by the blank line
    /// that ends it, and a field order of `data` then `id` means the same to a browser.
    SseMulti,
}

/// How many `Format`s there are: a message is encoded at most this many times per shard.
pub const FORMATS: usize = 5;

pub fn encode(f: Format, m: &Msg, out: &mut Vec<u8>) {
    match f {
        Format::Sse => {
            let mut id = [0u8; crate::codec::position::MAX_POSITION_BYTES];
            let id = pos_bytes(m.pos, &mut id);
            let ev = m.event.as_deref().map(str::as_bytes);
            if m.binary {
                sse::encode_binary_event(out, id, ev, &m.data);
            } else {
                sse::encode_event(out, id, ev, &m.data);
            }
        }
        Format::WsRaw => {
            let op = if m.binary {
                ws::OpCode::Binary
            } else {
                ws::OpCode::Text
            };
            ws::encode_frame(out, op, &m.data);
        }
        Format::WsV1 => {
            let mut json = Vec::with_capacity(m.data.len() + 96);
            envelope(m, &mut json);
            ws::encode_frame(out, ws::OpCode::Text, &json);
        }
        Format::LongPoll => poll_message(m, out),
        Format::SseMulti => {
            out.extend_from_slice(b"data: ");
            envelope(m, out);
            out.push(b'\n');
        }
    }
}

/// The end of a multi-topic SSE event: `id: TOKEN` and the blank line that dispatches it.
pub fn id_line(token: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(token);
    out.extend_from_slice(b"\n\n");
}

/// The start of a multi-topic SSE reset event (`event: reset`, `data:` the v1 reset envelope);
/// an `id_line` or a blank line ends it.
pub fn sse_multi_reset(topic: &str, current: Position, out: &mut Vec<u8>) {
    out.extend_from_slice(b"event: reset\ndata: ");
    reset_json(topic, current, out);
    out.push(b'\n');
}

/// `{"type":"reset","topic","id"}`: the v1 reset envelope, also a multi-topic poll's entry.
pub fn reset_json(topic: &str, current: Position, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"reset\",\"topic\":");
    json_str(topic, out);
    let _ = write!(out, ",\"id\":\"{current}\"}}");
}

/// The reset notice for a subscription of `topic` now at `current`.
pub fn reset(f: Format, topic: &str, current: Position, out: &mut Vec<u8>) {
    match f {
        Format::Sse => sse::encode_reset(out, &current.to_bytes()),
        Format::WsRaw => {
            let reason = format!("reset {current}");
            ws::encode_close(out, close::CLOSE_RESET, &reason);
        }
        Format::WsV1 => {
            let mut json = Vec::with_capacity(64 + topic.len());
            reset_json(topic, current, &mut json);
            ws::encode_frame(out, ws::OpCode::Text, &json);
        }
        // A whole event: the message after it carries the stream's token.
        Format::SseMulti => {
            sse_multi_reset(topic, current, out);
            out.push(b'\n');
        }
        Format::LongPoll => {}
    }
}

/// Writes `p` into `buf` and returns the written prefix (no allocation).
pub fn pos_bytes(p: Position, buf: &mut [u8; crate::codec::position::MAX_POSITION_BYTES]) -> &[u8] {
    let n = p.encode(buf);
    &buf[..n]
}

/// A JSON string literal (serde_json does the escaping).
pub fn json_str(s: &str, out: &mut Vec<u8>) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// `"data":...` (and `"encoding":"base64"` for binary) of a message.
fn data_fields(m: &Msg, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"data\":");
    if m.binary {
        out.push(b'"');
        base64_into(&m.data, out);
        out.extend_from_slice(b"\",\"encoding\":\"base64\"");
    } else {
        // Text messages are valid UTF-8 by construction (publish decides text vs binary).
        json_str(std::str::from_utf8(&m.data).unwrap_or(""), out);
    }
}

/// A poll answer's message object: `{"id":..,"event":..,"data":..}`.
pub fn poll_message(m: &Msg, out: &mut Vec<u8>) {
    out.push(b'{');
    message_fields(m, out);
}

/// A `ringcast.v1` message envelope: the poll object with its type and topic in front.
pub fn envelope(m: &Msg, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"message\",\"topic\":");
    json_str(&m.topic, out);
    out.push(b',');
    message_fields(m, out);
}

/// `"id":..,"event"?:..,"data":..,"encoding"?:..}` — the end of a message object.
fn message_fields(m: &Msg, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"id\":\"");
    m.pos.write(out);
    out.push(b'"');
    if let Some(e) = &m.event {
        out.extend_from_slice(b",\"event\":");
        json_str(e, out);
    }
    out.push(b',');
    data_fields(m, out);
    out.push(b'}');
}

/// Appends standard base64 (with padding) of `data` to `out`.
pub fn base64_into(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + data.len().div_ceil(3) * 4, 0);
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(data, &mut out[start..])
        .unwrap_or(0);
    out.truncate(start + n);
}

/// `{"type":"subscribed","topic","id","ref"?}`: sent after the replay (or reset) of the
/// subscription, so `id` is the position live messages continue from.
pub(crate) fn subscribed_json(topic: &str, current: Position, r: Option<&str>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"subscribed\",\"topic\":");
    json_str(topic, out);
    if let Some(r) = r {
        out.extend_from_slice(b",\"ref\":");
        json_str(r, out);
    }
    out.extend_from_slice(b",\"id\":\"");
    current.write(out);
    out.extend_from_slice(b"\"}");
}

pub(crate) fn error_json(r: Option<&str>, message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"type\":\"error\"");
    if let Some(r) = r {
        out.extend_from_slice(b",\"ref\":");
        json_str(r, out);
    }
    out.extend_from_slice(b",\"message\":");
    json_str(message, out);
    out.push(b'}');
}
