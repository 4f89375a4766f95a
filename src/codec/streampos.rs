//! Stream positions: one opaque token that holds a position for every topic of a multi-topic
//! stream (`GET /sse?topic=A&topic=B`, `GET /poll?topic=A&topic=B`).
//!
//! Owns: the token's one textual form, used as the multi-topic SSE `id:` (so a stock
//! `EventSource` resumes every topic with `Last-Event-ID`) and as the multi-topic poll's
//! `since`/`next`. A token is `s1.` and the unpadded base64url of, per topic, sorted by tag:
//! the topic's 64-bit tag (FNV-1a of its name, 8 bytes little-endian), then its position's
//! EPOCH and OFFSET as LEB128 varints. At most 8 + 10 + 10 = 28 bytes a topic before base64, so
//! a token is at most [`max_token_bytes`] long: 2,395 characters for the default 64 topics, a
//! few hundred for a handful.
//! A token names topics by tag, not by their place in the URL, so a client that reorders,
//! adds or drops topics keeps the positions of the others. A tag is not secret and a token is
//! not signed: a forged position is no more than a forged `since`, answered the same way (a
//! replay from it if it is inside history, else a reset).
//! Must not: decide what a position means for a topic (the home does), or fail loudly: a
//! malformed token places no topic, and each topic it cannot place gets a reset.

use base64::Engine as _;

use crate::codec::position::Position;

/// The version prefix of a token.
const PREFIX: &[u8] = b"s1.";
/// Most encoded bytes one topic adds before base64.
const MAX_ENTRY_BYTES: usize = 8 + 10 + 10;

/// The longest token a stream of `topics` topics can have.
pub const fn max_token_bytes(topics: usize) -> usize {
    PREFIX.len() + (topics * MAX_ENTRY_BYTES).div_ceil(3) * 4
}

/// A topic's tag: FNV-1a 64 of its name. Two topics of one stream share a tag with probability
/// about 2^-64 per pair; the stream refuses such a pair rather than confuse them.
pub fn tag(topic: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in topic.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The decoded positions of a token, by tag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPos {
    /// Sorted by tag, no tag twice.
    entries: Vec<(u64, Position)>,
}

/// Why a token could not be read (for the log; every topic then gets a reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamPosError {
    /// No `s1.` prefix, bad base64, a truncated entry, an oversized varint, or tags out of order.
    Malformed,
    /// More entries than the stream allows topics.
    TooLong,
}

