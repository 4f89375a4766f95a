//! The multi-topic routes' query and token parsers on arbitrary bytes: never panic, and a token
//! that reads writes back as exactly the same bytes (one token per set of positions).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::streampos::StreamPos;
use ringcast::codec::subscribe;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = StreamPos::parse(data, 64) {
        assert!(p.len() <= 64);
        let mut again = Vec::new();
        StreamPos::encode_tagged(&mut p.entries().to_vec(), &mut again);
        assert_eq!(again, data);
    }
    let _ = subscribe::topics(data, 64, 128);
    let _ = subscribe::fresh_start(Some(data), Some(data));
});
