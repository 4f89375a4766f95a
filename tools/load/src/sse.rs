//! Server-Sent Events stream parsing (WHATWG HTML, "Parsing an event stream"), incremental.
//!
//! Bytes in, events out: a chunk may end anywhere — inside a field, between the CR and LF of a
//! line end, inside a blank line — and the result is the same as for the whole stream at once.
//! Lines end in CRLF, LF or CR. `data:` lines of one event are joined with LF. Comments (lines
//! starting with `:`) are counted, not dispatched. Must not: do I/O or allocate per event once
//! the buffers have grown to the largest event.

/// One dispatched event, borrowed from the parser until the next `feed`.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, empty for the default type `message`.
    pub event: &'a [u8],
    pub data: &'a [u8],
    /// The last `id:` seen in the stream (the "last event ID buffer").
    pub id: &'a [u8],
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    event: Vec<u8>,
    id: Vec<u8>,
    /// The id buffer as it was at the last blank line: the "last event ID string".
    last_event_id: Vec<u8>,
    /// The previous chunk ended with CR: an LF first in the next one belongs to it.
    skip_lf: bool,
    /// Comment lines seen (`: ok`, heartbeats).
    pub comments: u64,
    /// Bytes fed so far.
    pub bytes: u64,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The event stream's last event ID: the `id:` in force at the last blank line, even one
    /// ending an event with no data (ringcast writes one right after subscribing), never one
    /// of an event not yet complete. What `Last-Event-ID` resumes from.
    pub fn last_id(&self) -> &[u8] {
        &self.last_event_id
    }

    /// Feeds the next bytes of the stream; calls `on_event` for every complete event.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        self.bytes += chunk.len() as u64;
        if self.skip_lf {
            if let [b'\n', rest @ ..] = chunk {
                chunk = rest;
            }
            if !chunk.is_empty() {
                self.skip_lf = false;
            }
        }
        while !chunk.is_empty() {
            match chunk.iter().position(|&c| c == b'\n' || c == b'\r') {
                None => {
                    self.line.extend_from_slice(chunk);
                    return;
                }
                Some(i) => {
                    let end = chunk[i];
                    if self.line.is_empty() {
                        self.process_line(&chunk[..i], &mut on_event);
                    } else {
                        self.line.extend_from_slice(&chunk[..i]);
                        let line = std::mem::take(&mut self.line);
                        self.process_line(&line, &mut on_event);
                        self.line = line;
                        self.line.clear();
                    }
                    chunk = &chunk[i + 1..];
                    if end == b'\r' {
                        match chunk {
                            [b'\n', rest @ ..] => chunk = rest,
                            [] => self.skip_lf = true,
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    fn process_line(&mut self, line: &[u8], on_event: &mut impl FnMut(Event<'_>)) {
        if line.is_empty() {
            if self.last_event_id != self.id {
                self.last_event_id.clear();
                self.last_event_id.extend_from_slice(&self.id);
            }
            if !self.data.is_empty() {
                // The data buffer ends with the LF of its last line; the event does not.
                self.data.pop();
                on_event(Event {
                    event: &self.event,
                    data: &self.data,
                    id: &self.id,
                });
            }
            self.data.clear();
            self.event.clear();
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, mut value) = match line.iter().position(|&c| c == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        if let [b' ', rest @ ..] = value {
            value = rest;
        }
        match field {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.id.clear();
                self.id.extend_from_slice(value);
            }
            _ => {} // retry and unknown fields
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Vec<u8>, Vec<u8>, Vec<u8>);

    fn parse_split(stream: &[u8], splits: &[usize]) -> (Vec<Owned>, u64) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &s in splits.iter().chain(std::iter::once(&stream.len())) {
            p.feed(&stream[last..s], |e| {
                out.push((e.event.to_vec(), e.data.to_vec(), e.id.to_vec()))
            });
            last = s;
        }
        (out, p.comments)
    }

    fn ev(event: &str, data: &str, id: &str) -> Owned {
        (event.into(), data.into(), id.into())
    }

    #[test]
    fn vectors() {
        let cases: &[(&[u8], &[Owned], u64)] = &[
            (b"retry: 2000\n: ok\n\n", &[], 1),
            (b"id: 1:1\ndata: hello\n\n", &[ev("", "hello", "1:1")], 0),
            (b"data:a\r\ndata: b\r\n\r\n", &[ev("", "a\nb", "")], 0),
            (b"data: a\rdata: b\r\r", &[ev("", "a\nb", "")], 0),
            (
                b"event: reset\nid: 7:3\ndata: 7:3\n\ndata: x\n\n",
                &[ev("reset", "7:3", "7:3"), ev("", "x", "7:3")],
                0,
            ),
            // A blank line with no data dispatches nothing and clears event type.
            (b"event: e\n\ndata: y\n\n", &[ev("", "y", "")], 0),
            // A field without a colon, data with an empty value, a value keeping its 2nd space.
            (
                b"data\n\ndata:  two\n\n",
                &[ev("", "", ""), ev("", " two", "")],
                0,
            ),
            // An incomplete event at the end is not dispatched.
            (b"data: z\n", &[], 0),
            (b":\n:\n", &[], 2),
        ];
        for (i, (stream, want, comments)) in cases.iter().enumerate() {
            let (got, c) = parse_split(stream, &[]);
            assert_eq!(&got, want, "case {i}");
            assert_eq!(c, *comments, "case {i}");
        }
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let stream: &[u8] =
            b"retry: 1000\r\n: ok\r\n\r\nid: 1\r\ndata: one\r\n\r\nid: 2\rdata: two\r\rid: 3\ndata: th\ndata: ree\n\n:\n";
        let (whole, wc) = parse_split(stream, &[]);
        assert_eq!(whole.len(), 3);
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let (got, c) = parse_split(stream, &[a, b]);
                assert_eq!(got, whole, "splits at {a},{b}");
                assert_eq!(c, wc);
            }
        }
    }

    #[test]
    fn an_id_without_data_is_the_resume_point() {
        let mut p = SseParser::new();
        p.feed(b": ok\n\nid: e:4\n\n", |e| panic!("no event: {e:?}"));
        assert_eq!(p.last_id(), b"e:4");
        // Not before its event is complete.
        p.feed(b"id: e:5\ndata: x\n", |_| {});
        assert_eq!(p.last_id(), b"e:4");
        p.feed(b"\n", |_| {});
        assert_eq!(p.last_id(), b"e:5");
    }

    #[test]
    fn byte_by_byte() {
        let stream = b"data: a\r\n\r\ndata: b\r\n\r\n";
        let splits: Vec<usize> = (1..stream.len()).collect();
        let (got, _) = parse_split(stream, &splits);
        assert_eq!(got, vec![ev("", "a", ""), ev("", "b", "")]);
    }
}
