//! Server-Sent Events writer: turns one message into the bytes of one `text/event-stream` event
//! block (WHATWG HTML Living Standard §9.2 "Server-sent events", §9.2.5 "Parsing an event stream"
//! and §9.2.6 "Interpreting an event stream").
//!
//! Owns: the wire form of events, binary events, `retry:` lines, comments (heartbeats) and the
//! reset notice; the jitter of the advertised reconnection time. Every `encode_*` function only
//! appends to a caller-owned `Vec<u8>`, so the shard encodes a message once and shares the bytes
//! among all its SSE subscribers.
//!
//! Must not: do I/O, read the clock, import the async runtime, sockets or the shard, or allocate beyond the
//! output buffer. Randomness (the retry jitter) is a seed passed in by the caller.
//!
//! # What a browser rebuilds
//! A payload is split into one `data:` line per line of text, at every `\n`, `\r\n` and lone
//! `\r` (the three line endings of §9.2.5), so `EventSource` hands `MessageEvent.data` back with
//! the same lines joined by `\n`. That is exactly the payload **with every `\r\n` and lone `\r`
//! normalised to `\n`**: SSE cannot carry a CR distinctly. Clients that need the exact bytes
//! publish the message as binary (base64, below) or use the WebSocket route. An empty payload is
//! one `data:` line with an empty value, which the browser dispatches as an event with data `""`.
//! Payload bytes are copied as they are; the caller guarantees UTF-8 for text messages.
//!
//! # Binary messages
//! A binary message's data is its bytes in standard base64 (RFC 4648 §4, with padding), on one
//! `data:` line. The browser learns that the data is base64 from the **event type alone**, the
//! only per-event signal `EventSource` exposes (comments are dropped by the parser and never reach
//! script):
//! - an unnamed binary message goes out as `event: binary` ([`BINARY_EVENT`]);
//! - a named binary message goes out as `event: binary:{name}` ([`BINARY_EVENT_PREFIX`]).
//!
//! So a client decodes with `atob` exactly the events whose type is `binary` or starts with
//! `binary:`; a text event never has such a type unless its publisher chose that name.
//!
//! # Field values
//! Event names and ids are single-line fields: a CR or LF would end the line early and let the
//! value inject fields, and the WHATWG parser ignores an `id` containing NUL. Callers (the route
//! and position codecs) must never pass CR, LF or NUL; debug builds assert it, release builds strip
//! those bytes so a bug cannot corrupt the stream.

use base64::Engine as _;

use crate::codec::decimal;

/// The event type of an unnamed binary message; its data is standard base64 (RFC 4648 §4, with
/// padding).
pub const BINARY_EVENT: &str = "binary";

/// The event type prefix of a named binary message: `binary:{name}`; data is base64 as for
/// [`BINARY_EVENT`].
pub const BINARY_EVENT_PREFIX: &str = "binary:";

/// The event type of the reset notice (see [`encode_reset`]).
pub const RESET_EVENT: &str = "reset";

/// How far [`jittered_retry_ms`] may move the base value, as a divisor: ±1/5 = ±20%.
const RETRY_JITTER_DIVISOR: u64 = 5;

/// Appends one event block: `id: {id}\n`, `event: {event}\n` if `Some`, then `data` split into
/// `data: ...\n` lines at every `\n`, `\r\n` and lone `\r`, then the blank line that dispatches it.
///
/// An empty `data` is one `data:` line (dispatched with data `""`); a trailing line break yields a
/// trailing empty `data:` line so the browser keeps it (as `\n`). Bytes are copied as they are.
pub fn encode_event(out: &mut Vec<u8>, id: &[u8], event: Option<&[u8]>, data: &[u8]) {
    // id + event + one data line + blank line; only line breaks add to this, 6 bytes each.
    out.reserve(data.len() + id.len() + event.map_or(0, |e| e.len() + 8) + 16);
    write_field(out, b"id", id);
    if let Some(name) = event {
        write_field(out, b"event", name);
    }
    write_data_lines(out, data);
    out.push(b'\n');
}

