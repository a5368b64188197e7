"""Read a DICOM SEG with highdicom/pydicom, for the tests of imaging::dicom::write_seg and of medmae-serve's SEG output.

Run: $MEDMAE_PYTHON read_seg.py SEG.dcm SOURCE_DIR OUT_DIR
For the source instances in the order SimpleITK sorts SOURCE_DIR, writes
- OUT_DIR/seg_labels.npy: int32 (slices, rows, columns), the combined label map highdicom reconstructs;
- OUT_DIR/segments.npy: uint8 (slices, rows, columns, segments), one binary mask per segment (SegmentSequence order);
- OUT_DIR/seg.json: what highdicom/pydicom report (segments, references, identification, geometry of highdicom's
  volume in LPS).
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
    numbers = [int(s.SegmentNumber) for s in seg.SegmentSequence]
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=False)
    np.save(os.path.join(out, "segments.npy"), masks.astype(np.uint8))
    vol = seg.get_volume(combine_segments=True, relabel=False)
    raw = pydicom.dcmread(seg_path)
    facts = {
        "sop_class": str(raw.SOPClassUID),
        "segments": [{"number": int(s.SegmentNumber), "label": str(s.SegmentLabel),
                      "algorithm": str(s.SegmentAlgorithmName)} for s in seg.SegmentSequence],
        "modality": str(seg.Modality),
        "segmentation_type": str(raw.SegmentationType),
        "patient_name": str(seg.PatientName),
        "patient_id": str(seg.PatientID),
        "study_uid": str(seg.StudyInstanceUID),
        "frame_of_reference": str(seg.FrameOfReferenceUID),
        "referenced_series": [str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence],
        "referenced_instances": sorted(str(i.ReferencedSOPInstanceUID)
                                       for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence),
        "source_instances": sorted(uids),
        "frames": int(seg.NumberOfFrames),
        "volume_affine_lps": vol.affine.tolist(),
        "volume_shape": list(vol.array.shape),
    }
    with open(os.path.join(out, "seg.json"), "w") as f:
        json.dump(facts, f)


if __name__ == "__main__":
    main(*sys.argv[1:4])
