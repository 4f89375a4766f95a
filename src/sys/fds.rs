//! The process's file-descriptor table, grown once before the shards start.
//!
//! Owns: [`reserve_table`]. Linux keeps a process's open files in one table that it doubles
//! when an fd past its end is allocated. When several threads share the table, the doubling
//! waits for an RCU grace period (milliseconds) before it returns, and every other fd allocation
//! in the process (each shard's accepts) waits behind it. A connect storm that takes a node past
//! 1,024 or 2,048 open fds would stall a shard in `accept` for that long, and with it the
//! deliveries it owes its subscribers. Growing the table once, while the process has one thread,
//! costs no grace period and takes the stall off the accept path for good (the table never
//! shrinks).
//! Must not: keep the fd it makes; it closes it before returning.

use std::io;
use std::os::fd::RawFd;

/// Grows the fd table to hold at least `want` descriptors, or as many as the soft
/// `RLIMIT_NOFILE` allows if that is fewer, by duplicating `fd` (any open descriptor the caller
/// holds) to the last of them and closing the copy. Returns the number reserved: the table now
/// holds descriptors `0..n` without growing again. The table costs the kernel 8 bytes per
/// descriptor (8 MiB at a million).
pub fn reserve_table(fd: RawFd, want: usize) -> io::Result<usize> {
    let limit = soft_nofile_limit()?;
    let n = want.min(limit);
    if n < 2 {
        return Ok(n);
    }
    let last = libc::c_int::try_from(n - 1).unwrap_or(libc::c_int::MAX);
    // SAFETY: F_DUPFD_CLOEXEC takes an fd and an int, no pointers; with `fd` not open it fails
    // with EBADF, and past the limit with EINVAL or EMFILE, each returned as an error.
    let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, last) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` was opened just above by this function and nothing else knows it.
    unsafe { libc::close(copy) };
    Ok(n)
}

/// The soft limit on open descriptors (`ulimit -n`).
fn soft_nofile_limit() -> io::Result<usize> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the pointer, which is valid and ours.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(r.rlim_cur).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// The table's size as the kernel reports it (`FDSize` in /proc/self/status).
    fn fd_table_size() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("FDSize:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_table_holds_what_was_reserved_and_no_fd_is_left_open() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let limit = soft_nofile_limit().unwrap();
        let want = (fd_table_size() * 4).min(limit);
        let n = reserve_table(f.as_raw_fd(), want).unwrap();
        assert_eq!(n, want);
        assert!(
            fd_table_size() >= want,
            "FDSize {} < {want}",
            fd_table_size()
        );
        // The copy went to the table's last slot and is closed again. (Counting the open fds
        // would race with the other tests of this process.)
        let copy = std::path::PathBuf::from(format!("/proc/self/fd/{}", n - 1));
        assert!(!copy.exists(), "the copy, fd {}, was not closed", n - 1);
        // Asking for less than the table holds changes nothing.
        assert_eq!(reserve_table(f.as_raw_fd(), 8).unwrap(), 8);
        assert!(fd_table_size() >= want);
        // A descriptor that is not open is an error, not a reservation.
        assert!(reserve_table(-1, 16).is_err());
    }
}
