#!/usr/bin/env python3
"""Reads one ringcast-load JSON line on stdin, appends it (labelled, with any KEY=VALUE fields
given after the file) to a results file and prints one summary line.
  Usage: bench_summary.py LABEL RESULTS.jsonl [KEY=VALUE ...]
  bench_summary.py --table RESULTS.jsonl  prints the fanout runs of a results file as markdown
  tables, one row per case / transport / round, each server's figures side by side with the
  ratios against the best peer of the same round (tools/bench/fanout.sh writes such files)."""
import json
import sys


def num(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def summary_line(lab, d):
    lat = d.get("latency_us", {})
    ms = {k: lat.get(k, 0) / 1e3 for k in ("p50", "p99", "p999")}
    if "deliveries" in d:
        rate = d.get("deliveries_per_sec_publish_window", 0)
        line = (f"{lab:40} deliv/s {rate:9.0f}  p50 {ms['p50']:7.2f}ms  p99 {ms['p99']:7.2f}ms"
                f"  p999 {ms['p999']:7.2f}ms  missing {d['missing']} dup {d['duplicated']}"
                f" ooo {d['out_of_order']} connected {d.get('connected')}")
        if d.get("server_us_per_delivery") is not None:
            line += (f"  to-last {d.get('deliveries_per_sec_to_last', 0):9.0f}/s"
                     f"  server {d['server_us_per_delivery']:.2f} us/deliv"
                     f" ({d.get('server_cores')} cores)")
        if d.get("load_us_per_delivery") is not None:
            line += (f"  load {d['load_us_per_delivery']:.2f} us/deliv"
                     f" ({d.get('load_cores')} cores)")
        sock = d.get("socket_latency_us")
        if sock:
            line += (f"  socket p50 {sock.get('p50', 0) / 1e3:.2f}ms"
                     f" p99 {sock.get('p99', 0) / 1e3:.2f}ms")
        lag = d.get("send_lag_us")
        if sock and lag:
            line += f"  send lag p99 {lag.get('p99', 0) / 1e3:.2f}ms"
        if d.get("machine_busy_cores") is not None:
            line += (f"  machine busy {d['machine_busy_cores']} steal"
                     f" {d.get('machine_steal_cores')}")
        return line
    if "round_trips_per_sec" in d:
        return (f"{lab:40} round trips/s {d['round_trips_per_sec']:9.0f}  p50 {ms['p50']:7.2f}ms"
                f"  p99 {ms['p99']:7.2f}ms")
    if "server_rss_bytes_per_conn" in d:
        return (f"{lab:40} user RSS/conn {d['server_rss_bytes_per_conn']:8.0f} B"
                f"  anon/conn {d.get('server_anon_bytes_per_conn', 0):8.0f} B"
                f"  kernel tcp mem/conn {d.get('kernel_tcp_mem_bytes_per_conn', 0):6.0f} B"
                f"  up {d.get('connected')}")
    if "writes_per_sec_per_core" in d:
        return (f"{lab:40} {d.get('ns_per_write', 0) / 1e3:.2f} us/write wall,"
                f" {d.get('cpu_ns_per_write', 0) / 1e3:.2f} us/write cpu,"
                f" {d['writes_per_sec_per_core']:.0f} writes/s per core")
    return f"{lab} {json.dumps(d)[:300]}"


def fmt(v, digits=0):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def table(path):
    """Markdown tables of a bench/fanout.sh results file: one per case."""
    runs = [json.loads(l) for l in open(path) if l.strip()]
    runs = [r for r in runs if r.get("mode") == "fanout" and "server" in r]
    cases = []
    for r in runs:
        if r["case"] not in cases:
            cases.append(r["case"])
    for case in cases:
        rows = [r for r in runs if r["case"] == case]
        servers = []
        for r in rows:
            if r["server"] not in servers:
                servers.append(r["server"])
        keys = []
        for r in rows:
            k = (r["transport"], r.get("round", 1))
            if k not in keys:
                keys.append(k)
        r0 = rows[0]
        print(f"\n#### {case}: {r0['subscribers']:,} subscribers, {r0['topics']} topics,"
              f" {r0['rate']:g} msg/s in total, {r0['messages']:,} messages,"
              f" {r0.get('processes', 1)} load process(es)\n")
        head = ["transport", "round"]
        for s in servers:
            head += [f"{s} deliv/s", f"{s} µs/deliv", f"{s} p50/p99 ms", f"{s} missing"]
        head += ["load µs/deliv (per server)", "busy/steal cores (per server)"]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for tr, rnd in keys:
            cells = [tr, str(rnd)]
            by = {r["server"]: r for r in rows if (r["transport"], r.get("round", 1)) == (tr, rnd)}
            for s in servers:
                r = by.get(s)
                if r is None:
                    cells += ["—"] * 4
                    continue
                lat = r.get("latency_us", {})
                cells += [fmt(r.get("deliveries_per_sec_to_last")),
                          fmt(r.get("server_us_per_delivery"), 2),
                          f"{lat.get('p50', 0) / 1e3:.2f} / {lat.get('p99', 0) / 1e3:.2f}",
                          f"{r['missing']:,}"]
            cells.append(" / ".join(fmt(by[s].get("load_us_per_delivery"), 2)
                                    for s in servers if s in by))
            cells.append(" / ".join(f"{fmt(by[s].get('machine_busy_cores'), 2)}"
                                    f"·{fmt(by[s].get('machine_steal_cores'), 2)}"
                                    for s in servers if s in by))
            print("| " + " | ".join(cells) + " |")
        if "ringcast" in servers and len(servers) > 1:
            print()
            for tr, rnd in keys:
                by = {r["server"]: r for r in rows
                      if (r["transport"], r.get("round", 1)) == (tr, rnd)}
                rc = by.get("ringcast")
                if rc is None:
                    continue
                parts = []
                for s in servers:
                    if s == "ringcast" or s not in by:
                        continue
                    p = by[s]
                    a, b = rc.get("deliveries_per_sec_to_last"), p.get("deliveries_per_sec_to_last")
                    x, y = rc.get("server_us_per_delivery"), p.get("server_us_per_delivery")
                    t = f"vs {s}: deliv/s {a / b:.2f}×" if a and b else f"vs {s}: —"
                    if x and y:
                        t += f", deliveries per server CPU-s {y / x:.2f}×"
                    parts.append(t)
                print(f"- {tr} round {rnd}: " + "; ".join(parts))


def main():
    if sys.argv[1] == "--table":
        table(sys.argv[2])
        return
    line = sys.stdin.readline()
    lab, path = sys.argv[1], sys.argv[2]
    extra = dict(kv.split("=", 1) for kv in sys.argv[3:])
    try:
        d = json.loads(line)
    except ValueError:
        print(f"{lab:44} no result ({line.strip()[:200]!r})")
        sys.exit(0)
    with open(path, "a") as f:
        f.write(json.dumps({"label": lab, **{k: num(v) for k, v in extra.items()}, **d}) + "\n")
    print(summary_line(lab, d))


main()
