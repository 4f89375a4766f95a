//! The bridge thread: the one place a node talks to Redis (`--redis`).
//!
//! Owns: a current-thread tokio runtime on its own thread, one multiplexed connection for the
//! scripts and one pub/sub connection, reconnecting with a bounded backoff. It takes
//! `BridgeCmd`s from its lock-free inbox (`fanout::BridgeInbox`) and answers shards only
//! through their inboxes (`Bus`): appends become `Cmd::Reply`, pushed messages `Cmd::Pushed` to
//! the topic's home, fetched gaps `Cmd::Fetched`.
//! Must not: block a shard (a shard only ever pushes to a bounded queue), or hold shard state.
//! A full shard inbox makes the bridge wait, never drop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Value};

use super::channels::{self, Interest};
use super::commit::{self, Commits, Flight};
use super::ctx::{deliver, Ctx};
use super::scripts;
use super::{parse_push, Keys};
use crate::fanout::{home_of, Asked, BridgeCmd, Cmd, Fetched, Msg, MsgRef, Window};
use crate::metrics::M;
use crate::node::Node;
use crate::{info, warn};

/// First wait before reconnecting; doubled after each failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How often an idle bridge looks at the node's shutdown flag.
const SHUTDOWN_POLL: Duration = Duration::from_millis(200);
/// Append calls one topic may have in flight (`commit::Commits`): more publishes wait and go
/// together in the next call. One: with 4, wrk's 64 publishers got 19–25k/s instead of 29–39k/s
/// on this machine, Redis spending 5.3–5.9 s of CPU instead of 4.4–4.9 s on smaller calls.
const MAX_IN_FLIGHT_PER_TOPIC: u8 = 1;
/// Most entries one gap fetch asks for.
const MAX_FETCH_ENTRIES: usize = 1000;

/// Starts the bridge thread (when `--redis` is set).
pub fn spawn(node: Arc<Node>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("redis-bridge".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => rt.block_on(run(node)),
                Err(e) => crate::error!("redis bridge: cannot start its runtime: {e}"),
            }
        })
}

async fn run(node: Arc<Node>) {
    let url = node.cfg.redis.clone().unwrap_or_default();
    let client = match Client::open(url.as_str()) {
        Ok(c) => c,
        Err(e) => {
            crate::error!("redis bridge: bad --redis URL: {e}");
            return;
        }
    };
    let ctx = Arc::new(Ctx::new(node));
    let timeout = Duration::from_millis(ctx.node.cfg.publish_timeout_ms.max(1));
    let mut backoff = MIN_BACKOFF;
    let mut connected_before = false;
    let m = &ctx.node.metrics.shards[0];
    while !ctx.node.shutting_down.load(Ordering::Relaxed) {
        match connect(&client, timeout).await {
            Ok((con, run_id, pubsub)) => {
                let (sink, pushes) = pubsub.split();
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
                let task = channels::run(ctx.clone(), sink, rx, ready_tx, timeout);
                let _channels = AbortOnDrop(tokio::spawn(task));
                // Every wanted channel subscribed, confirmed: only now can each home ask
                // what it missed and be sure that what comes after arrives as pushes.
                if ready_rx.await.is_ok() {
                    info!("redis: connected to {}", super::redact(&url));
                    m.set(M::RedisConnected, 1);
                    if connected_before {
                        m.inc(M::RedisReconnects);
                    }
                    connected_before = true;
                    backoff = MIN_BACKOFF;
                    for shard in 0..ctx.node.bus.shards() {
                        deliver(&ctx.node, shard, Cmd::Resync).await;
                    }
                    serve(&ctx, con, &run_id, pushes, tx).await;
                    m.set(M::RedisConnected, 0);
                    warn!("redis: connection lost; reconnecting");
                } else {
                    warn!("redis: could not subscribe; reconnecting");
                }
            }
            Err(e) => warn!("redis: cannot connect ({e}); retrying in {backoff:?}"),
        }
        ctx.broken.store(false, Ordering::Relaxed);
        refuse_while_away(&ctx).await;
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// The script connection, the `run_id` of the Redis process behind it, and the pub/sub
/// connection. The `run_id` is asked on the script connection itself: a connection never
/// outlives the process it reached, and this one is never made again behind the bridge's back
/// (a `MultiplexedConnection` does not reconnect), so every append sent on it goes to that
/// process.
async fn connect(
    client: &Client,
    timeout: Duration,
) -> redis::RedisResult<(MultiplexedConnection, Arc<str>, redis::aio::PubSub)> {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let info: String = scripts::server_info().query_async(&mut con).await?;
    let Some(run_id) = scripts::run_id(&info) else {
        return Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "no run_id in INFO server",
        )));
    };
    let run_id: Arc<str> = run_id.into();
    let pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
        })??;
    Ok((con, run_id, pubsub))
}

