//! The `medmae` binary end to end: info (text/JSON) on NIfTI and on a DICOM series made at test time, convert
//! DICOM → NIfTI/MetaImage, seg (DICOM SEG), and clear errors without panics; no patient attribute ever printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const ITK: &str = "/usr/share/doc/insighttoolkit5-examples/examples/Data";
const SECRETS: [&str; 4] = ["Doe", "PAT-SECRET", "ACC-SECRET", "19700101"];

fn medmae(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_medmae"));
    for a in args {
        c.arg(a);
    }
    let out = c.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("panicked"), "panic: {all}");
    for s in SECRETS {
        assert!(!all.contains(s), "patient attribute {s} printed: {all}");
    }
    out
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The oblique, shuffled DICOM series written by imaging's generator script (once per test binary).
fn series() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let python = std::env::var("MEDMAE_PYTHON").expect(
            "MEDMAE_PYTHON is unset: run scripts/setup and use cargo (.cargo/config.toml sets it)",
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("cli_series_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../imaging/tests/golden/dicom/make_series.py");
        let nifti = Path::new(ITK).join("KmeansTest_T1UCharRaw.nii.gz");
        let out = Command::new(python)
            .arg(script)
            .arg(nifti)
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "make_series.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

#[test]
fn info_reports_nifti_facts_and_labels() {
    let seg = Path::new(ITK).join("KmeansTest_T1KmeansPrelimSegmentation.nii.gz");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&medmae(&[&"info", &"--json", &seg]))).unwrap();
    assert_eq!(j["format"], "niigz");
    assert_eq!(j["shape"], serde_json::json!([128, 128, 62]));
    assert_eq!(j["channels"], 1);
    let labels = j["labels"].as_object().unwrap();
    let total: u64 = labels.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 128 * 128 * 62);
    let text = stdout(&medmae(&[&"info", &seg]));
    assert!(
        text.contains("axcodes") && text.contains("labels"),
        "{text}"
    );
}

#[test]
fn dicom_info_convert_and_seg() {
    let dir = series().join("series");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&medmae(&[&"info", &"--json", &dir]))).unwrap();
    assert_eq!(j["format"], "dicom");
    assert_eq!(j["shape"], serde_json::json!([128, 128, 62]));
    assert!((j["spacing"][2].as_f64().unwrap() - 2.5).abs() < 1e-6);
    let listing = stdout(&medmae(&[&"series", &dir]));
    assert!(
        listing.contains("1.2.826.0.1.3680043.8.498.1.2") && listing.contains("62 files"),
        "{listing}"
    );

    let nii = series().join("converted.nii.gz");
    stdout(&medmae(&[&"convert", &dir, &nii]));
    let back: serde_json::Value =
        serde_json::from_str(&stdout(&medmae(&[&"info", &"--json", &nii]))).unwrap();
    assert_eq!(back["shape"], j["shape"]);
    assert_eq!(back["dtype"], "u8");
    assert_eq!(back["stats"], j["stats"]);
    for r in 0..3 {
        for c in 0..4 {
            let (a, b) = (
                back["affine_ras"][r][c].as_f64().unwrap(),
                j["affine_ras"][r][c].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-4, "affine[{r}][{c}] {a} vs {b}");
        }
    }
    let mha = series().join("converted.mha");
    stdout(&medmae(&[&"convert", &series().join("series.zip"), &mha]));

    // A label map in RAS order (not the series' order) is brought back onto the source grid.
    let labels = series().join("labels_ras.nii.gz");
    let mut vol = imaging::io::load(&nii).unwrap();
    vol.data.mapv_inplace(|v| {
        if v > 150.0 {
            2.0
        } else if v > 60.0 {
            1.0
        } else {
            0.0
        }
    });
    let (ras, _) = imaging::orient::reorient(&vol, "RAS").unwrap();
    imaging::io::save(&ras, &labels).unwrap();
    let seg = series().join("seg.dcm");
    stdout(&medmae(&[
        &"seg",
        &"--source",
        &dir,
        &"--labels",
        &labels,
        &"--names",
        &"grey,white",
        &"--anonymize",
        &"-o",
        &seg,
    ]));
    let bytes = std::fs::read(&seg).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("grey") && text.contains("white"));
    for s in SECRETS {
        assert!(!text.contains(s), "{s} in anonymised SEG");
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.nii");
    std::fs::write(&junk, b"not a nifti").unwrap();
    let missing = tmp.path().join("missing.nii.gz");
    let stray = tmp.path().join("notes.xyz");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(&stray, b"hello").unwrap();
    for (args, want) in [
        (
            vec![&"info" as &dyn AsRef<std::ffi::OsStr>, &junk],
            "junk.nii",
        ),
        (vec![&"info", &missing], "missing.nii.gz"),
        (vec![&"info", &stray], "unknown input"),
        (
            vec![&"convert", &junk, &tmp.path().join("x.nii")],
            "junk.nii",
        ),
        (
            vec![&"convert", &stray, &tmp.path().join("x.png")],
            "unknown output extension",
        ),
        (vec![&"info", &empty], "no DICOM files found"),
    ] {
        let out = medmae(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("medmae: error:") && err.contains(want),
            "expected `{want}` in: {err}"
        );
    }
}
