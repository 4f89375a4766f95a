//! Streams whose token expires: once a second (the ticker), a stream past its grant's `exp`
//! ends — SSE with one `event: expired`, a WebSocket with close 4001 `token expired` (both
//! written by `park::finish`) — and a `ringcast.v1` client is warned with `{"type":"expired"}`
//! when less than `V1_WARNING_SECS` are left, so it can send a `refresh` in time.
//! Must not: check a token (the routes did, once, when the stream opened).

use std::rc::Rc;

use crate::shard::core::Shard;
use crate::shard::outbox::out::Kill;
use crate::shard::outbox::wire::Format;

/// How long before `exp` a v1 client is told to refresh.
pub const V1_WARNING_SECS: u32 = 30;

/// Ends the streams past their `exp` and warns the v1 clients near it. `now`: seconds since
/// the epoch. Nothing to do unless auth is on.
pub fn sweep(sh: &Shard, now: u64) {
    if sh.node.auth.is_none() {
        return;
    }
    let now = u32::try_from(now).unwrap_or(u32::MAX);
    let mut st = sh.st.borrow_mut();
    let mut warn = Vec::new();
    for (k, o) in st.subs.outs.iter_mut() {
        if o.exp == 0 || o.kill.is_some() {
            continue;
        }
        if now >= o.exp {
            o.kill = Some(Kill::Expired);
            o.wake();
        } else if o.format == Format::WsV1 && !o.warned && o.exp - now <= V1_WARNING_SECS {
            o.warned = true;
            warn.push(k);
        }
    }
    if warn.is_empty() {
        return;
    }
    let policy = sh.policy();
    let mut frame = Vec::new();
    crate::codec::ws::encode_frame(
        &mut frame,
        crate::codec::ws::OpCode::Text,
        b"{\"type\":\"expired\"}",
    );
    let frame: Rc<[u8]> = frame.into();
    for k in warn {
        st.subs.queue_raw(k, frame.clone(), &policy);
    }
    sh.want_write();
}
