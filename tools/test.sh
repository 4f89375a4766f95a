#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need, then runs them.
# README.md's test command; .ci/run runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi

# tests/autobahn.rs: the Autobahn|Testsuite in a Python 2.7 venv under target/ (idempotent, quiet).
./tools/autobahn/install.sh

# Every test binary (unit, integration, doc) in one run; the benches are built, not timed.
cargo test --workspace --all-targets --locked
