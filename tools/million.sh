#!/usr/bin/env bash
# The kernel limits a machine needs to hold a million connections with ringcast.
# `tools/million.sh` prints what would change; `tools/million.sh --apply` (as root) applies it
# for the running system (not persisted: copy the printed lines into /etc/sysctl.d/ for that).
#
# Sizing: memory ≈ connections × (ringcast's user bytes per idle connection, see PERF.md)
#                + connections × (kernel bytes per idle socket, see PERF.md "kernel")
# plus socket buffers for the bytes actually in flight, which tcp_mem bounds.
set -euo pipefail

CONNS=${CONNS:-1000000}
apply=false
[ "${1:-}" = "--apply" ] && apply=true

# name, wanted value, why
settings=(
  "fs.nr_open|$((CONNS + 65536))|the most file descriptors one process may be given (ulimit -n cannot exceed it)"
  "fs.file-max|$((CONNS * 2))|file descriptors for the whole system"
  "net.core.somaxconn|65535|accept backlog per listener: reconnect storms after a restart"
  "net.ipv4.tcp_max_syn_backlog|65535|half-open connections waiting for their ACK"
  "net.ipv4.ip_local_port_range|1024 65535|client side (load generators): ephemeral ports per source address"
  "net.ipv4.tcp_mem|$((CONNS / 4)) $((CONNS / 2)) $((CONNS))|pages all TCP sockets may use (min, pressure, max): 4 KiB pages, about one page per connection under pressure"
  "net.ipv4.tcp_rmem|4096 4096 6291456|a small default receive buffer: idle push clients send almost nothing"
  "net.ipv4.tcp_wmem|4096 16384 4194304|the default send buffer; ringcast bounds its own per-client buffer (--client-buffer-bytes)"
  "net.netfilter.nf_conntrack_max|$((CONNS * 2))|only if conntrack is loaded: each connection is tracked"
)

for s in "${settings[@]}"; do
  IFS='|' read -r key want why <<<"$s"
  path="/proc/sys/${key//.//}"
  if [ ! -e "$path" ]; then
    printf '# %-32s (not present here) %s\n' "$key" "$why"
    continue
  fi
  have=$(tr -s '\t ' ' ' <"$path")
  # Never lower a single-number limit that is already higher.
  if [[ "$want" =~ ^[0-9]+$ && "$have" =~ ^[0-9]+$ ]] && [ "$have" -ge "$want" ]; then
    printf '# %-32s = %-28s ok (>= %s)\n' "$key" "$have" "$want"
    continue
  fi
  if [ "$have" = "$want" ]; then
    printf '# %-32s = %-28s ok\n' "$key" "$have"
  else
    printf '%s = %s    # now %s: %s\n' "$key" "$want" "$have" "$why"
    if $apply; then
      sysctl -q -w "$key=$want" || echo "could not set $key (container? read-only /proc/sys?)" >&2
    fi
  fi
done

cat <<TXT
# Per process: raise the open-files limit of the shell (or the systemd unit) that starts ringcast:
ulimit -n $((CONNS + 65536))      # or LimitNOFILE=$((CONNS + 65536)) in the unit
# Load generators need source addresses as well as ports: ringcast-load --source-ips spreads
# clients over 127.0.0.2..; each address gives about 64k connections to one server port.
TXT
