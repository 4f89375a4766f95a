//! Decimal numerals: the one digit loop every codec that writes a number shares.
//!
//! Owns: a `u64` as ASCII decimal digits, into a fixed buffer ([`u64_digits`]) or appended to
//! an output buffer ([`write_u64`]). Hand-written rather than `write!`: positions, lengths and
//! retry times are written on hot paths, and the formatting machinery was a visible part of the
//! short-poll profile.
//! Must not: allocate beyond growing the caller's buffer.

/// Digits in the longest `u64` (18446744073709551615).
pub(crate) const MAX_U64_DIGITS: usize = 20;

/// Writes the decimal digits of `n` into the end of `buf` and returns them.
pub(crate) fn u64_digits(mut n: u64, buf: &mut [u8; MAX_U64_DIGITS]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends the decimal digits of `n` to `out`.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; MAX_U64_DIGITS];
    out.extend_from_slice(u64_digits(n, &mut buf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_formatter() {
        let mut cases = vec![
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            101,
            999,
            1000,
            u64::MAX - 1,
            u64::MAX,
        ];
        for p in 1..MAX_U64_DIGITS as u32 {
            let t = 10u64.pow(p);
            cases.extend([t - 1, t, t + 1]);
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (x % 64));
        }
        for n in cases {
            let mut buf = [0u8; MAX_U64_DIGITS];
            assert_eq!(u64_digits(n, &mut buf), n.to_string().as_bytes(), "{n}");
            let mut out = b"prev".to_vec();
            write_u64(&mut out, n);
            assert_eq!(out, format!("prev{n}").as_bytes());
        }
    }
}
