//! Leveled one-line logging to stderr.
//!
//! Owns: the process-wide level and the line format `LEVEL message` (a message about a shard
//! names it itself: `shard N: …`). A line is written with one `write` so lines from different
//! shards never interleave mid-line.
//! Must not: allocate or format when the level is off (the macros check first).

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::config::LogLevel;

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);

pub fn set_level(l: LogLevel) {
    LEVEL.store(l as u8, Ordering::Relaxed);
}

#[inline]
pub fn enabled(l: LogLevel) -> bool {
    (l as u8) <= LEVEL.load(Ordering::Relaxed)
}

#[doc(hidden)]
pub fn write_line(l: LogLevel, args: std::fmt::Arguments<'_>) {
    let tag = match l {
        LogLevel::Error => "ERROR",
        LogLevel::Warn => "WARN ",
        LogLevel::Info => "INFO ",
        LogLevel::Debug => "DEBUG",
    };
    let mut line = Vec::with_capacity(128);
    let _ = writeln!(line, "{tag} {args}");
    let _ = std::io::stderr().lock().write_all(&line);
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
