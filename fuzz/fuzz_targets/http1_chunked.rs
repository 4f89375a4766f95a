//! `ChunkedDecoder` on arbitrary bytes: never panics, and feeding the input whole or split at a
//! fuzz-chosen point gives the same payload, consumed count, done flag or error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::http1::{BodyError, ChunkedDecoder};

fn decode(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), BodyError> {
    let (mut d, mut out, mut used) = (ChunkedDecoder::new(4096), Vec::new(), 0);
    for p in pieces {
        let (n, done) = d.decode(p, &mut out)?;
        used += n;
        if done {
            return Ok((out, used, true));
        }
        assert_eq!(n, p.len(), "a decoder that is not done consumes everything");
    }
    Ok((out, used, false))
}

fuzz_target!(|data: &[u8]| {
    let [c0, c1, body @ ..] = data else { return };
    let cut = usize::from(u16::from_le_bytes([*c0, *c1])) % (body.len() + 1);
    let (a, b) = body.split_at(cut);
    assert_eq!(decode(&[body]), decode(&[a, b]));
});
