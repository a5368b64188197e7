"""Benchmark inputs for medmae-serve: a tiny MONAI UNETR exported to ONNX with medmae metadata, and a 128^3 volume.

Run: $MEDMAE_PYTHON make_inputs.py OUT_DIR   (needs torch + monai: scripts/setup --with-references)
Writes OUT_DIR/repo/unetr/model.onnx and OUT_DIR/volume.nii.gz.
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
import onnx
import torch
from monai.networks.nets import UNETR

out = sys.argv[1]
ROI = [64, 64, 64]
torch.manual_seed(0)
net = UNETR(in_channels=1, out_channels=3, img_size=ROI, feature_size=8, hidden_size=192, mlp_dim=768, num_heads=4).eval()
path = f"{out}/repo/unetr/model.onnx"
os.makedirs(os.path.dirname(path), exist_ok=True)
x = torch.zeros(1, 1, *ROI)
torch.onnx.export(net, x, path, input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False)
m = onnx.load(path)
pre = [{"name": "Orientation", "axcodes": "RAS"}, {"name": "ScaleIntensityRange", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True}]
meta = {
    "medmae.kind": "unetr", "medmae.spatial_dims": "3", "medmae.roi_size": json.dumps(ROI), "medmae.in_channels": "1",
    "medmae.out_channels": "3", "medmae.labels": json.dumps(["background", "organ", "tumour"]),
    "medmae.preprocessing": json.dumps(pre),
    "medmae.inference": json.dumps({"roi_size": ROI, "overlap": 0.25, "blend": "gaussian", "sw_batch_size": 2, "activation": "softmax"}),
    "medmae.version": "0.1.0",
}
for k, v in meta.items():
    e = m.metadata_props.add()
    e.key, e.value = k, v
onnx.save(m, path)

rng = np.random.default_rng(0)
shape = (128, 128, 128)
ii, jj, kk = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
r = ((ii - 60) / 35.0) ** 2 + ((jj - 66) / 28.0) ** 2 + ((kk - 64) / 40.0) ** 2
img = np.where(r < 1, 60.0, -300.0) + rng.normal(0, 20, size=shape)
aff = np.diag([-0.8, -0.8, 1.5, 1.0])
nib.save(nib.Nifti1Image(img.astype(np.float32), aff), f"{out}/volume.nii.gz")
print("ok")
