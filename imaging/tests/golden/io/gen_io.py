#!/usr/bin/env python3
"""Golden fixtures for `imaging::io` (read by imaging/tests/io_golden.rs).

Run from the repository root (needs numpy, nibabel, SimpleITK; all in the medmae venv):

    $MEDMAE_PYTHON imaging/tests/golden/io/gen_io.py

It rewrites imaging/tests/golden/io/{files,expected}/ and cases.json. Pinned with nibabel 5.4.2, SimpleITK 2.5.7,
numpy 2.4.6; the data is seeded, so re-running must give identical files (check with `git diff --stat`).

For every input file, expected/<name>.npy holds the channel-first (C, X, Y, Z) float32 array and cases.json the
voxel-to-RAS affine, as nibabel reports them (NIfTI) or as SimpleITK reports them converted from LPS to RAS
(MetaImage). Hand-written MetaImage variants that SimpleITK cannot read (.raw.gz) use the numpy source; all others
are cross-checked against SimpleITK here.
"""
import gzip
import json
import pathlib
import shutil
import zlib

import nibabel as nib
import numpy as np
import SimpleITK as sitk

HERE = pathlib.Path(__file__).resolve().parent
FILES = HERE / "files"
EXPECTED = HERE / "expected"
RNG = np.random.default_rng(20261125)
CASES = []


def rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    x, y, z = axis
    c, s = np.cos(angle), np.sin(angle)
    C = 1 - c
    return np.array([
        [c + x * x * C, x * y * C - z * s, x * z * C + y * s],
        [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
        [z * x * C - y * s, z * y * C + x * s, c + z * z * C],
    ])


def affine(R, zooms, offset):
    a = np.eye(4)
    a[:3, :3] = np.asarray(R) @ np.diag(zooms)
    a[:3, 3] = offset
    return a


def short_dtype(np_dtype):
    """numpy dtype -> the `ElementType` name used by imaging::io (u8, i16, f32, ...)."""
    d = np.dtype(np_dtype)
    return f"{d.kind}{8 * d.itemsize}"


def record(name, arr_cf, aff, dtype, note):
    arr_cf = np.ascontiguousarray(arr_cf, dtype=np.float32)
    assert arr_cf.ndim == 4
    np.save(EXPECTED / f"{name}.npy", arr_cf)
    CASES.append({
        "file": name,
        "expected": f"{name}.npy",
        "shape": list(arr_cf.shape),
        "dtype": dtype,
        "affine": np.asarray(aff, float).tolist(),
        "note": note,
    })


# ---------------------------------------------------------------- NIfTI (reference: nibabel)
def nib_expected(path):
    img = nib.load(str(path))
    data = img.get_fdata(dtype=np.float64).astype(np.float32)
    while data.ndim < 3:
        data = data[..., None]
    x, y, z = data.shape[:3]
    data = data.reshape(x, y, z, -1, order="F")  # dims 4..7 -> channels, Fortran order like the file
    return np.moveaxis(data, -1, 0), img.affine


def nifti_case(name, data, aff=None, dtype="f32", note="", header=None, sform=1, qform=1, qaff=None,
               slope=None, ext=False, zooms=None):
    hdr = header if header is not None else nib.Nifti1Header()
    img = nib.Nifti1Image(data, None, header=hdr)
    if aff is not None:
        img.header.set_sform(aff, code=sform)
        img.header.set_qform(qaff if qaff is not None else aff, code=qform)
    else:
        img.header.set_sform(None, code=0)
        img.header.set_qform(None, code=0)
    img.header.set_data_dtype(data.dtype)
    if zooms is not None:
        img.header.set_zooms(zooms)
    if slope is not None:
        img.header.set_slope_inter(*slope)
    if ext:
        img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"medmae golden extension" + b"\0" * 9))
    path = FILES / name
    nib.save(img, str(path))
    if slope is not None:
        # nib.save resets scl_* when it writes unscaled data: patch them back in the written header.
        raw = bytearray(path.read_bytes() if not name.endswith(".gz") else gzip.decompress(path.read_bytes()))
        end = ">" if hdr.endianness == ">" else "<"
        raw[112:120] = np.array(slope, dtype=end + "f4").tobytes()
        path.write_bytes(gzip.compress(bytes(raw), mtime=0) if name.endswith(".gz") else bytes(raw))
    arr, a = nib_expected(path)
    record(name, arr, a, dtype, note)


