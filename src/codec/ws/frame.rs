//! Frame headers: parsing the client's, encoding the server's (RFC 6455 §5.2, §5.5).
//!
//! Owns the base framing layout only. It must not look at payload bytes (that is `decoder.rs`),
//! must not require the mask (the decoder does, for client frames) and never consumes a partial
//! header: [`parse_frame_header`] either sees the whole header or answers `Ok(None)`.

use super::error::WsError;

/// The longest header: 2 bytes + 8-byte length + 4-byte mask.
pub const MAX_HEADER_BYTES: usize = 14;
/// Control frames carry at most this many payload bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD_BYTES: usize = 125;

/// Frame opcodes defined by §5.2; the reserved ones are [`WsError::ReservedOpcode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: the next fragment of a text or binary message.
    Continuation,
    /// 0x1: first (or only) frame of a UTF-8 text message.
    Text,
    /// 0x2: first (or only) frame of a binary message.
    Binary,
    /// 0x8: close (§5.5.1).
    Close,
    /// 0x9: ping (§5.5.2).
    Ping,
    /// 0xA: pong (§5.5.3).
    Pong,
}

impl OpCode {
    /// The 4-bit wire value.
    pub const fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Decodes a 4-bit wire value; `None` for the reserved ones.
    pub const fn from_u8(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// Close, ping and pong (§5.5): at most 125 bytes, never fragmented.
    pub const fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A parsed frame header (§5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the last fragment of its message.
    pub fin: bool,
    /// RSV1-3 as the low three bits. Always 0 from [`parse_frame_header`] (no extensions).
    pub rsv: u8,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit was set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes (below 2^63).
    pub payload_len: u64,
    /// Header length in bytes (2..=14); the payload starts here.
    pub header_len: usize,
}

/// Parses one frame header from the front of `buf`.
///
/// `Ok(None)`: the header is not complete yet (nothing is consumed; call again with more bytes).
/// Checks are made as soon as the bytes they need are present, so a prefix of a bad header
/// answers either `Ok(None)` or the same error as the whole header. Validates RSV bits,
/// opcode, minimal length encoding, the 64-bit length's MSB and the control frame rules; does not
/// require the mask.
pub fn parse_frame_header(buf: &[u8]) -> Result<Option<FrameHeader>, WsError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    if rsv != 0 {
        return Err(WsError::ReservedBits);
    }
    let opcode = OpCode::from_u8(b0 & 0x0F).ok_or(WsError::ReservedOpcode)?;
    if opcode.is_control() && !fin {
        return Err(WsError::FragmentedControl);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() && usize::from(len7) > MAX_CONTROL_PAYLOAD_BYTES {
        return Err(WsError::ControlTooLong);
    }
    let (payload_len, mut header_len) = match len7 {
        126 => {
            let Some(bytes) = buf.get(2..4).and_then(|s| <[u8; 2]>::try_from(s).ok()) else {
                return Ok(None);
            };
            let len = u16::from_be_bytes(bytes);
            if len < 126 {
                return Err(WsError::NonMinimalLength);
            }
            (u64::from(len), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(bytes);
            if len >> 63 != 0 {
                return Err(WsError::LengthMsbSet);
            }
            if len <= u64::from(u16::MAX) {
                return Err(WsError::NonMinimalLength);
            }
            (len, 10)
        }
        short => (u64::from(short), 2),
    };
    let mask = if masked {
        let Some(key) = buf
            .get(header_len..header_len + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
        else {
            return Ok(None);
        };
        header_len += 4;
        Some(key)
    } else {
        None
    };
    Ok(Some(FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len,
        header_len,
    }))
}

/// Appends an unmasked (server, §5.1) frame header with the minimal length encoding.
/// The payload is written after it by the caller, so a big payload need not be copied.
pub fn encode_frame_header(out: &mut Vec<u8>, fin: bool, opcode: OpCode, payload_len: u64) {
    let b0 = (u8::from(fin) << 7) | opcode.as_u8();
    if payload_len < 126 {
        // Lossless: checked just above.
        out.extend_from_slice(&[b0, payload_len as u8]);
    } else if let Ok(len16) = u16::try_from(payload_len) {
        let [hi, lo] = len16.to_be_bytes();
        out.extend_from_slice(&[b0, 126, hi, lo]);
    } else {
        out.extend_from_slice(&[b0, 127]);
        out.extend_from_slice(&payload_len.to_be_bytes());
    }
}

/// Appends one whole unfragmented (FIN) server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    encode_frame_header(out, true, opcode, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(
        fin: bool,
        opcode: OpCode,
        mask: Option<[u8; 4]>,
        payload_len: u64,
        header_len: usize,
    ) -> FrameHeader {
        FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len,
            header_len,
        }
    }

