//! The test SSE parser checked against the examples and rules of WHATWG HTML §9.2.5–§9.2.6, so
//! the oracle the other SSE tests rely on is itself right.

#[path = "support/sse_parser.rs"]
mod sse_parser;

use sse_parser::{SseEvent, SseParser};

fn ev(event: &str, data: &str, id: &str) -> SseEvent {
    SseEvent {
        event: event.into(),
        data: data.into(),
        id: id.into(),
    }
}

/// Parses `stream` whole, then again one byte at a time and at every two-chunk split: the
/// events must not depend on how the bytes arrive.
fn parse(stream: &[u8]) -> (Vec<SseEvent>, SseParser) {
    let mut whole = SseParser::new();
    let events = whole.feed(stream);
    let mut bytewise = SseParser::new();
    let split: Vec<SseEvent> = stream
        .iter()
        .flat_map(|b| bytewise.feed(std::slice::from_ref(b)))
        .collect();
    assert_eq!(split, events, "byte at a time");
    for cut in 0..=stream.len() {
        let mut p = SseParser::new();
        let mut got = p.feed(&stream[..cut]);
        got.extend(p.feed(&stream[cut..]));
        assert_eq!(got, events, "split at {cut}");
        assert_eq!(p.last_event_id(), whole.last_event_id());
        assert_eq!(p.retry(), whole.retry());
        assert_eq!(p.comments(), whole.comments());
    }
    (events, whole)
}

#[test]
fn spec_stock_ticker_example() {
    let (events, _) = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n");
    assert_eq!(events, [ev("message", "YHOO\n+2\n10", "")]);
}

#[test]
fn spec_test_stream_example() {
    // The third event has no blank line after it, so it is never dispatched.
    let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n";
    let (events, p) = parse(stream);
    assert_eq!(
        events,
        [
            ev("message", "first event", "1"),
            ev("message", "second event", "")
        ]
    );
    assert_eq!(p.comments(), 1);
    assert_eq!(p.last_event_id(), "");
}

#[test]
fn spec_empty_data_example() {
    // "data" alone is a field with an empty value; the last block is never finished.
    let (events, _) = parse(b"data\n\ndata\ndata\n\ndata:");
    assert_eq!(events, [ev("message", "", ""), ev("message", "\n", "")]);
}

#[test]
fn spec_one_optional_space_example() {
    let (events, _) = parse(b"data:test\n\ndata: test\n\n");
    assert_eq!(
        events,
        [ev("message", "test", ""), ev("message", "test", "")]
    );
    // Only one space is removed.
    let (events, _) = parse(b"data:  two\n\n");
    assert_eq!(events, [ev("message", " two", "")]);
}

#[test]
fn spec_named_events_example() {
    let stream =
        b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\nevent: add\ndata: 113411\n\n";
    let (events, _) = parse(stream);
    assert_eq!(
        events,
        [
            ev("add", "73857293", ""),
            ev("remove", "2153", ""),
            ev("add", "113411", "")
        ]
    );
}

#[test]
fn every_line_ending() {
    for stream in [
        &b"id: 1\ndata: a\ndata: b\n\n"[..],
        b"id: 1\r\ndata: a\r\ndata: b\r\n\r\n",
        b"id: 1\rdata: a\rdata: b\r\r",
        b"id: 1\r\ndata: a\rdata: b\n\r\n",
    ] {
        let (events, _) = parse(stream);
        assert_eq!(events, [ev("message", "a\nb", "1")], "{stream:?}");
    }
}

#[test]
fn cr_at_chunk_end_then_lf_is_one_line_end() {
    let mut p = SseParser::new();
    assert!(p.feed(b"data: a\r").is_empty());
    assert!(p.feed(b"\ndata: b\r").is_empty());
    // If the LF were taken as a second line end, "a" would have been dispatched alone.
    assert_eq!(p.feed(b"\n\r"), [ev("message", "a\nb", "")]);
    // A CR ending a chunk followed by something else: the CR alone was the line end.
    let mut p = SseParser::new();
    assert!(p.feed(b"data: a\r").is_empty());
    assert_eq!(p.feed(b"\r"), [ev("message", "a", "")]);
}

