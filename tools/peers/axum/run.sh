#!/usr/bin/env bash
# The axum + tokio broadcast peer (tools/peers/axum), on loopback, beside ringcast.
#   PORT=8083 THREADS=2 tools/peers/axum/run.sh {start|stop|status|restart}
# `start` builds the release binary if needed (cargo, quietly), starts it in the background and
# prints its PID on stdout; `stop` sends TERM to that PID (KILL after 5 s). Files live under
# $RUN_DIR (default /tmp/ringcast-peer-axum): axum.pid, axum.log (truncated at each start).
# Environment: PORT, THREADS (tokio workers; default: the number of cores), RUN_DIR, BIN (a
# prebuilt binary: skips the build), CARGO_TARGET_DIR.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
PORT=${PORT:-8083}
THREADS=${THREADS:-}
RUN_DIR=${RUN_DIR:-/tmp/ringcast-peer-axum}
pid_file=$RUN_DIR/axum.pid
log=$RUN_DIR/axum.log
name=ringcast-peer-axum

die() { echo "axum: $*" >&2; exit 1; }

# The PID in the pid file, if that process is still this binary (not a reused PID).
running_pid() {
    local pid exe
    [[ -s $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    [[ ${exe##*/} == "$name" || ${exe##*/} == "$name (deleted)" ]] || return 1
    echo "$pid"
}

start() {
    [[ $PORT =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
    [[ -z $THREADS || $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a number, got '$THREADS'"
    if pid=$(running_pid); then
        die "already running as PID $pid (stop it first: $0 stop)"
    fi
    local bin=${BIN:-}
    if [[ -z $bin ]]; then
        (cd "$root" && cargo build --release --quiet -p "$name") >&2 || die "build failed"
        bin=${CARGO_TARGET_DIR:-$root/target}/release/$name
    fi
    [[ -x $bin ]] || die "no binary at $bin"
    mkdir -p "$RUN_DIR"
    rm -f "$pid_file"
    local args=(--listen "127.0.0.1:$PORT")
    [[ -n $THREADS ]] && args+=(--threads "$THREADS")
    "$bin" "${args[@]}" </dev/null >"$log" 2>&1 &
    local pid=$!
    echo "$pid" >"$pid_file"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || die "exited at start; see $log: $(tail -n 3 "$log")"
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "$pid"
            return 0
        fi
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    die "not up on 127.0.0.1:$PORT after 5 s; see $log"
}

stop() {
    local pid
    if ! pid=$(running_pid); then
        rm -f "$pid_file"
        echo "axum: not running" >&2
        return 0
    fi
    kill -TERM "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "axum: PID $pid ignored TERM for 5 s; sending KILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$pid_file"
    echo "axum: stopped PID $pid" >&2
}

case ${1:-} in
start) start ;;
stop) stop ;;
restart) stop && start ;;
status)
    if pid=$(running_pid); then
        echo "axum: running as PID $pid on 127.0.0.1:$PORT"
    else
        echo "axum: not running"
        exit 3
    fi
    ;;
*) die "usage: $0 {start|stop|status|restart}" ;;
esac
