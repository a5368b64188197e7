//! Unit tests of the MetaImage reader and writer: hand-computed LPS -> RAS geometry, field aliases, `HeaderSize`,
//! `LIST` splitting, limits and the written header text.

use super::*;
use crate::io::{load, load_with, probe, save_metaimage};
use ndarray::Array4;
use std::path::PathBuf;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn two_d_geometry_with_aliases() {
    let dir = tempfile::tempdir().unwrap();
    // Rotation lists the direction of voxel axis 0 then of axis 1 (LPS); ElementSize stands in for spacing.
    let text =
        "NDims = 2\nDimSize = 3 2\nElementType = MET_UCHAR\nOrigin = 10 20\nRotation = 0 1 -1 0\n\
                ElementSize = 2 3\nElementDataFile = LOCAL\n";
    let mut bytes = text.as_bytes().to_vec();
    bytes.extend(0u8..6);
    let v = load(&write(dir.path(), "a.mha", &bytes)).unwrap();
    assert_eq!(v.data.shape(), &[1, 3, 2, 1]);
    assert_eq!(v.data[[0, 2, 1, 0]], 5.0); // x fastest: index x + 3 * y
                                           // LPS: axis 0 -> (0, 1) * 2, axis 1 -> (-1, 0) * 3, origin (10, 20); RAS negates the x and y rows.
    let want = [
        [0.0, 3.0, 0.0, -10.0],
        [-2.0, 0.0, 0.0, -20.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    assert_eq!(v.affine, want);
}

#[test]
fn header_size_skips_or_reads_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = vec![9u8; 7];
    raw.extend([1u8, 2, 3, 4]);
    write(dir.path(), "d.raw", &raw);
    let head = |hs: &str| {
        format!("NDims = 2\nDimSize = 2 2\nElementType = MET_UCHAR\nHeaderSize = {hs}\nElementDataFile = d.raw\n")
    };
    let v = load(&write(dir.path(), "a.mhd", head("7").as_bytes())).unwrap();
    assert_eq!(
        v.data.iter().copied().collect::<Vec<_>>(),
        vec![1.0, 3.0, 2.0, 4.0]
    );
    let v = load(&write(dir.path(), "b.mhd", head("-1").as_bytes())).unwrap();
    assert_eq!(
        v.data.iter().copied().collect::<Vec<_>>(),
        vec![1.0, 3.0, 2.0, 4.0]
    );
    assert!(load(&write(dir.path(), "c.mhd", head("8").as_bytes())).is_err());
    assert!(load(&write(dir.path(), "e.mhd", head("-2").as_bytes())).is_err());
}

#[test]
fn list_must_split_evenly_and_limits_apply() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "s0.raw", &[1, 2, 3]);
    write(dir.path(), "s1.raw", &[4, 5, 6]);
    let ok = "NDims = 3\nDimSize = 3 1 2\nElementType = MET_UCHAR\nElementDataFile = LIST\ns0.raw\ns1.raw\n";
    let p = write(dir.path(), "ok.mhd", ok.as_bytes());
    assert_eq!(
        load(&p).unwrap().data.iter().copied().collect::<Vec<_>>(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
    assert_eq!(
        probe(&p).unwrap().data_files,
        vec![dir.path().join("s0.raw"), dir.path().join("s1.raw")]
    );
    let odd = ok.replace("DimSize = 3 1 2", "DimSize = 1 1 3");
    assert!(matches!(
        load(&write(dir.path(), "odd.mhd", odd.as_bytes())),
        Err(ImagingError::HeaderField { .. })
    ));
    let opts = LoadOptions {
        max_voxels: 5,
        ..LoadOptions::default()
    };
    assert!(matches!(
        load_with(&p, &opts),
        Err(ImagingError::TooLarge { .. })
    ));
    let opts = LoadOptions {
        max_header_bytes: 20,
        ..LoadOptions::default()
    };
    assert!(matches!(
        load_with(&p, &opts),
        Err(ImagingError::HeaderField { .. })
    ));
    // The pattern form names the same two files.
    let pattern = ok.replace("LIST\ns0.raw\ns1.raw", "s%d.raw 0 1 1");
    let p2 = write(dir.path(), "pat.mhd", pattern.as_bytes());
    assert_eq!(load(&p2).unwrap(), load(&p).unwrap());
    let other = format!("ObjectType = Scene\n{ok}");
    assert!(matches!(
        load(&write(dir.path(), "scene.mhd", other.as_bytes())),
        Err(ImagingError::Unsupported { .. })
    ));
}

#[test]
fn written_header_is_lps() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.mha");
    let affine = Volume::affine_from(
        [2.0, 3.0, 4.0],
        [10.0, 20.0, 30.0],
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
    );
    let data = Array4::from_shape_fn((2, 2, 2, 2), |(c, x, y, z)| {
        (c + 2 * x + 4 * y + 8 * z) as f32
    });
    save_metaimage(&Volume::new(data.clone(), affine), &p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let t = text::parse(&p, &bytes, true, 1 << 20).unwrap();
    // Column 0 (RAS (0, 1, 0)) -> LPS (0, -1, 0); column 1 (RAS (1, 0, 0)) -> LPS (-1, 0, 0).
    assert_eq!(
        t.get(&["TransformMatrix"]).unwrap().1,
        "0 -1 0 -1 0 0 0 0 -1"
    );
    assert_eq!(t.get(&["Offset"]).unwrap().1, "-10 -20 30");
    assert_eq!(t.get(&["ElementSpacing"]).unwrap().1, "2 3 4");
    assert_eq!(t.get(&["ElementNumberOfChannels"]).unwrap().1, "2");
    // Channels interleave fastest: the first two floats are voxel (0, 0, 0) of channels 0 and 1.
    let off = t.data_offset as usize;
    assert_eq!(
        &bytes[off..off + 8],
        &[0.0f32.to_le_bytes(), 1.0f32.to_le_bytes()].concat()[..]
    );
    let v = load(&p).unwrap();
    assert_eq!((v.data, v.affine), (data, affine));
}
