//! The WebSocket read path keeps its place: long messages in many small fragments, written in
//! random cuts with random pauses and pings between fragments, come back byte for byte, on both
//! drivers. (Before the fix in `codec::ws::inbound`, a read that found the socket empty dropped
//! the partial header carried from the read before, and the server closed healthy clients with
//! 1002 — Autobahn 9.4.1 failed in about a third of its runs.)

#[path = "support/server.rs"]
mod server;
#[path = "support/wsraw.rs"]
mod wsraw;

use server::Server;
use wsraw::*;

fn fragmented_messages_echo_exactly(driver: &str) {
    let s = Server::start(&[
        "--driver",
        driver,
        "--shards",
        "2",
        "--max-message-bytes",
        "16777216",
        "--client-buffer-bytes",
        "33554432",
    ]);
    // Three clients at once, each with its own seed and topic: more reads racing with more
    // readiness events, and a failure shows on most runs of the unfixed server.
    let addr = s.addr;
    let clients: Vec<_> = (0..3u64)
        .map(|c| {
            std::thread::spawn(move || {
                let plan = Plan {
                    seed: 0x941 + c,
                    messages: 48,
                    max_len: 600 * 1024,
                };
                echo_client(addr, &format!("integrity-{c}"), plan)
            })
        })
        .collect();
    for c in clients {
        let bytes = c.join().expect("echo client");
        assert!(bytes > 1 << 20, "the plan sends megabytes: {bytes}");
    }
    let log = s.log();
    assert!(!log.contains("protocol error"), "{log}");
}

#[test]
fn fragmented_messages_echo_exactly_on_io_uring() {
    fragmented_messages_echo_exactly("uring");
}

#[test]
fn fragmented_messages_echo_exactly_on_epoll() {
    fragmented_messages_echo_exactly("epoll");
}
