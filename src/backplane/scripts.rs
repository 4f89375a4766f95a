//! The backplane's two Lua scripts and what they answer.
//!
//! `append.lua` gives one publish batch of a topic its offsets, appends it to the topic's
//! Stream and PUBLISHes it, atomically; `window.lua` answers a resume point with the entries
//! after it or a reset. Each script's header says its keys, arguments and reply. Both run with
//! EVALSHA (redis-rs loads a script again on NOSCRIPT).
//! Must not: hold a connection or decide what a reply means for a shard: this is the wire form.

use redis::{Script, ScriptInvocation, Value};

use super::Keys;
use crate::codec::position::Position;
use crate::fanout::NewMsg;

pub const APPEND_LUA: &str = include_str!("append.lua");
pub const WINDOW_LUA: &str = include_str!("window.lua");

/// How long a topic's meta outlives its last publish, at least: an idle topic keeps its epoch
/// (so a client that missed nothing gets no reset) for a day, or `--history-secs` if longer.
pub const MIN_META_TTL_SECS: u64 = 86_400;

/// The history bounds the scripts apply (`--history-messages`, `--history-secs`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub history_messages: usize,
    pub history_secs: u64,
}

impl Limits {
    fn stream_ttl_secs(&self) -> u64 {
        self.history_secs.max(1)
    }

    fn meta_ttl_secs(&self) -> u64 {
        self.history_secs.max(MIN_META_TTL_SECS)
    }
}

/// Both scripts, hashed once.
pub struct Scripts {
    pub append: Script,
    pub window: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            append: Script::new(APPEND_LUA),
            window: Script::new(WINDOW_LUA),
        }
    }
}

/// A fresh epoch candidate: 48 bits from `seed` and `counter`, never 0 (so it prints in at most
/// 12 hex digits and fits a Lua number exactly).
pub fn fresh_epoch(seed: u64, counter: u64) -> u64 {
    let mut h = seed ^ counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h & 0xffff_ffff_ffff).max(1)
}

/// The command that tells a connection's Redis process apart from any other, [`run_id`] reads
/// its answer: sent once per connection, never per append.
pub fn server_info() -> redis::Cmd {
    let mut c = redis::cmd("INFO");
    c.arg("server");
    c
}

/// The `run_id` in an `INFO server` answer: the Redis process's identity, new on every start
/// (a restart from a snapshot, a promoted replica), which is what makes `append.lua` start a
/// new epoch when a topic was last written by another process.
pub fn run_id(info: &str) -> Option<&str> {
    let id = info
        .lines()
        .find_map(|l| l.trim_end().strip_prefix("run_id:"))?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The append of `msgs` to the topic of `keys`; `epoch` is used only if the topic starts a new
/// epoch; `run_id` is the identity of the Redis process the call goes to ([`run_id`], asked on
/// the same connection). Answered by [`parse_appended`].
pub fn append<'s>(
    s: &'s Scripts,
    keys: &Keys,
    limits: &Limits,
    epoch: u64,
    run_id: &str,
    msgs: &[NewMsg],
) -> ScriptInvocation<'s> {
    let mut inv = s.append.key(&keys.meta);
    inv.key(&keys.stream)
        .arg(&keys.channel)
        .arg(limits.history_messages)
        .arg(limits.stream_ttl_secs())
        .arg(limits.meta_ttl_secs())
        .arg(format!("{epoch:x}"))
        .arg(run_id);
    for m in msgs {
        inv.arg(m.event.as_deref().unwrap_or(""))
            .arg(if m.binary { "b" } else { "t" })
            .arg(&m.data[..]);
    }
    inv
}

/// What Redis gave a publish batch: offsets `first..=last` of `epoch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub epoch: u64,
    pub first: u64,
    pub last: u64,
    /// The topic began a new epoch with this batch (new topic, expired meta, other Redis).
    pub new_epoch: bool,
}

impl Appended {
    pub fn positions(&self) -> impl Iterator<Item = Position> + '_ {
        (self.first..=self.last).map(|o| Position::new(self.epoch, o))
    }
}

/// A script reply that is not what the script returns (a different script under our SHA, or a
/// Redis that changed the reply's shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadReply;

impl std::fmt::Display for BadReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unexpected reply from a backplane script")
    }
}

impl std::error::Error for BadReply {}

fn int(v: &Value) -> Result<u64, BadReply> {
    match v {
        Value::Int(i) => u64::try_from(*i).map_err(|_| BadReply),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(BadReply),
        _ => Err(BadReply),
    }
}

/// An epoch as the scripts keep it: hex, or empty for a topic Redis does not know (0).
fn epoch(v: &Value) -> Result<u64, BadReply> {
    let b = match v {
        Value::BulkString(b) => &b[..],
        Value::SimpleString(s) => s.as_bytes(),
        _ => return Err(BadReply),
    };
    if b.is_empty() {
        return Ok(0);
    }
    if b.len() > 16 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(BadReply);
    }
    u64::from_str_radix(std::str::from_utf8(b).map_err(|_| BadReply)?, 16).map_err(|_| BadReply)
}

pub fn parse_appended(v: &Value) -> Result<Appended, BadReply> {
    let Value::Array(a) = v else {
        return Err(BadReply);
    };
    let [e, first, last, fresh] = &a[..] else {
        return Err(BadReply);
    };
    let r = Appended {
        epoch: epoch(e)?,
        first: int(first)?,
        last: int(last)?,
        new_epoch: int(fresh)? == 1,
    };
    if r.epoch == 0 || r.first == 0 || r.last + 1 < r.first {
        return Err(BadReply);
    }
    Ok(r)
}

