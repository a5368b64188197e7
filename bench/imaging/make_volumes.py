#!/usr/bin/env python
"""Write N synthetic abdominal-CT-like int16 NIfTI volumes for the imaging benchmark (LPS, 0.8 × 0.8 × 2.5 mm;
default 3 of 256×256×100; the clinical-size case uses 512×512×100). Deterministic.

Each axial slice is a body-like phantom, not constant data: air (-1000 HU) around an elliptic trunk whose outline
changes along z, a subcutaneous fat layer (-100), soft tissue (40), lungs (-850) in the upper slices, a liver (60)
and kidneys (30), spine and ribs-like bone (400-1000), a patient table (200) under the body, a smooth low-frequency
texture and Gaussian noise (σ 15). The affine is LPS (negative x and y) with a different origin per volume.

Usage: $MEDMAE_PYTHON bench/imaging/make_volumes.py OUT_DIR [N] [X Y Z]
"""
import os
import sys

import nibabel as nib
import numpy as np


def phantom(shape, i, rng):
    nx, ny, nz = shape
    x, y = np.meshgrid(np.linspace(-1, 1, nx, dtype=np.float32), np.linspace(-1, 1, ny, dtype=np.float32),
                       indexing="ij")
    vol = np.empty(shape, dtype=np.float32)
    tex = (np.sin(7 * x + i) * np.cos(5 * y) * 8).astype(np.float32)
    for k in range(nz):
        z = 2 * k / max(nz - 1, 1) - 1
        a, b = 0.78 + 0.05 * np.cos(2 * z), 0.55 + 0.04 * np.sin(3 * z)  # trunk half-axes vary along z
        body = (x / a) ** 2 + ((y - 0.05) / b) ** 2
        s = np.full((nx, ny), -1000.0, dtype=np.float32)
        s[body < 1.0] = -100.0                                   # fat
        s[body < 0.8] = 40.0 + 5 * z                             # soft tissue
        if z > 0.2:                                              # lungs in the upper part
            for cx in (-0.35, 0.35):
                s[((x - cx) / 0.25) ** 2 + ((y + 0.05) / 0.3) ** 2 < (z - 0.2) * 1.2] = -850.0
        else:
            s[((x + 0.25) / 0.3) ** 2 + ((y + 0.05) / 0.25) ** 2 < 1 - z * z * 0.5] = 60.0 + 3 * i  # liver
            for cx in (-0.35, 0.35):                             # kidneys
                s[((x - cx) / 0.09) ** 2 + ((y - 0.25) / 0.12) ** 2 < 1] = 30.0
        s[(x / 0.09) ** 2 + ((y - 0.38) / 0.09) ** 2 < 1] = 700.0 + 300 * abs(np.sin(9 * z))  # vertebra
        ring = (x / (0.95 * a)) ** 2 + ((y - 0.05) / (0.95 * b)) ** 2
        ribs = (ring > 0.8) & (ring < 0.88) & (np.sin(12 * np.arctan2(y, x)) > 0.6)
        s[ribs] = 400.0
        s[(y > 0.72) & (y < 0.76) & (np.abs(x) < 0.9)] = 200.0  # table
        s += tex * (body < 0.8)
        vol[:, :, k] = s
    vol += rng.normal(0, 15, size=shape).astype(np.float32)
    return np.clip(np.round(vol), -1024, 3071).astype(np.int16)


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    shape = tuple(int(v) for v in sys.argv[3:6]) if len(sys.argv) > 5 else (256, 256, 100)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        affine = np.diag([-0.8, -0.8, 2.5, 1.0])
        affine[:3, 3] = [0.4 * shape[0], 0.4 * shape[1], -50.0 + 5 * i]
        img = nib.Nifti1Image(phantom(shape, i, rng), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        path = os.path.join(out, f"vol{i}.nii.gz")
        nib.save(img, path + ".tmp.nii.gz")
        os.replace(path + ".tmp.nii.gz", path)
    print(f"wrote {n} volumes of {shape} to {out}")


if __name__ == "__main__":
    main()
