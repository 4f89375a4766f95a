//! HTTP/1.1 request heads, chunked request bodies and response heads.
//!
//! Owns, one concern per file: `head.rs` parses a request head into offsets ([`parse_head`] →
//! [`Head`]) and makes the framing decisions that go with it (body length, keep-alive,
//! `Expect: 100-continue`); `chunked.rs` decodes a chunked body ([`ChunkedDecoder`]) and says
//! why one was rejected ([`BodyError`]); `response.rs` writes response heads (`write_response`,
//! `write_stream_head`); `date.rs` writes the `Date` header's IMF-fixdate (`http_date`). This
//! file: what can go wrong in a head, as [`HeadError`], each variant one HTTP status.
//!
//! Must not: do I/O, read the clock (the date is a parameter), import the async runtime, the
//! socket API or the shard, allocate per request (the [`Head`] header vector is reused), or
//! panic on any input. Every violation is a [`HeadError`] / [`BodyError`] variant that maps to
//! one HTTP status.
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

mod chunked;
mod date;
mod head;
mod response;

pub use chunked::{BodyError, ChunkedDecoder};
pub(crate) use date::http_date;
pub use head::{
    parse_head, BodyKind, Head, Limits, Method, Status, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_REQUEST_LINE_BYTES, MAX_HEADERS_CAP,
};
pub(crate) use response::{
    bodyless, write_response, write_response_head, write_stream_head, CONTINUE_100,
};

/// Why a request head was rejected. Each variant maps to one status (`HeadError::status`);
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
    pub(crate) fn status(self) -> u16 {
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
    pub(crate) fn reason(self) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::response::reason_phrase;
    use super::*;

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
}
