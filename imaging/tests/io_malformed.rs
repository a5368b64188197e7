//! Malformed inputs give typed errors in one style — the file named exactly once, the field and what was expected,
//! no Rust debug values, no `source()` chain that would repeat an OS error — never a panic; and a mutation loop over
//! real and golden files (byte flips, truncation, extreme header values) never panics. (Data-file confinement and
//! degenerate geometry: `io_safety.rs`.)

#[path = "golden/io/support.rs"]
mod support;

use std::path::Path;

use imaging::io::{self, LoadOptions};
use imaging::ImagingError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{fails, fails_with, golden, patched, put_f32, put_i16};

const ITK_DATA: &str = "/usr/share/doc/insighttoolkit5-examples/examples/Data";

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
