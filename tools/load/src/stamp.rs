//! The kernel's receive timestamps (`SO_TIMESTAMPNS`): when a segment reached a socket, as
//! opposed to when a thread got round to reading it. Plain fds and libc only, so that the
//! server's storm test (`tests/storm.rs`) times its subscribers with this same code.

use std::io;
use std::os::fd::RawFd;

/// Asks the kernel to stamp each segment that arrives on `fd` from now on; segments already
/// queued keep no stamp.
pub fn stamp_arrivals(fd: RawFd) -> io::Result<()> {
    set_flag(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS)
}

/// Turns on the boolean socket option `level`/`name` of `fd`.
pub fn set_flag(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a c_int option value of the size given; a bad fd is an error.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One non-blocking `recvmsg(2)` appended to `buf` (up to its spare capacity, which must not
/// be empty): the bytes read, and the receive stamp (CLOCK_REALTIME ns) of the newest segment
/// they came from, 0 when there was none. TCP gives the newest segment's stamp, so bytes that
/// arrived earlier in the same read are timed late, never early.
pub fn recv_stamped(fd: RawFd, buf: &mut Vec<u8>) -> io::Result<(usize, u64)> {
    let len = buf.len();
    let spare = buf.spare_capacity_mut();
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let mut space = [0u64; 16]; // aligned room for one timespec control message
                                // SAFETY: msghdr is plain data; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space);
    // SAFETY: recvmsg with the msghdr built above; it writes at most `iov_len` bytes into the
    // spare capacity and at most `msg_controllen` into `space`.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: recvmsg initialised the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(len + n as usize) };
    let mut stamp = 0;
    // SAFETY: walking the control buffer the kernel filled, with the libc CMSG helpers.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}
