//! The few pieces of an HTTP/1.1 client the load tool needs (RFC 9112), sans I/O: request
//! encoding, response head parsing (httparse underneath) with the headers the tool acts on, and
//! a chunked-body decoder for servers that stream with `Transfer-Encoding: chunked`.

/// Most header lines read from a response head.
const MAX_RESPONSE_HEADERS: usize = 48;

/// A parsed response head: the status and the headers the tool acts on, copied out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
    pub content_length: Option<u64>,
    pub chunked: bool,
    /// `Connection: close`, or HTTP/1.0 without keep-alive.
    pub close: bool,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub ringcast_next: Option<String>,
    pub ws_accept: Option<String>,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
}

/// Why a response head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    Malformed,
    BadContentLength,
}

/// Parses a response head from the start of `buf`; `Ok(None)` if it is not complete yet.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(HeadError::Malformed),
    };
    let mut h = ResponseHead {
        status: r.code.unwrap_or(0),
        head_len,
        close: r.version == Some(0),
        ..Default::default()
    };
    let text = |v: &[u8]| String::from_utf8_lossy(v).trim().to_string();
    for hd in r.headers.iter() {
        let n = hd.name;
        if n.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(hd.value).map_err(|_| HeadError::BadContentLength)?;
            h.content_length = Some(v.trim().parse().map_err(|_| HeadError::BadContentLength)?);
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = text(hd.value).to_ascii_lowercase().ends_with("chunked");
        } else if n.eq_ignore_ascii_case("connection") {
            let v = text(hd.value).to_ascii_lowercase();
            if v.contains("close") {
                h.close = true;
            } else if v.contains("keep-alive") {
                h.close = false;
            }
        } else if n.eq_ignore_ascii_case("etag") {
            h.etag = Some(text(hd.value));
        } else if n.eq_ignore_ascii_case("last-modified") {
            h.last_modified = Some(text(hd.value));
        } else if n.eq_ignore_ascii_case("x-ringcast-next") {
            h.ringcast_next = Some(text(hd.value));
        } else if n.eq_ignore_ascii_case("sec-websocket-accept") {
            h.ws_accept = Some(text(hd.value));
        } else if n.eq_ignore_ascii_case("content-type") {
            h.content_type = Some(text(hd.value));
        } else if n.eq_ignore_ascii_case("retry-after") {
            h.retry_after = Some(text(hd.value));
        }
    }
    Ok(Some(h))
}

/// Appends a request. `body` gets a `Content-Length`; `extra` header lines are written as given.
pub fn encode_request(
    method: &str,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
    out: &mut Vec<u8>,
) {
    use std::io::Write;
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in extra {
        let _ = write!(out, "{k}: {v}\r\n");
    }
    if let Some(b) = body {
        let _ = write!(out, "Content-Length: {}\r\n\r\n", b.len());
        out.extend_from_slice(b);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// Incremental decoder of a chunked body (RFC 9112 §7.1). Chunk extensions and trailers are
/// skipped.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    size_acc: u64,
    pub done: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// After the size digits: extension or the CR, until LF.
    SizeLine,
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines until an empty one. The bool: the current line has
    /// bytes.
    Trailer(bool),
}

/// The chunked framing is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError;

impl Dechunker {
    /// Decodes `input`, appending body bytes to `out`. Returns the bytes of `input` used (all of
    /// them unless the body ended inside it).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && !self.done {
            let c = input[i];
            match self.state {
                ChunkState::Size => match c {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (c as char).to_digit(16).unwrap_or(0) as u64;
                        self.size_acc = self
                            .size_acc
                            .checked_mul(16)
                            .and_then(|v| v.checked_add(d))
                            .ok_or(ChunkError)?;
                        i += 1;
                    }
                    _ => self.state = ChunkState::SizeLine,
                },
                ChunkState::SizeLine => {
                    i += 1;
                    if c == b'\n' {
                        let n = std::mem::take(&mut self.size_acc);
                        self.state = if n == 0 {
                            ChunkState::Trailer(false)
                        } else {
                            ChunkState::Data(n)
                        };
                    }
                }
                ChunkState::Data(n) => {
                    let take = (n as usize).min(input.len() - i);
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataCr => {
                    i += 1;
                    self.state = match c {
                        b'\r' => ChunkState::DataLf,
                        b'\n' => ChunkState::Size,
                        _ => return Err(ChunkError),
                    };
                }
                ChunkState::DataLf => {
                    i += 1;
                    if c != b'\n' {
                        return Err(ChunkError);
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer(has) => {
                    i += 1;
                    match c {
                        b'\n' if !has => self.done = true,
                        b'\n' => self.state = ChunkState::Trailer(false),
                        b'\r' => {}
                        _ => self.state = ChunkState::Trailer(true),
                    }
                }
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        );
        let h = parse_response_head(
            b"HTTP/1.1 204 No Content\r\nX-Ringcast-Next: ab:3\r\nContent-Length: 0\r\n\r\nrest",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.retry_after, None);
        assert_eq!(h.status, 204);
        assert_eq!(h.content_length, Some(0));
        assert_eq!(h.ringcast_next.as_deref(), Some("ab:3"));
        assert_eq!(h.head_len, 69);
        assert!(!h.close);
        let h = parse_response_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nConnection: close\r\nEtag: 0\r\n\
              Last-Modified: Thu, 01 Jan 1970 00:00:01 GMT\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(h.chunked && h.close);
        assert_eq!(h.etag.as_deref(), Some("0"));
        assert_eq!(
            h.last_modified.as_deref(),
            Some("Thu, 01 Jan 1970 00:00:01 GMT")
        );
        let h = parse_response_head(b"HTTP/1.0 200 OK\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.close);
        let h = parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.status, h.retry_after.as_deref()), (503, Some("2")));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            Err(HeadError::BadContentLength)
        );
        assert_eq!(
            parse_response_head(b"HTTQ/1.1 200\r\n\r\n"),
            Err(HeadError::Malformed)
        );
    }

    #[test]
    fn request_encoding() {
        let mut v = Vec::new();
        encode_request(
            "POST",
            "h:1",
            "/pub/t",
            &[("X-A", "b")],
            Some(b"hi"),
            &mut v,
        );
        assert_eq!(
            v,
            b"POST /pub/t HTTP/1.1\r\nHost: h:1\r\nX-A: b\r\nContent-Length: 2\r\n\r\nhi"
        );
        v.clear();
        encode_request("GET", "h", "/", &[], None, &mut v);
        assert_eq!(v, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    #[test]
    fn chunked_every_split() {
        let body: &[u8] =
            b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let want = b"hello 0123456789";
        for a in 0..=body.len() {
            let mut d = Dechunker::default();
            let mut out = Vec::new();
            let n1 = d.feed(&body[..a], &mut out).unwrap();
            assert_eq!(n1, a.min(body.len() - 4));
            let n2 = d.feed(&body[n1..], &mut out).unwrap();
            assert!(d.done, "split {a}");
            assert_eq!(&body[n1 + n2..], b"NEXT", "split {a}");
            assert_eq!(out, want, "split {a}");
        }
        let mut d = Dechunker::default();
        assert_eq!(d.feed(b"3\r\nabcX", &mut Vec::new()), Err(ChunkError));
    }
}
