"""Make the DICOM fixtures of inference-server/tests/dicom_serve.rs from a real NIfTI volume (CI venv only).

Run: $MEDMAE_PYTHON make_dicom_series.py IN.nii.gz OUT_DIR
The volume (ITK's KmeansTest_T1UCharRaw.nii.gz, a head T1) is subsampled to 64 x 64 x 24 voxels and given an oblique
orientation, anisotropic spacing and a RescaleIntercept; SimpleITK writes one file per slice under shuffled random
names with identifying patient attributes (which must never show up in server logs):
  OUT_DIR/series/          the series (CT, one file per slice)
  OUT_DIR/series.zip       the same files in a zip (under a folder)
  OUT_DIR/broken.zip       the same, with the 8th entry (in name order) cut to half its length
  OUT_DIR/other.dcm        one slice of a second series (other SeriesInstanceUID, SeriesNumber 8)
  OUT_DIR/report.dcm       a non-image object of the first series (pixel data removed, new SOPInstanceUID)
  OUT_DIR/series.json      SimpleITK's slice order (file names) and the UIDs used
"""

import json
import math
import os
import random
import sys
import zipfile

import numpy as np
import pydicom
import SimpleITK as sitk

UID = "1.2.826.0.1.3680043.8.498.5"
SECRETS = {"name": "Doe^Jane", "id": "PAT-SECRET-42", "birth": "19700101", "accession": "ACC-SECRET-7"}


def rotation(axis, degrees):
    """Rotation matrix about `axis` by `degrees` (Rodrigues)."""
    k = np.asarray(axis, dtype=float)
    k /= np.linalg.norm(k)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    t = math.radians(degrees)
    return np.eye(3) + math.sin(t) * kx + (1 - math.cos(t)) * kx @ kx


def main(src, out):
    full = sitk.Cast(sitk.ReadImage(src), sitk.sitkInt16)
    # Every second voxel in-plane (the whole head and the air around it), 24 middle slices.
    img = full[::2, ::2, 19:43]
    direction = rotation([0.0, 1.0, 1.0], 15.0) @ rotation([1.0, 0.0, 0.0], -8.0)
    img.SetDirection(tuple(direction.flatten()))
    img.SetOrigin((-30.5, 22.0, 41.25))
    img.SetSpacing((0.9, 1.1, 2.5))
    d = img.GetDirection()
    iop = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))

    def tags(series_uid, series_number):
        return [
            ("0008|0008", "ORIGINAL\\PRIMARY\\AXIAL"),
            ("0008|0060", "CT"),
            ("0008|103e", "medmae serve test"),
            ("0010|0010", SECRETS["name"]),
            ("0010|0020", SECRETS["id"]),
            ("0010|0030", SECRETS["birth"]),
            ("0008|0050", SECRETS["accession"]),
            ("0020|000d", UID + ".1"),
            ("0020|000e", series_uid),
            ("0020|0052", UID + ".3"),
            ("0020|0011", str(series_number)),
            ("0020|0037", iop),
            ("0028|1052", "-1024"),
            ("0028|1053", "1"),
        ]

    series = os.path.join(out, "series")
    os.makedirs(series, exist_ok=True)
    n = img.GetSize()[2]
    rng = random.Random(20261125)
    names = [f"{rng.getrandbits(40):010x}.dcm" for _ in range(n)]
    order = list(range(n))
    rng.shuffle(order)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()

    def write(k, path, series_uid, series_number, sop, instance):
        sl = img[:, :, k]
        for tag, value in tags(series_uid, series_number):
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0008|0018", sop)
        sl.SetMetaData("0020|0013", str(instance))
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        sl.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in pos))
        writer.SetFileName(path)
        writer.Execute(sl)

    for i, k in enumerate(order):
        # InstanceNumber follows the shuffled order, not the spatial one.
        write(k, os.path.join(series, names[i]), UID + ".2", 7, f"{UID}.4.{k + 1}", i + 1)
    write(3, os.path.join(out, "other.dcm"), UID + ".9", 8, f"{UID}.8.1", 1)

    report = pydicom.dcmread(os.path.join(series, names[0]))
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                    "SamplesPerPixel", "PhotometricInterpretation"):
        if keyword in report:
            delattr(report, keyword)
    report.SOPInstanceUID = f"{UID}.7.1"
    report.file_meta.MediaStorageSOPInstanceUID = report.SOPInstanceUID
    report.save_as(os.path.join(out, "report.dcm"))

    with zipfile.ZipFile(os.path.join(out, "series.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(names):
            z.write(os.path.join(series, name), f"study/{name}")

    with zipfile.ZipFile(os.path.join(out, "broken.zip"), "w", zipfile.ZIP_DEFLATED) as z:
        for i, name in enumerate(sorted(names)):
            data = open(os.path.join(series, name), "rb").read()
            z.writestr(f"study/{name}", data[: len(data) // 2] if i == 7 else data)

    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(series)
    with open(os.path.join(out, "series.json"), "w") as f:
        json.dump({
            "sorted_files": [os.path.basename(p) for p in files],
            "series_uid": UID + ".2",
            "other_series_uid": UID + ".9",
            "study_uid": UID + ".1",
            "frame_of_reference": UID + ".3",
            "secrets": list(SECRETS.values()),
        }, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
