#!/usr/bin/env bash
# wrk against GET /healthz: ringcast beside nginx `return 200`, in the same run.
# One core: each server on core 0 (ringcast --shards 1, nginx 1 worker), wrk on core 1.
# All cores: ringcast --shards N, nginx N workers, wrk unpinned (it competes for the cores).
# Prints one line per run: name, req/s, latency p50/p99 and the server's CPU seconds.
# The servers alternate over ROUNDS rounds (default 3), so a noisy neighbour hits both alike;
# compare the per-round ratios, not single numbers.
# With RESULTS=FILE, each run also appends one JSON line to FILE (read by tools/bench_report.py).
# With TARGET=poll, ringcast answers a short poll instead: one 128-byte message is published to
# topic `t` first, and wrk asks `GET /poll/t?since=EPOCH:0` (a one-message JSON answer with an
# ETag) — issue 6's short-polling target, still beside nginx `return 200`.
# BIN=path runs another ringcast build; ALL_CORES=0 skips the all-cores runs.
# Usage: ROUNDS=3 [TARGET=healthz|poll] [BIN=...] [ALL_CORES=0] [RESULTS=results.jsonl] tools/bench/http.sh [duration-seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DUR=${1:-10}
CONNS=${2:-256}
TARGET=${TARGET:-healthz}
PORT_RC=18480
PORT_NG=18481
N=$(nproc)
BIN=${BIN:-target/release/ringcast}
[ -x "$BIN" ] || cargo build --release -q

to_us() { # wrk latency (777.00us, 2.89ms, 1.05s) -> microseconds
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) print v + 0; else if (v ~ /ms$/) print v * 1000; else if (v ~ /s$/) print v * 1000000; else print "null" }'
}

cpu_secs() { # utime+stime of a process and its threads/children, in seconds
  local pid=$1 t=0
  for p in $pid $(pgrep -P "$pid" || true); do
    t=$(awk -v t="$t" '{print t + $14 + $15}' "/proc/$p/stat")
  done
  echo "scale=2; $t / $(getconf CLK_TCK)" | bc
}

run_wrk() { # name url wrk-cpu-list server-pid
  local name=$1 url=$2 cpus=$3 pid=$4 before after out
  before=$(cpu_secs "$pid")
  if [ -n "$cpus" ]; then
    out=$(taskset -c "$cpus" wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "$url")
  else
    out=$(wrk -t"$N" -c"$CONNS" -d"${DUR}s" --latency "$url")
  fi
  after=$(cpu_secs "$pid")
  local rps p50 p99
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  local cpu per
  cpu=$(echo "$after - $before" | bc)
  per=$(echo "scale=0; $rps * $DUR / $cpu" | bc 2>/dev/null || echo "?")
  printf '%-24s %10s req/s  p50 %8s  p99 %8s  server cpu %6ss  %8s req/cpu-s\n' "$name" "$rps" "$p50" "$p99" "$cpu" "$per"
  if [ -n "${RESULTS:-}" ]; then
    printf '{"label": "wrk %s %s", "mode": "wrk", "bench": "%s", "name": "%s", "round": %s, "connections": %s, "seconds": %s, "requests_per_sec": %s, "latency_us": {"p50": %s, "p99": %s}, "server_cpu_seconds": %s, "requests_per_cpu_second": %s}\n' \
      "$TARGET" "$name" "$TARGET" "$name" "$round" "$CONNS" "$DUR" "${rps:-null}" "$(to_us "$p50")" "$(to_us "$p99")" "$(printf %.2f "${cpu:-0}")" "$( [ "$per" = "?" ] && echo null || echo "$per")" >>"$RESULTS"
  fi
}

start_ringcast() { # shards
  taskset -c 0-$((N - 1)) "$BIN" --listen 127.0.0.1:$PORT_RC --shards "$1" --log-level warn &
  RC_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null && break; sleep 0.05; done
  curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null || { echo "ringcast did not start" >&2; exit 1; }
  RC_PATH=/healthz
  if [ "$TARGET" = poll ]; then
    local pos
    pos=$(head -c 128 /dev/zero | tr '\0' x | curl -sf --data-binary @- "http://127.0.0.1:$PORT_RC/pub/t")
    pos=$(echo "$pos" | grep -o '[0-9a-f]\+:[0-9]\+' | head -1)
    RC_PATH="/poll/t?since=${pos%%:*}:0"
  fi
}

stop_ringcast() { kill -TERM "$RC_PID"; wait "$RC_PID" || true; }

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(rustc --version)"
echo "# wrk ${DUR}s, $CONNS connections, keep-alive, GET $( [ "$TARGET" = poll ] && echo '/poll/t?since=E:0' || echo /healthz ) (ringcast) vs return 200 (nginx)"

for round in $(seq "$ROUNDS"); do
echo "## round $round"
# One core.
start_ringcast 1
run_wrk "ringcast --shards 1" "http://127.0.0.1:$PORT_RC$RC_PATH" 1 "$RC_PID"
stop_ringcast
NG_PID=$(PORT=$PORT_NG WORKERS=1 tools/peers/nginx/run.sh start 2>/dev/null)
taskset -a -p -c 0 "$NG_PID" >/dev/null; for w in $(pgrep -P "$NG_PID"); do taskset -p -c 0 "$w" >/dev/null; done
run_wrk "nginx 1 worker" "http://127.0.0.1:$PORT_NG/healthz" 1 "$NG_PID"
PORT=$PORT_NG tools/peers/nginx/run.sh stop >/dev/null 2>&1

# All cores.
[ "${ALL_CORES:-1}" = 0 ] && continue
start_ringcast "$N"
run_wrk "ringcast --shards $N" "http://127.0.0.1:$PORT_RC$RC_PATH" "" "$RC_PID"
stop_ringcast
NG_PID=$(PORT=$PORT_NG WORKERS=$N tools/peers/nginx/run.sh start 2>/dev/null)
run_wrk "nginx $N workers" "http://127.0.0.1:$PORT_NG/healthz" "" "$NG_PID"
PORT=$PORT_NG tools/peers/nginx/run.sh stop >/dev/null 2>&1
done
