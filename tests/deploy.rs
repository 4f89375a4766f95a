//! `deploy/` tested as far as this machine can: the nginx front (`deploy/nginx.conf`) through
//! `nginx -t` and a real nginx carrying an SSE stream, a publish and a WebSocket to the real
//! binary; the systemd unit through `systemd-analyze verify` when the tool is there. The
//! Dockerfile is not built here (no container registry to pull its base images from).
//!
//! The nginx test is on by default and installs nginx when it is missing (apt-get, as root);
//! `RINGCAST_NGINX_TESTS=0` skips it. nginx runs in the foreground as this test's child, under
//! a private directory, on a free loopback port, and is stopped by its PID.

#[path = "support/server.rs"]
mod server;
#[path = "support/wsraw.rs"]
mod wsraw;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use server::Server;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ringcast-deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("tmp")).unwrap();
    d
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// nginx, installed with apt-get when missing (nginx-light where the release has it).
fn ensure_nginx() {
    if have("nginx") {
        return;
    }
    let root = Command::new("id").arg("-u").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&root.stdout).trim(),
        "0",
        "nginx is missing and installing it needs root: apt-get install -y nginx-light"
    );
    let ok = Command::new("sh")
        .args([
            "-c",
            "timeout 900 apt-get update -q >/dev/null && \
             (DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q nginx-light || \
              DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q nginx) >/dev/null",
        ])
        .status()
        .unwrap();
    assert!(ok.success() && have("nginx"), "could not install nginx");
}

/// nginx in the foreground as our child; dropped, it is stopped by its PID.
struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's PID: TERM is nginx's fast shutdown.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// deploy/nginx.conf with its `listen` and upstream address replaced, inside a main config
/// that keeps every file nginx writes under `dir`.
fn render(dir: &Path, port: u16, upstream: SocketAddr) -> PathBuf {
    let site = std::fs::read_to_string(root().join("deploy/nginx.conf")).unwrap();
    assert!(site.contains("    listen 80;\n") && site.contains("server 127.0.0.1:8080;"));
    let site = site
        .replace(
            "    listen 80;\n",
            &format!("    listen 127.0.0.1:{port};\n"),
        )
        .replace("server 127.0.0.1:8080;", &format!("server {upstream};"));
    std::fs::write(dir.join("ringcast.conf"), site).unwrap();
    let d = dir.display();
    let main = format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/tmp/body;\n  \
         proxy_temp_path {d}/tmp/proxy;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n  \
         uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n  \
         include {d}/ringcast.conf;\n}}\n"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, main).unwrap();
    conf
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Reads from `s` until `needle` has arrived (bounded by the socket's timeout and `within`).
fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &[u8], within: Duration) -> bool {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    while t.elapsed() < within {
        if got.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return false,
        }
    }
    got.windows(needle.len()).any(|w| w == needle)
}

/// The next frame that is not a ping (the heartbeat is every second here), bounded.
fn data_frame(ws: &mut TcpStream) -> (u8, Vec<u8>) {
    for _ in 0..20 {
        let (_, op, payload) = wsraw::read_frame(ws).expect("a frame through nginx");
        if op != 9 {
            return (op, payload);
        }
    }
    panic!("only pings");
}

