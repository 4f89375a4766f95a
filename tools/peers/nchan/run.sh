#!/usr/bin/env bash
# nginx + nchan with ringcast's routes (/pub, /sse, /ws, /poll, /healthz): the pub/sub peer.
#   PORT=8082 WORKERS=2 tools/peers/nchan/run.sh {start|stop|status|restart}
# `start` prints the master PID. Files live under $RUN_DIR (default /tmp/ringcast-peer-nchan).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN_SH=$0 exec "$here/../peerctl.sh" nchan "$here/nchan.conf" 8082 2 "$@"
