//! The client-to-server frame stream decoder (RFC 6455 §5.1-§5.6, §6.2 receiving data,
//! §5.4 fragmentation, §5.5 control frames interleaved with fragments).
//!
//! Owns one connection's receive state: the frame in progress, the message being assembled
//! (bounded by `max_message_bytes`), the UTF-8 carry and the last control payload. Pure: bytes
//! in, `(consumed, event)` out. It must not hold a read buffer: only an incomplete *header*
//! (at most 14 bytes) is left to the caller; payload bytes are consumed as they arrive. Idle, it
//! holds no heap memory beyond what the last message left (see [`Decoder::release_buffers`]).

use super::close::parse_close_payload;
use super::error::WsError;
use super::frame::{parse_frame_header, FrameHeader, OpCode};
use super::mask::unmask;
use super::utf8::Utf8Validator;

/// Message buffers above this capacity are freed when the message is cleared, so a socket that
/// once received a big message does not keep the memory while idle.
const MAX_RETAINED_MESSAGE_CAPACITY_BYTES: usize = 64 * 1024;

/// What one [`Decoder::decode`] call produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete data message is in [`Decoder::message`]; call [`Decoder::clear_message`]
    /// after using it (the next `decode` call clears it anyway).
    Message {
        /// Binary (opcode 0x2) rather than text (0x1, already validated as UTF-8).
        binary: bool,
    },
    /// A ping; its payload (the pong's payload, §5.5.3) is in [`Decoder::control_payload`].
    Ping,
    /// A pong; payload in [`Decoder::control_payload`].
    Pong,
    /// A valid close frame; the reason (UTF-8) is `control_payload()[2..]`. The decoder then
    /// discards everything after it (§5.5.1: nothing may follow a close).
    Close {
        /// The status code, or `None` for an empty close payload.
        code: Option<u16>,
    },
}

/// Where the decoder stands in the frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between frames: the next byte starts a header.
    Header,
    /// Inside a frame's payload.
    Payload,
    /// A close frame was delivered; input is discarded.
    Closed,
    /// A violation was reported; every call reports it again.
    Failed(WsError),
}

/// Decodes the masked frames a client sends into messages and control events.
#[derive(Debug)]
pub struct Decoder {
    /// The data message being assembled (or just completed, if `message_ready`).
    message: Vec<u8>,
    /// The control frame payload being assembled or last delivered (at most 125 bytes).
    control: Vec<u8>,
    /// Bound on the bytes of one message, all fragments together.
    max_message_bytes: usize,
    /// Payload bytes of the current frame not yet consumed.
    remaining: u64,
    /// The current frame's masking key, rotated so `mask[0]` applies to the next payload byte.
    mask: [u8; 4],
    /// UTF-8 carry of the text message in progress.
    utf8: Utf8Validator,
    state: State,
    /// The current frame's opcode and FIN.
    opcode: OpCode,
    fin: bool,
    /// `Some(binary)` while a data message has started and its final fragment has not ended.
    in_message: Option<bool>,
    /// `message` holds a delivered message the caller has not cleared yet.
    message_ready: bool,
}

impl Decoder {
    /// A decoder bounding each message (all its fragments together) to `max_message_bytes`.
    /// Allocates nothing.
    pub const fn new(max_message_bytes: usize) -> Self {
        Decoder {
            message: Vec::new(),
            control: Vec::new(),
            max_message_bytes,
            remaining: 0,
            mask: [0; 4],
            utf8: Utf8Validator::new(),
            state: State::Header,
            opcode: OpCode::Continuation,
            fin: false,
            in_message: None,
            message_ready: false,
        }
    }

    /// Feeds bytes read from the socket; `input` is unmasked in place as its payload is consumed.
    ///
    /// Returns how many bytes were consumed and at most one event; call again with the rest until
    /// a call consumes 0 bytes and returns no event. Unconsumed bytes are only ever an incomplete
    /// frame header (at most 14), which the caller keeps and puts in front of the next read.
    /// Partial payload is consumed, unmasked and buffered; control payloads are buffered even when
    /// split. Text is validated per fragment, failing as soon as invalid UTF-8 shows.
    ///
    /// After an error, every call returns the same error; after [`Event::Close`], every call
    /// consumes all its input and returns no event.
    pub fn decode(&mut self, input: &mut [u8]) -> Result<(usize, Option<Event>), WsError> {
        match self.state {
            State::Failed(e) => return Err(e),
            State::Closed => return Ok((input.len(), None)),
            State::Header | State::Payload => {}
        }
        if self.message_ready {
            self.clear_message();
        }
        match self.decode_inner(input) {
            Ok(done) => Ok(done),
            Err(e) => {
                self.state = State::Failed(e);
                Err(e)
            }
        }
    }

