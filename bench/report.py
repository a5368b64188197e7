#!/usr/bin/env python3
"""Write bench/RESULTS.md from the logs of one `bench/run` (called by bench/run; standard library only).

Input: LOGS/runs.tsv (name, status, seconds, time, load before, load after, flag per benchmark) and LOGS/NAME.log,
whose `RESULT {json}` lines come from bench/result.py. Output: a markdown report with the machine, the load policy
and any warning, one row per measured figure with its goal verdict, one row per benchmark, and each log's tail.
"""
import argparse
import datetime
import json
import os
import platform
import re

SKIP = re.compile(r"^\s*(Compiling|Downloaded|Downloading|Finished|Blocking|Updating|Locking)\b")


def read_runs(logs):
    runs = []
    path = os.path.join(logs, "runs.tsv")
    if os.path.exists(path):
        for line in open(path):
            f = line.rstrip("\n").split("\t")
            if len(f) >= 7:
                runs.append(dict(zip(["name", "status", "secs", "time", "before", "after", "flag"], f)))
    return runs


def results_of(log):
    out = []
    if os.path.exists(log):
        for line in open(log, errors="replace"):
            if line.startswith("RESULT "):
                try:
                    out.append(json.loads(line[7:]))
                except json.JSONDecodeError:
                    pass
    return out


def fmt_value(r):
    v = r["value"]
    if r["kind"] == "ratio":
        a, b = r["a"], r["b"]
        return (f"{v:.3f} ({a['name']} {a['median']:.4g} / {b['name']} {b['median']:.4g} {r['unit']}, "
                f"medians of {len(a['runs'])} / {len(b['runs'])})")
    n = len(r.get("runs", []))
    return f"{v:.4g} {r['unit']}".strip() + (f" (median of {n})" if n > 1 else "")


def verdict(r):
    if r.get("met") is None:
        return "— (no goal)"
    return "met" if r["met"] else "**NOT MET**"


def mem_gib():
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    except OSError:
        pass
    return "? RAM"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--logs", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cores", type=int, required=True)
    ap.add_argument("--cpu", default="?")
    ap.add_argument("--commit", default="?")
    ap.add_argument("--quick", default="0")
    ap.add_argument("--full", default="0")
    ap.add_argument("--all", default="")
    a = ap.parse_args()
    runs = read_runs(a.logs)
    ran = {r["name"] for r in runs}
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    loaded = [r for r in runs if r["flag"]]
    L = []
    L.append("# medmae benchmark results")
    L.append("")
    L.append(f"Written by `bench/run` on {now} from run `{os.path.basename(a.logs)}`, commit {a.commit}.")
    L.append(f"Machine: {a.cpu}, {a.cores} cores, {mem_gib()}, {platform.system()} {platform.release()}.")
    mode = "quick (BENCH_QUICK=1: harness check, reduced settings — not results)" if a.quick == "1" else "full settings"
    scope = "every benchmark" if a.full == "1" else "a subset: " + ", ".join(r["name"] for r in runs)
    L.append(f"Run: {scope}, {mode}. Each figure is the median of repeated runs measured in this run; every ratio "
             f"compares two programs run side by side (interleaved) on the same machine; goals are marked by "
             f"`bench/result.py` from the measured value.")
    L.append("")
    if loaded:
        L.append(f"> **WARNING: the machine was loaded** — the 1-minute load average exceeded the {a.cores} cores "
                 f"before {', '.join(r['name'] for r in loaded)}. Those figures are NOT valid measurements "
                 f"(the run went on because BENCH_ALLOW_LOADED=1, or stopped there).")
    else:
        L.append(f"Load: every benchmark started with a 1-minute load average ≤ {a.cores} (the core count); the "
                 f"load before and after each one is in the tables.")
    L.append("")
    L.append("## Goals and figures")
    L.append("")
    L.append("| benchmark | case | figure | value | goal | verdict |")
    L.append("|---|---|---|---|---|---|")
    for r in runs:
        res = results_of(os.path.join(a.logs, r["name"] + ".log"))
        if not res:
            L.append(f"| {r['name']} | – | – | no figure ({r['status']}) | – | – |")
        for x in res:
            flag = " ⚠ LOADED" if r["flag"] else ""
            L.append(f"| {r['name']} | {x['case']} | {x['figure']} | {fmt_value(x)} | {x.get('goal') or '–'} | "
                     f"{verdict(x)}{flag} |")
    L.append("")
    L.append("## Benchmarks")
    L.append("")
    L.append("| benchmark | status | wall | finished (UTC) | load before (1/5/15 min) | load after | flag |")
    L.append("|---|---|---|---|---|---|---|")
    for r in runs:
        L.append(f"| {r['name']} | {r['status']} | {r['secs']} s | {r['time']} | {r['before']} | {r['after']} | "
                 f"{r['flag'] or '–'} |")
    for name in a.all.split():
        if name not in ran:
            L.append(f"| {name} | not run in this run | – | – | – | – | – |")
    for r in runs:
        L.append("")
        L.append(f"## {r['name']}")
        L.append("")
        L.append("```")
        path = os.path.join(a.logs, r["name"] + ".log")
        lines = [l.rstrip("\n") for l in open(path, errors="replace")] if os.path.exists(path) else ["(no log)"]
        lines = [l for l in lines if not SKIP.match(l) and not l.startswith("RESULT ")]
        if len(lines) > 80:
            lines = lines[:3] + [f"... ({len(lines) - 80} lines left out; full log target/bench-logs/"
                                 f"{os.path.basename(a.logs)}/{r['name']}.log)"] + lines[-77:]
        L.extend(lines)
        L.append("```")
    with open(a.out, "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