#[test]
fn nginx_front_carries_sse_publish_and_websocket() {
    if std::env::var("RINGCAST_NGINX_TESTS").as_deref() == Ok("0") {
        eprintln!("nginx: skipped (RINGCAST_NGINX_TESTS=0)");
        return;
    }
    ensure_nginx();
    let rc = Server::start(&["--shards", "2", "--heartbeat-secs", "1"]);
    let dir = scratch("nginx");
    let port = free_port();
    let conf = render(&dir, port, rc.addr);
    let errlog = dir.join("error.log");
    let t = Command::new("nginx")
        .arg("-t")
        .arg("-q")
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(&errlog)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        t.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    let nginx = Nginx(
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(&errlog)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // On a failure, what nginx and ringcast said.
    struct Logs<'a>(&'a Server, PathBuf);
    impl Drop for Logs<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                eprintln!(
                    "--- nginx error log\n{}\n--- ringcast log\n{}",
                    std::fs::read_to_string(&self.1).unwrap_or_default(),
                    self.0.log()
                );
            }
        }
    }
    let _logs = Logs(&rc, errlog.clone());
    let front: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t = Instant::now();
    while TcpStream::connect(front).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nginx did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let connect = || {
        let s = TcpStream::connect(front).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    };

    // An SSE subscriber through nginx: the stream's opening and then, unbuffered, each event.
    // Both streams resume from the topic's position before the publish: a stream subscribes
    // just after its head (or 101) is written, and must not miss a publish racing it.
    let mut poll = connect();
    poll.write_all(b"GET /poll/front HTTP/1.1\r\nHost: push.example\r\n\r\n")
        .unwrap();
    let mut ans = Vec::new();
    assert!(read_until(
        &mut poll,
        &mut ans,
        b"\"}",
        Duration::from_secs(5)
    ));
    let text = String::from_utf8_lossy(&ans);
    let since = text
        .split("\"next\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("a poll answer through nginx: {text}"))
        .to_string();
    let mut sse = connect();
    write!(
        sse,
        "GET /sse/front?last_event_id={since} HTTP/1.1\r\nHost: push.example\r\n\
         Accept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    assert!(
        read_until(&mut sse, &mut got, b"retry:", Duration::from_secs(5)),
        "the stream's opening came through: {}",
        String::from_utf8_lossy(&got)
    );
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    // A WebSocket through nginx (raw mode: what it sends is published, and echoed to it).
    let mut ws = wsraw::upgrade(front, &format!("/ws/front?since={since}"));
    ws.set_read_timeout(Some(Duration::from_secs(5))).unwrap();

    // A publish through nginx reaches both.
    let mut p = connect();
    p.write_all(
        b"POST /pub/front HTTP/1.1\r\nHost: push.example\r\nContent-Length: 9\r\n\r\nvia-nginx",
    )
    .unwrap();
    let mut ans = Vec::new();
    assert!(read_until(
        &mut p,
        &mut ans,
        b"\"id\"",
        Duration::from_secs(5)
    ));
    assert!(String::from_utf8_lossy(&ans).starts_with("HTTP/1.1 200"));
    assert!(
        read_until(
            &mut sse,
            &mut got,
            b"data: via-nginx\n",
            Duration::from_secs(5)
        ),
        "the event came through unbuffered: {}",
        String::from_utf8_lossy(&got)
    );
    let (op, payload) = data_frame(&mut ws);
    assert_eq!((op, payload.as_slice()), (1, &b"via-nginx"[..]));

    // The WebSocket publishes through nginx: echoed to it, and an event on the SSE stream.
    let mut frame = Vec::new();
    wsraw::client_frame(&mut frame, true, 1, b"from-ws", [1, 2, 3, 4]);
    ws.write_all(&frame).unwrap();
    let (op, payload) = data_frame(&mut ws);
    assert_eq!((op, payload.as_slice()), (1, &b"from-ws"[..]));
    assert!(read_until(
        &mut sse,
        &mut got,
        b"data: from-ws\n",
        Duration::from_secs(5)
    ));
    // A quiet stream stays open through nginx: heartbeats pass (every second here).
    let mut rest = got.split_off(got.len());
    assert!(
        // nginx re-frames the close-delimited stream as chunks: `3\r\n:\n\n\r\n`.
        read_until(&mut sse, &mut rest, b":\n\n", Duration::from_secs(5)),
        "a heartbeat comment came through: {}",
        String::from_utf8_lossy(&rest)
    );
    let log = std::fs::read_to_string(&errlog).unwrap_or_default();
    assert!(!log.contains("[error]") && !log.contains("[crit]"), "{log}");
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_unit_verifies() {
    if !have("systemd-analyze") {
        eprintln!("systemd: skipped (systemd-analyze is not installed)");
        return;
    }
    // The unit as shipped, with ExecStart on this build's binary (verify checks it exists).
    let unit = std::fs::read_to_string(root().join("deploy/ringcast.service")).unwrap();
    assert!(unit.contains("LimitNOFILE=1065536"));
    let dir = scratch("systemd");
    let path = dir.join("ringcast.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/ringcast", env!("CARGO_BIN_EXE_ringcast")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // It only warns about an unknown key: any line about our file is a failure.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("ringcast.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unit_and_million_sh_agree_on_open_files() {
    // tools/million.sh: `ulimit -n $((CONNS + 65536))` for CONNS=1000000.
    let script = std::fs::read_to_string(root().join("tools/million.sh")).unwrap();
    assert!(script.contains("CONNS=${CONNS:-1000000}") && script.contains("$((CONNS + 65536))"));
    let unit = std::fs::read_to_string(root().join("deploy/ringcast.service")).unwrap();
    assert!(unit.contains(&format!("LimitNOFILE={}", 1_000_000 + 65_536)));
}

#[test]
fn the_shipped_settings_file_checks() {
    let out = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .arg("--check-config")
        .arg("--config")
        .arg(root().join("deploy/ringcast.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("admin-loopback = \"off\"  # file "), "{text}");
}
