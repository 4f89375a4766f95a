//! Helpers of the pub/sub integration tests (`tests/pubsub_*.rs`): polls, long-poll chains,
//! SSE streams read with the independent parser, a socket with a small receive buffer.
//!
//! Included with `#[path = "support/pubsub.rs"] mod pubsub;` beside `server` and `sse_parser`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::server::{read_response, Response, Server};
use crate::sse_parser::{SseEvent, SseParser};

/// Publishes on a keep-alive connection; returns the new position.
/// The current position of a topic (a poll without `since`).
pub fn current(srv: &Server, topic: &str) -> String {
    let r = srv.get(&format!("/poll/{topic}"));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["messages"].as_array().unwrap().len(), 0);
    v["next"].as_str().unwrap().to_string()
}

pub fn poll(srv: &Server, topic: &str, query: &str) -> Response {
    srv.get(&format!("/poll/{topic}?{query}"))
}

/// (id, data) of each message of a poll answer.
pub fn msgs(v: &serde_json::Value) -> Vec<(String, String)> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["data"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Follows a chain of long polls from `since` until `want` messages arrived or `within` ends.
pub fn long_poll_chain(
    srv: &Server,
    topic: &str,
    since: &str,
    limit: usize,
    want: usize,
    within: Duration,
) -> Vec<(String, String)> {
    let t = Instant::now();
    let mut since = since.to_string();
    let mut got = Vec::new();
    while got.len() < want && t.elapsed() < within {
        let r = poll(srv, topic, &format!("since={since}&limit={limit}&wait=5"));
        match r.status {
            200 => {
                let v = r.json();
                assert!(v.get("reset").is_none(), "chain reset: {v}");
                let m = msgs(&v);
                assert!(m.len() <= limit, "limit {limit} exceeded: {}", m.len());
                since = v["next"].as_str().unwrap().to_string();
                if let Some(last) = m.last() {
                    assert_eq!(last.0, since, "next is the last id");
                }
                got.extend(m);
            }
            204 => {
                since = r.header("x-ringcast-next").unwrap().to_string();
            }
            s => panic!("long poll answered {s}: {}", r.text()),
        }
    }
    got
}

/// Opens an SSE stream and reads its head.
pub fn sse_open(srv: &Server, topic: &str, extra: &str) -> TcpStream {
    let mut s = srv.connect();
    write!(s, "GET /sse/{topic} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
    let r = read_response(&mut s, true).expect("sse head");
    assert_eq!(r.status, 200);
    s
}

/// Opens an SSE stream resuming from the topic's current position, so the subscription
/// misses nothing published after this call returns (a stream without Last-Event-ID starts at
/// whatever is current when its subscription reaches the topic's home, which is after its
/// first bytes and after `ringcast_sse_streams_open` counts it).
pub fn sse_open_now(srv: &Server, topic: &str) -> TcpStream {
    let cur = current(srv, topic);
    sse_open(srv, topic, &format!("Last-Event-ID: {cur}\r\n"))
}

/// Reads an SSE stream into `p` until `n` events or EOF or `within`; returns the events.
pub fn sse_read(s: &mut TcpStream, p: &mut SseParser, n: usize, within: Duration) -> Vec<SseEvent> {
    crate::sse_parser::read_events(s, p, n, within)
}

/// Reads until the server closes (bounded); returns the events and whether EOF was seen.
pub fn sse_read_to_eof(
    s: &mut TcpStream,
    p: &mut SseParser,
    within: Duration,
) -> (Vec<SseEvent>, bool) {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while t.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(k) => out.extend(p.feed(&buf[..k])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// A tiny seeded PRNG (xorshift64*), so a failing run can be replayed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A TCP connection to the server with a small receive buffer set before connect, so the
/// kernel cannot absorb much of what a never-reading client is sent.
pub fn connect_small_rcvbuf(srv: &Server, bytes: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    let std::net::SocketAddr::V4(a) = srv.addr else {
        panic!("127.0.0.1 only")
    };
    // SAFETY: plain socket syscalls on a fresh fd that we own and hand to TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let v: libc::c_int = bytes;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}
