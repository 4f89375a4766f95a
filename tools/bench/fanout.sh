#!/usr/bin/env bash
# Issue 6's fanout targets, ringcast beside nginx+nchan and the axum + tokio broadcast peer in
# the same run, with each run's *server CPU seconds* (utime+stime from /proc, from the first
# publish to the last delivery; nchan: its workers summed) and so server µs per delivery — the
# figure least sensitive to a noisy machine and to the load generator's own limits. The load
# tool's CPU and the machine's busy / stolen cores over the same window are reported too, so a
# run says which side was the limit.
#
# Cases (CASES, default all, in this order):
#   saturated  10k subscribers / 10 topics, 100 msg/s per topic offered (1M deliveries/s: no
#              server here keeps up), both cores shared by server and load (PROCS processes).
#   split      the same, server on core 0 (ringcast --shards 1, nchan 1 worker, axum 1 thread),
#              the load tool on core 1: deliveries/s per server core.
#   rate20     10k / 10 topics at 20 msg/s per topic (200k deliveries/s offered): latency.
#   idle       1 subscriber, 1 topic, 100 msg/s: publish → receive latency on an idle server
#              (the publisher spins the last SPIN_US µs, default 1500, before each send:
#              --spin-us; each run reports how late the sends still were, send_lag_us, and
#              when each message reached the subscriber's socket, socket_latency_us).
#   perwrite   10k / 10 topics at 5 msg/s per topic on the split cores: one message per
#              subscriber per flush; server µs per delivery beside ringcast-writecost's µs per
#              write on the same core (9,000 loopback pairs), and the servers' write syscalls
#              per delivery (perf stat on syscall tracepoints, in a run of its own).
# Servers alternate within each round (ROUNDS, default 2). Loopback only; every load run is
# bounded in messages and time; servers are stopped by PID. Raw JSON lines: $OUT/results.jsonl;
# `tools/bench_summary.py --table $OUT/results.jsonl` prints the tables for PERF.md.
# PUB_PIPELINE=K (default 1) lets each of the 10 publisher connections keep K publishes in
# flight (HTTP/1.1 pipelining), so a busy server sees messages queue up as it would with many
# independent publishers; with 1, a topic has at most one message on its way at a time.
# SERVERS may also name ringcast-base: the binary BASE_BIN (e.g. a build of the main branch),
# for before/after comparisons in the same run.
# SAT_MSGS (default 1000) and SAT_TIMEOUT (s, default 60) lengthen the saturated case, to measure the
# steady state past the first second's ramp.
# TRANSPORTS (default "sse ws") narrows the streaming cases to one transport.
# SYSCALLS=1 counts each run's write syscalls (perf) and prints them per delivery. RC_FLAGS adds
# flags to both ringcast servers (e.g. "--max-write-delay-ms 50").
# SERVERS may name ringcast-redis (one node on a redis-server of its own, started and stopped
# with it: issue 14's "within 10% of standalone") and ringcast-redis2 (two nodes on one Redis:
# publishes go to the first, subscribers to the second, so every message crosses Redis). The
# CPU per delivery counts the nodes; Redis's own CPU over the run is printed beside it.
# Usage: [ROUNDS=2] [SYSCALLS=0] [PROCS=2] [PUB_PIPELINE=1] [SAT_MSGS=1000] [CASES="saturated split rate20 idle perwrite"] [SERVERS="ringcast nchan axum"] tools/bench/fanout.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ulimit -n "$(ulimit -Hn)"
ROUNDS=${ROUNDS:-2}
PROCS=${PROCS:-2}
CASES=${CASES:-saturated split rate20 idle perwrite}
SERVERS=${SERVERS:-ringcast nchan axum}
SUBS=${SUBS:-10000}
PUB_PIPELINE=${PUB_PIPELINE:-1}
BASE_BIN=${BASE_BIN:-}
RC_FLAGS=${RC_FLAGS:-} # more flags for ringcast and ringcast-base
OUT=${OUT:-bench-results/fanout-$(date -u +%Y-%m-%dT%H%M%SZ)}
mkdir -p "$OUT"
RES=$OUT/results.jsonl
LOAD=target/release/ringcast-load
BIN=target/release/ringcast
AXBIN=target/release/ringcast-peer-axum
[ -x "$BIN" ] && [ -x "$LOAD" ] && [ -x "$AXBIN" ] || cargo build --release --workspace -q
# Ports and run directories of their own, so other runs on the machine are left alone.
PORT_RC=18780
PORT_NC=18782
PORT_AX=18783
PORT_RC2=18784
PORT_REDIS=18790
REDIS_PID=""
NC_DIR=/tmp/ringcast-bench-fanout-nchan
AX_DIR=/tmp/ringcast-bench-fanout-axum

echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores," \
  "kernel $(uname -r), $(rustc --version), $(nginx -v 2>&1)" | tee "$OUT/machine.txt"

