#!/usr/bin/env python3
"""Golden fixtures for imaging's sliding window, metrics and slice extraction (tests/data_golden.rs).

Pinned references: MONAI 1.6.1, torch 2.13.0 (CPU), numpy 2.4.6, scipy 1.17.1 (MONAI's surface distances).
Regenerate from the repository root with the reference venv (scripts/setup --with-references) plus scipy:

    pip install --target /tmp/medmae-scipy scipy==1.17.1
    PYTHONPATH=/tmp/medmae-scipy $MEDMAE_PYTHON imaging/tests/golden/data/gen_data.py

The script is deterministic; the Rust tests compare against the files it writes next to itself.
"""

import json
import os
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from monai.metrics import DiceMetric, compute_hausdorff_distance
from monai.networks.utils import one_hot

OUT = os.path.dirname(os.path.abspath(__file__))
warnings.filterwarnings("ignore")


def save(name, arr):
    np.save(os.path.join(OUT, name), np.ascontiguousarray(arr))


def num(x):
    """JSON-safe float: NaN and infinities as strings."""
    x = float(x)
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


# ---------------------------------------------------------------- sliding window
def toy_predictor(weights, bias):
    """Zero-padded 3^n mean filter per channel, then channel mixing out[k] = sum_c W[k, c] y[c] + b[k]."""
    w = torch.tensor(weights, dtype=torch.float32)
    b = torch.tensor(bias, dtype=torch.float32)

    def predict(x):
        c = x.shape[1]
        nd = x.ndim - 2
        kernel = torch.ones((c, 1) + (3,) * nd, dtype=torch.float32) / float(3**nd)
        conv = F.conv3d if nd == 3 else F.conv2d
        y = conv(x, kernel, padding=1, groups=c)
        out = torch.einsum("kc,bc...->bk...", w, y)
        return out + b.reshape((1, -1) + (1,) * nd)

    return predict


def sliding_cases():
    rng = np.random.default_rng(1)
    cases = [
        dict(name="sw3d_const_o25", shape=[2, 10, 9, 7], roi=[4, 4, 4], overlap=0.25, mode="constant", sw=3, k=3),
        dict(name="sw3d_gauss_o50", shape=[2, 10, 9, 7], roi=[4, 5, 3], overlap=0.5, mode="gaussian", sw=2, k=2),
        dict(name="sw3d_roi_gt_image", shape=[1, 5, 6, 4], roi=[8, 4, 7], overlap=0.5, mode="gaussian", sw=4, k=2),
        dict(name="sw2d_gauss_o25", shape=[2, 13, 11], roi=[6, 5], overlap=0.25, mode="gaussian", sw=4, k=3),
        dict(name="sw2d_roi_gt_image", shape=[1, 3, 9], roi=[5, 4], overlap=0.5, mode="constant", sw=1, k=2),
    ]
    meta = []
    for c in cases:
        x = rng.normal(size=c["shape"]).astype(np.float32)
        w = rng.normal(size=(c["k"], c["shape"][0])).round(3)
        b = rng.normal(size=c["k"]).round(3)
        with torch.no_grad():
            y = sliding_window_inference(
                torch.from_numpy(x)[None], c["roi"], c["sw"], toy_predictor(w, b),
                overlap=c["overlap"], mode=c["mode"], sigma_scale=0.125,
            )[0].numpy()
        save(f"{c['name']}_in.npy", x)
        save(f"{c['name']}_out.npy", y.astype(np.float32))
        meta.append(dict(c, weights=w.tolist(), bias=b.tolist()))
    return meta


# ---------------------------------------------------------------- metrics
def blob(shape, centre, radii):
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii))
    return d <= 1.0


def label_maps(shape, seed):
    rng = np.random.default_rng(seed)
    t = np.zeros(shape, np.int64)
    p = np.zeros(shape, np.int64)
    n = len(shape)
    c1 = [s * 0.4 for s in shape]
    t[blob(shape, c1, [s * 0.3 for s in shape])] = 1
    p[blob(shape, [x + 1 for x in c1], [s * 0.28 for s in shape])] = 1
    c2 = [s * 0.7 for s in shape]
    t[blob(shape, c2, [s * 0.15 for s in shape])] = 2
    p[blob(shape, [x - 0.5 for x in c2], [s * 0.2 for s in shape])] = 2
    # Scattered false positives make the 95th percentile differ from the maximum.
    idx = tuple(rng.integers(0, s, size=6) for s in shape)
    p[idx] = 2
    # Class 3 only in the prediction, class 4 only in the target, class 5 in neither.
    p[(0,) * n] = 3
    t[tuple(s - 1 for s in shape)] = 4
    return p, t


