//! Routes, topic names and query strings.
//!
//! Owns: mapping a request path to a [`Route`], the topic-name grammar ([`validate_topic`]),
//! percent-decoding of path segments ([`percent_decode`], RFC 3986 §2.1) and reading
//! `application/x-www-form-urlencoded` query parameters ([`query_param`]).
//!
//! Must not: check methods (the shard does: 405/501), do I/O, import the async runtime, the socket API, the
//! clock or the shard, or panic on any input.
//!
//! Routes (path only, the query is not part of it; RFC 3986 §3.3):
//!
//! | path            | route                  |
//! |-----------------|------------------------|
//! | `/healthz`      | [`Route::Healthz`]     |
//! | `/metrics`      | [`Route::Metrics`]     |
//! | `/stats`        | [`Route::Stats`]       |
//! | `/status`       | [`Route::Status`]      |
//! | `/pub`          | [`Route::PublishBatch`]|
//! | `/pub/{topic}`  | [`Route::Publish`]     |
//! | `/poll/{topic}` | [`Route::Poll`]        |
//! | `/sse/{topic}`  | [`Route::Sse`]         |
//! | `/ws/{topic}`   | [`Route::Ws`]          |
//! | anything else   | [`Route::NotFound`]    |
//!
//! # Topic grammar
//!
//! The topic is the rest of the path after the prefix (it may contain `/`), percent-decoded
//! (`%XX`, hex digits of either case; `+` is a literal `+` in a path). After decoding it must be
//! 1 to `--max-topic-bytes` bytes (default [`DEFAULT_MAX_TOPIC_BYTES`] = 128), each byte one of
//!
//! ```text
//! A-Z a-z 0-9 - _ . ~ : @ / = + ,
//! ```
//!
//! and nothing else: no spaces, no control bytes, no non-ASCII bytes, no `%`, `?` or `#`.
//! So `/sse/chat%2Froom-1` and `/sse/chat/room-1` name the same topic `chat/room-1`. A malformed
//! or invalid topic is 400 ([`TopicError`]).

use std::borrow::Cow;
use std::fmt;

/// Default longest topic, in bytes after percent-decoding.
pub const DEFAULT_MAX_TOPIC_BYTES: usize = 128;

