//! Malformed inputs give typed errors in one style — the file named exactly once, the field and what was expected,
//! no Rust debug values, no `source()` chain that would repeat an OS error — never a panic; data files cannot
//! leave the header's folder by default; degenerate geometry is refused at load; and a mutation loop over real and
//! golden files (byte flips, truncation, extreme header values) never panics.

#[path = "golden/io/support.rs"]
mod support;

use std::path::{Path, PathBuf};

use imaging::io::{self, LoadOptions};
use imaging::ImagingError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::golden_dir;

const ITK_DATA: &str = "/usr/share/doc/insighttoolkit5-examples/examples/Data";

fn golden(name: &str) -> PathBuf {
    golden_dir().join("files").join(name)
}

/// Copy golden `name` into `dir` under `new_name`, patched by `f`.
fn patched(dir: &Path, name: &str, new_name: &str, f: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(golden(name)).unwrap();
    f(&mut bytes);
    let p = dir.join(new_name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The style every message follows: `name` exactly once, no debug values, the message complete on its own.
fn check_style(err: &ImagingError, name: &str) {
    let msg = err.to_string();
    assert_eq!(
        msg.matches(name).count(),
        1,
        "the error must name {name} exactly once: {msg}"
    );
    assert!(
        !msg.contains("Some(") && !msg.contains("None)"),
        "debug value in: {msg}"
    );
    assert!(
        msg.matches("(os error").count() <= 1,
        "repeated OS error: {msg}"
    );
    // No `source()`: an anyhow chain (`{:#}`) would print the cause a second time.
    assert!(std::error::Error::source(err).is_none(), "{msg}");
}

/// Load must fail, with a message naming `path` exactly once; returns the error.
fn fails(path: &Path) -> ImagingError {
    let err = io::load(path).expect_err("malformed input must not load");
    check_style(&err, &path.display().to_string());
    err
}

/// The error message of [`fails`], which must contain every fragment of `want`.
fn fails_with(path: &Path, want: &[&str]) -> ImagingError {
    let err = fails(path);
    let msg = err.to_string();
    for w in want {
        assert!(msg.contains(w), "expected {w:?} in: {msg}");
    }
    err
}

#[test]
fn malformed_nifti_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // u8_ras.nii: 348-byte header, vox_offset 352, 5*4*3 = 60 bytes of data.
    let p = patched(d, "u8_ras.nii", "short_data.nii", |b| b.truncate(352 + 30));
    assert!(matches!(
        fails(&p),
        ImagingError::Truncated {
            expected: 412,
            found: 382,
            ..
        }
    ));
    let p = patched(d, "u8_ras.nii", "short_header.nii", |b| b.truncate(100));
    assert!(matches!(fails(&p), ImagingError::Truncated { .. }));
    assert!(matches!(io::probe(&p), Err(ImagingError::Truncated { .. })));
    let p = patched(d, "u8_ras.nii", "low_offset.nii", |b| {
        put_f32(b, 108, 100.0)
    });
    assert!(
        matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "vox_offset")
    );
    let p = patched(d, "u8_ras.nii", "nan_offset.nii", |b| {
        put_f32(b, 108, f32::NAN)
    });
    assert!(
        matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "vox_offset")
    );
    let p = patched(d, "u8_ras.nii", "far_offset.nii", |b| put_f32(b, 108, 1e9));
    assert!(matches!(fails(&p), ImagingError::Truncated { .. }));
    let p = patched(d, "u8_ras.nii", "dim0.nii", |b| put_i16(b, 40, 0));
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "dim[0]"));
    let p = patched(d, "u8_ras.nii", "negdim.nii", |b| put_i16(b, 44, -5));
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "dim[2]"));
    let p = patched(d, "u8_ras.nii", "hugedim.nii", |b| {
        put_i16(b, 40, 7);
        for i in 1..8 {
            put_i16(b, 40 + 2 * i, i16::MAX);
        }
    });
    assert!(matches!(fails(&p), ImagingError::TooLarge { .. }));
    let p = patched(d, "u8_ras.nii", "complex.nii", |b| put_i16(b, 70, 32));
    assert!(matches!(fails(&p), ImagingError::Unsupported { .. }));
    let p = patched(d, "u8_ras.nii", "magic.nii", |b| {
        b[344..348].copy_from_slice(b"xyz\0")
    });
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "magic"));
    let p = patched(d, "u8_ras.nii", "pair.nii", |b| {
        b[344..348].copy_from_slice(b"ni1\0")
    });
    assert!(matches!(fails(&p), ImagingError::Unsupported { .. }));
    // sizeof_hdr 540 announces NIfTI-2: this 412-byte file is too short for its header, and with room for one the
    // NIfTI-2 magic (at offset 4) is missing.
    let p = patched(d, "u8_ras.nii", "nifti2.nii", |b| {
        b[0..4].copy_from_slice(&540i32.to_le_bytes())
    });
    assert!(matches!(
        fails(&p),
        ImagingError::Truncated { expected: 540, .. }
    ));
    let p = patched(d, "u8_ras.nii", "nifti2_long.nii", |b| {
        b[0..4].copy_from_slice(&540i32.to_le_bytes());
        b.resize(1000, 0);
    });
    assert!(matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "magic"));
    // dim[0] out of range is reported as dim[0] (not as sizeof_hdr), in either direction.
    for (name, v) in [("dim0_8.nii", 8), ("dim0_neg.nii", -3)] {
        let p = patched(d, "u8_ras.nii", name, |b| put_i16(b, 40, v));
        fails_with(&p, &[&format!("header field `dim[0]`: is {v}; expected")]);
    }
    // A text file with a NIfTI name is "not a NIfTI file", not a truncated header.
    for name in ["text.nii.gz", "text.nii", "x.nii"] {
        let p = d.join(name);
        std::fs::write(
            &p,
            if name == "x.nii" {
                &b"ab"[..]
            } else {
                &b"just some text, no image\n"[..]
            },
        )
        .unwrap();
        assert!(
            matches!(
                fails_with(&p, &["not a NIfTI file"]),
                ImagingError::NotFormat { .. }
            ),
            "{name}"
        );
    }
    let p = patched(d, "u8_ras.nii", "bad_inter.nii", |b| {
        put_f32(b, 112, 2.0);
        put_f32(b, 116, f32::INFINITY);
    });
    assert!(
        matches!(fails(&p), ImagingError::HeaderField { ref field, .. } if field == "scl_inter")
    );
    let p = patched(d, "u8_ras.nii", "quat.nii", |b| {
        put_i16(b, 254, 0); // sform_code 0: the qform is used
        put_f32(b, 256, 0.9);
        put_f32(b, 260, 0.9);
    });
    assert!(matches!(fails(&p), ImagingError::HeaderField { .. }));

    // The limit applies before allocation.
    let opts = LoadOptions {
        max_voxels: 59,
        ..LoadOptions::default()
    };
    assert!(matches!(
        io::load_with(&golden("u8_ras.nii"), &opts),
        Err(ImagingError::TooLarge { .. })
    ));
    let absent = d.join("absent.nii");
    let err = fails(&absent);
    assert!(matches!(err, ImagingError::Io { .. }));
    assert_eq!(
        err.to_string().matches("No such file or directory").count(),
        1,
        "{err}"
    );
}

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
    let header = |name: &str, data: &str| {
        let p = sub.join(name);
        std::fs::write(
            &p,
            format!(
                "NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = {data}\n"
            ),
        )
        .unwrap();
        p
    };
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
    let text =
        b"NDims = 3\nDimSize = 2 2 2\nElementType = MET_UCHAR\nElementDataFile = inside.raw\n";
    let err = io::load_bytes(text, io::FileFormat::Mhd, "upload.mhd", &allowed).unwrap_err();
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

