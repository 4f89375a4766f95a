//! Chunked request bodies (RFC 9112 §7.1), decoded incrementally.
//!
//! Owns: [`ChunkedDecoder`], a byte-at-a-time state machine for the framing with a fast path
//! for chunk data, and the bounds on what a peer can make it do (line length, extension and
//! trailer bytes, body size). Extensions are ignored, trailers skipped.
//! Must not: consume a byte past the body's final CRLF (a pipelined request may follow), accept
//! a bare LF in the framing, or panic on any input: every rejection is a [`BodyError`].

use std::fmt;

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Malformed chunked framing: bad hex, size overflow, missing CRLF, over-long chunk-size or
    /// trailer line, too many extension/trailer bytes (400, RFC 9112 §7.1).
    BadChunk,
    /// The decoded body exceeds the configured maximum (413, RFC 9110 §15.5.14).
    TooLarge,
}

impl BodyError {
    /// The HTTP status to answer with.
    pub(crate) fn status(self) -> u16 {
        match self {
            BodyError::BadChunk => 400,
            BodyError::TooLarge => 413,
        }
    }

    /// A short static description.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            BodyError::BadChunk => "malformed chunked body",
            BodyError::TooLarge => "request body too large",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BodyError {}

/// Longest chunk-size line (size + extensions) or trailer line the chunked decoder accepts.
pub(crate) const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Total chunk-extension and trailer bytes accepted in one chunked body: bounds the work a peer
/// can make us do per payload byte (many tiny chunks with long extensions).
pub(crate) const MAX_CHUNK_OVERHEAD_BYTES: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// In the hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only more whitespace or `;` may follow (BWS).
    SizeWs,
    /// In a chunk extension: skipped up to CR.
    Ext,
    /// Saw the CR ending the chunk-size line.
    SizeLf,
    /// In chunk data.
    Data,
    /// Expect the CR after chunk data.
    DataCr,
    /// Expect the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer field line: skipped up to CR.
    Trailer,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    Done,
    Failed(BodyError),
}

/// Incremental decoder for a chunked request body (RFC 9112 §7.1).
///
/// Feed it any split of the body; it consumes everything it can and stops right after the
/// final CRLF, so bytes of a pipelined request are left to the caller.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    max_body_bytes: u64,
    total: u64,
    /// Size of the chunk being read, then bytes of it still to come.
    remaining: u64,
    /// Bytes of the current chunk-size or trailer line.
    line_bytes: usize,
    /// Extension and trailer bytes so far, bounded by [`MAX_CHUNK_OVERHEAD_BYTES`].
    overhead_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder for one body of at most `max_body_bytes` decoded bytes.
    pub fn new(max_body_bytes: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0 },
            max_body_bytes: max_body_bytes as u64,
            total: 0,
            remaining: 0,
            line_bytes: 0,
            overhead_bytes: 0,
        }
    }

    /// Whether the final chunk and trailers have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Appends decoded payload to `out`; returns (bytes consumed from `input`, done).
    /// Chunk extensions are ignored and trailers skipped. After an error, every call returns
    /// the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), BodyError> {
        let mut i = 0;
        while i < input.len() {
            if let ChunkState::Data = self.state {
                let n =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            if matches!(self.state, ChunkState::Done | ChunkState::Failed(_)) {
                break;
            }
            let b = input[i];
            i += 1;
            match self.step(b) {
                Ok(s) => self.state = s,
                Err(e) => {
                    self.state = ChunkState::Failed(e);
                    return Err(e);
                }
            }
        }
        match self.state {
            ChunkState::Failed(e) => Err(e),
            s => Ok((i, s == ChunkState::Done)),
        }
    }

    /// One framing byte (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<ChunkState, BodyError> {
        use ChunkState::*;
        let line_state = matches!(self.state, Size { .. } | SizeWs | Ext | Trailer);
        // The cap counts the line without its CR.
        if line_state && b != b'\r' {
            self.line_bytes += 1;
            if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                return Err(BodyError::BadChunk);
            }
        }
        if matches!(self.state, SizeWs | Ext | Trailer | TrailerStart) {
            self.overhead_bytes += 1;
            if self.overhead_bytes > MAX_CHUNK_OVERHEAD_BYTES {
                return Err(BodyError::BadChunk);
            }
        }
        Ok(match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                if self.remaining > u64::MAX >> 4 {
                    return Err(BodyError::BadChunk);
                }
                let d = (b as char).to_digit(16).unwrap_or_default();
                self.remaining = self.remaining << 4 | u64::from(d);
                Size {
                    digits: digits.saturating_add(1),
                }
            }
            (Size { digits: 0 }, _) => return Err(BodyError::BadChunk),
            (Size { .. }, b'\r') | (Ext, b'\r') => SizeLf,
            (Size { .. } | SizeWs, b' ' | b'\t') => SizeWs,
            (Size { .. } | SizeWs, b';') => Ext,
            (Ext, _) if is_field_byte(b) => Ext,
            (SizeLf, b'\n') => {
                self.line_bytes = 0;
                if self.remaining > self.max_body_bytes - self.total {
                    return Err(BodyError::TooLarge);
                }
                self.total += self.remaining;
                if self.remaining == 0 {
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0 },
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if is_field_byte(b) => {
                self.line_bytes = 1;
                Trailer
            }
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) if is_field_byte(b) => Trailer,
            (TrailerLf, b'\n') => {
                self.line_bytes = 0;
                TrailerStart
            }
            (EndLf, b'\n') => Done,
            _ => return Err(BodyError::BadChunk),
        })
    }
}

