//! HTTP/1.1 request heads, chunked request bodies and response heads.
//!
//! Owns: parsing a request head into offsets ([`parse_head`] → [`Head`]), the framing decisions
//! that go with it (body length, keep-alive, `Expect: 100-continue`), decoding a chunked body
//! ([`ChunkedDecoder`]) and writing response heads ([`write_response`], [`write_stream_head`],
//! [`http_date`]).
//!
//! Must not: do I/O, read the clock (the date is a parameter), import the async runtime, the socket API or the
//! shard, allocate per request (the [`Head`] header vector is reused), or panic on any input.
//! Every violation is a [`HeadError`] / [`BodyError`] variant that maps to one HTTP status.
//!
//! Implements (server side, requests only):
//! - RFC 9112 §2.2 message parsing: leading empty lines are ignored; a bare LF is accepted as a
//!   line terminator in the head (httparse), but the chunked framing requires CRLF.
//! - RFC 9112 §3 request line: method token, request-target (§3.2 origin/absolute/authority/
//!   asterisk form), `HTTP/1.0` or `HTTP/1.1`; any other well-formed `HTTP/x.y` is 505.
//!   §3.2: an HTTP/1.1 request without exactly one `Host` is 400.
//! - RFC 9112 §5: field lines; whitespace before the colon and obs-fold are rejected (httparse).
//! - RFC 9112 §6.1–§6.3 message body length: `Transfer-Encoding` with `chunked` last (only
//!   `chunked` is implemented, other codings are 501), never together with `Content-Length`
//!   (rejected outright to prevent request smuggling), never in HTTP/1.0; `Content-Length` is
//!   digits only and duplicates must agree (RFC 9110 §8.6).
//! - RFC 9112 §7.1 chunked transfer coding: extensions ignored (bounded), trailers skipped
//!   (bounded).
//! - RFC 9112 §9.3 persistence: HTTP/1.1 defaults to keep-alive, HTTP/1.0 to close;
//!   `Connection: close` / `keep-alive` tokens (RFC 9110 §7.6.1).
//! - RFC 9110 §10.1.1 `Expect`: only `100-continue` (ignored in HTTP/1.0), anything else 417.
//! - RFC 9110 §5.6.7 IMF-fixdate for the `Date` header; RFC 9110 §15 reason phrases.

use std::fmt;
use std::mem::MaybeUninit;
use std::ops::Range;

use crate::codec::decimal;

/// Hard cap on header fields per request, whatever [`Limits::max_headers`] says: the size of
/// the stack array httparse parses into (32 bytes per entry).
pub const MAX_HEADERS_CAP: usize = 128;
/// Default for [`Limits::max_request_line_bytes`].
pub const DEFAULT_MAX_REQUEST_LINE_BYTES: usize = 8 * 1024;
/// Default for [`Limits::max_head_bytes`].
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// Default for [`Limits::max_headers`].
pub const DEFAULT_MAX_HEADERS: usize = 64;
/// Longest chunk-size line (size + extensions) or trailer line the chunked decoder accepts.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 * 1024;
/// Total chunk-extension and trailer bytes accepted in one chunked body: bounds the work a peer
/// can make us do per payload byte (many tiny chunks with long extensions).
pub const MAX_CHUNK_OVERHEAD_BYTES: usize = 16 * 1024;

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
    /// `Transfer-Encoding: chunked`: decode with [`ChunkedDecoder`].
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
    pub fn target<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
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

