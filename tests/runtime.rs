//! Integration tests of the runtime against the real binary: io_uring and epoll drivers,
//! SIGTERM/SIGINT drains, shards sharing a port, the startup log, a second node on a bound
//! port. Each test starts its own server on 127.0.0.1:0.

#[path = "support/server.rs"]
mod server;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use server::{
    assert_closed_or_reset, before, exchange, get_raw, post_raw, read_response, run_to_exit, send,
    Server,
};

fn assert_healthy(server: &Server) {
    let r = server.get("/healthz");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
}

/// Every `{shard="N"}` series of `name`, as (N, value).
fn series(server: &Server, name: &str) -> Vec<(usize, i64)> {
    let text = server.get("/metrics").text();
    let prefix = format!("{name}{{shard=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (shard, value) = rest.split_once("\"} ").expect("series line");
            (shard.parse().unwrap(), value.parse().unwrap())
        })
        .collect()
}

// ---- 1. /healthz and HEAD ------------------------------------------------------------------

#[test]
fn epoll_driver_serves() {
    let server = Server::start(&["--shards", "1", "--driver", "epoll"]);
    assert_healthy(&server);
    assert!(server.log().contains("driver=epoll"), "{}", server.log());
}

#[test]
fn auto_driver_falls_back_with_one_warning() {
    let server = Server::start_env(
        &["--shards", "2", "--driver", "auto"],
        &[("RINGCAST_TEST_DISABLE_URING", "1")],
    );
    assert_healthy(&server);
    let r = server.post("/pub/fallback", b"x");
    assert_eq!(r.status, 200);
    let log = server.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("io_uring unavailable"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].starts_with("WARN"), "{}", warnings[0]);
    assert!(log.contains("driver=epoll"), "{log}");
}

#[test]
fn uring_driver_refuses_to_start_without_io_uring() {
    let (status, stderr) = run_to_exit(
        &["--driver", "uring"],
        &[("RINGCAST_TEST_DISABLE_URING", "1")],
        Duration::from_secs(10),
    );
    let status = status.expect("exits by itself");
    assert!(!status.success(), "{status:?}");
    assert!(status.code().is_some_and(|c| c != 0), "{status:?}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    // The message says how to fix it.
    assert!(stderr.contains("--driver epoll"), "{stderr}");
}

// ---- 10. shutdown --------------------------------------------------------------------------

const DRAIN_SECS: u64 = 2;
const EXIT_MARGIN: Duration = Duration::from_secs(3);

fn drain_server() -> Server {
    Server::start(&[
        "--shards",
        "2",
        "--drain-timeout-secs",
        &DRAIN_SECS.to_string(),
    ])
}

#[test]
fn sigterm_with_idle_keep_alive_exits_zero() {
    let mut server = drain_server();
    let mut idle = server.connect();
    assert_eq!(exchange(&mut idle, &get_raw("/healthz")).status, 200);
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN)
        .expect("exits within the drain timeout");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(t.elapsed() < Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN);
    assert_closed_or_reset(&mut idle, "idle connection at shutdown");
}

/// Once the node drains, its port stops listening at once: a new client is refused instead of
/// waiting in a listen queue nobody accepts from, and the port can be bound again the moment the
/// process is gone (a restart does not fail with "address in use" while the old process's
/// io_uring is torn down).
#[test]
fn sigterm_stops_listening_at_once_and_frees_the_port() {
    let mut server = drain_server();
    // Keep-alive clients on both shards, busy until the signal (as a load tool's are).
    let mut idle: Vec<TcpStream> = (0..10).map(|_| server.connect()).collect();
    for c in &mut idle {
        assert_eq!(exchange(c, &get_raw("/healthz")).status, 200);
    }
    // A stream keeps the drain going for a while.
    let mut stream = server.connect();
    send(&mut stream, &get_raw("/sse/drain-listen"));
    assert_eq!(
        server.wait_metric("ringcast_sse_streams_open", 1, Duration::from_secs(5)),
        1
    );
    server.signal(libc::SIGTERM);
    assert!(
        server.wait_log("draining", Duration::from_secs(5)),
        "{}",
        server.log()
    );
    let t = Instant::now();
    let refused = loop {
        match std::net::TcpStream::connect_timeout(&server.addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break true,
            _ if t.elapsed() > Duration::from_secs(1) => break false,
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    assert!(
        refused,
        "a connection attempt during the drain was not refused"
    );
    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN)
        .expect("exits within the drain timeout");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    let again = std::net::TcpListener::bind(server.addr);
    assert!(again.is_ok(), "the port is still taken: {:?}", again.err());
}

#[test]
fn sigterm_with_long_poll_in_flight_exits_zero() {
    let mut server = drain_server();
    let mut poll = server.connect();
    send(&mut poll, &get_raw("/poll/drain?wait=30"));
    assert_eq!(
        server.wait_metric("ringcast_longpoll_waiting", 1, Duration::from_secs(5)),
        1
    );
    let t = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN)
        .expect("exits within the drain timeout");
    assert_eq!(status.code(), Some(0), "{}", server.log());
    assert!(t.elapsed() < Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN);
    // The poll was answered, or its connection closed; it is not left hanging.
    poll.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    if let Some(r) = read_response(&mut poll, false) {
        assert!(r.status == 200 || r.status == 204, "{}", r.status);
        assert_closed_or_reset(&mut poll, "long poll after shutdown");
    }
}

