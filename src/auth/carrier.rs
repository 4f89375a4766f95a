//! Where a request carries its token, and keeping it out of logs.
//!
//! Browsers cannot set headers on `EventSource` or `WebSocket`, so a token may come in the
//! `Authorization: Bearer` header, the `token` query parameter, or a cookie named by
//! `--jwt-cookie`, in that order of preference. A URL is logged only through [`redact`], which
//! replaces every `token` parameter's value, so no log line at any level holds a token.

use std::borrow::Cow;

use crate::codec::route;

/// The query parameter that carries a token.
pub const TOKEN_PARAM: &str = "token";

/// The token of a request: `authorization` is that header's value, `query` the raw query
/// string, `cookies` every `Cookie` header's value, `cookie` the name `--jwt-cookie` gave.
pub fn token_of<'a>(
    authorization: Option<&'a [u8]>,
    query: &'a [u8],
    cookies: &[&'a [u8]],
    cookie: Option<&str>,
) -> Option<Cow<'a, [u8]>> {
    if let Some(v) = authorization {
        let v = v.trim_ascii();
        // RFC 6750 §2.1: the scheme is case-insensitive.
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(Cow::Borrowed(v[7..].trim_ascii()));
        }
    }
    if let Some(t) = route::query_param(query, TOKEN_PARAM) {
        return Some(t);
    }
    let name = cookie?.as_bytes();
    cookies.iter().find_map(|header| {
        header.split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name).then(|| Cow::Borrowed(pair[eq + 1..].trim_ascii()))
        })
    })
}

/// `target` (a request's path and query) as it may be logged: every `token` parameter's value
/// replaced by `REDACTED`.
pub fn redact(target: &[u8]) -> Cow<'_, str> {
    let text = String::from_utf8_lossy(target);
    let Some(q) = text.find('?') else {
        return text;
    };
    let (path, query) = text.split_at(q + 1);
    if !query.split('&').any(is_token_pair) {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(path);
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        if is_token_pair(pair) {
            out.push_str(TOKEN_PARAM);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    Cow::Owned(out)
}

/// Whether a query pair names the token parameter (as `query_param` would decode its name).
fn is_token_pair(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or("");
    route::query_param(name.as_bytes(), TOKEN_PARAM).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(a: Option<&str>, q: &str, cookies: &[&str], name: Option<&str>) -> Option<String> {
        let cookies: Vec<&[u8]> = cookies.iter().map(|c| c.as_bytes()).collect();
        token_of(a.map(str::as_bytes), q.as_bytes(), &cookies, name)
            .map(|t| String::from_utf8(t.into_owned()).unwrap())
    }

    #[test]
    fn header_then_query_then_cookie() {
        let t = |a, q, c: &[&str]| tok(a, q, c, Some("rc"));
        assert_eq!(t(Some("Bearer abc"), "token=q", &["rc=c"]).unwrap(), "abc");
        assert_eq!(t(Some("bearer   abc "), "", &[]).unwrap(), "abc");
        assert_eq!(t(Some("Basic abc"), "token=q", &[]).unwrap(), "q");
        assert_eq!(t(None, "a=1&token=q%2Bx", &[]).unwrap(), "q+x");
        assert_eq!(t(None, "", &["x=1; rc=c1 ; y=2"]).unwrap(), "c1");
        assert_eq!(t(None, "", &["x=1", "rc=c2"]).unwrap(), "c2");
        assert_eq!(t(None, "", &["rcx=1; xrc=2"]), None);
        assert_eq!(t(Some("Bearer"), "", &[]), None);
        // No cookie name configured: cookies are not read.
        assert_eq!(tok(None, "", &["rc=c"], None), None);
    }

    #[test]
    fn redact_hides_every_token_value() {
        assert_eq!(redact(b"/sse/a"), "/sse/a");
        assert_eq!(redact(b"/sse/a?since=1:2"), "/sse/a?since=1:2");
        assert_eq!(
            redact(b"/sse/a?token=eyJ.x.y&since=1:2"),
            "/sse/a?token=REDACTED&since=1:2"
        );
        assert_eq!(
            redact(b"/ws/a?since=1&%74oken=abc&token=def&tokens=keep"),
            "/ws/a?since=1&token=REDACTED&token=REDACTED&tokens=keep"
        );
        assert_eq!(redact(b"/p?token"), "/p?token=REDACTED");
    }
}
