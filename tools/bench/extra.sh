#!/usr/bin/env bash
# Fanout below saturation (50k deliveries/s: 10k subscribers, 5 msg/s per topic) over 1 and 10
# topics, and idle connections at the most one process may hold here (20,000 fds), beside nchan.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench-results/extra-$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$OUT"
LOAD=target/release/ringcast-load
N=$(nproc)
MAXC=${MAXC:-19000}
summ() { python3 tools/bench_summary.py "$1" "$OUT/results.jsonl"; }
start_rc() { target/release/ringcast --listen 127.0.0.1:8080 --shards "$N" --log-level warn & RC=$!; for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && return; sleep 0.05; done; }
stop_rc() { kill -TERM "$RC"; wait "$RC" 2>/dev/null || true; }
start_nc() { NC=$(PORT=8082 tools/peers/nchan/run.sh start 2>/dev/null); }
stop_nc() { PORT=8082 tools/peers/nchan/run.sh stop >/dev/null 2>&1; }
for topics in 1 10; do
  rate=$((5 * topics))
  for tr in sse ws; do
    start_rc
    $LOAD fanout --transport $tr --subscribers 10000 --topics $topics --size 128 --rate $rate --seconds 10 --quiet | summ "ringcast $tr 10k subs / $topics topics @ $rate msg/s"
    stop_rc
    start_nc
    scheme=http; [ $tr = ws ] && scheme=ws
    $LOAD fanout --transport $tr --subscribers 10000 --topics $topics --size 128 --rate $rate --seconds 10 --quiet \
      --url-sub "$scheme://127.0.0.1:8082/$tr/{topic}" --url-pub 'http://127.0.0.1:8082/pub/{topic}' | summ "nchan $tr 10k subs / $topics topics @ $rate msg/s"
    stop_nc
  done
done
for tr in sse ws; do
  start_rc
  $LOAD hold --transport $tr --connections "$MAXC" --seconds 2 --server-pid "$RC" --quiet | summ "ringcast hold $tr n=$MAXC"
  stop_rc
  start_nc
  $LOAD hold --transport $tr --connections "$MAXC" --seconds 2 --server-pid "$(pgrep -P "$NC" | paste -sd,)" --quiet \
    --url "$( [ $tr = ws ] && echo ws || echo http )://127.0.0.1:8082/$tr/{topic}" | summ "nchan hold $tr n=$MAXC"
  stop_nc
done
