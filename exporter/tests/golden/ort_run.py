#!/usr/bin/env python3
"""Validate and run an exported ONNX model with the official tools (called by exporter/tests/*.rs).

    $MEDMAE_PYTHON exporter/tests/golden/ort_run.py MODEL.onnx OUT_DIR NAME=INPUT.npy [NAME=INPUT.npy ...]

Needs only numpy, onnx and onnxruntime (all in CI's venv). Runs onnx.checker.check_model(full_check=True) and
onnx.shape_inference.infer_shapes(strict_mode=True), checks the inferred output shapes against the declared ones,
runs ONNX Runtime (CPU) on the inputs, and writes OUT_DIR/<output>.npy for every graph output plus
OUT_DIR/metadata.json (metadata_props as read by onnx) and OUT_DIR/summary.json (opset, ir_version, op counts).
"""

import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def dims(value_info):
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else None)
            for d in shape.dim]


def main(model_path, out_dir, *feeds):
    onnx.checker.check_model(model_path, full_check=True)
    model = onnx.load(model_path)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    declared = {o.name: dims(o) for o in model.graph.output}
    for o in inferred.graph.output:
        got = dims(o)
        if len(got) != len(declared[o.name]):
            raise SystemExit(f"output {o.name}: inferred rank {len(got)} vs declared {declared[o.name]}")

    inputs = {}
    for feed in feeds:
        name, path = feed.split("=", 1)
        inputs[name] = np.load(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    outputs = sess.run(names, inputs)
    os.makedirs(out_dir, exist_ok=True)
    for name, value in zip(names, outputs):
        np.save(os.path.join(out_dir, f"{name}.npy"), value)
    with open(os.path.join(out_dir, "metadata.json"), "w") as f:
        json.dump({p.key: p.value for p in model.metadata_props}, f)
    summary = {
        "ir_version": model.ir_version,
        "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")],
        "ops": collections.Counter(n.op_type for n in model.graph.node),
        "inputs": [i.name for i in model.graph.input],
        "outputs": names,
    }
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(*sys.argv[1:])
