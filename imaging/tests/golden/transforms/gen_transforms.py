#!/usr/bin/env python
"""Golden fixtures for imaging/tests/transforms_golden.rs: small inputs and what MONAI 1.6.1 / nibabel 5.4 make of them.

Run from the repository root with the reference venv (needs torch + monai; CI does not, so the outputs are committed):
    $MEDMAE_PYTHON imaging/tests/golden/transforms/gen_transforms.py
Writes <case>_*.npy (float32, channel-first) and cases.json (parameters, affines, expected axcodes) next to this file.
Inputs are drawn from a fixed seed; re-running reproduces the same files.
"""
import json
import os
import warnings

import nibabel as nib
import numpy as np
import torch
import monai
from monai.data import MetaTensor
from monai.transforms import (
    ConvertToMultiChannelBasedOnBratsClasses,
    CropForegroundd,
    NormalizeIntensity,
    Orientation,
    ScaleIntensityRange,
    Spacingd,
    SpatialPadd,
)

assert monai.__version__ == "1.6.1", monai.__version__
warnings.filterwarnings("ignore")
OUT = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(20240611)
cases = {}


def save(name, arr):
    np.save(os.path.join(OUT, name + ".npy"), np.ascontiguousarray(np.asarray(arr), dtype=np.float32))


def mt(arr, affine):
    return MetaTensor(torch.from_numpy(np.asarray(arr, dtype=np.float32)), affine=torch.as_tensor(affine, dtype=torch.float64))


def aff(m):
    return np.asarray(m.affine if isinstance(m, MetaTensor) else m, dtype=np.float64).tolist()


def rot(ax, deg):
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    i, j = [(1, 2), (0, 2), (0, 1)][ax]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine_from(lin, origin):
    a = np.eye(4)
    a[:3, :3] = lin
    a[:3, 3] = origin
    return a


def smooth(shape, channels=1, lo=-2.0, hi=2.0):
    """Smooth-ish random field (sum of a few low-frequency cosines plus noise), values in about [lo, hi]."""
    grid = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    out = []
    for _ in range(channels):
        f = np.zeros(shape)
        for _ in range(4):
            k = rng.uniform(0.5, 3.0, size=3)
            ph = rng.uniform(0, 2 * np.pi)
            f += np.cos(2 * np.pi * (k[0] * grid[0] + k[1] * grid[1] + k[2] * grid[2]) + ph)
        f += 0.1 * rng.standard_normal(shape)
        f = (f - f.min()) / (f.max() - f.min())
        out.append(lo + (hi - lo) * f)
    return np.stack(out).astype(np.float32)


