//! Response heads (RFC 9112 §4, RFC 9110 §15): status line, headers, framing.
//!
//! Owns: the status line and reason phrases, `Content-Length` (never for 1xx/204/304), and
//! `Connection: close`; the body only when the status and method allow one. Appends to the
//! caller's buffer; the `Date` value comes in as bytes (see `date.rs`).
//! Must not: read the clock or allocate beyond growing `out`.

use crate::codec::decimal;

/// `HTTP/1.1 100 Continue`, sent before reading a body when `Head::expect_continue`.
pub(crate) const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The reason phrase for `status` (RFC 9110 §15), empty for codes it does not name.
pub(crate) fn reason_phrase(status: u16) -> &'static str {
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
pub(crate) fn write_response(
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
pub(crate) fn bodyless(status: u16) -> bool {
    (100..200).contains(&status) || status == 204 || status == 304
}

/// The head [`write_response`] writes for a body of `body_len` bytes, without the body: for a
/// caller that writes the body itself.
pub(crate) fn write_response_head(
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
pub(crate) fn write_stream_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &[u8])],
    date: &[u8],
) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
