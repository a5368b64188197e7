#!/usr/bin/env bash
# End-to-end segmentation benchmark of medmae-serve (ORT and tract backends) against Python MONAI
# sliding_window_inference + onnxruntime doing the same work in one process (cases: make_inputs.py).
# Needs scripts/setup --with-references (torch + monai, for the model export and the baseline) and a release build:
#   cargo build --release -p medmae-inference-server -p medmae-client
# Usage: bench/serve/run.sh [WORK_DIR [THREADS [CASE [REPEATS]]]]      CASE: tiny (default) | vit-b
# Each side is timed REPEATS times (default 3) after one warm-up, the sides in turn; the medians, ratios and goal
# verdicts (ORT ≤ 0.7× Python for tiny, ≤ 0.6× for vit-b; tract ≤ 1.3× ORT) are printed by bench/result.py.
# SKIP_TRACT=1 skips tract.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-/tmp/medmae-bench-serve}"
THREADS="${2:-2}"
CASE="${3:-tiny}"
REPEATS="${4:-3}"
: "${MEDMAE_PYTHON:?MEDMAE_PYTHON is not set (source ~/.cache/medmae/env.sh)}"
: "${ORT_DYLIB_PATH:?ORT_DYLIB_PATH is not set (source ~/.cache/medmae/env.sh)}"
case "$CASE" in
  tiny) GOAL_ORT="<=0.7" ;;
  vit-b) GOAL_ORT="<=0.6" ;;
  *) echo "bench/serve: unknown case $CASE (tiny | vit-b)" >&2; exit 2 ;;
esac
BIN="${MEDMAE_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
WORK="$WORK/$CASE"
echo "binaries: $BIN"
mkdir -p "$WORK"
[ -f "$WORK/repo/unetr/model.onnx" ] || "$MEDMAE_PYTHON" "$ROOT/bench/serve/make_inputs.py" "$WORK" "$CASE"

# Both servers run side by side (an idle server costs nothing) and the three sides are timed in turn, repeat by
# repeat, so that a slow spell of a shared machine hits every side alike instead of one of them.
backends=(ort); [ "${SKIP_TRACT:-0}" = 1 ] || backends+=(tract)
declare -A times addr pids
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for backend in "${backends[@]}"; do
  rm -f "$WORK/serve_$backend.out"
  "$BIN/medmae-serve" --model-repository "$WORK/repo" --listen 127.0.0.1:0 --metrics-listen off --backend "$backend" --request-timeout 7200 --drain-grace 0 \
    --threads "$THREADS" > "$WORK/serve_$backend.out" 2> "$WORK/serve_$backend.log" &
  pids[$backend]=$!
  for _ in $(seq 600); do grep -q listening "$WORK/serve_$backend.out" 2>/dev/null && break; sleep 0.1; done
  addr[$backend]=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$WORK/serve_$backend.out")
  [ -n "${addr[$backend]}" ] || { echo "bench/serve: medmae-serve ($backend) did not start:" >&2; cat "$WORK/serve_$backend.log" >&2; exit 1; }
  # One warm-up request (first-call allocations in the engines) before the timed runs.
  "$BIN/medmae-client" --server "http://${addr[$backend]}" segment "$WORK/volume.nii.gz" -o "$WORK/mask_$backend.nii.gz" --quiet > /dev/null
done
py=()
for _ in $(seq "$REPEATS"); do
  # The Python side creates and warms up its session before its clock starts, as the servers did.
  py+=("$("$MEDMAE_PYTHON" "$ROOT/bench/serve/baseline.py" "$WORK/repo/unetr/model.onnx" "$WORK/volume.nii.gz" \
    "$WORK/mask_python.nii.gz" "$THREADS" 1 | tail -n1)")
  for backend in "${backends[@]}"; do
    start=$(date +%s.%N)
    "$BIN/medmae-client" --server "http://${addr[$backend]}" segment "$WORK/volume.nii.gz" -o "$WORK/mask_$backend.nii.gz" --quiet --json > "$WORK/summary_$backend.json"
    end=$(date +%s.%N)
    times[$backend]="${times[$backend]:+${times[$backend]},}$(echo "$end - $start" | bc)"
  done
done
cleanup; trap - EXIT
py="$(IFS=,; echo "${py[*]}")"
echo "python (MONAI sliding_window_inference + onnxruntime), s per run: $py"
for backend in "${backends[@]}"; do
  echo "medmae-serve $backend (client upload + server + download), s per run: ${times[$backend]}"
done
"$MEDMAE_PYTHON" - "$WORK" "${backends[@]}" <<'PY'
import sys, nibabel as nib, numpy as np
w = sys.argv[1]
p = np.asarray(nib.load(f"{w}/mask_python.nii.gz").dataobj)
for b in sys.argv[2:]:
    m = np.asarray(nib.load(f"{w}/mask_{b}.nii.gz").dataobj)
    print(f"mask agreement python vs {b}: {(m == p).mean():.6f}")
PY
R="$ROOT/bench/result.py"
"$MEDMAE_PYTHON" "$R" compare --case "serve $CASE: medmae-serve ORT vs Python" --unit s --ratio a/b --goal "$GOAL_ORT" \
  --a "medmae-serve(ort)" "${times[ort]}" --b "python(MONAI+ORT)" "$py"
if [ -n "${times[tract]:-}" ]; then
  "$MEDMAE_PYTHON" "$R" compare --case "serve $CASE: tract vs ORT" --unit s --ratio a/b --goal "<=1.3" \
    --a "medmae-serve(tract)" "${times[tract]}" --b "medmae-serve(ort)" "${times[ort]}"
fi
