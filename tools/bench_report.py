#!/usr/bin/env python3
"""Turns benchmark run directories into PERF.md tables and SVG plots.

Usage: tools/bench_report.py [--perf-md PERF.md|none] [--plots docs/perf] [--markdown FILE] RUN_DIR...

Each RUN_DIR is a bench-results/<run>/ directory: results.jsonl (one labelled ringcast-load
summary per line, written by tools/bench_summary.py; wrk runs as "mode": "wrk" lines written by
tools/bench/http.sh and tools/bench/publish.sh with RESULTS=FILE), and for runs older than those
JSON lines, the wrk text lines of summary.txt. Several directories are merged in the order given:
a measurement (same server, same parameters) in a later directory replaces an earlier one; each
wrk section comes whole from the last directory that has it.

Writes the SVG plots into --plots, and replaces the part of --perf-md between
<!-- bench-report:begin --> and <!-- bench-report:end --> (appending the markers under a new
section if the file has none). Everything outside the markers is left as it is.
Python 3.11 standard library only.
"""
import argparse
import datetime
import json
import math
import os
import re
import sys
from pathlib import Path

BEGIN = "<!-- bench-report:begin -->"
END = "<!-- bench-report:end -->"
SECTION = "## Generated from the last tools/bench.sh run"
ROOT = Path(__file__).resolve().parent.parent
TRANSPORT_ORDER = {"sse": 0, "ws": 1, "longpoll": 2}
COLORS = {"ringcast": "#1f66b0", "nchan": "#e07000", "nginx": "#e07000", "axum": "#2a9a3a"}
EXTRA_COLORS = ["#8e44ad", "#c0392b", "#7f8c8d", "#16a085"]


# ---------------------------------------------------------------- loading

WRK_LINE = re.compile(
    r"^(?P<name>\S.*?)\s+(?P<rps>[\d.]+) (?P<unit>req|pub)/s\s+p50\s+(?P<p50>\S+)\s+p99\s+(?P<p99>\S+)"
    r"\s+server cpu\s+(?P<cpu>[\d.]+)s\s+(?P<per>\S+) (?:req|pub)/cpu-s(?:\s+non-2xx (?P<n2>\d+))?")


def wrk_us(text):
    """wrk's latency text (777.00us, 2.89ms, 1.05s) in microseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    return float(m[1]) * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[m[2]]


def num(text):
    try:
        return float(text)
    except ValueError:
        return None


def parse_wrk_summary(path):
    """wrk lines of a summary.txt (runs from before the JSON lines existed)."""
    out, rnd = [], 0
    for line in path.read_text(errors="replace").splitlines():
        m = re.match(r"## round (\d+)", line)
        if m:
            rnd = int(m[1])
            continue
        m = WRK_LINE.match(line)
        if not m:
            continue
        bench = "healthz" if m["unit"] == "req" else "publish"
        rec = {"label": f"wrk {bench} {m['name']}", "mode": "wrk", "bench": bench, "name": m["name"],
               "round": rnd, "requests_per_sec": num(m["rps"]),
               "latency_us": {"p50": wrk_us(m["p50"]), "p99": wrk_us(m["p99"])},
               "server_cpu_seconds": num(m["cpu"]), "requests_per_cpu_second": num(m["per"])}
        if m["n2"] is not None:
            rec["non_2xx"] = int(m["n2"])
        out.append(rec)
    return out


def load_run(d):
    d = Path(d)
    recs = []
    res = d / "results.jsonl"
    if res.exists():
        for n, line in enumerate(res.read_text(errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except ValueError:
                print(f"{res}:{n}: not JSON, skipped", file=sys.stderr)
    summary = d / "summary.txt"
    if not any(r.get("mode") == "wrk" for r in recs) and summary.exists():
        recs += parse_wrk_summary(summary)
    machine = []
    if (d / "machine.txt").exists():
        machine = [" ".join(l.lstrip("# ").split()) for l in (d / "machine.txt").read_text().splitlines() if l.strip()]
    for r in recs:
        r["_run"] = d.name
    return {"name": d.name, "records": recs, "machine": machine}


def server_of(rec):
    """'ringcast', 'nchan', 'nginx', 'axum', ... from a record's label or wrk name."""
    name = rec.get("name") if rec.get("mode") in ("wrk", "echo") and rec.get("name") else rec.get("label", "")
    first = (name or "?").split()[0]
    return {"nginx+nchan": "nchan"}.get(first, first)