/// Write `bytes` to `path` and run every reader entry point; any outcome but a panic is fine.
fn exercise(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    let _ = io::probe(path);
    let _ = io::load(path);
}

/// Mutate `orig`: flip bytes, truncate, or overwrite a header number with an extreme value.
fn mutate(rng: &mut ChaCha8Rng, orig: &[u8], header_len: usize) -> Vec<u8> {
    let mut b = orig.to_vec();
    match rng.random_range(0..4) {
        0 => {
            for _ in 0..rng.random_range(1..8) {
                let i = rng.random_range(0..header_len.min(b.len()).max(1));
                if let Some(x) = b.get_mut(i) {
                    *x ^= 1 << rng.random_range(0..8);
                }
            }
        }
        1 => b.truncate(rng.random_range(0..=b.len())),
        2 => {
            let i = rng.random_range(0..b.len().max(1));
            if let Some(x) = b.get_mut(i) {
                *x = rng.random();
            }
        }
        _ => {
            // Replace a random 4-byte field in the header with an extreme value.
            let extremes: [[u8; 4]; 6] = [
                i32::MAX.to_le_bytes(),
                (-1i32).to_le_bytes(),
                0i32.to_le_bytes(),
                f32::NAN.to_le_bytes(),
                f32::INFINITY.to_le_bytes(),
                1e30f32.to_le_bytes(),
            ];
            let i = rng.random_range(0..header_len.min(b.len()).max(1));
            let v = extremes[rng.random_range(0..extremes.len())];
            for (k, x) in v.iter().enumerate() {
                if let Some(t) = b.get_mut(i + k) {
                    *t = *x;
                }
            }
        }
    }
    b
}

