//! `parse_head` on arbitrary bytes with small limits: never panics; a complete head's offsets
//! stay inside the buffer and the head never exceeds the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::http1::{parse_head, Head, Limits, Status};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_request_line_bytes: 256,
        max_head_bytes: 1024,
        max_headers: 16,
    };
    let mut head = Head::default();
    if let Ok(Status::Complete) = parse_head(data, &limits, &mut head) {
        assert!(head.head_len <= limits.max_head_bytes && head.headers.len() <= limits.max_headers);
        let _ = (head.path(data), head.query(data), head.header(data, "host"));
        assert!(head.headers(data).count() == head.headers.len());
    }
});
