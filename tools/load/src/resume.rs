//! What `--resume` decides, sans I/O: how long to wait before the next attempt, what a
//! `ringcast.v1` envelope or a raw WebSocket close says, and what a publish's answer means for
//! retrying it.
//!
//! The rules (tools/load/README.md, "Resume and several nodes"): a subscriber whose stream
//! ends reconnects to the next URL template from the last position it received; a publish
//! refused before it was sent is retried, one whose outcome is unknown is not (it becomes
//! *uncertain*).

use std::time::Duration;

use serde::Deserialize;

use crate::track::Pos;

/// First wait before a reconnect or a retry.
pub const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest wait: the backoff doubles up to this.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A doubling backoff, from [`BACKOFF_MIN`] to [`BACKOFF_MAX`].
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next.unwrap_or(BACKOFF_MIN);
        self.next = Some((d * 2).min(BACKOFF_MAX));
        d
    }

    /// An attempt succeeded: the next failure starts from the shortest wait again.
    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

/// A `ringcast.v1` envelope from the server, as far as a subscriber cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V1 {
    /// A message: its position and payload (text).
    Message { id: Option<Pos>, data: String },
    /// The resume point was outside history: continue from `id`.
    Reset { id: Option<Pos> },
    /// The subscription is live from `id`.
    Subscribed { id: Option<Pos> },
    /// Anything else (pong, error, presence, ...): its type.
    Other(String),
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    data: Option<String>,
}

/// Parses one v1 text frame; `None` if it is not a JSON envelope.
pub fn parse_v1(frame: &[u8]) -> Option<V1> {
    let e: RawEnvelope = serde_json::from_slice(frame).ok()?;
    let id = e.id.as_deref().and_then(Pos::parse);
    Some(match e.kind.as_str() {
        "message" => V1::Message {
            id,
            data: e.data.unwrap_or_default(),
        },
        "reset" => V1::Reset { id },
        "subscribed" => V1::Subscribed { id },
        _ => V1::Other(e.kind),
    })
}

/// The close code a raw WebSocket gets when its `since` is outside history (README,
/// "WebSocket"), with the reason `reset EPOCH:OFFSET`.
pub const CLOSE_RESET: u16 = 4000;

/// The position of a raw WebSocket's reset close, if this close is one.
pub fn reset_close(code: u16, reason: &[u8]) -> Option<Pos> {
    if code != CLOSE_RESET {
        return None;
    }
    Pos::parse_bytes(reason.strip_prefix(b"reset ")?)
}

/// What a publish's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PubAnswer {
    /// Published at this position.
    Confirmed(Pos),
    /// Refused before it was published: send it again after this long (from `Retry-After`,
    /// else the backoff's).
    Retry(Option<Duration>),
    /// Sent, outcome unknown (503 "not confirmed").
    Uncertain,
    /// Refused for good (4xx, any other 5xx): not published, not retried.
    Refused,
}

/// Classifies an answer to `POST /pub/{topic}`: a 2xx with `{"id":POS}` is confirmed, a 503
/// whose body says "not confirmed" is uncertain, any other 503 is a refusal to retry.
pub fn classify_publish(status: u16, retry_after: Option<&str>, body: &[u8]) -> PubAnswer {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    match status {
        200..=299 => match serde_json::from_slice::<Id>(body)
            .ok()
            .and_then(|i| Pos::parse(&i.id))
        {
            Some(p) => PubAnswer::Confirmed(p),
            // Published, but where is not said: the message may arrive, its position is
            // unknown, so it is treated like one whose outcome is unknown.
            None => PubAnswer::Uncertain,
        },
        503 if contains(body, b"not confirmed") => PubAnswer::Uncertain,
        503 => PubAnswer::Retry(
            retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        ),
        _ => PubAnswer::Refused,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `path` with `since=POS` added to its query.
pub fn with_since(path: &str, pos: &Pos) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}since={pos}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(s: &str) -> Option<Pos> {
        Pos::parse(s)
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_starts_over() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..7).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(ms, [50, 100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }

    #[test]
    fn v1_envelopes() {
        let cases: &[(&str, Option<V1>)] = &[
            (
                r#"{"type":"message","topic":"t","id":"ab:7","data":"1 2 3 ."}"#,
                Some(V1::Message {
                    id: pos("ab:7"),
                    data: "1 2 3 .".into(),
                }),
            ),
            (
                r#"{"type":"reset","topic":"t","id":"cd:40"}"#,
                Some(V1::Reset { id: pos("cd:40") }),
            ),
            (
                r#"{"type":"subscribed","topic":"t","id":"ab:0","ref":"x"}"#,
                Some(V1::Subscribed { id: pos("ab:0") }),
            ),
            (r#"{"type":"pong"}"#, Some(V1::Other("pong".into()))),
            (
                r#"{"type":"reset","id":"nope"}"#,
                Some(V1::Reset { id: None }),
            ),
            ("1 2 3 ....", None),
            ("{", None),
        ];
        for (i, (frame, want)) in cases.iter().enumerate() {
            assert_eq!(parse_v1(frame.as_bytes()), *want, "case {i}");
        }
    }

    #[test]
    fn raw_reset_closes() {
        assert_eq!(reset_close(4000, b"reset ab:12"), pos("ab:12"));
        assert_eq!(reset_close(4001, b"reset ab:12"), None);
        assert_eq!(reset_close(4000, b"ab:12"), None);
        assert_eq!(reset_close(4000, b"reset "), None);
        assert_eq!(reset_close(1000, b""), None);
    }

    #[test]
    fn publish_answers() {
        use PubAnswer::*;
        let s = Duration::from_secs;
        let cases: &[(u16, Option<&str>, &str, PubAnswer)] = &[
            (
                200,
                None,
                r#"{"id":"ab:3"}"#,
                Confirmed(pos("ab:3").unwrap()),
            ),
            (200, None, "ok", Uncertain),
            (
                503,
                Some("1"),
                "not confirmed: Redis did not answer; it may or may not be published\n",
                Uncertain,
            ),
            (
                503,
                Some("2"),
                "fanout is behind; retry shortly\n",
                Retry(Some(s(2))),
            ),
            (503, None, "", Retry(None)),
            (503, Some("soon"), "", Retry(None)),
            (400, None, "bad event name", Refused),
            (500, None, "", Refused),
        ];
        for (i, (status, ra, body, want)) in cases.iter().enumerate() {
            assert_eq!(
                classify_publish(*status, *ra, body.as_bytes()),
                *want,
                "case {i}"
            );
        }
    }

    #[test]
    fn since_joins_the_query() {
        let p = pos("ab:3").unwrap();
        assert_eq!(with_since("/ws/t", &p), "/ws/t?since=ab:3");
        assert_eq!(with_since("/ws/t?x=1", &p), "/ws/t?x=1&since=ab:3");
    }
}
