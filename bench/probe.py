#!/usr/bin/env python3
"""How fast is this machine right now? A fixed probe that bench/run takes before and after each benchmark, because
the load average only counts this machine's own runnable tasks: a neighbour on the same host (a shared VM) takes CPU
time (counted as "steal" in /proc/stat where the hypervisor reports it) or memory bandwidth without showing there.

  probe.py speed      one line of JSON: {"cpu_s": ..., "mem_s": ...}: the slowest core's median time of a fixed
                      pure-Python loop, and the median time to copy a 64 MiB buffer, with one process per core
                      running at once (about a second in all)
  probe.py stat       one line: "steal total" jiffies summed over all CPUs (for the steal share over a benchmark)

Standard library only.
"""
import json
import multiprocessing
import os
import statistics
import sys
import time

LOOP = 1_500_000  # ~0.1 s of pure-Python work on a 2-core AMD EPYC
COPY = 64 << 20
REPEATS = 5


def one_core(_):
    cpu, mem = [], []
    buf = bytearray(COPY)
    for _ in range(REPEATS):
        t = time.perf_counter()
        acc = 0
        for i in range(LOOP):
            acc += i * i & 7
        cpu.append(time.perf_counter() - t)
        t = time.perf_counter()
        bytes(buf)
        mem.append(time.perf_counter() - t)
    return statistics.median(cpu), statistics.median(mem)


def speed():
    n = os.cpu_count() or 1
    with multiprocessing.Pool(n) as pool:
        res = pool.map(one_core, range(n))
    print(json.dumps({"cpu_s": round(max(c for c, _ in res), 4), "mem_s": round(max(m for _, m in res), 4)}))


def stat():
    with open("/proc/stat") as f:
        cpu = f.readline().split()
    values = [int(v) for v in cpu[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
    steal = values[7] if len(values) > 7 else 0
    print(steal, sum(values[:8]))


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "speed":
        speed()
    elif cmd == "stat":
        stat()
    else:
        sys.exit(__doc__)
