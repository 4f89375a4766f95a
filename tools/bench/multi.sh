#!/usr/bin/env bash
# Issue 16's measurements, each beside its single-topic counterpart in the same run (servers
# alternate within each round, a fresh ringcast --shards 2 per run, stopped by PID):
#   mem     idle SSE streams: 1,000 multi-topic streams of 10 topics (1,000 topics, 10
#           subscribers each) beside 10,000 single-topic streams (1,000 topics, 10 each): what a
#           page holding 10 topics costs the node either way (`ringcast-load hold`).
#   fanout  10,000 SSE subscribers on 10 topics, 1,000 messages of 128 B at 1,000 msg/s
#           (1M deliveries): single-topic streams beside multi-topic streams of 5 topics (the
#           message's topic and four quiet ones, which every event's token still carries).
# Loopback only; bounded in messages and time. Raw JSON lines: $OUT/results.jsonl.
# PUB_PIPELINE=K (default 1): publishes in flight per publisher connection (fanout.sh's knob;
# with 8, a subscriber gets several messages per flush, as at a busy server).
# Usage: [ROUNDS=2] [CASES="mem fanout"] [PUB_PIPELINE=1] tools/bench/multi.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
ROUNDS=${ROUNDS:-2}
CASES=${CASES:-mem fanout}
PUB_PIPELINE=${PUB_PIPELINE:-1}
OUT=${OUT:-bench-results/multi-$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$OUT"
RES=$OUT/results.jsonl
BIN=target/release/ringcast
LOAD=target/release/ringcast-load
[ -x "$BIN" ] && [ -x "$LOAD" ] || cargo build --release --locked -q -p ringcast -p ringcast-load
PORT=18791
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "kernel $(uname -r), $(rustc --version)" | tee "$OUT/machine.txt"

SRV=""
start() {
  "$BIN" --listen "127.0.0.1:$PORT" --shards 2 --log-level warn &
  SRV=$!
  for _ in $(seq 100); do
    curl -sf "localhost:$PORT/healthz" >/dev/null && return
    sleep 0.1
  done
  echo "ringcast did not start" >&2
  exit 1
}
stop() {
  kill "$SRV"
  wait "$SRV" 2>/dev/null || true
}
record() { # case kind round json
  echo "{\"case\":\"$1\",\"kind\":\"$2\",\"round\":$3,\"pipeline\":$PUB_PIPELINE,\"result\":$4}" | tee -a "$RES" |
    python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); r=d["result"]; print(d["case"], d["kind"], "r%d" % d["round"], {k: r.get(k) for k in ("server_rss_bytes_per_conn","server_anon_bytes_per_conn","kernel_slab_bytes_per_conn_both_ends","deliveries_per_sec_publish_window","server_us_per_delivery","server_cores","machine_busy_cores","missing","duplicated","out_of_order","complete") if k in r})' >&2
}

TEN=$(for j in 0 1 2 3 4 5 6 7 8 9; do printf 'topic={topic}.%s&' "$j"; done)
FIVE='topic={topic}&topic={topic}.b&topic={topic}.c&topic={topic}.d&topic={topic}.e'
for c in $CASES; do
  for r in $(seq "$ROUNDS"); do
    for kind in single multi; do
      start
      case "$c/$kind" in
      mem/single) args=(hold --transport sse --connections 10000 --topics 1000 --processes 2
        --url "http://127.0.0.1:$PORT/sse/{topic}" --seconds 3 --settle-ms 2000) ;;
      mem/multi) args=(hold --transport sse --connections 1000 --topics 100
        --url "http://127.0.0.1:$PORT/sse?${TEN%&}" --seconds 3 --settle-ms 2000) ;;
      fanout/*)
        sub="http://127.0.0.1:$PORT/sse/{topic}"
        [ "$kind" = multi ] && sub="http://127.0.0.1:$PORT/sse?$FIVE"
        args=(fanout --transport sse --subscribers 10000 --topics 10 --size 128 --rate 1000
          --messages 1000 --timeout 60 --processes 2 --pub-connections 10 --pub-pipeline "$PUB_PIPELINE"
          --source-ips 127.0.0.2-127.0.0.9 --url-sub "$sub"
          --url-pub "http://127.0.0.1:$PORT/pub/{topic}")
        ;;
      esac
      record "$c" "$kind" "$r" "$(nice "$LOAD" "${args[@]}" --server-pid "$SRV" --quiet)"
      stop
    done
  done
done
