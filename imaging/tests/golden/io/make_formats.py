#!/usr/bin/env python3
"""Test-time fixtures of imaging/tests/io_formats.rs, written by the reference libraries themselves.

    $MEDMAE_PYTHON imaging/tests/golden/io/make_formats.py OUT_DIR

Writes into OUT_DIR:
- nifti2_oblique.nii      NIfTI-2 (nibabel Nifti2Image), float32, oblique sform, qform code 1
- nifti2_time.nii.gz      NIfTI-2, int16, 4-D: 3 time points, pixdim[4] = 2.5, units mm + sec
- nifti2_be.nii           NIfTI-2, big-endian float64, 2-D
- nifti1_time_ms.nii.gz   NIfTI-1, float32, 4-D: 4 time points, pixdim[4] = 0.8, units mm + msec
- nifti1_vector.nii       NIfTI-1, float32, 5-D vector image: dim[5] = 3, intent "vector"
- pattern.mhd + slice_NNN.raw   MetaImage with ElementDataFile = slice_%03d.raw 1 4 1 (one 2-D file per slice),
                          written by hand; SimpleITK (MetaIO) is the reference reader
- expected.json           what each file holds (shapes, pixdim, units) for the assertions
"""
import json
import math
import pathlib
import sys

import nibabel as nib
import numpy as np


def rot(axis, angle):
    x, y, z = np.asarray(axis, float) / np.linalg.norm(axis)
    c, s = math.cos(angle), math.sin(angle)
    C = 1 - c
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


def main(out):
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(16)
    facts = {}

    aff = np.eye(4)
    aff[:3, :3] = rot([1, -2, 0.5], 0.6) @ np.diag([0.9, 1.1, 2.5])
    aff[:3, 3] = [-12.25, 30.5, 7.0]
    data = (rng.standard_normal((5, 4, 3)) * 100).astype(np.float32)
    data[0, 0, 0] = -0.0
    img = nib.Nifti2Image(data, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    nib.save(img, out / "nifti2_oblique.nii")
    facts["nifti2_oblique.nii"] = {"dims": [5, 4, 3]}

    t = rng.integers(-500, 500, size=(4, 3, 2, 3)).astype(np.int16)
    img = nib.Nifti2Image(t, np.diag([2.0, 2.0, 3.0, 1.0]))
    img.header.set_zooms((2.0, 2.0, 3.0, 2.5))
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, out / "nifti2_time.nii.gz")
    facts["nifti2_time.nii.gz"] = {"dims": [4, 3, 2, 3], "time_step": 2.5, "time_unit": "sec"}

    be = rng.standard_normal((6, 5)).astype(">f8")
    hdr = nib.Nifti2Header(endianness=">")
    img = nib.Nifti2Image(be, np.diag([0.5, 0.25, 1.0, 1.0]), header=hdr)
    nib.save(img, out / "nifti2_be.nii")
    facts["nifti2_be.nii"] = {"dims": [6, 5]}

    ms = (rng.standard_normal((3, 3, 2, 4)) * 10).astype(np.float32)
    img = nib.Nifti1Image(ms, np.diag([1.0, 1.5, 2.0, 1.0]))
    img.header.set_zooms((1.0, 1.5, 2.0, 0.8))
    img.header.set_xyzt_units("mm", "msec")
    nib.save(img, out / "nifti1_time_ms.nii.gz")
    facts["nifti1_time_ms.nii.gz"] = {"dims": [3, 3, 2, 4], "time_step": 0.8, "time_unit": "msec"}

    vec = rng.standard_normal((3, 2, 2, 1, 3)).astype(np.float32)
    img = nib.Nifti1Image(vec, np.eye(4))
    img.header.set_intent("vector")
    nib.save(img, out / "nifti1_vector.nii")
    facts["nifti1_vector.nii"] = {"dims": [3, 2, 2, 1, 3]}

    # MetaImage pattern form: 4 slices of 3 x 2 uint16, slice k in slice_{k+1:03d}.raw.
    vol = rng.integers(0, 60000, size=(4, 2, 3)).astype("<u2")  # (z, y, x)
    for k in range(4):
        (out / f"slice_{k + 1:03d}.raw").write_bytes(vol[k].tobytes())
    (out / "pattern.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        "TransformMatrix = 0 1 0 -1 0 0 0 0 1\nOffset = 1 2 3\nElementSpacing = 0.5 0.75 2\n"
        "DimSize = 3 2 4\nElementType = MET_USHORT\nElementDataFile = slice_%03d.raw 1 4 1\n")
    facts["pattern.mhd"] = {"dims": [3, 2, 4]}
    (out / "expected.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main(sys.argv[1])