def servers_in(recs):
    seen = {server_of(r) for r in recs}
    return ["ringcast"] * ("ringcast" in seen) + sorted(seen - {"ringcast"})


# ---------------------------------------------------------------- formatting

def fint(v):
    return "—" if v is None else f"{v:,.0f}"


def fms(us):
    if us is None:
        return "—"
    ms = us / 1e3
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


def table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def lat(rec, k):
    return (rec or {}).get("latency_us", {}).get(k)


# ---------------------------------------------------------------- sections

def wrk_section(runs, bench, title, peer_word):
    """Per-round table, ringcast beside the peer with the same core count."""
    src = None
    for run in runs:
        if any(r.get("mode") == "wrk" and r.get("bench") == bench for r in run["records"]):
            src = run
    if src is None:
        return None
    recs = [r for r in src["records"] if r.get("mode") == "wrk" and r.get("bench") == bench]
    groups = {}
    for r in recs:
        m = re.search(r"\d+", r["name"])
        cores = int(m[0]) if m else 0
        groups.setdefault((r.get("round", 0), cores), {})[server_of(r)] = r
    peers = [s for s in servers_in(recs) if s != "ringcast"]
    unit = "pub/s" if bench == "publish" else "req/s"
    head = ["round", "cores"]
    for what in (unit, f"{unit} per server CPU-s"):
        head += [f"{what} ringcast"] + [p for p in peers] + [f"ringcast ÷ {p}" for p in peers]
    head += ["p99 ms ringcast"] + peers
    rows, ratios = [], {}
    for (rnd, cores), by in sorted(groups.items()):
        rc = by.get("ringcast", {})
        row = [rnd, cores]
        for key in ("requests_per_sec", "requests_per_cpu_second"):
            row.append(fint(rc.get(key)))
            row += [fint(by.get(p, {}).get(key)) for p in peers]
            row += [ratio(rc.get(key), by.get(p, {}).get(key)) for p in peers]
        row.append(fms(lat(rc, "p99")))
        row += [fms(lat(by.get(p), "p99")) for p in peers]
        rows.append(row)
        for p in peers:
            if rc.get("requests_per_sec") and by.get(p, {}).get("requests_per_sec"):
                ratios.setdefault(cores, []).append(rc["requests_per_sec"] / by[p]["requests_per_sec"])
    names = sorted({r["name"] for r in recs}, key=lambda n: (server_of({"mode": "wrk", "name": n}) != "ringcast", n))
    out = [f"### {title}", "", f"Run `{src['name']}`; servers: " + ", ".join(f"`{n}`" for n in names)
           + f". The servers alternate round by round; compare the ratios within a round.", "",
           table(head, rows)]
    if ratios:
        out += ["", "ringcast ÷ " + peer_word + f" {unit}, per round: " + "; ".join(
            f"{c} core{'s' * (c != 1)}: " + ", ".join(f"{x:.2f}×" for x in v) for c, v in sorted(ratios.items()))
            + "."]
    return "\n".join(out)


def merged(runs, mode):
    """Records of one mode, later runs replacing earlier ones with the same label."""
    by = {}
    for run in runs:
        for r in run["records"]:
            if r.get("mode") == mode:
                by[r.get("label")] = r
    return list(by.values())


def fanout_key(r):
    return (r.get("transport"), r.get("topics"), r.get("rate"), r.get("size"))


