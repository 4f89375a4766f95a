//! What a decoded WebSocket stream said, as plain values two decodings can be compared by
//! (shared by the `ws_stream` and `ws_read_path` targets).

use ringcast::codec::ws::{Decoder, Event};

#[derive(Debug, PartialEq)]
pub enum Ev {
    Message(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

/// The value of `ev`, with its payload taken from the decoder that produced it.
pub fn event(d: &mut Decoder, ev: Event) -> Ev {
    match ev {
        Event::Message { binary } => Ev::Message(binary, d.take_message()),
        Event::Ping => Ev::Ping(d.control_payload().to_vec()),
        Event::Pong => Ev::Pong(d.control_payload().to_vec()),
        Event::Close { code } => Ev::Close(code, d.control_payload().to_vec()),
    }
}
