//! The opening handshake, server side (RFC 6455 §4.2.1 reading the client's request, §4.2.2
//! answering it, §1.3 the accept key, §4.4 version negotiation).
//!
//! Owns the checks on an already-parsed request head (the HTTP parser hands us the method,
//! version and header pairs) and the bytes of the 101 answer. Does not parse HTTP, route, or
//! write error responses: a [`HandshakeError`] carries the status for the HTTP writer.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use core::fmt;
use sha1::{Digest, Sha1};

/// The GUID appended to the client key before hashing (§1.3).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The only protocol version this server speaks (§4.4).
pub const WEBSOCKET_VERSION: &str = "13";

/// Why an upgrade request was refused. `Copy`, static text; answered with [`status`].
///
/// [`status`]: HandshakeError::status
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The method is not GET (§4.2.1 item 1). 400.
    NotGet,
    /// The request is not HTTP/1.1 or later (§4.2.1 item 1). 400.
    NotHttp11,
    /// No `Upgrade` header containing the token `websocket` (§4.2.1 item 3). 400.
    MissingUpgrade,
    /// No `Connection` header containing the token `Upgrade` (§4.2.1 item 4). 400.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` missing or not exactly 13 (§4.2.1 item 6, §4.4). 426, with
    /// `Sec-WebSocket-Version: 13` (see [`HandshakeError::extra_header`]).
    BadVersion,
    /// No `Sec-WebSocket-Key` header (§4.2.1 item 5). 400.
    MissingKey,
    /// A `Sec-WebSocket-Key` that is repeated or does not base64-decode to exactly 16 bytes
    /// (§4.2.1 item 5, §11.3.1). 400.
    BadKey,
}

impl HandshakeError {
    /// The HTTP status to answer with.
    pub const fn status(self) -> u16 {
        match self {
            HandshakeError::BadVersion => 426,
            HandshakeError::NotGet
            | HandshakeError::NotHttp11
            | HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::MissingKey
            | HandshakeError::BadKey => 400,
        }
    }

    /// A short static reason for the response body or a log line.
    pub const fn reason(self) -> &'static str {
        match self {
            HandshakeError::NotGet => "websocket upgrade requires GET",
            HandshakeError::NotHttp11 => "websocket upgrade requires HTTP/1.1",
            HandshakeError::MissingUpgrade => "missing Upgrade: websocket",
            HandshakeError::MissingConnectionUpgrade => "missing Connection: Upgrade",
            HandshakeError::BadVersion => "unsupported Sec-WebSocket-Version (need 13)",
            HandshakeError::MissingKey => "missing Sec-WebSocket-Key",
            HandshakeError::BadKey => "invalid Sec-WebSocket-Key",
        }
    }

    /// A header the error response must carry (§4.4: a 426 names the versions we speak).
    pub const fn extra_header(self) -> Option<(&'static str, &'static str)> {
        match self {
            HandshakeError::BadVersion => Some(("Sec-WebSocket-Version", WEBSOCKET_VERSION)),
            _ => None,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HandshakeError {}

/// What a valid upgrade request carries forward, borrowed from the request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upgrade<'a> {
    /// The `Sec-WebSocket-Key` value, trimmed (24 base64 characters).
    pub key: &'a [u8],
    /// The first `Sec-WebSocket-Protocol` value as sent (a comma-separated offer list), or
    /// empty. Later repeats of the header are ignored.
    pub protocols: &'a [u8],
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Whether the comma-separated token list `list` holds `token`, ASCII case-insensitively.
fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token))
}

