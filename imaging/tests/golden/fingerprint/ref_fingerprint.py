"""numpy/nibabel reference of imaging::fingerprint: reads pairs of (image, label) NIfTI files given as
`max_per_case img1 lab1 img2 lab2 ...` and prints one JSON object: per case the shape, zooms, axcodes, label values
and counts; pooled over cases the foreground (label > 0) and all-voxel statistics, each case contributing
x[mask][::k] (k = ceil(n / max_per_case)) in C order."""
import json
import math
import sys

import nibabel as nib
import numpy as np


def sample(x, cap):
    if x.size <= cap:
        return x
    return x[:: math.ceil(x.size / cap)]


def stats(values):
    v = np.concatenate(values).astype(np.float32)
    p = np.percentile(v, [0.5, 50, 99.5])
    return {"count": int(v.size), "p00_5": float(p[0]), "p50": float(p[1]), "p99_5": float(p[2]),
            "mean": float(np.mean(v.astype(np.float64))), "std": float(np.std(v.astype(np.float64))),
            "min": float(v.min()), "max": float(v.max())}


def main():
    cap = int(sys.argv[1])
    files = sys.argv[2:]
    cases, fg, allv = [], [], []
    for img_path, lab_path in zip(files[0::2], files[1::2]):
        img = nib.load(img_path)
        x = np.asarray(img.get_fdata(dtype=np.float32))
        lab = np.asarray(nib.load(lab_path).get_fdata(dtype=np.float32))
        ras = nib.as_closest_canonical(img)
        values, counts = np.unique(lab, return_counts=True)
        cases.append({"shape": list(x.shape), "zooms": [float(z) for z in img.header.get_zooms()[:3]],
                      "axcodes": "".join(nib.aff2axcodes(img.affine)),
                      "ras_shape": list(ras.shape), "ras_zooms": [float(z) for z in ras.header.get_zooms()[:3]],
                      "labels": {str(int(v)): int(c) for v, c in zip(values, counts)}})
        fg.append(sample(x.ravel()[lab.ravel() > 0], cap))
        allv.append(sample(x.ravel(), cap))
    print(json.dumps({"cases": cases, "foreground": stats(fg), "all": stats(allv)}))


main()
