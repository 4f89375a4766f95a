//! Request heads (RFC 9112 §2–§6, §9.3): a head parsed into offsets, and its framing.
//!
//! Owns: [`parse_head`] (httparse underneath) and what it decides — method, target, version,
//! header offsets, the body's framing (`Content-Length`, `Transfer-Encoding`), keep-alive and
//! `Expect: 100-continue` — and the accessors that slice values out of the buffer later.
//! Must not: allocate per request (the caller's [`Head`] keeps its header vector), look at
//! bytes past the head, or panic on any input: every rejection is a [`HeadError`].

use std::mem::MaybeUninit;
use std::ops::Range;

use super::HeadError;

/// Hard cap on header fields per request, whatever [`Limits::max_headers`] says: the size of
/// the stack array httparse parses into (32 bytes per entry).
pub const MAX_HEADERS_CAP: usize = 128;
/// Default for [`Limits::max_request_line_bytes`].
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
/// Default for [`Limits::max_head_bytes`].
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// Default for [`Limits::max_headers`].
pub const DEFAULT_MAX_HEADERS: usize = 64;

/// Size limits for a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line (method, target, version; without CRLF). Past it: 414.
    pub max_request_line_bytes: usize,
    /// Longest head, leading empty lines and final CRLFCRLF included. Past it: 431.
    pub max_head_bytes: usize,
    /// Most header fields (capped at [`MAX_HEADERS_CAP`]). Past it: 431.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line_bytes: DEFAULT_MAX_REQUEST_LINE_BYTES,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Request method (RFC 9110 §9). Case-sensitive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Patch,
    /// A valid token we do not implement (CONNECT, TRACE, extensions): the caller answers 501.
    Other,
}

impl Method {
    fn from_token(m: &str) -> Method {
        match m {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            "PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }
}

/// How the request body is framed (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BodyKind {
    /// No body.
    #[default]
    None,
    /// `Content-Length: n` (n may be 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`: decode with [`ChunkedDecoder`](super::ChunkedDecoder).
    Chunked,
}

/// A parsed request head: offsets into the buffer given to [`parse_head`].
///
/// Only meaningful after `parse_head` returned `Ok(Status::Complete)`; reuse one `Head` per
/// connection so `headers` keeps its capacity.
#[derive(Debug, Default, Clone)]
pub struct Head {
    pub method: Method,
    /// Request-target offsets in the parsed buffer.
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// (name, value) offsets, in order; values are trimmed of surrounding whitespace.
    pub headers: Vec<(Range<usize>, Range<usize>)>,
    /// Bytes of the head, leading empty lines and the final empty line included.
    pub head_len: usize,
    pub body: BodyKind,
    /// Whether the connection may be reused after this exchange (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

impl Head {
    /// The value of the first field named `name` (case-insensitive).
    pub fn header<'b>(&self, buf: &'b [u8], name: &str) -> Option<&'b [u8]> {
        self.headers(buf)
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// All fields as (name, value) byte slices, in order.
    pub fn headers<'s, 'b>(
        &'s self,
        buf: &'b [u8],
    ) -> impl Iterator<Item = (&'b [u8], &'b [u8])> + 's
    where
        'b: 's,
    {
        self.headers.iter().map(move |(n, v)| {
            (
                buf.get(n.clone()).unwrap_or_default(),
                buf.get(v.clone()).unwrap_or_default(),
            )
        })
    }

    /// The raw request-target.
    pub(crate) fn target<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        buf.get(self.target.clone()).unwrap_or_default()
    }

