#!/usr/bin/env python3
"""Load an exported UNETR in ONNX Runtime (CPU) and run one window: proves the benchmark's file is usable.

    $MEDMAE_PYTHON bench/export/ort_load.py MODEL.onnx [--no-run]
"""
import sys
import time

import numpy as np
import onnxruntime as ort


def main(path, *flags):
    t = time.perf_counter()
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    print(f"ort: session created in {time.perf_counter() - t:.2f} s")
    inp = sess.get_inputs()[0]
    shape = [1 if isinstance(d, str) else d for d in inp.shape]
    if "--no-run" in flags:
        return
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = time.perf_counter()
    (y,) = sess.run(None, {inp.name: x})
    print(f"ort: one window {shape} in {time.perf_counter() - t:.2f} s, output {list(y.shape)}, finite {bool(np.isfinite(y).all())}")
    if not np.isfinite(y).all():
        raise SystemExit("ort produced non-finite logits")


if __name__ == "__main__":
    main(*sys.argv[1:])