    fn decode_inner(&mut self, input: &mut [u8]) -> Result<(usize, Option<Event>), WsError> {
        let mut pos = 0;
        loop {
            if self.state == State::Header {
                let Some(header) = parse_frame_header(&input[pos..])? else {
                    return Ok((pos, None));
                };
                self.begin_frame(&header)?;
                pos += header.header_len;
            }
            let rest = &mut input[pos..];
            let take = usize::try_from(self.remaining).map_or(rest.len(), |r| r.min(rest.len()));
            let chunk = &mut rest[..take];
            self.consume_payload(chunk)?;
            pos += take;
            if self.remaining > 0 {
                // Input exhausted inside the payload.
                return Ok((pos, None));
            }
            self.state = State::Header;
            if let Some(event) = self.end_frame()? {
                return Ok((pos, Some(event)));
            }
        }
    }

    /// Checks a header against the stream state (mask, fragmentation, size) and enters it.
    fn begin_frame(&mut self, h: &FrameHeader) -> Result<(), WsError> {
        let mask = h.mask.ok_or(WsError::UnmaskedClientFrame)?;
        match h.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => self.control.clear(),
            OpCode::Continuation => {
                if self.in_message.is_none() {
                    return Err(WsError::UnexpectedContinuation);
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.in_message.is_some() {
                    return Err(WsError::ExpectedContinuation);
                }
                self.in_message = Some(h.opcode == OpCode::Binary);
                self.utf8.reset();
            }
        }
        if !h.opcode.is_control() {
            // Reject before buffering a byte of it. `message.len()` is at most the bound.
            let room = self.max_message_bytes.saturating_sub(self.message.len());
            if h.payload_len > room as u64 {
                return Err(WsError::MessageTooBig);
            }
        }
        self.state = State::Payload;
        self.opcode = h.opcode;
        self.fin = h.fin;
        self.mask = mask;
        self.remaining = h.payload_len;
        Ok(())
    }

    /// Unmasks and stores the next piece of the current frame's payload.
    fn consume_payload(&mut self, chunk: &mut [u8]) -> Result<(), WsError> {
        if chunk.is_empty() {
            return Ok(());
        }
        unmask(chunk, self.mask, 0);
        self.mask.rotate_left(chunk.len() & 3);
        self.remaining -= chunk.len() as u64;
        if self.opcode.is_control() {
            self.control.extend_from_slice(chunk);
        } else {
            if self.in_message == Some(false) {
                self.utf8.feed(chunk)?;
            }
            self.message.extend_from_slice(chunk);
        }
        Ok(())
    }

    /// The current frame's payload is complete: the event it finishes, if any.
    fn end_frame(&mut self) -> Result<Option<Event>, WsError> {
        Ok(match self.opcode {
            OpCode::Ping => Some(Event::Ping),
            OpCode::Pong => Some(Event::Pong),
            OpCode::Close => {
                let code = parse_close_payload(&self.control)?;
                self.state = State::Closed;
                Some(Event::Close { code })
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                if !self.fin {
                    return Ok(None);
                }
                let binary = self.in_message.take() == Some(true);
                if !binary {
                    self.utf8.finish()?;
                }
                self.message_ready = true;
                Some(Event::Message { binary })
            }
        })
    }

    /// The message announced by [`Event::Message`] (or, before that, the part received so far).
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// Takes the delivered message out of the decoder (which starts the next one in a new
    /// buffer): for a caller that keeps the payload, one copy fewer than `message()`.
    pub fn take_message(&mut self) -> Vec<u8> {
        self.message_ready = false;
        std::mem::take(&mut self.message)
    }

    /// Drops the delivered message, freeing the buffer if it grew past 64 KiB.
    pub fn clear_message(&mut self) {
        self.message_ready = false;
        if self.message.capacity() > MAX_RETAINED_MESSAGE_CAPACITY_BYTES {
            self.message = Vec::new();
        } else {
            self.message.clear();
        }
    }

    /// The payload of the last ping, pong or close (at most 125 bytes).
    pub fn control_payload(&self) -> &[u8] {
        &self.control
    }

    /// No message or frame is in progress: the next byte starts a new message or control frame.
    /// (An incomplete header left unconsumed is the caller's to keep.)
    pub fn is_idle(&self) -> bool {
        self.state == State::Header && self.in_message.is_none()
    }

    /// Whether a close frame was delivered (input is now discarded).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Heap bytes held by this decoder (buffer capacities), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.message.capacity() + self.control.capacity()
    }

    /// Frees both buffers if [idle](Self::is_idle), invalidating `message()` and
    /// `control_payload()`; for a shard that parks many quiet sockets.
    pub fn release_buffers(&mut self) {
        if self.is_idle() {
            self.message = Vec::new();
            self.control = Vec::new();
            self.message_ready = false;
        }
    }
}
