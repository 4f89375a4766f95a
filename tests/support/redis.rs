//! Test harness: a real `redis-server` (Debian's), installed if missing, started on a free
//! loopback port with no persistence in a temp dir, and stopped by PID.
//!
//! Included by integration tests with `#[path = "support/redis.rs"] mod redis_server;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    /// Arguments after the defaults (`start_with`), kept for `restart`.
    extra: Vec<String>,
}

static INSTALL: Once = Once::new();

/// `redis-server` on the PATH, installed with apt-get when missing and we are root (as
/// tools/test.sh does for gcc); otherwise the test fails saying what to install.
fn ensure_installed() {
    INSTALL.call_once(|| {
        let found = || {
            Command::new("redis-server")
                .arg("--version")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if found() {
            return;
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if root {
            let _ = Command::new("apt-get")
                .args(["install", "-y", "-q", "redis-server"])
                .stdout(Stdio::null())
                .status();
        }
        assert!(
            found(),
            "redis-server is needed: apt-get install -y redis-server"
        );
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_on(None)
    }

    /// On `port` (a node may already be trying it), or on a free port.
    pub fn start_on(port: Option<u16>) -> RedisServer {
        Self::start_args(port, &[])
    }

    /// On a free port, with `extra` arguments after the defaults (a later one wins in
    /// redis-server), e.g. `["--enable-debug-command", "yes"]`.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_args(None, extra)
    }

    fn start_args(port: Option<u16>, extra: &[&str]) -> RedisServer {
        ensure_installed();
        let dir = std::env::temp_dir().join(format!(
            "ringcast-redis-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
        // A port taken between free_port() and redis's bind makes it exit: try a few ports.
        for _ in 0..5 {
            let port = port.unwrap_or_else(free_port);
            if let Some(child) = spawn_ready(port, &dir, &extra) {
                return RedisServer {
                    child,
                    port,
                    dir,
                    extra,
                };
            }
        }
        panic!("redis-server did not start");
    }

    /// Waits (bounded) for this redis-server to exit, e.g. after `SHUTDOWN NOSAVE`; true if
    /// it did.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// A new redis-server process (so a new `run_id`) on the same port, with the same
    /// arguments and directory, once the old one has exited (killed if it has not within 5 s).
    pub fn restart(&mut self) {
        if !self.wait_exit(Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The port is ours again, but a client's connect may hold it for a moment: retry.
        for _ in 0..5 {
            if let Some(child) = spawn_ready(self.port, &self.dir, &self.extra) {
                self.child = child;
                return;
            }
        }
        panic!("redis-server did not restart on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One command in RESP, its first reply line (enough for PING, CONFIG SET, DEBUG).
    pub fn cmd(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }
}

/// A redis-server on `port` with the defaults and `extra`, once it answers PING; None if it
/// exited (its port was taken) or was late (then it is killed).
fn spawn_ready(port: u16, dir: &std::path::Path, extra: &[String]) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--protected-mode", "yes"])
        .args(["--maxmemory-policy", "noeviction"])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server");
    if wait_ready(&mut child, port, Duration::from_secs(10)) {
        return Some(child);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// PING answered within `within`, or false when redis exited (its port was taken) or is late.
fn wait_ready(child: &mut Child, port: u16, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            if s.write_all(b"PING\r\n").is_ok()
                && BufReader::new(s).read_line(&mut line).is_ok()
                && line.starts_with("+PONG")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
