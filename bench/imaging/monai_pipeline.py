#!/usr/bin/env python
"""MONAI reference of bench/imaging/pipeline.rs: LoadImage + Orientation RAS + Spacing (1.5, 1.5, 2) +
ScaleIntensityRange (-175..250 -> 0..1, clip) + CropForeground, timed per volume (each of N passes).

Usage: $MEDMAE_PYTHON bench/imaging/monai_pipeline.py [--passes N] FILE...   (needs torch + monai)
"""
import argparse
import json
import time
import warnings

import torch
from monai.transforms import Compose, CropForeground, LoadImage, Orientation, ScaleIntensityRange, Spacing

warnings.filterwarnings("ignore")
ap = argparse.ArgumentParser()
ap.add_argument("--passes", type=int, default=3)
ap.add_argument("files", nargs="+")
args = ap.parse_args()

load = LoadImage(image_only=True, ensure_channel_first=True)
pipe = Compose([
    Orientation(axcodes="RAS"),
    Spacing(pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
    ScaleIntensityRange(a_min=-175, a_max=250, b_min=0.0, b_max=1.0, clip=True),
    CropForeground(),
])
per_volume = []
for p in range(max(1, args.passes)):
    t_pass = time.perf_counter()
    for f in args.files:
        t = time.perf_counter()
        out = pipe(load(f))
        secs = time.perf_counter() - t
        if p == max(1, args.passes) - 1:
            print(json.dumps({"file": f, "seconds": round(secs, 4), "shape": list(out.shape)}))
    per_volume.append(round((time.perf_counter() - t_pass) / len(args.files), 4))
print(json.dumps({"impl": "monai", "volumes": len(args.files), "pass_per_volume_seconds": per_volume,
                  "threads": torch.get_num_threads()}))
