//! The SSE encoder checked against the independent WHATWG parser the other SSE tests use
//! (`support/sse_parser.rs`): what `ringcast::codec::sse` writes is what a browser reads, for
//! every payload, name and id. (The encoder's byte vectors are its unit tests.)

#[path = "support/sse_parser.rs"]
mod sse_parser;

use base64::Engine as _;
use ringcast::codec::sse::*;
use sse_parser::{SseEvent, SseParser};

fn event(id: &str, name: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_event(&mut out, id.as_bytes(), name.map(str::as_bytes), data);
    out
}

/// The test generator of `src/codec/sse.rs`: SplitMix64's finaliser over a counter.
fn mix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[test]
fn one_mib_payload() {
    let line = "0123456789abcdef".repeat(64); // 1 KiB
    let payload = format!("{line}\n").repeat(1024); // 1 MiB + 1 KiB of LFs
    let out = event("1:1", None, payload.as_bytes());
    assert_eq!(
        out.len(),
        "id: 1:1\n".len() + 1024 * ("data: ".len() + 1024 + 1) + "data:\n\n".len()
    );
    let events = SseParser::new().feed(&out);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].data, payload);
    // No line breaks at all: one data line.
    let flat = vec![b'z'; 1 << 20];
    let out = event("1", None, &flat);
    assert_eq!(out.len(), 6 + 6 + (1 << 20) + 2);
}

#[test]
fn binary_round_trip_keeps_every_byte() {
    let mut rng = 0x1234_u64;
    for len in 0..300 {
        let data: Vec<u8> = (0..len).map(|_| next(&mut rng) as u8).collect();
        let mut out = Vec::new();
        encode_binary_event(&mut out, b"1", Some(b"blob"), &data);
        let events = SseParser::new().feed(&out);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event, "binary:blob");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&events[0].data)
            .unwrap();
        assert_eq!(decoded, data);
    }
}

#[test]
fn retry_blocks() {
    for (ms, expected) in [
        (0, &b"retry: 0\n\n"[..]),
        (3000, b"retry: 3000\n\n"),
        (u64::MAX, b"retry: 18446744073709551615\n\n"),
    ] {
        let mut out = Vec::new();
        encode_retry(&mut out, ms);
        assert_eq!(out, expected);
    }
    // The blank line after retry dispatches nothing, and the next event is intact.
    let mut out = Vec::new();
    encode_retry(&mut out, 2500);
    encode_event(&mut out, b"1", Some(b"e"), b"x");
    let mut parser = SseParser::new();
    let events = parser.feed(&out);
    assert_eq!(parser.retry(), Some(2500));
    assert_eq!(events, [ev("e", "x", "1")]);
}

#[test]
fn comments() {
    let cases: &[(&[u8], &[u8], usize)] = &[
        (b"", b":\n\n", 1),
        (b"hb", b": hb\n\n", 1),
        (b"a\nb", b": a\n: b\n\n", 2),
        (b"a\r\nb\rc", b": a\n: b\n: c\n\n", 3),
        (b"a\n\ndata: x", b": a\n:\n: data: x\n\n", 3),
        (b"end\n", b": end\n:\n\n", 2),
    ];
    for &(text, expected, lines) in cases {
        let mut out = Vec::new();
        encode_comment(&mut out, text);
        assert_eq!(out, expected);
        // Nothing escapes the comment: no event, no field.
        let mut parser = SseParser::new();
        assert!(parser.feed(&out).is_empty());
        assert_eq!(parser.last_event_id(), "");
        assert_eq!(parser.comments(), lines);
    }
}

#[test]
fn reset_notice() {
    let mut out = Vec::new();
    encode_reset(&mut out, b"9f2c:17");
    assert_eq!(out, b"event: reset\nid: 9f2c:17\ndata: 9f2c:17\n\n");
    let mut parser = SseParser::new();
    assert_eq!(parser.feed(&out), [ev("reset", "9f2c:17", "9f2c:17")]);
    assert_eq!(parser.last_event_id(), "9f2c:17");
}

fn ev(event: &str, data: &str, id: &str) -> SseEvent {
    SseEvent {
        event: event.into(),
        data: data.into(),
        id: id.into(),
    }
}

fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(1);
    mix64(*state)
}

/// Characters chosen to hit every line-break kind, field-like text and multi-byte UTF-8.
const ALPHABET: &[&str] = &[
    "\n", "\r", "\r\n", "\n\r", " ", ":", "a", "z", "data:", "id: 5", "event:", "é", "✓", "🦀",
    "\u{feff}", "\t", "retry: 1",
];

#[test]
fn round_trip_property() {
    let mut rng = 42u64;
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for i in 0..5000u32 {
        let len = (next(&mut rng) % 24) as usize;
        let payload: String = (0..len)
            .map(|_| ALPHABET[(next(&mut rng) % ALPHABET.len() as u64) as usize])
            .collect();
        let id = format!("e{}:{i}", next(&mut rng) % 7);
        let name = match next(&mut rng) % 3 {
            0 => None,
            1 => Some("message".to_string()),
            _ => Some(format!("n{}", i % 5)),
        };
        // Each event alone, fed whole.
        let one = event(&id, name.as_deref(), payload.as_bytes());
        let got = SseParser::new().feed(&one);
        let want = ev(
            name.as_deref().unwrap_or("message"),
            &normalise(&payload),
            &id,
        );
        assert_eq!(got, std::slice::from_ref(&want), "payload {payload:?}");
        stream.extend_from_slice(&one);
        if i % 97 == 0 {
            encode_comment(&mut stream, payload.as_bytes());
        }
        expected.push(want);
    }
    // The whole stream, fed in random-sized chunks (splitting CRLF and UTF-8 sequences).
    let mut parser = SseParser::new();
    let mut got = Vec::new();
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let n = ((next(&mut rng) % 17) as usize + 1).min(rest.len());
        got.extend(parser.feed(&rest[..n]));
        rest = &rest[n..];
    }
    assert_eq!(got, expected);
    assert_eq!(parser.last_event_id(), expected.last().unwrap().id);
}

/// What a browser delivers for a text payload: CRLF and lone CR become LF.
fn normalise(payload: &str) -> String {
    payload.replace("\r\n", "\n").replace('\r', "\n")
}
