"""Builds the integration-test fixtures of medmae-serve with onnx.helper (no torch needed).

Run: $MEDMAE_PYTHON make_fixtures.py OUT_DIR
Writes OUT_DIR/repo/demo/1/model.onnx (Conv3d 1->3, roi 16^3, medmae metadata with preprocessing),
OUT_DIR/slow_repo/slow/model.onnx (a deep conv stack taking ~1 s per call, for drain/queue tests),
OUT_DIR/volume.nii.gz (an oblique/flipped test volume) and OUT_DIR/corrupt.nii.gz.
"""
import gzip
import json
import os
import sys

import nibabel as nib
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

out = sys.argv[1]
rng = np.random.default_rng(1234)
ROI = [16, 16, 16]


def card(labels, preprocessing, inference, kind="unetr"):
    return {
        "medmae.kind": kind,
        "medmae.spatial_dims": "3",
        "medmae.roi_size": json.dumps(ROI),
        "medmae.in_channels": "1",
        "medmae.out_channels": str(len(labels)),
        "medmae.labels": json.dumps(labels),
        "medmae.preprocessing": json.dumps(preprocessing),
        "medmae.inference": json.dumps(inference),
        "medmae.version": "0.1.0",
    }


def save(nodes, inits, k, meta, path, name):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1] + ROI)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", k] + ROI)
    g = helper.make_graph(nodes, name, [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    for key, v in meta.items():
        e = m.metadata_props.add()
        e.key, e.value = key, v
    onnx.checker.check_model(m, full_check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    onnx.save(m, path)


# demo: logits = Conv3d(x, W) + b with a fixed 3x3x3 kernel per class; class 2 favours bright voxels, class 1 edges.
w = rng.normal(0, 0.3, size=(3, 1, 3, 3, 3)).astype(np.float32)
w[2] += 0.15
b = np.array([0.6, -0.2, -1.2], dtype=np.float32)
nodes = [helper.make_node("Conv", ["input", "w", "b"], ["logits"], pads=[1] * 6, kernel_shape=[3, 3, 3])]
pre = [
    {"name": "Orientation", "axcodes": "RAS"},
    {"name": "Spacing", "pixdim": [1.5, 1.5, 1.5]},
    {"name": "ScaleIntensityRange", "a_min": 0.0, "a_max": 100.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
]
inf = {"roi_size": ROI, "overlap": 0.25, "blend": "gaussian", "sw_batch_size": 4, "activation": "softmax"}
save(nodes, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")], 3,
     card(["background", "rim", "core"], pre, inf), f"{out}/repo/demo/1/model.onnx", "demo")

# slow: 1 -> 32 channels, then 16 Conv3d 32->32 layers, then -> 2 classes.
C, L = 32, 16
inits, nodes, prev = [], [], "input"
for i in range(L + 2):
    cin = 1 if i == 0 else C
    cout = 2 if i == L + 1 else C
    wi = rng.normal(0, 1.0 / np.sqrt(cin * 27), size=(cout, cin, 3, 3, 3)).astype(np.float32)
    inits.append(numpy_helper.from_array(wi, f"w{i}"))
    o = "logits" if i == L + 1 else f"h{i}"
    nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [o if i == L + 1 else f"c{i}"], pads=[1] * 6, kernel_shape=[3, 3, 3]))
    if i <= L:
        nodes.append(helper.make_node("Relu", [f"c{i}"], [o]))
    prev = o
save(nodes, inits, 2, card(["background", "object"], [], inf), f"{out}/slow_repo/slow/model.onnx", "slow")

# A 30x26x22 volume with a flipped, rotated, anisotropic affine (not RAS) and a bright ellipsoid.
shape = (30, 26, 22)
ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
r = ((ii - 14) / 9.0) ** 2 + ((jj - 12) / 7.0) ** 2 + ((kk - 10) / 6.0) ** 2
img = np.where(r < 1.0, 80.0, 10.0) + np.where(r < 0.3, 15.0, 0.0) + rng.normal(0, 4.0, size=shape)
aff = np.array([[-1.2, 0.0, 0.0, 40.0], [0.0, 0.0, 1.8, -20.0], [0.0, -1.0, 0.0, 15.0], [0, 0, 0, 1]])
nib.save(nib.Nifti1Image(img.astype(np.float32), aff), f"{out}/volume.nii.gz")

# A gzip stream cut in the middle of the voxel data.
raw = open(f"{out}/volume.nii.gz", "rb").read()
with open(f"{out}/corrupt.nii.gz", "wb") as f:
    f.write(raw[: len(raw) // 2])
# A plain NIfTI whose header claims far more voxels than the file holds.
hdr = bytearray(gzip.decompress(raw)[:352])
with open(f"{out}/truncated.nii", "wb") as f:
    f.write(bytes(hdr) + b"\0" * 100)
print("ok")