    /// The path of the target, up to `?` (not percent-decoded). For an absolute-form target
    /// (`http://host/p?q`, RFC 9112 §3.2.2) the scheme and authority are skipped; an empty path
    /// there is `/`.
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        let t = self.target(buf);
        let t = match t.iter().position(|&b| b == b'?') {
            Some(q) => &t[..q],
            None => t,
        };
        if t.first() == Some(&b'/') {
            return t;
        }
        // absolute-form: scheme "://" authority path-abempty
        if let Some(i) = t.windows(3).position(|w| w == b"://") {
            let rest = &t[i + 3..];
            return match rest.iter().position(|&b| b == b'/') {
                Some(p) => &rest[p..],
                None => b"/",
            };
        }
        t
    }

    /// The query of the target (after the first `?`), empty if none.
    pub fn query<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        let t = self.target(buf);
        match t.iter().position(|&b| b == b'?') {
            Some(q) => &t[q + 1..],
            None => &[],
        }
    }

    /// Whether `token` is an element of the comma-separated list in any field named `name`
    /// (both case-insensitive), e.g. `has_token(buf, "Connection", "upgrade")`.
    pub fn has_token(&self, buf: &[u8], name: &str, token: &str) -> bool {
        self.headers(buf)
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .any(|(_, v)| list_elements(v).any(|e| e.eq_ignore_ascii_case(token.as_bytes())))
    }
}

/// Elements of a `#rule` list (RFC 9110 §5.6.1): split on commas, OWS trimmed, empties skipped.
fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Outcome of [`parse_head`] when no error was proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The head is complete and `Head` is filled in.
    Complete,
    /// Need more bytes.
    Partial,
}

/// Parse a request head from the start of `buf` into `head`.
///
/// `Partial` means "need more bytes", but the size errors (414/431) are returned as soon as the
/// bytes already received prove them — no CRLF within `max_request_line_bytes`, or
/// `buf.len() >= max_head_bytes` without a complete head — so a slowloris or a huge head is
/// rejected early. Bytes after `head.head_len` (body, pipelined requests) are not looked at.
pub fn parse_head(buf: &[u8], limits: &Limits, head: &mut Head) -> Result<Status, HeadError> {
    // httparse never sees more than max_head_bytes, so a head that does not fit is never parsed
    // past the limit and the outcome does not depend on how the bytes were split.
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    let line = first_line(window, limits.max_request_line_bytes)?;

    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let n_slots = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(window, &mut slots[..n_slots]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if window.len() >= limits.max_head_bytes {
                Err(HeadError::HeadTooLarge)
            } else {
                Ok(Status::Partial)
            };
        }
        Err(e) => return Err(map_httparse_error(e, window, line)),
    };

    let base = buf.as_ptr() as usize;
    // Every slice httparse returns points into `window`; an empty one might not, so be defensive.
    let offset = |s: &[u8]| {
        let start = (s.as_ptr() as usize).wrapping_sub(base);
        if start <= buf.len() && s.len() <= buf.len() - start {
            start..start + s.len()
        } else {
            0..0
        }
    };
    let method = Method::from_token(req.method.unwrap_or_default());
    let target = req.path.unwrap_or_default();
    let minor_version = req.version.unwrap_or_default();
    check_target(target.as_bytes(), method)?;

    head.method = method;
    head.target = offset(target.as_bytes());
    head.minor_version = minor_version;
    head.head_len = head_len;
    head.headers.clear();

    let mut hosts = 0usize;
    let mut content_length: Option<u64> = None;
    let mut te = TeState::Absent;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        head.headers.push((offset(name), offset(h.value)));
        // Dispatch on length first: most fields are none of these.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => hosts += 1,
            6 if name.eq_ignore_ascii_case(b"expect") => {
                if h.value.eq_ignore_ascii_case(b"100-continue") {
                    expect_continue = true;
                } else {
                    return Err(HeadError::UnsupportedExpectation);
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for e in list_elements(h.value) {
                    if e.eq_ignore_ascii_case(b"close") {
                        conn_close = true;
                    } else if e.eq_ignore_ascii_case(b"keep-alive") {
                        conn_keep_alive = true;
                    }
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                let n = parse_content_length(h.value)?;
                if content_length.is_some_and(|prev| prev != n) {
                    return Err(HeadError::BadContentLength);
                }
                content_length = Some(n);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => te = te.add(h.value),
            _ => {}
        }
    }

    if minor_version == 1 && hosts == 0 {
        return Err(HeadError::MissingHost);
    }
    if hosts > 1 {
        return Err(HeadError::DuplicateHost);
    }
    head.body = match (te, content_length) {
        (TeState::Absent, None) => BodyKind::None,
        (TeState::Absent, Some(n)) => BodyKind::Length(n),
        (_, _) if minor_version == 0 => return Err(HeadError::TransferEncodingInHttp10),
        (_, Some(_)) => return Err(HeadError::LengthAndChunked),
        (TeState::Error(e), None) => return Err(e),
        (TeState::Empty, None) => return Err(HeadError::BadTransferEncoding),
        (
            TeState::Codings {
                last_chunked: false,
                ..
            },
            None,
        ) => return Err(HeadError::ChunkedNotFinal),
        (TeState::Codings { other: true, .. }, None) => {
            return Err(HeadError::UnsupportedTransferCoding)
        }
        (TeState::Codings { .. }, None) => BodyKind::Chunked,
    };
    head.keep_alive = if minor_version == 1 {
        !conn_close
    } else {
        conn_keep_alive && !conn_close
    };
    head.expect_continue = expect_continue && minor_version == 1;
    Ok(Status::Complete)
}

