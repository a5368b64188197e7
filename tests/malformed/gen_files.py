"""Writes the malformed-input files of the catalogue (tests/malformed/files/) from one valid volume.

Run from the repository root: $MEDMAE_PYTHON tests/malformed/gen_files.py   (needs numpy and nibabel; the output
is committed, so the tests themselves do not run this). Each file breaks one thing; cases.tsv says which error the
server must answer with.
"""
import gzip
import os
import struct

import nibabel as nib
import numpy as np

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "files")
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(9)
vol = (rng.random((16, 16, 16)) * 100).astype(np.float32)


def nifti_bytes(data):
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0]))
    img.header["descrip"] = b"medmae malformed-input case"
    return bytearray(img.to_bytes())


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes(data))


def patched(fmt, offset, value, data=None):
    b = nifti_bytes(vol) if data is None else data
    struct.pack_into("<" + fmt, b, offset, *value)
    return b


good = nifti_bytes(vol)
write("nifti_bad_sizeof_hdr.nii", patched("i", 0, [999]))
bad_magic = nifti_bytes(vol)
bad_magic[344:348] = b"xx1\0"
write("nifti_bad_magic.nii", bad_magic)
write("nifti_huge_dims.nii", patched("8h", 40, [3, 30000, 30000, 30000, 1, 1, 1, 1]))
write("nifti_truncated_data.nii", good[: 352 + 1000])
write("nifti_bad_datatype.nii", patched("h", 70, [1234]))
write("nifti_zero_dim.nii", patched("h", 44, [0]))
write("nifti_negative_dim.nii", patched("h", 46, [-5]))
write("nifti_vox_offset_past_eof.nii", patched("f", 108, [1.0e9]))
write("nifti_dim0_nine.nii", patched("h", 40, [9]))
write("nifti_gz_corrupt.nii.gz", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + rng.bytes(600))
gz = gzip.compress(bytes(good))
write("nifti_gz_truncated.nii.gz", gz[: len(gz) // 2])
write("nifti_garbage.nii", rng.bytes(2000))
write("nifti_tiny.nii", b"not a nifti")
two = nifti_bytes(np.stack([vol, vol], axis=-1))
write("nifti_two_channels.nii", two)

raw = vol.tobytes()
def mha(lines, data=raw):
    return ("\n".join(lines) + "\n").encode() + data


base = ["ObjectType = Image", "NDims = 3", "BinaryData = True", "BinaryDataByteOrderMSB = False",
        "ElementSpacing = 1 1 1", "DimSize = 16 16 16", "ElementType = MET_FLOAT"]
write("mha_missing_dimsize.mha", mha([l for l in base if not l.startswith("DimSize")] + ["ElementDataFile = LOCAL"]))
write("mha_bad_element_type.mha", mha([l if not l.startswith("ElementType") else "ElementType = MET_FOO" for l in base] + ["ElementDataFile = LOCAL"]))
write("mha_absolute_data_file.mha", mha(base + ["ElementDataFile = /etc/passwd"], b""))
write("mha_parent_data_file.mha", mha(base + ["ElementDataFile = ../secret.raw"], b""))
write("mha_truncated.mha", mha(base + ["ElementDataFile = LOCAL"], raw[:100]))
write("mha_huge.mha", mha([l if not l.startswith("DimSize") else "DimSize = 100000 100000 100000" for l in base] + ["ElementDataFile = LOCAL"], raw[:100]))
write("mha_ndims_mismatch.mha", mha([l if not l.startswith("DimSize") else "DimSize = 16 16" for l in base] + ["ElementDataFile = LOCAL"]))
write("mha_compressed_garbage.mha", mha(base + ["CompressedData = True", "CompressedDataSize = 600", "ElementDataFile = LOCAL"], rng.bytes(600)))
write("mha_no_data_file.mha", mha(base, b""))

# Input safety (issue 16): not-a-NIfTI text, dim[0] out of range, degenerate geometry, a lying CompressedDataSize,
# data files escaping the header's folder through LIST and pattern forms, and NIfTI-2 (read like NIfTI-1).
write("nifti_text_as_gz.nii.gz", b"this is a text file with a NIfTI name\n")
write("nifti_dim0_negative.nii", patched("h", 40, [-3]))
zero_spacing = patched("h", 252, [1])           # qform_code 1
struct.pack_into("<h", zero_spacing, 254, 0)      # sform_code 0: the qform and pixdim give the affine
struct.pack_into("<f", zero_spacing, 76 + 8, 0.0)  # pixdim[2] = 0
write("nifti_zero_spacing.nii", zero_spacing)
singular = nifti_bytes(vol)
singular[296:312] = singular[280:296]             # srow_y = srow_x: two voxel axes point the same way
write("nifti_singular_sform.nii", singular)
write("nifti_nan_sform.nii", patched("f", 280, [float("nan")]))
two2 = nib.Nifti2Image(np.stack([vol, vol], axis=-1), np.diag([1.5, 1.5, 2.0, 1.0]))
write("nifti2_two_channels.nii", two2.to_bytes())
write("mha_zero_spacing.mha", mha([l if not l.startswith("ElementSpacing") else "ElementSpacing = 1 0 1" for l in base] + ["ElementDataFile = LOCAL"]))
write("mha_singular_matrix.mha", mha(base + ["TransformMatrix = 1 0 0 1 0 0 0 0 1", "ElementDataFile = LOCAL"]))
import zlib  # noqa: E402
write("mha_compressed_size_huge.mha", mha(base + ["CompressedData = True", "CompressedDataSize = 1000000000000", "ElementDataFile = LOCAL"], zlib.compress(raw)))
write("mha_list_escape.mha", mha(base + ["ElementDataFile = LIST"], b"slice.raw\n../secret.raw\n"))
write("mha_pattern_escape.mha", mha(base + ["ElementDataFile = ../slice%03d.raw 1 16 1"], b""))
