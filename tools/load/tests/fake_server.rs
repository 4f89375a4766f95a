//! End-to-end runs of the `ringcast-load` binary against a tiny in-process fake of ringcast's
//! wire: `POST /pub/{t}`, `GET /sse/{t}`, `GET /ws/{t}` (raw; client frames are published to the
//! topic), `GET /poll/{t}?since=E:N&wait=S`. Threads and blocking sockets, one per connection:
//! enough for tens of connections and nothing to do with how a real server should work. The
//! real server is driven by hand (tools/load/README.md) and by the repository's
//! tests/redis_soak.rs. Several fakes may share one topic store, as nodes share Redis: an SSE
//! stream resumes on any of them with `Last-Event-ID`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha1::{Digest, Sha1};

#[derive(Default)]
struct Topic {
    history: Vec<Vec<u8>>,
    subs: Vec<(bool, Sender<Vec<u8>>)>, // (websocket?, wire bytes)
}

type Topics = Arc<Mutex<HashMap<String, Topic>>>;

fn publish(topics: &Topics, t: &str, data: Vec<u8>) -> usize {
    let mut m = topics.lock().unwrap();
    let topic = m.entry(t.to_string()).or_default();
    topic.history.push(data.clone());
    let n = topic.history.len();
    topic.subs.retain(|(ws, tx)| {
        let wire = if *ws {
            let mut f = vec![0x81];
            if data.len() < 126 {
                f.push(data.len() as u8);
            } else {
                f.push(126);
                f.extend_from_slice(&(data.len() as u16).to_be_bytes());
            }
            f.extend_from_slice(&data);
            f
        } else {
            let mut e = format!("id: 0:{n}\ndata: ").into_bytes();
            e.extend_from_slice(&data);
            e.extend_from_slice(b"\n\n");
            e
        };
        tx.send(wire).is_ok()
    });
    n
}

fn subscribe(topics: &Topics, t: &str, ws: bool) -> std::sync::mpsc::Receiver<Vec<u8>> {
    subscribe_after(topics, t, ws, None, false).1
}

/// Subscribes; with `after` (an SSE resume), also the events after that offset — or, with
/// `reset`, a reset to the current position — taken under the same lock so none is missed or
/// doubled.
fn subscribe_after(
    topics: &Topics,
    t: &str,
    ws: bool,
    after: Option<usize>,
    reset: bool,
) -> (Vec<Vec<u8>>, std::sync::mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = channel();
    let mut m = topics.lock().unwrap();
    let topic = m.entry(t.to_string()).or_default();
    let now = topic.history.len();
    let replay = match after {
        Some(_) if reset => {
            vec![format!("event: reset\nid: 0:{now}\ndata: 0:{now}\n\n").into_bytes()]
        }
        Some(n) => topic.history[n.min(topic.history.len())..]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut e = format!("id: 0:{}\ndata: ", n + i + 1).into_bytes();
                e.extend_from_slice(d);
                e.extend_from_slice(b"\n\n");
                e
            })
            .collect(),
        None => Vec::new(),
    };
    topic.subs.push((ws, tx));
    (replay, rx)
}

/// How one fake node behaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Cut every SSE stream after this many events (a node that fails mid-run).
    cut_sse_after: Option<usize>,
    /// Answer every SSE resume with a reset to the current position (history lost).
    reset_on_resume: bool,
    /// SSE requests that carried `Last-Event-ID`.
    resumed: Arc<std::sync::atomic::AtomicUsize>,
}

fn start() -> u16 {
    start_node(Arc::default(), Behaviour::default())
}

fn start_node(topics: Topics, b: Behaviour) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let (topics, b) = (topics.clone(), b.clone());
            std::thread::spawn(move || {
                let _ = serve(s, topics, b);
            });
        }
    });
    port
}