/// The request line within `window`, after leading empty lines (RFC 9112 §2.2): `Some(line)`
/// without its line ending once complete, `None` while still partial. Errors with 414 as soon
/// as the line is proven longer than `max`.
fn first_line(window: &[u8], max: usize) -> Result<Option<&[u8]>, HeadError> {
    let mut rest = window;
    while let [b'\r', b'\n', tail @ ..] | [b'\n', tail @ ..] = rest {
        rest = tail;
    }
    // A line of `max` bytes plus CRLF fits in max + 2 bytes.
    let scan = &rest[..rest.len().min(max.saturating_add(2))];
    match scan.iter().position(|&b| b == b'\n') {
        Some(lf) => {
            let line = &rest[..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > max {
                Err(HeadError::RequestLineTooLong)
            } else {
                Ok(Some(line))
            }
        }
        None if scan.len() >= max.saturating_add(2) => Err(HeadError::RequestLineTooLong),
        None => Ok(None),
    }
}

fn map_httparse_error(e: httparse::Error, window: &[u8], line: Option<&[u8]>) -> HeadError {
    let line = line.unwrap_or_else(|| {
        // Partial first line: everything after the leading empty lines.
        let start = window.iter().position(|&b| b != b'\r' && b != b'\n');
        start.map_or(&[][..], |s| &window[s..])
    });
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooManyHeaders,
        httparse::Error::HeaderName | httparse::Error::HeaderValue => HeadError::BadHeader,
        httparse::Error::Version => {
            let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            if looks_like_http_version(version) {
                HeadError::UnsupportedVersion
            } else {
                HeadError::BadRequestLine
            }
        }
        // NewLine / Token: in the header section if the request line is complete and valid.
        _ if is_valid_request_line(line) => HeadError::BadHeader,
        _ => HeadError::BadRequestLine,
    }
}

/// method SP request-target SP ("HTTP/1.0" | "HTTP/1.1"), as httparse accepts it.
fn is_valid_request_line(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && method.iter().all(|&b| is_tchar(b))
        && !target.is_empty()
        && target.iter().all(|&b| b > b' ' && b != 0x7f)
        && (version == b"HTTP/1.1" || version == b"HTTP/1.0")
}

