//! The bytes waiting for a shard's writer, and the write itself: one chain per streaming
//! connection, in one arena of 8-byte links that name shared, counted buffers, and the queue of
//! connections that have one; `write_chain` writes a whole chain in one `send` or `writev`.
//! Who writes when (slices, cycles) is `subs.rs`'s and the inbox task's.
//! Must not: know about topics or subscriptions (bytes in, bytes out).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::rc::Rc;

use slab::Slab;

use crate::metrics::{ShardMetrics, M};
use crate::shard::outbox::out::{Kill, Out, NIL};
use crate::shard::topics::key32;

/// Bytes waiting for the shard's writer: one chain per connection, linked through one arena
/// of 8-byte links (so queuing a delivery allocates nothing once the arena has grown, and a
/// connection with nothing waiting costs two `u32`s in its `Out`), each naming a shared buffer
/// counted once per link; and the connections that have a chain, oldest first.
#[derive(Default)]
pub struct Chains {
    pub(super) links: Slab<Link>,
    /// The buffers links name: a message's encoding (one per format, shared by every
    /// subscriber) or a connection's own bytes, with how many links name it.
    pub(super) bufs: Slab<Buf>,
    /// Out keys, each pushed when its chain starts. A key whose `Out` went (or whose chain was
    /// written out of turn, `flush_out`) stays until popped, and is skipped then.
    pub(super) dirty: VecDeque<u32>,
    /// Keys of `dirty` the writer's current cycle has still to take (`start_cycle`).
    pub(super) cycle_left: usize,
}

pub(super) struct Link {
    buf: u32,
    next: u32,
}

pub(super) struct Buf {
    pub(super) bytes: Rc<[u8]>,
    pub(super) refs: u32,
}

impl Chains {
    /// Registers a buffer no link names yet (`push_buf` names it).
    pub(crate) fn new_buf(&mut self, bytes: Rc<[u8]>) -> u32 {
        key32(self.bufs.insert(Buf { bytes, refs: 0 }))
    }

    pub(crate) fn len_of(&self, buf: u32) -> usize {
        self.bufs[buf as usize].bytes.len()
    }

    /// Appends `bytes` to connection `ok`'s chain; the caller counts them in `Out::queued`.
    pub(crate) fn push(&mut self, ok: usize, out: &mut Out, bytes: Rc<[u8]>) {
        let b = self.new_buf(bytes);
        self.push_buf(ok, out, b);
    }

    /// Appends registered buffer `buf` to connection `ok`'s chain.
    pub(crate) fn push_buf(&mut self, ok: usize, out: &mut Out, buf: u32) {
        self.bufs[buf as usize].refs += 1;
        let l = key32(self.links.insert(Link { buf, next: NIL }));
        match out.tail {
            NIL => out.head = l,
            t => self.links[t as usize].next = l,
        }
        out.tail = l;
        if !out.dirty {
            out.dirty = true;
            self.dirty.push_back(key32(ok));
        }
    }

    /// Moves `out`'s chain, in order, into `into`.
    pub(crate) fn take(&mut self, out: &mut Out, into: &mut Vec<Rc<[u8]>>) {
        let mut k = out.head;
        while k != NIL {
            let l = self.links.remove(k as usize);
            let b = &mut self.bufs[l.buf as usize];
            b.refs -= 1;
            if b.refs == 0 {
                into.push(self.bufs.remove(l.buf as usize).bytes);
            } else {
                into.push(b.bytes.clone());
            }
            k = l.next;
        }
        out.head = NIL;
        out.tail = NIL;
        out.dirty = false;
    }

    /// Deliveries (and notices) on this shard waiting for the writer.
    pub fn pending(&self) -> usize {
        self.links.len()
    }

    /// Whether the writer has connections left to write.
    pub fn has_work(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// Most messages one `writev` takes here: the slices live on the stack, and a longer chain
/// (rare: it needs more messages in one wait than this) takes one more call per chunk.
const IOV_CHUNK: usize = 64;

/// Writes one connection's chain, in order; what the socket refuses becomes its backlog.
pub(super) fn write_chain(out: &mut Out, chain: &[Rc<[u8]>], metrics: &ShardMetrics) {
    let total: usize = chain.iter().map(|b| b.len()).sum();
    if !out.backlog.is_empty() {
        // Already waiting for writability: keep order by appending.
        for b in chain {
            out.backlog.extend_from_slice(b);
        }
        metrics.add(M::BufferedBytes, total as i64);
        out.wake();
        return;
    }
    let mut written = 0;
    for part in chain.chunks(IOV_CHUNK) {
        let len: usize = part.iter().map(|b| b.len()).sum();
        metrics.inc(M::StreamWrites);
        let r = if let [one] = part {
            crate::shard::io::write_some(out.fd, one)
        } else {
            let mut iov = [IoSlice::new(&[]); IOV_CHUNK];
            for (slot, b) in iov.iter_mut().zip(part) {
                *slot = IoSlice::new(b);
            }
            crate::shard::io::writev_some(out.fd, &iov[..part.len()])
        };
        match r {
            Ok(n) => {
                written += n;
                if n < len {
                    break;
                }
            }
            Err(_) => {
                // The peer is gone; its task notices on its next poll.
                out.wrote(total);
                out.kill.get_or_insert(Kill::Shutdown);
                out.wake();
                return;
            }
        }
    }
    out.wrote(written);
    if written < total {
        // Keep the unwritten tail, in order.
        let mut skip = written;
        for b in chain {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            out.backlog.extend_from_slice(&b[skip..]);
            skip = 0;
        }
        let rest = total - written;
        out.allowance = u32::try_from(rest).unwrap_or(u32::MAX);
        metrics.add(M::BufferedBytes, rest as i64);
        out.wake();
    } else if out.kill.is_some() {
        // Its last queued bytes (a reset close frame) are out: the connection may end now.
        out.wake();
    }
}