# The write syscalls a server makes (perf tracepoints): the perwrite case, and every run with
# SYSCALLS=1, which prints write syscalls per delivery (the batching a server achieves).
WRITE_EVENTS=syscalls:sys_enter_sendto,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendmsg
SRV=""  # the server's main PID (stopped by it)
PIDS="" # the PIDs whose CPU is the server's (comma-separated)
start() { # server cores(1|2)
  local s=$1 cores=$2
  case $s in
  ringcast | ringcast-base)
    local shards=2 pin=0-1 bin=$BIN
    if [ "$cores" = 1 ]; then shards=1 pin=0; fi
    if [ "$s" = ringcast-base ]; then bin=$BASE_BIN; fi
    # shellcheck disable=SC2086
    taskset -c $pin "$bin" --listen 127.0.0.1:$PORT_RC --shards $shards --log-level warn $RC_FLAGS &
    SRV=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT_RC/healthz" >/dev/null && break; sleep 0.05; done
    PIDS=$SRV PORT=$PORT_RC PUBPORT=$PORT_RC
    ;;
  ringcast-redis | ringcast-redis2)
    redis-server --port $PORT_REDIS --bind 127.0.0.1 --save "" --appendonly no \
      --maxmemory-policy noeviction --loglevel warning >/dev/null &
    REDIS_PID=$!
    for _ in $(seq 100); do redis-cli -p $PORT_REDIS ping >/dev/null 2>&1 && break; sleep 0.05; done
    REDIS_CPU0=$(awk '{print $14 + $15}' /proc/$REDIS_PID/stat)
    # shellcheck disable=SC2086
    taskset -c 0-1 "$BIN" --listen 127.0.0.1:$PORT_RC --shards 2 --log-level warn \
      --redis redis://127.0.0.1:$PORT_REDIS $RC_FLAGS &
    SRV=$!
    PIDS=$SRV PORT=$PORT_RC PUBPORT=$PORT_RC
    if [ "$s" = ringcast-redis2 ]; then
      # shellcheck disable=SC2086
      taskset -c 0-1 "$BIN" --listen 127.0.0.1:$PORT_RC2 --shards 2 --log-level warn \
        --redis redis://127.0.0.1:$PORT_REDIS $RC_FLAGS &
      SRV2=$!
      PIDS=$SRV,$SRV2 PORT=$PORT_RC2
    fi
    for port in $PORT_RC $PORT; do
      for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
    done
    # The bridges are connected once /metrics says so.
    for port in $PORT_RC $PORT; do
      for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^ringcast_redis_connected{shard="0"} 1' && break
        sleep 0.05
      done
    done
    ;;
  nchan)
    SRV=$(PORT=$PORT_NC WORKERS=$cores RUN_DIR=$NC_DIR tools/peers/nchan/run.sh start 2>/dev/null)
    PIDS=$(pgrep -d, -P "$SRV") PORT=$PORT_NC PUBPORT=$PORT_NC
    if [ "$cores" = 1 ]; then
      for p in $SRV ${PIDS//,/ }; do taskset -p -c 0 "$p" >/dev/null; done
    fi
    ;;
  axum)
    SRV=$(PORT=$PORT_AX THREADS=$cores RUN_DIR=$AX_DIR BIN=$AXBIN tools/peers/axum/run.sh start 2>/dev/null)
    PIDS=$SRV PORT=$PORT_AX PUBPORT=$PORT_AX
    if [ "$cores" = 1 ]; then taskset -a -p -c 0 "$SRV" >/dev/null; fi
    ;;
  esac
}
stop() { # server
  case $1 in
  ringcast | ringcast-base) kill -TERM "$SRV"; wait "$SRV" 2>/dev/null || true ;;
  ringcast-redis | ringcast-redis2)
    for p in ${PIDS//,/ }; do kill -TERM "$p"; wait "$p" 2>/dev/null || true; done
    echo "  redis-server cpu: $(awk -v t0="$REDIS_CPU0" -v hz="$(getconf CLK_TCK)" '{printf "%.2f s", ($14 + $15 - t0) / hz}' /proc/$REDIS_PID/stat)"
    kill -TERM "$REDIS_PID"
    wait "$REDIS_PID" 2>/dev/null || true
    ;;
  nchan) PORT=$PORT_NC RUN_DIR=$NC_DIR tools/peers/nchan/run.sh stop >/dev/null 2>&1 ;;
  axum) PORT=$PORT_AX RUN_DIR=$AX_DIR tools/peers/axum/run.sh stop >/dev/null 2>&1 ;;
  esac
}