/// What a request path asks for. Topics are validated (see the module doc).
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`
    Healthz,
    /// `/metrics`
    Metrics,
    /// `/stats`: the node's figures as JSON.
    Stats,
    /// `/status`: the live status page.
    Status,
    /// `/pub` exactly: a batch of messages for several topics.
    PublishBatch,
    /// `/pub/{topic}`
    Publish(String),
    /// `/poll/{topic}`
    Poll(String),
    /// `/sse/{topic}`
    Sse(String),
    /// `/ws/{topic}`
    Ws(String),
    /// `/sse` exactly: one stream of the topics named by `topic=` in the query.
    SseMulti,
    /// `/poll` exactly: a poll of the topics named by `topic=` in the query.
    PollMulti,
    /// `/topics/{topic}`: the topic's position and subscriber count.
    TopicInfo(String),
    /// No route has this path (404).
    NotFound,
}

/// Why a topic was rejected; all are 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// The topic is empty (`/sse/`).
    Empty,
    /// Longer than the maximum after percent-decoding.
    TooLong,
    /// A byte outside the topic grammar (after decoding).
    BadByte,
    /// `%` not followed by two hex digits (RFC 3986 §2.1).
    BadPercentEncoding,
}

impl TopicError {
    /// The HTTP status to answer with (always 400).
    pub fn status(self) -> u16 {
        400
    }

    /// A short static description.
    pub fn reason(self) -> &'static str {
        match self {
            TopicError::Empty => "empty topic",
            TopicError::TooLong => "topic too long",
            TopicError::BadByte => "invalid byte in topic",
            TopicError::BadPercentEncoding => "invalid percent-encoding in topic",
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for TopicError {}

/// Match the path (no query) of a request. Unknown paths are `Ok(Route::NotFound)`; a known
/// prefix with a bad topic is an error. Methods are not checked here.
pub fn route(path: &[u8], max_topic_bytes: usize) -> Result<Route, TopicError> {
    match path {
        b"/healthz" => return Ok(Route::Healthz),
        b"/metrics" => return Ok(Route::Metrics),
        b"/stats" => return Ok(Route::Stats),
        b"/status" => return Ok(Route::Status),
        b"/pub" => return Ok(Route::PublishBatch),
        b"/sse" => return Ok(Route::SseMulti),
        b"/poll" => return Ok(Route::PollMulti),
        _ => {}
    }
    type Ctor = fn(String) -> Route;
    const PREFIXES: [(&[u8], Ctor); 5] = [
        (b"/pub/", Route::Publish),
        (b"/poll/", Route::Poll),
        (b"/sse/", Route::Sse),
        (b"/ws/", Route::Ws),
        (b"/topics/", Route::TopicInfo),
    ];
    for (prefix, ctor) in PREFIXES {
        if let Some(raw) = path.strip_prefix(prefix) {
            return topic(raw, max_topic_bytes).map(ctor);
        }
    }
    Ok(Route::NotFound)
}

/// Decode and validate a raw (percent-encoded) topic.
fn topic(raw: &[u8], max: usize) -> Result<String, TopicError> {
    if raw.is_empty() {
        return Err(TopicError::Empty);
    }
    // Each decoded byte takes at most 3 input bytes: bound the work before decoding.
    if raw.len() > max.saturating_mul(3) {
        return Err(TopicError::TooLong);
    }
    let mut t = Vec::with_capacity(raw.len());
    percent_decode(raw, &mut t)?;
    validate_topic(&t, max)?;
    // Validated bytes are ASCII.
    String::from_utf8(t).map_err(|_| TopicError::BadByte)
}

/// Check a decoded topic against the grammar in the module doc.
pub fn validate_topic(t: &[u8], max: usize) -> Result<(), TopicError> {
    if t.is_empty() {
        return Err(TopicError::Empty);
    }
    if t.len() > max {
        return Err(TopicError::TooLong);
    }
    if !t.iter().all(|&b| is_topic_byte(b)) {
        return Err(TopicError::BadByte);
    }
    Ok(())
}

fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~:@/=+,".contains(&b)
}

/// Appends `input` with `%XX` sequences decoded to `out` (RFC 3986 §2.1; `+` is left as is).
/// A `%` not followed by two hex digits is an error (and `out` may hold a partial result).
pub fn percent_decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), TopicError> {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let hi = input.get(i + 1).copied().and_then(hex_value);
            let lo = input.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => return Err(TopicError::BadPercentEncoding),
            }
            i += 3;
        } else {
            // Copy the run up to the next '%' in one go.
            let run = input[i..]
                .iter()
                .position(|&b| b == b'%')
                .unwrap_or(input.len() - i);
            out.extend_from_slice(&input[i..i + run]);
            i += run;
        }
    }
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The first value of parameter `name` in an `application/x-www-form-urlencoded` query
/// (WHATWG URL §5.1): pairs split on `&`, name and value on the first `=` (a pair without `=`
/// has an empty value), both decoded with `+` as space and `%XX`; a malformed `%` sequence is
/// kept literally. Borrowed when the value needs no decoding.
pub fn query_param<'q>(query: &'q [u8], name: &str) -> Option<Cow<'q, [u8]>> {
    query
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (n, v) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], &pair[eq + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            (form_decode(n).as_ref() == name.as_bytes()).then(|| form_decode(v))
        })
}

/// Form-urlencoded decoding: `+` → space, `%XX` → byte, a bad `%` kept as is.
fn form_decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = s.get(i + 1).copied().and_then(hex_value);
                let lo = s.get(i + 2).copied().and_then(hex_value);
                if let (Some(hi), Some(lo)) = (hi, lo) {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(t: &str) -> String {
        t.to_string()
    }

    #[test]
    fn route_vectors() {
        let cases: &[(&[u8], Result<Route, TopicError>)] = &[
            (b"/healthz", Ok(Route::Healthz)),
            (b"/metrics", Ok(Route::Metrics)),
            (b"/stats", Ok(Route::Stats)),
            (b"/status", Ok(Route::Status)),
            (b"/stats/x", Ok(Route::NotFound)),
            (b"/pub", Ok(Route::PublishBatch)),
            (b"/pub/news", Ok(Route::Publish(s("news")))),
            (b"/poll/news", Ok(Route::Poll(s("news")))),
            (b"/sse/news", Ok(Route::Sse(s("news")))),
            (b"/ws/news", Ok(Route::Ws(s("news")))),
            (b"/sse/chat/room-1", Ok(Route::Sse(s("chat/room-1")))),
            (b"/sse/chat%2Froom-1", Ok(Route::Sse(s("chat/room-1")))),
            (b"/sse/a%3ab", Ok(Route::Sse(s("a:b")))),
            (b"/sse/A-z_0.9~:@/=+,", Ok(Route::Sse(s("A-z_0.9~:@/=+,")))),
            (
                b"/ws/user@example.com",
                Ok(Route::Ws(s("user@example.com"))),
            ),
            (b"/", Ok(Route::NotFound)),
            (b"", Ok(Route::NotFound)),
            (b"/healthz/", Ok(Route::NotFound)),
            (b"/HEALTHZ", Ok(Route::NotFound)),
            (b"/pubx", Ok(Route::NotFound)),
            (b"/sse", Ok(Route::SseMulti)),
            (b"/poll", Ok(Route::PollMulti)),
            (b"/topics/a/b", Ok(Route::TopicInfo(s("a/b")))),
            (b"/topics/", Err(TopicError::Empty)),
            (b"/topics", Ok(Route::NotFound)),
            (b"/other/x", Ok(Route::NotFound)),
            (b"/pub/", Err(TopicError::Empty)),
            (b"/sse/", Err(TopicError::Empty)),
            (b"/sse/a b", Err(TopicError::BadByte)),
            (b"/sse/a%20b", Err(TopicError::BadByte)),
            (b"/sse/a%25b", Err(TopicError::BadByte)),
            (b"/sse/a%3Fb", Err(TopicError::BadByte)),
            (b"/sse/a%23b", Err(TopicError::BadByte)),
            (b"/sse/a%00b", Err(TopicError::BadByte)),
            (b"/sse/%C3%A9", Err(TopicError::BadByte)),
            (b"/sse/\xc3\xa9", Err(TopicError::BadByte)),
            (b"/sse/a?b", Err(TopicError::BadByte)),
            (b"/sse/a%2", Err(TopicError::BadPercentEncoding)),
            (b"/sse/a%", Err(TopicError::BadPercentEncoding)),
            (b"/sse/a%zz", Err(TopicError::BadPercentEncoding)),
            (b"/sse/%%41", Err(TopicError::BadPercentEncoding)),
        ];
        for (path, want) in cases {
            assert_eq!(&route(path, 16), want, "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn topic_length() {
        let t16 = "a".repeat(16);
        let path = format!("/sse/{t16}");
        assert_eq!(route(path.as_bytes(), 16), Ok(Route::Sse(t16.clone())));
        assert_eq!(
            route(format!("{path}a").as_bytes(), 16),
            Err(TopicError::TooLong)
        );
        // Encoded bytes count once decoded: 16 x "%61" is 16 bytes.
        let enc = format!("/sse/{}", "%61".repeat(16));
        assert_eq!(route(enc.as_bytes(), 16), Ok(Route::Sse(t16)));
        let huge = format!("/sse/{}", "a".repeat(1 << 20));
        assert_eq!(
            route(huge.as_bytes(), DEFAULT_MAX_TOPIC_BYTES),
            Err(TopicError::TooLong)
        );
        assert_eq!(validate_topic(b"", 16), Err(TopicError::Empty));
        assert_eq!(validate_topic(b"ok", 16), Ok(()));
        assert_eq!(validate_topic(b"ok", 1), Err(TopicError::TooLong));
        assert_eq!(validate_topic(b"o\x7f", 16), Err(TopicError::BadByte));
    }

    #[test]
    fn topic_bytes_match_the_documented_grammar() {
        let allowed: &[u8] = b"-_.~:@/=+,";
        for b in 0..=255u8 {
            let want = b.is_ascii_alphanumeric() || allowed.contains(&b);
            assert_eq!(validate_topic(&[b], 4).is_ok(), want, "byte {b:#x}");
        }
    }

    #[test]
    fn percent_decode_vectors() {
        type Case = (&'static [u8], Result<&'static [u8], TopicError>);
        let cases: &[Case] = &[
            (b"", Ok(b"")),
            (b"abc", Ok(b"abc")),
            (b"a+b", Ok(b"a+b")),
            (b"%41%62%2f%2F", Ok(b"Ab//")),
            (b"%00%ff", Ok(b"\x00\xff")),
            (b"%", Err(TopicError::BadPercentEncoding)),
            (b"%4", Err(TopicError::BadPercentEncoding)),
            (b"%4g", Err(TopicError::BadPercentEncoding)),
            (b"%g4", Err(TopicError::BadPercentEncoding)),
        ];
        for (input, want) in cases {
            let mut out = b"x".to_vec();
            let r = percent_decode(input, &mut out);
            match want {
                Ok(w) => {
                    assert_eq!(r, Ok(()));
                    assert_eq!(&out[1..], *w);
                }
                Err(e) => assert_eq!(r, Err(*e)),
            }
        }
    }

    #[test]
    fn query_param_vectors() {
        type Case = (&'static [u8], &'static str, Option<&'static [u8]>);
        let cases: &[Case] = &[
            (b"since=1:2&wait=5", "since", Some(b"1:2")),
            (b"since=1:2&wait=5", "wait", Some(b"5")),
            (b"since=1:2&wait=5", "nope", None),
            (b"", "since", None),
            (b"since=1%3A2", "since", Some(b"1:2")),
            (b"q=a+b%20c", "q", Some(b"a b c")),
            (b"q=100%", "q", Some(b"100%")),
            (b"q=%zz%4", "q", Some(b"%zz%4")),
            (b"flag&x=1", "flag", Some(b"")),
            (b"flag=&x=1", "flag", Some(b"")),
            (b"x=1&x=2", "x", Some(b"1")),
            (b"&&x=1&", "x", Some(b"1")),
            (b"a=b=c", "a", Some(b"b=c")),
            (b"my+name=1", "my name", Some(b"1")),
            (b"my%20name=1", "my name", Some(b"1")),
            (b"since=", "since", Some(b"")),
            (b"sinc=1", "since", None),
            (b"SINCE=1", "since", None),
        ];
        for (query, name, want) in cases {
            assert_eq!(
                query_param(query, name).as_deref(),
                *want,
                "{} {name}",
                String::from_utf8_lossy(query)
            );
        }
        assert!(matches!(query_param(b"a=1", "a"), Some(Cow::Borrowed(_))));
    }

    #[test]
    fn statuses() {
        for e in [
            TopicError::Empty,
            TopicError::TooLong,
            TopicError::BadByte,
            TopicError::BadPercentEncoding,
        ] {
            assert_eq!(e.status(), 400);
            assert!(!e.reason().is_empty());
        }
    }
}