    #[test]
    fn parse_vectors() {
        let m = Some([0x37, 0xfa, 0x21, 0x3d]);
        type Row = (&'static [u8], Result<Option<FrameHeader>, WsError>);
        let table: &[Row] = &[
            (b"", Ok(None)),
            (b"\x81", Ok(None)),
            // §5.7 unmasked "Hello"
            (
                b"\x81\x05Hello",
                Ok(Some(hdr(true, OpCode::Text, None, 5, 2))),
            ),
            // §5.7 masked "Hello"
            (
                b"\x81\x85\x37\xfa\x21\x3d",
                Ok(Some(hdr(true, OpCode::Text, m, 5, 6))),
            ),
            (b"\x81\x85\x37\xfa\x21", Ok(None)),
            // §5.7 fragments "Hel" + "lo"
            (
                b"\x01\x03Hel",
                Ok(Some(hdr(false, OpCode::Text, None, 3, 2))),
            ),
            (
                b"\x80\x02lo",
                Ok(Some(hdr(true, OpCode::Continuation, None, 2, 2))),
            ),
            // §5.7 ping / pong
            (
                b"\x89\x05Hello",
                Ok(Some(hdr(true, OpCode::Ping, None, 5, 2))),
            ),
            (
                b"\x8a\x85\x37\xfa\x21\x3d",
                Ok(Some(hdr(true, OpCode::Pong, m, 5, 6))),
            ),
            // §5.7 256 bytes and 64 KiB binary
            (
                b"\x82\x7E\x01\x00",
                Ok(Some(hdr(true, OpCode::Binary, None, 256, 4))),
            ),
            (b"\x82\x7E\x01", Ok(None)),
            (
                b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00",
                Ok(Some(hdr(true, OpCode::Binary, None, 65536, 10))),
            ),
            (b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00", Ok(None)),
            (
                b"\x82\xFF\x00\x00\x00\x00\x00\x01\x00\x00\x01\x02\x03\x04",
                Ok(Some(hdr(
                    true,
                    OpCode::Binary,
                    Some([1, 2, 3, 4]),
                    65536,
                    14,
                ))),
            ),
            (
                b"\x02\x00",
                Ok(Some(hdr(false, OpCode::Binary, None, 0, 2))),
            ),
            (b"\x88\x00", Ok(Some(hdr(true, OpCode::Close, None, 0, 2)))),
            (b"\x89\x7D", Ok(Some(hdr(true, OpCode::Ping, None, 125, 2)))),
            // errors, one per header rule
            (b"\xC1", Err(WsError::ReservedBits)),
            (b"\xA1\x00", Err(WsError::ReservedBits)),
            (b"\x91\x00", Err(WsError::ReservedBits)),
            (b"\x83", Err(WsError::ReservedOpcode)),
            (b"\x87\x00", Err(WsError::ReservedOpcode)),
            (b"\x8B\x00", Err(WsError::ReservedOpcode)),
            (b"\x8F\x00", Err(WsError::ReservedOpcode)),
            (b"\x09", Err(WsError::FragmentedControl)),
            (b"\x89\x7E", Err(WsError::ControlTooLong)),
            (b"\x88\xFE\x00\x7E", Err(WsError::ControlTooLong)),
            (b"\x8A\x7F", Err(WsError::ControlTooLong)),
            (b"\x82\x7E\x00\x7D", Err(WsError::NonMinimalLength)),
            (
                b"\x82\x7F\x00\x00\x00\x00\x00\x00\xFF\xFF",
                Err(WsError::NonMinimalLength),
            ),
            (
                b"\x82\x7F\x80\x00\x00\x00\x00\x00\x00\x00",
                Err(WsError::LengthMsbSet),
            ),
        ];
        for (bytes, want) in table {
            assert_eq!(parse_frame_header(bytes), *want, "{bytes:02x?}");
            // Any prefix answers Ok(None) or the same thing; a longer buffer the same thing.
            for n in 0..bytes.len() {
                let got = parse_frame_header(&bytes[..n]);
                assert!(got == Ok(None) || got == *want, "{bytes:02x?} prefix {n}");
            }
            let mut longer = bytes.to_vec();
            longer.extend_from_slice(&[0xAB; 20]);
            if *want != Ok(None) {
                assert_eq!(parse_frame_header(&longer), *want, "{bytes:02x?}+");
            }
        }
    }

    #[test]
    fn encode_vectors() {
        let table: &[(bool, OpCode, u64, &[u8])] = &[
            (true, OpCode::Text, 5, b"\x81\x05"),
            (false, OpCode::Text, 3, b"\x01\x03"),
            (true, OpCode::Continuation, 2, b"\x80\x02"),
            (true, OpCode::Binary, 0, b"\x82\x00"),
            (true, OpCode::Binary, 125, b"\x82\x7D"),
            (true, OpCode::Binary, 126, b"\x82\x7E\x00\x7E"),
            (true, OpCode::Binary, 256, b"\x82\x7E\x01\x00"),
            (true, OpCode::Binary, 65535, b"\x82\x7E\xFF\xFF"),
            (
                true,
                OpCode::Binary,
                65536,
                b"\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00",
            ),
            (
                true,
                OpCode::Binary,
                u64::MAX >> 1,
                b"\x82\x7F\x7F\xFF\xFF\xFF\xFF\xFF\xFF\xFF",
            ),
            (true, OpCode::Close, 2, b"\x88\x02"),
            (true, OpCode::Ping, 0, b"\x89\x00"),
            (true, OpCode::Pong, 5, b"\x8A\x05"),
        ];
        for &(fin, op, len, want) in table {
            let mut out = vec![0xEE];
            encode_frame_header(&mut out, fin, op, len);
            assert_eq!(&out[1..], want, "{op:?} {len}");
            // What we encode, we parse back (minimal encodings only).
            let h = parse_frame_header(&out[1..]).unwrap().unwrap();
            assert_eq!(h, hdr(fin, op, None, len, want.len()));
        }
    }

    #[test]
    fn encode_whole_frames() {
        let mut out = Vec::new();
        encode_frame(&mut out, OpCode::Text, b"Hello");
        assert_eq!(out, b"\x81\x05Hello");
        for len in [0usize, 125, 126, 256, 65535, 65536, 70000] {
            let payload = vec![7u8; len];
            let mut out = Vec::new();
            encode_frame(&mut out, OpCode::Binary, &payload);
            let h = parse_frame_header(&out).unwrap().unwrap();
            assert_eq!(h.payload_len, len as u64);
            assert_eq!(&out[h.header_len..], &payload[..]);
        }
    }

    #[test]
    fn opcode_roundtrip() {
        for bits in 0..16u8 {
            match OpCode::from_u8(bits) {
                Some(op) => assert_eq!(op.as_u8(), bits),
                None => assert!(matches!(bits, 3..=7 | 0xB..=0xF)),
            }
        }
    }
}