/// While Redis is away: appends whose publisher has already answered 503 are dropped unsent,
/// and every fetch is answered "no answer" through its home (a client's window becomes a 503,
/// a gap is asked again), so nothing waits on a Redis that is gone. A home whose inbox is full
/// is waited for: an unanswered gap fetch would leave its topic waiting forever.
async fn refuse_while_away(ctx: &Ctx) {
    let node = &*ctx.node;
    let Some(inbox) = &node.bridge else { return };
    let now = Instant::now();
    let mut keep = Vec::new();
    while let Some(cmd) = inbox.pop() {
        match cmd {
            BridgeCmd::Append { until, .. } if until <= now => {}
            // Subscribed (or not) on the next connection.
            c @ (BridgeCmd::Subscribe { .. } | BridgeCmd::Unsubscribe { .. }) => {
                ctx.note_interest(&c);
            }
            BridgeCmd::Fetch {
                topic, home, asked, ..
            } => {
                let cmd = Cmd::Fetched(Box::new(Fetched {
                    topic,
                    window: None,
                    asked,
                }));
                deliver(node, home as usize, cmd).await;
            }
            append => keep.push(append),
        }
    }
    for cmd in keep {
        // Shards may have filled the inbox meanwhile. An append that finds no room is never
        // sent: its publisher's deadline answers 503 "refused" (it was not taken), which is
        // true.
        let _ = inbox.send(cmd);
    }
}

/// Serves one connection until it breaks or the node shuts down.
async fn serve(
    ctx: &Arc<Ctx>,
    con: MultiplexedConnection,
    run_id: &Arc<str>,
    mut pushes: redis::aio::PubSubStream,
    interest: tokio::sync::mpsc::UnboundedSender<Interest>,
) {
    let Some(inbox) = &ctx.node.bridge else {
        return;
    };
    let mut commits = Commits::new(MAX_IN_FLIGHT_PER_TOPIC);
    let mut flights: FuturesUnordered<Flight> = FuturesUnordered::new();
    let mut lp = Loop {
        con: &con,
        run_id,
        pushes: &mut pushes,
        commits: &mut commits,
        flights: &mut flights,
        interest: &interest,
    };
    serve_until_broken(ctx, inbox, &mut lp).await;
    drop(flights);
    for (to, reply) in commits.abandon() {
        let reply = Box::new(reply);
        deliver(&ctx.node, to.shard as usize, Cmd::Reply { to, reply }).await;
    }
}

/// What the bridge's loop works with on one connection.
struct Loop<'a> {
    con: &'a MultiplexedConnection,
    /// The Redis process behind `con` (`append.lua`'s ARGV[6]).
    run_id: &'a Arc<str>,
    pushes: &'a mut redis::aio::PubSubStream,
    commits: &'a mut Commits,
    flights: &'a mut FuturesUnordered<Flight>,
    interest: &'a tokio::sync::mpsc::UnboundedSender<Interest>,
}