fn serve(s: TcpStream, topics: Topics, b: Behaviour) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut len = 0usize;
        let mut ws_key = None;
        let mut last_event_id: Option<usize> = None;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            if h.trim().is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "sec-websocket-key" => ws_key = Some(v.trim().to_string()),
                "last-event-id" => {
                    last_event_id = v.trim().split_once(':').and_then(|(_, n)| n.parse().ok())
                }
                _ => {}
            }
        }
        let q = |name: &str| {
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                .map(str::to_string)
        };
        if let (Some(t), "POST") = (path.strip_prefix("/pub/"), method) {
            let mut body = vec![0; len];
            r.read_exact(&mut body)?;
            let n = publish(&topics, t, body);
            let b = format!("{{\"id\":\"0:{n}\"}}");
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )?;
        } else if let Some(t) = path.strip_prefix("/sse/") {
            if last_event_id.is_some() {
                b.resumed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let (replay, rx) = subscribe_after(&topics, t, false, last_event_id, b.reset_on_resume);
            w.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nretry: 1000\n: ok\n\n",
            )?;
            for (n, ev) in replay.into_iter().chain(rx).enumerate() {
                if b.cut_sse_after == Some(n) {
                    return Ok(());
                }
                // Split every event in two writes, so the client sees arbitrary boundaries.
                let (a, b) = ev.split_at(ev.len() / 2);
                w.write_all(a)?;
                w.flush()?;
                w.write_all(b)?;
            }
            return Ok(());
        } else if let Some(t) = path.strip_prefix("/ws/") {
            let mut h = Sha1::new();
            h.update(ws_key.unwrap_or_default().as_bytes());
            h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
            let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
            let rx = subscribe(&topics, t, true);
            write!(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n")?;
            let mut w2 = w.try_clone()?;
            std::thread::spawn(move || {
                for f in rx {
                    if w2.write_all(&f).is_err() {
                        return;
                    }
                }
            });
            // Client frames (masked, < 64 KiB): publish to the topic.
            loop {
                let mut hd = [0u8; 2];
                r.read_exact(&mut hd)?;
                assert!(hd[1] & 0x80 != 0, "client frames must be masked");
                let n = match hd[1] & 0x7f {
                    126 => {
                        let mut b = [0u8; 2];
                        r.read_exact(&mut b)?;
                        u16::from_be_bytes(b) as usize
                    }
                    n => n as usize,
                };
                let mut key = [0u8; 4];
                r.read_exact(&mut key)?;
                let mut p = vec![0; n];
                r.read_exact(&mut p)?;
                for (i, b) in p.iter_mut().enumerate() {
                    *b ^= key[i % 4];
                }
                if hd[0] & 0x0f == 1 {
                    publish(&topics, t, p);
                }
            }
        } else if let Some(t) = path.strip_prefix("/poll/") {
            let since: Option<usize> = q("since").and_then(|s| s.split_once(':')?.1.parse().ok());
            let wait: u64 = q("wait").and_then(|s| s.parse().ok()).unwrap_or(0);
            let deadline = Instant::now() + Duration::from_secs(wait);
            let body = loop {
                let m = topics.lock().unwrap();
                let hist = m.get(t).map(|t| t.history.clone()).unwrap_or_default();
                drop(m);
                let Some(since) = since else {
                    break Some(format!("{{\"messages\":[],\"next\":\"0:{}\"}}", hist.len()));
                };
                if hist.len() > since {
                    let msgs: Vec<String> = hist[since..]
                        .iter()
                        .enumerate()
                        .map(|(i, d)| {
                            format!(
                                "{{\"id\":\"0:{}\",\"data\":{:?}}}",
                                since + i + 1,
                                String::from_utf8_lossy(d)
                            )
                        })
                        .collect();
                    break Some(format!(
                        "{{\"messages\":[{}],\"next\":\"0:{}\"}}",
                        msgs.join(","),
                        hist.len()
                    ));
                }
                if Instant::now() >= deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            match body {
                Some(b) => write!(
                    w,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{b}",
                    b.len()
                )?,
                None => write!(
                    w,
                    "HTTP/1.1 204 No Content\r\nX-Ringcast-Next: 0:{}\r\n\r\n",
                    since.unwrap_or(0)
                )?,
            }
        } else {
            w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
        }
    }
}

fn load(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast-load"))
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    serde_json::from_str(&text).unwrap()
}

fn fanout(port: u16, transport: &str, route: &str, extra: &[&str]) -> serde_json::Value {
    let sub = format!("http://127.0.0.1:{port}/{route}/{{topic}}");
    let publ = format!("http://127.0.0.1:{port}/pub/{{topic}}");
    let mut args = vec![
        "fanout",
        "--transport",
        transport,
        "--subscribers",
        "12",
        "--topics",
        "3",
        "--messages",
        "31",
        "--rate",
        "400",
        "--size",
        "200",
        "--timeout",
        "10",
        "--settle-ms",
        "50",
        "--url-sub",
        &sub,
        "--url-pub",
        &publ,
    ];
    args.extend_from_slice(extra);
    let v = load(&args);
    // 31 messages over 3 topics: 11, 10, 10; 4 subscribers per topic.
    assert_eq!(v["expected_deliveries"], 124, "{v}");
    assert_eq!(v["deliveries"], 124, "{v}");
    for k in [
        "missing",
        "duplicated",
        "out_of_order",
        "unexpected",
        "connect_failed",
        "disconnected",
    ] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert_eq!(v["complete"], true, "{v}");
    assert_eq!(v["published"], 31, "{v}");
    v
}

