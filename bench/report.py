#!/usr/bin/env python3
"""Summarizes bench/run.sh results: median and min..max per server and figure, and the
ratio certgate / reference per round for each reference server (nginx, HAProxy); the
figures compared with the targets are the medians of those per-round ratios."""
import argparse
import json
import statistics
import sys
import time

FIGURES = [
    # (mode, key, label, better)
    ("keepalive", "per_second", "keep-alive requests/s", "higher"),
    ("keepalive", "p50_ms", "keep-alive p50 latency (ms)", "lower"),
    ("keepalive", "p99_ms", "keep-alive p99 latency (ms)", "lower"),
    ("keepalive", "cpu_seconds", "keep-alive server CPU-seconds", "lower"),
    ("keepalive", "requests_per_cpu_second", "keep-alive requests per CPU-second", "higher"),
    ("handshake", "per_second", "full mTLS handshakes/s", "higher"),
    ("handshake", "p50_ms", "handshake p50 latency (ms)", "lower"),
    ("handshake", "p99_ms", "handshake p99 latency (ms)", "lower"),
    ("handshake", "cpu_seconds", "handshake server CPU-seconds", "lower"),
    ("handshake", "peak_rss_kib", "peak RSS after both phases (KiB)", "lower"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("out")
    ap.add_argument("--certgate", default="")
    ap.add_argument("--reference", action="append", default=[], metavar="NAME=VERSION",
                    help="a reference server measured against certgate (repeat for each, in "
                         "table order); default: every server in the results but certgate")
    ap.add_argument("--profile", default="")
    ap.add_argument("--connections", type=int, default=0)
    ap.add_argument("--duration", type=float, default=0)
    ap.add_argument("--rounds", type=int, default=0)
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 unless every server answered every request with 2xx")
    a = ap.parse_args()

    rows = [json.loads(line) for line in open(a.results) if line.strip()]
    for r in rows:
        r["requests_per_cpu_second"] = (
            r["completed"] / r["cpu_seconds"] if r.get("cpu_seconds") else 0.0
        )
    by = {}
    for r in rows:
        by.setdefault((r["server"], r["mode"], r["round"]), r)
    rounds = sorted({r["round"] for r in rows})
    versions = dict(ref.split("=", 1) if "=" in ref else (ref, "") for ref in a.reference)
    refs = list(versions) or sorted({r["server"] for r in rows} - {"certgate"})
    servers = ["certgate"] + refs

    def values(server, mode, key):
        return [by[(server, mode, n)][key] for n in rounds if (server, mode, n) in by]

    def ratios(ref, mode, key):
        return [
            by[("certgate", mode, n)][key] / by[(ref, mode, n)][key]
            for n in rounds
            if ("certgate", mode, n) in by and (ref, mode, n) in by and by[(ref, mode, n)][key]
        ]

    table = []
    for mode, key, label, better in FIGURES:
        table.append({
            "figure": label, "mode": mode, "key": key, "better": better,
            **{s: summary(values(s, mode, key)) for s in servers},
            "ratios": {ref: summary(ratios(ref, mode, key)) for ref in refs},
        })

    errors = {s: sum(r["errors"] for r in rows if r["server"] == s) for s in servers}
    non2xx = {s: sum(r["non_2xx"] for r in rows if r["server"] == s) for s in servers}
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "certgate": a.certgate, "references": versions, "profile": a.profile,
        "connections": a.connections, "seconds_per_figure": a.duration, "rounds": a.rounds,
        "errors": errors, "non_2xx": non2xx,
    }
    json.dump({"meta": meta, "figures": table, "raw": rows}, open(f"{a.out}/results.json", "w"), indent=2)

    against = ", ".join(versions.get(ref) or ref for ref in refs)
    lines = [
        f"Run {meta['date']}: {a.certgate} vs {against} ({a.profile} build), "
        f"{a.connections} connections, {a.duration:g} s per figure, {a.rounds} interleaved rounds.",
        "Errors: " + ", ".join(f"{s} {errors[s]}" for s in servers)
        + "; non-2xx: " + ", ".join(f"{s} {non2xx[s]}" for s in servers) + ".",
        "",
        "| figure | " + " | ".join(f"{s} median (min..max)" for s in servers)
        + " | " + " | ".join(f"certgate / {ref} (median of rounds)" for ref in refs) + " |",
        "|---|" + "---|" * (len(servers) + len(refs)),
    ]
    for t in table:
        cells = [f"{t['figure']} ({t['better']} is better)"]
        cells += [fmt(t[s]) for s in servers]
        cells += [fmt_ratio(t["ratios"][ref]) for ref in refs]
        lines.append("| " + " | ".join(cells) + " |")
    open(f"{a.out}/results.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if any(errors.values()):
        print("warning: some requests failed; see results.json", file=sys.stderr)
    if a.strict:
        idle = [f"{r['server']} {r['mode']}" for r in rows if r["completed"] == 0]
        # Every server must have been measured in both modes.
        missing = [f"{s} {m}" for s in servers for m in ("keepalive", "handshake")
                   if not any(r["server"] == s and r["mode"] == m for r in rows)]
        if missing:
            print(f"smoke run failed: not measured: {missing}", file=sys.stderr)
            sys.exit(1)
        if idle or any(errors.values()) or any(non2xx.values()):
            print(f"smoke run failed: errors {errors}, non-2xx {non2xx}, nothing completed: {idle}",
                  file=sys.stderr)
            sys.exit(1)


def summary(xs):
    if not xs:
        return {"n": 0, "median": 0.0, "min": 0.0, "max": 0.0}
    return {"n": len(xs), "median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def fmt_ratio(s):
    if not s["n"]:
        return "n/a"
    return f"**{s['median']:.2f}×** ({s['min']:.2f}..{s['max']:.2f})"


def fmt(s):
    if not s["n"]:
        return "n/a"
    m = s["median"]
    if m >= 100:
        return f"{m:,.0f} ({s['min']:,.0f}..{s['max']:,.0f})"
    return f"{m:.2f} ({s['min']:.2f}..{s['max']:.2f})"


if __name__ == "__main__":
    main()