def nifti_cases():
    d = RNG.integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    nifti_case("u8_ras.nii", d, affine(np.eye(3), [1.5, 2.0, 2.5], [-10, 20.5, 3]), "u8", "uint8, RAS sform")

    d = RNG.integers(-3000, 3000, size=(4, 3, 5), dtype=np.int16)
    lpi = affine(np.diag([-1, -1, -1]), [0.8, 0.8, 3.0], [50, 60, -70])
    nifti_case("i16_lpi.nii.gz", d, lpi, "i16", "int16, LPI sform, gzip")

    d = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    obl = affine(rot([1, 2, 3], 0.4), [1.0, 1.2, 2.0], [5, -6, 7])
    obl[0, 1] += 0.05  # a small shear: only the sform can carry it
    nifti_case("f32_oblique.nii", d, obl, "f32", "float32, oblique sheared sform (qform differs)",
               qaff=affine(np.eye(3), [1, 1, 1], [0, 0, 0]))

    d = RNG.normal(size=(4, 4, 3)).astype(np.float64) * 1e3
    q = affine(rot([0, 1, 1], 2.5) @ np.diag([1, 1, -1]), [0.7, 0.9, 1.1], [-3, 4, -5])
    nifti_case("f64_qform.nii", d, q, "f64", "float64, qform only (qfac = -1)", sform=0, qform=1)

    d = RNG.integers(-100, 100, size=(3, 5, 2), dtype=np.int16)
    nifti_case("pixdim_only.nii", d, None, "i16", "no sform/qform: pixdim base affine", zooms=(2.0, 3.0, 4.0))

    d = RNG.integers(0, 1000, size=(4, 3, 3), dtype=np.int16)
    nifti_case("i16_scaled.nii.gz", d, affine(np.eye(3), [1, 1, 1], [0, 0, 0]), "i16",
               "scl_slope 0.25, scl_inter -7.5", slope=(0.25, -7.5))

    d = RNG.integers(0, 60000, size=(5, 4, 3, 2), dtype=np.uint16)
    nifti_case("u16_4d.nii.gz", d, affine(np.eye(3), [2, 2, 2], [1, 2, 3]), "u16", "4-D: 4th dim -> channels")

    d = RNG.integers(-(2**31), 2**31 - 1, size=(3, 3, 2), dtype=np.int32) // 256
    nifti_case("i32_be.nii", d, affine(rot([0, 0, 1], 0.3), [1, 1, 1], [0, 0, 0]), "i32", "big-endian int32",
               header=nib.Nifti1Header(endianness=">"))

    d = RNG.integers(0, 256, size=(6, 5), dtype=np.uint8)
    nifti_case("u8_2d.nii", d, affine(np.eye(3), [0.5, 0.5, 1], [0, 0, 0]), "u8", "2-D (dim[0] = 2)")

    d = RNG.integers(-128, 128, size=(3, 2, 2), dtype=np.int8)
    nifti_case("i8_ext.nii", d, affine(np.eye(3), [1, 1, 1], [0, 0, 0]), "i8", "int8 with a header extension",
               ext=True)


# ---------------------------------------------------------------- MetaImage (reference: SimpleITK, LPS -> RAS)
def sitk_expected(path):
    img = sitk.ReadImage(str(path))
    nd = img.GetDimension()
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if img.GetNumberOfComponentsPerPixel() == 1:
        arr = arr[..., None]
    arr = np.transpose(arr, list(range(nd))[::-1] + [nd])  # (x, y[, z[, t]], K)
    while arr.ndim < 4:
        arr = arr[..., None, :]
    x, y, z = arr.shape[:3]
    arr = arr.reshape(x, y, z, -1)  # (t, K) -> channel t*K + k
    arr = np.moveaxis(arr, -1, 0)
    m = min(nd, 3)
    D = np.array(img.GetDirection()).reshape(nd, nd)[:m, :m]
    a = np.eye(4)
    a[:m, :m] = D * np.array(img.GetSpacing())[:m]
    a[:m, 3] = np.array(img.GetOrigin())[:m]
    a[:2, :] *= -1
    return arr, a


def sitk_case(name, arr_zyx, spacing, origin, direction, dtype, note, compress=False, vector=False):
    img = sitk.GetImageFromArray(arr_zyx, isVector=vector)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction)
    sitk.WriteImage(img, str(FILES / name), useCompression=compress)
    arr, a = sitk_expected(FILES / name)
    record(name, arr, a, dtype, note)


