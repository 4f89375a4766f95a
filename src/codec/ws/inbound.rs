//! A client connection's receive side between socket reads (RFC 6455 §5.2 framing across reads).
//!
//! Owns: the connection's [`Decoder`] and the bytes of an incomplete frame header (at most
//! [`MAX_HEADER_BYTES`]) left at the end of a read, which belong in front of the next read's
//! bytes. The caller owns the read buffer (a shard lends one per read and takes it back), so
//! nothing here holds a buffer between reads.
//!
//! The invariant that keeps a stream in step: **the carried header is replaced only when a
//! buffer that starts with it has been decoded to its end.** [`Inbound::start`] copies the
//! carry into the buffer without giving it up; only [`Inbound::next`] returning `Ok(None)` (the
//! buffer is exhausted) replaces it, with what that buffer left. A read that brings nothing — it
//! would block, or a readiness event arrived for bytes an earlier read already took — leaves the
//! carry where it was. (Clearing the carry when it was copied lost those bytes whenever such a
//! read followed a read that ended inside a header: the next frame was then parsed from its
//! middle, and the connection closed with 1002.)
//!
//! Must not: do I/O or allocate per read (the carry is a fixed array).

use super::decoder::{Decoder, Event};
use super::error::WsError;
use super::frame::MAX_HEADER_BYTES;

/// The decoder and the carried partial header of one client connection.
#[derive(Debug)]
pub struct Inbound {
    dec: Decoder,
    /// INVARIANT: `carry_len <= MAX_HEADER_BYTES`, and `carry[..carry_len]` is an incomplete
    /// frame header that no buffer has consumed yet.
    carry: [u8; MAX_HEADER_BYTES],
    carry_len: u8,
}

impl Inbound {
    /// A receive side bounding each message to `max_message_bytes`. Allocates nothing.
    pub const fn new(max_message_bytes: usize) -> Self {
        Inbound {
            dec: Decoder::new(max_message_bytes),
            carry: [0; MAX_HEADER_BYTES],
            carry_len: 0,
        }
    }

    /// Makes `buf` (any lent buffer) hold exactly the carried header; read new bytes after it,
    /// then decode the buffer from position 0 with [`next`](Self::next).
    pub fn start(&self, buf: &mut Vec<u8>) {
        buf.clear();
        buf.extend_from_slice(&self.carry[..usize::from(self.carry_len)]);
    }

    /// The next event from `buf[*pos..]`, advancing `*pos` past what it consumed. `buf` must
    /// have been begun by [`start`](Self::start), with `*pos` at 0 for its first call.
    ///
    /// `Ok(None)`: the buffer is exhausted; an incomplete header it ended with is now the carry
    /// (and `*pos` is `buf.len()`). Call `next` until then before starting another buffer;
    /// stopping early is only for a connection that is ending. After an error or a close, the
    /// decoder's own rules apply (the same error again; input discarded).
    pub fn next(&mut self, buf: &mut [u8], pos: &mut usize) -> Result<Option<Event>, WsError> {
        loop {
            let (used, ev) = self.dec.decode(&mut buf[*pos..])?;
            *pos += used;
            if ev.is_some() {
                return Ok(ev);
            }
            if used == 0 {
                // The decoder leaves nothing but an incomplete header unconsumed.
                let rest = &buf[*pos..];
                debug_assert!(rest.len() < MAX_HEADER_BYTES, "decoder left {}", rest.len());
                let n = rest.len().min(MAX_HEADER_BYTES);
                self.carry[..n].copy_from_slice(&rest[..n]);
                self.carry_len = n as u8;
                *pos = buf.len();
                return Ok(None);
            }
        }
    }

    /// The decoder, for the payload of the event `next` returned.
    pub fn decoder(&mut self) -> &mut Decoder {
        &mut self.dec
    }

    /// Nothing is in progress: no carried bytes, and the decoder is between messages. A
    /// connection in this state may drop its `Inbound` and start a new one later.
    pub fn is_idle(&self) -> bool {
        self.carry_len == 0 && self.dec.is_idle()
    }