fanout() { # case server round transport load-cpus subs topics rate messages timeout procs [extra...]
  local c=$1 s=$2 r=$3 tr=$4 cpus=$5 subs=$6 topics=$7 rate=$8 msgs=$9 timeout=${10} procs=${11}
  shift 11
  local scheme=http perf=""
  [ "$tr" = ws ] && scheme=ws
  if [ "${SYSCALLS:-0}" = 1 ]; then
    timeout 300 perf stat -x, -e "$WRITE_EVENTS" -p "$PIDS" -o "$OUT/$c-$s-$tr-r$r.perfstat" &
    perf=$!
    sleep 0.2
  fi
  # shellcheck disable=SC2086
  taskset -c "$cpus" "$LOAD" fanout --transport "$tr" --subscribers "$subs" --topics "$topics" \
    --size 128 --rate "$rate" --messages "$msgs" --timeout "$timeout" --processes "$procs" \
    --pub-connections 10 --pub-pipeline "$PUB_PIPELINE" --source-ips 127.0.0.2-127.0.0.9 --server-pid "$PIDS" --quiet \
    --url-sub "$scheme://127.0.0.1:$PORT/$tr/{topic}" --url-pub "http://127.0.0.1:${PUBPORT:-$PORT}/pub/{topic}" "$@" |
    python3 tools/bench_summary.py "$c $s $tr r$r" "$RES" case="$c" server="$s" round="$r" \
      pipeline="$PUB_PIPELINE"
  # The server's peak resident memory over the run (VmHWM, summed over its processes).
  local hwm=0 pid
  for pid in ${PIDS//,/ }; do
    hwm=$((hwm + $(awk '/^VmHWM/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo "  peak RSS: $((hwm / 1024)) MiB"
  if [ -n "$perf" ]; then
    kill -INT "$perf"
    wait "$perf" 2>/dev/null || true
    awk -F, -v d=$((msgs * subs / topics)) '/syscalls/ {n += $1} END {printf "  write syscalls: %d, %.3f per delivery\n", n, n / d}' \
      "$OUT/$c-$s-$tr-r$r.perfstat"
  fi
}

# case → server cores, load cpus, subscribers, topics, msg/s, messages, timeout, processes
params() {
  case $1 in
  saturated) echo "2 0-1 $SUBS 10 1000 ${SAT_MSGS:-1000} ${SAT_TIMEOUT:-60} $PROCS" ;;
  split) echo "1 1 $SUBS 10 1000 500 60 1" ;;
  rate20) echo "2 0-1 $SUBS 10 200 1000 30 $PROCS" ;;
  idle) echo "2 0-1 1 1 100 1000 5 1" ;;
  perwrite) echo "1 1 $SUBS 10 50 500 30 1" ;;
  esac
}

for c in $CASES; do
  read -r cores cpus subs topics rate msgs timeout procs <<<"$(params "$c")"
  for r in $(seq "$ROUNDS"); do
    for tr in ${TRANSPORTS:-sse ws}; do
      for s in $SERVERS; do
        start "$s" "$cores"
        extra=()
        # Latency on an idle server: send each message on time to the microsecond (the load
        # tool's timer alone would add up to 1 ms to every figure).
        # --socket-stamps: also when each message reached the subscriber's socket (the
        # kernel's stamp), so the server's share is seen without the tool's wait to read.
        [ "$c" = idle ] && extra=(--spin-us "${SPIN_US:-1500}" --socket-stamps)
        fanout "$c" "$s" "$r" "$tr" "$cpus" "$subs" "$topics" "$rate" "$msgs" "$timeout" "$procs" "${extra[@]}"
        stop "$s"
      done
    done
  done
  if [ "$c" = perwrite ]; then
    # The machine's price of one 128-byte write on the server's core, same run.
    # Readers drained between rounds, and readers asleep in epoll_wait on core 1 (as the load
    # tool's subscribers are), so a write also pays for waking one.
    for r in $(seq "$ROUNDS"); do
      for rd in drained waiting; do
        target/release/ringcast-writecost --pairs 9000 --size 128 --rounds 50 --core 0 --readers $rd --reader-core 1 |
          python3 tools/bench_summary.py "writecost 9000 pairs core 0 $rd r$r" "$RES" case=writecost readers=$rd round="$r"
      done
    done
    # Write syscalls per delivery, in runs of their own (tracepoints cost a little per syscall).
    for tr in ${TRANSPORTS:-sse ws}; do
      for s in $SERVERS; do
        start "$s" 1
        timeout 120 perf stat -x, -e "$WRITE_EVENTS" -p "$PIDS" -o "$OUT/perwrite-$s-$tr.perfstat" &
        PERF=$!
        sleep 0.2
        fanout perwrite-syscalls "$s" 1 "$tr" 1 "$SUBS" 10 50 500 30 1
        kill -INT "$PERF"
        wait "$PERF" 2>/dev/null || true
        echo "  write syscalls: $(awk -F, '/syscalls/ {n += $1} END {print n}' "$OUT/perwrite-$s-$tr.perfstat")"
        stop "$s"
      done
    done
  fi
done
echo "# results: $RES"
