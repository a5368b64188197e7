"""Make the DICOM node fixtures of inference-server/tests/dicom_node.rs from the series of make_dicom_series.py.

Run: $MEDMAE_PYTHON make_node_series.py SERIES_DIR REPORT_DCM OUT_DIR COUNT
  OUT_DIR/s1 ... OUT_DIR/sCOUNT   copies of the series, each with its own SeriesInstanceUID and SOPInstanceUIDs
  OUT_DIR/extra.dcm               one more instance of s1 (a new SOPInstanceUID): the 25th of a 24-slice series
  OUT_DIR/rle.dcm                 a slice of s1 in RLE Lossless (a transfer syntax the node refuses)
  OUT_DIR/sr.dcm                  a Basic Text SR document (a SOP class the node does not accept)
  OUT_DIR/nopixels.dcm            REPORT_DCM: CT Image Storage without pixel data
  OUT_DIR/series.json             {"s1": SeriesInstanceUID, ...}
"""

import json
import os
import shutil
import sys

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

ROOT = "1.2.826.0.1.3680043.8.498.77"


def main(series_dir, report, out, count):
    files = sorted(os.listdir(series_dir))
    uids = {}
    for k in range(1, count + 1):
        d = os.path.join(out, f"s{k}")
        os.makedirs(d, exist_ok=True)
        series_uid = f"{ROOT}.{k}"
        uids[f"s{k}"] = series_uid
        for i, name in enumerate(files):
            ds = pydicom.dcmread(os.path.join(series_dir, name))
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = f"{series_uid}.{i + 1}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesNumber = 100 + k
            ds.save_as(os.path.join(d, f"{i:03d}.dcm"))
    first = pydicom.dcmread(os.path.join(out, "s1", "000.dcm"))
    extra = pydicom.dcmread(os.path.join(out, "s1", "000.dcm"))
    extra.SOPInstanceUID = f"{uids['s1']}.999"
    extra.file_meta.MediaStorageSOPInstanceUID = extra.SOPInstanceUID
    extra.save_as(os.path.join(out, "extra.dcm"))
    rle = pydicom.dcmread(os.path.join(out, "s1", "001.dcm"))
    rle.compress(RLELossless)
    rle.save_as(os.path.join(out, "rle.dcm"))

    sr = Dataset()
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    sr.SOPInstanceUID = f"{ROOT}.900.1"
    sr.StudyInstanceUID = first.StudyInstanceUID
    sr.SeriesInstanceUID = f"{ROOT}.900"
    sr.Modality = "SR"
    sr.PatientName = first.PatientName
    sr.PatientID = first.PatientID
    sr.ValueType = "CONTAINER"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sr.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.file_meta = meta
    sr.save_as(os.path.join(out, "sr.dcm"), enforce_file_format=True)
    shutil.copy(report, os.path.join(out, "nopixels.dcm"))
    with open(os.path.join(out, "series.json"), "w") as f:
        json.dump(uids, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
