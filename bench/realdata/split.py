"""Split ITK's KmeansTest MRI and its 7-label segmentation into two slabs along the third voxel axis and write an
MSD-style dataset.json (training = first slab, validation = second slab). nibabel's slicer keeps each slab's real
header geometry (LSA orientation, 2×2×3 mm spacing, origin shifted to the slab).

    python bench/realdata/split.py OUT_DIR [ITK_DATA_DIR]
"""
import json
import pathlib
import sys

import nibabel as nib

out = pathlib.Path(sys.argv[1])
src = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "/usr/share/doc/insighttoolkit5-examples/examples/Data")
img = nib.load(src / "KmeansTest_T1UCharRaw.nii.gz")
seg = nib.load(src / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz")
assert img.shape == seg.shape, (img.shape, seg.shape)
half = img.shape[2] // 2
cases = {}
for name, sl in (("slab0", slice(0, half)), ("slab1", slice(half, None))):
    for kind, vol in (("images", img), ("labels", seg)):
        d = out / kind
        d.mkdir(parents=True, exist_ok=True)
        nib.save(vol.slicer[:, :, sl], d / f"{name}.nii.gz")
    cases[name] = {"image": f"./images/{name}.nii.gz", "label": f"./labels/{name}.nii.gz"}
meta = {
    "name": "KmeansTest",
    "description": "ITK example T1 MRI with a 7-label k-means tissue segmentation, split into two slabs",
    "modality": {"0": "MRI"},
    "labels": {str(i): f"label{i}" for i in range(7)},
    "training": [cases["slab0"]],
    "validation": [cases["slab1"]],
    "test": [],
}
(out / "dataset.json").write_text(json.dumps(meta, indent=2))
print(f"wrote {out}/dataset.json: slabs of {img.shape[:2]} x {half} / {img.shape[2] - half} voxels")
