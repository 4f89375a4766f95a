#!/usr/bin/env bash
# The standard benchmark suite in one command: ringcast beside nginx / nginx+nchan, same run.
# Raw results (one JSON line per measurement) go to bench-results/DATE/; a summary is printed.
# Needs: wrk, nginx, libnginx-mod-nchan (apt-get install -y wrk nginx libnginx-mod-nchan).
# At the end tools/bench_report.py regenerates PERF.md's generated section and docs/perf/*.svg from
# this run (merged over the runs in REPORT_RUNS, oldest first, if set); a quick run writes its
# report and plots into its own directory instead and leaves PERF.md alone.
# Steps: criterion (quick), wrk on /healthz and on a short poll beside nginx, publishing beside
# nchan, fanout at 1k and 10k subscribers (SSE, WS, long poll) beside nchan, idle connections
# beside nchan (tools/bench/hold.sh), WebSocket echo on one core beside axum
# (tools/bench/echo.sh), the write() baseline. issue 6's fanout targets with server CPU per
# delivery are tools/bench/fanout.sh (longer; run on its own).
# Usage: [REPORT_RUNS="bench-results/A ..."] [SKIP_CRITERION=1] [SKIP_WRK=1] tools/bench.sh [quick]   (quick: shorter runs, fewer connections)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${1:-}
OUT=bench-results/$(date -u +%Y-%m-%dT%H%M%SZ)
mkdir -p "$OUT"
cargo build --release --workspace -q
RC_BIN=target/release/ringcast
LOAD=target/release/ringcast-load
N=$(nproc)
if [ "$QUICK" = quick ]; then SECS=3; SUBS_BIG=2000; HOLD=2000; else SECS=5; SUBS_BIG=10000; HOLD=19000; fi

{
  echo "# $(date -u +%FT%TZ)  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  ${N} cores"
  echo "# kernel $(uname -r), $(rustc --version), $(nginx -v 2>&1), nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null)"
} | tee "$OUT/machine.txt"

start_rc() { "$RC_BIN" --listen 127.0.0.1:8080 --shards "$N" --log-level warn "$@" & RC=$!; for _ in $(seq 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && return; sleep 0.05; done; }
stop_rc() { kill -TERM "$RC"; wait "$RC" 2>/dev/null || true; }
start_nc() { NC=$(PORT=8082 tools/peers/nchan/run.sh start 2>/dev/null); }
stop_nc() { PORT=8082 tools/peers/nchan/run.sh stop >/dev/null 2>&1; }
nc_pids() { pgrep -P "$NC" | paste -sd,; }

summ() { python3 tools/bench_summary.py "$1" "$OUT/results.jsonl"; }

if [ -z "${SKIP_CRITERION:-}" ]; then
  echo "## criterion (quick): codecs and the inbox" | tee -a "$OUT/summary.txt"
  for b in http1 sse ws fanout; do
    cargo bench -q --bench "$b" -- --quick 2>/dev/null | grep -E "time:|thrpt:|^[a-z_/0-9 ]+$" >>"$OUT/criterion.txt" || true
  done
  echo "criterion results in $OUT/criterion.txt" | tee -a "$OUT/summary.txt"
fi

if [ -z "${SKIP_WRK:-}" ]; then
  echo "## HTTP: wrk on /healthz beside nginx return 200" | tee -a "$OUT/summary.txt"
  RESULTS="$OUT/results.jsonl" ROUNDS=2 tools/bench/http.sh "$SECS" 256 | tee -a "$OUT/summary.txt"
  echo "## short polling: wrk on GET /poll beside nginx return 200, one core" | tee -a "$OUT/summary.txt"
  RESULTS="$OUT/results.jsonl" ROUNDS=2 TARGET=poll ALL_CORES=0 tools/bench/http.sh "$SECS" 256 | tee -a "$OUT/summary.txt"
  echo "## publish: wrk POST beside nchan_publisher" | tee -a "$OUT/summary.txt"
  RESULTS="$OUT/results.jsonl" ROUNDS=2 tools/bench/publish.sh "$SECS" 64 | tee -a "$OUT/summary.txt"
fi

echo "## fanout: 10 topics, 128 B, 200 msg/s total (20 per topic)" | tee -a "$OUT/summary.txt"
for subs in 1000 "$SUBS_BIG"; do
  # Two load processes for the big runs: one was the limit for long polls (PERF.md).
  procs=1; [ "$subs" -ge 10000 ] && procs=2
  for tr in sse ws longpoll; do
    start_rc
    $LOAD fanout --transport $tr --subscribers "$subs" --topics 10 --size 128 --rate 200 --seconds "$SECS" --processes $procs --quiet | summ "ringcast $tr subs=$subs" | tee -a "$OUT/summary.txt"
    stop_rc
    start_nc
    style=(); [ $tr = longpoll ] && style=(--longpoll-style nchan)
    scheme=http; [ $tr = ws ] && scheme=ws
    $LOAD fanout --transport $tr "${style[@]}" --subscribers "$subs" --topics 10 --size 128 --rate 200 --seconds "$SECS" --processes $procs --quiet \
      --url-sub "$scheme://127.0.0.1:8082/$( [ $tr = longpoll ] && echo poll || echo $tr )/{topic}" --url-pub 'http://127.0.0.1:8082/pub/{topic}' \
      | summ "nchan $tr subs=$subs" | tee -a "$OUT/summary.txt"
    stop_nc
  done
done

echo "## idle connections: RSS per connection, shared topics and one topic each" | tee -a "$OUT/summary.txt"
RESULTS="$OUT/results.jsonl" N="$HOLD" tools/bench/hold.sh | tee -a "$OUT/summary.txt"

echo "## WebSocket echo on one core beside axum: 100 connections x 512 B" | tee -a "$OUT/summary.txt"
RESULTS="$OUT/results.jsonl" ROUNDS=2 tools/bench/echo.sh "$SECS" 100 512 | tee -a "$OUT/summary.txt"

echo "## write() baseline: one 128 B write to each of K loopback sockets, one core" | tee -a "$OUT/summary.txt"
target/release/ringcast-writecost --size 128 --rounds 100 --core 1 | summ "writecost" | tee -a "$OUT/summary.txt"

# shellcheck disable=SC2086
if [ "$QUICK" = quick ]; then
  python3 tools/bench_report.py --perf-md none --plots "$OUT" --markdown "$OUT/report.md" ${REPORT_RUNS:-} "$OUT"
else
  python3 tools/bench_report.py --markdown "$OUT/report.md" ${REPORT_RUNS:-} "$OUT"
fi
echo "results in $OUT"
