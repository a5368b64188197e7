//! Input safety of the readers with the options every program gets: MetaImage data files cannot leave the header's
//! folder (single file, `LIST`, pattern; absolute paths and `..`) unless explicitly allowed, degenerate geometry
//! (zero/negative/non-finite spacing, singular or non-finite directions) is refused at load naming file and field, and
//! a `CompressedDataSize` that the file cannot back is refused. Every error follows the one message style.

#[path = "golden/io/support.rs"]
mod support;

use imaging::io::{self, LoadOptions};
use imaging::ImagingError;
use support::{check_style, fails, fails_with, golden, patched, put_f32, put_i16};

#[test]
fn degenerate_nifti_geometry_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // u8_ras.nii has sform_code 1: srow_x at 280, srow_y at 296, srow_z at 312.
    let p = patched(d, "u8_ras.nii", "zero_col.nii", |b| {
        for r in 0..3 {
            put_f32(b, 280 + 16 * r + 8, 0.0);
        }
    });
    fails_with(
        &p,
        &[
            "header field `srow_x/srow_y/srow_z`",
            "voxel axis 2 has spacing 0",
            "positive, finite",
        ],
    );
    let p = patched(d, "u8_ras.nii", "inf_srow.nii", |b| {
        put_f32(b, 300, f32::INFINITY)
    });
    fails_with(&p, &["`srow_x/srow_y/srow_z`: affine entry [1][1] is inf"]);
    // Column 1 made equal to column 0 (1.5, 0, 0): srow_x[1] = 1.5, srow_y[1] = 0.
    let p = patched(d, "u8_ras.nii", "singular.nii", |b| {
        put_f32(b, 284, 1.5);
        put_f32(b, 300, 0.0);
    });
    fails_with(&p, &["the direction matrix is singular"]);
    // Without sform the qform (pixdim zooms) and then pixdim alone are used: 0, negative and NaN are refused.
    for (code_at, name) in [(254usize, "qform"), (252, "pixdim")] {
        for bad in [0.0f32, -1.5, f32::NAN] {
            let p = patched(d, "u8_ras.nii", &format!("{name}_{bad}.nii"), |b| {
                put_i16(b, 254, 0);
                if code_at == 252 {
                    put_i16(b, 252, 0);
                } else {
                    put_i16(b, 252, 1);
                }
                put_f32(b, 76 + 4 * 3, bad);
            });
            fails_with(
                &p,
                &[
                    "header field `pixdim[3]`: is",
                    "expected a positive, finite voxel spacing",
                ],
            );
        }
    }
}

#[test]
fn degenerate_metaimage_geometry_and_lying_sizes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let raw: Vec<u8> = (0..8u8).collect();
    let mha = |name: &str, fields: &str, data: &[u8]| {
        let p = d.join(name);
        let mut bytes = format!(
            "ObjectType = Image\nNDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\n{fields}ElementDataFile = LOCAL\n"
        )
        .into_bytes();
        bytes.extend_from_slice(data);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    io::load(&mha("ok.mha", "ElementSpacing = 1 2 3\n", &raw)).unwrap();
    for (name, field, want) in [
        (
            "zero.mha",
            "ElementSpacing = 1 0 3\n",
            "header field `ElementSpacing`: value 2 (axis 1) is 0",
        ),
        (
            "neg.mha",
            "ElementSpacing = -1 1 1\n",
            "header field `ElementSpacing`: value 1 (axis 0) is -1",
        ),
        (
            "nan.mha",
            "ElementSpacing = 1 nan 1\n",
            "header field `ElementSpacing`: is \"1 nan 1\"; expected 3 finite",
        ),
        (
            "size.mha",
            "ElementSize = 1 1 0\n",
            "header field `ElementSize`: value 3 (axis 2) is 0",
        ),
        (
            "singular.mha",
            "TransformMatrix = 1 0 0 0 1 0 0 1 0\n",
            "header field `TransformMatrix`: the direction matrix is singular",
        ),
        (
            "zero_dir.mha",
            "Rotation = 0 0 0 0 1 0 0 0 1\n",
            "header field `Rotation`: voxel axis 0 has spacing 0",
        ),
    ] {
        fails_with(&mha(name, field, &raw), &[want]);
    }
    // A CompressedDataSize larger than the bytes that follow is refused, not silently clamped.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut z, &raw).unwrap();
    let z = z.finish().unwrap();
    io::load(&mha(
        "z.mha",
        &format!("CompressedData = True\nCompressedDataSize = {}\n", z.len()),
        &z,
    ))
    .unwrap();
    let huge = mha(
        "zhuge.mha",
        "CompressedData = True\nCompressedDataSize = 1000000000000\n",
        &z,
    );
    fails_with(
        &huge,
        &["header field `CompressedDataSize`: is 1000000000000 but only"],
    );
    // A CompressedDataSize smaller than the stream cuts it: the data is truncated.
    let short = mha(
        "zshort.mha",
        "CompressedData = True\nCompressedDataSize = 5\n",
        &z,
    );
    assert!(matches!(
        fails(&short),
        ImagingError::Truncated { .. } | ImagingError::Compression { .. }
    ));
}

