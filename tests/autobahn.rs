//! Autobahn|Testsuite conformance (cases 1–10) as part of `cargo test`.
//!
//! Runs `tools/autobahn/install.sh` (idempotent; a Python 2.7 venv under target/) and
//! `tools/autobahn/run.sh` with this build's binary, which fails on any difference from
//! `tools/autobahn/expected-results.json`. Bounded: 15 minutes for the whole run.

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Runs `script` to completion or kills it at the deadline; returns its exit status and output.
fn run(script: &str, deadline: Instant) -> (bool, String) {
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

#[test]
fn autobahn_fuzzingclient_cases_1_to_10_match_expected_results() {
    let deadline = Instant::now() + TIMEOUT;
    let (ok, out) = run("tools/autobahn/install.sh", deadline);
    assert!(ok, "tools/autobahn/install.sh failed:\n{out}");
    let (ok, out) = run("tools/autobahn/run.sh", deadline);
    assert!(ok, "tools/autobahn/run.sh failed:\n{out}");
    print!("{out}");
}