fn trim_ows(mut s: &[u8]) -> &[u8] {
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

/// Why a request head was rejected. Each variant maps to one status ([`HeadError::status`]);
/// after any of them the connection must be closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The request line is longer than `max_request_line_bytes` (414, RFC 9112 §3).
    RequestLineTooLong,
    /// The head is longer than `max_head_bytes` (431, RFC 6585 §5).
    HeadTooLarge,
    /// More header fields than `max_headers` (431, RFC 6585 §5).
    TooManyHeaders,
    /// Malformed request line: method, spacing or line ending (400, RFC 9112 §3).
    BadRequestLine,
    /// The request-target is none of origin/absolute/authority/asterisk form (400, RFC 9112 §3.2).
    BadTarget,
    /// Malformed field line: name, value, whitespace before colon, obs-fold (400, RFC 9112 §5).
    BadHeader,
    /// A well-formed HTTP version other than 1.0 and 1.1 (505, RFC 9110 §15.6.6).
    UnsupportedVersion,
    /// `Content-Length` not all digits, too big, or duplicates that differ (400, RFC 9112 §6.3).
    BadContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` (400, RFC 9112 §6.3: rejected to prevent
    /// request smuggling).
    LengthAndChunked,
    /// A transfer coding other than `chunked` before the final `chunked` (501, RFC 9112 §6.1).
    UnsupportedTransferCoding,
    /// `Transfer-Encoding` whose final coding is not `chunked`, or `chunked` applied twice: the
    /// body length cannot be determined (400, RFC 9112 §6.3).
    ChunkedNotFinal,
    /// `Transfer-Encoding` with an empty or malformed list (400, RFC 9112 §6.1).
    BadTransferEncoding,
    /// `Transfer-Encoding` in an HTTP/1.0 request: faulty framing (400, RFC 9112 §6.1).
    TransferEncodingInHttp10,
    /// HTTP/1.1 request without `Host` (400, RFC 9112 §3.2).
    MissingHost,
    /// More than one `Host` field (400, RFC 9112 §3.2).
    DuplicateHost,
    /// An `Expect` other than `100-continue` (417, RFC 9110 §10.1.1).
    UnsupportedExpectation,
}

impl HeadError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::RequestLineTooLong => 414,
            HeadError::HeadTooLarge | HeadError::TooManyHeaders => 431,
            HeadError::UnsupportedVersion => 505,
            HeadError::UnsupportedTransferCoding => 501,
            HeadError::UnsupportedExpectation => 417,
            HeadError::BadRequestLine
            | HeadError::BadTarget
            | HeadError::BadHeader
            | HeadError::BadContentLength
            | HeadError::LengthAndChunked
            | HeadError::ChunkedNotFinal
            | HeadError::BadTransferEncoding
            | HeadError::TransferEncodingInHttp10
            | HeadError::MissingHost
            | HeadError::DuplicateHost => 400,
        }
    }

    /// A short static description, for logs and response bodies.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::RequestLineTooLong => "request line too long",
            HeadError::HeadTooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many header fields",
            HeadError::BadRequestLine => "malformed request line",
            HeadError::BadTarget => "malformed request target",
            HeadError::BadHeader => "malformed header field",
            HeadError::UnsupportedVersion => "HTTP version not supported",
            HeadError::BadContentLength => "invalid Content-Length",
            HeadError::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            HeadError::UnsupportedTransferCoding => "transfer coding not implemented",
            HeadError::ChunkedNotFinal => "chunked is not the final transfer coding",
            HeadError::BadTransferEncoding => "malformed Transfer-Encoding",
            HeadError::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            HeadError::MissingHost => "missing Host header",
            HeadError::DuplicateHost => "more than one Host header",
            HeadError::UnsupportedExpectation => "unsupported expectation",
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

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

// ---------------------------------------------------------------------------------------------
// Chunked bodies (RFC 9112 §7.1)

/// Why a chunked body was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Malformed chunked framing: bad hex, size overflow, missing CRLF, over-long chunk-size or
    /// trailer line, too many extension/trailer bytes (400, RFC 9112 §7.1).
    BadChunk,
    /// The decoded body exceeds the configured maximum (413, RFC 9110 §15.5.14).
    TooLarge,
}

impl BodyError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            BodyError::BadChunk => 400,
            BodyError::TooLarge => 413,
        }
    }

    /// A short static description.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::BadChunk => "malformed chunked body",
            BodyError::TooLarge => "request body too large",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BodyError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChunkState {
    /// In the hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
    },
    /// Whitespace after the size: only more whitespace or `;` may follow (BWS).
    SizeWs,
    /// In a chunk extension: skipped up to CR.
    Ext,
    /// Saw the CR ending the chunk-size line.
    SizeLf,
    /// In chunk data.
    Data,
    /// Expect the CR after chunk data.
    DataCr,
    /// Expect the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// In a trailer field line: skipped up to CR.
    Trailer,
    /// Saw the CR ending a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    Done,
    Failed(BodyError),
}

/// Incremental decoder for a chunked request body (RFC 9112 §7.1).
///
/// Feed it any split of the body; it consumes everything it can and stops right after the
/// final CRLF, so bytes of a pipelined request are left to the caller.
#[derive(Clone, Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    max_body_bytes: u64,
    total: u64,
    /// Size of the chunk being read, then bytes of it still to come.
    remaining: u64,
    /// Bytes of the current chunk-size or trailer line.
    line_bytes: usize,
    /// Extension and trailer bytes so far, bounded by [`MAX_CHUNK_OVERHEAD_BYTES`].
    overhead_bytes: usize,
}

impl ChunkedDecoder {
    /// A decoder for one body of at most `max_body_bytes` decoded bytes.
    pub fn new(max_body_bytes: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0 },
            max_body_bytes: max_body_bytes as u64,
            total: 0,
            remaining: 0,
            line_bytes: 0,
            overhead_bytes: 0,
        }
    }

    /// Whether the final chunk and trailers have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Appends decoded payload to `out`; returns (bytes consumed from `input`, done).
    /// Chunk extensions are ignored and trailers skipped. After an error, every call returns
    /// the same error.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(usize, bool), BodyError> {
        let mut i = 0;
        while i < input.len() {
            if let ChunkState::Data = self.state {
                let n =
                    (input.len() - i).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[i..i + n]);
                i += n;
                self.remaining -= n as u64;
                if self.remaining == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            if matches!(self.state, ChunkState::Done | ChunkState::Failed(_)) {
                break;
            }
            let b = input[i];
            i += 1;
            match self.step(b) {
                Ok(s) => self.state = s,
                Err(e) => {
                    self.state = ChunkState::Failed(e);
                    return Err(e);
                }
            }
        }
        match self.state {
            ChunkState::Failed(e) => Err(e),
            s => Ok((i, s == ChunkState::Done)),
        }
    }

    /// One framing byte (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<ChunkState, BodyError> {
        use ChunkState::*;
        let line_state = matches!(self.state, Size { .. } | SizeWs | Ext | Trailer);
        // The cap counts the line without its CR.
        if line_state && b != b'\r' {
            self.line_bytes += 1;
            if self.line_bytes > MAX_CHUNK_LINE_BYTES {
                return Err(BodyError::BadChunk);
            }
        }
        if matches!(self.state, SizeWs | Ext | Trailer | TrailerStart) {
            self.overhead_bytes += 1;
            if self.overhead_bytes > MAX_CHUNK_OVERHEAD_BYTES {
                return Err(BodyError::BadChunk);
            }
        }
        Ok(match (self.state, b) {
            (Size { digits }, _) if b.is_ascii_hexdigit() => {
                if self.remaining > u64::MAX >> 4 {
                    return Err(BodyError::BadChunk);
                }
                let d = (b as char).to_digit(16).unwrap_or_default();
                self.remaining = self.remaining << 4 | u64::from(d);
                Size {
                    digits: digits.saturating_add(1),
                }
            }
            (Size { digits: 0 }, _) => return Err(BodyError::BadChunk),
            (Size { .. }, b'\r') | (Ext, b'\r') => SizeLf,
            (Size { .. } | SizeWs, b' ' | b'\t') => SizeWs,
            (Size { .. } | SizeWs, b';') => Ext,
            (Ext, _) if is_field_byte(b) => Ext,
            (SizeLf, b'\n') => {
                self.line_bytes = 0;
                if self.remaining > self.max_body_bytes - self.total {
                    return Err(BodyError::TooLarge);
                }
                self.total += self.remaining;
                if self.remaining == 0 {
                    TrailerStart
                } else {
                    Data
                }
            }
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0 },
            (TrailerStart, b'\r') => EndLf,
            (TrailerStart, _) if is_field_byte(b) => {
                self.line_bytes = 1;
                Trailer
            }
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) if is_field_byte(b) => Trailer,
            (TrailerLf, b'\n') => {
                self.line_bytes = 0;
                TrailerStart
            }
            (EndLf, b'\n') => Done,
            _ => return Err(BodyError::BadChunk),
        })
    }
}

/// Bytes allowed inside an extension or trailer line: VCHAR, obs-text, SP, HTAB.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

// ---------------------------------------------------------------------------------------------
// Responses

/// `HTTP/1.1 100 Continue`, sent before reading a body when `Head::expect_continue`.
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for `status` (RFC 9110 §15), empty for codes it does not name.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// Writes `"HTTP/1.1 {status} {reason}\r\n"`, `"Date: {date}\r\n"` if `date` is non-empty, each
/// header, `"Content-Length: n\r\n"` (omitted for 1xx/204/304), `"Connection: close\r\n"` if
/// `!keep_alive`, the blank line, then `body` unless `head_only` (a HEAD request gets the
/// headers a GET would) or the status forbids a body (1xx/204/304).
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    body: &[u8],
    keep_alive: bool,
    head_only: bool,
    date: &[u8],
) {
    write_response_head(out, status, headers, body.len(), keep_alive, date);
    if !head_only && !bodyless(status) {
        out.extend_from_slice(body);
    }
}

/// Whether `status` never has a body (1xx, 204, 304).
pub fn bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The head [`write_response`] writes for a body of `body_len` bytes, without the body: for a
/// caller that writes the body itself.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    body_len: usize,
    keep_alive: bool,
    date: &[u8],
) {
    write_status_and_headers(out, status, headers, date);
    if !bodyless(status) {
        out.extend_from_slice(b"Content-Length: ");
        decimal::write_u64(out, body_len as u64);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes a status line and headers with no `Content-Length` and no body, for streams (SSE,
/// 101 Switching Protocols). Ends with the blank line.
pub fn write_stream_head(out: &mut Vec<u8>, status: u16, headers: &[(&str, &[u8])], date: &[u8]) {
    write_status_and_headers(out, status, headers, date);
    out.extend_from_slice(b"\r\n");
}

fn write_status_and_headers(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    date: &[u8],
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    decimal::write_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    if !date.is_empty() {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Writes the IMF-fixdate (RFC 9110 §5.6.7) for `unix_secs`, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`. Times past 9999-12-31T23:59:59 are clamped to it.
pub fn http_date(unix_secs: u64, out: &mut [u8; 29]) {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    const MAX_SECS: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = unix_secs.min(MAX_SECS);
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (year, month, day) = civil_from_days(days);

    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    out[3..5].copy_from_slice(b", ");
    put2(&mut out[5..7], day);
    out[7] = b' ';
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[11] = b' ';
    put2(&mut out[12..14], year / 100);
    put2(&mut out[14..16], year % 100);
    out[16] = b' ';
    put2(&mut out[17..19], sod / 3600);
    out[19] = b':';
    put2(&mut out[20..22], sod / 60 % 60);
    out[22] = b':';
    put2(&mut out[23..25], sod % 60);
    out[25..29].copy_from_slice(b" GMT");
}

fn put2(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31); Howard Hinnant's `civil_from_days`
/// for non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn statuses() {
        let want = [
            (HeadError::RequestLineTooLong, 414),
            (HeadError::HeadTooLarge, 431),
            (HeadError::TooManyHeaders, 431),
            (HeadError::BadRequestLine, 400),
            (HeadError::BadTarget, 400),
            (HeadError::BadHeader, 400),
            (HeadError::UnsupportedVersion, 505),
            (HeadError::BadContentLength, 400),
            (HeadError::LengthAndChunked, 400),
            (HeadError::UnsupportedTransferCoding, 501),
            (HeadError::ChunkedNotFinal, 400),
            (HeadError::BadTransferEncoding, 400),
            (HeadError::TransferEncodingInHttp10, 400),
            (HeadError::MissingHost, 400),
            (HeadError::DuplicateHost, 400),
            (HeadError::UnsupportedExpectation, 417),
        ];
        for (e, status) in want {
            assert_eq!(e.status(), status, "{e:?}");
            assert!(!e.reason().is_empty());
            assert!(!reason_phrase(status).is_empty());
        }
        assert_eq!(BodyError::BadChunk.status(), 400);
        assert_eq!(BodyError::TooLarge.status(), 413);
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

    // -- chunked -------------------------------------------------------------------------------

    const CHUNKED_OK: &[(&[u8], &[u8])] = &[
        (b"0\r\n\r\n", b""),
        (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
        (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
        (b"a\r\n0123456789\r\n000\r\n\r\n", b"0123456789"),
        (b"005\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5;ext=1;b=\"q\"\r\nhello\r\n0;last\r\n\r\n", b"hello"),
        (b"5 ;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
        (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", b"hello"),
        (b"3\r\n\r\n\r\r\n0\r\n\r\n", b"\r\n\r"),
    ];

    const CHUNKED_BAD: &[(&[u8], BodyError)] = &[
        (b"x\r\n", BodyError::BadChunk),
        (b"\r\n", BodyError::BadChunk),
        (b";ext\r\n", BodyError::BadChunk),
        (b"5\nhello\r\n0\r\n\r\n", BodyError::BadChunk),
        (b"5\r\nhelloX\r\n", BodyError::BadChunk),
        (b"5\r\nhello\n0\r\n\r\n", BodyError::BadChunk),
        (b"5 x\r\nhello\r\n", BodyError::BadChunk),
        (b"5;\x01\r\nhello\r\n", BodyError::BadChunk),
        (b"0\r\nX: 1\n\r\n", BodyError::BadChunk),
        (b"0\r\n\r\r", BodyError::BadChunk),
        (b"-1\r\n", BodyError::BadChunk),
        (b"10000000000000000\r\n", BodyError::BadChunk),
        (b"65\r\n", BodyError::TooLarge),
        (b"64\r\n", BodyError::TooLarge),
        (b"32\r\n", BodyError::TooLarge),
        (
            b"31\r\n0123456789012345678901234567890123456789012345678\r\n1\r\n",
            BodyError::TooLarge,
        ),
    ];

    /// Decodes `input` fed in the given pieces; returns (payload, consumed, done) or the error.
    fn decode_pieces(pieces: &[&[u8]], max: usize) -> Result<(Vec<u8>, usize, bool), BodyError> {
        let mut d = ChunkedDecoder::new(max);
        let mut out = Vec::new();
        let mut consumed = 0;
        let mut done = false;
        for p in pieces {
            let (n, dn) = d.decode(p, &mut out)?;
            consumed += n;
            done = dn;
            if done {
                break;
            }
            assert_eq!(n, p.len(), "not done but left bytes");
        }
        Ok((out, consumed, done))
    }

    #[test]
    fn chunked_vectors_whole_split_and_bytewise() {
        for (input, want) in CHUNKED_OK {
            let whole = decode_pieces(&[input], 48);
            assert_eq!(whole, Ok((want.to_vec(), input.len(), true)), "{input:?}");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(decode_pieces(&[a, b], 48), whole, "{input:?} cut {cut}");
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_pieces(&bytes, 48), whole);
            // Never done before the last byte.
            assert_eq!(
                decode_pieces(&[&input[..input.len() - 1]], 48).map(|r| r.2),
                Ok(false)
            );
        }
    }

    #[test]
    fn chunked_stops_at_end_of_body() {
        let input = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let mut d = ChunkedDecoder::new(100);
        let mut out = Vec::new();
        assert_eq!(d.decode(input, &mut out), Ok((15, true)));
        assert!(d.is_done());
        assert_eq!(d.decode(b"more", &mut out), Ok((0, true)));
        assert_eq!(out, b"hello");
    }

    #[test]
    fn chunked_errors_whole_split_and_bytewise() {
        for (input, want) in CHUNKED_BAD {
            assert_eq!(decode_pieces(&[input], 48), Err(*want), "{input:?}");
            for cut in 0..=input.len() {
                let (a, b) = input.split_at(cut);
                assert_eq!(
                    decode_pieces(&[a, b], 48),
                    Err(*want),
                    "{input:?} cut {cut}"
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(decode_pieces(&bytes, 48), Err(*want));
        }
        // Errors are sticky.
        let mut d = ChunkedDecoder::new(10);
        assert_eq!(d.decode(b"z", &mut Vec::new()), Err(BodyError::BadChunk));
        assert_eq!(
            d.decode(b"0\r\n\r\n", &mut Vec::new()),
            Err(BodyError::BadChunk)
        );
        assert_eq!(d.decode(b"", &mut Vec::new()), Err(BodyError::BadChunk));
    }

    #[test]
    fn chunked_bounds() {
        // A 4 KiB size line is fine, one more byte is not.
        let mut line = b"1;".to_vec();
        line.resize(MAX_CHUNK_LINE_BYTES, b'e');
        line.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_eq!(decode_pieces(&[&line], 10).map(|r| r.0), Ok(b"x".to_vec()));
        line.insert(2, b'e');
        assert_eq!(decode_pieces(&[&line], 10), Err(BodyError::BadChunk));
        // Long trailer line.
        let mut trailer = b"0\r\nX: ".to_vec();
        trailer.resize(3 + MAX_CHUNK_LINE_BYTES, b'v');
        assert_eq!(
            decode_pieces(&[&trailer, b"\r\n\r\n"], 10).map(|r| r.2),
            Ok(true)
        );
        trailer.push(b'v');
        assert_eq!(decode_pieces(&[&trailer], 10), Err(BodyError::BadChunk));
        // Many short trailers add up.
        let mut trailers = b"0\r\n".to_vec();
        while trailers.len() < MAX_CHUNK_OVERHEAD_BYTES * 2 {
            trailers.extend_from_slice(b"X: 1\r\n");
        }
        assert_eq!(decode_pieces(&[&trailers], 10), Err(BodyError::BadChunk));
        // Many tiny chunks with extensions add up.
        let mut ext = Vec::new();
        while ext.len() < MAX_CHUNK_OVERHEAD_BYTES * 2 {
            ext.extend_from_slice(b"1;aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\nx\r\n");
        }
        assert_eq!(decode_pieces(&[&ext], 1 << 20), Err(BodyError::BadChunk));
        // Exactly max is fine.
        assert_eq!(
            decode_pieces(&[b"3\r\nabc\r\n0\r\n\r\n"], 3).map(|r| r.0),
            Ok(b"abc".to_vec())
        );
        assert_eq!(
            decode_pieces(&[b"3\r\nabc\r\n1\r\n"], 3),
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            decode_pieces(&[b"ffffffffffffffff\r\n"], usize::MAX),
            Ok((vec![], 18, false))
        );
    }

    // -- writer --------------------------------------------------------------------------------

    #[test]
    fn write_response_vectors() {
        type Case = (
            u16,
            &'static [(&'static str, &'static [u8])],
            &'static [u8],
            bool,
            bool,
            &'static [u8],
            &'static [u8],
        );
        const DATE: &[u8] = b"Sun, 06 Nov 1994 08:49:37 GMT";
        let cases: &[Case] = &[
            (200, &[("Content-Type", b"text/plain")], b"ok", true, false, DATE,
             b"HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"),
            (200, &[], b"ok", true, false, b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
            (200, &[], b"", true, false, b"", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
            (200, &[], b"ok", true, true, b"", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
            (204, &[], b"", true, false, b"", b"HTTP/1.1 204 No Content\r\n\r\n"),
            (304, &[("ETag", b"\"1:2\"")], b"", true, false, b"", b"HTTP/1.1 304 Not Modified\r\nETag: \"1:2\"\r\n\r\n"),
            (404, &[], b"no", false, false, b"", b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"),
            (431, &[], b"", false, true, b"", b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            (599, &[], b"", true, false, b"", b"HTTP/1.1 599 \r\nContent-Length: 0\r\n\r\n"),
        ];
        for &(status, headers, body, keep_alive, head_only, date, want) in cases {
            let mut out = b"prev".to_vec();
            write_response(&mut out, status, headers, body, keep_alive, head_only, date);
            assert_eq!(
                String::from_utf8_lossy(&out[4..]),
                String::from_utf8_lossy(want)
            );
        }
        let mut out = Vec::new();
        let big = vec![b'x'; 1_234_567];
        write_response(&mut out, 200, &[], &big, true, true, b"");
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 1234567\r\n\r\n");
    }

    #[test]
    fn write_stream_head_vectors() {
        let mut out = Vec::new();
        write_stream_head(
            &mut out,
            200,
            &[("Content-Type", b"text/event-stream")],
            b"D",
        );
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nDate: D\r\nContent-Type: text/event-stream\r\n\r\n"
        );
        out.clear();
        write_stream_head(
            &mut out,
            101,
            &[("Upgrade", b"websocket"), ("Connection", b"Upgrade")],
            b"",
        );
        assert_eq!(out, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn http_date_vectors() {
        let cases: &[(u64, &[u8; 29])] = &[
            (0, b"Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, b"Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, b"Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_208_000, b"Thu, 29 Feb 2024 12:00:00 GMT"),
            (1_735_689_599, b"Tue, 31 Dec 2024 23:59:59 GMT"),
            (4_102_444_800, b"Fri, 01 Jan 2100 00:00:00 GMT"),
            (253_402_300_799, b"Fri, 31 Dec 9999 23:59:59 GMT"),
            (u64::MAX, b"Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for &(secs, want) in cases {
            let mut out = [0u8; 29];
            http_date(secs, &mut out);
            assert_eq!(&out, want, "{}", String::from_utf8_lossy(&out));
        }
    }
}
