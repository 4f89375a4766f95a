//! `Decoder` over arbitrary bytes: the same events and error whether the stream is fed whole or
//! in fuzz-chosen reads (keeping unconsumed bytes like a connection does), and it never keeps more
//! than an incomplete header unconsumed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::ws::{Decoder, Event, WsError};

#[path = "common/ws_events.rs"]
mod ws_events;
use ws_events::{event, Ev};


fn feed(max: usize, stream: &[u8], cuts: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let mut d = Decoder::new(max);
    let (mut events, mut carry, mut rest) = (Vec::new(), Vec::new(), stream);
    // An empty `cuts` cycles to nothing: one read of the whole stream.
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = match cuts.next() {
            Some(&c) => 1 + usize::from(c),
            None => rest.len(),
        };
        let (read, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        carry.extend_from_slice(read);
        loop {
            match d.decode(&mut carry) {
                Err(e) => return (events, Some(e)),
                Ok((n, ev)) => {
                    carry.drain(..n);
                    match ev {
                        Some(Event::Message { binary }) => {
                            events.push(Ev::Message(binary, d.message().to_vec()));
                            d.clear_message();
                        }
                        // Control events through the shared conversion.
                        Some(ev) => events.push(event(&mut d, ev)),
                        None if n == 0 => break,
                        None => {}
                    }
                }
            }
        }
        assert!(carry.len() < 14);
    }
    (events, None)
}

fuzz_target!(|data: &[u8]| {
    // data = [max message bytes / 4] [number of cut bytes] [cuts...] [stream...]
    let [max, ncuts, rest @ ..] = data else { return };
    let (cuts, stream) = rest.split_at(usize::from(*ncuts % 16).min(rest.len()));
    let max = usize::from(*max) * 4;
    let whole = feed(max, stream, &[]);
    assert_eq!(feed(max, stream, cuts), whole);
    assert_eq!(feed(max, stream, &[0]), whole);
});
