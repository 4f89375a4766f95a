#!/usr/bin/env python3
"""Reads one ringcast-load JSON line on stdin, appends it (labelled) to a results file and
prints one summary line. Usage: bench_summary.py LABEL RESULTS.jsonl"""
import json
import sys

line = sys.stdin.readline()
lab, path = sys.argv[1], sys.argv[2]
try:
    d = json.loads(line)
except ValueError:
    print(f"{lab:44} no result ({line.strip()[:200]!r})")
    sys.exit(0)
with open(path, "a") as f:
    f.write(json.dumps({"label": lab, **d}) + "\n")
lat = d.get("latency_us", {})
ms = {k: lat.get(k, 0) / 1e3 for k in ("p50", "p99", "p999")}
if "deliveries" in d:
    rate = d.get("deliveries_per_sec_publish_window", 0)
    print(f"{lab:40} deliv/s {rate:9.0f}  p50 {ms['p50']:7.2f}ms  p99 {ms['p99']:7.2f}ms"
          f"  p999 {ms['p999']:7.2f}ms  missing {d['missing']} dup {d['duplicated']}"
          f" ooo {d['out_of_order']} connected {d.get('connected')}")
elif "round_trips_per_sec" in d:
    print(f"{lab:40} round trips/s {d['round_trips_per_sec']:9.0f}  p50 {ms['p50']:7.2f}ms"
          f"  p99 {ms['p99']:7.2f}ms")
elif "server_rss_bytes_per_conn" in d:
    print(f"{lab:40} user RSS/conn {d['server_rss_bytes_per_conn']:8.0f} B"
          f"  anon/conn {d.get('server_anon_bytes_per_conn', 0):8.0f} B"
          f"  kernel tcp mem/conn {d.get('kernel_tcp_mem_bytes_per_conn', 0):6.0f} B"
          f"  up {d.get('connected')}")
else:
    print(lab, json.dumps(d)[:300])