/// Everything retained of the topic's current epoch, oldest first, at most `limit` entries,
/// never a reset: what a node loads when it starts following the topic. Answered by
/// [`parse_window`].
/// `run_id` and `fresh` as for [`window`].
pub fn retained<'s>(
    s: &'s Scripts,
    keys: &Keys,
    limits: &Limits,
    limit: usize,
    run_id: &str,
    fresh: u64,
) -> ScriptInvocation<'s> {
    let mut inv = s.window.key(&keys.meta);
    inv.key(&keys.stream).arg("*").arg(0);
    window_args(&mut inv, limits, limit, run_id, fresh);
    inv
}

/// The window after `since` (`None`: only the topic's current position), at most `limit`
/// entries; `run_id` is the Redis process behind the connection (as for [`append`]) and
/// `fresh` a new epoch, used if the topic must begin one. Answered by [`parse_window`].
pub fn window<'s>(
    s: &'s Scripts,
    keys: &Keys,
    limits: &Limits,
    since: Option<Position>,
    limit: usize,
    run_id: &str,
    fresh: u64,
) -> ScriptInvocation<'s> {
    let mut inv = s.window.key(&keys.meta);
    inv.key(&keys.stream);
    match since {
        Some(p) => inv.arg(format!("{:x}", p.epoch)).arg(p.offset),
        None => inv.arg("").arg(0),
    };
    window_args(&mut inv, limits, limit, run_id, fresh);
    inv
}

/// `window.lua`'s ARGV[3..]: like an append, a window call made on a Redis process other than
/// the one that last wrote the topic begins the topic's new epoch (`fresh`), so a client is
/// reset once, to a position the next append continues.
fn window_args(
    inv: &mut ScriptInvocation<'_>,
    limits: &Limits,
    limit: usize,
    run_id: &str,
    fresh: u64,
) {
    // XRANGE's COUNT is a signed 64-bit number; "no limit" (usize::MAX, a stream's replay)
    // must not overflow it. The Stream's own trim bounds the reply.
    inv.arg(limit.clamp(1, i64::MAX as usize))
        .arg(limits.history_secs)
        .arg(run_id)
        .arg(format!("{fresh:x}"))
        .arg(limits.meta_ttl_secs());
}

/// One Stream entry of a window.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub offset: u64,
    pub event: Option<Box<str>>,
    pub data: Box<[u8]>,
    pub binary: bool,
    /// When the append script wrote it (Redis's clock, ms since the Unix epoch).
    pub at_ms: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct RemoteWindow {
    pub reset: bool,
    /// The topic's newest position (epoch 0: Redis has no such topic).
    pub current: Position,
    /// The entries after the resume point, oldest first (none on a reset).
    pub entries: Vec<Entry>,
}

fn entry(v: &Value) -> Result<Entry, BadReply> {
    let Value::Array(pair) = v else {
        return Err(BadReply);
    };
    let [Value::BulkString(id), Value::Array(fields)] = &pair[..] else {
        return Err(BadReply);
    };
    let id = std::str::from_utf8(id).map_err(|_| BadReply)?;
    let offset = id
        .strip_suffix("-0")
        .and_then(|o| o.parse().ok())
        .ok_or(BadReply)?;
    let mut e = Entry {
        offset,
        event: None,
        data: Box::default(),
        binary: false,
        at_ms: 0,
    };
    for kv in fields.chunks(2) {
        let [Value::BulkString(k), Value::BulkString(val)] = kv else {
            return Err(BadReply);
        };
        match &k[..] {
            b"d" => e.data = val.clone().into_boxed_slice(),
            b"e" if !val.is_empty() => {
                e.event = Some(std::str::from_utf8(val).map_err(|_| BadReply)?.into())
            }
            b"b" => e.binary = val == b"b",
            b"t" => e.at_ms = int(&kv[1])?,
            _ => {}
        }
    }
    Ok(e)
}

pub fn parse_window(v: &Value) -> Result<RemoteWindow, BadReply> {
    let Value::Array(a) = v else {
        return Err(BadReply);
    };
    let (head, entries) = match &a[..] {
        [r, e, o] => ([r, e, o], None),
        [r, e, o, Value::Array(es)] => ([r, e, o], Some(es)),
        _ => return Err(BadReply),
    };
    let reset = int(head[0])? == 1;
    let current = Position::new(epoch(head[1])?, int(head[2])?);
    let entries = entries
        .map(|es| es.iter().map(entry).collect::<Result<Vec<_>, _>>())
        .transpose()?
        .unwrap_or_default();
    if reset && !entries.is_empty() {
        return Err(BadReply);
    }
    Ok(RemoteWindow {
        reset,
        current,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::run_id;

    #[test]
    fn the_run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4c1f0e9a77d2b0c3e5f6a7b8c9d0e1f2a3b4c5d6\r\ntcp_port:6379\r\n";
        assert_eq!(
            run_id(info),
            Some("4c1f0e9a77d2b0c3e5f6a7b8c9d0e1f2a3b4c5d6")
        );
        for bad in [
            "",
            "# Server\r\nredis_version:7.0.15\r\n",
            "run_id:\r\n",
            "run_id:not-hex\r\n",
            "master_run_id:abc\r\n",
        ] {
            assert_eq!(run_id(bad), None, "{bad:?}");
        }
    }
}