def header_lines(ndims, dims, met_type, spacing, offset, matrix, msb=False, compressed=None, channels=1, extra=()):
    lines = ["ObjectType = Image", f"NDims = {ndims}", "BinaryData = True",
             f"BinaryDataByteOrderMSB = {'True' if msb else 'False'}"]
    if compressed is not None:
        lines += ["CompressedData = True", f"CompressedDataSize = {compressed}"]
    lines += [f"TransformMatrix = {' '.join(repr(float(v)) for v in matrix)}",
              f"Offset = {' '.join(repr(float(v)) for v in offset)}",
              f"ElementSpacing = {' '.join(repr(float(v)) for v in spacing)}",
              f"DimSize = {' '.join(str(d) for d in dims)}"]
    if channels > 1:
        lines.append(f"ElementNumberOfChannels = {channels}")
    lines += list(extra)
    lines.append(f"ElementType = {met_type}")
    return lines


def lps_to_ras(ndims, spacing, offset, matrix):
    m = min(ndims, 3)
    T = np.array(matrix, float).reshape(ndims, ndims)  # row i = direction of voxel axis i
    a = np.eye(4)
    a[:m, :m] = T.T[:m, :m] * np.array(spacing, float)[:m]
    a[:m, 3] = np.array(offset, float)[:m]
    a[:2, :] *= -1
    return a


def file_order_bytes(arr_xyz, np_dtype):
    """(x, y, z[, K]) -> MetaImage byte order (K fastest, then x, y, z)."""
    perm = [2, 1, 0] + ([3] if arr_xyz.ndim == 4 else [])
    return np.ascontiguousarray(arr_xyz.transpose(perm)).astype(np_dtype).tobytes()


def hand_case(name, arr_xyz, met_type, np_dtype, data_file, note, msb=False, ndims=3, spacing=(1.0, 2.0, 3.0),
              offset=(1.0, -2.0, 3.0), matrix=None, channels=1, cross_check=True, extra=()):
    if matrix is None:
        matrix = rot([1, 1, 0], 0.3).T.ravel()  # TransformMatrix lists voxel axis directions one after the other
    dims = arr_xyz.shape[:3] if ndims == 3 else arr_xyz.shape[:ndims]
    lines = header_lines(ndims, dims, met_type, spacing, offset, matrix, msb=msb, channels=channels, extra=extra)
    payload = file_order_bytes(arr_xyz, np.dtype(np_dtype).newbyteorder(">" if msb else "<"))
    path = FILES / name
    if data_file == "LOCAL":
        path.write_bytes(("\n".join(lines + ["ElementDataFile = LOCAL"]) + "\n").encode() + payload)
    elif data_file.startswith("LIST"):
        z = arr_xyz.shape[2]
        per = len(payload) // z
        names = [f"{pathlib.Path(name).stem}_z{k}.raw" for k in range(z)]
        for k, n in enumerate(names):
            (FILES / n).write_bytes(payload[k * per:(k + 1) * per])
        path.write_text("\n".join(lines + [f"ElementDataFile = {data_file}"] + names) + "\n")
    else:
        blob = gzip.compress(payload, mtime=0) if data_file.endswith(".gz") else payload
        if data_file.endswith(".trailing.raw"):
            blob += b"\x7f" * 13
        (FILES / data_file).write_bytes(blob)
        path.write_text("\n".join(lines + [f"ElementDataFile = {data_file}"]) + "\n")
    a = lps_to_ras(ndims, spacing, offset, matrix)
    arr = arr_xyz.astype(np.float32)
    if arr.ndim == 3 and channels == 1:
        arr = arr[None]
    elif channels > 1:
        arr = np.moveaxis(arr, -1, 0)
    if cross_check:
        s_arr, s_a = sitk_expected(path)
        assert np.array_equal(s_arr, arr), name
        assert np.allclose(s_a, a, atol=1e-12), (name, s_a, a)
    record(name, arr, a, short_dtype(np_dtype), note)