impl StreamPos {
    /// Appends the token of `(topic, position)` pairs to `out`.
    pub fn encode<'a>(entries: impl IntoIterator<Item = (&'a str, Position)>, out: &mut Vec<u8>) {
        let mut e: Vec<(u64, Position)> = entries.into_iter().map(|(t, p)| (tag(t), p)).collect();
        Self::encode_tagged(&mut e, out);
    }

    /// [`StreamPos::encode`] for entries already tagged, with no allocation but the output's
    /// (a multi-topic stream writes one per event); sorts `entries` in place.
    pub fn encode_tagged(entries: &mut [(u64, Position)], out: &mut Vec<u8>) {
        entries.sort_unstable_by_key(|&(t, _)| t);
        let mut raw = [0u8; 64 * MAX_ENTRY_BYTES];
        let mut raw_vec;
        let raw: &mut [u8] = if entries.len() <= 64 {
            &mut raw[..]
        } else {
            raw_vec = vec![0u8; entries.len() * MAX_ENTRY_BYTES];
            &mut raw_vec[..]
        };
        let mut n = 0;
        let mut last = None;
        for &(t, p) in entries.iter() {
            if last == Some(t) {
                continue;
            }
            last = Some(t);
            raw[n..n + 8].copy_from_slice(&t.to_le_bytes());
            n += 8;
            n += varint(p.epoch, &mut raw[n..]);
            n += varint(p.offset, &mut raw[n..]);
        }
        out.extend_from_slice(PREFIX);
        let start = out.len();
        out.resize(start + n.div_ceil(3) * 4, 0);
        let w = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(&raw[..n], &mut out[start..])
            .expect("sized for the encoding");
        out.truncate(start + w);
    }

    /// Reads a token of at most `max_topics` entries.
    pub fn parse(s: &[u8], max_topics: usize) -> Result<StreamPos, StreamPosError> {
        let body = s.strip_prefix(PREFIX).ok_or(StreamPosError::Malformed)?;
        if body.len() > max_token_bytes(max_topics) {
            return Err(StreamPosError::TooLong);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| StreamPosError::Malformed)?;
        let mut entries = Vec::new();
        let mut at = &raw[..];
        while !at.is_empty() {
            let (t, rest) = at
                .split_first_chunk::<8>()
                .ok_or(StreamPosError::Malformed)?;
            let t = u64::from_le_bytes(*t);
            let (epoch, rest) = read_varint(rest).ok_or(StreamPosError::Malformed)?;
            let (offset, rest) = read_varint(rest).ok_or(StreamPosError::Malformed)?;
            if entries.last().is_some_and(|&(last, _)| last >= t) {
                return Err(StreamPosError::Malformed);
            }
            if entries.len() == max_topics {
                return Err(StreamPosError::TooLong);
            }
            entries.push((t, Position::new(epoch, offset)));
            at = rest;
        }
        Ok(StreamPos { entries })
    }

    /// The position the token holds for `topic`, if any.
    pub fn get(&self, topic: &str) -> Option<Position> {
        let t = tag(topic);
        self.entries
            .binary_search_by_key(&t, |&(k, _)| k)
            .ok()
            .map(|i| self.entries[i].1)
    }

    /// The entries, sorted by tag: what [`StreamPos::encode_tagged`] writes back as the same
    /// token (one token per set of positions).
    pub fn entries(&self) -> &[(u64, Position)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Writes `v` as a LEB128 varint at the start of `out` (at least 10 bytes); returns its length.
fn varint(mut v: u64, out: &mut [u8]) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        out[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    out[i] = v as u8;
    i + 1
}

/// A LEB128 varint of at most 10 bytes whose value fits a u64, in its shortest form.
fn read_varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && byte > 1 {
            return None;
        }
        v |= bits << (7 * i);
        if byte & 0x80 == 0 {
            // Shortest form only, so one set of positions has one token.
            if i > 0 && byte == 0 {
                return None;
            }
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(e: &[(&str, Position)]) -> Vec<u8> {
        let mut out = Vec::new();
        StreamPos::encode(e.iter().copied(), &mut out);
        out
    }

    #[test]
    fn every_topic_comes_back_whatever_the_order() {
        let e = [
            ("a", Position::new(0x1f2e3d4c5b6a7988, 7)),
            ("chat/42", Position::new(1, 0)),
            ("b", Position::new(u64::MAX, u64::MAX)),
        ];
        let t = token(&e);
        assert!(t.starts_with(b"s1."));
        assert!(t[3..]
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        let rev: Vec<_> = e.iter().rev().copied().collect();
        assert_eq!(t, token(&rev), "one token per set of positions");
        let mut again = Vec::new();
        StreamPos::encode_tagged(
            &mut StreamPos::parse(&t, 64).unwrap().entries().to_vec(),
            &mut again,
        );
        assert_eq!(again, t, "a read token writes back as itself");
        let p = StreamPos::parse(&t, 64).unwrap();
        for (topic, pos) in e {
            assert_eq!(p.get(topic), Some(pos), "{topic}");
        }
        assert_eq!(p.get("c"), None);
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn size_is_bounded_by_the_topic_count() {
        let names: Vec<String> = (0..64).map(|i| format!("topic-{i}")).collect();
        let worst: Vec<_> = names
            .iter()
            .map(|n| (n.as_str(), Position::new(u64::MAX, u64::MAX)))
            .collect();
        let t = token(&worst);
        assert!(t.len() <= max_token_bytes(64), "{}", t.len());
        assert_eq!(max_token_bytes(64), 2395);
        assert!(StreamPos::parse(&t, 64).is_ok());
        assert_eq!(StreamPos::parse(&t, 63), Err(StreamPosError::TooLong));
        // Ten topics with typical positions: a short header.
        let typical: Vec<_> = names[..10]
            .iter()
            .map(|n| (n.as_str(), Position::new(0x18f3a2b4c5d6e7f8, 12_345)))
            .collect();
        assert!(token(&typical).len() < 260, "{}", token(&typical).len());
    }

    #[test]
    fn malformed_tokens_place_nothing() {
        let good = token(&[("a", Position::new(5, 6)), ("b", Position::new(7, 8))]);
        let mut bad: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"s1".to_vec(),
            b"s2.AAAA".to_vec(),
            b"5:6".to_vec(),
            b"s1.!!!!".to_vec(),
            b"s1.AAAA".to_vec(),
            // A varint that never ends, and one that overflows a u64.
            [
                b"s1.".to_vec(),
                b64(&[[0u8; 8].as_slice(), &[0x80; 11]].concat()),
            ]
            .concat(),
            [
                b"s1.".to_vec(),
                b64(&[[0u8; 8].as_slice(), &[0xff; 9], &[0x02], &[0]].concat()),
            ]
            .concat(),
            // Not the shortest form.
            [
                b"s1.".to_vec(),
                b64(&[[0u8; 8].as_slice(), &[0x85, 0x00], &[0]].concat()),
            ]
            .concat(),
        ];
        for cut in 4..good.len() {
            let t = &good[..cut];
            // Some cuts still decode to a whole first entry; the rest must not.
            if let Ok(p) = StreamPos::parse(t, 64) {
                assert!(p.len() < 2, "{:?}", String::from_utf8_lossy(t));
                continue;
            }
            bad.push(t.to_vec());
        }
        for t in bad {
            assert!(
                StreamPos::parse(&t, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(&t)
            );
        }
        // Tags out of order (a hand-made token): refused, not half-read.
        let mut raw = Vec::new();
        for t in [9u64, 3] {
            raw.extend_from_slice(&t.to_le_bytes());
            raw.extend_from_slice(&[1, 1]);
        }
        let t = [b"s1.".to_vec(), b64(&raw)].concat();
        assert_eq!(StreamPos::parse(&t, 64), Err(StreamPosError::Malformed));
    }

    fn b64(raw: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(raw)
            .into_bytes()
    }

    #[test]
    fn tagged_encoding_is_the_named_one() {
        let e = [("x", Position::new(3, 4)), ("y", Position::new(9, 0))];
        let mut tagged: Vec<_> = e.iter().rev().map(|&(t, p)| (tag(t), p)).collect();
        let mut out = Vec::new();
        StreamPos::encode_tagged(&mut tagged, &mut out);
        assert_eq!(out, token(&e));
        let mut none = Vec::new();
        StreamPos::encode_tagged(&mut [], &mut none);
        assert_eq!(none, b"s1.");
        assert_eq!(StreamPos::parse(&none, 64).map(|p| p.len()), Ok(0));
    }

    /// The fuzz target's property (`fuzz/fuzz_targets/stream_position.rs`) on mutations of a
    /// good token: whatever still reads writes back as the same bytes.
    #[test]
    fn whatever_reads_writes_back_the_same() {
        let good = token(&[
            ("a", Position::new(5, 6)),
            ("b", Position::new(1 << 40, 300)),
        ]);
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut read = 0;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut t = good.clone();
            let at = 3 + (x as usize >> 8) % (t.len() - 3);
            t[at] = alphabet[(x as usize >> 20) % alphabet.len()];
            if x.is_multiple_of(5) {
                t.truncate(at);
            }
            if let Ok(p) = StreamPos::parse(&t, 64) {
                read += 1;
                let mut again = Vec::new();
                StreamPos::encode_tagged(&mut p.entries().to_vec(), &mut again);
                assert_eq!(again, t, "{}", String::from_utf8_lossy(&t));
            }
        }
        assert!(read > 100, "{read} mutations read");
    }

    #[test]
    fn tags_are_fnv1a_64() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(tag(""), 0xcbf29ce484222325);
        assert_eq!(tag("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(tag("foobar"), 0x85944171f73967e8);
    }
}
