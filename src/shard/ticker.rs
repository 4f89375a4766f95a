//! The once-a-second work of a shard: the `Date` value, idle topics, heartbeats and pong checks
//! on quiet streams, (shard 0) the per-second samples of `/stats`, and with `--redis` the check
//! of topics gone quiet (`core::backplane`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::debug;
use crate::metrics::M;
use crate::shard::core::Shard;
use crate::shard::stream::chores;
use crate::shard::stream::expiry;

/// Once a second: refresh the Date, free idle topics, send heartbeats on quiet streams.
pub(crate) async fn ticker_task(sh: Rc<Shard>) {
    let mut tick: u64 = 0;
    loop {
        refresh_date(&sh);
        monoio::time::sleep(Duration::from_secs(1)).await;
        tick += 1;
        // One writer: shard 0 sums the counters into /stats' per-second samples.
        if sh.id == 0 {
            sh.node.samples.record(&sh.node.metrics, unix_ms());
        }
        sweep_topics(&sh);
        if sh.node.bridge.is_some() {
            sh.check_quiet(Instant::now());
            sh.retry_interest();
            sh.retry_gaps();
            sh.expire_parked(Instant::now());
        }
        expiry::sweep(&sh, unix_secs());
        let hb = sh.node.cfg.heartbeat_secs;
        if hb > 0 && tick.is_multiple_of(hb) {
            chores::send_heartbeats(&sh, tick);
        } else {
            chores::close_unponged(&sh, tick);
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn refresh_date(sh: &Shard) {
    let secs = unix_secs();
    let mut d = [0u8; 29];
    crate::codec::http1::http_date(secs, &mut d);
    sh.date.set(d);
}

/// Ends the interests that outlived their last subscriber (see `Subscribers::unsubscribe`) and
/// frees idle topics homed here, in one walk of the topic table.
fn sweep_topics(sh: &Shard) {
    let idle = Duration::from_secs(sh.node.cfg.topic_idle_secs);
    let mut st = sh.st.borrow_mut();
    let (ended, freed_homes) = st.subs.sweep(Instant::now(), idle);
    for topic in ended {
        sh.interest_ended(&mut st, topic);
    }
    let freed = freed_homes.len();
    if sh.node.bridge.is_some() {
        // --redis: the node stops following what no subscriber here reads.
        for topic in freed_homes {
            st.fetching.remove(&topic);
            st.gap_retry.remove(&topic);
            st.quiet.remove(&topic);
            st.held.remove(&topic);
            sh.send_interest(&mut st, topic, false);
        }
    }
    if freed > 0 {
        sh.node.topics.fetch_sub(freed, Ordering::Relaxed);
        sh.metrics().add(M::Topics, -(freed as i64));
        sh.metrics().add(M::TopicsFreed, freed as i64);
        debug!("shard {} freed {freed} idle topics", sh.id);
    }
}