/// The bridge's loop on one connection: commands from the shards, script calls landing,
/// pushes from Redis.
async fn serve_until_broken(ctx: &Arc<Ctx>, inbox: &crate::fanout::BridgeInbox, lp: &mut Loop<'_>) {
    let Loop {
        con,
        run_id,
        pushes,
        commits,
        flights,
        interest,
    } = lp;
    let con: &MultiplexedConnection = con;
    // One timer for the connection, not one per event: the loop wakes at least this often to
    // see the broken and shutdown flags.
    let mut tick = tokio::time::interval(SHUTDOWN_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if ctx.broken.load(Ordering::Relaxed) {
            return;
        }
        let next_cmd = std::future::poll_fn(|cx| {
            if let Some(c) = inbox.pop() {
                return Poll::Ready(c);
            }
            inbox.register(cx.waker());
            match inbox.pop() {
                Some(c) => Poll::Ready(c),
                None => Poll::Pending,
            }
        });
        tokio::select! {
            cmd = next_cmd => match cmd {
                BridgeCmd::Append { groups, reply, until, taken } => {
                    // Taken first, then the deadline: a publisher that timed out and found it
                    // unset can be sure the check below drops it.
                    taken.store(true, Ordering::SeqCst);
                    if until <= Instant::now() {
                        continue;
                    }
                    let calls = commits.take(groups, reply, until);
                    flights.extend(calls.into_iter().map(|c| commit::flight(ctx, con, run_id, c)));
                }
                c @ (BridgeCmd::Subscribe { .. } | BridgeCmd::Unsubscribe { .. }) => {
                    ctx.note_interest(&c);
                    let i = match c {
                        BridgeCmd::Subscribe { topic, home } => Interest::On(topic, home),
                        BridgeCmd::Unsubscribe { topic } => Interest::Off(topic),
                        _ => continue,
                    };
                    // The channel task is gone only when the connection is: the next one
                    // subscribes to everything wanted.
                    let _ = interest.send(i);
                }
                BridgeCmd::Fetch { topic, since, home, asked } => {
                    let (ctx, con, run_id) = (ctx.clone(), con.clone(), Arc::clone(run_id));
                    tokio::spawn(fetch(ctx, con, run_id, topic, since, home, asked));
                }
            },
            Some(landed) = flights.next(), if !flights.is_empty() => {
                let (answers, next) = commits.landed(landed, Instant::now());
                flights.extend(next.map(|c| commit::flight(ctx, con, run_id, c)));
                for (to, reply) in answers {
                    let reply = Box::new(reply);
                    deliver(&ctx.node, to.shard as usize, Cmd::Reply { to, reply }).await;
                }
            }
            m = pushes.next() => match m {
                Some(m) => pushed(ctx, m.get_channel_name(), m.get_payload_bytes()).await,
                None => return,
            },
            _ = tick.tick() => {
                if ctx.node.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
            }
        }
    }
}

/// Ends a task when its connection's `serve` returns.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn msg_of(topic: &Arc<str>, e: scripts::Entry, epoch: u64) -> MsgRef {
    Arc::new(Msg {
        topic: topic.clone(),
        pos: crate::codec::position::Position::new(epoch, e.offset),
        event: e.event,
        data: e.data,
        binary: e.binary,
        at: Instant::now(),
    })
}

async fn fetch(
    ctx: Arc<Ctx>,
    mut con: MultiplexedConnection,
    run_id: Arc<str>,
    topic: Arc<str>,
    since: crate::codec::position::Position,
    home: u16,
    asked: Option<Asked>,
) {
    let keys = Keys::new(&ctx.prefix, &topic);
    let limit = asked.map_or(MAX_FETCH_ENTRIES, |a| a.limit);
    // `0:0` from a home (not a client): it knows nothing of the topic and starts following
    // it, from everything Redis retains.
    let (s, l, fresh) = (&ctx.scripts, &ctx.limits, ctx.fresh_epoch());
    let inv = if asked.is_none() && since == crate::codec::position::Position::new(0, 0) {
        scripts::retained(s, &keys, l, limit, &run_id, fresh)
    } else {
        scripts::window(s, &keys, l, Some(since), limit, &run_id, fresh)
    };
    let r: redis::RedisResult<Value> = inv.invoke_async(&mut con).await;
    let w = match r.map(|v| scripts::parse_window(&v)) {
        Ok(Ok(w)) => w,
        failed => {
            let why = match failed {
                Err(e) => {
                    ctx.check(&e);
                    e.to_string()
                }
                Ok(Err(e)) => e.to_string(),
                Ok(Ok(_)) => String::new(),
            };
            warn!("redis: window of {topic} after {since} failed: {why}");
            if asked.is_none() {
                // A gap is asked again by the home's next push: not at once, Redis is away.
                tokio::time::sleep(MIN_BACKOFF).await;
            }
            fetched(&ctx, topic, home, None, asked).await;
            return;
        }
    };
    let epoch = w.current.epoch;
    let window = Window {
        reset: w.reset,
        msgs: w
            .entries
            .into_iter()
            .map(|e| msg_of(&topic, e, epoch))
            .collect(),
        current: w.current,
    };
    fetched(&ctx, topic, home, Some(window), asked).await;
}