#[test]
fn data_files_stay_in_the_headers_folder_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(d.join("outside.raw"), [7u8; 8]).unwrap();
    std::fs::write(d.join("s0.raw"), [1u8; 4]).unwrap();
    std::fs::write(d.join("s1.raw"), [2u8; 4]).unwrap();
    std::fs::write(sub.join("inside.raw"), [5u8; 8]).unwrap();
    let header = |name: &str, data: &str| medmae_test_support::write_mhd_header(&sub, name, data);
    io::load(&header("ok.mhd", "inside.raw")).unwrap();
    let allowed = LoadOptions {
        allow_external_data: true,
        ..LoadOptions::default()
    };
    for (name, data, value) in [
        ("parent.mhd", "../outside.raw", "../outside.raw"),
        (
            "deep.mhd",
            "../../../../etc/passwd",
            "../../../../etc/passwd",
        ),
        ("absolute.mhd", "/etc/passwd", "/etc/passwd"),
        (
            "list.mhd",
            "LIST\ninside.raw\n../outside.raw",
            "../outside.raw",
        ),
        ("pattern.mhd", "../s%d.raw 0 1 1", "../s0.raw"),
        (
            "sneaky.mhd",
            "inside/../../outside.raw",
            "inside/../../outside.raw",
        ),
    ] {
        let p = header(name, data);
        let err = fails_with(
            &p,
            &[
                "header field `ElementDataFile`",
                &format!("{value:?} is outside the header's directory"),
                "allow_external_data",
            ],
        );
        assert!(matches!(err, ImagingError::HeaderField { .. }), "{name}");
        assert!(io::probe(&p).is_err(), "{name}: probe must refuse too");
    }
    // The explicit opt-in reads external files (here the ones that exist and fit).
    let v = io::load_with(&header("parent2.mhd", "../outside.raw"), &allowed).unwrap();
    assert!(v.data.iter().all(|&x| x == 7.0));
    let v = io::load_with(&header("pattern2.mhd", "../s%d.raw 0 1 1"), &allowed).unwrap();
    assert_eq!(v.data.iter().filter(|&&x| x == 2.0).count(), 4);
    // Bytes in memory have no folder: only LOCAL data can be read.
    let text = medmae_test_support::mhd_header_text("inside.raw");
    let err =
        io::load_bytes(text.as_bytes(), io::FileFormat::Mhd, "upload.mhd", &allowed).unwrap_err();
    check_style(&err, "upload.mhd");
    assert!(err.to_string().contains("needs a folder"), "{err}");
}

