"""Read a DICOM SEG written by imaging::dicom::write_seg with highdicom, for imaging/tests/dicom_series.rs.

    $MEDMAE_PYTHON check_seg.py SEG.dcm SOURCE_DIR OUT_DIR
Writes OUT_DIR/seg_labels.npy: the combined label map (slices, rows, columns) that highdicom reconstructs for the
source instances in the order SimpleITK sorts SOURCE_DIR, and OUT_DIR/seg.json: what highdicom/pydicom report
(segments, references, geometry of highdicom's volume in LPS).
"""

import json
import os
import sys

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk


def main(seg_path, source_dir, out):
    seg = hd.seg.segread(seg_path)
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(source_dir)
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, relabel=False)
    np.save(os.path.join(out, "seg_labels.npy"), labels.astype(np.int32))
    vol = seg.get_volume(combine_segments=True, relabel=False)
    facts = {
        "segments": [{"number": int(s.SegmentNumber), "label": str(s.SegmentLabel)} for s in seg.SegmentSequence],
        "modality": str(seg.Modality),
        "patient_name": str(seg.PatientName),
        "patient_id": str(seg.PatientID),
        "study_uid": str(seg.StudyInstanceUID),
        "frame_of_reference": str(seg.FrameOfReferenceUID),
        "referenced_series": [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence],
        "referenced_instances": len(seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence),
        "frames": int(seg.NumberOfFrames),
        "volume_affine_lps": vol.affine.tolist(),
        "volume_shape": list(vol.array.shape),
    }
    with open(os.path.join(out, "seg.json"), "w") as f:
        json.dump(facts, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