/// `HTTP/` DIGIT+ [ "." DIGIT* ] — a version we could name but do not speak (or a prefix of
/// one, when the line is not complete yet).
fn looks_like_http_version(v: &[u8]) -> bool {
    let Some(rest) = v.strip_prefix(b"HTTP/") else {
        return false;
    };
    let major = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if major == 0 {
        return false;
    }
    match &rest[major..] {
        [] => true,
        [b'.', minor @ ..] => minor.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

/// RFC 9112 §3.2: origin-form (`/…`), asterisk-form (`*`), or absolute/authority-form
/// (`scheme:…` / `host:port`), which start with a letter or digit and contain a colon.
fn check_target(t: &[u8], method: Method) -> Result<(), HeadError> {
    match t {
        [b'/', ..] => Ok(()),
        b"*" if method == Method::Options => Ok(()),
        [first, ..] if first.is_ascii_alphanumeric() && t.contains(&b':') => Ok(()),
        _ => Err(HeadError::BadTarget),
    }
}

fn parse_content_length(v: &[u8]) -> Result<u64, HeadError> {
    if v.is_empty() {
        return Err(HeadError::BadContentLength);
    }
    v.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return Err(HeadError::BadContentLength);
        }
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(HeadError::BadContentLength)
    })
}

/// Transfer-Encoding codings seen so far, across repeated fields.
#[derive(Clone, Copy, Debug)]
enum TeState {
    Absent,
    /// Present with no element at all.
    Empty,
    Codings {
        /// The last coding so far is `chunked`.
        last_chunked: bool,
        /// A coding other than `chunked` was seen.
        other: bool,
    },
    Error(HeadError),
}

impl TeState {
    fn add(self, value: &[u8]) -> TeState {
        let mut st = match self {
            TeState::Absent => TeState::Empty,
            s => s,
        };
        for e in list_elements(value) {
            st = match st {
                TeState::Error(_) => return st,
                TeState::Codings {
                    last_chunked: true, ..
                } => TeState::Error(HeadError::ChunkedNotFinal),
                TeState::Absent | TeState::Empty | TeState::Codings { .. } => {
                    let other = matches!(st, TeState::Codings { other: true, .. });
                    if e.eq_ignore_ascii_case(b"chunked") {
                        TeState::Codings {
                            last_chunked: true,
                            other,
                        }
                    } else if is_coding(e) {
                        TeState::Codings {
                            last_chunked: false,
                            other: true,
                        }
                    } else {
                        TeState::Error(HeadError::BadTransferEncoding)
                    }
                }
            };
        }
        st
    }
}

