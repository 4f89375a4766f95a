//! WebSocket client framing and handshake (RFC 6455), sans I/O.
//!
//! Owns: the opening handshake request and the check of `Sec-WebSocket-Accept` (§4.1, §4.2.2),
//! encoding of masked client frames (§5.2, §5.3), and parsing of server frames, which must not be
//! masked (§5.1). `parse_frame_head` consumes nothing and returns `Ok(None)` when the head is not
//! all there yet. Written independently of the server's codec so the two do not share a bug.

use base64::Engine as _;
use sha1::{Digest, Sha1};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The GUID of §1.3 that the accept value is derived with.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A server frame's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub len: u64,
    /// Bytes of the head; the payload starts there.
    pub head_len: usize,
}

/// Why a server frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set without a negotiated extension.
    Reserved,
    /// A server frame with the MASK bit (§5.1: the client must close).
    Masked,
    /// Opcode 3–7 or 0xB–0xF.
    UnknownOpcode,
    /// A control frame longer than 125 bytes or fragmented (§5.5).
    BadControl,
    /// A 64-bit length with the top bit set (§5.2).
    BadLength,
}

/// Parses a server frame head from the start of `buf`; `Ok(None)` if more bytes are needed.
pub fn parse_frame_head(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return Err(FrameError::UnknownOpcode),
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, head_len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(b) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                let l = u64::from_be_bytes(a);
                if l >> 63 != 0 {
                    return Err(FrameError::BadLength);
                }
                (l, 10)
            }
            None => return Ok(None),
        },
        l => (u64::from(l), 2),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(FrameError::BadControl);
    }
    Ok(Some(FrameHead {
        fin,
        opcode,
        len,
        head_len,
    }))
}

/// XORs the masking key into `buf`, whose first byte is payload byte `offset` (§5.3).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

/// Appends one final, masked client frame.
pub fn encode_client_frame(opcode: u8, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | (opcode & 0x0F));
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (§4.2.2 step 5.4).
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A `Sec-WebSocket-Key` from 16 bytes (the caller supplies the randomness).
pub fn key_from(nonce: [u8; 16]) -> String {
    base64::engine::general_purpose::STANDARD.encode(nonce)
}

/// Appends the opening handshake request.
pub fn encode_handshake(host: &str, path: &str, key: &str, out: &mut Vec<u8>) {
    encode_handshake_with(host, path, key, None, out)
}

/// The handshake asking for a subprotocol (`Sec-WebSocket-Protocol`, §4.1 item 10).
pub fn encode_handshake_with(
    host: &str,
    path: &str,
    key: &str,
    protocol: Option<&str>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
        .as_bytes(),
    );
    if let Some(p) = protocol {
        out.extend_from_slice(format!("Sec-WebSocket-Protocol: {p}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// A cheap per-process pseudo-random source for masking keys and nonces (xorshift64*). Masking
/// keys only need to be unpredictable to scripts in a browser; a load tool has none.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn mask_key(&mut self) -> [u8; 4] {
        (self.next_u64() as u32).to_ne_bytes()
    }
    pub fn nonce(&mut self) -> [u8; 16] {
        let mut n = [0u8; 16];
        n[..8].copy_from_slice(&self.next_u64().to_ne_bytes());
        n[8..].copy_from_slice(&self.next_u64().to_ne_bytes());
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_accept_example() {
        // §1.3
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(key_from([0; 16]).len(), 24);
    }

    #[test]
    fn handshakes_with_and_without_a_subprotocol() {
        let mut a = Vec::new();
        encode_handshake("h:1", "/ws/t", "k", &mut a);
        let mut b = Vec::new();
        encode_handshake_with("h:1", "/ws/t", "k", Some("ringcast.v1"), &mut b);
        let a = String::from_utf8(a).unwrap();
        let b = String::from_utf8(b).unwrap();
        assert!(a.ends_with("Sec-WebSocket-Version: 13\r\n\r\n"), "{a}");
        assert!(!a.contains("Protocol"));
        assert_eq!(
            b,
            a.replace(
                "\r\n\r\n",
                "\r\nSec-WebSocket-Protocol: ringcast.v1\r\n\r\n"
            )
        );
    }

    #[test]
    fn rfc6455_masked_hello() {
        // §5.7: a single-frame masked text message "Hello".
        let mut out = Vec::new();
        encode_client_frame(OP_TEXT, b"Hello", [0x37, 0xfa, 0x21, 0x3d], &mut out);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn masked_lengths_and_unmask_round_trip() {
        let key = [1, 2, 3, 4];
        for &n in &[0usize, 1, 125, 126, 127, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode_client_frame(OP_BINARY, &payload, key, &mut out);
            let (hl, lenbyte) = match n {
                0..=125 => (2, n as u8),
                126..=65535 => (4, 126),
                _ => (10, 127),
            };
            assert_eq!(out[0], 0x82);
            assert_eq!(out[1], 0x80 | lenbyte);
            assert_eq!(&out[hl..hl + 4], &key);
            let mut body = out[hl + 4..].to_vec();
            // Unmask in two pieces at every offset modulo 4.
            let k = n / 3;
            let (a, b) = body.split_at_mut(k);
            apply_mask(a, key, 0);
            apply_mask(b, key, k);
            assert_eq!(body, payload, "len {n}");
        }
    }

    #[test]
    fn parse_server_heads() {
        let ok: &[(&[u8], Option<FrameHead>)] = &[
            (b"", None),
            (b"\x81", None),
            (
                b"\x81\x05Hello",
                Some(FrameHead {
                    fin: true,
                    opcode: OP_TEXT,
                    len: 5,
                    head_len: 2,
                }),
            ),
            (b"\x82\x7e\x01", None),
            (
                b"\x82\x7e\x01\x00",
                Some(FrameHead {
                    fin: true,
                    opcode: OP_BINARY,
                    len: 256,
                    head_len: 4,
                }),
            ),
            (b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00", None),
            (
                b"\x02\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
                Some(FrameHead {
                    fin: false,
                    opcode: OP_BINARY,
                    len: 65536,
                    head_len: 10,
                }),
            ),
            (
                b"\x89\x00",
                Some(FrameHead {
                    fin: true,
                    opcode: OP_PING,
                    len: 0,
                    head_len: 2,
                }),
            ),
            (
                b"\x80\x03abc",
                Some(FrameHead {
                    fin: true,
                    opcode: OP_CONT,
                    len: 3,
                    head_len: 2,
                }),
            ),
        ];
        for (i, (buf, want)) in ok.iter().enumerate() {
            assert_eq!(parse_frame_head(buf), Ok(*want), "case {i}");
        }
        let bad: &[(&[u8], FrameError)] = &[
            (b"\xc1\x00", FrameError::Reserved),
            (b"\x81\x85abcd", FrameError::Masked),
            (b"\x83\x00", FrameError::UnknownOpcode),
            (b"\x8b\x00", FrameError::UnknownOpcode),
            (b"\x09\x00", FrameError::BadControl),
            (b"\x88\x7e\x00\x7e", FrameError::BadControl),
            (
                b"\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x00",
                FrameError::BadLength,
            ),
        ];
        for (i, (buf, want)) in bad.iter().enumerate() {
            assert_eq!(parse_frame_head(buf), Err(*want), "bad case {i}");
        }
    }

    #[test]
    fn rng_keys_vary() {
        let mut r = Rng::new(7);
        let a = r.mask_key();
        let b = r.mask_key();
        assert_ne!(a, b);
        assert_ne!(r.nonce(), r.nonce());
    }
}
