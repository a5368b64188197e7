"""Write a real NIfTI volume as an oblique DICOM series and read it back with SimpleITK's ImageSeriesReader.

Run by imaging/tests/dicom_series.rs at test time (needs only SimpleITK and numpy from the CI venv):
    $MEDMAE_PYTHON make_series.py IN.nii.gz OUT_DIR
OUT_DIR/series/ gets one file per slice with shuffled random names (plus OUT_DIR/series.zip of the same files);
OUT_DIR/reference.npy holds the ImageSeriesReader voxels as (z, y, x) float32 and OUT_DIR/reference.json its
spacing, origin and direction (ITK/LPS convention) and the file order SimpleITK chose.
"""

import json
import math
import os
import random
import sys
import zipfile

import numpy as np
import SimpleITK as sitk


def oblique_direction():
    """A rotation of 20 degrees about (1, 0, 1)/sqrt(2) then 10 degrees about z: no axis is aligned."""
    def rot(axis, deg):
        x, y, z = axis / np.linalg.norm(axis)
        c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
        C = 1 - c
        return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                         [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                         [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])
    return rot(np.array([0.0, 0.0, 1.0]), 10) @ rot(np.array([1.0, 0.0, 1.0]), 20)


def main(src, out):
    img = sitk.Cast(sitk.ReadImage(src), sitk.sitkInt16)
    # Stored values v; with RescaleIntercept -1024 and slope 1 the modality values are v - 1024.
    img.SetDirection(tuple(oblique_direction().flatten()))
    img.SetOrigin((-61.25, 37.5, 12.0))
    img.SetSpacing((0.9, 1.1, 2.5))
    series = os.path.join(out, "series")
    os.makedirs(series, exist_ok=True)
    d = img.GetDirection()
    uid = "1.2.826.0.1.3680043.8.498.1"
    common = [
        ("0008|0008", "ORIGINAL\\PRIMARY\\AXIAL"),
        ("0008|0060", "CT"),
        ("0008|103e", "medmae oblique test"),
        ("0010|0010", "Doe^Jane"),
        ("0010|0020", "PAT-SECRET-42"),
        ("0010|0030", "19700101"),
        ("0008|0050", "ACC-SECRET-7"),
        ("0020|0010", "STUDY-1"),
        ("0020|000d", uid + ".1"),
        ("0020|000e", uid + ".2"),
        ("0020|0052", uid + ".3"),
        ("0020|0011", "7"),
        ("0020|0037", "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
        ("0028|1052", "-1024"),
        ("0028|1053", "1"),
    ]
    rng = random.Random(1234)
    names = [f"{rng.getrandbits(48):012x}.dcm" for _ in range(img.GetSize()[2])]
    order = list(range(img.GetSize()[2]))
    rng.shuffle(order)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for name_idx, k in enumerate(order):
        sl = img[:, :, k]
        for tag, value in common:
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0008|0018", f"{uid}.4.{k + 1}")
        # InstanceNumber deliberately disagrees with the spatial order.
        sl.SetMetaData("0020|0013", str(name_idx + 1))
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in pos))
        writer.SetFileName(os.path.join(series, names[name_idx]))
        writer.Execute(sl)
    with zipfile.ZipFile(os.path.join(out, "series.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        for n in sorted(names):
            z.write(os.path.join(series, n), f"case/{n}")

    reader = sitk.ImageSeriesReader()
    files = reader.GetGDCMSeriesFileNames(series)
    reader.SetFileNames(files)
    ref = reader.Execute()
    np.save(os.path.join(out, "reference.npy"), sitk.GetArrayFromImage(ref).astype(np.float32))
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump({
            "spacing": ref.GetSpacing(),
            "origin": ref.GetOrigin(),
            "direction": ref.GetDirection(),
            "files": [os.path.basename(p) for p in files],
        }, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
