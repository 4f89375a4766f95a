#!/usr/bin/env bash
# Start, stop and inspect one nginx-based benchmark peer, entirely under a private run directory
# (config, pid file, error log, temp paths), so it runs as root or not without touching /etc.
#
# Called by nginx/run.sh and nchan/run.sh:
#   peerctl.sh NAME TEMPLATE DEFAULT_PORT DEFAULT_WORKERS {start|stop|status|restart}
# Environment: PORT, WORKERS, RUN_DIR (default /tmp/ringcast-peer-NAME), NGINX (default nginx),
# NOFILE (worker_rlimit_nofile, default 65536, capped at this shell's hard limit: without
# CAP_SYS_RESOURCE a worker cannot raise it further, and nginx would log an alert per worker).
# `start` prints the master PID on stdout; `stop` ends that PID and its workers, by PID only.
set -euo pipefail

name=$1 template=$2 default_port=$3 default_workers=$4 cmd=${5:-}
PORT=${PORT:-$default_port}
WORKERS=${WORKERS:-$default_workers}
RUN_DIR=${RUN_DIR:-/tmp/ringcast-peer-$name}
NGINX=${NGINX:-nginx}
NOFILE=${NOFILE:-65536}
pid_file=$RUN_DIR/nginx.pid
conf=$RUN_DIR/nginx.conf
error_log=$RUN_DIR/error.log

die() { echo "$name: $*" >&2; exit 1; }

running_pid() {
    local pid
    [[ -s $pid_file ]] || return 1
    pid=$(<"$pid_file")
    [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

start() {
    command -v "$NGINX" >/dev/null || die "nginx not found: apt-get install -y nginx libnginx-mod-nchan"
    [[ $PORT =~ ^[0-9]+$ ]] || die "PORT must be a number, got '$PORT'"
    [[ $WORKERS =~ ^([0-9]+|auto)$ ]] || die "WORKERS must be a number or auto, got '$WORKERS'"
    if pid=$(running_pid); then
        die "already running as PID $pid (stop it first: ${RUN_SH:-$0} stop)"
    fi
    [[ $NOFILE =~ ^[0-9]+$ ]] || die "NOFILE must be a number, got '$NOFILE'"
    local hard
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && ((NOFILE > hard)); then
        echo "$name: worker_rlimit_nofile capped at the hard limit $hard (asked $NOFILE)" >&2
        NOFILE=$hard
    fi
    mkdir -p "$RUN_DIR/tmp"
    : >"$error_log" # one log per run
    rm -f "$pid_file"
    sed -e "s|@PORT@|$PORT|g" -e "s|@WORKERS@|$WORKERS|g" -e "s|@RUN_DIR@|$RUN_DIR|g" \
        -e "s|@NOFILE@|$NOFILE|g" \
        "$template" >"$conf"
    "$NGINX" -t -q -p "$RUN_DIR" -e "$error_log" -c "$conf" ||
        die "config test failed ($conf); see $error_log"
    "$NGINX" -p "$RUN_DIR" -e "$error_log" -c "$conf" ||
        die "nginx failed to start; see $error_log"
    # The daemonised master writes its pid file just after forking; wait for it and the port.
    for _ in $(seq 50); do
        if pid=$(running_pid) && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            echo "$pid"
            return 0
        fi
        sleep 0.1
    done
    die "not up on 127.0.0.1:$PORT after 5 s; see $error_log"
}

stop() {
    local pid workers
    if ! pid=$(running_pid); then
        rm -f "$pid_file"
        echo "$name: not running" >&2
        return 0
    fi
    workers=$(pgrep -P "$pid" || true)
    # TERM is nginx's fast shutdown: workers close their connections (SSE/WS included) at once.
    kill -TERM "$pid"
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    for p in $pid $workers; do
        if kill -0 "$p" 2>/dev/null; then
            echo "$name: PID $p ignored TERM for 5 s; sending KILL" >&2
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    rm -f "$pid_file"
    echo "$name: stopped PID $pid" >&2
}

case $cmd in
start) start ;;
stop) stop ;;
restart) stop && start ;;
status)
    if pid=$(running_pid); then
        echo "$name: running as PID $pid on 127.0.0.1:$PORT (workers: $(pgrep -P "$pid" | xargs))"
    else
        echo "$name: not running"
        exit 3
    fi
    ;;
*) die "usage: ${RUN_SH:-$0} {start|stop|status|restart}" ;;
esac