#[test]
fn bom_is_stripped_once_at_stream_start() {
    let (events, _) = parse(b"\xEF\xBB\xBFdata: x\n\n");
    assert_eq!(events, [ev("message", "x", "")]);
    // A second BOM is part of the field name "\u{feff}data", which is unknown: ignored.
    let (events, _) = parse(b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n");
    assert!(events.is_empty());
    // A BOM later in the stream is not stripped either.
    let (events, _) = parse(b"data: x\n\n\xEF\xBB\xBFdata: y\n\ndata: z\n\n");
    assert_eq!(events, [ev("message", "x", ""), ev("message", "z", "")]);
    // A stream starting with a partial BOM keeps those bytes (as U+FFFD).
    let (events, _) = parse(b"\xEF\xBBdata: x\n\ndata: y\n\n");
    assert_eq!(events, [ev("message", "y", "")]);
}

#[test]
fn id_with_nul_is_ignored() {
    let (events, p) = parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n");
    assert_eq!(events, [ev("message", "a", "1"), ev("message", "b", "1")]);
    assert_eq!(p.last_event_id(), "1");
}

#[test]
fn last_event_id_persists_and_updates_without_data() {
    let stream = b"id: 7\ndata: a\n\ndata: b\n\nid: 8\n\nevent: x\n\ndata: c\n\n";
    let (events, p) = parse(stream);
    assert_eq!(
        events,
        [
            ev("message", "a", "7"),
            ev("message", "b", "7"),
            // "event: x" was dropped with its data-less block.
            ev("message", "c", "8"),
        ]
    );
    assert_eq!(p.last_event_id(), "8");
    // The id only takes effect at the blank line.
    let mut p = SseParser::new();
    p.feed(b"id: 9\n");
    assert_eq!(p.last_event_id(), "");
    p.feed(b"\n");
    assert_eq!(p.last_event_id(), "9");
}

#[test]
fn retry_takes_only_ascii_digits() {
    for (stream, want) in [
        (&b"retry: 1500\n\n"[..], Some(1500)),
        (b"retry:0\n", Some(0)),
        (b"retry: 15s\n", None),
        (b"retry: -1\n", None),
        (b"retry: 1.5\n", None),
        (b"retry:  15\n", None),
        (b"retry:\n", None),
        (b"retry: \xd9\xa1\n", None), // ARABIC-INDIC DIGIT ONE is not an ASCII digit
        (b"retry: 100\nretry: x\n", Some(100)),
    ] {
        let (events, p) = parse(stream);
        assert!(events.is_empty());
        assert_eq!(p.retry(), want, "{stream:?}");
    }
}

#[test]
fn fields_and_comments() {
    let stream = b":\n: heartbeat\n:no space\nfoo: bar\nDATA: upper\ndata: a:b: c\nevent:e\n\n";
    let (events, p) = parse(stream);
    assert_eq!(events, [ev("e", "a:b: c", "")]);
    assert_eq!(p.comments(), 3);
    // A colon-less line is a field with an empty value; unknown names are ignored.
    let (events, _) = parse(b"event\ndata\nbogus\n\n");
    assert_eq!(events, [ev("message", "", "")]);
}

#[test]
fn data_less_block_resets_event_type() {
    let (events, _) = parse(b"event: a\n\ndata: x\n\n");
    assert_eq!(events, [ev("message", "x", "")]);
}

#[test]
fn only_one_trailing_lf_is_removed() {
    let (events, _) = parse(b"data: a\ndata:\ndata:\n\n");
    assert_eq!(events, [ev("message", "a\n\n", "")]);
}

#[test]
fn unfinished_event_is_not_dispatched() {
    let (events, _) = parse(b"data: a\n\ndata: b\n");
    assert_eq!(events, [ev("message", "a", "")]);
}

#[test]
fn utf8_split_across_chunks_and_invalid_bytes() {
    let stream = "data: héllo 🦀\n\n".as_bytes();
    let (events, _) = parse(stream);
    assert_eq!(events, [ev("message", "héllo 🦀", "")]);
    let (events, _) = parse(b"data: a\xffb\n\n");
    assert_eq!(events, [ev("message", "a\u{fffd}b", "")]);
}
