#!/usr/bin/env bash
# Idle connections: user memory (server RSS delta / N) and kernel memory per connection, for
# ringcast beside nginx+nchan in the same run, SSE and WebSocket, with the N streams spread over
# 10 shared topics and with one topic per connection. N defaults to 19000: the most one server
# process may hold on this machine (20,000 fds); the clients run as 2 load processes.
# Usage: [N=19000] [RESULTS=file.jsonl] tools/bench/hold.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-19000}
PORT_RC=18500
PORT_NC=18502
RESULTS=${RESULTS:-bench-results/hold-$(date -u +%Y-%m-%dT%H%M%SZ).jsonl}
mkdir -p "$(dirname "$RESULTS")"
BIN=target/release/ringcast
LOAD=target/release/ringcast-load
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release -q --workspace
export RUN_DIR=/tmp/ringcast-bench-hold-nchan

hold() { # label transport url topics pids
  local targ=()
  [ "$4" = each ] || targ=(--topics "$4")
  "$LOAD" hold --transport "$2" --connections "$N" --processes 2 "${targ[@]}" --seconds 4 \
    --server-pid "$5" --url "$3" --quiet |
    python3 tools/bench_summary.py "$1 hold $2 n=$N topics=$4" "$RESULTS"
}

echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r); $N idle connections"
for topics in 10 each; do
  for tr in sse ws; do
    scheme=http; [ "$tr" = ws ] && scheme=ws
    "$BIN" --listen 127.0.0.1:$PORT_RC --shards "$(nproc)" --log-level warn &
    RC=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null && break; sleep 0.05; done
    hold ringcast "$tr" "$scheme://127.0.0.1:$PORT_RC/$tr/{topic}" "$topics" "$RC"
    kill -TERM "$RC"; wait "$RC" 2>/dev/null || true

    NC=$(PORT=$PORT_NC tools/peers/nchan/run.sh start 2>/dev/null)
    hold nchan "$tr" "$scheme://127.0.0.1:$PORT_NC/$tr/{topic}" "$topics" "$(pgrep -P "$NC" | paste -sd,)"
    PORT=$PORT_NC tools/peers/nchan/run.sh stop >/dev/null 2>&1
  done
done
echo "results in $RESULTS"
