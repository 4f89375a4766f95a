//! What operators use, end to end on the real binary: `/stats` figures that move under
//! traffic, the `/status` page, `--admin-token` refusals, settings from `RINGCAST_*`
//! variables and a `--config` file with their precedence, `--check-config`, and JSON log lines.

#[path = "support/server.rs"]
mod server;
#[path = "support/wsraw.rs"]
mod wsraw;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use server::{run_to_exit, Response, Server};

fn get(s: &Server, path: &str, headers: &str) -> Response {
    s.request(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
}

/// Polls `/stats` until `ok` holds for it (bounded); returns the last answer.
fn wait_stats(
    s: &Server,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let r = s.get("/stats");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("/stats is JSON");
        if ok(&v) || t.elapsed() > within {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stats_figures_move_under_traffic() {
    let s = Server::start(&["--shards", "2"]);
    let idle = wait_stats(&s, Duration::from_secs(1), |_| true);
    assert_eq!(idle["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(idle["shards"], 2);
    assert!(idle["rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert_eq!(idle["connections"]["sse"], 0);
    assert!(idle.get("redis").is_none(), "no backplane: no redis field");
    for k in [
        "publishes_per_sec",
        "deliveries_per_sec",
        "topics",
        "uptime_secs",
    ] {
        assert!(idle[k].is_number(), "{k}: {idle}");
    }
    assert_eq!(idle["inbox"]["per_shard"].as_array().unwrap().len(), 2);

    // An SSE subscriber, a raw and a v1 WebSocket, a waiting long poll.
    let mut sse = s.connect();
    sse.write_all(b"GET /sse/load HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let _raw = wsraw::upgrade(s.addr, "/ws/load");
    let mut v1 = std::net::TcpStream::connect(s.addr).unwrap();
    v1.write_all(
        b"GET /ws/load HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: ringcast.v1\r\n\r\n",
    )
    .unwrap();
    let pos = s.current("quiet");
    let mut lp = s.connect();
    write!(
        lp,
        "GET /poll/quiet?since={pos}&wait=20 HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    .unwrap();
    let v = wait_stats(&s, Duration::from_secs(5), |v| {
        let c = &v["connections"];
        c["sse"] == 1
            && c["websocket_raw"] == 1
            && c["websocket_v1"] == 1
            && c["long_polls_waiting"] == 1
    });
    let c = &v["connections"];
    assert_eq!(
        (
            &c["sse"],
            &c["websocket_raw"],
            &c["websocket_v1"],
            &c["long_polls_waiting"]
        ),
        (&1.into(), &1.into(), &1.into(), &1.into()),
        "{v}"
    );
    // This request's own connection is plain HTTP.
    assert!(c["http"].as_i64().unwrap() >= 1, "{v}");
    assert!(c["total"].as_i64().unwrap() >= 5, "{v}");

    // Publishes for about three seconds: totals and per-second rates move.
    let before = v["totals"]["published"].as_i64().unwrap();
    let mut p = s.connect();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_secs(3) {
        server::publish_on(&mut p, "load", b"tick");
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    // The series is rates between shard 0's once-a-second samples; a busy CI host can hold
    // its ticker back, so wait for two rates rather than assume them after three seconds.
    let v = wait_stats(&s, Duration::from_secs(10), |v| {
        v["deliveries_per_sec"].as_f64().unwrap() > 0.0
            && v["publishes_per_sec"].as_f64().unwrap() > 0.0
            && v["series"]["t"].as_array().is_some_and(|t| t.len() >= 2)
            && v["totals"]["delivered"].as_i64().unwrap() >= 3 * n
    });
    assert_eq!(
        v["totals"]["published"].as_i64().unwrap() - before,
        n,
        "{v}"
    );
    // Three subscribers got every message.
    assert!(v["totals"]["delivered"].as_i64().unwrap() >= 3 * n, "{v}");
    assert!(v["publishes_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{v}");
    assert!(
        v["rates"]["publishes_per_sec"].as_f64().unwrap() > 0.0,
        "{v}"
    );
    let series = &v["series"];
    let len = series["t"].as_array().unwrap().len();
    assert!(len >= 2, "{v}");
    for k in ["publishes_per_sec", "deliveries_per_sec", "connections"] {
        assert_eq!(series[k].as_array().unwrap().len(), len, "{k}");
    }
    assert!(series["deliveries_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x.as_f64().unwrap() > 0.0));
    assert!(v["topics"].as_i64().unwrap() >= 2, "{v}");
    let mut sink = [0u8; 256];
    let _ = sse.read(&mut sink);
}

#[test]
fn status_is_one_html_page_with_nothing_from_elsewhere() {
    let s = Server::start(&[]);
    let r = s.get("/status");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let page = r.text();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<svg") && page.contains("fetch(\"/stats\""));
    for external in [
        "http://",
        "https://",
        "src=\"//",
        "href=\"//",
        "@import",
        "<link",
    ] {
        assert!(!page.contains(external), "the page loads {external}");
    }
    let mut c = s.connect();
    c.write_all(b"HEAD /status HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let h = server::read_response(&mut c, true).unwrap();
    assert_eq!(h.status, 200);
    assert!(h.body.is_empty());
    let p = s.request(
        b"POST /stats HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(p.status, 405);
}

#[test]
fn admin_token_guards_stats_and_status() {
    // Loopback is trusted by default.
    let s = Server::start(&["--admin-token", "admin-secret-value"]);
    assert_eq!(s.get("/stats").status, 200);
    drop(s);

    // `--admin-loopback off` makes this loopback client a stranger, as behind a local proxy.
    let s = Server::start(&["--admin-loopback", "off"]);
    let r = s.get("/stats");
    assert_eq!(r.status, 403, "no --admin-token: nobody but loopback");
    drop(s);

    let s = Server::start(&[
        "--admin-loopback",
        "off",
        "--admin-token",
        "admin-secret-value",
    ]);
    for path in ["/stats", "/status"] {
        let r = get(&s, path, "");
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
        assert_eq!(get(&s, path, "Authorization: Bearer wrong\r\n").status, 403);
        assert_eq!(get(&s, &format!("{path}?token=wrong"), "").status, 403);
        let ok = get(&s, path, "Authorization: Bearer admin-secret-value\r\n");
        assert_eq!(ok.status, 200, "{path}");
        let ok = get(&s, &format!("{path}?token=admin-secret-value"), "");
        assert_eq!(ok.status, 200, "{path}");
    }
    assert!(s.metric("ringcast_auth_refused_total") >= 6);
    // The refusals are logged, their targets redacted.
    assert!(s.wait_log("token=REDACTED", Duration::from_secs(5)));
    assert!(!s.log().contains("admin-secret-value"));
    assert!(!s.log().contains("token=wrong"));
    // Other routes are not the admin's.
    assert_eq!(s.get("/healthz").status, 200);
}

/// A file under the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn to_str(&self) -> Option<&str> {
        self.0.to_str()
    }
    fn display(&self) -> std::path::Display<'_> {
        self.0.display()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    let p = std::env::temp_dir().join(format!("ringcast-ops-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    TempFile(p)
}

/// `ringcast ARGS` with `env`, to its exit: (status, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("ringcast {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().unwrap_or(-1), out, err)
}

#[test]
fn check_config_prints_every_setting_and_its_source() {
    // A public topic needs a key to check tokens with (`--check-config` loads it too).
    let secret = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys/hmac.secret");
    let f = temp_file(
        "check.toml",
        &format!(
            "max-topics = 5\nhistory_secs = 60\npublic-topic = [\"news/*\", \"tick\"]\n\
             admin-token = \"file-admin-secret\"\nslow-client = \"drop\"\n\
             jwt-secret-file = {:?}\n",
            secret.to_str().unwrap()
        ),
    );
    let (code, out, err) = run(
        &[
            "--check-config",
            "--config",
            f.to_str().unwrap(),
            "--history-secs",
            "7",
        ],
        &[
            ("RINGCAST_MAX_TOPICS", "50"),
            ("RINGCAST_PUBLISH_TOKEN", "env-pub-secret"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("max-topics = 50  # env RINGCAST_MAX_TOPICS"),
        "{out}"
    );
    assert!(out.contains("history-secs = 7  # flag"), "{out}");
    let file = format!("# file {}", f.display());
    assert!(
        out.contains(&format!("public-topic = [\"news/*\", \"tick\"]  {file}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("slow-client = \"drop\"  {file}")),
        "{out}"
    );
    assert!(
        out.contains("listen = \"127.0.0.1:8080\"  # default"),
        "{out}"
    );
    assert!(out.contains("publish-token = \"REDACTED\"  # env RINGCAST_PUBLISH_TOKEN"));
    assert!(out.contains(&format!("admin-token = \"REDACTED\"  {file}")));
    for secret in ["file-admin-secret", "env-pub-secret"] {
        assert!(!out.contains(secret), "a secret printed: {out}");
    }

    // A bad configuration exits non-zero and says what and where.
    let bad = temp_file("bad.toml", "max-topics = 5\nmax-topicz = 6\n");
    let (code, out, err) = run(&["--check-config", "--config", bad.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(out.is_empty());
    assert!(
        err.contains("max-topicz") && err.contains("bad.toml"),
        "{err}"
    );
    let (code, _, err) = run(&["--check-config"], &[("RINGCAST_HEARTBEAT_SECS", "-1")]);
    assert_ne!(code, 0);
    assert!(err.contains("RINGCAST_HEARTBEAT_SECS"), "{err}");
    let (code, _, err) = run(&["--check-config", "--config", "/nonexistent/r.toml"], &[]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/r.toml"), "{err}");
    let (code, _, err) = run(
        &["--check-config"],
        &[("RINGCAST_CLIENT_BUFFER_BYTES", "0")],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--client-buffer-bytes"), "{err}");
}

#[test]
fn a_server_takes_its_settings_from_env_and_file() {
    // String (publish token) and repeatable (public topics) from the file, a number from the
    // environment over the file, a switch from the environment.
    let f = temp_file(
        "serve.toml",
        "max-topic-bytes = 4\npublish-token = \"file-token\"\npoll-limit = 1\n",
    );
    let s = Server::start_env(
        &["--config", f.to_str().unwrap(), "--poll-limit", "2"],
        &[
            ("RINGCAST_MAX_TOPIC_BYTES", "8"),
            ("RINGCAST_NO_PIN", "true"),
        ],
    );
    assert_eq!(
        s.get("/poll/abcdefgh").status,
        200,
        "8 bytes from the environment"
    );
    assert_eq!(s.get("/poll/abcdefghi").status, 400);
    assert_eq!(
        s.post("/pub/abc", b"x").status,
        401,
        "the file's publish token"
    );
    let r = s.request(
        b"POST /pub/abc HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer file-token\r\n\
          Content-Length: 1\r\nConnection: close\r\n\r\nx",
    );
    assert_eq!(r.status, 200);
    for _ in 0..2 {
        let r = s.request(
            b"POST /pub/abc HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer file-token\r\n\
              Content-Length: 1\r\nConnection: close\r\n\r\ny",
        );
        assert_eq!(r.status, 200);
    }
    let pos = s.current("abc");
    let first = format!("{}:0", pos.split(':').next().unwrap());
    let r = s.get(&format!("/poll/abc?since={first}"));
    assert_eq!(
        r.json()["messages"].as_array().unwrap().len(),
        2,
        "--poll-limit 2 from the flag beats the file's 1"
    );
    assert!(
        s.log().contains("pin=false"),
        "RINGCAST_NO_PIN: {}",
        s.log()
    );

    // An unknown key stops the start with the key and the file named.
    let bad = temp_file("serve-bad.toml", "pubish-token = \"x\"\n");
    let (st, err) = run_to_exit(
        &["--config", bad.to_str().unwrap()],
        &[],
        Duration::from_secs(10),
    );
    assert!(!st.expect("exits").success());
    assert!(
        err.contains("pubish-token") && err.contains("serve-bad.toml"),
        "{err}"
    );
}

#[test]
fn json_log_lines_parse() {
    let s = Server::start(&["--log-format", "json", "--shards", "2"]);
    // A bad request and a publish: debug lines from shards, about peers.
    s.request(b"GET /sse/bad%ZZ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    s.publish("j", b"x");
    assert!(s.wait_log("invalid percent-encoding", Duration::from_secs(5)));
    let log = s.log();
    let mut with_shard = 0;
    let mut with_peer = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["ts"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(["error", "warn", "info", "debug"].contains(&v["level"].as_str().unwrap()));
        assert!(v["msg"].is_string());
        with_shard += v.get("shard").is_some() as usize;
        with_peer += v.get("peer").is_some() as usize;
    }
    assert!(log.contains("listening on"));
    assert!(with_shard >= 1 && with_peer >= 1, "{log}");
}
