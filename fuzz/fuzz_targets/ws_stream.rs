//! `Decoder` over arbitrary bytes: the same events and error whether the stream is fed whole or
//! in fuzz-chosen reads (keeping unconsumed bytes like a connection does), and it never keeps more
//! than an incomplete header unconsumed.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringcast::codec::ws::{Decoder, Event, WsError};

#[derive(Debug, PartialEq)]
enum Ev {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

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
                        Some(Event::Ping) => events.push(Ev::Ping(d.control_payload().to_vec())),
                        Some(Event::Pong) => events.push(Ev::Pong(d.control_payload().to_vec())),
                        Some(Event::Close { code }) => {
                            events.push(Ev::Close(code, d.control_payload().to_vec()))
                        }
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
