//! The bridge's pub/sub connection's own commands: SUBSCRIBE to the channels of the topics
//! this node has subscribers for, UNSUBSCRIBE from those it freed, and a PING every second.
//!
//! Owns: the set of channels subscribed on the current connection (`have`). The set the node
//! wants (`Ctx::want`) outlives connections: a new connection subscribes to all of it before
//! the bridge says it is connected, so no home resyncs before its pushes flow again.
//! Must not: answer a home `Cmd::Live` before Redis confirmed its SUBSCRIBE.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::PubSubSink;
use redis::Value;
use tokio::sync::{mpsc, oneshot};

use super::ctx::{deliver, Ctx};
use super::Keys;
use crate::fanout::Cmd;
use crate::warn;

/// How often the pub/sub connection is PINGed: a connection that stopped answering (a
/// partition, a Redis that sleeps) is made again, and the homes resync, instead of waiting for
/// TCP to notice.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// Most channels in one SUBSCRIBE or UNSUBSCRIBE.
const CHUNK: usize = 1000;

/// What the bridge's loop tells this task.
pub(super) enum Interest {
    /// A subscription opened on the node; answer `Cmd::Live` to shard `home` once subscribed.
    On(Arc<str>, u16),
    /// The topic's home freed it.
    Off(Arc<str>),
}

/// Subscribes to every wanted channel, says `ready`, then follows interest changes in batches
/// and PINGs; returns (marking the connection broken) when Redis does not answer within
/// `timeout` (at least a second).
pub(super) async fn run(
    ctx: Arc<Ctx>,
    mut sink: PubSubSink,
    mut rx: mpsc::UnboundedReceiver<Interest>,
    ready: oneshot::Sender<()>,
    timeout: Duration,
) {
    let timeout = timeout.max(Duration::from_secs(1));
    let mut have: HashSet<Arc<str>> = HashSet::new();
    let wanted: Vec<Arc<str>> = ctx.wanted();
    for chunk in wanted.chunks(CHUNK) {
        if !subscribe(&ctx, &mut sink, chunk, timeout).await {
            return;
        }
        have.extend(chunk.iter().cloned());
    }
    let _ = ready.send(());
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.tick().await;
    loop {
        tokio::select! {
            first = rx.recv() => {
                let Some(first) = first else { return };
                // The last word on each topic wins.
                let mut last: HashMap<Arc<str>, Option<u16>> = HashMap::new();
                let mut next = Some(first);
                while let Some(i) = next.take() {
                    match i {
                        Interest::On(t, home) => last.insert(t, Some(home)),
                        Interest::Off(t) => last.insert(t, None),
                    };
                    if last.len() < CHUNK {
                        next = rx.try_recv().ok();
                    }
                }
                let (mut sub, mut unsub, mut live) = (Vec::new(), Vec::new(), Vec::new());
                for (t, home) in last {
                    match home {
                        Some(home) => {
                            if !have.contains(&t) {
                                sub.push(t.clone());
                            }
                            live.push((t, home));
                        }
                        None if have.contains(&t) => unsub.push(t),
                        None => {}
                    }
                }
                if !sub.is_empty() {
                    if !subscribe(&ctx, &mut sink, &sub, timeout).await {
                        return;
                    }
                    have.extend(sub);
                }
                for (t, home) in live {
                    deliver(&ctx.node, home as usize, Cmd::Live(t)).await;
                }
                if !unsub.is_empty() {
                    let names: Vec<String> = unsub.iter().map(|t| channel(&ctx, t)).collect();
                    if !answered(&ctx, timeout, sink.unsubscribe(names)).await {
                        return;
                    }
                    for t in unsub {
                        have.remove(&t);
                    }
                }
            }
            _ = probe.tick() => {
                if !answered(&ctx, timeout, sink.ping::<Value>()).await {
                    warn!("redis: the pub/sub connection did not answer a PING within {timeout:?}");
                    return;
                }
            }
        }
    }
}

fn channel(ctx: &Ctx, topic: &str) -> String {
    Keys::new(&ctx.prefix, topic).channel
}

async fn subscribe(ctx: &Ctx, sink: &mut PubSubSink, topics: &[Arc<str>], t: Duration) -> bool {
    let names: Vec<String> = topics.iter().map(|x| channel(ctx, x)).collect();
    answered(ctx, t, sink.subscribe(names)).await
}

/// Awaits a command on the pub/sub connection; false (and the connection marked broken) when
/// it fails or takes longer than `t`.
async fn answered<T>(
    ctx: &Ctx,
    t: Duration,
    f: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> bool {
    match tokio::time::timeout(t, f).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) => {
            warn!("redis: pub/sub command failed: {e}");
            ctx.broken.store(true, Ordering::Relaxed);
            false
        }
        Err(_) => {
            ctx.broken.store(true, Ordering::Relaxed);
            false
        }
    }
}