def metric_cases():
    out = []
    for name, shape, spacing, seed in [("m3d", (12, 10, 8), (1.5, 1.0, 2.5), 3), ("m2d", (16, 13), (0.7, 1.2), 4)]:
        p, t = label_maps(shape, seed)
        num_classes = 6
        save(f"{name}_pred.npy", p.astype(np.float32))
        save(f"{name}_target.npy", t.astype(np.float32))
        pt = one_hot(torch.from_numpy(p)[None, None], num_classes, dim=1)
        tt = one_hot(torch.from_numpy(t)[None, None], num_classes, dim=1)
        res = dict(name=name, num_classes=num_classes, spacing=list(spacing))
        for inc in [False, True]:
            for ign in [True, False]:
                d = DiceMetric(include_background=inc, reduction="none", ignore_empty=ign)(pt, tt)[0]
                res[f"dice_bg{int(inc)}_ignore{int(ign)}"] = [num(v) for v in d]
        for pct in [95, None]:
            for directed in [False, True]:
                hd = compute_hausdorff_distance(
                    pt, tt, include_background=False, percentile=pct, spacing=list(spacing), directed=directed
                )[0]
                res[f"hd_{pct}_directed{int(directed)}"] = [num(v) for v in hd]
        hd_unit = compute_hausdorff_distance(pt, tt, include_background=True, percentile=95)[0]
        res["hd95_unit_spacing_bg1"] = [num(v) for v in hd_unit]
        out.append(res)
    # Multi-label (sigmoid) channels: 3 channels of probabilities and binary targets.
    rng = np.random.default_rng(5)
    shape = (3, 9, 8, 7)
    target = np.zeros(shape, np.float32)
    target[0][blob(shape[1:], (4, 4, 3), (3, 2.5, 2))] = 1
    target[1][blob(shape[1:], (4, 3, 3), (4, 3.5, 3))] = 1
    prob = np.clip(target * 0.8 + rng.normal(scale=0.3, size=shape), 0, 1).astype(np.float32)
    save("ml_prob.npy", prob)
    save("ml_target.npy", target)
    binar = torch.from_numpy((prob >= 0.5).astype(np.float32))[None]
    tt = torch.from_numpy(target)[None]
    res = dict(name="ml", spacing=[1.0, 1.2, 2.0])
    res["dice"] = [num(v) for v in DiceMetric(include_background=True, reduction="none")(binar, tt)[0]]
    res["hd95"] = [num(v) for v in compute_hausdorff_distance(binar, tt, include_background=True, percentile=95, spacing=res["spacing"])[0]]
    out.append(res)
    return out


# ---------------------------------------------------------------- slices
def slice_cases():
    rng = np.random.default_rng(7)
    vol = rng.normal(loc=100.0, scale=30.0, size=(2, 16, 12, 10)).astype(np.float32)
    vol[0, 3, 4, 5] = 1000.0  # an outlier that the percentile window clips
    vol[1] = np.round(vol[1])  # integer-valued channel (ties at .5 after scaling are likely)
    label = np.zeros((16, 12, 10), np.float32)
    label[5:9, 3:6, 2:4] = 1
    label[10:12, 8:10, 7] = 3
    save("sl_image.npy", vol)
    save("sl_label.npy", label)
    windows = {}
    expected = {}
    for norm in ["minmax", "percentile"]:
        win = []
        for c in range(vol.shape[0]):
            x = vol[c].astype(np.float64)
            if norm == "minmax":
                lo, hi = x.min(), x.max()
            else:
                lo, hi = np.percentile(x, 0.5), np.percentile(x, 99.5)
            win.append((float(lo), float(hi)))
        windows[norm] = win
        for axis in range(3):
            n = vol.shape[1 + axis]
            planes = []
            for i in range(n):
                chans = []
                for c in range(vol.shape[0]):
                    s = np.rot90(np.take(vol[c].astype(np.float64), i, axis=axis))
                    lo, hi = win[c]
                    chans.append(np.clip(np.round((s - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8))
                planes.append(np.stack(chans))
            save(f"sl_{norm}_axis{axis}.npy", np.stack(planes))
            other = tuple(a for a in range(3) if a != axis)
            expected[f"foreground_axis{axis}"] = np.nonzero((label != 0).any(axis=other))[0].tolist()
            lab_planes = np.stack([np.rot90(np.take(label, i, axis=axis)) for i in range(n)]).astype(np.uint8)
            save(f"sl_label_axis{axis}.npy", lab_planes)
    return dict(windows=windows, **expected)


def main():
    torch.manual_seed(0)
    meta = dict(
        versions=dict(monai=__import__("monai").__version__, torch=torch.__version__, numpy=np.__version__),
        sliding=sliding_cases(),
        metrics=metric_cases(),
        slices=slice_cases(),
    )
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
