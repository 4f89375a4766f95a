//! Client-to-server payload masking (RFC 6455 §5.3).
//!
//! Owns the XOR of the 4-byte masking key into payload bytes, in place, piecewise (a payload may
//! arrive in many reads). Safe code only: the fast path XORs 8 bytes at a time through
//! `u64::from_ne_bytes` on `chunks_exact_mut(8)`, which the compiler turns into unaligned wide
//! loads (and vectorizes); a naive per-byte oracle checks it in the tests.

/// XORs `mask` into `buf`, where `buf[0]` is payload byte number `offset` of its frame, so
/// `unmask(&mut p[..k], m, 0); unmask(&mut p[k..], m, k)` equals `unmask(p, m, 0)`.
/// Masking is its own inverse, so this also masks.
#[inline]
pub fn unmask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // Rotate the key so that key[0] applies to buf[0].
    let rot = offset & 3;
    let key = [
        mask[rot],
        mask[(rot + 1) & 3],
        mask[(rot + 2) & 3],
        mask[(rot + 3) & 3],
    ];
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        // `chunks_exact_mut(8)` yields exactly 8 bytes, so the conversion always succeeds.
        if let Ok(bytes) = <[u8; 8]>::try_from(&*chunk) {
            chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ wide).to_ne_bytes());
        }
    }
    // The tail starts at a multiple of 8 (hence of 4) from buf[0]: key index is i & 3.
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// The plain loop of §5.3, the oracle the fast path is tested against.
#[cfg(test)]
pub(crate) fn unmask_naive(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[(offset + i) % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_example() {
        // §5.7: masked "Hello".
        let mut p = *b"\x7f\x9f\x4d\x51\x58";
        unmask(&mut p, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&p, b"Hello");
    }

    #[test]
    fn fast_path_matches_oracle() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut src = [0u8; 64 + 8];
        for (i, b) in src.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(151).wrapping_add(7);
        }
        for len in 0..=64 {
            for align in 0..8 {
                for offset in 0..8 {
                    let mut fast = src;
                    let mut slow = src;
                    unmask(&mut fast[align..align + len], mask, offset);
                    unmask_naive(&mut slow[align..align + len], mask, offset);
                    assert_eq!(fast, slow, "len {len} align {align} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn piecewise_equals_whole() {
        let mask = [1, 2, 3, 4];
        let src: Vec<u8> = (0..100u8).collect();
        let mut whole = src.clone();
        unmask(&mut whole, mask, 0);
        for split in 0..=src.len() {
            let mut parts = src.clone();
            let (a, b) = parts.split_at_mut(split);
            unmask(a, mask, 0);
            unmask(b, mask, split);
            assert_eq!(parts, whole, "split {split}");
        }
    }
}
