#!/usr/bin/env bash
# Autobahn|Testsuite fuzzingclient (cases 1–10) against a real ringcast, diffed with the committed
# expected-results.json (tungstenite's scripts/autobahn-server.sh habit): any change fails.
#
#   tools/autobahn/run.sh              debug binary (built if needed)
#   tools/autobahn/run.sh --release    release binary
#   tools/autobahn/run.sh --update     rewrite expected-results.json from this run
#
# Env: RINGCAST_BIN (use this binary, build nothing — tests/autobahn.rs sets it),
#      AUTOBAHN_UPDATE=1 (same as --update), AUTOBAHN_CASES (default "1.* ... 10.*", comma list).
# Needs tools/autobahn/install.sh first. Reports land in target/autobahn/.
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

work="$root/target/autobahn"
rm -rf "$work/reports"
mkdir -p "$work"
srvlog="$work/server.log"
wslog="$work/wstest.log"

# Port 0: the kernel picks a free port and the server says which in its first log line.
# --max-message-bytes: 9.x sends 16 MiB messages (and 4 MiB ones in thousands of fragments);
# Every case uses the same URL (one topic); the fuzzingclient runs cases one at a time and each
# connection is closed before the next opens, so a case only ever hears its own echo.
"$bin" --listen 127.0.0.1:0 --shards 2 --max-message-bytes 16777216 \
  --heartbeat-secs 0 >/dev/null 2>"$srvlog" &
pid=$!
stop() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap stop EXIT

addr=""
for _ in $(seq 200); do
  addr="$(sed -n 's/.*listening on \([0-9.]*:[0-9]*\).*/\1/p' "$srvlog" | head -n1)"
  [[ -n "$addr" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.05
done
if [[ -z "$addr" ]]; then
  echo "autobahn: ringcast did not start:" >&2
  cat "$srvlog" >&2
  exit 1
fi

cases="${AUTOBAHN_CASES:-1.*,2.*,3.*,4.*,5.*,6.*,7.*,8.*,9.*,10.*}"
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

start=$SECONDS
if ! (cd "$work" && "$wstest" -m fuzzingclient -s "$work/spec.json") >"$wslog" 2>&1; then
  echo "autobahn: wstest failed (log: $wslog):" >&2
  tail -n 30 "$wslog" >&2
  exit 1
fi
elapsed=$((SECONDS - start))
if ! kill -0 "$pid" 2>/dev/null; then
  echo "autobahn: ringcast died during the run:" >&2
  tail -n 30 "$srvlog" >&2
  exit 1
fi
stop
trap - EXIT

mode=check
[[ $update == 1 ]] && mode=update
python3 "$here/compare.py" "$mode" "$work/reports/index.json" "$here/expected-results.json" "$elapsed"
