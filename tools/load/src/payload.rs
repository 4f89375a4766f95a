//! Message payloads: what the publisher sends and every subscriber checks.
//!
//! Text, so it passes unchanged through SSE `data:` lines, WebSocket text frames and poll JSON:
//! `SEQ TS_NS TAG ` then `.` padding to the requested size. SEQ counts a topic's messages from 0,
//! TS_NS is the message's *intended* send time on CLOCK_MONOTONIC (shared by every process on the
//! machine), TAG is the topic index (fanout) or the connection index (echo), so a message that
//! lands on the wrong topic is caught. Must not: allocate when parsing.

/// Appends a payload of at least `size` bytes (more only if the three numbers do not fit).
pub fn encode_payload(seq: u64, ts_ns: u64, tag: u64, size: usize, out: &mut Vec<u8>) {
    use std::io::Write;
    let start = out.len();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{seq} {ts_ns} {tag} ");
    let have = out.len() - start;
    if have < size {
        out.resize(start + size, b'.');
    }
}

/// The three numbers of a payload, or `None` if it is not one of ours.
pub fn parse_payload(b: &[u8]) -> Option<Fields> {
    let mut it = b.split(|&c| c == b' ');
    let seq = parse_u64(it.next()?)?;
    let ts_ns = parse_u64(it.next()?)?;
    let tag = parse_u64(it.next()?)?;
    Some(Fields { seq, ts_ns, tag })
}

/// What a payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    pub seq: u64,
    pub ts_ns: u64,
    pub tag: u64,
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        for &(seq, ts, tag, size) in &[
            (0u64, 0u64, 0u64, 0usize),
            (1, 123_456_789, 3, 128),
            (u64::MAX, u64::MAX, u64::MAX, 16),
            (42, 1, 9, 4096),
        ] {
            let mut v = b"prefix".to_vec();
            encode_payload(seq, ts, tag, size, &mut v);
            let p = &v[6..];
            assert!(p.len() >= size);
            if size > 64 {
                assert_eq!(p.len(), size);
            }
            assert_eq!(
                parse_payload(p),
                Some(Fields {
                    seq,
                    ts_ns: ts,
                    tag
                })
            );
        }
    }

    #[test]
    fn rejects_foreign_payloads() {
        for bad in [
            &b""[..],
            b"hello",
            b"1 2",
            b"1 x 3 ",
            b"-1 2 3 ",
            b"99999999999999999999999 1 1 ",
            b"ok",
        ] {
            assert_eq!(
                parse_payload(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // No trailing space or padding is still ours.
        assert!(parse_payload(b"1 2 3").is_some());
    }
}
