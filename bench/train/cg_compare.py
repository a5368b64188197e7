#!/usr/bin/env python3
"""Compare two callgrind profiles of the same training step (medmae vs PyTorch, made by bench/train/profile).

Reads callgrind.out files directly (standard library only) and prints
- the total instructions (Ir) of each profile and their ratio,
- exclusive Ir per shared object (libtorch_cpu, libgomp, libc, python, the medmae binary, ...),
- exclusive Ir per group of functions (convolution / matmul kernels, elementwise, autograd, dispatcher, allocator,
  OpenMP, interpreter, ...) by name pattern,
- the functions whose exclusive Ir differs most between the two profiles.

Usage: cg_compare.py A.out B.out [--names medmae PyTorch] [--top 30]
"""
import argparse
import collections
import re
import sys

# Function groups by name (first match wins); what is left over is "other".
GROUPS = [
    ("oneDNN / conv kernels", r"dnnl|mkldnn|jit_avx|jit_uni|jit_sse|brgemm|brg_|conv|im2col|col2im|vol2col|col2vol"),
    ("BLAS / matmul", r"sgemm|gemm|mkl_blas|openblas|fbgemm|bmm|addmm|mm_|_mm\b|matmul|linear"),
    ("attention (sdpa)", r"flash_attention|scaled_dot_product|sdpa"),
    ("norms", r"layer_norm|LayerNorm|instance_norm|batch_norm|group_norm|RowwiseMoments|welford|Welford"),
    ("softmax / loss", r"softmax|log_softmax|nll_loss|cross_entropy|binary_cross"),
    ("reductions", r"reduce|Reduce|sum_kernel|mean_kernel|norm_kernel|cascade_sum|binary_kernel_reduce"),
    ("elementwise / copy kernels", r"cpu_kernel|vectorized_loop|VectorizedLoop|basic_loop|unary|binary|copy_kernel|"
                                   r"direct_copy|fill_kernel|lerp|addcmul|addcdiv|gelu|leaky|threshold|"
                                   r"TensorIterator|DimCounter|loop2d|Loop2d|permute|transpose"),
    ("memset / memcpy", r"memset|memcpy|memmove|__memcpy|__memset"),
    ("allocator", r"malloc|free|calloc|realloc|posix_memalign|_int_|alloc_cpu|free_cpu|DefaultCPUAllocator|"
                  r"sysmalloc|systrim|mmap|munmap|brk|tcache|arena"),
    ("autograd engine", r"torch::autograd|autograd::|Engine::|GraphTask|Node::|SavedVariable|InputBuffer|"
                        r"VariableHooks|collect_next_edges|AutogradMeta"),
    ("dispatcher / TensorImpl", r"c10::Dispatcher|OperatorHandle|KernelFunction|DispatchKey|c10::impl::|"
                                r"TensorImpl|intrusive_ptr|c10::SymInt|c10::IValue|at::_ops::|boxed|Boxed|"
                                r"callUnboxed|wrapper_|ADInplaceOrView|VariableType|TraceType|c10::TensorOptions"),
    ("OpenMP / threads", r"GOMP|gomp_|omp_|futex|pthread|sched_yield|at::internal::invoke_parallel|parallel_for"),
    ("python interpreter", r"^_?Py|PyEval|_PyEval|PyObject|pymalloc|_PyObject|frame|PyFrame|THPVariable|"
                           r"THPFunction|pybind11|torch::utils::|torch::PythonArgParser|PythonArgs"),
    ("tch / medmae", r"torch_sys|atg_|at_|tch::|medmae|trainer::|models::|train_step"),
]
GROUP_RE = [(name, re.compile(pat)) for name, pat in GROUPS]


def group_of(fn):
    for name, rx in GROUP_RE:
        if rx.search(fn):
            return name
    return "other"


def parse(path):
    """Exclusive Ir per (object, function) of a callgrind.out file (name compression and subposition handled)."""
    names = {"ob": {}, "fn": {}, "fl": {}}
    cur_ob, cur_fn = "?", "?"
    cost = collections.Counter()
    events = None
    npos = 1  # position columns before the costs ("positions: line" by default)
    skip_next = False  # the cost line after `calls=` is an inclusive call cost, not exclusive
    total = None

    def name(kind, text):
        m = re.match(r"\((\d+)\)(?:\s+(.*))?$", text)
        if not m:
            return text
        ident, label = m.group(1), m.group(2)
        if label is not None:
            names[kind][ident] = label
            return label
        return names[kind].get(ident, f"({ident})")

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) > npos and events:
                    cost[(cur_ob, cur_fn)] += int(parts[npos])
                continue
            if line.startswith("positions:"):
                npos = len(line.split()[1:])
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("ob="):
                cur_ob = name("ob", line[3:])
            elif line.startswith("fn="):
                cur_fn = name("fn", line[3:])
            elif line.startswith(("fl=", "fi=", "fe=")):
                name("fl", line[3:])
            elif line.startswith(("cob=",)):
                name("ob", line[4:])
            elif line.startswith(("cfn=",)):
                name("fn", line[4:])
            elif line.startswith(("cfl=", "cfi=")):
                name("fl", line[4:])
            elif line.startswith("calls="):
                skip_next = True
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    return cost, total


def short_ob(ob):
    return ob.rsplit("/", 1)[-1]


def table(rows, names, top=None):
    w = max([len(r[0]) for r in rows] + [10])
    w = min(w, 90)
    print(f"  {'':{w}}  {names[0]:>14}  {names[1]:>14}  {'difference':>14}")
    for label, a, b in rows[:top]:
        print(f"  {label[:w]:{w}}  {a:14,}  {b:14,}  {a - b:+14,}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--names", nargs=2, default=["medmae", "PyTorch"])
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--steps", type=int, default=1, help="timed steps in the profiles (figures are per step)")
    args = ap.parse_args()
    (ca, ta), (cb, tb) = parse(args.a), parse(args.b)
    sa, sb = sum(ca.values()), sum(cb.values())
    n = args.steps

    def per(counter, key):
        out = collections.Counter()
        for (ob, fn), v in counter.items():
            out[key(ob, fn)] += v // n
        return out

    print(f"instructions per step: {args.names[0]} {sa // n:,}  {args.names[1]} {sb // n:,}  "
          f"ratio {sa / max(sb, 1):.3f}" + (f"  (callgrind totals {ta:,} / {tb:,})" if ta and tb else ""))
    for title, key in [("by shared object", lambda ob, fn: short_ob(ob)),
                       ("by function group", lambda ob, fn: group_of(fn))]:
        xa, xb = per(ca, key), per(cb, key)
        rows = sorted(((k, xa[k], xb[k]) for k in set(xa) | set(xb)), key=lambda r: -max(r[1], r[2]))
        print(f"\n{title} (exclusive Ir per step)")
        table(rows, args.names, args.top)
    fa, fb = per(ca, lambda ob, fn: fn), per(cb, lambda ob, fn: fn)
    rows = sorted(((k, fa[k], fb[k]) for k in set(fa) | set(fb)), key=lambda r: -abs(r[1] - r[2]))
    print(f"\nfunctions with the largest difference (exclusive Ir per step)")
    table(rows, args.names, args.top)
    rows = sorted(((k, fa[k], fb[k]) for k in set(fa) | set(fb)), key=lambda r: -max(r[1], r[2]))
    print(f"\nthe most expensive functions (exclusive Ir per step)")
    table(rows, args.names, args.top)


if __name__ == "__main__":
    sys.exit(main())
