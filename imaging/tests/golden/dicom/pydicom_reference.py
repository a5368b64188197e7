"""Facts about pydicom's bundled test files, for imaging/tests/dicom_pydicom.rs (run at test time).

    $MEDMAE_PYTHON pydicom_reference.py OUT_DIR NAME...
Copies each named file from pydicom/data/test_files into OUT_DIR and writes OUT_DIR/NAME.npy (modality values,
rows x columns, float64: pixel_array * RescaleSlope + RescaleIntercept) and OUT_DIR/reference.json with each file's
expected RAS affine, computed here with numpy from ImageOrientationPatient / ImagePositionPatient / PixelSpacing.
A NAME written as -NAME is copied only (a file the Rust reader must refuse).
"""

import json
import os
import shutil
import sys

import numpy as np
import pydicom


def main(out, names):
    src = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    facts = {}
    for name in names:
        copy_only = name.startswith("-")
        name = name.lstrip("-")
        shutil.copy(os.path.join(src, name), os.path.join(out, name))
        if copy_only:
            continue  # an input the Rust reader must refuse: no facts needed
        ds = pydicom.dcmread(os.path.join(src, name))
        values = ds.pixel_array.astype(np.float64) * float(getattr(ds, "RescaleSlope", 1)) + float(
            getattr(ds, "RescaleIntercept", 0))
        np.save(os.path.join(out, name + ".npy"), values)
        row = np.array(ds.ImageOrientationPatient[:3], dtype=float)
        col = np.array(ds.ImageOrientationPatient[3:], dtype=float)
        normal = np.cross(row, col)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        step = float(getattr(ds, "SpacingBetweenSlices", 0) or getattr(ds, "SliceThickness", 0) or 1)
        lps = np.eye(4)
        lps[:3, 0], lps[:3, 1], lps[:3, 2] = row * dc, col * dr, normal * step
        lps[:3, 3] = [float(v) for v in ds.ImagePositionPatient]
        ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
        facts[name] = {"affine": ras.tolist(), "shape": [int(ds.Columns), int(ds.Rows)],
                       "series_uid": str(ds.SeriesInstanceUID)}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(facts, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