/// Extreme values spliced into MetaImage header text.
fn mutate_text(rng: &mut ChaCha8Rng, text: &str) -> String {
    const SUBS: [&str; 10] = [
        "-1",
        "0",
        "4294967297",
        "9223372036854775807",
        "1e308",
        "nan",
        "",
        "x",
        "LIST",
        "LOCAL",
    ];
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let i = rng.random_range(0..lines.len());
    if let Some((k, v)) = lines[i].clone().split_once('=') {
        let mut vals: Vec<&str> = v.split_whitespace().collect();
        let j = rng.random_range(0..vals.len().max(1));
        let sub = SUBS[rng.random_range(0..SUBS.len())];
        if j < vals.len() {
            vals[j] = sub;
        } else {
            vals.push(sub);
        }
        lines[i] = format!("{k}= {}", vals.join(" "));
    } else {
        lines.remove(i);
    }
    lines.join("\n") + "\n"
}

#[test]
fn mutated_files_never_panic() {
    let itk = Path::new(ITK_DATA);
    assert!(
        itk.is_dir(),
        "{ITK_DATA} is missing: install insighttoolkit5-examples (scripts/setup)"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // (source, name in the temp dir, header length to aim header mutations at, iterations)
    let binaries = [
        (
            itk.join("KmeansTest_T1RawSkullStrip.nii.gz"),
            "m.nii.gz",
            400,
            60,
        ),
        (itk.join("CorpusCallosumMeanShape.mha"), "m.mha", 300, 300),
        (
            itk.join("BrainProtonDensity3Slices.raw"),
            "BrainProtonDensity3Slices.raw",
            1000,
            300,
        ),
        (golden("u8_ras.nii"), "m.nii", 352, 300),
        (golden("i16_scaled.nii.gz"), "s.nii.gz", 144, 300),
        (golden("i8_ext.nii"), "e.nii", 400, 300),
        (golden("sitk_f32_zlib.mha"), "z.mha", 569, 300),
    ];
    let mut runs = 0;
    for (src, name, header_len, iterations) in &binaries {
        let orig = std::fs::read(src).unwrap();
        let target = d.join(name);
        // The .raw is read through its .mha header.
        let through = if name.ends_with(".raw") {
            let h = d.join("BrainProtonDensity3Slices.mha");
            std::fs::copy(itk.join("BrainProtonDensity3Slices.mha"), &h).unwrap();
            Some(h)
        } else {
            None
        };
        for _ in 0..*iterations {
            let m = mutate(&mut rng, &orig, *header_len);
            match &through {
                Some(h) => {
                    std::fs::write(&target, &m).unwrap();
                    let _ = io::load(h);
                }
                None => exercise(&target, &m),
            }
            runs += 1;
        }
    }
    let headers = [
        (
            itk.join("BrainProtonDensity3Slices.mha"),
            "BrainProtonDensity3Slices.mha",
        ),
        (golden("list.mhd"), "list.mhd"),
        (golden("channels3.mha"), "channels3.mha"),
        (golden("gz.mhd"), "gz.mhd"),
    ];
    for f in ["list_z0.raw", "list_z1.raw", "list_z2.raw", "gz.raw.gz"] {
        std::fs::copy(golden(f), d.join(f)).unwrap();
    }
    std::fs::copy(
        itk.join("BrainProtonDensity3Slices.raw"),
        d.join("BrainProtonDensity3Slices.raw"),
    )
    .unwrap();
    for (src, name) in &headers {
        let orig = std::fs::read(src).unwrap();
        let split = orig
            .windows(16)
            .position(|w| w == b"ElementDataFile ")
            .map_or(orig.len(), |i| i);
        let text_end = orig[split..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(orig.len(), |i| split + i + 1);
        let text = String::from_utf8_lossy(&orig[..text_end]).into_owned();
        for _ in 0..300 {
            let mut m = mutate_text(&mut rng, &text).into_bytes();
            m.extend_from_slice(&orig[text_end..]);
            exercise(&d.join(name), &m);
            runs += 1;
        }
    }
    assert!(runs >= 3000, "{runs}");
    eprintln!("{runs} mutated files read without a panic");
}