def completeness(r):
    if r is None:
        return "—"
    bad = [f"{k} {r.get(f, 0):,}" for k, f in (("missing", "missing"), ("dup", "duplicated"), ("ooo", "out_of_order"))
           if r.get(f)]
    if r.get("connected") is not None and r.get("connected") != r.get("subscribers"):
        bad.append(f"up {r.get('connected'):,}/{r.get('subscribers'):,}")
    return ", ".join(bad) if bad else "all"


def fanout_section(recs):
    if not recs:
        return None
    groups = {}
    for r in recs:
        groups.setdefault(fanout_key(r) + (r.get("subscribers"),), {})[server_of(r)] = r
    peers = [s for s in servers_in(recs) if s != "ringcast"]
    head = ["transport", "subs", "topics", "msg/s", "offered deliv/s", "deliv/s ringcast", *peers,
            *[f"ringcast ÷ {p}" for p in peers], "p50 / p99 / p999 ms ringcast", *peers,
            "complete ringcast", *peers]
    rows = []
    counts = {}  # scenarios measured at more subscriber counts (the plotted ones) first
    for key in groups:
        counts[key[:4]] = counts.get(key[:4], 0) + 1
    for key, by in sorted(groups.items(), key=lambda kv: (TRANSPORT_ORDER.get(kv[0][0], 9), kv[0][0],
                                                          -counts[kv[0][:4]], kv[0][1] or 0, kv[0][2] or 0,
                                                          kv[0][4] or 0)):
        tr, topics, rate, size, subs = key
        rc = by.get("ringcast")
        rate_of = lambda r: (r or {}).get("deliveries_per_sec_publish_window")
        offered = subs * rate / topics if subs and rate and topics else None
        pct = lambda r: "—" if r is None else " / ".join(fms(lat(r, k)) for k in ("p50", "p99", "p999"))
        rows.append([tr, fint(subs), topics, fint(rate), fint(offered), fint(rate_of(rc)),
                     *[fint(rate_of(by.get(p))) for p in peers],
                     *[ratio(rate_of(rc), rate_of(by.get(p))) for p in peers],
                     pct(rc), *[pct(by.get(p)) for p in peers],
                     completeness(rc), *[completeness(by.get(p)) for p in peers]])
    sizes = sorted({r.get("size") for r in recs if r.get("size")})
    return "\n".join([
        "### Fanout: deliveries and delivery latency", "",
        f"`ringcast-load fanout`, {'/'.join(str(s) for s in sizes)}-byte messages published at a constant total "
        "rate (msg/s) over the topics; latency from each message's intended send time to its arrival. "
        "*offered* = subscribers × msg/s ÷ topics, what a server that keeps up delivers. "
        "*complete*: missing / duplicated / out-of-order deliveries summed over subscribers (all = none).", "",
        table(head, rows)])


def hold_section(recs):
    if not recs:
        return None
    groups = {}
    for r in recs:
        groups.setdefault((r.get("transport"), r.get("connections"), r.get("topics")), {})[server_of(r)] = r
    peers = [s for s in servers_in(recs) if s != "ringcast"]
    g = lambda r, k: (r or {}).get(k)
    head = ["transport", "connections", "topics", "user B/conn ringcast", *peers, *[f"ringcast ÷ {p}" for p in peers],
            "kernel TCP mem B/conn ringcast", *peers, "kernel slab B/conn, both ends, ringcast", *peers,
            "up ringcast", *peers]
    rows = []
    for (tr, n, t), by in sorted(groups.items(), key=lambda kv: (TRANSPORT_ORDER.get(kv[0][0], 9), kv[0][1] or 0, kv[0][2] or 0)):
        rc = by.get("ringcast")
        row = [tr, fint(n), fint(t)]
        for k, with_ratio in (("server_rss_bytes_per_conn", True), ("kernel_tcp_mem_bytes_per_conn", False),
                              ("kernel_slab_bytes_per_conn_both_ends", False), ("connected", False)):
            row += [fint(g(rc, k)), *[fint(g(by.get(p), k)) for p in peers]]
            if with_ratio:
                row += [ratio(g(rc, k), g(by.get(p), k)) for p in peers]
        rows.append(row)
    return "\n".join([
        "### Idle connections: memory per connection", "",
        "`ringcast-load hold` (`tools/bench/hold.sh`), the streams over 10 shared topics or one topic per "
        "connection: server RSS delta ÷ connections (user space; "
        "lower is better, so a ratio below 1 favours ringcast), the kernel's TCP buffer memory "
        "(/proc/net/sockstat) and slab (/proc/meminfo) per connection, separately.", "",
        table(head, rows)])


