"""Python baseline for bench/serve: the same end-to-end segmentation as medmae-serve, with MONAI transforms and
sliding_window_inference driving onnxruntime, in one process.

Run: $MEDMAE_PYTHON baseline.py MODEL_ONNX VOLUME OUT_MASK [THREADS [REPEATS]]
The window size, overlap, blending and windows per batch come from the model's `medmae.inference` metadata (as in
the server). Times REPEATS runs of the whole pipeline (load, preprocess, sliding window, argmax, invert, save) after
creating and warming up the ONNX session and one untimed run of the whole pipeline (as the servers get one warm-up
request) and prints one line: the seconds of each run, comma-separated.
"""
import json
import sys
import time

import nibabel as nib
import numpy as np
import onnx
import onnxruntime as ort
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, ScaleIntensityRanged

model, volume, out = sys.argv[1:4]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 0
repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 1
meta = {p.key: p.value for p in onnx.load(model, load_external_data=False).metadata_props}
inf = json.loads(meta["medmae.inference"])
roi, overlap, sw_batch, mode = tuple(inf["roi_size"]), inf["overlap"], inf["sw_batch_size"], inf["blend"]
opts = ort.SessionOptions()
if threads:
    opts.intra_op_num_threads = threads
sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
sess.run(["logits"], {"input": np.zeros((sw_batch, 1, *roi), np.float32)})
pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="RAS"),
               ScaleIntensityRanged("image", a_min=-175, a_max=250, b_min=0, b_max=1, clip=True)])


def predict(x):
    return torch.from_numpy(sess.run(["logits"], {"input": x.numpy()})[0])


def segment():
    d = pre({"image": volume})
    with torch.no_grad():
        logits = sliding_window_inference(d["image"][None], roi, sw_batch, predict, overlap=overlap, mode=mode)
    d["pred"] = logits[0].argmax(0, keepdim=True).to(torch.uint8)
    d["pred"].applied_operations = d["image"].applied_operations
    d["pred"].meta = d["image"].meta
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True)(d)
    mask = np.asarray(inv["pred"][0]).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, nib.load(volume).affine), out)


segment()  # one untimed run of the whole pipeline (first-call costs), as the servers get a warm-up request
times = []
for _ in range(max(1, repeats)):
    start = time.perf_counter()
    segment()
    times.append(time.perf_counter() - start)
print(",".join(f"{t:.3f}" for t in times))