#[test]
fn corrupt_gzip_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = patched(d, "i16_lpi.nii.gz", "garbage.nii.gz", |b| {
        let n = b.len();
        b[20..n - 8].fill(0xff);
    });
    assert!(matches!(
        fails(&p),
        ImagingError::Compression { .. } | ImagingError::Truncated { .. }
    ));
    let p = patched(d, "i16_lpi.nii.gz", "cut.nii.gz", |b| {
        b.truncate(b.len() / 2)
    });
    assert!(matches!(
        fails(&p),
        ImagingError::Truncated { .. } | ImagingError::Compression { .. }
    ));
    let p = d.join("noise.nii.gz");
    std::fs::write(
        &p,
        [
            0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
        ],
    )
    .unwrap();
    assert!(matches!(
        fails(&p),
        ImagingError::Compression { .. } | ImagingError::Truncated { .. }
    ));
    let p = patched(d, "zlib_f64.mha", "zlib_bad.mha", |b| {
        let n = b.len();
        b[n - 40..n - 4].fill(0x55);
    });
    assert!(matches!(
        fails(&p),
        ImagingError::Compression { .. } | ImagingError::Truncated { .. }
    ));
}

#[test]
fn malformed_metaimage_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let text = std::fs::read_to_string(golden("msb_i16.mhd")).unwrap();
    let write = |name: &str, body: String| {
        let p = d.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    std::fs::copy(golden("msb_i16.raw"), d.join("msb_i16.raw")).unwrap();
    // A valid copy loads.
    io::load(&write("ok.mhd", text.clone())).unwrap();

    let p = write("missing.mhd", text.replace("msb_i16.raw", "nowhere.raw"));
    match fails(&p) {
        ImagingError::MissingDataFile { data, .. } => assert!(data.ends_with("nowhere.raw")),
        other => panic!("{other}"),
    }
    let p = write("type.mhd", text.replace("MET_SHORT", "MET_QUATERNION"));
    let err = fails(&p);
    assert!(
        matches!(err, ImagingError::Unsupported { .. }) && err.to_string().contains("ElementType"),
        "{err}"
    );
    let p = write(
        "more.mhd",
        text.replace("DimSize = 5 4 3", "DimSize = 5 4 300"),
    );
    match fails(&p) {
        ImagingError::Truncated {
            path,
            expected,
            found,
            ..
        } => {
            assert!(path.ends_with("msb_i16.raw"));
            assert_eq!((expected, found), (5 * 4 * 300 * 2, 5 * 4 * 3 * 2));
        }
        other => panic!("{other}"),
    }
    let p = write(
        "dims.mhd",
        text.replace("DimSize = 5 4 3", "DimSize = 5 -4 3"),
    );
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "DimSize"));
    let p = write("few.mhd", text.replace("DimSize = 5 4 3", "DimSize = 5 4"));
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "DimSize"));
    let p = write("ndims.mhd", text.replace("NDims = 3", "NDims = 9"));
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "NDims"));
    let p = write(
        "spacing.mhd",
        text.replace("ElementSpacing = 1.0", "ElementSpacing = nan"),
    );
    assert!(
        matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "ElementSpacing")
    );
    let p = write(
        "overflow.mhd",
        text.replace(
            "DimSize = 5 4 3",
            "DimSize = 4294967296 4294967296 4294967296",
        ),
    );
    assert!(matches!(fails(&p), ImagingError::TooLarge { .. }));
    let p = write(
        "nofile.mhd",
        text.replace("ElementDataFile = msb_i16.raw", ""),
    );
    assert!(
        matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "ElementDataFile")
    );
    let p = write(
        "ascii.mhd",
        text.replace("BinaryData = True", "BinaryData = False"),
    );
    assert!(matches!(fails(&p), ImagingError::Unsupported { .. }));
    let p = write(
        "flag.mhd",
        text.replace(
            "BinaryDataByteOrderMSB = True",
            "BinaryDataByteOrderMSB = maybe",
        ),
    );
    assert!(matches!(fails(&p), ImagingError::HeaderField { .. }));

    // A header cannot point outside its directory unless external data is explicitly allowed.
    let sub = d.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let p = sub.join("escape.mhd");
    std::fs::write(&p, text.replace("msb_i16.raw", "../msb_i16.raw")).unwrap();
    assert!(matches!(
        io::load(&p),
        Err(ImagingError::HeaderField { .. })
    ));
    let allowed = LoadOptions {
        allow_external_data: true,
        ..LoadOptions::default()
    };
    io::load_with(&p, &allowed).unwrap();
}
