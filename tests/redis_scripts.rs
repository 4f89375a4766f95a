//! The backplane's Lua scripts (src/backplane/*.lua) against a real redis-server (issue 14,
//! "Scripts against real Redis"): concurrent appends, trimming by count and age, windows and
//! resets, and a new epoch when the Redis that wrote a topic is not the one running.

#[path = "support/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use redis::{Commands, Value};
use redis_server::RedisServer;
use ringcast::backplane::scripts::{self, Appended, Limits, RemoteWindow, Scripts};
use ringcast::backplane::{parse_push, Keys};
use ringcast::codec::position::Position;
use ringcast::fanout::NewMsg;

fn msg(s: &str) -> NewMsg {
    NewMsg {
        event: None,
        data: s.as_bytes().into(),
        binary: false,
    }
}

fn limits(history_messages: usize, history_secs: u64) -> Limits {
    Limits {
        history_messages,
        history_secs,
    }
}

/// The `run_id` of the Redis process behind `con`, as the bridge asks it once per connection.
fn run_id(con: &mut redis::Connection) -> String {
    let info: String = scripts::server_info().query(con).expect("INFO server");
    scripts::run_id(&info).expect("a run_id").to_string()
}

fn append(
    con: &mut redis::Connection,
    s: &Scripts,
    k: &Keys,
    l: &Limits,
    epoch: u64,
    msgs: &[NewMsg],
) -> Appended {
    let v: Value = scripts::append(s, k, l, epoch, &run_id(con), msgs)
        .invoke(con)
        .expect("append");
    scripts::parse_appended(&v).expect("append reply")
}

fn window(
    con: &mut redis::Connection,
    s: &Scripts,
    k: &Keys,
    l: &Limits,
    since: Option<Position>,
    limit: usize,
) -> RemoteWindow {
    let v: Value = scripts::window(s, k, l, since, limit, &run_id(con), 0x5eed)
        .invoke(con)
        .expect("window");
    scripts::parse_window(&v).expect("window reply")
}

/// `con` subscribed to the channel of `k`, each push awaited at most 10 s.
fn subscribed<'c>(con: &'c mut redis::Connection, k: &Keys) -> redis::PubSub<'c> {
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ps = con.as_pubsub();
    ps.subscribe(&k.channel).unwrap();
    ps
}

fn offsets(w: &RemoteWindow) -> Vec<u64> {
    w.entries.iter().map(|e| e.offset).collect()
}

