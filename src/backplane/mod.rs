//! The Redis backplane (issue 14): with `--redis`, Redis assigns every position and keeps every
//! topic's history, so a client resumes on any node.
//!
//! Owns: the key names (`keys`), the two Lua scripts and their replies (`scripts`), and the
//! form of a message pushed on a topic's channel (`parse_push`).
//! Must not: touch a shard's state or block a shard; everything here runs on the bridge thread
//! or in tests.

pub mod bridge;
mod channels;
mod commit;
mod ctx;
pub mod scripts;

use crate::codec::position::Position;

/// A `--redis` URL without its credentials, for logs and `--check-config`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_string(),
    }
}

/// A topic's names in Redis. The topic is the Cluster hash tag (`{topic}`), so one topic's
/// keys and channel share a slot; the topic grammar (`codec::route`) has no `{` or `}`, and
/// the prefix is checked for them at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// Hash: `e` epoch (hex), `o` last offset, `r` the `run_id` of the Redis that wrote it.
    pub meta: String,
    /// Stream: entry ID = offset; fields `d` payload, `e` event, `b` `b`/`t`, `t` ms time.
    pub stream: String,
    /// Pub/sub channel the append script PUBLISHes each message on.
    pub channel: String,
}

impl Keys {
    pub fn new(prefix: &str, topic: &str) -> Keys {
        Keys {
            meta: format!("{prefix}:{{{topic}}}:m"),
            stream: format!("{prefix}:{{{topic}}}:s"),
            channel: format!("{prefix}:{{{topic}}}"),
        }
    }

    /// The topic a channel name carries, if it is one of ours under `prefix`.
    pub fn topic_of_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(prefix)?
            .strip_prefix(":{")?
            .strip_suffix('}')
    }
}

/// A message as pushed on a topic's channel: `EPOCH:OFFSET\nFLAG\nEVENT\nPAYLOAD`.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed<'a> {
    pub pos: Position,
    pub binary: bool,
    /// Empty: no event name.
    pub event: &'a str,
    pub data: &'a [u8],
}

/// Reads a pushed message; `None` for anything that is not one (it is logged and dropped by
/// the caller: the cursor then sees a gap and fetches it from the Stream).
pub fn parse_push(b: &[u8]) -> Option<Pushed<'_>> {
    let mut parts = b.splitn(4, |&c| c == b'\n');
    let pos = Position::parse(parts.next()?).ok()?;
    let binary = match parts.next()? {
        b"b" => true,
        b"t" => false,
        _ => return None,
    };
    let event = std::str::from_utf8(parts.next()?).ok()?;
    let data = parts.next()?;
    Some(Pushed {
        pos,
        binary,
        event,
        data,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            super::redact("redis://u:secret@127.0.0.1:6379/2"),
            "redis://***@127.0.0.1:6379/2"
        );
        assert_eq!(
            super::redact("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }

    use super::*;

    #[test]
    fn keys_share_the_topic_hash_tag() {
        let k = Keys::new("rc", "chat/room-1");
        assert_eq!(k.meta, "rc:{chat/room-1}:m");
        assert_eq!(k.stream, "rc:{chat/room-1}:s");
        assert_eq!(k.channel, "rc:{chat/room-1}");
        assert_eq!(
            Keys::topic_of_channel("rc", &k.channel),
            Some("chat/room-1")
        );
        assert_eq!(Keys::topic_of_channel("rc", "rcx:{a}"), None);
        assert_eq!(Keys::topic_of_channel("other", &k.channel), None);
    }

    #[test]
    fn pushes_parse_or_are_refused() {
        let p = parse_push(b"a1:42\nt\nnews\nhello\nworld").unwrap();
        assert_eq!(p.pos, Position::new(0xa1, 42));
        assert!(!p.binary);
        assert_eq!(p.event, "news");
        assert_eq!(p.data, b"hello\nworld");
        let p = parse_push(b"a1:1\nb\n\n").unwrap();
        assert!(p.binary && p.event.is_empty() && p.data.is_empty());
        for bad in [
            &b""[..],
            b"a1:1",
            b"a1:1\nt\nev",
            b"a1:1\nx\n\nd",
            b"zz:1\nt\n\nd",
            b"a1:1\nt\n\xff\nd",
        ] {
            assert_eq!(parse_push(bad), None, "{bad:?}");
        }
    }
}