/// Validates an upgrade request (§4.2.1). `headers` yields (name, value) pairs as sent; names are
/// case-insensitive; `Upgrade` and `Connection` are token lists (e.g. `keep-alive, Upgrade`) and
/// may repeat; `Sec-WebSocket-Version` must be exactly `13`. Checks are made in the order of
/// the [`HandshakeError`] variants, so the first failing rule is the one reported.
pub fn validate_upgrade<'a>(
    is_get: bool,
    minor_version: u8,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Upgrade<'a>, HandshakeError> {
    if !is_get {
        return Err(HandshakeError::NotGet);
    }
    if minor_version < 1 {
        return Err(HandshakeError::NotHttp11);
    }
    let mut upgrade = false;
    let mut connection = false;
    let mut version_ok = None::<bool>;
    let mut key = None::<&[u8]>;
    let mut key_repeated = false;
    let mut protocols = None::<&[u8]>;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade |= has_token(value, b"websocket");
        } else if name.eq_ignore_ascii_case(b"connection") {
            connection |= has_token(value, b"upgrade");
        } else if name.eq_ignore_ascii_case(b"sec-websocket-version") {
            let ok = trim(value) == WEBSOCKET_VERSION.as_bytes();
            version_ok = Some(version_ok.unwrap_or(true) && ok);
        } else if name.eq_ignore_ascii_case(b"sec-websocket-key") {
            key_repeated |= key.is_some();
            key = Some(trim(value));
        } else if name.eq_ignore_ascii_case(b"sec-websocket-protocol") && protocols.is_none() {
            protocols = Some(value);
        }
    }
    if !upgrade {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !connection {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    if version_ok != Some(true) {
        return Err(HandshakeError::BadVersion);
    }
    let key = key.ok_or(HandshakeError::MissingKey)?;
    if key_repeated || !is_valid_key(key) {
        return Err(HandshakeError::BadKey);
    }
    Ok(Upgrade {
        key,
        protocols: protocols.unwrap_or(b""),
    })
}

/// A key is 16 bytes in canonical padded base64: always 24 characters ending in `==`.
fn is_valid_key(key: &[u8]) -> bool {
    let mut decoded = [0u8; 18];
    key.len() == 24 && matches!(STANDARD.decode_slice(key, &mut decoded), Ok(16))
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)) (§1.3, §4.2.2 item 5.4).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 characters, so this cannot fail.
    let written = STANDARD.encode_slice(digest.as_slice(), &mut out);
    debug_assert!(matches!(written, Ok(28)));
    out
}

/// Whether the `Sec-WebSocket-Protocol` offer list contains `proto` exactly (case-sensitive,
/// surrounding whitespace trimmed; §4.2.1 item 8, §11.3.4).
pub fn offers_protocol(protocols: &[u8], proto: &str) -> bool {
    !proto.is_empty()
        && protocols
            .split(|&b| b == b',')
            .any(|t| trim(t) == proto.as_bytes())
}

