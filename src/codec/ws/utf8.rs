//! Incremental UTF-8 validation of text messages across fragment and read boundaries
//! (RFC 6455 §5.6, §8.1).
//!
//! Owns only the carry of an incomplete code point (at most 3 bytes) between chunks. Fails fast:
//! a chunk is rejected as soon as a prefix cannot become valid UTF-8 (0xF5.., overlong forms,
//! surrogates, code points above U+10FFFF), because `core::str::from_utf8` checks the second
//! byte's range against the lead byte and reports an incomplete tail only when it is a valid
//! prefix. It never buffers message bytes.

use super::error::WsError;

/// Validates a byte stream fed in arbitrary pieces. 5 bytes, no heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// The bytes of an incomplete code point at the end of the last chunk.
    /// INVARIANT: `pending[..pending_len]` is a valid, incomplete UTF-8 prefix; `pending_len < 4`.
    pending: [u8; 4],
    pending_len: u8,
}

/// Length of the sequence a valid lead byte starts.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Validates the next piece. `Err(InvalidUtf8)` as soon as the bytes so far cannot be the
    /// start of valid UTF-8; an incomplete code point at the end is carried to the next call.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), WsError> {
        let held = usize::from(self.pending_len);
        if held > 0 {
            debug_assert!(held < 4);
            let take = (sequence_len(self.pending[0]) - held).min(bytes.len());
            let mut seq = self.pending;
            seq[held..held + take].copy_from_slice(&bytes[..take]);
            let n = held + take;
            match core::str::from_utf8(&seq[..n]) {
                Ok(_) => {
                    self.pending_len = 0;
                    bytes = &bytes[take..];
                }
                Err(e) if e.error_len().is_none() => {
                    // Still incomplete: `bytes` was shorter than the rest of the code point.
                    self.pending = seq;
                    self.pending_len = n as u8;
                    return Ok(());
                }
                Err(_) => return Err(WsError::InvalidUtf8),
            }
        }
        match core::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_none() => {
                let tail = &bytes[e.valid_up_to()..];
                debug_assert!(!tail.is_empty() && tail.len() < 4);
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(WsError::InvalidUtf8),
        }
    }

    /// At the end of a message: `Err(InvalidUtf8)` if it stopped inside a code point.
    pub fn finish(&self) -> Result<(), WsError> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(WsError::InvalidUtf8)
        }
    }

    /// Forgets any carried bytes, for the next message.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every pair of positions; every split must agree with `want`
    /// (and `fail_at`, if any, is the shortest prefix that is rejected by `feed`).
    fn check(bytes: &[u8], fail_at: Option<usize>) {
        // Whole prefixes: fail fast means the first rejected prefix is exactly `fail_at`.
        for n in 0..=bytes.len() {
            let mut v = Utf8Validator::new();
            let got = v.feed(&bytes[..n]);
            let should_fail = fail_at.is_some_and(|f| n >= f);
            assert_eq!(got.is_err(), should_fail, "{bytes:02x?} prefix {n}");
        }
        // Any two cuts give the same verdict as feeding whole.
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut v = Utf8Validator::new();
                let r = v
                    .feed(&bytes[..i])
                    .and_then(|()| v.feed(&bytes[i..j]))
                    .and_then(|()| v.feed(&bytes[j..]))
                    .and_then(|()| v.finish());
                assert_eq!(
                    r.is_ok(),
                    core::str::from_utf8(bytes).is_ok(),
                    "{bytes:02x?} {i} {j}"
                );
            }
        }
    }

    #[test]
    fn valid() {
        for s in [
            "",
            "Hello",
            "κόσμε",
            "\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}",
            "Hello-µ@ßöäüàá-UTF-8!!",
            "\u{d7ff}\u{e000}\u{fffd}",
        ] {
            check(s.as_bytes(), None);
        }
    }

    #[test]
    fn fail_fast() {
        let table: &[(&[u8], usize)] = &[
            (b"\xF5", 1),               // lead byte above U+10FFFF
            (b"ab\xF5\x80\x80\x80", 3), // ... after valid bytes
            (b"\xFF", 1),               // never valid
            (b"\x80", 1),               // lone continuation
            (b"\xC0\x80", 1),           // overlong (C0/C1 are never valid)
            (b"\xC1\xBF", 1),           // overlong
            (b"\xE0\x80\x80", 2),       // overlong 3-byte: E0 needs A0..BF
            (b"\xF0\x80\x80\x80", 2),   // overlong 4-byte: F0 needs 90..BF
            (b"\xED\xA0\x80", 2),       // surrogate U+D800
            (b"\xED\xBF\xBF", 2),       // surrogate U+DFFF
            (b"\xF4\x90\x80\x80", 2),   // above U+10FFFF
            (
                b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited",
                13,
            ),
            (b"\xE1\x80a", 3), // truncated then ASCII
            (b"\xC2a", 2),
        ];
        for &(bytes, at) in table {
            check(bytes, Some(at));
        }
    }

    #[test]
    fn incomplete_at_end() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xE2\x82"), Ok(()));
        assert_eq!(v.finish(), Err(WsError::InvalidUtf8));
        assert_eq!(v.feed(b"\xAC"), Ok(())); // completes U+20AC
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(v.feed(b"\xF0"), Ok(()));
        v.reset();
        assert_eq!(v.finish(), Ok(()));
        assert_eq!(core::mem::size_of::<Utf8Validator>(), 5);
    }
}