def echo_section(recs):
    if not recs:
        return None
    rcs = {(r.get("connections"), r.get("size")): r for r in recs if server_of(r) == "ringcast"}
    rows = []
    key = lambda r: (r.get("round") or 0, r.get("connections") or 0, r.get("size") or 0)
    rcs = {key(r): r for r in recs if server_of(r) == "ringcast"}
    for r in sorted(recs, key=lambda r: (*key(r), server_of(r) != "ringcast")):
        rc = rcs.get(key(r))
        mine = r is rc or rc is None
        rows.append([fint(r.get("round")), r.get("name") or server_of(r), fint(r.get("connections")), fint(r.get("size")),
                     fint(r.get("round_trips_per_sec")), fint(r.get("round_trips_per_cpu_second")),
                     fms(lat(r, "p50")), fms(lat(r, "p99")),
                     "—" if mine else ratio(rc.get("round_trips_per_sec"), r.get("round_trips_per_sec")),
                     "—" if mine else ratio(rc.get("round_trips_per_cpu_second"), r.get("round_trips_per_cpu_second"))])
    return "\n".join(["### WebSocket echo", "",
                      "`tools/bench/echo.sh`: one message in flight per connection, each server on core 0, the load "
                      "tool on core 1; rounds alternate the servers.", "",
                      table(["round", "server", "connections", "bytes", "round trips/s", "per server CPU-s", "p50 ms",
                             "p99 ms", "ringcast ÷ server", "per CPU-s ringcast ÷ server"], rows)])


def writecost_section(recs):
    if not recs:
        return None
    rows = [[fint(r.get("pairs")), fint(r.get("size")), r.get("readers", "drained"),
             f"{r.get('round_ns_per_write_p50', 0) / 1e3:.2f}",
             f"{r.get('round_ns_per_write_min', 0) / 1e3:.2f}", f"{r.get('cpu_ns_per_write', 0) / 1e3:.2f}",
             fint(r.get("writes_per_sec_per_core"))] for r in recs]
    return "\n".join(["### The machine's write() cost", "",
                      "`ringcast-writecost`: one small `write()` to each of K loopback sockets on one core; "
                      "readers *drained* between rounds, or *waiting* in `epoll_wait` on another core.", "",
                      table(["sockets", "bytes", "readers", "µs/write (p50 of rounds)", "µs/write (best round)",
                             "CPU µs/write", "writes/s per core"], rows)])


# ---------------------------------------------------------------- SVG

def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def color(server, order):
    if server in COLORS:
        return COLORS[server]
    return EXTRA_COLORS[order.index(server) % len(EXTRA_COLORS)]


def nice_step(span, n=5):
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def si(v):
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            s = f"{v / div:.1f}".rstrip("0").rstrip(".")
            return s + suf
    return f"{v:g}"


def ms_label(ms):
    if ms >= 1000:
        return f"{ms / 1000:g} s"
    if ms >= 1:
        return f"{ms:g} ms"
    return f"{ms * 1000:g} µs"


