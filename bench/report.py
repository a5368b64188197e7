#!/usr/bin/env python3
"""Write bench/RESULTS.md from the logs of one `bench/run` (called by bench/run; standard library only).

Input: LOGS/runs.tsv (name, status, seconds, time, load before, load after, flag, machine probe before and after,
steal % per benchmark) and LOGS/NAME.log,
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
                f += [""] * (10 - len(f))
                r = dict(zip(["name", "status", "secs", "time", "before", "after", "flag", "probe_before",
                              "probe_after", "steal"], f))
                for k in ("probe_before", "probe_after"):
                    try:
                        r[k] = json.loads(r[k]) if r[k] else {}
                    except json.JSONDecodeError:
                        r[k] = {}
                runs.append(r)
    mark_slowed(runs)
    return runs


SLOWED = 1.25  # a probe this much slower than the run's best marks the benchmark


def mark_slowed(runs):
    """Set r["slowed"] to a reason when a probe around benchmark r took ≥ SLOWED × the run's fastest probe of the same
    kind (cpu_s: a pure-Python loop per core; mem_s: a 64 MiB copy per core)."""
    best = {}
    for r in runs:
        for p in (r["probe_before"], r["probe_after"]):
            for k, v in p.items():
                best[k] = min(best.get(k, v), v)
    for r in runs:
        worst = {}
        for p in (r["probe_before"], r["probe_after"]):
            for k, v in p.items():
                worst[k] = max(worst.get(k, v), v)
        why = [f"{k.split('_')[0]} {v / best[k]:.2f}×" for k, v in sorted(worst.items())
               if best.get(k) and v >= SLOWED * best[k]]
        r["slowed"] = ", ".join(why)


def probe_text(p):
    return f"{p['cpu_s']:.3f} / {p['mem_s']:.3f}" if "cpu_s" in p and "mem_s" in p else "–"


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
    slowed = [r for r in runs if r.get("slowed")]
    probed = [r for r in runs if r["probe_before"]]
    if slowed:
        L.append("")
        L.append(f"> **Note: the machine was slower around {', '.join(r['name'] for r in slowed)}** — the speed probe "
                 f"(`bench/probe.py`: a fixed loop and a 64 MiB copy on every core, before and after each benchmark) "
                 f"took ≥ {SLOWED}× its best time of this run there, which the load average cannot show (other "
                 f"tenants of a shared host). Ratios are measured side by side and suffer less than absolute times.")
    elif probed:
        L.append("")
        L.append(f"Machine speed: the speed probe (`bench/probe.py`, before and after each benchmark) stayed within "
                 f"{SLOWED}× of its best time of this run throughout.")
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
            flag = (" ⚠ LOADED" if r["flag"] else "") + (" ⚠ slower machine" if r.get("slowed") else "")
            L.append(f"| {r['name']} | {x['case']} | {x['figure']} | {fmt_value(x)} | {x.get('goal') or '–'} | "
                     f"{verdict(x)}{flag} |")
    L.append("")
    L.append("## Benchmarks")
    L.append("")
    L.append("| benchmark | status | wall | finished (UTC) | load before (1/5/15 min) | load after | "
             "probe before (cpu / mem s) | probe after | steal | flag |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        flags = [f for f in (r["flag"], r.get("slowed") and f"slower: {r['slowed']}") if f]
        steal = f"{r['steal']} %" if r["steal"] else "–"
        L.append(f"| {r['name']} | {r['status']} | {r['secs']} s | {r['time']} | {r['before']} | {r['after']} | "
                 f"{probe_text(r['probe_before'])} | {probe_text(r['probe_after'])} | {steal} | "
                 f"{'; '.join(flags) or '–'} |")
    for name in a.all.split():
        if name not in ran:
            L.append(f"| {name} | not run in this run | – | – | – | – | – | – | – | – |")
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
