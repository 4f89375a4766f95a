//! A WebSocket client connection on top of `net::Conn`: handshake, and draining buffered server
//! frames into whole messages, answering pings.

use std::net::Ipv4Addr;

use crate::addr::Target;
use crate::net::{self, Conn, Fail};
use crate::ws::{self, Rng};

/// Largest reassembled message the tool accepts.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Connects and upgrades; checks the 101 and `Sec-WebSocket-Accept`.
pub async fn connect(
    t: &Target,
    path: &str,
    src: Option<Ipv4Addr>,
    rng: &mut Rng,
) -> Result<Conn, Fail> {
    connect_with(t, path, src, rng, None).await
}

/// [`connect`], asking for `protocol` (e.g. `ringcast.v1`).
pub async fn connect_with(
    t: &Target,
    path: &str,
    src: Option<Ipv4Addr>,
    rng: &mut Rng,
    protocol: Option<&str>,
) -> Result<Conn, Fail> {
    let s = net::connect(t.addr, src)
        .await
        .map_err(|e| net::io_fail("connect", e))?;
    let mut c = Conn::new(s);
    let key = ws::key_from(rng.nonce());
    let mut req = Vec::with_capacity(256);
    ws::encode_handshake_with(&t.host, path, &key, protocol, &mut req);
    c.write_all(&req).await?;
    let h = c.read_head().await?;
    if h.status != 101 {
        return Err(format!("upgrade refused: {}", h.status));
    }
    if h.ws_accept.as_deref() != Some(ws::accept_for(&key).as_str()) {
        return Err("bad Sec-WebSocket-Accept".into());
    }
    Ok(c)
}

/// What the server ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A close frame with this code (1005 if none).
    Code(u16),
}

/// Reassembly state of one connection.
#[derive(Debug, Default)]
pub struct Reader {
    frag: Vec<u8>,
    in_message: bool,
    /// The reason of the close frame, once one came.
    pub close_reason: Vec<u8>,
}

impl Reader {
    /// Consumes every complete frame in `c.buf`: calls `on_msg` with each whole text or binary
    /// message, appends a masked pong to `replies` for each ping. `Ok(Some(_))` on a close frame.
    pub fn drain(
        &mut self,
        c: &mut Conn,
        replies: &mut Vec<u8>,
        rng: &mut Rng,
        mut on_msg: impl FnMut(&[u8]),
    ) -> Result<Option<Closed>, Fail> {
        let mut at = 0;
        let mut closed = None;
        while closed.is_none() {
            let h = match ws::parse_frame_head(&c.buf[at..]) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return Err(format!("bad server frame: {e:?}")),
            };
            let total = h.head_len as u64 + h.len;
            if total > MAX_MESSAGE_BYTES as u64 {
                return Err("frame too large".into());
            }
            if ((c.buf.len() - at) as u64) < total {
                break;
            }
            let payload = &c.buf[at + h.head_len..at + total as usize];
            match h.opcode {
                ws::OP_TEXT | ws::OP_BINARY if !self.in_message => {
                    if h.fin {
                        on_msg(payload);
                    } else {
                        self.frag.clear();
                        self.frag.extend_from_slice(payload);
                        self.in_message = true;
                    }
                }
                ws::OP_CONT if self.in_message => {
                    if self.frag.len() + payload.len() > MAX_MESSAGE_BYTES {
                        return Err("message too large".into());
                    }
                    self.frag.extend_from_slice(payload);
                    if h.fin {
                        on_msg(&self.frag);
                        self.frag.clear();
                        self.in_message = false;
                    }
                }
                ws::OP_PING => {
                    ws::encode_client_frame(ws::OP_PONG, payload, rng.mask_key(), replies)
                }
                ws::OP_PONG => {}
                ws::OP_CLOSE => {
                    let code = match payload {
                        [a, b, ..] => u16::from_be_bytes([*a, *b]),
                        _ => 1005,
                    };
                    self.close_reason = payload.get(2..).unwrap_or_default().to_vec();
                    closed = Some(Closed::Code(code));
                }
                _ => return Err("frame out of sequence".into()),
            }
            at += total as usize;
        }
        c.buf.drain(..at);
        Ok(closed)
    }
}

/// Whether `buf` holds, among its complete unfragmented frames, a text frame containing
/// `needle` (a v1 client waits for its `subscribed` envelope before it counts as up). Consumes
/// nothing.
pub fn has_text_frame_with(buf: &[u8], needle: &[u8]) -> bool {
    let mut at = 0;
    while let Ok(Some(h)) = ws::parse_frame_head(&buf[at..]) {
        let end = at as u64 + h.head_len as u64 + h.len;
        if end > buf.len() as u64 {
            return false;
        }
        let payload = &buf[at + h.head_len..end as usize];
        if h.opcode == ws::OP_TEXT && h.fin && payload.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        at = end as usize;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_text_frame_without_consuming() {
        let mut buf = vec![0x89, 0x00]; // a ping
        buf.extend_from_slice(&[0x81, 0x05]);
        buf.extend_from_slice(b"{\"x\"}");
        assert!(!has_text_frame_with(&buf, b"subscribed"));
        let env = br#"{"type":"subscribed","id":"a:0"}"#;
        buf.extend_from_slice(&[0x81, env.len() as u8]);
        buf.extend_from_slice(env);
        assert!(has_text_frame_with(&buf, b"\"subscribed\""));
        // Cut short: not there yet.
        assert!(!has_text_frame_with(
            &buf[..buf.len() - 1],
            b"\"subscribed\""
        ));
    }
}
