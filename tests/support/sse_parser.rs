//! An independent Server-Sent Events parser for tests: the oracle the SSE writer and the server's
//! `/sse` route are checked against.
//!
//! It follows WHATWG HTML §9.2.5 "Parsing an event stream" and §9.2.6 "Interpreting an event
//! stream" rule by rule, and was written from those rules, not from `ringcast::codec::sse`:
//! - the stream is UTF-8 (invalid bytes become U+FFFD); one leading U+FEFF BOM is dropped;
//! - a line ends at CRLF, at an LF, or at a CR not followed by LF — also when the CR ends one
//!   `feed` chunk and the LF starts the next;
//! - an empty line dispatches; a line starting with `:` is a comment (ignored, but counted, so
//!   tests can see heartbeats); otherwise the field name is everything before the first `:` and
//!   the value everything after it, minus one leading space (no colon: the whole line is the name
//!   and the value is empty);
//! - `event` sets the event type buffer; `data` appends the value and an LF to the data buffer;
//!   `id` sets the last event ID buffer unless the value contains NUL; `retry` sets the
//!   reconnection time if the value is only ASCII digits; any other field is ignored;
//! - dispatch: the last event ID string becomes the last event ID buffer (which persists across
//!   events); if the data buffer is empty, the data and event type buffers are cleared and nothing
//!   is dispatched; else one trailing LF is removed from the data, the type defaults to `message`,
//!   and both buffers are cleared;
//! - an event not ended by a blank line is never dispatched (end of stream discards it).
//!
//! Include it with `#[path = "support/sse_parser.rs"] mod sse_parser;`.
#![allow(dead_code)]

/// One dispatched event, as `EventSource` hands it to script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type (`message` unless an `event:` field named it).
    pub event: String,
    /// `MessageEvent.data`.
    pub data: String,
    /// `MessageEvent.lastEventId`: the last event ID string when the event was dispatched.
    pub id: String,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Incremental parser: feed it the response body in chunks of any size.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes seen so far while deciding whether the stream starts with a BOM.
    bom_prefix: Vec<u8>,
    /// The BOM check is over (stripped or not there).
    bom_done: bool,
    /// The previous byte was a CR that ended a line: an LF right after it belongs to that line end.
    after_cr: bool,
    /// The bytes of the line being read (decoded once the line ends).
    line: Vec<u8>,
    data_buffer: String,
    event_type_buffer: String,
    last_event_id_buffer: String,
    last_event_id: String,
    reconnection_time: Option<u64>,
    comments: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `bytes`, continuing where the previous call stopped; returns the events dispatched.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        for &b in bytes {
            if !self.bom_done {
                self.bom_prefix.push(b);
                if BOM.starts_with(&self.bom_prefix) {
                    if self.bom_prefix.len() == BOM.len() {
                        self.bom_prefix.clear();
                        self.bom_done = true;
                    }
                    continue;
                }
                self.bom_done = true;
                for b in std::mem::take(&mut self.bom_prefix) {
                    self.byte(b, &mut events);
                }
                continue;
            }
            self.byte(b, &mut events);
        }
        events
    }

    /// The last event ID string: what a browser would send as `Last-Event-ID` on reconnecting.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time set by the last valid `retry:` field, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// How many comment lines (lines starting with `:`) have been seen.
    pub fn comments(&self) -> usize {
        self.comments
    }

    fn byte(&mut self, b: u8, events: &mut Vec<SseEvent>) {
        if self.after_cr {
            self.after_cr = false;
            if b == b'\n' {
                return; // the LF of a CRLF whose CR already ended the line
            }
        }
        match b {
            b'\r' => {
                self.after_cr = true;
                self.end_line(events);
            }
            b'\n' => self.end_line(events),
            _ => self.line.push(b),
        }
    }

    fn end_line(&mut self, events: &mut Vec<SseEvent>) {
        let bytes = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&bytes);
        if line.is_empty() {
            if let Some(event) = self.dispatch() {
                events.push(event);
            }
        } else if line.starts_with(':') {
            self.comments += 1;
        } else if let Some(colon) = line.find(':') {
            let value = &line[colon + 1..];
            let value = value.strip_prefix(' ').unwrap_or(value);
            self.field(&line[..colon], value);
        } else {
            self.field(&line, "");
        }
    }

    fn field(&mut self, name: &str, value: &str) {
        match name {
            "event" => self.event_type_buffer = value.to_string(),
            "data" => {
                self.data_buffer.push_str(value);
                self.data_buffer.push('\n');
            }
            // An id holding NUL is ignored (a browser could not send it back in a header).
            "id" if !value.contains('\0') => self.last_event_id_buffer = value.to_string(),
            // Only ASCII digits; digits beyond u64 are out of any sane range, ignored likewise.
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.reconnection_time = value.parse().ok().or(self.reconnection_time);
            }
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.last_event_id = self.last_event_id_buffer.clone();
        if self.data_buffer.is_empty() {
            self.event_type_buffer.clear();
            return None;
        }
        let mut data = std::mem::take(&mut self.data_buffer);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = std::mem::take(&mut self.event_type_buffer);
        Some(SseEvent {
            event: if event.is_empty() {
                "message".to_string()
            } else {
                event
            },
            data,
            id: self.last_event_id.clone(),
        })
    }
}

/// Reads an SSE stream into `p` until `n` events arrived, EOF, or `within` ends; returns the
/// events.
pub fn read_events(
    s: &mut std::net::TcpStream,
    p: &mut SseParser,
    n: usize,
    within: std::time::Duration,
) -> Vec<SseEvent> {
    use std::io::Read;
    let t = std::time::Instant::now();
    s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while out.len() < n && t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => out.extend(p.feed(&buf[..k])),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    out
}
