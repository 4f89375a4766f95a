//! Stream chores: the shard-wide sweeps over every open stream, SSE and WebSocket alike.
//!
//! Owns: the heartbeat sweep (a comment on each quiet SSE stream, a ping on each WebSocket),
//! closing WebSockets whose pong is overdue, and closing every stream in stages when the node
//! drains. The ticker and the drain call these; the streams they touch are the outbox's `Out`s.
//! Must not: write to a socket itself (the shard's writer does), or borrow shard state across
//! an await.

use std::rc::Rc;
use std::time::Duration;

use crate::shard::core::Shard;
use crate::shard::outbox::out::Kill;
use crate::shard::outbox::wire::Format;

/// An SSE heartbeat: an empty comment, so proxies and clients see the stream is alive.
const HEARTBEAT: &[u8] = b":\n\n";

/// Queues a heartbeat: a comment on every SSE stream that had nothing written since the last
/// sweep, a ping on every WebSocket (closing those whose last ping went unanswered past
/// `--pong-timeout-secs`).
pub(crate) fn send_heartbeats(sh: &Shard, tick: u64) {
    let mut st = sh.st.borrow_mut();
    let policy = sh.policy();
    let comment: Rc<[u8]> = Rc::from(HEARTBEAT);
    let mut ping = Vec::new();
    crate::codec::ws::encode_frame(&mut ping, crate::codec::ws::OpCode::Ping, b"");
    let ping: Rc<[u8]> = ping.into();
    let pong_timeout = sh.node.cfg.pong_timeout_secs.max(1);
    let mut beats: Vec<(usize, Rc<[u8]>)> = Vec::new();
    for (k, o) in st.subs.outs.iter_mut() {
        let active = std::mem::replace(&mut o.active, false);
        if o.kill.is_some() {
            continue;
        }
        match o.format {
            Format::Sse | Format::SseMulti if !active => beats.push((k, comment.clone())),
            Format::WsRaw | Format::WsV1 => {
                if o.pong_due != 0 && tick >= u64::from(o.pong_due) {
                    o.kill = Some(Kill::PongTimeout);
                    o.wake();
                    continue;
                }
                if o.pong_due == 0 {
                    o.pong_due = u32::try_from(tick + pong_timeout).unwrap_or(u32::MAX);
                }
                beats.push((k, ping.clone()));
            }
            _ => {}
        }
    }
    for (k, b) in beats {
        st.subs.queue_raw(k, b, &policy);
        if let Some(o) = st.subs.outs.get_mut(k) {
            o.active = false;
        }
    }
    sh.want_write();
}

/// Closes WebSockets whose pong is overdue (checked every second, between heartbeats).
pub(crate) fn close_unponged(sh: &Shard, tick: u64) {
    let mut st = sh.st.borrow_mut();
    for (_, o) in st.subs.outs.iter_mut() {
        if o.pong_due != 0 && tick >= u64::from(o.pong_due) && o.kill.is_none() {
            o.kill = Some(Kill::PongTimeout);
            o.wake();
        }
    }
}

/// Closes every stream in ten stages spread over `span`, so clients do not all reconnect in
/// the same millisecond.
pub(crate) async fn close_in_stages(sh: &Rc<Shard>, span: Duration) {
    const STAGES: usize = 10;
    for stage in 0..STAGES {
        let keys: Vec<usize> = sh
            .st
            .borrow()
            .subs
            .outs
            .iter()
            .filter(|(_, o)| o.kill.is_none())
            .map(|(k, _)| k)
            .collect();
        if keys.is_empty() {
            return;
        }
        let left = STAGES - stage;
        let n = keys.len().div_ceil(left);
        {
            let mut st = sh.st.borrow_mut();
            for &k in keys.iter().take(n) {
                if let Some(o) = st.subs.outs.get_mut(k) {
                    if o.kill.is_none() {
                        o.kill = Some(Kill::Shutdown);
                    }
                    o.wake();
                }
            }
        }
        monoio::time::sleep(span / STAGES as u32).await;
    }
}
