//! Unit tests of the NIfTI reader and writer: nibabel's header fixes, scaling rules and affine choice on
//! hand-patched headers (byte offsets from the NIfTI-1 specification).

use super::*;
use crate::io::{load, probe, save_nifti, NiftiDtype};
use ndarray::Array4;

const DIM: usize = 40;
const PIXDIM: usize = 76;
const SCL_SLOPE: usize = 112;
const SCL_INTER: usize = 116;
const QFORM_CODE: usize = 252;
const SFORM_CODE: usize = 254;

/// A 5x4x3 u8 file with values 0..60 and affine diag(2, 3, 4) + (1, 2, 3), as bytes.
fn base_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("b.nii");
    let data = Array4::from_shape_fn((1, 5, 4, 3), |(_, x, y, z)| (x * 12 + y * 3 + z) as f32);
    let affine = Volume::affine_from(
        [2.0, 3.0, 4.0],
        [1.0, 2.0, 3.0],
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    );
    save_nifti(&Volume::new(data, affine), &p, NiftiDtype::U8).unwrap();
    std::fs::read(p).unwrap()
}

fn f32_at(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn i16_at(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn load_bytes(bytes: &[u8]) -> Result<Volume> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.nii");
    std::fs::write(&p, bytes).unwrap();
    load(&p)
}

#[test]
fn scaling_follows_nibabel_get_slope_inter() {
    let mut b = base_file();
    f32_at(&mut b, SCL_SLOPE, 2.0);
    f32_at(&mut b, SCL_INTER, -1.0);
    let v = load_bytes(&b).unwrap();
    assert_eq!(v.data[[0, 1, 0, 0]], 12.0 * 2.0 - 1.0);
    // A zero or non-finite slope means "no scaling", whatever the intercept.
    for slope in [0.0, f32::NAN, f32::INFINITY] {
        f32_at(&mut b, SCL_SLOPE, slope);
        f32_at(&mut b, SCL_INTER, 100.0);
        assert_eq!(load_bytes(&b).unwrap().data[[0, 1, 0, 0]], 12.0);
    }
}

#[test]
fn affine_priority_sform_then_qform_then_pixdim() {
    let mut b = base_file();
    let want = [
        [2.0, 0.0, 0.0, 1.0],
        [0.0, 3.0, 0.0, 2.0],
        [0.0, 0.0, 4.0, 3.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(load_bytes(&b).unwrap().affine, want);
    // Without sform the qform (identity rotation, same zooms/offset) gives the same affine.
    i16_at(&mut b, SFORM_CODE, 0);
    assert_eq!(load_bytes(&b).unwrap().affine, want);
    // A qfac of 0 is fixed to 1 (nibabel's _chk_qfac); -1 flips the third column.
    f32_at(&mut b, PIXDIM, 0.0);
    assert_eq!(load_bytes(&b).unwrap().affine, want);
    f32_at(&mut b, PIXDIM, -1.0);
    assert_eq!(load_bytes(&b).unwrap().affine[2][2], -4.0);
    // Neither: the centred, x-flipped pixdim affine.
    i16_at(&mut b, QFORM_CODE, 0);
    f32_at(&mut b, PIXDIM + 4, 2.5);
    let a = load_bytes(&b).unwrap().affine;
    // shape (5, 4, 3), zooms (2.5, 3, 4): diag(-2.5, 3, 4), translation -((n - 1) / 2) * zoom.
    assert_eq!(
        a,
        [
            [-2.5, 0.0, 0.0, 5.0],
            [0.0, 3.0, 0.0, -4.5],
            [0.0, 0.0, 4.0, -4.0],
            [0.0, 0.0, 0.0, 1.0]
        ]
    );
    // nibabel turns a zero spacing into 1 and a negative one into its absolute value; medmae refuses both (and
    // non-finite ones), naming the field, for the pixdim and the qform affine alike.
    for qform_code in [0, 1] {
        i16_at(&mut b, QFORM_CODE, qform_code);
        for bad in [0.0, -2.0, f32::NAN, f32::INFINITY] {
            let mut c = b.clone();
            f32_at(&mut c, PIXDIM + 8, bad);
            let e = load_bytes(&c).unwrap_err().to_string();
            assert!(
                e.contains("header field `pixdim[2]`: is")
                    && e.contains("expected a positive, finite voxel spacing"),
                "{e}"
            );
        }
    }
    // A singular or non-finite sform is refused too.
    let mut c = base_file();
    f32_at(&mut c, 280 + 16 + 4, 0.0); // srow_y[1] = 0: voxel axis 1 has zero length
    let e = load_bytes(&c).unwrap_err().to_string();
    assert!(
        e.contains("`srow_x/srow_y/srow_z`: voxel axis 1 has spacing 0"),
        "{e}"
    );
    let mut c = base_file();
    f32_at(&mut c, 280 + 4, 3.0); // srow_x[1] = 3, srow_y[1] = 3: axes 0 and 1 ... still independent
    f32_at(&mut c, 280 + 16, 3.0); // srow_y[0] = 3: columns 0 and 1 become (2, 3, 0) and (3, 3, 0)
    load_bytes(&c).unwrap();
    f32_at(&mut c, 280, 3.0); // columns (3, 3, 0) and (3, 3, 0): collinear
    let e = load_bytes(&c).unwrap_err().to_string();
    assert!(e.contains("the direction matrix is singular"), "{e}");
}

#[test]
fn big_endian_and_2d_headers() {
    // Byte-swap every header field of a 2-D file by hand: dim, datatype, pixdim, vox_offset, sform.
    let mut b = base_file();
    i16_at(&mut b, DIM, 2);
    i16_at(&mut b, DIM + 6, 1);
    let le = load_bytes(&b).unwrap();
    assert_eq!(le.data.shape(), &[1, 5, 4, 1]);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("be.nii");
    let mut be = b.clone();
    let swap = |be: &mut Vec<u8>, at: usize, n: usize| be[at..at + n].reverse();
    swap(&mut be, 0, 4);
    for i in 0..8 {
        swap(&mut be, DIM + 2 * i, 2);
    }
    for at in [70, 72, 68, 120, 252, 254] {
        swap(&mut be, at, 2);
    }
    for i in 0..8 {
        swap(&mut be, PIXDIM + 4 * i, 4);
    }
    for at in [108, 112, 116, 256, 260, 264, 268, 272, 276] {
        swap(&mut be, at, 4);
    }
    for i in 0..12 {
        swap(&mut be, 280 + 4 * i, 4);
    }
    std::fs::write(&p, &be).unwrap();
    let h = probe(&p).unwrap();
    assert!(h.big_endian);
    let v = load(&p).unwrap();
    assert_eq!((v.data, v.affine), (le.data, le.affine));
}

#[test]
fn probe_reports_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.nii.gz");
    let data = Array4::from_elem((2, 3, 4, 5), 1.5f32);
    save_nifti(
        &Volume::new(data, Volume::diag_affine([1.0, 2.0, 3.0])),
        &p,
        NiftiDtype::F32,
    )
    .unwrap();
    let h = probe(&p).unwrap();
    assert_eq!(
        (h.format, h.compressed, h.dtype),
        (FileFormat::NiiGz, true, ElementType::F32)
    );
    assert_eq!(
        (h.dims.clone(), h.shape, h.channels),
        (vec![3, 4, 5, 2], [3, 4, 5], 2)
    );
    assert_eq!((h.spacing, h.origin), ([1.0, 2.0, 3.0], [0.0; 3]));
    assert_eq!(h.affine_source, AffineSource::Sform { code: 1 });
    assert_eq!(h.scaling, Some((1.0, 0.0)));
    assert_eq!(h.len(), 120);
}