/// Bytes allowed inside an extension or trailer line: VCHAR, obs-text, SP, HTAB.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNKED_OK: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n000\r\n\r\n", b"0123456789"),
        (b"005\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5;ext=1;b=\"q\"\r\nhello\r\n0;last\r\n\r\n", b"hello"),
        (b"5 ;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", b"hello"),
        (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
    ];

    const CHUNKED_BAD: &[(&[u8], BodyError)] = &[
        (b"x\r\n", BodyError::BadChunk),
        (b"\r\n", BodyError::BadChunk),
        (b";ext\r\n", BodyError::BadChunk),
        (b"5\nhello\r\n0\r\n\r\n", BodyError::BadChunk),
        (b"5\r\nhelloX\r\n", BodyError::BadChunk),
        (b"5\r\nhello\n0\r\n\r\n", BodyError::BadChunk),
        (b"5 x\r\nhello\r\n", BodyError::BadChunk),
        (b"5;\x01\r\nhello\r\n", BodyError::BadChunk),
        (b"0\r\nX: 1\n\r\n", BodyError::BadChunk),
        (b"0\r\n\r\r", BodyError::BadChunk),
        (b"-1\r\n", BodyError::BadChunk),
        (b"10000000000000000\r\n", BodyError::BadChunk),
        (b"65\r\n", BodyError::TooLarge),
        (b"64\r\n", BodyError::TooLarge),
        (b"32\r\n", BodyError::TooLarge),
        (
            b"31\r\n0123456789012345678901234567890123456789012345678\r\n1\r\n",
            BodyError::TooLarge,
        ),
    ];

    /// Decodes `input` fed in the given pieces; returns (payload, consumed, done) or the error.
    fn decode_pieces(pieces: &[&[u8]], max: usize) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for p in pieces {
            let (n, dn) = d.decode(p, &mut out)?;
            consumed += n;
            done = dn;
            if done {
                break;
            }
            assert_eq!(n, p.len(), "not done but left bytes");
        }
        Ok((out, consumed, done))
    }

    #[test]
    fn chunked_vectors_whole_split_and_bytewise() {
        for (input, want) in CHUNKED_OK {
            let whole = decode_pieces(&[input], 48);
            assert_eq!(whole, Ok((want.to_vec(), input.len(), true)), "{input:?}");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(decode_pieces(&[a, b], 48), whole, "{input:?} cut {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_pieces(&bytes, 48), whole);
            // Never done before the last byte.
            assert_eq!(
                decode_pieces(&[&input[..input.len() - 1]], 48).map(|r| r.2),
                Ok(false)
            );
        }
    }

    #[test]
    fn chunked_stops_at_end_of_body() {
        let input = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        assert_eq!(d.decode(input, &mut out), Ok((15, true)));
        assert!(d.is_done());
        assert_eq!(d.decode(b"more", &mut out), Ok((0, true)));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn chunked_errors_whole_split_and_bytewise() {
        for (input, want) in CHUNKED_BAD {
            assert_eq!(decode_pieces(&[input], 48), Err(*want), "{input:?}");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(
                    decode_pieces(&[a, b], 48),
                    Err(*want),
                    "{input:?} cut {cut}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_pieces(&bytes, 48), Err(*want));
        }
        // Errors are sticky.
        let mut d = ChunkedDecoder::new(10);
        assert_eq!(d.decode(b"z", &mut Vec::new()), Err(BodyError::BadChunk));
        assert_eq!(
            d.decode(b"0\r\n\r\n", &mut Vec::new()),
            Err(BodyError::BadChunk)
        );
        assert_eq!(d.decode(b"", &mut Vec::new()), Err(BodyError::BadChunk));
    }

    #[test]
    fn chunked_bounds() {
        // A 4 KiB size line is fine, one more byte is not.
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES, b'e');
        line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_pieces(&[&line], 10).map(|r| r.0), Ok(b"x".to_vec()));
        line.insert(2, b'e');
        assert_eq!(decode_pieces(&[&line], 10), Err(BodyError::BadChunk));
        // Long trailer line.
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(3 + MAX_CHUNK_LINE_BYTES, b'v');
        assert_eq!(
            decode_pieces(&[&trailer, b"\r\n\r\n"], 10).map(|r| r.2),
            Ok(true)
        );
        trailer.push(b'v');
        assert_eq!(decode_pieces(&[&trailer], 10), Err(BodyError::BadChunk));
        // Many short trailers add up.
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_CHUNK_OVERHEAD_BYTES * 2 {
            trailers.extend_from_slice(b"X: 1\r\n");
        }
        assert_eq!(decode_pieces(&[&trailers], 10), Err(BodyError::BadChunk));
        // Many tiny chunks with extensions add up.
        let mut ext = Vec::new();
        while ext.len() < MAX_CHUNK_OVERHEAD_BYTES * 2 {
            ext.extend_from_slice(b"1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n");
        }
        assert_eq!(decode_pieces(&[&ext], 1 << 20), Err(BodyError::BadChunk));
        // Exactly max is fine.
        assert_eq!(
            decode_pieces(&[b"3\r\nabc\r\n0\r\n\r\n"], 3).map(|r| r.0),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            decode_pieces(&[b"3\r\nabc\r\n1\r\n"], 3),
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            decode_pieces(&[b"ffffffffffffffff\r\n"], usize::MAX),
            Ok((vec![], 18, false))
        );
    }
}