def marker(shape, x, y, col, hollow):
    fill = "white" if hollow else col
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{fill}" stroke="{col}" stroke-width="1.5"/>'
    if shape == "triangle":
        return (f'<path d="M{x:.1f},{y - 4.5:.1f} L{x + 4.2:.1f},{y + 3:.1f} L{x - 4.2:.1f},{y + 3:.1f} Z" '
                f'fill="{fill}" stroke="{col}" stroke-width="1.5"/>')
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.8" fill="{fill}" stroke="{col}" stroke-width="1.5"/>'


class Panel:
    """One chart area: log-scale x (subscribers), log or linear y."""

    def __init__(self, x0, y0, w, h, xs, ylo, yhi, ylog):
        self.x0, self.y0, self.w, self.h, self.ylog = x0, y0, w, h, ylog
        lx = [math.log10(x) for x in xs]
        pad = max(0.25, (max(lx) - min(lx)) * 0.12)
        self.xlo, self.xhi = min(lx) - pad, max(lx) + pad
        self.ylo, self.yhi = ylo, yhi

    def px(self, x):
        return self.x0 + (math.log10(x) - self.xlo) / (self.xhi - self.xlo) * self.w

    def py(self, y):
        if self.ylog:
            f = (math.log10(y) - math.log10(self.ylo)) / (math.log10(self.yhi) - math.log10(self.ylo))
        else:
            f = (y - self.ylo) / (self.yhi - self.ylo)
        return self.y0 + self.h - f * self.h


def log_ticks(lo, hi):
    """1-2-5 ticks over a short range, decades over a long one; returns (ticks, ylo, yhi)."""
    d0, d1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    if d1 == d0:
        d1 += 1
    mult = (1, 2, 5) if d1 - d0 <= 3 else (1,)
    cands = [m * 10 ** d for d in range(d0, d1 + 1) for m in mult]
    ylo = max(c for c in cands if c <= lo)
    yhi = min(c for c in cands if c >= hi)
    return [c for c in cands if ylo <= c <= yhi], ylo, yhi


def svg_chart(title, subtitle, panels, y_title, ylog, legend, path):
    """panels: [(panel title, [series])]; series: dict(points=[(x, y, hollow)], color, dash, shape, width)."""
    pw, ph, left, top, gap = 290, 250, 70, 92, 34
    width = left + len(panels) * pw + (len(panels) - 1) * gap + 20
    height = top + ph + 62
    ys = [p[1] for _, series in panels for s in series for p in s["points"] if p[1] and p[1] > 0]
    xs = sorted({p[0] for _, series in panels for s in series for p in s["points"]})
    if ylog:
        ticks, ylo, yhi = log_ticks(min(ys), max(ys))
    else:
        step = nice_step(max(ys) * 1.05)
        yhi = step * math.ceil(max(ys) * 1.05 / step)
        ylo, ticks = 0, [i * step for i in range(int(round(yhi / step)) + 1)]
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
         'font-family="Helvetica, Arial, sans-serif" font-size="12">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{left}" y="22" font-size="15" font-weight="bold">{esc(title)}</text>',
         f'<text x="{left}" y="40" fill="#555">{esc(subtitle)}</text>']
    # legend
    lx, ly = left, 62
    for item in legend:
        col, dash, shape, label = item
        o.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 26}" y2="{ly}" stroke="{col}" stroke-width="2"'
                 + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        if shape:
            o.append(marker(shape, lx + 13, ly, col, shape == "hollow"))
        o.append(f'<text x="{lx + 32}" y="{ly + 4}">{esc(label)}</text>')
        lx += 44 + 6.6 * len(label)
    for i, (ptitle, series) in enumerate(panels):
        x0 = left + i * (pw + gap)
        P = Panel(x0, top, pw, ph, xs, ylo, yhi, ylog)
        o.append(f'<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        o.append(f'<text x="{x0 + pw / 2}" y="{top - 6}" text-anchor="middle" font-weight="bold">{esc(ptitle)}</text>')
        for t in ticks:
            y = P.py(t)
            o.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#e4e4e4"/>')
            if i == 0:
                lab = ms_label(t) if ylog else si(t)
                o.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(lab)}</text>')
        for x in xs:
            X = P.px(x)
            o.append(f'<line x1="{X:.1f}" y1="{top}" x2="{X:.1f}" y2="{top + ph}" stroke="#f0f0f0"/>')
            o.append(f'<line x1="{X:.1f}" y1="{top + ph}" x2="{X:.1f}" y2="{top + ph + 5}" stroke="#999"/>')
            o.append(f'<text x="{X:.1f}" y="{top + ph + 18}" text-anchor="middle">{fint(x)}</text>')
        o.append(f'<text x="{x0 + pw / 2}" y="{top + ph + 38}" text-anchor="middle" fill="#333">subscribers</text>')
        for s in series:
            pts = sorted((p for p in s["points"] if p[1] and p[1] > 0), key=lambda p: p[0])
            if not pts:
                continue
            d = " ".join(f"{'M' if j == 0 else 'L'}{P.px(x):.1f},{P.py(y):.1f}" for j, (x, y, _) in enumerate(pts))
            o.append(f'<path d="{d}" fill="none" stroke="{s["color"]}" stroke-width="{s.get("width", 2)}"'
                     + (f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else "") + "/>")
            if s.get("shape"):
                o += [marker(s["shape"], P.px(x), P.py(y), s["color"], hollow) for x, y, hollow in pts]
    o.append(f'<text transform="translate(16,{top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">'
             f'{esc(y_title)}</text>')
    o.append("</svg>")
    path.write_text("\n".join(o) + "\n")