def labels(shape, n_classes=4):
    """Blocky integer label map (random boxes of classes 1..n_classes-1 on background 0)."""
    lab = np.zeros(shape, dtype=np.float32)
    for c in range(1, n_classes):
        for _ in range(2):
            lo = [rng.integers(0, max(1, n - 3)) for n in shape]
            hi = [min(n, l + rng.integers(2, max(3, n // 2))) for l, n in zip(lo, shape)]
            lab[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = c
    return lab[None]


# ---------------------------------------------------------------- Orientation (+ nibabel axcodes)
orient_affines = {
    "lps": affine_from(np.diag([-1.5, -0.8, 2.5]), [10.0, 20.0, -5.0]),
    "permuted": affine_from(np.array([[0, 0, -2.0], [1.5, 0, 0], [0, -3.0, 0]]), [1.0, 2.0, 3.0]),
    "oblique": affine_from(rot(2, 35) @ rot(0, 20) @ np.diag([0.9, 1.2, 2.0]), [-7.0, 3.0, 12.0]),
    "oblique_flip": affine_from(rot(1, -50) @ rot(2, 15) @ np.diag([-1.1, 0.7, -1.6]), [4.0, -2.0, 0.5]),
}
orient_in = smooth((5, 6, 7), channels=2)
save("orient_in", orient_in)
cases["orientation"] = []
for name, a in orient_affines.items():
    for target in ["RAS", "LPI", "PIR"]:
        out = Orientation(axcodes=target, labels=None)(mt(orient_in, a))
        tag = f"orient_{name}_{target}"
        save(tag, out.numpy())
        cases["orientation"].append(
            {"case": tag, "affine": a.tolist(), "axcodes": "".join(nib.aff2axcodes(a)), "target": target,
             "out_affine": aff(out), "out_shape": list(out.shape)}
        )

# ---------------------------------------------------------------- Spacing (image trilinear, label nearest)
spacing_cases = {
    # anisotropic input, down-sampled in x/y and up-sampled in z
    "down": (affine_from(np.diag([0.77, 0.9, 2.9]), [3.0, -4.0, 5.0]), [1.5, 1.5, 2.0], (21, 18, 9), 1),
    "up": (affine_from(np.diag([1.3, 1.7, 1.1]), [0.0, 0.0, 0.0]), [0.55, 0.6, 1.3], (9, 8, 10), 2),
    "flipped": (affine_from(np.diag([-0.93, 1.07, -2.2]), [30.0, -4.0, 5.0]), [1.4, 0.8, 1.3], (14, 11, 8), 1),
    "oblique": (affine_from(rot(2, 25) @ np.diag([0.85, 1.15, 1.9]), [-3.0, 8.0, 1.0]), [1.3, 0.95, 1.45], (13, 12, 9), 1),
    "sheared": (affine_from(np.array([[0.9, 0.25, 0.0], [0.0, 1.1, 0.3], [0.1, 0.0, 1.7]]), [1.0, 2.0, 3.0]), [1.2, 1.25, 1.6], (12, 11, 10), 1),
    # exact half-voxel positions for nearest (ratio 1.5): documents tie handling
    "ties": (affine_from(np.diag([1.0, 1.0, 1.0]), [0.0, 0.0, 0.0]), [1.5, 1.5, 1.0], (13, 12, 5), 1),
}
cases["spacing"] = []
for name, (a, pixdim, shape, ch) in spacing_cases.items():
    img, lab = smooth(shape, channels=ch), labels(shape)
    d = Spacingd(keys=["image", "label"], pixdim=pixdim, mode=("bilinear", "nearest"))({"image": mt(img, a), "label": mt(lab, a)})
    tag = f"spacing_{name}"
    save(tag + "_image_in", img)
    save(tag + "_label_in", lab)
    save(tag + "_image", d["image"].numpy())
    save(tag + "_label", d["label"].numpy())
    cases["spacing"].append({"case": tag, "affine": a.tolist(), "pixdim": pixdim, "out_affine": aff(d["image"]),
                             "label_out_affine": aff(d["label"]), "out_shape": list(d["image"].shape)})

# ---------------------------------------------------------------- ScaleIntensityRange
sir_in = smooth((6, 5, 4), channels=2, lo=-300.0, hi=400.0)
save("sir_in", sir_in)
cases["scale_intensity_range"] = []
for clip in [False, True]:
    p = dict(a_min=-175.0, a_max=250.0, b_min=0.0, b_max=1.0, clip=clip)
    out = ScaleIntensityRange(**p)(torch.from_numpy(sir_in))
    tag = f"sir_clip{int(clip)}"
    save(tag, out.numpy())
    cases["scale_intensity_range"].append({"case": tag, **p})

# ---------------------------------------------------------------- NormalizeIntensity
ni_in = smooth((6, 5, 4), channels=3, lo=0.0, hi=50.0)
ni_in[:, :2] = 0.0  # zero background
ni_in[2] = 7.0  # constant channel: std 0
ni_in[2, :, :, 0] = 0.0
save("ni_in", ni_in)
cases["normalize_intensity"] = []
for nonzero in [False, True]:
    for channel_wise in [False, True]:
        out = NormalizeIntensity(nonzero=nonzero, channel_wise=channel_wise)(torch.from_numpy(ni_in.copy()))
        tag = f"ni_nz{int(nonzero)}_cw{int(channel_wise)}"
        save(tag, out.numpy())
        cases["normalize_intensity"].append({"case": tag, "nonzero": nonzero, "channel_wise": channel_wise})

# ---------------------------------------------------------------- CropForeground
cf_shape = (14, 12, 10)
cf_img = np.zeros((2,) + cf_shape, dtype=np.float32)
cf_img[0, 4:9, 3:6, 2:7] = rng.uniform(0.5, 2.0, size=(5, 3, 5))
cf_img[1, 2, 8, 5] = 0.3  # second channel widens the box
cf_img[0, 10, 10, 8] = -1.0  # nonzero but not positive
cf_lab = np.zeros((1,) + cf_shape, dtype=np.float32)
cf_lab[0, 5:7, 4:6, 3:5] = 2.0
cf_aff = affine_from(np.diag([1.2, 0.8, 2.0]), [5.0, -6.0, 7.0])
save("cf_image_in", cf_img)
save("cf_label_in", cf_lab)
cf_params = {
    "default": dict(source="image", select=None, margin=0, k_divisible=1),
    "margin": dict(source="image", select=None, margin=[1, 2, 3], k_divisible=1),
    "kdiv": dict(source="image", select=None, margin=0, k_divisible=[4, 5, 3]),
    "margin_kdiv_pad": dict(source="image", select=None, margin=3, k_divisible=8),
    "nonzero": dict(source="image", select="nonzero", margin=1, k_divisible=1),
    "threshold": dict(source="image", select=0.4, margin=0, k_divisible=2),
    "label": dict(source="label", select=None, margin=[2, 1, 0], k_divisible=[3, 3, 3]),
}
cases["crop_foreground"] = []
for name, p in cf_params.items():
    sel = {None: lambda x: x > 0, "nonzero": lambda x: x != 0}.get(p["select"], None)
    if sel is None:
        t = p["select"]
        sel = lambda x, t=t: x > t
    d = CropForegroundd(keys=["image", "label"], source_key=p["source"], select_fn=sel, margin=p["margin"],
                        k_divisible=p["k_divisible"])({"image": mt(cf_img, cf_aff), "label": mt(cf_lab, cf_aff)})
    tag = f"cf_{name}"
    save(tag + "_image", d["image"].numpy())
    save(tag + "_label", d["label"].numpy())
    as_list = lambda v: v if isinstance(v, list) else [v]
    cases["crop_foreground"].append({"case": tag, "source": p["source"], "select": p["select"], "margin": as_list(p["margin"]),
                                     "k_divisible": as_list(p["k_divisible"]), "affine": cf_aff.tolist(), "out_affine": aff(d["image"])})

# ---------------------------------------------------------------- SpatialPad
sp_in = smooth((4, 5, 7), channels=2)
sp_aff = affine_from(np.diag([1.0, 2.0, 3.0]), [1.0, 1.0, 1.0])
save("sp_in", sp_in)
cases["spatial_pad"] = []
for size in [[9, 8, 5], [4, 10, 10], [5, 5, 7]]:
    d = SpatialPadd(keys=["image"], spatial_size=size)({"image": mt(sp_in, sp_aff)})
    tag = "sp_" + "x".join(map(str, size))
    save(tag, d["image"].numpy())
    cases["spatial_pad"].append({"case": tag, "spatial_size": size, "affine": sp_aff.tolist(), "out_affine": aff(d["image"])})

# ---------------------------------------------------------------- BraTS conversion
br_in = rng.choice([0.0, 1.0, 2.0, 3.0, 4.0], size=(1, 5, 4, 3), p=[0.4, 0.15, 0.15, 0.15, 0.15]).astype(np.float32)
save("brats_in", br_in)
cases["brats"] = []
for et in [4, 3]:
    out = ConvertToMultiChannelBasedOnBratsClasses(et_label=et)(torch.from_numpy(br_in))
    tag = f"brats_et{et}"
    save(tag, out.numpy().astype(np.float32))
    cases["brats"].append({"case": tag, "et_label": et})

with open(os.path.join(OUT, "cases.json"), "w") as f:
    json.dump(cases, f, indent=1)
print("wrote", sum(len(v) for v in cases.values()), "cases to", OUT)