def zlib_local_case():
    arr = RNG.normal(size=(4, 3, 2)).astype(np.float64)
    spacing, offset, matrix = (0.5, 0.5, 2.0), (10.0, 20.0, 30.0), np.eye(3).ravel()
    payload = file_order_bytes(arr, "<f8")
    comp = zlib.compress(payload, 6)
    lines = header_lines(3, arr.shape, "MET_DOUBLE", spacing, offset, matrix, compressed=len(comp))
    path = FILES / "zlib_f64.mha"
    path.write_bytes(("\n".join(lines + ["ElementDataFile = LOCAL"]) + "\n").encode() + comp)
    s_arr, s_a = sitk_expected(path)
    assert np.array_equal(s_arr, arr.astype(np.float32)[None])
    record("zlib_f64.mha", s_arr, s_a, "f64", "hand-written zlib LOCAL .mha, MET_DOUBLE")


def metaimage_cases():
    d = RNG.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)  # z, y, x
    sitk_case("sitk_u8.mhd", d, (0.7, 0.8, 1.5), (-5.0, 6.0, 7.5), tuple(rot([1, 2, 3], 0.5).ravel()), "u8",
              "SimpleITK .mhd + .raw, oblique direction")

    d = RNG.normal(size=(3, 4, 5)).astype(np.float32)
    sitk_case("sitk_f32_zlib.mha", d, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, -1, 0, 0, 0, -1), "f32",
              "SimpleITK .mha with zlib CompressedData, flipped axes", compress=True)

    d = RNG.normal(size=(2, 3, 4, 2)).astype(np.float32)
    sitk_case("sitk_vec2.mha", d, (1.0, 2.0, 3.0), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), "f32",
              "2-channel vector image (ElementNumberOfChannels = 2)", vector=True)

    d = RNG.integers(-500, 500, size=(4, 6), dtype=np.int16)  # y, x
    c, s = np.cos(0.5), np.sin(0.5)
    sitk_case("sitk_2d_i16.mha", d, (0.5, 0.25), (3.0, -4.0), (c, -s, s, c), "i16", "2-D, rotated direction")

    d = RNG.integers(0, 1000, size=(2, 2, 3, 4), dtype=np.uint16)  # t, z, y, x
    sitk_case("sitk_4d_u16.mha", d, (1.0, 1.0, 1.0, 1.0), (0.0, 0.0, 0.0, 0.0), tuple(np.eye(4).ravel()), "u16",
              "4-D MetaImage: 4th dim -> channels")

    d = RNG.integers(-30000, 30000, size=(5, 4, 3), dtype=np.int16)  # x, y, z
    hand_case("msb_i16.mhd", d, "MET_SHORT", "i2", "msb_i16.raw", "big-endian (BinaryDataByteOrderMSB)", msb=True)
    d = RNG.integers(0, 255, size=(5, 4, 3), dtype=np.uint8)
    hand_case("gz.mhd", d, "MET_UCHAR", "u1", "gz.raw.gz", ".raw.gz data file", cross_check=False)
    d = RNG.normal(size=(3, 4, 2)).astype(np.float32)
    hand_case("local.mhd", d, "MET_FLOAT", "f4", "LOCAL", "ElementDataFile = LOCAL inside an .mhd")
    d = RNG.integers(0, 65535, size=(4, 3, 3), dtype=np.uint16)
    hand_case("list.mhd", d, "MET_USHORT", "u2", "LIST 2D", "LIST of 2-D slice files")
    d = RNG.integers(-100, 100, size=(3, 3, 2), dtype=np.int32)
    hand_case("trailing.mhd", d, "MET_INT", "i4", "trailing.trailing.raw", ".raw with trailing bytes")
    for met, npd in [("MET_CHAR", "i1"), ("MET_UINT", "u4"), ("MET_LONG", "i4"), ("MET_ULONG", "u4"),
                     ("MET_LONG_LONG", "i8"), ("MET_ULONG_LONG", "u8")]:
        info = np.iinfo(npd)
        d = RNG.integers(max(info.min, -(2**20)), min(info.max, 2**20), size=(2, 3, 2), dtype=npd)
        hand_case(f"type_{met.lower()}.mha", d, met, npd, "LOCAL", f"{met} element type",
                  cross_check=True)
    d = RNG.normal(size=(3, 2, 2, 3)).astype(np.float32)
    hand_case("channels3.mha", d, "MET_FLOAT", "f4", "LOCAL", "3 interleaved channels", channels=3)
    zlib_local_case()


def main():
    for d in (FILES, EXPECTED):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    nifti_cases()
    metaimage_cases()
    (HERE / "cases.json").write_text(json.dumps(CASES, indent=1) + "\n")
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file())
    print(f"{len(CASES)} cases, {total} bytes in {HERE}")


if __name__ == "__main__":
    main()
