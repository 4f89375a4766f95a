#!/usr/bin/env bash
# wrk POST throughput: ringcast's publish beside nginx+nchan's nchan_publisher, same run,
# both with every core (ringcast --shards N, nchan 2 workers), no subscribers, keep-alive.
# With RESULTS=FILE, each run also appends one JSON line to FILE (read by tools/bench_report.py).
# REDIS=1 runs ringcast --redis (a redis-server of its own, started and stopped by PID) instead of
# nchan beside standalone ringcast: issue 14's "publish throughput with Redis ≥ 40% of
# standalone", with Redis's own CPU per publish.
# BIN=PATH measures another ringcast build instead of target/release; with REDIS=1, BASE_BIN=PATH
# also runs that build's --redis in each round (alternating which goes first).
# Usage: ROUNDS=3 [REDIS=0] [BIN=...] [BASE_BIN=...] [RESULTS=results.jsonl] tools/bench/publish.sh [duration-seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DUR=${1:-10}
CONNS=${2:-64}
N=$(nproc)
PORT_RC=18580
PORT_NC=18582
BIN=${BIN:-target/release/ringcast}
[ -x "$BIN" ] || cargo build --release -q

to_us() { # wrk latency (777.00us, 2.89ms, 1.05s) -> microseconds
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) print v + 0; else if (v ~ /ms$/) print v * 1000; else if (v ~ /s$/) print v * 1000000; else print "null" }'
}

cpu_secs() {
  local t=0
  for p in "$@"; do t=$(awk -v t="$t" '{print t + $14 + $15}' "/proc/$p/stat"); done
  echo "scale=2; $t / $(getconf CLK_TCK)" | bc
}

run() { # name url pids...
  local name=$1 url=$2; shift 2
  local before after out rps p50 p99 cpu
  before=$(cpu_secs "$@")
  out=$(wrk -t"$N" -c"$CONNS" -d"${DUR}s" --latency -s tools/wrk/publish.lua "$url")
  after=$(cpu_secs "$@")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  cpu=$(echo "$after - $before" | bc)
  local per
  per=$(echo "scale=0; $rps * $DUR / $cpu" | bc 2>/dev/null || echo null)
  printf '%-22s %10s pub/s  p50 %8s  p99 %8s  server cpu %6ss  %8s pub/cpu-s  non-2xx %s\n' \
    "$name" "$rps" "$p50" "$p99" "$cpu" "$per" "${non2xx:-0}"
  if [ -n "${RESULTS:-}" ]; then
    printf '{"label": "wrk publish %s", "mode": "wrk", "bench": "publish", "name": "%s", "round": %s, "connections": %s, "seconds": %s, "requests_per_sec": %s, "latency_us": {"p50": %s, "p99": %s}, "server_cpu_seconds": %s, "requests_per_cpu_second": %s, "non_2xx": %s}\n' \
      "$name" "$name" "$round" "$CONNS" "$DUR" "${rps:-null}" "$(to_us "$p50")" "$(to_us "$p99")" "$(printf %.2f "${cpu:-0}")" "${per:-null}" "${non2xx:-0}" >>"$RESULTS"
  fi
}

echo "# wrk ${DUR}s, $CONNS connections, POST 128 B to /pub/bench{0..9}"
for round in $(seq "$ROUNDS"); do
  echo "## round $round"
  "$BIN" --listen 127.0.0.1:$PORT_RC --shards "$N" --log-level warn &
  RC=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null && break; sleep 0.05; done
  run "ringcast --shards $N" "http://127.0.0.1:$PORT_RC" "$RC"
  kill -TERM "$RC"; wait "$RC" || true
  if [ "${REDIS:-0}" = 1 ]; then
    # With BASE_BIN, that build's --redis runs too, the two in alternating order by round.
    bins=("$BIN")
    if [ -n "${BASE_BIN:-}" ]; then
      if [ $((round % 2)) = 1 ]; then bins=("$BIN" "$BASE_BIN"); else bins=("$BASE_BIN" "$BIN"); fi
    fi
    for bin in "${bins[@]}"; do
      redis-server --port 18591 --bind 127.0.0.1 --save "" --appendonly no \
        --maxmemory-policy noeviction --loglevel warning >/dev/null &
      RD=$!
      for _ in $(seq 100); do redis-cli -p 18591 ping >/dev/null 2>&1 && break; sleep 0.05; done
      "$bin" --listen 127.0.0.1:$PORT_RC --shards "$N" --log-level warn --redis redis://127.0.0.1:18591 &
      RC=$!
      for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$PORT_RC/metrics" | grep -q '^ringcast_redis_connected{shard="0"} 1' && break
        sleep 0.05
      done
      label="ringcast --redis"
      [ "$bin" = "${BASE_BIN:-}" ] && label="base --redis"
      r0=$(cpu_secs "$RD")
      run "$label" "http://127.0.0.1:$PORT_RC" "$RC"
      r1=$(cpu_secs "$RD")
      echo "  redis-server cpu $(echo "$r1 - $r0" | bc)s over the run"
      kill -TERM "$RC"; wait "$RC" || true
      kill -TERM "$RD"; wait "$RD" || true
    done
    continue
  fi
  NC=$(PORT=$PORT_NC tools/peers/nchan/run.sh start 2>/dev/null)
  # shellcheck disable=SC2046
  run "nginx+nchan 2 workers" "http://127.0.0.1:$PORT_NC" $(pgrep -P "$NC")
  PORT=$PORT_NC tools/peers/nchan/run.sh stop >/dev/null 2>&1
done
