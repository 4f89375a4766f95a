//! The calling thread's CPU clock: what a shard's own work cost, without the time it waited
//! for a core or ran other tasks.

use std::time::Duration;

/// CPU time the calling thread has used, user and system (`CLOCK_THREAD_CPUTIME_ID`). A
/// syscall (~0.3 µs), not a vDSO read: for once per batch of work, not per item.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO; // cannot fail for this clock on Linux; zero reads as "idle"
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_clock_counts_work_and_not_sleep() {
        let a = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - a;
        let b = thread_cpu_time();
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let worked = thread_cpu_time() - b;
        assert!(
            slept < Duration::from_millis(10),
            "sleep counted: {slept:?}"
        );
        assert!(worked > slept, "work not counted: {worked:?} vs {slept:?}");
    }
}
