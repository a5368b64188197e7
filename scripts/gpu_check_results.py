"""Result writer of scripts/gpu-check: renders its JSON figures as the "GPU" section of bench/RESULTS.md.

Usage: python scripts/gpu_check_results.py RESULTS_JSON RESULTS_MD

The section sits between two marker comments; an existing one is replaced, otherwise it is appended, and the rest of
the file is left as it was (bench/run keeps the section when it rewrites the file). The file is replaced atomically
(temporary file in the same folder, fsync, rename). A malformed JSON file is an error naming the field; the Markdown
file is then not touched.
"""
import json
import os
import sys
import tempfile

BEGIN = "<!-- gpu-check: begin (written by scripts/gpu-check; bench/run keeps this section) -->"
END = "<!-- gpu-check: end -->"


class ResultError(Exception):
    pass


def field(obj, key, kind, where):
    if not isinstance(obj, dict) or key not in obj:
        raise ResultError(f"{where}: missing field '{key}'")
    value = obj[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind):
        raise ResultError(f"{where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(r):
    date = field(r, "date", str, "results")
    commit = field(r, "commit", str, "results")
    gpus = field(r, "gpus", list, "results")
    if not gpus:
        raise ResultError("results.gpus: empty (gpu-check runs only with a GPU)")
    names = ", ".join(field(g, "name", str, f"results.gpus[{i}]") for i, g in enumerate(gpus))
    driver = field(gpus[0], "driver", str, "results.gpus[0]")
    profile = field(r, "profile", str, "results")
    rows = field(r, "checks", list, "results")
    lines = [
        BEGIN,
        "## GPU (scripts/gpu-check)",
        "",
        f"Run on {date}, commit {commit}, {profile} build. GPU(s): {len(gpus)} × {names}; driver {driver}; "
        "CUDA 13.0 / cuDNN 9 libraries from the PyPI wheels (scripts/gpu-build). medmae and the reference run in "
        "the same session on the same GPU; serving times are medians of 3 requests, step times means over the timed "
        "steps.",
        "",
        "| check | status | figures | reference |",
        "|---|---|---|---|",
    ]
    failed = 0
    for i, row in enumerate(rows):
        where = f"results.checks[{i}]"
        status = field(row, "status", str, where)
        if status not in ("pass", "fail", "not run"):
            raise ResultError(f"{where}.status: expected pass, fail or not run, got {status!r}")
        failed += status == "fail"
        lines.append(
            f"| {cell(field(row, 'name', str, where))} | {status} | {cell(field(row, 'figures', str, where))} "
            f"| {cell(field(row, 'reference', str, where))} |"
        )
    notes = r.get("notes", [])
    if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
        raise ResultError("results.notes: expected a list of strings")
    lines.append("")
    lines.append(f"{len(rows) - failed} of {len(rows)} checks without failure." if rows else "No checks ran.")
    lines.extend(f"- {n}" for n in notes)
    lines.append(END)
    return "\n".join(lines) + "\n"


def splice(old, section):
    """Replace the marked section of `old` (or append it) and return the new text."""
    start = old.find(BEGIN)
    if start < 0:
        if END in old:
            raise ResultError("the Markdown file has an end marker without a begin marker")
        sep = "" if not old or old.endswith("\n\n") else ("\n" if old.endswith("\n") else "\n\n")
        return old + sep + section
    end = old.find(END, start)
    if end < 0:
        raise ResultError("the Markdown file has a begin marker without an end marker")
    end += len(END)
    if old[end:end + 1] == "\n":
        end += 1
    return old[:start] + section + old[end:]


def write_atomic(path, text):
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gpu-check.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv):
    if len(argv) != 3:
        print("usage: gpu_check_results.py RESULTS_JSON RESULTS_MD", file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    try:
        with open(src, encoding="utf-8") as f:
            results = json.load(f)
        section = render(results)
        old = ""
        if os.path.exists(dst):
            with open(dst, encoding="utf-8") as f:
                old = f.read()
        write_atomic(dst, splice(old, section))
    except (OSError, json.JSONDecodeError, ResultError) as e:
        print(f"gpu-check results: {src}: {e}" if not isinstance(e, OSError) else f"gpu-check results: {e}",
              file=sys.stderr)
        return 1
    print(f"wrote the GPU section of {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
