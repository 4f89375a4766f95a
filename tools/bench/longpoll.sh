#!/usr/bin/env bash
# Long-poll deliveries beside nginx+nchan, in the same run (issue 6): N long-poll subscribers
# over T topics, 128-byte messages at a total rate, both servers on all cores (ringcast
# --shards N, nchan N workers). The servers alternate over ROUNDS rounds (default 2); each run
# prints the fanout summary and the server's CPU seconds (utime+stime from /proc, master and
# workers) and CPU microseconds per delivery — the figure a noisy, shared machine moves least.
# Ports and the nchan run directory are private, so other servers on the machine are untouched.
# BINS="a b" measures several ringcast builds in each round (e.g. before and after a change).
# PROCS load processes (default 2): with one, the load tool itself was the limit against ringcast
# (server 0.74 core, load tool 0.62, machine 1.37 of 2 cores busy at 10k; PERF.md).
# Usage: ROUNDS=2 [SUBS=10000] [TOPICS=10] [RATE=200] [SECS=5] [PROCS=2] [BINS=...] tools/bench/longpoll.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-2}
SUBS=${SUBS:-10000}
TOPICS=${TOPICS:-10}
RATE=${RATE:-200}
SECS=${SECS:-5}
PROCS=${PROCS:-2}
N=$(nproc)
BINS=${BINS:-target/release/ringcast}
LOAD=target/release/ringcast-load
PORT_RC=18580
PORT_NC=18582
export RUN_DIR=/tmp/ringcast-bench-longpoll-nchan
[ -x "$LOAD" ] || cargo build --release --workspace -q

cpu_ticks() { # utime+stime of the given PIDs, in clock ticks
  local t=0 p
  for p in "$@"; do t=$(awk -v t="$t" '{print t + $14 + $15}' "/proc/$p/stat"); done
  echo "$t"
}

report() { # name cpu-ticks json
  python3 - "$1" "$2" "$(getconf CLK_TCK)" "$3" <<'EOF'
import json, sys
name, ticks, hz, line = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
r = json.loads(line)
cpu = ticks / hz
got = r.get("delivered") or r.get("deliveries") or 0
lat = r.get("latency_us", {})
print(f"{name:12} deliv/s {r.get('deliveries_per_sec_publish_window', 0):>9,.0f}  delivered {got:>9,}  "
      f"p50/p99 {lat.get('p50', 0)/1000:,.1f}/{lat.get('p99', 0)/1000:,.1f} ms  complete {r.get('complete')}  "
      f"server cpu {cpu:6.2f} s  {1e6 * cpu / max(got, 1):6.2f} us/delivery")
EOF
}

fanout() { # url-sub url-pub [extra...]
  local sub=$1 pub=$2
  shift 2
  $LOAD fanout --transport longpoll --subscribers "$SUBS" --topics "$TOPICS" --size 128 \
    --rate "$RATE" --seconds "$SECS" --processes "$PROCS" --quiet --url-sub "$sub" --url-pub "$pub" "$@"
}

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), $(rustc --version)"
echo "# long poll: $SUBS subscribers, $TOPICS topics, $RATE msg/s for ${SECS}s, 128 B; $N cores"
for round in $(seq "$ROUNDS"); do
  echo "## round $round"
  for bin in $BINS; do
    "$bin" --listen 127.0.0.1:$PORT_RC --shards "$N" --log-level warn &
    RC=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null && break; sleep 0.05; done
    before=$(cpu_ticks "$RC")
    out=$(fanout "http://127.0.0.1:$PORT_RC/poll/{topic}" "http://127.0.0.1:$PORT_RC/pub/{topic}")
    after=$(cpu_ticks "$RC")
    report "$(basename "$bin")" $((after - before)) "$out"
    kill -TERM "$RC"
    wait "$RC" || true
  done

  NC=$(PORT=$PORT_NC WORKERS=$N tools/peers/nchan/run.sh start 2>/dev/null)
  pids=("$NC" $(pgrep -P "$NC"))
  before=$(cpu_ticks "${pids[@]}")
  out=$(fanout "http://127.0.0.1:$PORT_NC/poll/{topic}" "http://127.0.0.1:$PORT_NC/pub/{topic}" --longpoll-style nchan)
  after=$(cpu_ticks "${pids[@]}")
  report nchan $((after - before)) "$out"
  PORT=$PORT_NC tools/peers/nchan/run.sh stop >/dev/null 2>&1
done
