"""Benchmark inputs for medmae-serve: a MONAI UNETR exported to ONNX with medmae metadata, and a CT-like volume.

Run: $MEDMAE_PYTHON make_inputs.py OUT_DIR [CASE]   (needs torch + monai: scripts/setup --with-references)
Cases (the sliding-window settings go into the model's `medmae.inference` metadata, which both the server and
baseline.py read):
  tiny  UNETR roi 64³, hidden 192, 4 heads, feature 8, 3 classes; 128³ volume; overlap 0.25, sw_batch 2 (27 windows)
  vit-b UNETR roi 96³, hidden 768, 12 heads, feature 16, 14 classes; 160×160×128 volume; overlap 0.5, sw_batch 4
Both use gaussian blending and softmax. Writes OUT_DIR/repo/unetr/model.onnx and OUT_DIR/volume.nii.gz.
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
import onnx
import torch
from monai.networks.nets import UNETR

CASES = {
    "tiny": dict(roi=64, hidden=192, heads=4, feature=8, classes=3, shape=(128, 128, 128), overlap=0.25, sw_batch=2),
    "vit-b": dict(roi=96, hidden=768, heads=12, feature=16, classes=14, shape=(160, 160, 128), overlap=0.5, sw_batch=4),
}

out = sys.argv[1]
case = sys.argv[2] if len(sys.argv) > 2 else "tiny"
if case not in CASES:
    sys.exit(f"make_inputs.py: unknown case {case!r} (known: {', '.join(CASES)})")
c = CASES[case]
ROI = [c["roi"]] * 3
torch.manual_seed(0)
net = UNETR(in_channels=1, out_channels=c["classes"], img_size=ROI, feature_size=c["feature"],
            hidden_size=c["hidden"], mlp_dim=4 * c["hidden"], num_heads=c["heads"]).eval()
path = f"{out}/repo/unetr/model.onnx"
os.makedirs(os.path.dirname(path), exist_ok=True)
x = torch.zeros(1, 1, *ROI)
torch.onnx.export(net, x, path, input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
m = onnx.load(path)
pre = [{"name": "Orientation", "axcodes": "RAS"},
       {"name": "ScaleIntensityRange", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True}]
labels = ["background"] + [f"organ{i}" for i in range(1, c["classes"])]
meta = {
    "medmae.kind": "unetr", "medmae.spatial_dims": "3", "medmae.roi_size": json.dumps(ROI), "medmae.in_channels": "1",
    "medmae.out_channels": str(c["classes"]), "medmae.labels": json.dumps(labels),
    "medmae.preprocessing": json.dumps(pre),
    "medmae.inference": json.dumps({"roi_size": ROI, "overlap": c["overlap"], "blend": "gaussian",
                                    "sw_batch_size": c["sw_batch"], "activation": "softmax"}),
    "medmae.version": "0.1.0",
}
for k, v in meta.items():
    e = m.metadata_props.add()
    e.key, e.value = k, v
# One file for both cases: ViT-B (~370 MB of weights) stays below protobuf's 2 GB limit.
onnx.save(m, path)

rng = np.random.default_rng(0)
shape = c["shape"]
ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
centre = [s / 2 for s in shape]
r = ((ii - centre[0] + 4) / (0.27 * shape[0])) ** 2 + ((jj - centre[1] - 2) / (0.22 * shape[1])) ** 2 \
    + ((kk - centre[2]) / (0.31 * shape[2])) ** 2
img = np.where(r < 1, 60.0, -300.0) + rng.normal(0, 20, size=shape)
aff = np.diag([-0.8, -0.8, 1.5, 1.0])
nib.save(nib.Nifti1Image(img.astype(np.float32), aff), f"{out}/volume.nii.gz")
print(f"ok: {case}, windows of {ROI}, volume {shape}")
