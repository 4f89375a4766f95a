#!/usr/bin/env bash
# WebSocket echo on one core: ringcast (--shards 1, raw mode: a client's message is published to
# its own topic and so comes back to it) beside the axum + tokio broadcast peer (1 worker), in
# the same run. Each server is pinned to core 0, the load tool to core 1. Servers alternate over
# ROUNDS rounds (default 2); each run prints the load tool's summary plus the server's CPU
# seconds and round trips per server CPU-second, and appends one JSON line to RESULTS.
# Usage: ROUNDS=2 [RESULTS=file.jsonl] [BIN=path/to/ringcast] tools/bench/echo.sh [seconds] [connections] [size]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
SECS=${1:-5}
CONNS=${2:-100}
SIZE=${3:-512}
PORT_RC=18490
PORT_AX=18493
RESULTS=${RESULTS:-bench-results/echo-$(date -u +%Y-%m-%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$RESULTS")"
BIN=${BIN:-target/release/ringcast}
LOAD=target/release/ringcast-load
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release -q --workspace

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # name pid url
  local name=$1 pid=$2 url=$3 before after out
  before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 "$LOAD" echo --connections "$CONNS" --size "$SIZE" --seconds "$SECS" --url "$url" --quiet)
  after=$(cpu_ticks "$pid")
  python3 - "$name" "$round" "$before" "$after" "$(getconf CLK_TCK)" "$out" "$RESULTS" <<'EOF'
import json, sys
name, rnd, b, a, hz, out, path = sys.argv[1:]
d = json.loads(out)
cpu = (float(a) - float(b)) / float(hz)
rt = d["round_trips_per_sec"]
per = rt * d.get("seconds", 0) / cpu if cpu > 0 else None
d.update({"label": f"echo {name} r{rnd}", "name": name, "round": int(rnd), "server_cpu_seconds": cpu,
          "round_trips_per_cpu_second": per})
open(path, "a").write(json.dumps(d) + "\n")
lat = d.get("latency_us", {})
print(f"{name:24} {rt:9.0f} round trips/s  p50 {lat.get('p50', 0)/1e3:6.2f} ms  p99 {lat.get('p99', 0)/1e3:6.2f} ms"
      f"  server cpu {cpu:5.2f} s  {per or 0:9.0f} per cpu-s")
EOF
}

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"
echo "# echo: $CONNS connections x $SIZE B, ${SECS}s, one message in flight per connection; server on core 0, load on core 1"
for round in $(seq "$ROUNDS"); do
  taskset -c 0 "$BIN" --listen 127.0.0.1:$PORT_RC --shards 1 --no-pin --log-level warn &
  RC=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null && break; sleep 0.05; done
  run "ringcast --shards 1" "$RC" "ws://127.0.0.1:$PORT_RC/ws/{topic}"
  kill -TERM "$RC"; wait "$RC" 2>/dev/null || true

  AX=$(PORT=$PORT_AX THREADS=1 tools/peers/axum/run.sh start 2>/dev/null)
  taskset -a -p -c 0 "$AX" >/dev/null
  run "axum 1 worker" "$AX" "ws://127.0.0.1:$PORT_AX/ws/{topic}"
  PORT=$PORT_AX tools/peers/axum/run.sh stop >/dev/null 2>&1
done
echo "results in $RESULTS"
