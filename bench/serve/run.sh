#!/usr/bin/env bash
# End-to-end segmentation benchmark of medmae-serve (ORT and tract backends) against Python MONAI
# sliding_window_inference + onnxruntime doing the same work in one process.
# Needs scripts/setup --with-references (torch + monai, for the model export and the baseline) and a release build:
#   cargo build --release -p medmae-inference-server
# Usage: bench/serve/run.sh [WORK_DIR] [THREADS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${1:-/tmp/medmae-bench-serve}"
THREADS="${2:-2}"
: "${MEDMAE_PYTHON:?MEDMAE_PYTHON is not set (source ~/.cache/medmae/env.sh)}"
: "${ORT_DYLIB_PATH:?ORT_DYLIB_PATH is not set (source ~/.cache/medmae/env.sh)}"
BIN="${MEDMAE_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/release}"
mkdir -p "$WORK"
[ -f "$WORK/repo/unetr/model.onnx" ] || "$MEDMAE_PYTHON" "$ROOT/bench/serve/make_inputs.py" "$WORK"

if [ "${SKIP_PYTHON:-0}" != 1 ]; then
  py=$("$MEDMAE_PYTHON" "$ROOT/bench/serve/baseline.py" "$WORK/repo/unetr/model.onnx" "$WORK/volume.nii.gz" "$WORK/mask_python.nii.gz" "$THREADS" | tail -n1)
  echo "python (MONAI sliding_window_inference + onnxruntime): ${py} s"
fi

for backend in ort tract; do
  rm -f "$WORK/serve_$backend.out"
  "$BIN/medmae-serve" --model-repository "$WORK/repo" --listen 127.0.0.1:0 --metrics-listen off --backend "$backend" --request-timeout 7200 --drain-grace 0 \
    --threads "$THREADS" > "$WORK/serve_$backend.out" 2> "$WORK/serve_$backend.log" &
  pid=$!
  for _ in $(seq 600); do grep -q listening "$WORK/serve_$backend.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/.*grpc=\([^ ]*\).*/\1/p' "$WORK/serve_$backend.out")
  # One warm-up request (first-call allocations in the engines), then the timed run.
  "$BIN/medmae-client" --server "http://$addr" segment "$WORK/volume.nii.gz" -o "$WORK/mask_$backend.nii.gz" --quiet > /dev/null
  start=$(date +%s.%N)
  "$BIN/medmae-client" --server "http://$addr" segment "$WORK/volume.nii.gz" -o "$WORK/mask_$backend.nii.gz" --quiet --json > "$WORK/summary_$backend.json"
  end=$(date +%s.%N)
  kill -TERM "$pid"; wait "$pid" || true
  echo "medmae-serve $backend (client upload + server + download): $(echo "$end - $start" | bc) s"
done
"$MEDMAE_PYTHON" - "$WORK" <<'PY'
import sys, nibabel as nib, numpy as np
w = sys.argv[1]
p = np.asarray(nib.load(f"{w}/mask_python.nii.gz").dataobj)
for b in ("ort", "tract"):
    m = np.asarray(nib.load(f"{w}/mask_{b}.nii.gz").dataobj)
    print(f"mask agreement python vs {b}: {(m == p).mean():.6f}")
PY
