//! Process signals: SIGINT/SIGTERM blocked in every thread and waited for in one, SIGPIPE
//! ignored.
//!
//! Owns: the signal mask and `sigtimedwait`. `runtime` blocks the signals before it starts the
//! shard threads (which inherit the mask), so only its waiting thread ever receives them.
//! Must not: install handlers that run code asynchronously.

use std::time::Duration;

/// SIGINT and SIGTERM, blocked in the calling thread and every thread it starts afterwards.
pub struct ShutdownSignals(libc::sigset_t);

/// Blocks SIGINT and SIGTERM in this thread (threads spawned later inherit the mask), and
/// ignores SIGPIPE, so a peer that vanishes can never kill the process through a write.
pub fn block_shutdown_signals() -> ShutdownSignals {
    // An all-zero sigset_t is valid before sigemptyset; signal() sets SIG_IGN, which runs no code.
    // SAFETY: sigset calls on a local, pthread_sigmask for this thread with a pointer to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        ShutdownSignals(set)
    }
}

impl ShutdownSignals {
    /// Waits up to `timeout` for SIGINT or SIGTERM; returns its number, or `None` if neither
    /// came (a timeout, or an interruption).
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait with a pointer to our live set and timeout; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&self.0, std::ptr::null_mut(), &ts) };
        (sig == libc::SIGINT || sig == libc::SIGTERM).then_some(sig)
    }
}