fn connect(r: &RedisServer) -> redis::Connection {
    redis::Client::open(r.url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to redis")
}

#[test]
fn concurrent_appends_give_unique_consecutive_offsets() {
    let r = RedisServer::start();
    let k = Keys::new("rc", "race");
    // A subscriber on the topic's channel sees every message once, in offset order.
    let mut sub = connect(&r);
    let mut ps = subscribed(&mut sub, &k);

    const THREADS: u64 = 4;
    const BATCHES: u64 = 100;
    let batches: Vec<Vec<Appended>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let (k, r) = (&k, &r);
                sc.spawn(move || {
                    let s = Scripts::default();
                    let l = limits(10_000, 3600);
                    let mut con = connect(r);
                    (0..BATCHES)
                        .map(|i| {
                            // Batches of 1 to 3 messages.
                            let msgs: Vec<_> =
                                (0..=i % 3).map(|j| msg(&format!("{t}.{i}.{j}"))).collect();
                            let a = append(&mut con, &s, k, &l, 0xabc + t, &msgs);
                            assert_eq!(a.last - a.first, i % 3, "one offset per message");
                            a
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<Appended> = batches.into_iter().flatten().collect();
    let total: u64 = all.iter().map(|a| a.last - a.first + 1).sum();
    let per_thread: u64 = (0..BATCHES).map(|i| i % 3 + 1).sum();
    assert_eq!(total, THREADS * per_thread, "every message got an offset");
    let epoch = all[0].epoch;
    assert!(all.iter().all(|a| a.epoch == epoch), "one epoch");
    assert_eq!(
        all.iter().filter(|a| a.new_epoch).count(),
        1,
        "only the first append begins the epoch"
    );
    let mut offs: Vec<u64> = all.iter().flat_map(|a| a.first..=a.last).collect();
    offs.sort_unstable();
    assert_eq!(
        offs,
        (1..=total).collect::<Vec<_>>(),
        "unique and consecutive"
    );

    for want in 1..=total {
        let m = ps.get_message().expect("a push");
        let payload: Vec<u8> = m.get_payload().unwrap();
        let p = parse_push(&payload).expect("a push in our form");
        assert_eq!(p.pos, Position::new(epoch, want), "pushed in offset order");
    }
}

/// What the script PUBLISHes is what `parse_push` reads: every message's position, flag,
/// event and payload (newlines and binary bytes included), in offset order.
#[test]
fn what_is_pushed_reads_back_exactly() {
    let r = RedisServer::start();
    let k = Keys::new("rc", "pushed");
    let mut sub = connect(&r);
    let mut ps = subscribed(&mut sub, &k);
    let mut con = connect(&r);
    let msgs = vec![
        msg("first"),
        NewMsg {
            event: Some("bin".into()),
            data: b"\x00\xff\nline\n\n".to_vec().into(),
            binary: true,
        },
        msg(""),
        NewMsg {
            event: Some("tick".into()),
            data: b"3:4\nt\n".to_vec().into(),
            binary: false,
        },
    ];
    let a = append(
        &mut con,
        &Scripts::default(),
        &k,
        &limits(100, 60),
        0x7e,
        &msgs,
    );
    assert_eq!((a.first, a.last), (1, 4));
    for (i, m) in msgs.iter().enumerate() {
        let push = ps.get_message().expect("a push");
        let payload: Vec<u8> = push.get_payload().unwrap();
        let p = parse_push(&payload).expect("a push in our form");
        assert_eq!(p.pos, Position::new(a.epoch, i as u64 + 1));
        assert_eq!(p.binary, m.binary);
        assert_eq!(p.event, m.event.as_deref().unwrap_or(""));
        assert_eq!(p.data, &m.data[..]);
    }
}

#[test]
fn a_window_inside_history_and_a_reset_outside_it() {
    let r = RedisServer::start();
    let mut con = connect(&r);
    let s = Scripts::default();
    let l = limits(1000, 3600);
    let k = Keys::new("rc", "win");

    // A topic Redis does not know: epoch 0, offset 0, no reset for "now".
    let w = window(&mut con, &s, &k, &l, None, 10);
    assert_eq!((w.reset, w.current), (false, Position::new(0, 0)));

    let mut msgs: Vec<NewMsg> = (1..=4).map(|i| msg(&format!("m{i}"))).collect();
    msgs.push(NewMsg {
        event: Some("bin".into()),
        data: b"\x00\xff\nline\n".to_vec().into(),
        binary: true,
    });
    let a = append(&mut con, &s, &k, &l, 0x5eed, &msgs);
    assert_eq!(
        (a.epoch, a.first, a.last, a.new_epoch),
        (0x5eed, 1, 5, true)
    );
    let e = a.epoch;

    for since in 0..5 {
        let w = window(&mut con, &s, &k, &l, Some(Position::new(e, since)), 10);
        assert!(!w.reset, "{since}");
        assert_eq!(w.current, Position::new(e, 5));
        assert_eq!(offsets(&w), (since + 1..=5).collect::<Vec<_>>());
    }
    let w = window(&mut con, &s, &k, &l, Some(Position::new(e, 1)), 2);
    assert_eq!(offsets(&w), [2, 3], "at most `limit` entries");
    assert_eq!(&*w.entries[0].data, b"m2");
    assert_eq!(w.entries[0].event, None);
    // No limit (a stream's replay asks usize::MAX): everything after the position.
    let w = window(&mut con, &s, &k, &l, Some(Position::new(e, 1)), usize::MAX);
    assert_eq!(offsets(&w), [2, 3, 4, 5]);
    let w = window(&mut con, &s, &k, &l, Some(Position::new(e, 4)), 10);
    let last = &w.entries[0];
    assert_eq!(
        (last.event.as_deref(), &*last.data, last.binary),
        (Some("bin"), &b"\x00\xff\nline\n"[..], true),
        "payload, event and binary flag round-trip"
    );
    assert!(last.at_ms > 0);
    // Up to date: nothing, no reset.
    let w = window(&mut con, &s, &k, &l, Some(Position::new(e, 5)), 10);
    assert!(!w.reset && w.entries.is_empty());
    // Another epoch, or a position ahead of the topic: a reset with the current position.
    for since in [Position::new(e + 1, 2), Position::new(e, 6)] {
        let w = window(&mut con, &s, &k, &l, Some(since), 10);
        assert!(w.reset && w.entries.is_empty(), "{since:?}");
        assert_eq!(w.current, Position::new(e, 5));
    }
}

#[test]
fn trimming_by_count() {
    let r = RedisServer::start();
    let mut con = connect(&r);
    let s = Scripts::default();
    let l = limits(10, 3600);
    let k = Keys::new("rc", "count");
    let mut last = Appended {
        epoch: 0,
        first: 0,
        last: 0,
        new_epoch: false,
    };
    for i in 1..=1000 {
        last = append(&mut con, &s, &k, &l, 0x77, &[msg(&format!("m{i}"))]);
    }
    assert_eq!(last.last, 1000);
    let len: u64 = redis::cmd("XLEN").arg(&k.stream).query(&mut con).unwrap();
    // MAXLEN ~ trims whole stream nodes: at least 10 kept, far fewer than 1000.
    assert!((10..1000).contains(&len), "stream length {len}");
    let e = last.epoch;
    let w = window(&mut con, &s, &k, &l, Some(Position::new(e, 0)), 10_000);
    assert!(w.reset, "the first messages were trimmed");
    let w = window(&mut con, &s, &k, &l, Some(Position::new(e, 990)), 10_000);
    assert!(!w.reset);
    assert_eq!(offsets(&w), (991..=1000).collect::<Vec<_>>());
    assert_eq!(&*w.entries[9].data, b"m1000");
    // The oldest retained entry is replayable; the one before it is not.
    let oldest = 1000 - len + 1;
    let w = window(
        &mut con,
        &s,
        &k,
        &l,
        Some(Position::new(e, oldest - 1)),
        10_000,
    );
    assert_eq!(w.entries.len() as u64, len);
    let w = window(
        &mut con,
        &s,
        &k,
        &l,
        Some(Position::new(e, oldest - 2)),
        10_000,
    );
    assert!(w.reset);
}

#[test]
fn trimming_by_age() {
    let r = RedisServer::start();
    let mut con = connect(&r);
    let s = Scripts::default();
    let l = limits(1000, 1);
    let k = Keys::new("rc", "age");
    let a = append(&mut con, &s, &k, &l, 0x99, &[msg("old")]);
    let w = window(&mut con, &s, &k, &l, Some(Position::new(a.epoch, 0)), 10);
    assert_eq!(offsets(&w), [1], "young: replayed");
    // Past --history-secs the entry is gone (by its age, or the Stream's TTL): a reset.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let w = window(&mut con, &s, &k, &l, Some(Position::new(a.epoch, 0)), 10);
        if w.reset {
            assert_eq!(w.current, Position::new(a.epoch, 1));
            break;
        }
        assert!(Instant::now() < end, "the entry never aged out");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The meta outlives the history: a client that missed nothing gets no reset, and the
    // topic keeps its epoch and counts on.
    let w = window(&mut con, &s, &k, &l, Some(Position::new(a.epoch, 1)), 10);
    assert!(!w.reset && w.entries.is_empty());
    let b = append(&mut con, &s, &k, &l, 0x98, &[msg("new")]);
    assert_eq!((b.epoch, b.first, b.new_epoch), (a.epoch, 2, false));
}

#[test]
fn a_new_epoch_after_a_run_id_change() {
    let r = RedisServer::start();
    let mut con = connect(&r);
    let s = Scripts::default();
    let l = limits(1000, 3600);
    let k = Keys::new("rc", "epoch");
    let a = append(&mut con, &s, &k, &l, 0x111, &[msg("a"), msg("b"), msg("c")]);
    assert_eq!((a.epoch, a.last), (0x111, 3));
    let b = append(&mut con, &s, &k, &l, 0x222, &[msg("d")]);
    assert_eq!((b.epoch, b.first, b.new_epoch), (0x111, 4, false));

    // As if the meta was written by another Redis process (restored from a snapshot, a
    // promoted replica): positions after it may have been handed out and lost.
    let _: () = con.hset(&k.meta, "r", "0123456789abcdef").unwrap();
    let c = append(&mut con, &s, &k, &l, 0x333, &[msg("e")]);
    assert_eq!((c.epoch, c.first, c.last, c.new_epoch), (0x333, 1, 1, true));
    let w = window(&mut con, &s, &k, &l, Some(Position::new(0x111, 4)), 10);
    assert!(w.reset, "a position of the old epoch is reset");
    assert_eq!(w.current, Position::new(0x333, 1));
    // A window asked first, before any append on the new Redis: it begins the new epoch
    // itself, and the next append continues it, so a client is reset once.
    let _: () = con.hset(&k.meta, "r", "0123456789abcdef").unwrap();
    let w = window(&mut con, &s, &k, &l, Some(Position::new(0x333, 1)), 10);
    assert!(w.reset, "{w:?}");
    assert_eq!(
        w.current,
        Position::new(0x5eed, 0),
        "the new epoch, from its start"
    );
    let w = window(&mut con, &s, &k, &l, Some(Position::new(0x5eed, 0)), 10);
    assert!(
        !w.reset && w.entries.is_empty(),
        "nothing of the old epoch: {w:?}"
    );
    let c2 = append(&mut con, &s, &k, &l, 0x999, &[msg("e2")]);
    assert_eq!((c2.epoch, c2.first, c2.new_epoch), (0x5eed, 1, false));
    // The same for a node loading what is retained ('*').
    let _: () = con.hset(&k.meta, "r", "0123456789abcdef").unwrap();
    let v: Value = scripts::retained(&s, &k, &l, 10, &run_id(&mut con), 0x6eed)
        .invoke(&mut con)
        .unwrap();
    let w = scripts::parse_window(&v).unwrap();
    assert_eq!((w.reset, w.current), (false, Position::new(0x6eed, 0)));
    assert!(
        w.entries.is_empty(),
        "nothing of the old epoch loaded: {w:?}"
    );
    let c = append(&mut con, &s, &k, &l, 0x333, &[msg("e")]);
    assert_eq!((c.epoch, c.first, c.new_epoch), (0x6eed, 1, false));
    let w = window(&mut con, &s, &k, &l, Some(Position::new(0x6eed, 0)), 10);
    assert_eq!(offsets(&w), [1], "the old epoch's entries are gone");
    assert_eq!(&*w.entries[0].data, b"e");

    // A missing meta (expired) begins a new epoch too.
    let _: () = con.del(&k.meta).unwrap();
    let d = append(&mut con, &s, &k, &l, 0x444, &[msg("f")]);
    assert_eq!((d.epoch, d.first, d.new_epoch), (0x444, 1, true));
}
