//! Stream decoder vectors (RFC 6455 §5.7 and one per violation), each fed whole, split at every
//! byte position, and one byte at a time: all feeds must give the same events and error.

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame: masked with `MASK` (unless `mask` is None), minimal length.
fn frame(fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    let opcode = OpCode::from_u8(op).unwrap();
    encode_frame_header(&mut out, fin, opcode, payload.len() as u64);
    if let Some(m) = mask {
        out[1] |= 0x80;
        out.extend_from_slice(&m);
    }
    let p0 = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        unmask(&mut out[p0..], m, 0);
    }
    out
}

fn m(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, op, payload, Some(MASK))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ev {
    Msg(bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

fn owned(d: &Decoder, e: Event) -> Ev {
    match e {
        Event::Message { binary } => Ev::Msg(binary, d.message().to_vec()),
        Event::Ping => Ev::Ping(d.control_payload().to_vec()),
        Event::Pong => Ev::Pong(d.control_payload().to_vec()),
        Event::Close { code } => Ev::Close(code, d.control_payload().to_vec()),
    }
}

/// Feeds `chunks` as successive reads, the way a connection does: unconsumed bytes (an
/// incomplete header) are kept and the next read appended.
fn feed(max: usize, chunks: &[&[u8]]) -> (Vec<Ev>, Option<WsError>) {
    let mut d = Decoder::new(max);
    let mut carry: Vec<u8> = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        carry.extend_from_slice(chunk);
        loop {
            match d.decode(&mut carry) {
                Err(e) => {
                    // Failed stays failed.
                    assert_eq!(d.decode(&mut [0x81, 0x80, 0, 0, 0, 0]), Err(e));
                    return (events, Some(e));
                }
                Ok((n, ev)) => {
                    carry.drain(..n);
                    match ev {
                        Some(e) => events.push(owned(&d, e)),
                        None if n == 0 => break,
                        None => {}
                    }
                }
            }
        }
        assert!(carry.len() < MAX_HEADER_BYTES, "kept {} bytes", carry.len());
    }
    (events, None)
}

/// Whole, every 2-way split, and byte by byte must agree; returns the common answer.
fn decode_all_ways(max: usize, stream: &[u8]) -> (Vec<Ev>, Option<WsError>) {
    let whole = feed(max, &[stream]);
    for i in 0..=stream.len() {
        let (a, b) = stream.split_at(i);
        assert_eq!(feed(max, &[a, b]), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(feed(max, &bytes), whole, "byte by byte");
    let threes: Vec<&[u8]> = stream.chunks(3).collect();
    assert_eq!(feed(max, &threes), whole, "3 at a time");
    whole
}

fn cat(frames: &[Vec<u8>]) -> Vec<u8> {
    frames.concat()
}

const MAX: usize = 1 << 20;

#[test]
fn rfc_5_7_examples() {
    // Masked "Hello", byte for byte as in §5.7.
    let hello = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    assert_eq!(m(true, 1, b"Hello"), hello);
    assert_eq!(
        decode_all_ways(MAX, hello),
        (vec![Ev::Msg(false, b"Hello".to_vec())], None)
    );
    // Unmasked "Hello" is the server's form: a client sending it is a protocol error.
    assert_eq!(
        decode_all_ways(MAX, b"\x81\x05\x48\x65\x6c\x6c\x6f"),
        (vec![], Some(WsError::UnmaskedClientFrame))
    );
    // Fragmented "Hel" + "lo".
    let frag = cat(&[m(false, 1, b"Hel"), m(true, 0, b"lo")]);
    assert_eq!(
        decode_all_ways(MAX, &frag),
        (vec![Ev::Msg(false, b"Hello".to_vec())], None)
    );
    // Ping "Hello" and its pong.
    let pp = cat(&[m(true, 9, b"Hello"), m(true, 0xA, b"Hello")]);
    assert_eq!(
        decode_all_ways(MAX, &pp),
        (
            vec![Ev::Ping(b"Hello".to_vec()), Ev::Pong(b"Hello".to_vec())],
            None
        )
    );
    // 256 bytes (16-bit length) and 64 KiB (64-bit length) binary.
    let p256: Vec<u8> = (0..=255u8).collect();
    let f256 = m(true, 2, &p256);
    assert_eq!(&f256[..4], b"\x82\xFE\x01\x00");
    assert_eq!(
        decode_all_ways(MAX, &f256),
        (vec![Ev::Msg(true, p256)], None)
    );
    let p64k: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    let f64k = m(true, 2, &p64k);
    assert_eq!(&f64k[..10], b"\x82\xFF\x00\x00\x00\x00\x00\x01\x00\x00");
    // Too long for every split; whole, byte by byte and two halves.
    let want = (vec![Ev::Msg(true, p64k.clone())], None);
    assert_eq!(feed(MAX, &[&f64k]), want);
    assert_eq!(feed(MAX, &f64k.chunks(1).collect::<Vec<_>>()), want);
    assert_eq!(feed(MAX, &f64k.chunks(4093).collect::<Vec<_>>()), want);
}

#[test]
fn fragmented_text_with_interleaved_controls() {
    let stream = cat(&[
        m(false, 1, b"Hel"),
        m(true, 9, b"p1"),
        m(false, 0, b""),
        m(true, 0xA, b""),
        m(false, 0, "l\u{f6}".as_bytes()),
        m(true, 9, b""),
        m(true, 0, b"!"),
        m(true, 2, b"\x00\xFF"),
        m(true, 1, b""),
        m(true, 8, b"\x03\xE8bye"),
        // discarded after close
        b"\xFF\xFF\xFF".to_vec(),
    ]);
    assert_eq!(
        decode_all_ways(MAX, &stream),
        (
            vec![
                Ev::Ping(b"p1".to_vec()),
                Ev::Pong(vec![]),
                Ev::Ping(vec![]),
                Ev::Msg(false, "Hell\u{f6}!".as_bytes().to_vec()),
                Ev::Msg(true, vec![0, 255]),
                Ev::Msg(false, vec![]),
                Ev::Close(Some(1000), b"\x03\xE8bye".to_vec()),
            ],
            None
        )
    );
}

#[test]
fn one_vector_per_error() {
    use WsError::*;
    let big = vec![b'a'; 200];
    let table: Vec<(Vec<u8>, usize, WsError)> = vec![
        (b"\xC1\x80\0\0\0\0".to_vec(), MAX, ReservedBits),
        (b"\x83\x80\0\0\0\0".to_vec(), MAX, ReservedOpcode),
        (frame(true, 2, b"x", None), MAX, UnmaskedClientFrame),
        (b"\x82\xFE\x00\x05\0\0\0\0".to_vec(), MAX, NonMinimalLength),
        (
            b"\x82\xFF\x80\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
            MAX,
            LengthMsbSet,
        ),
        (b"\x89\xFE\x00\x7E".to_vec(), MAX, ControlTooLong),
        (b"\x09\x80\0\0\0\0".to_vec(), MAX, FragmentedControl),
        (m(true, 0, b"x"), MAX, UnexpectedContinuation),
        (
            cat(&[m(false, 1, b"a"), m(true, 1, b"b")]),
            MAX,
            ExpectedContinuation,
        ),
        (m(true, 1, b"\xCE\xBA\xFF"), MAX, InvalidUtf8),
        (m(true, 2, &big), 199, MessageTooBig),
        (m(true, 8, b"\x03"), MAX, BadClosePayload),
        (m(true, 8, b"\x03\xED"), MAX, BadCloseCode),
    ];
    for (stream, max, want) in table {
        let (_, err) = decode_all_ways(max, &stream);
        assert_eq!(err, Some(want), "{stream:02x?}");
    }
    // Invalid UTF-8 in a close reason is 1007 too.
    let (_, err) = decode_all_ways(MAX, &m(true, 8, b"\x03\xE8\xC0\xAF"));
    assert_eq!(err, Some(InvalidUtf8));
}

#[test]
fn utf8_across_fragments() {
    // κ split inside the code point, and € split 1+1+1.
    let ok = cat(&[
        m(false, 1, b"\xCE"),
        m(true, 0, b"\xBA"),
        m(false, 1, b"\xE2"),
        m(false, 0, b"\x82"),
        m(true, 0, b"\xAC"),
    ]);
    assert_eq!(
        decode_all_ways(MAX, &ok),
        (
            vec![
                Ev::Msg(false, "κ".as_bytes().to_vec()),
                Ev::Msg(false, "€".as_bytes().to_vec())
            ],
            None
        )
    );
    // Fail fast: the message is still open (no final fragment yet) when the error shows.
    let early = [
        m(false, 1, b"ab\xF5"),                             // lead byte > U+10FFFF
        m(false, 1, b"\xC0"),                               // overlong lead
        cat(&[m(false, 1, b"\xED"), m(false, 0, b"\xA0")]), // surrogate, split
        cat(&[m(false, 1, b"\xF4"), m(false, 0, b"\x90")]), // > U+10FFFF, split
        cat(&[m(false, 1, b"\xE0"), m(false, 0, b"\x80")]), // overlong, split
        m(false, 1, &[b'a'; 10][..])
            .into_iter()
            .take(6 + 5)
            .collect(), // (valid, partial)
    ];
    for (i, stream) in early.iter().enumerate() {
        let (events, err) = decode_all_ways(MAX, stream);
        assert!(events.is_empty());
        let want = if i == 5 {
            None
        } else {
            Some(WsError::InvalidUtf8)
        };
        assert_eq!(err, want, "{stream:02x?}");
    }
    // Error in the middle of a frame whose payload has not all arrived.
    let mut partial = m(true, 1, b"abc\xFFdefgh");
    partial.truncate(6 + 4);
    assert_eq!(decode_all_ways(MAX, &partial).1, Some(WsError::InvalidUtf8));
    // Ends inside a code point.
    let trunc = cat(&[m(false, 1, b"a\xE2\x82"), m(true, 0, b"")]);
    assert_eq!(decode_all_ways(MAX, &trunc).1, Some(WsError::InvalidUtf8));
    // Binary is not validated.
    assert_eq!(decode_all_ways(MAX, &m(true, 2, b"\xFF")).1, None);
}

#[test]
fn message_bound_counts_all_fragments() {
    let exact = cat(&[m(false, 2, &[1; 6]), m(true, 0, &[2; 4])]);
    assert_eq!(decode_all_ways(10, &exact).1, None);
    let over = cat(&[m(false, 2, &[1; 6]), m(true, 0, &[2; 5])]);
    assert_eq!(decode_all_ways(10, &over).1, Some(WsError::MessageTooBig));
    // Many empty fragments are fine: the bound is on bytes.
    let mut empties: Vec<Vec<u8>> = (0..100).map(|_| m(false, 0, b"")).collect();
    empties.insert(0, m(false, 1, b""));
    empties.push(m(true, 0, b"x"));
    assert_eq!(
        feed(1, &[&cat(&empties)]).0,
        vec![Ev::Msg(false, b"x".to_vec())]
    );
    // Control frames do not count.
    let ctl = cat(&[
        m(false, 2, &[1; 10]),
        m(true, 9, &[0; 125]),
        m(true, 0, b""),
    ]);
    assert_eq!(decode_all_ways(10, &ctl).1, None);
    // A huge announced length is refused at the header, before any payload.
    let mut huge = vec![0x82, 0xFF, 0, 0, 0, 1, 0, 0, 0, 0];
    huge.extend_from_slice(&MASK);
    assert_eq!(feed(MAX, &[&huge]).1, Some(WsError::MessageTooBig));
}

#[test]
fn close_frames() {
    assert_eq!(
        decode_all_ways(MAX, &m(true, 8, b"")),
        (vec![Ev::Close(None, vec![])], None)
    );
    assert_eq!(
        decode_all_ways(MAX, &m(true, 8, b"\x0F\xA0")),
        (vec![Ev::Close(Some(4000), b"\x0F\xA0".to_vec())], None)
    );
    let mut d = Decoder::new(MAX);
    let mut c = m(true, 8, b"\x03\xE8");
    assert_eq!(
        d.decode(&mut c),
        Ok((8, Some(Event::Close { code: Some(1000) })))
    );
    assert!(d.is_closed());
    assert_eq!(d.decode(&mut [0xC1, 0x00]), Ok((2, None)));
}

#[test]
fn streaming_consumes_partial_payload() {
    let f = m(true, 1, b"Hello, world");
    let mut d = Decoder::new(MAX);
    // A partial header is not consumed.
    let mut head = f[..5].to_vec();
    assert_eq!(d.decode(&mut head), Ok((0, None)));
    assert!(d.is_idle());
    // Header plus part of the payload is consumed and buffered.
    let mut part = f[..9].to_vec();
    assert_eq!(d.decode(&mut part), Ok((9, None)));
    assert!(!d.is_idle());
    assert_eq!(d.message(), b"Hel");
    let mut rest = f[9..].to_vec();
    assert_eq!(
        d.decode(&mut rest),
        Ok((f.len() - 9, Some(Event::Message { binary: false })))
    );
    assert_eq!(d.message(), b"Hello, world");
    assert!(d.is_idle());
    d.clear_message();
    assert_eq!(d.message(), b"");
    assert_eq!(d.decode(&mut []), Ok((0, None)));
}

#[test]
fn a_taken_message_leaves_the_decoder_ready_for_the_next() {
    let mut d = Decoder::new(MAX);
    let mut two = frame(true, 0x1, b"first", Some(MASK));
    two.extend_from_slice(&frame(true, 0x2, b"second", Some(MASK)));
    let (n, ev) = d.decode(&mut two).unwrap();
    assert_eq!(ev, Some(Event::Message { binary: false }));
    assert_eq!(d.take_message(), b"first");
    assert_eq!(d.message(), b"");
    let (_, ev) = d.decode(&mut two[n..]).unwrap();
    assert_eq!(ev, Some(Event::Message { binary: true }));
    assert_eq!(d.take_message(), b"second");
    assert!(d.is_idle());
}

#[test]
fn memory_stays_small() {
    let d = Decoder::new(MAX);
    assert_eq!(d.message().len(), 0);
    assert!(d.is_idle());
    let size = core::mem::size_of::<Decoder>();
    assert!(size <= 80, "size_of::<Decoder>() = {size}");

    let mut d = Decoder::new(MAX);
    let mut big = m(true, 2, &vec![0; 100_000]);
    assert!(matches!(d.decode(&mut big), Ok((_, Some(_)))));
    d.clear_message();
    assert_eq!(d.heap_bytes(), 0, "big buffer freed");
    let mut small = m(true, 2, &[0; 100]);
    assert!(matches!(d.decode(&mut small), Ok((_, Some(_)))));
    // The next decode clears a delivered message even if the caller forgot.
    assert_eq!(d.decode(&mut []), Ok((0, None)));
    assert_eq!(d.message(), b"");
    d.release_buffers();
    assert_eq!(d.heap_bytes(), 0);
}
