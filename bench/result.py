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
        xa, xb = parse_values(va, na), parse_values(vb, nb)
        ma, mb = statistics.median(xa), statistics.median(xb)
        if min(ma, mb) <= 0:
            raise SystemExit(f"bench/result.py: {a.case}: non-positive median ({ma}, {mb})")
        num, den = (na, nb) if a.ratio == "a/b" else (nb, na)
        ratio = ma / mb if a.ratio == "a/b" else mb / ma
        ok, says = verdict(ratio, goal)
        line = (f"{a.case}: {na} {spread(xa, a.unit)}, {nb} {spread(xb, a.unit)}; "
                f"{num}/{den} = {ratio:.3f}; {says}")
        emit({"case": a.case, "kind": "ratio", "figure": f"{num}/{den}", "value": round(ratio, 4),
              "a": {"name": na, "median": ma, "runs": xa}, "b": {"name": nb, "median": mb, "runs": xb},
              "unit": a.unit, "goal": None if goal is None else f"{goal[0]} {goal[1]:g}", "met": ok}, line)
    else:
        xs = parse_values(a.values, a.name)
        m = statistics.median(xs)
        ok, says = verdict(m, goal)
        emit({"case": a.case, "kind": "value", "figure": a.name, "value": m, "runs": xs, "unit": a.unit,
              "goal": None if goal is None else f"{goal[0]} {goal[1]:g}", "met": ok},
             f"{a.case}: {a.name} {spread(xs, a.unit)}; {says}")


if __name__ == "__main__":
    main()
