//! Test harness: starts the real `ringcast` binary on 127.0.0.1:0 and speaks raw bytes to it.
//!
//! Included by integration tests with `#[path = "support/server.rs"] mod server;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server with `--listen 127.0.0.1:0 --log-level debug` (unless `args` say
    /// otherwise) plus `args`.
    pub fn start(args: &[&str]) -> Server {
        Self::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Self::start_bin(env!("CARGO_BIN_EXE_ringcast").as_ref(), args, env)
    }

    /// Starts `bin` (another build of ringcast, e.g. the release binary a measurement runs).
    pub fn start_bin(bin: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin);
        if !args.contains(&"--listen") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        if !args.contains(&"--log-level") {
            cmd.args(["--log-level", "debug"]);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ringcast");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Into the log first, so `log()` holds the startup line once `start` returns.
                {
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(i) = line.find("listening on ") {
                    let a = line[i + 13..]
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(a);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("server did not start: {}", log.lock().unwrap()));
        Server {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (bounded).
    pub fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let t = Instant::now();
        while t.elapsed() < within {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends raw bytes on a fresh connection and returns one response.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_response(&mut s, false).expect("a response")
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        self.request(&raw)
    }

    /// Publishes and returns the new position.
    pub fn publish(&self, topic: &str, body: &[u8]) -> String {
        let r = self.post(&format!("/pub/{topic}"), body);
        assert_eq!(r.status, 200, "publish: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    /// The current position of a topic (a poll without `since`); creates the topic.
    pub fn current(&self, topic: &str) -> String {
        let r = self.get(&format!("/poll/{topic}"));
        assert_eq!(r.status, 200, "poll: {}", r.text());
        r.json()["next"].as_str().unwrap().to_string()
    }

    /// Sum over shards of one metric.
    pub fn metric(&self, name: &str) -> i64 {
        let r = self.get("/metrics");
        r.text()
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<i64>().unwrap())
            .sum()
    }

    /// Polls `metric` until it equals `want` (bounded); returns the last value.
    pub fn wait_metric(&self, name: &str, want: i64, within: Duration) -> i64 {
        let t = Instant::now();
        loop {
            let v = self.metric(name);
            if v == want || t.elapsed() > within {
                return v;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for exit (bounded); None if it did not exit in time.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < within {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// Runs the binary with `args` (after `--listen 127.0.0.1:0`) and `env` until it exits on its
/// own, for flags that must fail at startup. Returns the exit status (None if it was still
/// running after `within` and had to be killed) and everything it wrote to stderr.
pub fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    within: Duration,
) -> (Option<ExitStatus>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    if !args.contains(&"--listen") {
        cmd.args(["--listen", "127.0.0.1:0"]);
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn ringcast");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.text()))
    }
}

/// Reads one response from `s` (Content-Length, chunked, or close-delimited bodies).
/// `head_only`: the request was HEAD, so no body follows.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Option<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut r = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(r);
    }
    if let Some(n) = r.header("content-length") {
        let n: usize = n.parse().ok()?;
        let mut body = vec![0u8; n];
        s.read_exact(&mut body).ok()?;
        r.body = body;
    } else if r.header("transfer-encoding").is_some() {
        panic!("chunked responses are not expected from ringcast");
    } else {
        s.read_to_end(&mut r.body).ok()?;
    }
    Some(r)
}

/// Publishes on an open keep-alive connection and returns the new position.
pub fn publish_on(s: &mut TcpStream, topic: &str, body: &[u8]) -> String {
    let mut raw = format!(
        "POST /pub/{topic} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    s.write_all(&raw).unwrap();
    let r = read_response(s, false).expect("publish answer");
    assert_eq!(r.status, 200, "publish: {}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// `EPOCH:OFFSET` → (epoch, offset).
pub fn pos(id: &str) -> (String, u64) {
    let (e, o) = id
        .split_once(':')
        .unwrap_or_else(|| panic!("not a position: {id}"));
    (e.to_string(), o.parse().unwrap())
}

// ---- raw request helpers shared by the HTTP tests -----------------------------------------

pub fn send(s: &mut TcpStream, raw: &[u8]) {
    s.write_all(raw).expect("write request");
}

pub fn get_raw(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

pub fn post_raw(path: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Sends `raw` on `s` and reads one response (not HEAD).
pub fn exchange(s: &mut TcpStream, raw: &[u8]) -> Response {
    send(s, raw);
    read_response(s, false).expect("a response")
}

/// The OFFSET of an `EPOCH:OFFSET` position.
pub fn offset(pos: &str) -> u64 {
    pos.rsplit_once(':')
        .and_then(|(_, o)| o.parse().ok())
        .unwrap_or_else(|| panic!("not a position: {pos}"))
}

/// The position just before `pos`, as a `since` cursor that replays `pos`.
pub fn before(pos: &str) -> String {
    let (epoch, _) = pos.rsplit_once(':').unwrap();
    format!("{epoch}:{}", offset(pos) - 1)
}

/// Asserts the server closed the connection; a reset also counts (the server closed with request bytes it
/// had no reason to read still queued).
pub fn assert_closed_or_reset(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("{what}: expected close, got {n} more bytes: {:?}", &b[..n]),
        Err(e) => panic!("{what}: expected close, got {e}"),
    }
}
