#!/usr/bin/env python
"""Write N synthetic CT-like int16 NIfTI volumes (default 3 of 256x256x100, LPS-oriented, 0.8 x 0.8 x 2.5 mm) for the
imaging benchmark: an elliptic body (~40 HU) with two organs and bone in air (-1000 HU), plus noise. Deterministic.

Usage: $MEDMAE_PYTHON bench/imaging/make_volumes.py OUT_DIR [N] [X Y Z]
"""
import os
import sys

import nibabel as nib
import numpy as np

out = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
shape = tuple(int(v) for v in sys.argv[3:6]) if len(sys.argv) > 5 else (256, 256, 100)
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
x, y, z = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape], indexing="ij")
for i in range(n):
    vol = np.full(shape, -1000.0, dtype=np.float32)
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1.0
    vol[body] = 40.0
    vol[body & (((x - 0.3) / 0.25) ** 2 + (y / 0.2) ** 2 + (z / 0.5) ** 2 < 1)] = 120.0 + 10 * i
    vol[body & (((x + 0.3) / 0.2) ** 2 + ((y + 0.1) / 0.25) ** 2 + ((z - 0.2) / 0.4) ** 2 < 1)] = 60.0
    vol[body & ((x / 0.08) ** 2 + ((y + 0.45) / 0.08) ** 2 < 1)] = 700.0
    vol += rng.normal(0, 15, size=shape).astype(np.float32)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = [100.0, 120.0, -50.0 + 5 * i]
    img = nib.Nifti1Image(np.round(vol).astype(np.int16), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, os.path.join(out, f"vol{i}.nii.gz"))
print(f"wrote {n} volumes of {shape} to {out}")