#[test]
fn fanout_sse_ws_longpoll_against_a_fake_server() {
    let port = start();
    fanout(port, "sse", "sse", &[]);
    fanout(port, "ws", "ws", &[]);
    let v = fanout(port, "longpoll", "poll", &[]);
    assert_eq!(v["longpoll_style"], "ringcast");
    // Two worker processes, subscribers from two source addresses.
    let v = fanout(
        port,
        "sse",
        "sse",
        &["--processes", "2", "--source-ips", "127.0.0.2-127.0.0.3"],
    );
    assert_eq!(v["processes"], 2);
}

/// `--socket-stamps`: every SSE and WebSocket delivery also has the time it reached its
/// socket, which is never after the time the tool read it.
#[test]
fn socket_stamps_time_every_streamed_delivery() {
    let port = start();
    for (transport, route) in [("sse", "sse"), ("ws", "ws")] {
        let v = fanout(port, transport, route, &["--socket-stamps"]);
        assert_eq!(v["socket_stamped"], 124, "{transport}: {v}");
        let (read, socket) = (&v["latency_us"], &v["socket_latency_us"]);
        for k in ["p50", "max"] {
            let (r, s) = (read[k].as_f64().unwrap(), socket[k].as_f64().unwrap());
            // (1% for the histograms' rounding)
            assert!(
                s > 0.0 && s <= r * 1.01,
                "{transport} {k}: socket {s} µs, read {r} µs"
            );
        }
    }
    // Without the flag there is no such figure.
    let v = fanout(port, "sse", "sse", &[]);
    assert!(v.get("socket_latency_us").is_none(), "{v}");
}

