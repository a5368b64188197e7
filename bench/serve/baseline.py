"""Python baseline for bench/serve: the same end-to-end segmentation as medmae-serve, with MONAI transforms and
sliding_window_inference driving onnxruntime, in one process.

Run: $MEDMAE_PYTHON baseline.py MODEL_ONNX VOLUME OUT_MASK [THREADS]  (prints the wall time in seconds: load,
preprocess, sliding window, argmax, invert, save; the ONNX session is created and warmed up before timing)
"""
import sys
import time

import nibabel as nib
import numpy as np
import onnxruntime as ort
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, ScaleIntensityRanged

model, volume, out = sys.argv[1:4]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 0
opts = ort.SessionOptions()
if threads:
    opts.intra_op_num_threads = threads
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
# Like the server, the session is created and warmed up before the clock starts.
sess.run(["logits"], {"input": np.zeros((2, 1, 64, 64, 64), np.float32)})
start = time.time()
pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
               ScaleIntensityRanged("image", a_min=-175, a_max=250, b_min=0, b_max=1, clip=True)])
d = pre({"image": volume})


def predict(x):
    return torch.from_numpy(sess.run(["logits"], {"input": x.numpy()})[0])


with torch.no_grad():
    logits = sliding_window_inference(d["image"][None], (64, 64, 64), 2, predict, overlap=0.25, mode="gaussian")
d["pred"] = logits[0].argmax(0, keepdim=True).to(torch.uint8)
d["pred"].applied_operations = d["image"].applied_operations
d["pred"].meta = d["image"].meta
inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
mask = np.asarray(inv["pred"][0]).astype(np.uint8)
nib.save(nib.Nifti1Image(mask, nib.load(volume).affine), out)
print(f"{time.time() - start:.3f}")