PCTS = (("p50", "", "circle"), ("p99", "6 3", "square"), ("p999", "2 3", "triangle"))


def plot_scenarios(recs):
    """Per transport, the fanout scenario (topics, rate, size) with the most subscriber counts."""
    by = {}
    for r in recs:
        by.setdefault(fanout_key(r), set()).add(r.get("subscribers"))
    best = {}
    for key, subs in by.items():
        tr = key[0]
        if len(subs) >= 2 and (tr not in best or len(subs) > len(by[best[tr]])):
            best[tr] = key
    return [best[t] for t in sorted(best, key=lambda t: (TRANSPORT_ORDER.get(t, 9), t))]


def plots(recs, outdir):
    keys = plot_scenarios(recs)
    if not keys:
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    servers = servers_in(recs)
    any_hollow = any(completeness(r) != "all" for r in recs if fanout_key(r) in keys)
    lat_panels, rate_panels = [], []
    for key in keys:
        tr, topics, rate, size = key
        rs = [r for r in recs if fanout_key(r) == key]
        lser, rser = [], []
        for s in servers:
            mine = [r for r in rs if server_of(r) == s]
            col = color(s, servers)
            for pct, dash, shape in PCTS:
                lser.append(dict(color=col, dash=dash, shape=shape,
                                 points=[(r["subscribers"], lat(r, pct) / 1e3 if lat(r, pct) else None,
                                          completeness(r) != "all") for r in mine]))
            rser.append(dict(color=col, dash="", shape="circle",
                             points=[(r["subscribers"], r.get("deliveries_per_sec_publish_window"),
                                      completeness(r) != "all") for r in mine]))
        subs = sorted({r["subscribers"] for r in rs})
        rser.insert(0, dict(color="#888", dash="5 4", shape=None, width=1.5,
                            points=[(n, n * rate / topics, False) for n in subs]))
        ptitle = f"{tr} — {topics} topics, {rate:g} msg/s"
        lat_panels.append((ptitle, lser))
        rate_panels.append((ptitle, rser))
    sizes = sorted({k[3] for k in keys})
    sub = f"ringcast-load fanout, {'/'.join(str(s) for s in sizes)} B messages, constant total publish rate; log scales"
    srv_legend = [(color(s, servers), "", None, s) for s in servers]
    hollow = [("#555", None, "hollow", "hollow: messages lost")] if any_hollow else []
    lat_path, rate_path = outdir / "fanout-latency.svg", outdir / "fanout-deliveries.svg"
    svg_chart("Delivery latency vs subscribers", sub, lat_panels, "delivery latency (log)", True,
              srv_legend + [("#333", d, sh, p) for p, d, sh in PCTS] + hollow, lat_path)
    svg_chart("Deliveries per second vs subscribers", sub.replace("; log scales", "; log x"), rate_panels,
              "deliveries/s (publish window)", False,
              srv_legend + [("#888", "5 4", None, "offered (subs × msg/s ÷ topics)")] + hollow, rate_path)
    return [("Delivery latency p50 / p99 / p999 against subscriber count", lat_path),
            ("Deliveries per second against subscriber count", rate_path)]


