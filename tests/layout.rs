//! The architecture invariants a grep can check, so a newcomer's patch cannot quietly break them.
//!
//! `src/codec/` is pure protocol code (ARCHITECTURE.md, "Architecture Invariant"): bytes in,
//! status out, time passed in as a value. It never names the async runtime, the socket API, the
//! OS clock or the shard, and, being the bottom of the module stack, imports nothing from the
//! crate outside itself. A file that merely *mentions* one of these (even in a comment) fails:
//! the codec has no reason to talk about them.
//!
//! `src/sys/` holds every libc call and every `unsafe` block (DESIGN.md, "Where things live"):
//! outside it, code does not name `libc::`, and the only `unsafe` is the short list below, each
//! entry saying why the proof obligation cannot move into `sys`.

use std::fs;
use std::path::{Path, PathBuf};

/// What `src/codec/` must never name, and why.
const FORBIDDEN_IN_CODEC: &[(&str, &str)] = &[
    ("monoio", "the async runtime"),
    ("tokio", "an async runtime"),
    ("std::net", "sockets"),
    ("TcpStream", "sockets"),
    ("TcpListener", "sockets"),
    ("libc", "syscalls"),
    ("std::fs", "files"),
    ("Instant::now", "the clock (time is a parameter)"),
    ("SystemTime", "the clock (time is a parameter)"),
    ("crate::shard", "the shard (codecs are below it)"),
];

/// `unsafe` blocks outside `src/sys/`: (file, the exact line, why it is not in `sys`).
const UNSAFE_OUTSIDE_SYS: &[(&str, &str, &str)] = &[(
    "src/shard/stream/park.rs",
    "unsafe { socket::close(out.fd) };",
    "that a parked stream's `Out` owns its fd is the shard's invariant, so the shard argues it",
)];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn codec_files() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/codec");
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths.sort();
    // The walk itself must have found the codecs, or every check below passes vacuously.
    for must in ["mod.rs", "sse.rs", "position.rs", "route.rs"] {
        assert!(
            paths.iter().any(|p| p.ends_with(must)),
            "src/codec/{must} not found: is the walk broken?"
        );
    }
    paths
        .into_iter()
        .map(|p| {
            let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, text)
        })
        .collect()
}

#[test]
fn codec_never_names_io_the_clock_or_the_shard() {
    let mut found = Vec::new();
    for (path, text) in codec_files() {
        for (n, line) in text.lines().enumerate() {
            for (needle, what) in FORBIDDEN_IN_CODEC {
                if line.contains(needle) {
                    found.push(format!(
                        "{}:{}: `{needle}` ({what}): {}",
                        path.display(),
                        n + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/codec/ must stay pure (no I/O, no clock, no shard):\n{}",
        found.join("\n")
    );
}

#[test]
fn codec_imports_nothing_of_the_crate_outside_codec() {
    let mut found = Vec::new();
    for (path, text) in codec_files() {
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                if !rest.starts_with("codec") {
                    found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    break;
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "src/codec/ is the bottom of the module stack; it may use only `crate::codec`:\n{}",
        found.join("\n")
    );
}

#[test]
fn libc_and_unsafe_live_in_sys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    let sys = root.join("src/sys");
    assert!(
        paths.iter().any(|p| p.starts_with(&sys)),
        "src/sys not found"
    );
    let mut found = Vec::new();
    let mut excepted = Vec::new();
    for path in paths.iter().filter(|p| !p.starts_with(&sys)) {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for (n, line) in text.lines().enumerate() {
            let code = line.trim();
            if code.starts_with("//") {
                continue;
            }
            let is_unsafe = ["unsafe {", "unsafe fn", "unsafe impl", "unsafe extern"]
                .iter()
                .any(|u| code.contains(u));
            if is_unsafe
                && UNSAFE_OUTSIDE_SYS
                    .iter()
                    .any(|(f, l, _)| *f == rel && *l == code)
            {
                excepted.push((rel.clone(), code.to_string()));
            } else if is_unsafe || code.contains("libc::") {
                found.push(format!("{rel}:{}: {code}", n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "libc calls and unsafe belong in src/sys/ (or, argued, in UNSAFE_OUTSIDE_SYS):\n{}",
        found.join("\n")
    );
    for (file, line, _) in UNSAFE_OUTSIDE_SYS {
        assert!(
            excepted.iter().any(|(f, l)| f == file && l == line),
            "stale exception, remove it: {file}: {line}"
        );
    }
}

#[test]
fn unsafe_stays_fenced_and_argued() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let read = |p: &str| fs::read_to_string(src.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert!(
        read("codec/mod.rs").contains("#![forbid(unsafe_code)]"),
        "src/codec/mod.rs must forbid unsafe code"
    );
    assert!(
        read("lib.rs")
            .contains("#![deny(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]"),
        "src/lib.rs must deny undocumented unsafe"
    );
}

#[test]
fn the_checks_catch_what_they_look_for() {
    // The needles are matched as plain substrings: make sure a typical offending line hits.
    let offending = [
        "use monoio::net::TcpStream;",
        "let now = std::time::Instant::now();",
        "let n = unsafe { libc::recv(fd, p, len, 0) };",
        "use crate::shard::Shard;",
        "let t = std::time::SystemTime::now();",
        "use std::net::SocketAddr;",
    ];
    for line in offending {
        assert!(
            FORBIDDEN_IN_CODEC.iter().any(|(n, _)| line.contains(n)),
            "{line}"
        );
    }
}
