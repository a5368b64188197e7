#!/usr/bin/env python3
"""Reference reader used by imaging/tests/io_*.rs at test time (numpy, nibabel, SimpleITK; no torch/monai).

    $MEDMAE_PYTHON imaging/tests/golden/io/ref_read.py OUT_DIR FILE...

For the i-th FILE it writes OUT_DIR/<i>.sitk.npy: the channel-first (C, X, Y, Z) float32 array as SimpleITK reads it,
and OUT_DIR/<i>.json with "sitk_affine" (SimpleITK geometry converted from LPS to RAS) and "sitk_dimension". For NIfTI files it also
writes OUT_DIR/<i>.nib.npy (nibabel's get_fdata) and adds "nib_affine" (get_best_affine), "nib_qform", "nib_sform",
"sform_code", "qform_code", "pixdim", "xyzt_units", "datatype", "sizeof_hdr" (348 or 540), "intent" and the
"endianness" from the header nibabel parsed.
A file SimpleITK cannot read gets "sitk_error" instead of the SimpleITK outputs.
"""
import json
import pathlib
import sys

import nibabel as nib
import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gen_io import nib_expected, sitk_expected  # noqa: E402  (same conventions as the golden fixtures)


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(sys.argv[2:]):
        info = {"file": name}
        try:
            arr, aff = sitk_expected(name)
            np.save(out / f"{i}.sitk.npy", np.ascontiguousarray(arr, dtype=np.float32))
            info["sitk_affine"] = aff.tolist()
            info["sitk_dimension"] = sitk.ReadImage(name).GetDimension()
        except RuntimeError as e:
            info["sitk_error"] = str(e)
        if name.endswith((".nii", ".nii.gz")):
            arr, aff = nib_expected(name)
            np.save(out / f"{i}.nib.npy", np.ascontiguousarray(arr, dtype=np.float32))
            img = nib.load(name)
            # The header as stored on disk (nibabel's image header drops scaling/offset after load).
            hdr = img.header
            info.update({
                "nib_affine": aff.tolist(),
                "nib_qform": hdr.get_qform().tolist(),
                "nib_sform": hdr.get_sform().tolist(),
                "sform_code": int(hdr["sform_code"]),
                "qform_code": int(hdr["qform_code"]),
                "pixdim": [float(v) for v in hdr["pixdim"]],
                "xyzt_units": [str(u) for u in hdr.get_xyzt_units()],
                "datatype": str(hdr.get_data_dtype()),
                "shape": list(img.shape),
                "sizeof_hdr": int(hdr["sizeof_hdr"]),
                "intent": hdr.get_intent()[0],
                "endianness": hdr.endianness,
            })
        (out / f"{i}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()
