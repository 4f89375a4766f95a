//! Message positions `EPOCH:OFFSET` (DESIGN.md "Positions, resume and reset").
//!
//! Owns: the one textual form of a position, shared by every transport — the SSE `id:`, the poll
//! `since`/`next` cursor, the WebSocket `since` parameter and envelope `id`, and what `POST /pub`
//! answers. EPOCH is lowercase hex (1–16 digits) naming one incarnation of a topic's stream;
//! OFFSET is decimal, counting the topic's messages from 1 (0 = "before the first message").
//! Must not: decide what a position means for a topic (that is the home shard's history).

use std::fmt;

use crate::codec::decimal;

/// Longest textual position: 16 hex digits, ':', 20 decimal digits.
pub const MAX_POSITION_BYTES: usize = 16 + 1 + 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub epoch: u64,
    pub offset: u64,
}

/// Why a client's position could not be read. Never an HTTP error: a bad position is answered
/// with a reset (DESIGN.md), so this only says which kind of bad it was, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PositionError {
    /// Not `HEX:DECIMAL`.
    Malformed,
    /// A part has too many digits for a u64.
    Overflow,
}

impl fmt::Display for PositionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PositionError::Malformed => "position is not EPOCH:OFFSET",
            PositionError::Overflow => "position part out of range",
        })
    }
}

impl Position {
    pub const fn new(epoch: u64, offset: u64) -> Self {
        Position { epoch, offset }
    }

    /// Parses `EPOCH:OFFSET` strictly: no sign, no spaces, no empty part, no leading `0x`.
    pub fn parse(s: &[u8]) -> Result<Position, PositionError> {
        if s.len() > MAX_POSITION_BYTES {
            return Err(PositionError::Malformed);
        }
        let colon = s
            .iter()
            .position(|&b| b == b':')
            .ok_or(PositionError::Malformed)?;
        let (e, o) = (&s[..colon], &s[colon + 1..]);
        if e.is_empty() || o.is_empty() || e.len() > 16 || o.len() > 20 {
            return Err(PositionError::Malformed);
        }
        let mut epoch: u64 = 0;
        for &b in e {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return Err(PositionError::Malformed),
            };
            epoch = (epoch << 4) | u64::from(d);
        }
        let mut offset: u64 = 0;
        for &b in o {
            if !b.is_ascii_digit() {
                return Err(PositionError::Malformed);
            }
            offset = offset
                .checked_mul(10)
                .and_then(|v| v.checked_add(u64::from(b - b'0')))
                .ok_or(PositionError::Overflow)?;
        }
        Ok(Position { epoch, offset })
    }

    /// Appends the textual form to `out`. Hand-written rather than `write!`: a poll answer
    /// writes two or three positions (ETag, ids, `next`), and the formatting machinery was a
    /// visible part of the short-poll profile.
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; MAX_POSITION_BYTES];
        let n = self.encode(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }

    /// Writes the textual form into the front of `buf`; returns its length.
    pub fn encode(&self, buf: &mut [u8; MAX_POSITION_BYTES]) -> usize {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let hex_digits = (16 - self.epoch.leading_zeros() as usize / 4).max(1);
        for (i, b) in buf[..hex_digits].iter_mut().enumerate() {
            let shift = 4 * (hex_digits - 1 - i);
            *b = HEX[((self.epoch >> shift) & 0xf) as usize];
        }
        buf[hex_digits] = b':';
        let mut digits = [0u8; decimal::MAX_U64_DIGITS];
        let digits = decimal::u64_digits(self.offset, &mut digits);
        let len = hex_digits + 1 + digits.len();
        buf[hex_digits + 1..len].copy_from_slice(digits);
        len
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(24);
        self.write(&mut v);
        v
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}:{}", self.epoch, self.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for p in [
            Position::new(0, 0),
            Position::new(1, 1),
            Position::new(0xdead_beef, 42),
            Position::new(u64::MAX, u64::MAX),
            Position::new(0xf, 10),
            Position::new(0x10, 9),
            Position::new(1 << 60, 1_000_000_007),
        ] {
            assert_eq!(Position::parse(&p.to_bytes()), Ok(p));
            // The hand-written encoder against the formatting oracle.
            assert_eq!(
                p.to_bytes(),
                format!("{:x}:{}", p.epoch, p.offset).into_bytes()
            );
            assert_eq!(p.to_string().as_bytes(), &p.to_bytes()[..]);
        }
    }

    #[test]
    fn vectors() {
        let ok: &[(&[u8], Position)] = &[
            (b"a:1", Position::new(10, 1)),
            (b"0:0", Position::new(0, 0)),
            (
                b"ffffffffffffffff:18446744073709551615",
                Position::new(u64::MAX, u64::MAX),
            ),
            (b"00ab:007", Position::new(0xab, 7)),
        ];
        for (s, p) in ok {
            assert_eq!(Position::parse(s), Ok(*p), "{}", String::from_utf8_lossy(s));
        }
        let bad: &[(&[u8], PositionError)] = &[
            (b"", PositionError::Malformed),
            (b"12", PositionError::Malformed),
            (b":1", PositionError::Malformed),
            (b"a:", PositionError::Malformed),
            (b"A:1", PositionError::Malformed),
            (b"0xa:1", PositionError::Malformed),
            (b"a:-1", PositionError::Malformed),
            (b"a:1 ", PositionError::Malformed),
            (b" a:1", PositionError::Malformed),
            (b"a:1:2", PositionError::Malformed),
            (b"g:1", PositionError::Malformed),
            (b"10000000000000000:1", PositionError::Malformed),
            (b"a:18446744073709551616", PositionError::Overflow),
            (b"a:99999999999999999999", PositionError::Overflow),
        ];
        for (s, e) in bad {
            assert_eq!(
                Position::parse(s),
                Err(*e),
                "{}",
                String::from_utf8_lossy(s)
            );
        }
    }
}
