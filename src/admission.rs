//! Admission bounds against storms: how fast new connections may arrive (`--accept-rate`), how
//! many one address may hold (`--max-connections-per-ip`), and how fast one WebSocket may publish
//! (`--ws-publish-rate`).
//!
//! Owns: the token bucket all three rates use, the per-address connection counts, and the
//! jittered `Retry-After` a refused connection is told. Time is a value passed in (milliseconds
//! from any fixed origin), so the rules are tested without a clock.
//! Why a bucket of one second: a node that allows N connections a second takes a burst of N at
//! once (a load balancer's reconnect wave after a deploy) and then N a second, and answers the
//! rest 503 at once instead of letting them queue in the kernel behind the clients already
//! served — who never notice the storm.
//! Must not: allocate per check, or block a shard (the per-address table is sharded by a hash of
//! the address, each part behind its own short lock taken only at accept and close).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// A token bucket: `rate` tokens a second, at most `burst` saved up. 16 bytes; the rate and
/// burst are passed to each call, so one bucket per connection costs no more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Tokens, in thousandths.
    level_milli: u64,
    /// When `level_milli` was last brought up to date (ms).
    at_ms: u64,
}

impl Bucket {
    /// A full bucket at `now_ms`.
    pub fn full(burst: u32, now_ms: u64) -> Bucket {
        Bucket {
            level_milli: u64::from(burst) * 1000,
            at_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: u32, burst: u32, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        // rate tokens a second = rate thousandths a millisecond.
        let refill = elapsed.saturating_mul(u64::from(rate));
        self.level_milli = (self.level_milli.saturating_add(refill)).min(u64::from(burst) * 1000);
        self.at_ms = self.at_ms.max(now_ms);
        if self.level_milli >= 1000 {
            self.level_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// A [`Bucket`] in 8 bytes, for one per WebSocket connection (`--ws-publish-rate`), where an
/// idle parked stream's size is bounded (`cargo test --lib parked_stream_sizes`). Same rules,
/// at most `u32::MAX / 1000` tokens saved up, and time kept modulo 2^32 ms (49 days): after a
/// longer silence it refills by less than it should, and only as far as `burst`.
/// `Default` is an empty bucket; a WebSocket's is filled (`full`) when it opens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SmallBucket {
    level_milli: u32,
    at_ms: u32,
}

impl SmallBucket {
    /// A full bucket at `now_ms`.
    pub fn full(burst: u32, now_ms: u64) -> SmallBucket {
        SmallBucket {
            level_milli: burst.saturating_mul(1000),
            at_ms: now_ms as u32,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, rate: u32, burst: u32, now_ms: u64) -> bool {
        let now = now_ms as u32;
        // Wrapping: the difference of two readings less than 2^32 ms apart is right.
        let elapsed = now.wrapping_sub(self.at_ms);
        // A reading older than the last one (another clock's) neither refills nor moves time.
        if elapsed < 1 << 31 {
            let refill = u64::from(elapsed) * u64::from(rate);
            let level = (u64::from(self.level_milli) + refill).min(u64::from(burst) * 1000);
            self.level_milli = level.min(u64::from(u32::MAX)) as u32;
            self.at_ms = now;
        }
        if self.level_milli >= 1000 {
            self.level_milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// `Retry-After` seconds for a refused connection: 1 to 2 × `base`, spread by `seed` so the
/// refused clients do not all come back in the same second.
pub fn jittered_retry_after_secs(base: u32, seed: u64) -> u32 {
    let base = base.max(1);
    // splitmix64 finaliser: nearby seeds (consecutive ports, fds) land far apart.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    base + (z % u64::from(base + 1)) as u32
}

/// Parts of the per-address table.
const PARTS: usize = 16;

/// Open connections per client address, for `--max-connections-per-ip`.
pub struct PerIp {
    max: u32,
    parts: [Mutex<HashMap<IpAddr, u32>>; PARTS],
}

impl PerIp {
    pub fn new(max: u32) -> PerIp {
        PerIp {
            max,
            parts: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    fn part(&self, ip: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let h = match ip {
            IpAddr::V4(a) => u64::from(u32::from_ne_bytes(a.octets())),
            IpAddr::V6(a) => {
                let o = a.octets();
                u64::from_ne_bytes(o[8..].try_into().expect("8 bytes"))
            }
        };
        &self.parts[(h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % PARTS]
    }

    /// Counts a new connection from `ip`, unless it already holds `max`.
    pub fn try_add(&self, ip: IpAddr) -> bool {
        let mut m = self.part(&ip).lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return false;
        }
        *n += 1;
        true
    }

    /// A connection from `ip` (counted by `try_add`) ended.
    pub fn remove(&self, ip: IpAddr) {
        let mut m = self.part(&ip).lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    /// Connections counted for `ip` now.
    pub fn count(&self, ip: IpAddr) -> u32 {
        let m = self.part(&ip).lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_takes_a_burst_then_its_rate() {
        let mut b = Bucket::full(10, 0);
        assert_eq!((0..20).filter(|_| b.try_take(10, 10, 0)).count(), 10);
        // 100 ms at 10/s: one more token.
        assert!(b.try_take(10, 10, 100));
        assert!(!b.try_take(10, 10, 100));
        assert!(!b.try_take(10, 10, 199));
        assert!(b.try_take(10, 10, 200));
        // A long quiet spell refills to the burst, not beyond.
        assert_eq!((0..50).filter(|_| b.try_take(10, 10, 60_000)).count(), 10);
        // Time going backwards (another shard's clock reading) neither refills nor panics.
        assert!(!b.try_take(10, 10, 1_000));
        assert_eq!(std::mem::size_of::<Bucket>(), 16);
    }

    #[test]
    fn over_a_second_a_bucket_allows_its_rate() {
        let mut b = Bucket::full(100, 0);
        let mut taken = 0;
        for ms in 0..10_000u64 {
            for _ in 0..5 {
                taken += b.try_take(100, 100, ms) as u32;
            }
        }
        // 100 saved up, then 100 a second for 10 s (give or take the last millisecond).
        assert!((1099..=1101).contains(&taken), "{taken}");
    }

    #[test]
    fn a_small_bucket_takes_what_a_bucket_takes() {
        // The 16-byte bucket is the oracle: same answers for every call of a mixed schedule.
        for (rate, burst) in [(1, 1), (10, 10), (1000, 1000), (7, 3), (100_000, 100_000)] {
            let mut big = Bucket::full(burst, 5);
            let mut small = SmallBucket::full(burst, 5);
            let mut now = 5u64;
            for i in 0..20_000u64 {
                now += [0, 0, 1, 3, 0, 250, 0, 1][(i % 8) as usize];
                assert_eq!(
                    big.try_take(rate, burst, now),
                    small.try_take(rate, burst, now),
                    "rate {rate} burst {burst} at {now} ms"
                );
            }
        }
        // Across the 2^32 ms wrap of its clock.
        let mut small = SmallBucket::full(2, (1 << 32) - 10);
        assert!(small.try_take(2, 2, (1 << 32) - 10));
        assert!(small.try_take(2, 2, (1 << 32) - 10));
        assert!(!small.try_take(2, 2, (1 << 32) - 10));
        assert!(small.try_take(2, 2, (1 << 32) + 600));
        assert_eq!(std::mem::size_of::<SmallBucket>(), 8);
    }

    #[test]
    fn retry_after_is_spread_between_base_and_twice_base() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..1000u64 {
            let s = jittered_retry_after_secs(5, seed);
            assert!((5..=10).contains(&s), "{s}");
            seen.insert(s);
        }
        assert_eq!(seen.len(), 6, "every value from base to 2×base: {seen:?}");
        // A zero base is taken as one second.
        assert!((1..=2).contains(&jittered_retry_after_secs(0, 7)));
    }

    #[test]
    fn per_ip_counts_each_address_up_to_its_cap() {
        let p = PerIp::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert!(p.try_add(a) && p.try_add(a) && !p.try_add(a));
        assert!(p.try_add(b));
        assert_eq!((p.count(a), p.count(b)), (2, 1));
        p.remove(a);
        assert!(p.try_add(a));
        for _ in 0..2 {
            p.remove(a);
        }
        p.remove(b);
        assert_eq!((p.count(a), p.count(b)), (0, 0));
        // A stray remove does not underflow.
        p.remove(a);
        assert_eq!(p.count(a), 0);
    }
}
