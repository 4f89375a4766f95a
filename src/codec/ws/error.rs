//! Framing errors: one variant per way a client stream can violate RFC 6455, each mapped to
//! exactly one close code (§7.4.1): 1002 protocol error, 1007 invalid payload data, 1009 message
//! too big. Handshake errors live with the handshake (`handshake.rs`).

use core::fmt;

/// Close code for a protocol violation (§7.4.1).
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
/// Close code for a text payload (or close reason) that is not UTF-8 (§7.4.1).
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code for a message larger than the configured bound (§7.4.1).
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;

/// Why a client frame stream was rejected. `Copy`, static text; the connection ends with
/// [`WsError::close_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WsError {
    /// RSV1-3 set although no extension was negotiated (§5.2). 1002.
    ReservedBits,
    /// Opcode 0x3-0x7 or 0xB-0xF (§5.2). 1002.
    ReservedOpcode,
    /// A client frame without the MASK bit (§5.1, §5.3). 1002.
    UnmaskedClientFrame,
    /// A 16-bit length below 126 or a 64-bit length below 65536 (§5.2 "minimal number of
    /// bytes"). 1002.
    NonMinimalLength,
    /// The most significant bit of a 64-bit length is set (§5.2). 1002.
    LengthMsbSet,
    /// A control frame with a payload over 125 bytes (§5.5). 1002.
    ControlTooLong,
    /// A control frame without FIN (§5.5). 1002.
    FragmentedControl,
    /// A continuation frame with no message in progress (§5.4). 1002.
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is still in progress (§5.4). 1002.
    ExpectedContinuation,
    /// A text message or close reason that is not valid UTF-8, detected as early as possible
    /// (§5.6, §8.1). 1007.
    InvalidUtf8,
    /// A message (all its fragments together) larger than the decoder's bound (§10.4). 1009.
    MessageTooBig,
    /// A close frame with a 1-byte payload (§5.5.1: 0 bytes, or a 2-byte code first). 1002.
    BadClosePayload,
    /// A close frame whose status code may not appear on the wire (§7.4). 1002.
    BadCloseCode,
}

impl WsError {
    /// The close code the server sends before closing (§7.4.1).
    pub const fn close_code(self) -> u16 {
        match self {
            WsError::InvalidUtf8 => CLOSE_INVALID_PAYLOAD,
            WsError::MessageTooBig => CLOSE_MESSAGE_TOO_BIG,
            WsError::ReservedBits
            | WsError::ReservedOpcode
            | WsError::UnmaskedClientFrame
            | WsError::NonMinimalLength
            | WsError::LengthMsbSet
            | WsError::ControlTooLong
            | WsError::FragmentedControl
            | WsError::UnexpectedContinuation
            | WsError::ExpectedContinuation
            | WsError::BadClosePayload
            | WsError::BadCloseCode => CLOSE_PROTOCOL_ERROR,
        }
    }

    /// A short static reason, fit for a close frame (well under 123 bytes).
    pub const fn reason(self) -> &'static str {
        match self {
            WsError::ReservedBits => "reserved bits set",
            WsError::ReservedOpcode => "reserved opcode",
            WsError::UnmaskedClientFrame => "client frame not masked",
            WsError::NonMinimalLength => "payload length not minimally encoded",
            WsError::LengthMsbSet => "64-bit payload length has its top bit set",
            WsError::ControlTooLong => "control frame payload over 125 bytes",
            WsError::FragmentedControl => "fragmented control frame",
            WsError::UnexpectedContinuation => "continuation frame without a message",
            WsError::ExpectedContinuation => "new message before the previous one ended",
            WsError::InvalidUtf8 => "invalid UTF-8",
            WsError::MessageTooBig => "message too big",
            WsError::BadClosePayload => "close payload of 1 byte",
            WsError::BadCloseCode => "invalid close code",
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes() {
        let all = [
            (WsError::ReservedBits, 1002),
            (WsError::ReservedOpcode, 1002),
            (WsError::UnmaskedClientFrame, 1002),
            (WsError::NonMinimalLength, 1002),
            (WsError::LengthMsbSet, 1002),
            (WsError::ControlTooLong, 1002),
            (WsError::FragmentedControl, 1002),
            (WsError::UnexpectedContinuation, 1002),
            (WsError::ExpectedContinuation, 1002),
            (WsError::InvalidUtf8, 1007),
            (WsError::MessageTooBig, 1009),
            (WsError::BadClosePayload, 1002),
            (WsError::BadCloseCode, 1002),
        ];
        for (e, code) in all {
            assert_eq!(e.close_code(), code, "{e:?}");
            assert!(!e.reason().is_empty() && e.reason().len() <= 123, "{e:?}");
        }
    }
}
