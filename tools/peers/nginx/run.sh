#!/usr/bin/env bash
# Plain nginx answering "ok\n" on every path: the HTTP/1.1 baseline beside ringcast.
#   PORT=8081 WORKERS=1 tools/peers/nginx/run.sh {start|stop|status|restart}
# `start` prints the master PID. Files live under $RUN_DIR (default /tmp/ringcast-peer-nginx).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN_SH=$0 exec "$here/../peerctl.sh" nginx "$here/nginx.conf" 8081 1 "$@"
