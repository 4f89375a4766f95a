//! `parse_frame_header` on arbitrary bytes: never panics, a header it returns fits in the buffer,
//! and every prefix answers "need more" or exactly what the whole buffer answers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::ws::parse_frame_header;

fuzz_target!(|data: &[u8]| {
    let whole = parse_frame_header(data);
    if let Ok(Some(h)) = whole {
        assert!(h.header_len <= data.len() && h.header_len <= 14);
    }
    for n in 0..data.len().min(15) {
        let prefix = parse_frame_header(&data[..n]);
        assert!(prefix == Ok(None) || prefix == whole, "prefix {n}: {prefix:?} vs {whole:?}");
    }
});
