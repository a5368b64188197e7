#!/usr/bin/env python3
"""One definition of how a benchmark turns repeated measurements into a reported figure and a goal verdict.

Every benchmark script of bench/ prints its figures through this tool, so the medians, ratios and "met / not met"
of bench/RESULTS.md are computed the same way everywhere and never typed by hand:

  bench/result.py compare --case "train unetr-tiny" --a medmae 101,99,103 --b PyTorch 98,97,99 --unit ms \
      --ratio a/b --goal "<=1.0"
  bench/result.py value --case "export vit-b" --name "export time" --values 2.8 --unit s --goal "<5"

`compare` reports the median of each side's repeated runs, the ratio of the medians (`a/b` or `b/a`) and whether it
meets the goal; `value` does the same for one measured quantity. A goal is an operator (<, <=, >, >=) and a number;
`--goal none` reports without a verdict. Each call prints a human line and a machine line `RESULT {json}` that
bench/run collects into the summary table. Standard library only.
"""
import argparse
import json
import operator
import statistics
import sys

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def parse_goal(text):
    """'<=1.0' -> ('<=', 1.0); 'none' -> None."""
    text = text.replace(" ", "")
    if text.lower() == "none":
        return None
    for op in ("<=", ">=", "<", ">"):
        if text.startswith(op):
            return op, float(text[len(op):])
    raise SystemExit(f"bench/result.py: goal must be <, <=, > or >= and a number, or none; got {text!r}")


def parse_values(text, what):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise SystemExit(f"bench/result.py: {what}: comma-separated numbers expected, got {text!r}")
    if not values:
        raise SystemExit(f"bench/result.py: {what}: no measurements (did the benchmark fail?)")
    return values


def spread(values, unit):
    m = statistics.median(values)
    if len(values) == 1:
        return f"{m:.4g} {unit} (1 run)"
    return f"{m:.4g} {unit} (median of {len(values)}, {min(values):.4g}–{max(values):.4g})"


def verdict(x, goal):
    if goal is None:
        return None, "no goal"
    op, bound = goal
    ok = OPS[op](x, bound)
    return ok, f"goal {op} {bound:g}: {'met' if ok else 'NOT MET'}"


def emit(record, line):
    print(line)
    print("RESULT " + json.dumps(record, sort_keys=True))
    sys.stdout.flush()


def compare(case, a, b, unit="s", ratio="a/b", goal=None):
    """Print the medians of `a = (name, values)` and `b`, their ratio and its verdict against `goal` (op, bound)."""
    (na, xa), (nb, xb) = a, b
    ma, mb = statistics.median(xa), statistics.median(xb)
    if min(ma, mb) <= 0:
        raise SystemExit(f"bench/result.py: {case}: non-positive median ({ma}, {mb})")
    num, den = (na, nb) if ratio == "a/b" else (nb, na)
    r = ma / mb if ratio == "a/b" else mb / ma
    ok, says = verdict(r, goal)
    line = f"{case}: {na} {spread(xa, unit)}, {nb} {spread(xb, unit)}; {num}/{den} = {r:.3f}; {says}"
    emit({"case": case, "kind": "ratio", "figure": f"{num}/{den}", "value": round(r, 4),
          "a": {"name": na, "median": ma, "runs": xa}, "b": {"name": nb, "median": mb, "runs": xb},
          "unit": unit, "goal": None if goal is None else f"{goal[0]} {goal[1]:g}", "met": ok}, line)


def value(case, name, values, unit="", goal=None):
    """Print the median of `values` and its verdict against `goal` (op, bound)."""
    m = statistics.median(values)
    ok, says = verdict(m, goal)
    emit({"case": case, "kind": "value", "figure": name, "value": m, "runs": values, "unit": unit,
          "goal": None if goal is None else f"{goal[0]} {goal[1]:g}", "met": ok},
         f"{case}: {name} {spread(values, unit)}; {says}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="two implementations, medians and their ratio")
    c.add_argument("--case", required=True)
    c.add_argument("--a", nargs=2, metavar=("NAME", "VALUES"), required=True)
    c.add_argument("--b", nargs=2, metavar=("NAME", "VALUES"), required=True)
    c.add_argument("--unit", default="s")
    c.add_argument("--ratio", choices=["a/b", "b/a"], default="a/b")
    c.add_argument("--goal", default="none")
    v = sub.add_parser("value", help="one measured quantity against a goal")
    v.add_argument("--case", required=True)
    v.add_argument("--name", required=True)
    v.add_argument("--values", required=True)
    v.add_argument("--unit", default="")
    v.add_argument("--goal", default="none")
    a = ap.parse_args()
    goal = parse_goal(a.goal)
    if a.cmd == "compare":
        (na, va), (nb, vb) = a.a, a.b
        compare(a.case, (na, parse_values(va, na)), (nb, parse_values(vb, nb)), a.unit, a.ratio, goal)
    else:
        value(a.case, a.name, parse_values(a.values, a.name), a.unit, goal)


if __name__ == "__main__":
    main()