/// Appends one binary event block: like [`encode_event`], with `data` in standard base64 on one
/// `data:` line and the event type `binary` (unnamed) or `binary:{name}` (named).
pub fn encode_binary_event(out: &mut Vec<u8>, id: &[u8], event: Option<&[u8]>, data: &[u8]) {
    let b64_len = base64::encoded_len(data.len(), true).expect("payload too large for base64");
    out.reserve(b64_len + id.len() + event.map_or(0, |e| e.len()) + 32);
    write_field(out, b"id", id);
    out.extend_from_slice(b"event: ");
    match event {
        None => out.extend_from_slice(BINARY_EVENT.as_bytes()),
        Some(name) => {
            out.extend_from_slice(BINARY_EVENT_PREFIX.as_bytes());
            extend_single_line(out, name);
        }
    }
    out.push(b'\n');
    if b64_len == 0 {
        out.extend_from_slice(b"data:\n");
    } else {
        out.extend_from_slice(b"data: ");
        let start = out.len();
        out.resize(start + b64_len, 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(data, &mut out[start..])
            .expect("buffer sized by encoded_len");
        debug_assert_eq!(written, b64_len);
        out.push(b'\n');
    }
    out.push(b'\n');
}

/// Appends a block holding only `retry: {millis}`, which sets the browser's reconnection time.
///
/// The blank line that closes it dispatches nothing: the data buffer is empty (§9.2.6), so the
/// browser only resets its event type buffer, which is empty between blocks anyway.
pub fn encode_retry(out: &mut Vec<u8>, millis: u64) {
    out.extend_from_slice(b"retry: ");
    decimal::write_u64(out, millis);
    out.extend_from_slice(b"\n\n");
}

/// Appends a comment block (a heartbeat, or a note to humans reading the stream): `: {text}\n`,
/// one comment line per line of `text` (split at `\n`, `\r\n` and lone `\r`, so no line of `text`
/// can escape the comment), then a blank line. Browsers ignore comments and, the data buffer being
/// empty, the blank line dispatches nothing; it ends the block so a heartbeat never sits inside a
/// half-written event. An empty `text` is a bare `:` line.
pub fn encode_comment(out: &mut Vec<u8>, text: &[u8]) {
    out.reserve(text.len() + 4);
    for_each_line(text, |line| {
        if line.is_empty() {
            out.extend_from_slice(b":\n");
        } else {
            out.extend_from_slice(b": ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    });
    out.push(b'\n');
}

/// Appends the reset notice: `event: reset\n`, `id: {current}\n`, `data: {current}\n\n`.
///
/// Sent when a resume point (Last-Event-ID) is outside the retained history: the client learns the
/// current position both as its new last event ID and in the data, and refetches its state.
pub fn encode_reset(out: &mut Vec<u8>, current: &[u8]) {
    out.reserve(2 * current.len() + 32);
    write_field(out, b"event", RESET_EVENT.as_bytes());
    write_field(out, b"id", current);
    write_field(out, b"data", current);
    out.push(b'\n');
}

/// The reconnection time to advertise in a `retry:` line: `base_ms` moved by up to ±20%, chosen
/// by `seed` (the shard passes a per-connection value), so that clients dropped together by a
/// restart do not all come back in the same millisecond. Pure: the same inputs give the same
/// output; distinct seeds spread evenly over `[base - base/5, base + base/5]`.
pub fn jittered_retry_ms(base_ms: u64, seed: u64) -> u64 {
    let span = base_ms / RETRY_JITTER_DIVISOR;
    if span == 0 {
        return base_ms;
    }
    // 2 * span + 1 <= 2 * (u64::MAX / 5) + 1: no overflow.
    let offset = mix64(seed) % (2 * span + 1);
    (base_ms - span).saturating_add(offset)
}

/// SplitMix64's finaliser: a bijection that spreads consecutive seeds (connection keys) over the
/// whole range.
fn mix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes `{name}: {value}\n` for a single-line field (id, event).
fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    extend_single_line(out, value);
    out.push(b'\n');
}

/// True for the bytes a single-line field value must not hold.
fn is_forbidden_in_field(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | 0)
}

/// Appends `value`, which must hold no CR, LF or NUL: asserted in debug builds, stripped otherwise.
fn extend_single_line(out: &mut Vec<u8>, value: &[u8]) {
    if !value.iter().copied().any(is_forbidden_in_field) {
        out.extend_from_slice(value);
        return;
    }
    debug_assert!(
        false,
        "SSE id/event value holds CR, LF or NUL: {:?}",
        String::from_utf8_lossy(value)
    );
    strip_forbidden(out, value);
}

/// The release-build fallback of [`extend_single_line`]: appends `value` without CR, LF and NUL.
fn strip_forbidden(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(value.iter().copied().filter(|&b| !is_forbidden_in_field(b)));
}

/// Writes one `data:` line per line of `data`.
fn write_data_lines(out: &mut Vec<u8>, data: &[u8]) {
    for_each_line(data, |line| {
        if line.is_empty() {
            out.extend_from_slice(b"data:\n");
        } else {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line);
            out.push(b'\n');
        }
    });
}

/// Calls `f` with each line of `text`, split at `\n`, `\r\n` and lone `\r`; `n` line breaks give
/// `n + 1` lines (an empty text is one empty line, a trailing break a trailing empty line).
fn for_each_line(text: &[u8], mut f: impl FnMut(&[u8])) {
    let mut rest = text;
    loop {
        match find_line_break(rest) {
            None => {
                f(rest);
                return;
            }
            Some(i) => {
                f(&rest[..i]);
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
}

/// The index of the first `\n` or `\r` in `text`.
///
/// Eight bytes at a time (SWAR, no unsafe): a JSON payload usually has no line break at all, and
/// this scan is the whole cost of encoding it besides the copy. `benches/sse.rs`
/// `sse_encode_event/events/4KiB_flat`: 6.8 µs with the byte loop, 1.4 µs with this (128B_flat
/// 418 → 134 ns; a shared, loaded 2-core VM, so read the ratio, not the numbers). The plain
/// `position` loop is kept as the test oracle (`find_line_break_matches_naive_scan`).
fn find_line_break(text: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const LF: u64 = LO * b'\n' as u64;
    const CR: u64 = LO * b'\r' as u64;
    // Non-zero iff some byte of `v` is zero (exact for "any", which is all this asks).
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI;
    let mut chunks = text.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunks_exact(8)"));
        if has_zero(word ^ LF) | has_zero(word ^ CR) != 0 {
            break;
        }
        base += 8;
    }
    text[base..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map(|i| base + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, name: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_event(&mut out, id.as_bytes(), name.map(str::as_bytes), data);
        out
    }

    /// Encoder vectors: (payload, expected data lines after `id: 1\n`).
    #[test]
    fn line_break_vectors() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"hello", b"data: hello\n"),
            (b"", b"data:\n"),
            (b"a\nb", b"data: a\ndata: b\n"),
            (b"a\r\nb", b"data: a\ndata: b\n"),
            (b"a\rb", b"data: a\ndata: b\n"),
            (b"a\r\rb", b"data: a\ndata:\ndata: b\n"),
            (b"a\n\rb", b"data: a\ndata:\ndata: b\n"),
            (
                b"a\r\n\nb\rc\r\nd",
                b"data: a\ndata:\ndata: b\ndata: c\ndata: d\n",
            ),
            (b"a\n", b"data: a\ndata:\n"),
            (b"a\r", b"data: a\ndata:\n"),
            (b"a\r\n", b"data: a\ndata:\n"),
            (b"\na", b"data:\ndata: a\n"),
            (b"\r\na", b"data:\ndata: a\n"),
            (b"\ra", b"data:\ndata: a\n"),
            (b"\n", b"data:\ndata:\n"),
            (b"\n\n\n", b"data:\ndata:\ndata:\ndata:\n"),
            (b"\r\r\n\n", b"data:\ndata:\ndata:\ndata:\n"),
            (b" lead", b"data:  lead\n"),
            (b"data: x\n\nid: 9", b"data: data: x\ndata:\ndata: id: 9\n"),
            ("héllo ✓ 🦀".as_bytes(), "data: héllo ✓ 🦀\n".as_bytes()),
        ];
        for &(payload, lines) in cases {
            let mut expected = b"id: 1\n".to_vec();
            expected.extend_from_slice(lines);
            expected.push(b'\n');
            assert_eq!(
                event("1", None, payload),
                expected,
                "payload {:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn find_line_break_matches_naive_scan() {
        let naive = |t: &[u8]| t.iter().position(|&b| b == b'\n' || b == b'\r');
        // The word loads copy bytes (no pointer casts), so alignment cannot matter; the length
        // and the break's place relative to the 8-byte words do.
        for phase in 0..8 {
            for len in 0..64 {
                let text = vec![b'x'; len];
                assert_eq!(find_line_break(&text), None);
                for at in 0..len {
                    for (first, second) in [(b'\n', None), (b'\r', None), (b'\r', Some(b'\n'))] {
                        let mut t = text.to_vec();
                        t[at] = first;
                        if let (Some(b), true) = (second, at + 1 < len) {
                            t[at + 1] = b;
                        }
                        // Bytes that trip a sloppy zero-byte test (0x0A/0x0D ± 1, high bit,
                        // NUL) fill everything before the break.
                        const NOISE: [u8; 8] = [0x09, 0x0B, 0x0C, 0x0E, 0x80, 0x8A, 0x8D, 0x00];
                        for (i, b) in t[..at].iter_mut().enumerate() {
                            *b = NOISE[(i + phase) % NOISE.len()];
                        }
                        assert_eq!(find_line_break(&t), naive(&t), "{t:?}");
                        assert_eq!(find_line_break(&t), Some(at), "{t:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn named_event_and_id() {
        assert_eq!(
            event("7:42", Some("tick"), b"x"),
            b"id: 7:42\nevent: tick\ndata: x\n\n"
        );
        assert_eq!(event("", None, b"x"), b"id: \ndata: x\n\n");
    }

    #[test]
    fn appends_without_clearing() {
        let mut out = b"prefix".to_vec();
        encode_event(&mut out, b"1", None, b"a");
        encode_comment(&mut out, b"hb");
        assert_eq!(out, b"prefixid: 1\ndata: a\n\n: hb\n\n");
    }

    #[test]
    fn binary_events() {
        let cases: &[(Option<&str>, &[u8], &[u8])] = &[
            (None, b"", b"id: 1\nevent: binary\ndata:\n\n"),
            (None, b"f", b"id: 1\nevent: binary\ndata: Zg==\n\n"),
            (None, b"fo", b"id: 1\nevent: binary\ndata: Zm8=\n\n"),
            (None, b"foo", b"id: 1\nevent: binary\ndata: Zm9v\n\n"),
            (
                None,
                b"\r\n\0\xff",
                b"id: 1\nevent: binary\ndata: DQoA/w==\n\n",
            ),
            (
                Some("img"),
                b"foob",
                b"id: 1\nevent: binary:img\ndata: Zm9vYg==\n\n",
            ),
        ];
        for &(name, data, expected) in cases {
            let mut out = Vec::new();
            encode_binary_event(&mut out, b"1", name.map(str::as_bytes), data);
            assert_eq!(out, expected, "{:?}", String::from_utf8_lossy(expected));
        }
    }

    #[test]
    fn strip_forbidden_removes_cr_lf_nul() {
        let mut out = Vec::new();
        strip_forbidden(&mut out, b"a\rb\nc\0d\r\n");
        assert_eq!(out, b"abcd");
        let mut out = Vec::new();
        extend_single_line(&mut out, b"clean:1");
        assert_eq!(out, b"clean:1");
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "CR, LF or NUL"))]
    fn newline_in_id_is_caught() {
        // Debug: the assertion fires. Release: the bytes are stripped, no field is injected.
        let out = event("1\nevent: evil", None, b"x");
        assert_eq!(out, b"id: 1event: evil\ndata: x\n\n");
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "CR, LF or NUL"))]
    fn newline_in_event_name_is_caught() {
        let out = event("1", Some("a\r\ndata: injected"), b"x");
        assert_eq!(out, b"id: 1\nevent: adata: injected\ndata: x\n\n");
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "CR, LF or NUL"))]
    fn nul_in_id_is_caught() {
        // A NUL would make the browser ignore the id (WHATWG §9.2.6).
        let out = event("1\x002", None, b"x");
        assert_eq!(out, b"id: 12\ndata: x\n\n");
    }

    #[test]
    #[cfg_attr(debug_assertions, should_panic(expected = "CR, LF or NUL"))]
    fn newline_in_binary_event_name_is_caught() {
        let mut out = Vec::new();
        encode_binary_event(&mut out, b"1", Some(b"a\nb"), b"");
        assert_eq!(out, b"id: 1\nevent: binary:ab\ndata:\n\n");
    }

    #[test]
    fn jitter_bounds() {
        for base in [0u64, 1, 4, 5, 9, 10, 1000, 3000, 60_000, u64::MAX] {
            let span = base / 5;
            for seed in 0..2000 {
                let r = jittered_retry_ms(base, seed);
                assert!(
                    r >= base - span && r <= base.saturating_add(span),
                    "{base} {seed} {r}"
                );
            }
        }
        assert_eq!(jittered_retry_ms(0, 7), 0);
        assert_eq!(jittered_retry_ms(4, 7), 4);
        assert_eq!(jittered_retry_ms(3000, 99), jittered_retry_ms(3000, 99));
    }

    #[test]
    fn jitter_spread() {
        // Consecutive seeds (connection keys) must cover the whole ±20% window evenly.
        let base = 3000;
        let values: Vec<u64> = (0..10_000).map(|s| jittered_retry_ms(base, s)).collect();
        let min = *values.iter().min().unwrap();
        let max = *values.iter().max().unwrap();
        assert!(min <= 2410 && max >= 3590, "min {min} max {max}");
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        assert!((mean - 3000.0).abs() < 15.0, "mean {mean}");
        // Ten equal buckets over [2400, 3600]: each gets about 1000 of 10 000.
        let mut buckets = [0u32; 10];
        for v in &values {
            buckets[(((v - 2400) * 10) / 1201) as usize] += 1;
        }
        for b in buckets {
            assert!((800..1200).contains(&b), "{buckets:?}");
        }
        let mut distinct = values.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(distinct.len() > 1000, "{}", distinct.len());
    }
}