# ---------------------------------------------------------------- main

def build(runs, plot_dir, md_dir):
    out = [f"Generated by `tools/bench_report.py` on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC "
           "from these runs (raw JSON lines in `bench-results/<run>/results.jsonl`, not committed):", ""]
    for run in runs:
        out.append(f"- `{run['name']}`" + (": " + "; ".join(run["machine"]) if run["machine"] else ""))
    fan = merged(runs, "fanout")
    sections = [
        wrk_section(runs, "healthz", "HTTP: wrk on `GET /healthz` beside nginx `return 200`", "nginx"),
        wrk_section(runs, "poll", "Short polling: wrk on `GET /poll/t?since=E:0` beside nginx `return 200`", "nginx"),
        wrk_section(runs, "publish", "Publishing: wrk `POST /pub` beside nchan's publisher", "nchan"),
        fanout_section(fan),
        hold_section(merged(runs, "hold")),
        echo_section(merged(runs, "echo")),
        writecost_section(merged(runs, "writecost")),
    ]
    images = plots(fan, plot_dir) if plot_dir else []
    for s in sections:
        if s:
            out += ["", s]
        if s and s.startswith("### Fanout") and images:
            for alt, p in images:
                out += ["", f"![{alt}]({os.path.relpath(p, md_dir)})"]
    return "\n".join(out) + "\n"


def rewrite(perf_md, body):
    text = perf_md.read_text() if perf_md.exists() else ""
    block = f"{BEGIN}\n{body}{END}"
    if BEGIN in text and END in text and text.index(BEGIN) < text.index(END):
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{block}\n"
    perf_md.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="bench-results/<run> directories, oldest first")
    ap.add_argument("--perf-md", default=str(ROOT / "PERF.md"), help="file whose marked section to rewrite, or 'none'")
    ap.add_argument("--plots", default=str(ROOT / "docs" / "perf"), help="directory for the SVG plots, or 'none'")
    ap.add_argument("--markdown", help="also write the generated section to this file")
    a = ap.parse_args()
    missing = [d for d in a.runs if not Path(d).is_dir()]
    if missing:
        sys.exit(f"not a directory: {', '.join(missing)}")
    runs = [load_run(d) for d in a.runs]
    md_target = Path(a.perf_md) if a.perf_md != "none" else (Path(a.markdown) if a.markdown else Path.cwd() / "x")
    plot_dir = None if a.plots == "none" else Path(a.plots)
    body = build(runs, plot_dir, md_target.resolve().parent)
    if a.markdown:
        Path(a.markdown).write_text(body)
    if a.perf_md != "none":
        rewrite(Path(a.perf_md), body)
    if not a.markdown and a.perf_md == "none":
        sys.stdout.write(body)
    done = [str(p) for p in ([a.perf_md] if a.perf_md != "none" else []) + ([a.markdown] if a.markdown else [])]
    print(f"bench_report: {len(runs)} run(s) -> {', '.join(done) or 'stdout'}"
          + (f", plots in {plot_dir}" if plot_dir else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