/// transfer-coding = token *( OWS ";" OWS transfer-parameter ): a token, parameters unchecked.
fn is_coding(e: &[u8]) -> bool {
    let name = e
        .split(|&b| b == b';')
        .next()
        .map(trim_ows)
        .unwrap_or_default();
    !name.is_empty() && name.iter().all(|&b| is_tchar(b))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::http1::ChunkedDecoder;

    const LIMITS: Limits = Limits {
        max_request_line_bytes: 64,
        max_head_bytes: 256,
        max_headers: 8,
    };

    fn parse(buf: &[u8], limits: &Limits) -> Result<(Status, Head), HeadError> {
        let mut head = Head::default();
        parse_head(buf, limits, &mut head).map(|s| (s, head))
    }

    struct Valid {
        raw: &'static [u8],
        method: Method,
        target: &'static [u8],
        path: &'static [u8],
        query: &'static [u8],
        minor: u8,
        headers: usize,
        body: BodyKind,
        keep_alive: bool,
        expect_continue: bool,
    }

    const fn v(raw: &'static [u8], method: Method, target: &'static [u8]) -> Valid {
        Valid {
            raw,
            method,
            target,
            path: target,
            query: b"",
            minor: 1,
            headers: 1,
            body: BodyKind::None,
            keep_alive: true,
            expect_continue: false,
        }
    }

    const VALID: &[Valid] = &[
        v(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Get, b"/"),
        Valid {
            path: b"/poll/t",
            query: b"since=1:2&wait=5",
            ..v(
                b"GET /poll/t?since=1:2&wait=5 HTTP/1.1\r\nHost: a\r\n\r\n",
                Method::Get,
                b"/poll/t?since=1:2&wait=5",
            )
        },
        v(b"HEAD /healthz HTTP/1.1\r\nHost: a\r\n\r\n", Method::Head, b"/healthz"),
        // Leading empty lines are ignored (RFC 9112 §2.2); bare LF line endings accepted.
        v(b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Get, b"/"),
        v(b"\nGET / HTTP/1.1\nHost: a\n\n", Method::Get, b"/"),
        Valid {
            minor: 0,
            headers: 0,
            keep_alive: false,
            ..v(b"GET / HTTP/1.0\r\n\r\n", Method::Get, b"/")
        },
        Valid {
            minor: 0,
            keep_alive: true,
            ..v(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Method::Get, b"/")
        },
        Valid {
            minor: 0,
            headers: 2,
            keep_alive: false,
            ..v(
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                Method::Get,
                b"/",
            )
        },
        Valid {
            headers: 2,
            keep_alive: false,
            ..v(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", Method::Get, b"/")
        },
        Valid {
            headers: 2,
            ..v(
                b"GET /ws/t HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
                Method::Get,
                b"/ws/t",
            )
        },
        Valid {
            headers: 2,
            keep_alive: false,
            ..v(
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade ,close\r\n\r\n",
                Method::Get,
                b"/",
            )
        },
        Valid {
            headers: 2,
            body: BodyKind::Length(5),
            ..v(b"POST /pub/t HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", Method::Post, b"/pub/t")
        },
        Valid {
            headers: 3,
            body: BodyKind::Length(5),
            ..v(
                b"POST /pub/t HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nContent-Length: 5\r\n\r\n",
                Method::Post,
                b"/pub/t",
            )
        },
        Valid {
            headers: 2,
            body: BodyKind::Chunked,
            ..v(
                b"POST /pub/t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Method::Post,
                b"/pub/t",
            )
        },
        Valid {
            headers: 3,
            body: BodyKind::Length(0),
            expect_continue: true,
            ..v(
                b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n",
                Method::Put,
                b"/x",
            )
        },
        // 100-continue is ignored in HTTP/1.0 (RFC 9110 §10.1.1).
        Valid {
            minor: 0,
            keep_alive: false,
            ..v(b"POST /x HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", Method::Post, b"/x")
        },
        v(b"DELETE /x HTTP/1.1\r\nHost: a\r\n\r\n", Method::Delete, b"/x"),
        v(b"PATCH /x HTTP/1.1\r\nHost: a\r\n\r\n", Method::Patch, b"/x"),
        Valid {
            path: b"*",
            ..v(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", Method::Options, b"*")
        },
        v(b"BREW /pot HTTP/1.1\r\nHost: a\r\n\r\n", Method::Other, b"/pot"),
        v(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", Method::Other, b"a:443"),
        Valid {
            path: b"/sse/t",
            query: b"x=1",
            ..v(
                b"GET http://a:80/sse/t?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
                Method::Get,
                b"http://a:80/sse/t?x=1",
            )
        },
        Valid {
            path: b"/",
            ..v(b"GET http://a HTTP/1.1\r\nHost: a\r\n\r\n", Method::Get, b"http://a")
        },
        // Empty value, surrounding whitespace trimmed.
        Valid {
            headers: 2,
            ..v(b"GET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\n\r\n", Method::Get, b"/")
        },
    ];

    fn check_valid(case: &Valid, buf: &[u8]) {
        let (status, head) = parse(buf, &LIMITS).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(status, Status::Complete);
        assert_eq!(head.method, case.method);
        assert_eq!(&buf[head.target.clone()], case.target);
        assert_eq!(head.path(buf), case.path);
        assert_eq!(head.query(buf), case.query);
        assert_eq!(head.minor_version, case.minor);
        assert_eq!(head.headers.len(), case.headers);
        assert_eq!(head.head_len, case.raw.len());
        assert_eq!(head.body, case.body);
        assert_eq!(head.keep_alive, case.keep_alive);
        assert_eq!(head.expect_continue, case.expect_continue);
    }

    #[test]
    fn valid_heads() {
        for case in VALID {
            check_valid(case, case.raw);
        }
    }

    #[test]
    fn valid_heads_split_at_every_byte_are_partial() {
        for case in VALID {
            for cut in 0..case.raw.len() {
                let r = parse(&case.raw[..cut], &LIMITS).map(|(s, _)| s);
                assert_eq!(r, Ok(Status::Partial), "{:?} cut at {cut}", case.raw);
            }
        }
    }

    #[test]
    fn pipelined_heads() {
        let mut buf = Vec::new();
        for case in VALID {
            buf.extend_from_slice(case.raw);
        }
        let mut at = 0;
        let mut head = Head::default();
        for case in VALID {
            assert_eq!(
                parse_head(&buf[at..], &LIMITS, &mut head),
                Ok(Status::Complete)
            );
            assert_eq!(head.head_len, case.raw.len());
            check_valid(case, &buf[at..at + head.head_len]);
            at += head.head_len;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn header_accessors() {
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-A:  1 \r\nx-a: 2\r\nConnection: a, Upgrade\r\n\
                    Connection: ,,keep-alive\r\n\r\n";
        let (_, head) = parse(buf, &LIMITS).unwrap();
        assert_eq!(head.header(buf, "x-a"), Some(&b"1"[..]));
        assert_eq!(head.header(buf, "HOST"), Some(&b"a"[..]));
        assert_eq!(head.header(buf, "missing"), None);
        let all: Vec<_> = head.headers(buf).collect();
        assert_eq!(all[2], (&b"x-a"[..], &b"2"[..]));
        assert!(head.has_token(buf, "connection", "upgrade"));
        assert!(head.has_token(buf, "Connection", "KEEP-ALIVE"));
        assert!(!head.has_token(buf, "Connection", "close"));
        assert!(!head.has_token(buf, "Connection", "upgr"));
    }

    const INVALID: &[(&[u8], HeadError)] = &[
        // 414: the request line is over 64 bytes (complete or not).
        (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::RequestLineTooLong),
        (b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", HeadError::RequestLineTooLong),
        // 431: head over 256 bytes; more than 8 fields.
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n", HeadError::HeadTooLarge),
        (b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n\r\n", HeadError::TooManyHeaders),
        // 400 request line.
        (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"GET /\r\n\r\n", HeadError::BadRequestLine),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"GET / http/1.1\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"GET / HTTP/1.x\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BadRequestLine),
        (b"GET a HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BadTarget),
        (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", HeadError::BadTarget),
        // 400 fields.
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", HeadError::BadHeader),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n 2\r\n\r\n", HeadError::BadHeader),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n", HeadError::BadHeader),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", HeadError::BadHeader),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\rX\r\n\r\n", HeadError::BadHeader),
        // 505.
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", HeadError::UnsupportedVersion),
        (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", HeadError::UnsupportedVersion),
        // Framing.
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", HeadError::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", HeadError::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", HeadError::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", HeadError::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n", HeadError::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", HeadError::BadContentLength),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::LengthAndChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", HeadError::LengthAndChunked),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HeadError::UnsupportedTransferCoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::UnsupportedTransferCoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", HeadError::ChunkedNotFinal),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", HeadError::ChunkedNotFinal),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::ChunkedNotFinal),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", HeadError::BadTransferEncoding),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", HeadError::BadTransferEncoding),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", HeadError::TransferEncodingInHttp10),
        (b"GET / HTTP/1.1\r\n\r\n", HeadError::MissingHost),
        (b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n", HeadError::DuplicateHost),
        (b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", HeadError::DuplicateHost),
        (b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", HeadError::UnsupportedExpectation),
    ];

    #[test]
    fn invalid_heads() {
        for (raw, want) in INVALID {
            assert_eq!(
                parse(raw, &LIMITS).map(|(s, _)| s),
                Err(*want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn invalid_heads_prefixes_never_panic_and_errors_are_stable() {
        // A prefix is Partial or an error; once a size error is proven it stays the answer.
        for (raw, want) in INVALID {
            for cut in 0..raw.len() {
                let r = parse(&raw[..cut], &LIMITS).map(|(s, _)| s);
                if matches!(
                    want,
                    HeadError::RequestLineTooLong | HeadError::HeadTooLarge
                ) {
                    assert!(r == Ok(Status::Partial) || r == Err(*want), "{r:?}");
                }
            }
        }
    }

    #[test]
    fn size_errors_are_early() {
        // No CRLF in the first 66 bytes: 414 without waiting for more.
        let line = [b'a'; 66];
        assert_eq!(
            parse(&line, &LIMITS).map(|(s, _)| s),
            Err(HeadError::RequestLineTooLong)
        );
        assert_eq!(
            parse(&line[..65], &LIMITS).map(|(s, _)| s),
            Ok(Status::Partial)
        );
        // A 64-byte request line is fine, 65 is not.
        let mut ok = b"GET /".to_vec();
        ok.resize(64 - 9, b'a');
        ok.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(parse(&ok, &LIMITS).is_ok());
        ok.insert(5, b'a');
        assert_eq!(
            parse(&ok, &LIMITS).map(|(s, _)| s),
            Err(HeadError::RequestLineTooLong)
        );
        // An endless header: 431 as soon as max_head_bytes bytes are in without a head.
        let mut slow = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        slow.resize(255, b'a');
        assert_eq!(parse(&slow, &LIMITS).map(|(s, _)| s), Ok(Status::Partial));
        slow.push(b'a');
        assert_eq!(
            parse(&slow, &LIMITS).map(|(s, _)| s),
            Err(HeadError::HeadTooLarge)
        );
        // Endless empty lines are bounded too.
        assert_eq!(
            parse(&[b'\n'; 256], &LIMITS).map(|(s, _)| s),
            Err(HeadError::HeadTooLarge)
        );
        // A complete head followed by a big body is fine.
        let mut body = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n".to_vec();
        body.resize(2000, b'x');
        assert!(matches!(parse(&body, &LIMITS), Ok((Status::Complete, h)) if h.head_len == 50));
        // Exactly 8 fields is fine; the hard cap holds whatever the limit says.
        let mut eight = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..7 {
            eight.extend_from_slice(b"X: 1\r\n");
        }
        eight.extend_from_slice(b"\r\n");
        assert!(parse(&eight, &LIMITS).is_ok());
        let huge = Limits {
            max_request_line_bytes: 1 << 20,
            max_head_bytes: 1 << 20,
            max_headers: usize::MAX,
        };
        let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for _ in 0..MAX_HEADERS_CAP {
            many.extend_from_slice(b"X: 1\r\n");
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(
            parse(&many, &huge).map(|(s, _)| s),
            Err(HeadError::TooManyHeaders)
        );
    }

    /// Tiny deterministic PRNG (xorshift) for garbage inputs.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn garbage_never_panics() {
        let alphabet =
            b"GET /HTP1.0\r\n :chunkedContent-LengthTransfer-Encoding,\x00\xff\t;0123456789";
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            buf.clear();
            let len = (xorshift(&mut seed) % 300) as usize;
            for _ in 0..len {
                let r = xorshift(&mut seed) as usize;
                buf.push(alphabet[r % alphabet.len()]);
            }
            let _ = parse(&buf, &LIMITS);
            let _ = parse(&buf, &Limits::default());
            let mut d = ChunkedDecoder::new(100);
            let _ = d.decode(&buf, &mut Vec::new());
        }
        let big = vec![b'a'; 1 << 20];
        assert_eq!(
            parse(&big, &Limits::default()).map(|(s, _)| s),
            Err(HeadError::RequestLineTooLong)
        );
        let zero = Limits {
            max_request_line_bytes: 0,
            max_head_bytes: 0,
            max_headers: 0,
        };
        assert_eq!(
            parse(b"", &zero).map(|(s, _)| s),
            Err(HeadError::HeadTooLarge)
        );
        assert!(parse(b"GET / HTTP/1.1\r\n\r\n", &zero).is_err());
    }
}