#[test]
fn sigint_exits_zero() {
    let mut server = drain_server();
    assert_healthy(&server);
    server.signal(libc::SIGINT);
    let status = server
        .wait_exit(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN)
        .expect("exits within the drain timeout");
    assert_eq!(status.code(), Some(0), "{}", server.log());
}

// ---- 11. two shards ------------------------------------------------------------------------

#[test]
fn two_shards_share_connections_and_topics() {
    const CONNS: usize = 200;
    let server = Server::start(&["--shards", "2"]);
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let mut s = server.connect();
            assert_eq!(exchange(&mut s, &get_raw("/healthz")).status, 200);
            s
        })
        .collect();
    let accepted = series(&server, "ringcast_connections_accepted_total");
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(
        accepted.iter().all(|&(_, n)| n > 0),
        "both shards accept: {accepted:?}"
    );
    assert!(accepted.iter().map(|&(_, n)| n).sum::<i64>() >= CONNS as i64);

    // A publish on one connection is visible by poll from every connection.
    let r = exchange(&mut conns[0], &post_raw("/pub/everywhere", b"seen by all"));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let poll = get_raw(&format!("/poll/everywhere?since={}", before(&id)));
    for (i, s) in conns.iter_mut().enumerate() {
        let r = exchange(s, &poll);
        assert_eq!(r.status, 200, "conn {i}: {}", r.text());
        let v = r.json();
        let msgs = v["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 1, "conn {i}: {v}");
        assert_eq!(msgs[0]["id"].as_str(), Some(id.as_str()), "conn {i}");
        assert_eq!(msgs[0]["data"].as_str(), Some("seen by all"), "conn {i}");
    }
}

// ---- 12. startup log -----------------------------------------------------------------------

#[test]
fn startup_log_line() {
    let server = Server::start(&[
        "--shards",
        "2",
        "--max-connections",
        "777",
        "--max-head-bytes",
        "9000",
        "--max-message-bytes",
        "5000",
    ]);
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("listening on")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    let line = lines[0];
    assert!(line.starts_with("INFO"), "{line}");
    for want in [
        format!("ringcast {}", env!("CARGO_PKG_VERSION")),
        format!("listening on {}", server.addr),
        "shards=2".to_string(),
        "driver=".to_string(),
        "max_connections=777".to_string(),
        "max_head_bytes=9000".to_string(),
        "max_message_bytes=5000".to_string(),
    ] {
        assert!(line.contains(&want), "{want:?} missing from {line}");
    }
}

#[test]
fn a_second_node_on_the_same_port_refuses_to_start() {
    // SO_REUSEPORT would let it join the first node's listener and split clients between two
    // unrelated nodes; it must refuse instead, and say why.
    let first = Server::start(&[]);
    let addr = first.addr.to_string();
    let (status, stderr) = run_to_exit(&["--listen", &addr], &[], Duration::from_secs(10));
    let status = status.expect("the second node exits on its own");
    assert!(!status.success());
    assert!(stderr.contains("another process is listening"), "{stderr}");
    assert!(!stderr.contains("listening on"), "{stderr}");
    // The first node is unharmed.
    assert_eq!(first.get("/healthz").status, 200);
}

// ---- the file-descriptor table ------------------------------------------------------------

/// A line of /proc/PID/status, as a number (`FDSize`: the fd table's size).
fn proc_status(pid: u32, key: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .parse()
        .unwrap()
}

/// The soft `ulimit -n` this process (and the servers it starts) runs under.
fn soft_nofile() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let soft = line.split_whitespace().nth(3).unwrap();
    soft.parse().unwrap_or(usize::MAX)
}

/// The fd table is grown once at start to what `--max-connections` needs (or `ulimit -n`
/// allows), so no accept later waits for the kernel to grow it (`sys::fds`).
#[test]
fn the_fd_table_is_sized_for_max_connections_at_start() {
    let server = Server::start(&["--max-connections", "3000"]);
    assert_healthy(&server);
    // 3,000 connections, the 1,024 answered past the cap, 256 of the node's own.
    let want = (3000 + 1024 + 256).min(soft_nofile());
    let size = proc_status(server.pid(), "FDSize");
    assert!(size >= want, "FDSize {size} < {want}");
    if want < 3000 + 1024 + 256 {
        assert!(
            server.wait_log("ulimit -n is", Duration::from_secs(5)),
            "no word of the low ulimit:\n{}",
            server.log()
        );
    } else {
        assert!(!server.log().contains("ulimit -n is"), "{}", server.log());
    }
}