async fn fetched(
    ctx: &Ctx,
    topic: Arc<str>,
    home: u16,
    window: Option<Window>,
    asked: Option<Asked>,
) {
    let cmd = Cmd::Fetched(Box::new(Fetched {
        topic,
        window,
        asked,
    }));
    deliver(&ctx.node, home as usize, cmd).await;
}

/// A message Redis pushed: to its topic's home shard, as is.
async fn pushed(ctx: &Ctx, channel: &str, payload: &[u8]) {
    crate::debug!("redis: push on {channel} ({} bytes)", payload.len());
    let Some(topic) = Keys::topic_of_channel(&ctx.prefix, channel) else {
        return;
    };
    let drop_every = ctx.node.cfg.debug_drop_pushes;
    if drop_every > 0 && ctx.count_push().is_multiple_of(drop_every) {
        crate::debug!("redis: push on {channel} dropped (--debug-drop-pushes)");
        ctx.node.metrics.shards[0].inc(M::RedisPushesDropped);
        return;
    }
    let Some(p) = parse_push(payload) else {
        warn!("redis: unreadable push on {channel}; the home fetches the gap");
        return;
    };
    let msg = Arc::new(Msg {
        topic: topic.into(),
        pos: p.pos,
        event: (!p.event.is_empty()).then(|| p.event.into()),
        data: p.data.into(),
        binary: p.binary,
        at: Instant::now(),
    });
    let home = home_of(topic.as_bytes(), ctx.node.bus.shards());
    deliver(&ctx.node, home, Cmd::Pushed(msg)).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::{refuse_while_away, Ctx};
    use crate::codec::position::Position;
    use crate::fanout::{BridgeCmd, Cmd};
    use crate::node::Node;

    /// While Redis is away a gap fetch is answered "no answer" through its home even when the
    /// home's inbox is full at first: the bridge waits for room rather than drop or requeue
    /// it (a requeue can find the inbox refilled by the shards, and a gap fetch never answered
    /// leaves its topic waiting forever).
    #[test]
    fn a_fetch_refused_while_away_reaches_a_full_home() {
        let argv = [
            "ringcast",
            "--shards",
            "1",
            "--redis",
            "redis://127.0.0.1:1",
            "--inbox-capacity",
            "1",
        ];
        let cfg = crate::config::Config::from_args(argv).unwrap();
        let node = Arc::new(Node::new(cfg, None));
        let ctx = Arc::new(Ctx::new(node.clone()));
        assert!(
            node.bus.send(0, Cmd::Resync).is_ok(),
            "the home's inbox is full"
        );
        let fetch = BridgeCmd::Fetch {
            topic: "t".into(),
            since: Position::new(9, 1),
            home: 0,
            asked: None,
        };
        assert!(node.bridge.as_ref().unwrap().send(fetch).is_ok());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let task = tokio::spawn(async move { refuse_while_away(&ctx).await });
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(!task.is_finished(), "waits for room in the home's inbox");
            assert!(matches!(node.bus.pop(0), Some(Cmd::Resync)));
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("done once there is room")
                .unwrap();
        });
        match node.bus.pop(0) {
            Some(Cmd::Fetched(f)) => assert!(f.window.is_none() && f.asked.is_none()),
            other => panic!("the home got {other:?}"),
        }
        assert!(node.bridge.as_ref().unwrap().pop().is_none());
    }
}
