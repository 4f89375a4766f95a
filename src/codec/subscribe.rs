//! What a subscription request asks for: its topics (`topic=A&topic=B` on the multi-topic
//! routes) and where each starts (`since`, `rewind`).
//!
//! Owns: the query grammar of a subscription, the same on every transport — a position (or, on
//! a multi-topic stream, a stream position) resumes exactly; `since=earliest` starts at the oldest
//! retained message; `rewind=N` at the newest N (at most the history bound, which the home
//! applies); no cursor starts from now. A position always wins over `earliest` and `rewind`
//! (a client that has one knows where it is); `earliest` and `rewind` together are a 400, since
//! they ask for different things.
//! Must not: decide what a position means for a topic (the home does), or answer a malformed
//! position with an error — it gets a reset, like every resume point outside history.

use crate::codec::route::{self, TopicError};

/// The `since` value that asks for every retained message.
pub const SINCE_EARLIEST: &[u8] = b"earliest";

/// Where a subscription starts when it has no position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// From now: only messages published after the subscription.
    Now,
    /// Every retained message, then live ones.
    Earliest,
    /// The newest N retained messages (N may exceed what is retained), then live ones.
    Rewind(u64),
}

/// A query that cannot be served (400).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// `rewind` is not a decimal count.
    BadRewind,
    /// `since=earliest` and `rewind` together.
    EarliestAndRewind,
    /// A multi-topic route without `topic=`.
    NoTopic,
    /// More `topic=` than `--max-topics-per-stream`.
    TooManyTopics,
    /// The same topic twice.
    RepeatedTopic,
    /// A topic name the routes would refuse.
    BadTopic(TopicError),
}

impl QueryError {
    pub fn reason(self) -> &'static str {
        match self {
            QueryError::BadRewind => "rewind must be a count of messages (0 or more)",
            QueryError::EarliestAndRewind => "since=earliest and rewind are alternatives",
            QueryError::NoTopic => "name at least one topic=",
            QueryError::TooManyTopics => "more topics than --max-topics-per-stream",
            QueryError::RepeatedTopic => "a topic is named twice",
            QueryError::BadTopic(e) => e.reason(),
        }
    }
}

/// How a subscription without a usable position starts: from `since` (when it is `earliest`)
/// and `rewind`. `since` holding a position is the caller's business (it wins over both), so
/// pass `since` only when it did not parse as one.
pub fn fresh_start(since: Option<&[u8]>, rewind: Option<&[u8]>) -> Result<Fresh, QueryError> {
    let earliest = since == Some(SINCE_EARLIEST);
    let rewind = match rewind {
        None => None,
        Some(r) => Some(parse_count(r).ok_or(QueryError::BadRewind)?),
    };
    match (earliest, rewind) {
        (true, Some(_)) => Err(QueryError::EarliestAndRewind),
        (true, None) => Ok(Fresh::Earliest),
        (false, Some(n)) => Ok(Fresh::Rewind(n)),
        (false, None) => Ok(Fresh::Now),
    }
}

/// A decimal count: digits only (no sign, no spaces), saturating at u64::MAX.
fn parse_count(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 20 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u64, |n, &d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

/// The `topic=` values of a multi-topic query, in order, each validated as a route's topic.
pub fn topics(
    query: &[u8],
    max_topics: usize,
    max_topic_bytes: usize,
) -> Result<Vec<String>, QueryError> {
    let mut out: Vec<String> = Vec::new();
    for pair in query.split(|&b| b == b'&') {
        let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
        if route::query_param(name, "topic").is_none() {
            continue;
        }
        let value = route::query_param(pair, "topic").unwrap_or_default();
        route::validate_topic(&value, max_topic_bytes).map_err(QueryError::BadTopic)?;
        let t = String::from_utf8(value.into_owned())
            .map_err(|_| QueryError::BadTopic(TopicError::BadByte))?;
        if out.contains(&t) {
            return Err(QueryError::RepeatedTopic);
        }
        if out.len() == max_topics {
            return Err(QueryError::TooManyTopics);
        }
        out.push(t);
    }
    if out.is_empty() {
        return Err(QueryError::NoTopic);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_starts() {
        let f = |s: Option<&str>, r: Option<&str>| {
            fresh_start(s.map(str::as_bytes), r.map(str::as_bytes))
        };
        assert_eq!(f(None, None), Ok(Fresh::Now));
        assert_eq!(f(Some("earliest"), None), Ok(Fresh::Earliest));
        assert_eq!(f(None, Some("0")), Ok(Fresh::Rewind(0)));
        assert_eq!(f(None, Some("50")), Ok(Fresh::Rewind(50)));
        assert_eq!(
            f(None, Some("99999999999999999999")),
            Ok(Fresh::Rewind(u64::MAX))
        );
        // A since that is not a position and not `earliest` is a bad position: the caller
        // answers it with a reset; here it is simply not `earliest`.
        assert_eq!(f(Some("garbage"), None), Ok(Fresh::Now));
        for bad in [
            "-1",
            "abc",
            "",
            " 5",
            "5 ",
            "+5",
            "1e3",
            "123456789012345678901",
        ] {
            assert_eq!(f(None, Some(bad)), Err(QueryError::BadRewind), "{bad:?}");
        }
        assert_eq!(
            f(Some("earliest"), Some("5")),
            Err(QueryError::EarliestAndRewind)
        );
    }

    #[test]
    fn multi_topic_queries() {
        let t = |q: &str| topics(q.as_bytes(), 3, 16);
        assert_eq!(t("topic=a&topic=b%2Fc").unwrap(), ["a", "b/c"]);
        assert_eq!(t("since=1:2&topic=a&rewind=3").unwrap(), ["a"]);
        assert_eq!(t("topic=a&topic=b&topic=c").unwrap(), ["a", "b", "c"]);
        assert_eq!(
            t("topic=a&topic=b&topic=c&topic=d"),
            Err(QueryError::TooManyTopics)
        );
        assert_eq!(t("topic=a&topic=a"), Err(QueryError::RepeatedTopic));
        assert_eq!(t("since=1:2"), Err(QueryError::NoTopic));
        assert_eq!(t(""), Err(QueryError::NoTopic));
        assert!(matches!(t("topic="), Err(QueryError::BadTopic(_))));
        assert!(matches!(t("topic=a%20b"), Err(QueryError::BadTopic(_))));
        assert!(matches!(
            t("topic=aaaaaaaaaaaaaaaaaaaa"),
            Err(QueryError::BadTopic(_))
        ));
        // `topics=` is another parameter.
        assert_eq!(t("topics=x&topic=a").unwrap(), ["a"]);
    }
}
