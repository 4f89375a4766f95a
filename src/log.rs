//! Leveled one-line logging to stderr, as text or JSON (`--log-format`).
//!
//! Owns: the process-wide level and format. Text is `LEVEL message` (a message about a shard
//! names it itself: `shard N: …`). JSON is one object per line: `ts` (RFC 3339, UTC,
//! milliseconds), `level`, `shard` when written on a shard's thread (named `shard-N` by
//! `runtime`), `peer` when the message is about a client (the code writes those as
//! `ADDR: …`), and `msg`. A line is written with one `write` so lines from different shards
//! never interleave mid-line.
//! Must not: allocate or format when the level is off (the macros check first), or hold a
//! token: callers log request targets only through `auth::carrier::redact`.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::{LogFormat, LogLevel};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static JSON: AtomicU8 = AtomicU8::new(0);

pub fn set_level(l: LogLevel) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

pub fn set_format(f: LogFormat) {
    JSON.store((f == LogFormat::Json) as u8, Ordering::Relaxed);
}

#[inline]
pub fn enabled(l: LogLevel) -> bool {
    (l as u8) <= LEVEL.load(Ordering::Relaxed)
}

#[doc(hidden)]
pub fn write_line(l: LogLevel, args: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    if JSON.load(Ordering::Relaxed) == 1 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let shard = std::thread::current()
            .name()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok());
        json_line(
            &mut line,
            now.as_millis() as u64,
            l,
            shard,
            &args.to_string(),
        );
    } else {
        let tag = match l {
            LogLevel::Error => "ERROR",
            LogLevel::Warn => "WARN ",
            LogLevel::Info => "INFO ",
            LogLevel::Debug => "DEBUG",
        };
        let _ = writeln!(line, "{tag} {args}");
    }
    let _ = std::io::stderr().lock().write_all(&line);
}

/// One JSON log line (with its newline) for a message logged at `unix_ms`.
fn json_line(out: &mut Vec<u8>, unix_ms: u64, l: LogLevel, shard: Option<usize>, msg: &str) {
    let level = match l {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    };
    // Written by hand to keep the fields in this order (ts first), each string escaped by
    // serde_json.
    let _ = write!(
        out,
        "{{\"ts\":\"{}\",\"level\":\"{level}\"",
        rfc3339_ms(unix_ms)
    );
    if let Some(s) = shard {
        let _ = write!(out, ",\"shard\":{s}");
    }
    // `ADDR: rest`, the form of every line about one client.
    let (peer, msg) = match msg.split_once(": ") {
        Some((p, rest)) if p.parse::<std::net::SocketAddr>().is_ok() => (Some(p), rest),
        _ => (None, msg),
    };
    if let Some(p) = peer {
        let _ = write!(out, ",\"peer\":\"{p}\"");
    }
    out.extend_from_slice(b",\"msg\":");
    let _ = serde_json::to_writer(&mut *out, msg);
    out.extend_from_slice(b"}\n");
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch (the civil calendar from days:
/// H. Hinnant's `civil_from_days`).
fn rfc3339_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let sod = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        unix_ms % 1000
    )
}

#[macro_export]
macro_rules! log_at {
    ($lvl:expr, $($arg:tt)*) => {
        if $crate::log::enabled($lvl) {
            $crate::log::write_line($lvl, format_args!($($arg)*));
        }
    };
}
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!($crate::config::LogLevel::Error, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!($crate::config::LogLevel::Warn, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!($crate::config::LogLevel::Info, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log_at!($crate::config::LogLevel::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn json_lines_parse_and_carry_their_fields() {
        let mut out = Vec::new();
        json_line(
            &mut out,
            0,
            LogLevel::Debug,
            Some(3),
            "127.0.0.1:5: bad \"head\"\n",
        );
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["level"], "debug");
        assert_eq!(v["shard"], 3);
        assert_eq!(v["peer"], "127.0.0.1:5");
        assert_eq!(v["msg"], "bad \"head\"\n");
        assert!(out.starts_with(b"{\"ts\":\"1970-01-01T00:00:00.000Z\",\"level\":\"debug\","));
        let mut out = Vec::new();
        json_line(&mut out, 0, LogLevel::Info, None, "stopped: now");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("shard").is_none() && v.get("peer").is_none());
        assert_eq!(v["msg"], "stopped: now");
    }
}
