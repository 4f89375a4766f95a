//! Autobahn|Testsuite conformance (cases 1–10) as part of `cargo test`.
//!
//! Runs `tools/autobahn/install.sh` (idempotent; a Python 2.7 venv under target/) and
//! `tools/autobahn/run.sh`, which fails on any difference from
//! `tools/autobahn/expected-results.json` and on any case that is not OK or INFORMATIONAL:
//! the release binary with its default flags on both drivers (what users run; `tools/test.sh`
//! builds it before the tests), and this build's debug binary with `--shards 2 --heartbeat-secs
//! 0`. Bounded: 15 minutes for the whole run.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Runs `script` to completion or kills it at the deadline; returns its exit status and output.
fn run(script: &str, env: &[(&str, &Path)], deadline: Instant) -> (bool, String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!(
        "ringcast-autobahn-{}-{}.log",
        std::process::id(),
        script.replace('/', "_")
    ));
    let log = std::fs::File::create(&out).expect("log file");
    let mut child = Command::new(root.join(script))
        .current_dir(root)
        // The binary cargo built for this test run: run.sh must not call cargo (the build
        // directory is locked while tests run).
        .env("RINGCAST_BIN", env!("CARGO_BIN_EXE_ringcast"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group, so a timeout stops the server and wstest too.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on the process group of our own child.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    match status {
        Some(s) => (s.success(), text),
        None => (
            false,
            format!("{text}\n{script}: timed out after {TIMEOUT:?}"),
        ),
    }
}

/// The release binary next to this debug build (`target/release/ringcast`), which must be newer
/// than every source file: a stale one would test old code.
fn release_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let debug = Path::new(env!("CARGO_BIN_EXE_ringcast"));
    let bin = debug
        .parent()
        .and_then(Path::parent)
        .map(|t| t.join("release/ringcast"))
        .expect("target directory");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run `cargo build --release` first (tools/test.sh does)",
                bin.display()
            )
        });
    let newest = newest_mtime(&root.join("src"));
    assert!(
        built >= newest,
        "{} is older than src/: run `cargo build --release` first (tools/test.sh does)",
        bin.display()
    );
    bin
}

fn newest_mtime(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let t = if p.is_dir() {
            newest_mtime(&p)
        } else {
            e.metadata().and_then(|m| m.modified()).unwrap()
        };
        newest = newest.max(t);
    }
    newest
}

#[test]
fn autobahn_fuzzingclient_cases_1_to_10_match_expected_results() {
    let deadline = Instant::now() + TIMEOUT;
    let release = release_binary();
    let (ok, out) = run("tools/autobahn/install.sh", &[], deadline);
    assert!(ok, "tools/autobahn/install.sh failed:\n{out}");
    // What users run: the release build, default flags, io_uring and epoll.
    let (ok, out) = run(
        "tools/autobahn/run.sh",
        &[
            ("RINGCAST_BIN", &release),
            ("AUTOBAHN_CONFIGS", Path::new("defaults epoll")),
        ],
        deadline,
    );
    assert!(ok, "tools/autobahn/run.sh (release) failed:\n{out}");
    print!("{out}");
    // This build, two shards: a connection and its topic's home on different cores.
    let (ok, out) = run(
        "tools/autobahn/run.sh",
        &[("AUTOBAHN_CONFIGS", Path::new("test"))],
        deadline,
    );
    assert!(ok, "tools/autobahn/run.sh (debug) failed:\n{out}");
    print!("{out}");
}
