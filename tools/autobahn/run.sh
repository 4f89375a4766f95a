#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingclient (cases 1–10) against a real ringcast, diffed with the committed
# expected-results.json (tungstenite's scripts/autobahn-server.sh habit): any change fails, and
# every case must be OK or INFORMATIONAL (compare.py).
#
#   tools/autobahn/run.sh              debug binary (built if needed)
#   tools/autobahn/run.sh --release    release binary
#   tools/autobahn/run.sh --update     rewrite expected-results.json from this run
#
# Each run covers every server configuration in AUTOBAHN_CONFIGS (default "defaults epoll test"),
# one fresh server each:
#   defaults  the binary's default flags (io_uring, one shard per core, heartbeats on); only
#             --max-message-bytes is raised, for 9.x's 16 MiB messages
#   epoll     the same on the epoll driver
#   test      --shards 2 --heartbeat-secs 0 (the flags the suite always used): the connection and the topic's home on different
#             shards, and no server ping inside a case
# Env: RINGCAST_BIN (use this binary, build nothing — tests/autobahn.rs sets it),
#      AUTOBAHN_UPDATE=1 (same as --update), AUTOBAHN_CASES (default "1.* ... 10.*", comma list),
#      AUTOBAHN_CONFIGS (space list of the names above).
# Needs tools/autobahn/install.sh first. Reports land in target/autobahn/CONFIG/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
profile=debug
update="${AUTOBAHN_UPDATE:-0}"
for a in "$@"; do
  case "$a" in
    --release) profile=release ;;
    --update) update=1 ;;
    *) echo "usage: $0 [--release] [--update]" >&2; exit 2 ;;
  esac
done

wstest="${AUTOBAHN_VENV:-$root/target/autobahn-venv}/bin/wstest"
if [[ ! -x "$wstest" ]]; then
  echo "autobahn: $wstest missing; run tools/autobahn/install.sh first" >&2
  exit 1
fi

bin="${RINGCAST_BIN:-}"
if [[ -z "$bin" ]]; then
  flag=()
  [[ $profile == release ]] && flag=(--release)
  (cd "$root" && cargo build --quiet --locked --bin ringcast "${flag[@]}")
  bin="$root/target/$profile/ringcast"
fi

# 9.x sends 16 MiB messages (and 4 MiB ones in thousands of fragments): the message bound is raised.
# Every case uses the same URL (one topic); the fuzzingclient runs cases one at a time and each
# connection is closed before the next opens, so a case only ever hears its own echo.
flags_of() {
  case "$1" in
    defaults) echo "--max-message-bytes 67108864" ;;
    epoll) echo "--max-message-bytes 67108864 --driver epoll" ;;
    test) echo "--max-message-bytes 16777216 --shards 2 --heartbeat-secs 0" ;;
    *) echo "autobahn: unknown configuration $1" >&2; return 1 ;;
  esac
}

cases="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*}"
mode=check
[[ $update == 1 ]] && mode=update

# Runs the fuzzingclient against one fresh server started with configuration $1.
run_config() {
  local config=$1 work="$root/target/autobahn/$1" flags pid addr=""
  flags=$(flags_of "$config")
  rm -rf "$work"
  mkdir -p "$work"
  local srvlog="$work/server.log" wslog="$work/wstest.log"
  # Port 0: the kernel picks a free port and the server says which in its first log line.
  # shellcheck disable=SC2086
  "$bin" --listen 127.0.0.1:0 $flags >/dev/null 2>"$srvlog" &
  pid=$!
  for _ in $(seq 200); do
    addr="$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$srvlog" | head -n1)"
    [[ -n "$addr" ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.05
  done
  if [[ -z "$addr" ]]; then
    echo "autobahn [$config]: ringcast did not start:" >&2
    cat "$srvlog" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  python3 - "$work/spec.json" "$addr" "$cases" "$work/reports" <<'PY'
import json, sys
path, addr, cases, outdir = sys.argv[1:]
json.dump({
    "outdir": outdir,
    "servers": [{"agent": "ringcast", "url": "ws://%s/ws/autobahn" % addr}],
    "cases": cases.split(","),
    "exclude-cases": [],
    "exclude-agent-cases": {},
}, open(path, "w"), indent=2)
PY
  local start=$SECONDS elapsed
  if ! (cd "$work" && "$wstest" -m fuzzingclient -s "$work/spec.json") >"$wslog" 2>&1; then
    echo "autobahn [$config]: wstest failed (log: $wslog):" >&2
    tail -n 30 "$wslog" >&2
    kill "$pid" 2>/dev/null || true
    return 1
  fi
  elapsed=$((SECONDS - start))
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "autobahn [$config]: ringcast died during the run:" >&2
    tail -n 30 "$srvlog" >&2
    return 1
  fi
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  python3 "$here/compare.py" "$mode" "$work/reports/index.json" "$here/expected-results.json" \
    "$elapsed" "$config ($flags)"
}

failed=0
for config in ${AUTOBAHN_CONFIGS:-defaults epoll test}; do
  run_config "$config" || failed=1
done
exit $failed