/// Two fake nodes on one topic store; every SSE stream on the first is cut after 3 events. With
/// `--resume` each subscriber that started there goes on from its last event on the second
/// node (`Last-Event-ID`), and publishers that start on a node that refuses connections go on
/// to the next: nothing missing, nothing doubled.
#[test]
fn fanout_resumes_a_cut_stream_on_the_next_node() {
    let topics: Topics = Arc::default();
    let cut = Behaviour {
        cut_sse_after: Some(3),
        ..Default::default()
    };
    let whole = Behaviour::default();
    let a = start_node(topics.clone(), cut.clone());
    let b = start_node(topics, whole.clone());
    // A port nothing listens on: connections are refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sub = format!("http://127.0.0.1:{a}/sse/{{topic}},http://127.0.0.1:{b}/sse/{{topic}}");
    let publ = format!(
        "http://127.0.0.1:{dead}/pub/{{topic}},http://127.0.0.1:{a}/pub/{{topic}},http://127.0.0.1:{b}/pub/{{topic}}"
    );
    let run = |extra: &[&str]| {
        let mut args = vec![
            "fanout",
            "--resume",
            "--subscribers",
            "8",
            "--topics",
            "2",
            "--messages",
            "40",
            "--rate",
            "400",
            "--pub-connections",
            "2",
            "--timeout",
            "10",
            "--settle-ms",
            "50",
            "--url-sub",
            &sub,
            "--url-pub",
            &publ,
        ];
        args.extend_from_slice(extra);
        load(&args)
    };
    let v = run(&[]);
    check_resumed(&v);
    assert_eq!(whole.resumed.load(std::sync::atomic::Ordering::Relaxed), 4);
    assert_eq!(cut.resumed.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The same with two worker processes: the publisher's log reaches them over their stdin.
    let v = run(&["--processes", "2"]);
    check_resumed(&v);
    assert_eq!(v["processes"], 2);
    assert_eq!(whole.resumed.load(std::sync::atomic::Ordering::Relaxed), 8);
}

fn check_resumed(v: &serde_json::Value) {
    assert_eq!(v["expected_deliveries"], 160, "{v}");
    for k in [
        "missing",
        "duplicated",
        "out_of_order",
        "unexpected",
        "connect_failed",
        "disconnected",
        "resets",
        "skipped_by_reset",
        "uncertain_absent",
        "publish_uncertain",
    ] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert_eq!(v["deliveries"], 160, "{v}");
    assert_eq!(v["published"], 40, "{v}");
    assert_eq!(v["complete"], true, "{v}");
    // Subscribers 0, 2, 4, 6 started on the node that cuts: each resumed on the other once.
    assert_eq!(v["resumes"], 4, "{v}");
    // Publisher connection 0 started on the dead port: refused, sent again on the next node.
    assert!(v["publish_retries"].as_u64().unwrap() >= 1, "{v}");
}

/// The same cut, resumed on a node that has lost the history: each resumed stream gets one
/// reset, and what it covered is skipped, not missing.
#[test]
fn a_reset_on_resume_skips_what_it_covers() {
    let topics: Topics = Arc::default();
    let cut = Behaviour {
        cut_sse_after: Some(3),
        ..Default::default()
    };
    let forgetful = Behaviour {
        reset_on_resume: true,
        ..Default::default()
    };
    let a = start_node(topics.clone(), cut);
    let b = start_node(topics, forgetful);
    let sub = format!("http://127.0.0.1:{a}/sse/{{topic}},http://127.0.0.1:{b}/sse/{{topic}}");
    let publ = format!("http://127.0.0.1:{b}/pub/{{topic}}");
    let v = load(&[
        "fanout",
        "--resume",
        "--subscribers",
        "8",
        "--topics",
        "2",
        "--messages",
        "200",
        "--rate",
        "400",
        "--timeout",
        "10",
        "--settle-ms",
        "50",
        "--url-sub",
        &sub,
        "--url-pub",
        &publ,
    ]);
    for k in ["missing", "duplicated", "out_of_order", "uncertain_absent"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert_eq!(v["resumes"], 4, "{v}");
    assert_eq!(v["resets"], 4, "{v}");
    // Each of the 4 resumed streams missed at least the event its cut fell on (published, not
    // sent), and whatever came before its resume: all of it skipped, none of it missing.
    let skipped = v["skipped_by_reset"].as_u64().unwrap();
    assert!(skipped >= 4, "{v}");
    assert_eq!(v["deliveries"].as_u64().unwrap() + skipped, 800, "{v}");
    assert_eq!(v["complete"], true, "{v}");
}

#[test]
fn echo_and_hold_against_a_fake_server() {
    let port = start();
    let url = format!("ws://127.0.0.1:{port}/ws/{{topic}}");
    let v = load(&[
        "echo",
        "--connections",
        "4",
        "--size",
        "300",
        "--seconds",
        "0.5",
        "--url",
        &url,
    ]);
    assert_eq!(v["connected"], 4, "{v}");
    assert_eq!(v["disconnected"], 0, "{v}");
    assert!(v["round_trips"].as_u64().unwrap() > 4, "{v}");
    let url = format!("http://127.0.0.1:{port}/sse/{{topic}}");
    let pid = std::process::id().to_string();
    let v = load(&[
        "hold",
        "--connections",
        "20",
        "--seconds",
        "0.2",
        "--settle-ms",
        "10",
        "--url",
        &url,
        "--server-pid",
        &pid,
    ]);
    assert_eq!(v["connected"], 20, "{v}");
    assert_eq!(v["disconnected_during_hold"], 0, "{v}");
    assert!(v["server_rss_before_bytes"].as_u64().unwrap() > 0, "{v}");
}

/// The write baseline moves every byte it writes, with either kind of reader.
#[test]
fn writecost_counts_every_write_with_both_readers() {
    for readers in ["drained", "waiting"] {
        let out = Command::new(env!("CARGO_BIN_EXE_ringcast-writecost"))
            .args(["--pairs", "50", "--size", "64", "--rounds", "5"])
            .args(["--readers", readers])
            .output()
            .expect("run ringcast-writecost");
        assert!(
            out.status.success(),
            "{readers}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
        assert_eq!(v["readers"], readers);
        assert_eq!(v["writes"], 250, "{v}");
        assert_eq!(v["short_writes"], 0, "{v}");
        assert_eq!(v["bytes_drained"], 250 * 64, "{v}");
        assert_eq!(v["reader_cpu_ns_per_write"].is_null(), readers == "drained");
    }
}