/// Appends the `101 Switching Protocols` answer (§4.2.2 item 5), echoing `protocol` if the
/// server selected one of the client's offers.
pub fn write_101(out: &mut Vec<u8>, accept: &[u8; 28], protocol: Option<&str>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\n\
          Upgrade: websocket\r\n\
          Connection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept);
    out.extend_from_slice(b"\r\n");
    if let Some(p) = protocol {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn good() -> Vec<(&'static [u8], &'static [u8])> {
        vec![
            (b"Host", b"server.example.com"),
            (b"Upgrade", b"websocket"),
            (b"Connection", b"Upgrade"),
            (b"Sec-WebSocket-Key", KEY),
            (b"Origin", b"http://example.com"),
            (b"Sec-WebSocket-Protocol", b"chat, superchat"),
            (b"Sec-WebSocket-Version", b"13"),
        ]
    }

    fn run(
        is_get: bool,
        minor: u8,
        h: &[(&'static [u8], &'static [u8])],
    ) -> Result<Upgrade<'static>, HandshakeError> {
        validate_upgrade(is_get, minor, h.iter().copied())
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(&accept_key(KEY), b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rfc_request() {
        let up = run(true, 1, &good()).unwrap();
        assert_eq!(up.key, KEY);
        assert_eq!(up.protocols, b"chat, superchat");
        assert!(offers_protocol(up.protocols, "chat"));
        assert!(offers_protocol(up.protocols, "superchat"));
        assert!(!offers_protocol(up.protocols, "Chat"));
        assert!(!offers_protocol(up.protocols, "super"));
        assert!(!offers_protocol(up.protocols, ""));
        assert!(!offers_protocol(b"", "chat"));
        assert!(offers_protocol(b" ringcast.v1 ", "ringcast.v1"));
    }

    #[test]
    fn lenient_where_allowed() {
        let h: &[(&[u8], &[u8])] = &[
            (b"upgrade", b"h2c, WebSocket"),
            (b"CONNECTION", b"keep-alive"),
            (b"connection", b"keep-alive,  upgrade "),
            (b"sec-websocket-key", b" dGhlIHNhbXBsZSBub25jZQ== "),
            (b"SEC-WEBSOCKET-VERSION", b"13"),
        ];
        let up = run(true, 1, h).unwrap();
        assert_eq!(up.key, KEY);
        assert_eq!(up.protocols, b"");
        assert!(run(true, 2, h).is_ok());
    }

    #[test]
    fn errors() {
        fn without(name: &[u8]) -> Vec<(&'static [u8], &'static [u8])> {
            good().into_iter().filter(|(n, _)| *n != name).collect()
        }
        fn with(name: &'static [u8], value: &'static [u8]) -> Vec<(&'static [u8], &'static [u8])> {
            let mut h = without(name);
            h.push((name, value));
            h
        }
        let mut dup_key = good();
        dup_key.push((b"Sec-WebSocket-Key", KEY));
        type Headers = Vec<(&'static [u8], &'static [u8])>;
        let table: Vec<(bool, u8, Headers, HandshakeError, u16)> = vec![
            (false, 1, good(), HandshakeError::NotGet, 400),
            (true, 0, good(), HandshakeError::NotHttp11, 400),
            (
                true,
                1,
                without(b"Upgrade"),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                true,
                1,
                with(b"Upgrade", b"websockets"),
                HandshakeError::MissingUpgrade,
                400,
            ),
            (
                true,
                1,
                without(b"Connection"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                true,
                1,
                with(b"Connection", b"keep-alive"),
                HandshakeError::MissingConnectionUpgrade,
                400,
            ),
            (
                true,
                1,
                without(b"Sec-WebSocket-Version"),
                HandshakeError::BadVersion,
                426,
            ),
            (
                true,
                1,
                with(b"Sec-WebSocket-Version", b"8"),
                HandshakeError::BadVersion,
                426,
            ),
            (
                true,
                1,
                with(b"Sec-WebSocket-Version", b"13, 8"),
                HandshakeError::BadVersion,
                426,
            ),
            (
                true,
                1,
                without(b"Sec-WebSocket-Key"),
                HandshakeError::MissingKey,
                400,
            ),
            (
                true,
                1,
                with(b"Sec-WebSocket-Key", b""),
                HandshakeError::BadKey,
                400,
            ),
            (
                true,
                1,
                with(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ"),
                HandshakeError::BadKey,
                400,
            ),
            (
                true,
                1,
                with(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=!"),
                HandshakeError::BadKey,
                400,
            ),
            // 17 bytes / 15 bytes of data
            (
                true,
                1,
                with(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZTE="),
                HandshakeError::BadKey,
                400,
            ),
            (
                true,
                1,
                with(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25j"),
                HandshakeError::BadKey,
                400,
            ),
            // non-canonical trailing bits
            (
                true,
                1,
                with(b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZR=="),
                HandshakeError::BadKey,
                400,
            ),
            (true, 1, dup_key, HandshakeError::BadKey, 400),
        ];
        for (is_get, minor, h, want, status) in table {
            assert_eq!(run(is_get, minor, &h), Err(want), "{h:?}");
            assert_eq!(want.status(), status);
            assert_eq!(want.extra_header().is_some(), status == 426);
        }
    }

    #[test]
    fn response_bytes() {
        let mut out = Vec::new();
        write_101(&mut out, &accept_key(KEY), None);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        out.clear();
        write_101(&mut out, &accept_key(KEY), Some("chat"));
        assert!(out.ends_with(
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\n\r\n"
        ));
    }
}
