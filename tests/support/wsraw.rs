//! A raw WebSocket client for integrity tests: it frames, fragments and cuts its writes itself,
//! so a test decides exactly which bytes reach the server in which reads.
//!
//! Included with `#[path = "support/wsraw.rs"] mod wsraw;` next to `support/server.rs`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// xorshift64*: deterministic, seedable, no dependency.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }

    /// True with probability `num/den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.next() % den < num
    }
}

/// Message `i` of a stream seeded `seed`: its size comes from the caller, its bytes from the
/// seed, so writer and reader agree without sharing memory. Text is ASCII.
pub fn payload(seed: u64, i: usize, len: usize, text: bool) -> Vec<u8> {
    let mut r = Rng::new(seed ^ (i as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        let x = r.next().to_le_bytes();
        let take = (len - v.len()).min(8);
        if text {
            v.extend(x[..take].iter().map(|b| b' ' + b % 94));
        } else {
            v.extend_from_slice(&x[..take]);
        }
    }
    v
}

/// One client frame, masked with `key` (RFC 6455 §5.3).
pub fn client_frame(out: &mut Vec<u8>, fin: bool, op: u8, payload: &[u8], key: [u8; 4]) {
    out.push((u8::from(fin) << 7) | op);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

/// A message as fragments of `frag` bytes (the last may be shorter; an empty message is one
/// empty frame), with a ping between fragments where `ping` says so. Returns the pings added.
pub fn fragmented(
    out: &mut Vec<u8>,
    r: &mut Rng,
    op: u8,
    msg: &[u8],
    frag: usize,
    ping_one_in: u64,
) -> usize {
    let mut pings = 0;
    let mut chunks: Vec<&[u8]> = msg.chunks(frag.max(1)).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let key = (r.next() as u32).to_be_bytes();
        client_frame(out, i == last, if i == 0 { op } else { OP_CONT }, c, key);
        if i != last && ping_one_in > 0 && r.chance(1, ping_one_in) {
            let p = (r.next() as u32).to_be_bytes();
            client_frame(out, true, OP_PING, &p, key);
            pings += 1;
        }
    }
    pings
}

/// Writes `bytes` in cuts of 1..=`max_cut` bytes, pausing now and then, so the server sees
/// reads that end anywhere — inside headers, masks and payloads — and readiness events that
/// race with its reads.
pub fn write_in_cuts(t: &mut TcpStream, r: &mut Rng, bytes: &[u8], max_cut: usize) {
    let mut at = 0;
    while at < bytes.len() {
        let n = r.range(1, max_cut).min(bytes.len() - at);
        t.write_all(&bytes[at..at + n]).expect("write");
        at += n;
        match r.next() % 64 {
            0 => std::thread::sleep(Duration::from_micros(r.range(1, 2000) as u64)),
            1..=3 => std::thread::yield_now(),
            _ => {}
        }
    }
}

/// Writes `bytes` in blocks of exactly `block` bytes, each followed by a pause long enough for
/// the server to read all of it: a read then ends exactly where a block does — on a buffer-size
/// boundary, for block sizes that are read sizes — wherever that falls in a frame.
pub fn write_in_blocks(t: &mut TcpStream, bytes: &[u8], block: usize, pause: Duration) {
    for b in bytes.chunks(block) {
        t.write_all(b).expect("write");
        std::thread::sleep(pause);
    }
}

/// Reads one server frame: (fin, opcode, payload). None at EOF or on a read error.
pub fn read_frame(t: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    t.read_exact(&mut h).ok()?;
    assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            t.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            t.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    t.read_exact(&mut p).ok()?;
    Some((h[0] & 0x80 != 0, h[0] & 0x0f, p))
}

/// The close code and reason of a close frame's payload.
pub fn close_code(p: &[u8]) -> (u16, String) {
    if p.len() < 2 {
        return (1005, String::new());
    }
    (
        u16::from_be_bytes([p[0], p[1]]),
        String::from_utf8_lossy(&p[2..]).into_owned(),
    )
}

/// Opens `path` as a WebSocket on `addr` (a 101 or a panic).
pub fn upgrade(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut t = TcpStream::connect(addr).expect("connect");
    t.set_nodelay(true).unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    t.write_all(req.as_bytes()).unwrap();
    // The head ends at the first blank line; the server sends nothing after it until asked.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        t.read_exact(&mut b).expect("upgrade answer");
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    t
}

/// What one echo client sends: `messages` messages whose sizes, fragment sizes and write cuts
/// come from `seed`, up to `max_len` bytes each.
#[derive(Clone, Copy)]
pub struct Plan {
    pub seed: u64,
    pub messages: usize,
    pub max_len: usize,
}

/// How a message's bytes are written.
#[derive(Clone, Copy)]
enum Cuts {
    /// Random cuts of up to this many bytes, with random pauses.
    Random(usize),
    /// Blocks of exactly this many bytes, each read whole by the server before the next.
    Blocks(usize),
}

/// Size, text-or-binary, fragment size and write cuts of message `i`.
fn shape(plan: &Plan, r: &mut Rng) -> (usize, bool, usize, Cuts) {
    let len = match r.next() % 4 {
        0 => r.range(0, 200),
        1 | 2 => r.range(1000, 64 * 1024),
        _ => r.range(128 * 1024, plan.max_len),
    };
    let frag = match r.next() % 4 {
        0 => 64,
        1 => r.range(1, 300),
        2 => r.range(1, 16),
        _ => r.range(1000, 40_000),
    };
    // Tiny fragments of a large message would be millions of frames: keep it bounded.
    let frag = frag.max(len / 20_000);
    let cut = match r.next() % 6 {
        0 => Cuts::Random(7),
        1 => Cuts::Random(100),
        2 => Cuts::Random(1500),
        3 => Cuts::Random(70_000),
        // 4-64 KiB: read sizes a server is likely to use.
        _ => Cuts::Blocks(1 << r.range(12, 16)),
    };
    (len, r.chance(1, 3), frag, cut)
}

/// Runs one echo client on `/ws/{topic}` (its messages come back through its own
/// subscription) and checks every echo byte for byte, every ping answered, no close.
/// Returns the payload bytes echoed.
pub fn echo_client(addr: std::net::SocketAddr, topic: &str, plan: Plan) -> usize {
    let mut t = upgrade(addr, &format!("/ws/{topic}"));
    t.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut reader = t.try_clone().unwrap();
    let rplan = plan;
    let read = std::thread::spawn(move || {
        let mut r = Rng::new(rplan.seed);
        let (mut pongs, mut bytes) = (0usize, 0usize);
        for i in 0..rplan.messages {
            let (len, text, _, _) = shape(&rplan, &mut r);
            let want = payload(rplan.seed, i, len, text);
            let got = loop {
                let Some((fin, op, p)) = read_frame(&mut reader) else {
                    panic!("connection ended before echo {i} of {}", rplan.messages);
                };
                match op {
                    OP_PONG => pongs += 1,
                    OP_PING => {}
                    OP_CLOSE => panic!("server closed: {:?} before echo {i}", close_code(&p)),
                    _ => {
                        assert!(fin, "echoes are single frames");
                        assert_eq!(op, if text { OP_TEXT } else { OP_BINARY }, "echo {i}");
                        break p;
                    }
                }
            };
            assert!(
                got == want,
                "echo {i} differs: {} bytes, want {len}",
                got.len()
            );
            bytes += len;
        }
        (pongs, bytes, reader)
    });
    let mut r = Rng::new(plan.seed);
    let mut w = Rng::new(plan.seed ^ 0x5eed);
    let mut pings = 0;
    for i in 0..plan.messages {
        let (len, text, frag, cut) = shape(&plan, &mut r);
        let msg = payload(plan.seed, i, len, text);
        let mut bytes = Vec::with_capacity(len + len / frag.max(1) * 6 + 16);
        let op = if text { OP_TEXT } else { OP_BINARY };
        pings += fragmented(&mut bytes, &mut w, op, &msg, frag, 8);
        match cut {
            Cuts::Random(max) => write_in_cuts(&mut t, &mut w, &bytes, max),
            Cuts::Blocks(b) => write_in_blocks(&mut t, &bytes, b, Duration::from_millis(2)),
        }
    }
    let (pongs, bytes, mut reader) = read.join().expect("reader");
    assert_eq!(pongs, pings, "every ping answered");
    // A clean close handshake: the connection was never out of step.
    let mut close = Vec::new();
    client_frame(
        &mut close,
        true,
        OP_CLOSE,
        &1000u16.to_be_bytes(),
        [1, 2, 3, 4],
    );
    write_in_cuts(&mut t, &mut w, &close, 3);
    loop {
        match read_frame(&mut reader) {
            Some((_, OP_CLOSE, p)) => {
                assert_eq!(close_code(&p).0, 1000);
                break;
            }
            Some(_) => {}
            None => panic!("no close echo"),
        }
    }
    bytes
}