    /// Bytes carried to the next read.
    pub fn carried(&self) -> usize {
        usize::from(self.carry_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::ws::{encode_frame_header, OpCode};

    fn masked(fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut f = Vec::new();
        encode_frame_header(&mut f, fin, op, payload.len() as u64);
        f[1] |= 0x80;
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    }

    /// Feeds `stream` through `Inbound` in reads of the given sizes; a size of 0 is a read that
    /// would block (nothing arrives), exactly what a spurious readiness event gives.
    fn run(stream: &[u8], reads: &[usize]) -> Result<Vec<(bool, Vec<u8>)>, WsError> {
        let mut rx = Inbound::new(1 << 20);
        let mut out = Vec::new();
        let mut rest = stream;
        let mut buf = Vec::new();
        for &n in reads.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            // A different buffer each time, as a pool lends them.
            buf = std::mem::replace(&mut buf, Vec::with_capacity(n % 7));
            rx.start(&mut buf);
            if n == 0 {
                continue;
            }
            let (read, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            buf.extend_from_slice(read);
            let mut pos = 0;
            while let Some(ev) = rx.next(&mut buf, &mut pos)? {
                if let Event::Message { binary } = ev {
                    out.push((binary, rx.decoder().take_message()));
                }
            }
            assert!(rx.carried() < MAX_HEADER_BYTES);
        }
        Ok(out)
    }

    #[test]
    fn a_read_that_brings_nothing_keeps_the_carried_header() {
        // 70-byte frames (the 64-byte fragments of Autobahn 9.4.1), read 3 bytes into a header,
        // then an empty read, then the rest.
        let mut s = masked(false, OpCode::Binary, &[7; 64]);
        s.extend(masked(true, OpCode::Continuation, &[9; 64]));
        let want = vec![(true, [[7u8; 64], [9; 64]].concat())];
        assert_eq!(run(&s, &[73, 0, 0, 200]).unwrap(), want);
        for a in 1..s.len() {
            assert_eq!(run(&s, &[a, 0, 1, 0, 5]).unwrap(), want, "first read {a}");
        }
    }

    #[test]
    fn events_do_not_depend_on_how_reads_cut_the_stream() {
        let mut s = Vec::new();
        let mut want = Vec::new();
        for i in 0..20u8 {
            let p: Vec<u8> = (0..(i as usize * 37) % 300).map(|j| j as u8 ^ i).collect();
            let half = p.len() / 2;
            s.extend(masked(false, OpCode::Binary, &p[..half]));
            s.extend(masked(true, OpCode::Ping, b"ping"));
            s.extend(masked(true, OpCode::Continuation, &p[half..]));
            want.push((true, p));
        }
        for reads in [
            &[1usize][..],
            &[2, 0],
            &[13, 0, 1],
            &[14, 14, 0, 0],
            &[4096],
        ] {
            assert_eq!(run(&s, reads).unwrap(), want, "reads {reads:?}");
        }
    }

    #[test]
    fn idle_only_between_messages_with_nothing_carried() {
        let mut rx = Inbound::new(1024);
        assert!(rx.is_idle());
        let f = masked(true, OpCode::Text, b"hi");
        let mut buf = Vec::new();
        rx.start(&mut buf);
        buf.extend_from_slice(&f[..1]);
        let mut pos = 0;
        assert_eq!(rx.next(&mut buf, &mut pos), Ok(None));
        assert_eq!((rx.carried(), rx.is_idle()), (1, false));
        rx.start(&mut buf);
        buf.extend_from_slice(&f[1..]);
        pos = 0;
        assert_eq!(
            rx.next(&mut buf, &mut pos),
            Ok(Some(Event::Message { binary: false }))
        );
        assert_eq!(rx.next(&mut buf, &mut pos), Ok(None));
        assert!(rx.is_idle());
    }
}
