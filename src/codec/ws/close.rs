//! Close frames: status code validity, payload parsing and encoding (RFC 6455 §5.5.1, §7.4).
//!
//! Owns the rules for the close payload (empty, or a 2-byte code then a UTF-8 reason) and which
//! codes may travel on the wire. Does not decide when to close; the shard does.

use super::error::WsError;
use super::frame::{encode_frame_header, OpCode, MAX_CONTROL_PAYLOAD_BYTES};

/// Normal closure (§7.4.1).
pub const CLOSE_NORMAL: u16 = 1000;
/// The endpoint is going away, e.g. server shutdown (§7.4.1).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Policy violation, e.g. a slow client disconnected (§7.4.1).
pub const CLOSE_POLICY_VIOLATION: u16 = 1008;
/// Unexpected server condition (§7.4.1).
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;
/// The longest close reason: 125 payload bytes minus the 2-byte code.
pub const MAX_CLOSE_REASON_BYTES: usize = MAX_CONTROL_PAYLOAD_BYTES - 2;

/// Whether `code` may appear in a close frame (§7.4.1, §7.4.2, IANA registry).
///
/// Valid: 1000-1003, 1007-1011, 1012-1014 (IANA-registered, widely sent), 3000-4999.
/// Invalid: below 1000, 1004 (reserved), 1005/1006/1015 (never sent: local meaning only),
/// 1016-2999 (reserved for future RFCs), 5000 and up.
pub const fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Checks a complete close payload: empty (`Ok(None)`), or a valid code and a UTF-8 reason.
pub fn parse_close_payload(payload: &[u8]) -> Result<Option<u16>, WsError> {
    match payload {
        [] => Ok(None),
        [_] => Err(WsError::BadClosePayload),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(WsError::BadCloseCode);
            }
            core::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
            Ok(Some(code))
        }
    }
}

/// Appends a whole close frame with `code` and `reason`, the reason cut to
/// [`MAX_CLOSE_REASON_BYTES`] at a char boundary. The caller picks a code that may be sent
/// (see [`is_valid_close_code`]).
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    encode_frame_header(out, true, OpCode::Close, 2 + reason.len() as u64);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ws::frame::parse_frame_header;

    #[test]
    fn close_code_table() {
        let table: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1008, true),
            (1009, true),
            (1010, true),
            (1011, true),
            (1012, true),
            (1013, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (1100, false),
            (2000, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (65535, false),
        ];
        for &(code, valid) in table {
            assert_eq!(is_valid_close_code(code), valid, "{code}");
        }
    }

    #[test]
    fn payloads() {
        type Row = (&'static [u8], Result<Option<u16>, WsError>);
        let table: &[Row] = &[
            (b"", Ok(None)),
            (b"\x03", Err(WsError::BadClosePayload)),
            (b"\x03\xE8", Ok(Some(1000))),
            (b"\x03\xE8bye", Ok(Some(1000))),
            (b"\x0F\xA0\xCE\xBA", Ok(Some(4000))),
            (b"\x03\xED", Err(WsError::BadCloseCode)), // 1005
            (b"\x03\xEE", Err(WsError::BadCloseCode)), // 1006
            (b"\x00\x00", Err(WsError::BadCloseCode)),
            (b"\x03\xE8\xFF", Err(WsError::InvalidUtf8)),
            (b"\x03\xE8\xCE", Err(WsError::InvalidUtf8)),
        ];
        for (p, want) in table {
            assert_eq!(parse_close_payload(p), *want, "{p:02x?}");
        }
    }

    #[test]
    fn encode() {
        let mut out = Vec::new();
        encode_close(&mut out, 1000, "");
        assert_eq!(out, b"\x88\x02\x03\xE8");
        out.clear();
        encode_close(&mut out, 1001, "bye");
        assert_eq!(out, b"\x88\x05\x03\xE9bye");
        // 200 two-byte chars: cut to 122 bytes (61 chars), not mid-char at 123.
        let long = "é".repeat(200);
        out.clear();
        encode_close(&mut out, 4000, &long);
        let h = parse_frame_header(&out).unwrap().unwrap();
        assert_eq!(h.payload_len, 2 + 122);
        assert_eq!(parse_close_payload(&out[h.header_len..]), Ok(Some(4000)));
        let ascii = "x".repeat(300);
        out.clear();
        encode_close(&mut out, 1000, &ascii);
        assert_eq!(out.len(), 2 + 125);
    }
}
