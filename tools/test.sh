#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, checks formatting
# and lints, then runs the tests.
# README.md's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# The server's allocator (tikv-jemallocator) builds jemalloc from C sources: it needs cc and make.
if ! command -v cc >/dev/null 2>&1 || ! command -v make >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get install -y -q gcc make >/dev/null
  else
    echo "a C compiler (cc) and make are required to build jemalloc" >&2
    exit 1
  fi
fi

# tests/redis_*.rs start a real redis-server (Debian's); they install it themselves when missing,
# this only does it once up front.
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -q redis-server >/dev/null
fi

# The gates, before the suite: default rustfmt, and clippy clean with -D warnings on every
# target (src/lib.rs also denies undocumented unsafe blocks and `unsafe fn`s without `# Safety`).
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  else
    echo "cargo fmt and cargo clippy are required (rustup component add rustfmt clippy)" >&2
    exit 1
  fi
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# tests/autobahn.rs: the Autobahn|Testsuite in a Python 2.7 venv under target/ (idempotent, quiet).
./tools/autobahn/install.sh

# tests/autobahn.rs runs the suite against the release binary too (what users run).
cargo build --release --locked --bin ringcast

# Every unit and integration test binary in one run (--all-targets runs no doctests); the
# benches are built, not timed.
cargo test --workspace --all-targets --locked
