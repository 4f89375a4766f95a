#!/usr/bin/env bash
# Real-browser tests (tools/browser/README.md): installs what is missing (Debian's chromium,
# the pinned playwright-core), builds ringcast if needed, runs the browser client's unit tests
# (clients/js, node --test), sse-resume.mjs (EventSource; fetch + tokens) and client.mjs
# (clients/js/ringcast.js).
# Exits non-zero on failure; the last line is a one-line summary.
#   RINGCAST_BIN=path   use this ringcast binary instead of building target/debug/ringcast
#   BROWSER_TEST_VERBOSE=1   log every request and step
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
trap 'echo "browser: FAILED (setup step at run.sh line $LINENO exited $?)"' ERR

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "browser: FAILED ($1 is missing and installing it needs root: $2)" >&2
    exit 1
  fi
}

if [ ! -x /usr/bin/chromium ]; then
  need_root chromium "apt-get install -y chromium"
  echo "browser: installing chromium (apt-get)" >&2
  timeout 900 apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive timeout 1800 apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
# Node.js 20+ (playwright-core's floor) comes with this project's machine image; Debian's own
# nodejs (18 on bookworm) is too old, so it is not installed from here.
node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "browser: FAILED (Node.js >= 20 is required, found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

cd "$here"
want="$(node -p 'require("./package.json").dependencies["playwright-core"]')"
have="$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')"
if [ "$have" != "$want" ]; then
  echo "browser: npm ci" >&2
  timeout 600 npm ci --no-audit --no-fund --loglevel=error >&2
fi

if [ -z "${RINGCAST_BIN:-}" ]; then
  # cargo build is a no-op when the binary is up to date.
  (cd "$root" && timeout 1800 cargo build --locked --quiet --bin ringcast)
  export RINGCAST_BIN="$root/target/debug/ringcast"
fi

trap - ERR
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Each part runs whatever the others did; the last line sums them up.
timeout 60 node --test "$root/clients/js/test/unit.test.mjs" >"$tmp/unit" 2>&1
unit=$?
unit_pass="$(sed -n 's/^# pass //p' "$tmp/unit")"
unit_fail="$(sed -n 's/^# fail //p' "$tmp/unit")"
if [ "$unit" -ne 0 ]; then cat "$tmp/unit"; fi
# The HMAC secret of sse-resume.mjs's auth scenario: ringcast reads it, the script mints
# HS256 tokens from it with node's crypto.
head -c 48 /dev/urandom | base64 -w0 >"$tmp/jwt.secret"
JWT_SECRET_FILE="$tmp/jwt.secret" timeout 180 node "$here/sse-resume.mjs" | tee "$tmp/sse"
sse=${PIPESTATUS[0]}
timeout 240 node "$here/client.mjs" | tee "$tmp/client"
client=${PIPESTATUS[0]}
# The status page (issue 17): status.mjs, screenshots in target/browser-artifacts/.
timeout 120 node "$here/status.mjs" | tee "$tmp/status"
status=${PIPESTATUS[0]}
summary="unit: ${unit_pass:-0} passed, ${unit_fail:-?} failed | $(tail -n1 "$tmp/sse") | $(tail -n1 "$tmp/client") | $(tail -n1 "$tmp/status")"
if [ "$unit" -ne 0 ] || [ "$sse" -ne 0 ] || [ "$client" -ne 0 ] || [ "$status" -ne 0 ]; then
  echo "browser: FAILED ($summary)"
  exit 1
fi
echo "browser: ok ($summary)"
