//! The WebSocket read path as a shard runs it: reads of fuzz-chosen sizes, each into a buffer
//! lent by a pool (a different, dirty one each time) and handed back after it is decoded, some
//! reads bringing nothing (the socket would block: a spurious readiness event), and the partial
//! header carried between reads by `Inbound`. The events and the error must be exactly those of
//! the whole stream decoded in one piece.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::ws::{Decoder, Inbound, WsError, MAX_HEADER_BYTES};

#[path = "common/ws_events.rs"]
mod ws_events;
use ws_events::{event, Ev};


/// The oracle: one decoder, the whole stream in one buffer.
fn whole(max: usize, stream: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let mut d = Decoder::new(max);
    let mut buf = stream.to_vec();
    let (mut events, mut pos) = (Vec::new(), 0);
    loop {
        match d.decode(&mut buf[pos..]) {
            Err(e) => return (events, Some(e)),
            Ok((n, ev)) => {
                pos += n;
                match ev {
                    Some(ev) => events.push(event(&mut d, ev)),
                    None if n == 0 => return (events, None),
                    None => {}
                }
            }
        }
    }
}

/// The shard's way: `Inbound` over reads of the given sizes, some of them preceded by a read that
/// would block.
fn read_path(max: usize, stream: &[u8], reads: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let mut rx = Inbound::new(max);
    // Two pooled buffers, lent in turn, never cleaned by their borrower.
    let mut pool = vec![vec![0xAAu8; 3], Vec::with_capacity(40)];
    let (mut events, mut rest) = (Vec::new(), stream);
    let mut sizes = reads.iter().cycle();
    while !rest.is_empty() {
        // A size byte with its high bit set is first a read that brings nothing, then a read
        // of 1 + (low bits)² / 4 bytes: every step makes progress.
        let (empty_first, n) = match sizes.next() {
            None => (false, rest.len()),
            Some(&r) => (r & 0x80 != 0, 1 + usize::from(r & 0x7f).pow(2) / 4),
        };
        if empty_first {
            let mut buf = pool.remove(0);
            rx.start(&mut buf);
            pool.push(buf);
        }
        let mut buf = pool.remove(0);
        rx.start(&mut buf);
        let (read, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        buf.extend_from_slice(read);
        let mut pos = 0;
        loop {
            match rx.next(&mut buf, &mut pos) {
                Err(e) => return (events, Some(e)),
                Ok(Some(ev)) => events.push(event(rx.decoder(), ev)),
                Ok(None) => break,
            }
        }
        assert_eq!(pos, buf.len(), "a decoded buffer is used up");
        assert!(rx.carried() < MAX_HEADER_BYTES);
        pool.push(buf);
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    // data = [max message bytes / 4] [number of read sizes] [read sizes...] [stream...]
    let [max, nreads, rest @ ..] = data else { return };
    let (reads, stream) = rest.split_at(usize::from(*nreads % 32).min(rest.len()));
    let max = usize::from(*max) * 4;
    assert_eq!(read_path(max, stream, reads), whole(max, stream));
});
