//! The `medmae` binary end to end: info (text/JSON) on NIfTI and on a DICOM series made at test time, convert
//! DICOM → NIfTI/MetaImage, seg (DICOM SEG, clean under dciodvfy), info on a SEG and on folders, stored axes and
//! orientation through convert, data files confined by default, and errors in one style without panics; no
//! patient attribute ever printed.

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

/// The JSON that `medmae info --json ARGS...` prints.
fn info_json(args: &[&dyn AsRef<std::ffi::OsStr>]) -> serde_json::Value {
    let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"info", &"--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&stdout(&medmae(&all))).unwrap()
}

/// Run the venv's Python on `code` with `args`; returns stdout.
fn python(code: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let python = std::env::var("MEDMAE_PYTHON").expect("MEDMAE_PYTHON is unset: run scripts/setup");
    let mut c = Command::new(python);
    c.arg("-c").arg(code);
    for a in args {
        c.arg(a);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fixtures of imaging's `make_formats.py` (NIfTI-2, 4-D with time units, vector, pattern MetaImage).
fn formats() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../imaging/tests/golden/io/make_formats.py");
    python(
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')",
        &[&script, &dir.path()],
    );
    dir
}

/// The stderr of a failed run, checked for the one error style: `medmae: error: `, `name` exactly once, no debug
/// values, no repeated OS error.
fn error_of(o: &Output, name: &str) -> String {
    assert!(!o.status.success(), "expected a failure");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.starts_with("medmae: error: "), "{err}");
    assert_eq!(
        err.matches(name).count(),
        1,
        "{name} must appear once in: {err}"
    );
    assert!(
        !err.contains("Some(") && err.matches("(os error").count() <= 1,
        "{err}"
    );
    err
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

    // `info` on the SEG lists its segments, with the voxel counts of the label map.
    let j = info_json(&[&seg]);
    assert_eq!(j["format"], "dicom-seg");
    let counts = info_json(&[&labels])["labels"].clone();
    let segs = j["seg"]["segments"].as_array().unwrap();
    assert_eq!(segs.len(), 2);
    for (g, name) in segs.iter().zip(["grey", "white"]) {
        assert_eq!(g["label"], name);
        let n = g["number"].as_u64().unwrap().to_string();
        assert_eq!(g["voxels"], counts[&n], "segment {n}");
    }
    let text = stdout(&medmae(&[&"info", &seg]));
    assert!(
        text.contains("segment 1") && text.contains("\"grey\""),
        "{text}"
    );

    // dciodvfy: no errors and no warnings, with and without --anonymize.
    let plain = series().join("seg_plain.dcm");
    stdout(&medmae(&[
        &"seg",
        &"--source",
        &dir,
        &"--labels",
        &labels,
        &"-o",
        &plain,
    ]));
    for f in [&seg, &plain] {
        let out = Command::new("dciodvfy")
            .arg(f)
            .output()
            .expect("dciodvfy is missing: install dicom3tools (scripts/setup)");
        // Its exit status is no verdict: the `Error -` / `Warning -` lines are.
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            report.contains("Segmentation"),
            "dciodvfy did not check a SEG: {report}"
        );
        let problems: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with("Error") || l.starts_with("Warning"))
            .collect();
        assert!(problems.is_empty(), "{}: {problems:#?}", f.display());
    }

    // A label map on another grid: the error names the labels file (not the output) and spatial grids only.
    let small = series().join("labels_small.nii.gz");
    let cut = imaging::Volume::new(
        vol.data.slice(ndarray::s![.., .., .., ..60]).to_owned(),
        vol.affine,
    );
    imaging::io::save(&cut, &small).unwrap();
    let out_path = series().join("never.dcm");
    let o = medmae(&[
        &"seg",
        &"--source",
        &dir,
        &"--labels",
        &small,
        &"-o",
        &out_path,
    ]);
    let err = error_of(&o, &small.display().to_string());
    assert!(
        err.contains("x 60")
            && err.contains("128 x 128 x 62")
            && !err.contains("never.dcm")
            && !err.contains("[1,"),
        "{err}"
    );
    assert!(!out_path.exists());
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
    let x_png = tmp.path().join("x.png");
    for (args, name, want) in [
        (
            vec![&"info" as &dyn AsRef<std::ffi::OsStr>, &junk],
            &junk,
            "not a NIfTI file",
        ),
        (
            vec![&"info", &missing],
            &missing,
            "No such file or directory",
        ),
        (vec![&"info", &stray], &stray, "unknown input"),
        (
            vec![&"convert", &junk, &tmp.path().join("x.nii")],
            &junk,
            "not a NIfTI file",
        ),
        (
            vec![&"convert", &stray, &x_png],
            &x_png,
            "unknown output extension",
        ),
        (
            vec![&"info", &empty],
            &empty,
            "neither a DICOM series folder",
        ),
    ] {
        let err = error_of(&medmae(&args), &name.display().to_string());
        assert!(err.contains(want), "expected `{want}` in: {err}");
    }
    // A failed write names the output once.
    let out = tmp.path().join("no_such_dir/x.nii");
    let nii = tmp.path().join("ok.nii");
    let vol = imaging::Volume::new(
        ndarray::Array4::zeros((1, 2, 2, 2)),
        imaging::Volume::diag_affine([1.0; 3]),
    );
    imaging::io::save(&vol, &nii).unwrap();
    error_of(&medmae(&[&"convert", &nii, &out]), "x.nii");
}

#[test]
fn data_files_outside_the_headers_folder_need_the_opt_in() {
    let tmp = tempfile::tempdir().unwrap();
    let sub = tmp.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(tmp.path().join("outside.raw"), [3u8; 8]).unwrap();
    let header = |name: &str, data: &str| medmae_test_support::write_mhd_header(&sub, name, data);
    let out = tmp.path().join("out.nii");
    for (name, data) in [
        ("parent.mhd", "../outside.raw"),
        ("deep.mhd", "../../../../../../etc/passwd"),
        ("absolute.mhd", "/etc/passwd"),
        ("list.mhd", "LIST\n../outside.raw"),
        ("pattern.mhd", "../outside%d.raw 0 0"),
    ] {
        let h = header(name, data);
        for args in [
            vec![&"info" as &dyn AsRef<std::ffi::OsStr>, &h],
            vec![&"info", &"--json", &h],
            vec![&"convert", &h, &out],
            vec![&"compare", &h, &h],
        ] {
            let o = medmae(&args);
            assert!(
                o.stdout.is_empty(),
                "{name}: printed facts of an external file"
            );
            let err = error_of(&o, &h.display().to_string());
            assert!(
                err.contains("header field `ElementDataFile`")
                    && err.contains("is outside the header's directory")
                    && err.contains("--allow-external-data"),
                "{err}"
            );
        }
        assert!(!out.exists());
    }
    // The documented opt-in reads it.
    let h = header("parent.mhd", "../outside.raw");
    let j: serde_json::Value = serde_json::from_str(&stdout(&medmae(&[
        &"--allow-external-data",
        &"info",
        &"--json",
        &h,
    ])))
    .unwrap();
    assert_eq!(j["labels"]["3"], 8);
}

#[test]
fn info_reports_stored_axes_sum_checksum_and_reoriented_geometry() {
    let dir = formats();
    let d = dir.path();
    let time = info_json(&[&d.join("nifti1_time_ms.nii.gz")]);
    assert_eq!(
        (
            time["ndim"].as_u64(),
            time["time"].as_u64(),
            time["components"].as_u64()
        ),
        (Some(4), Some(4), Some(1))
    );
    assert!((time["time_step"].as_f64().unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(time["time_unit"], "msec");
    let vector = info_json(&[&d.join("nifti1_vector.nii")]);
    assert_eq!(
        (
            vector["ndim"].as_u64(),
            vector["time"].as_u64(),
            vector["components"].as_u64()
        ),
        (Some(5), Some(1), Some(3))
    );
    let flat = info_json(&[&d.join("nifti2_be.nii")]);
    assert_eq!(
        (flat["ndim"].as_u64(), flat["nifti_version"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(info_json(&[&d.join("pattern.mhd")])["ndim"], 3);

    // sum and checksum against numpy/hashlib on nibabel's reading of the same file.
    let f = d.join("nifti2_oblique.nii");
    let j = info_json(&[&f]);
    let want = python(
        "import sys, hashlib, json, nibabel as nib, numpy as np\n\
         a = np.asarray(nib.load(sys.argv[1]).dataobj, dtype='<f4')\n\
         print(json.dumps([hashlib.sha256(a.tobytes(order='F')).hexdigest(), float(a.astype(np.float64).sum())]))",
        &[&f],
    );
    let want: (String, f64) = serde_json::from_str(&want).unwrap();
    assert_eq!(j["checksum"], want.0);
    assert!((j["stats"]["sum"].as_f64().unwrap() - want.1).abs() < 1e-6 * want.1.abs().max(1.0));

    // --ras / --orient report the reoriented geometry; the voxels are only permuted, so a file converted with
    // --orient LPS reports the same RAS view.
    let ras = info_json(&[&"--ras", &f]);
    let lps = d.join("lps.nii.gz");
    stdout(&medmae(&[&"convert", &"--orient", &"LPS", &f, &lps]));
    let back = info_json(&[&lps]);
    assert_eq!(
        (back["axcodes"].as_str(), back["orientation"].as_str()),
        (Some("LPS"), Some("stored"))
    );
    assert_ne!(
        back["checksum"], ras["checksum"],
        "the LPS file stores its voxels in another order"
    );
    let back_ras = info_json(&[&"--ras", &lps]);
    assert_eq!(
        (
            back_ras["orientation"].as_str(),
            back_ras["axcodes"].as_str()
        ),
        (Some("RAS"), Some("RAS"))
    );
    assert_eq!(back_ras["checksum"], ras["checksum"]);
    assert_eq!(back_ras["shape"], ras["shape"]);
    assert_eq!(info_json(&[&"--orient", &"pil", &f])["axcodes"], "PIL");
    let text = stdout(&medmae(&[&"info", &"--ras", &f]));
    assert!(
        text.contains("orientation RAS") && text.contains("checksum    sha256:"),
        "{text}"
    );
}

#[test]
fn convert_keeps_time_axis_units_and_negative_zero() {
    let dir = formats();
    let d = dir.path();
    let src = d.join("nifti1_time_ms.nii.gz");
    let nii = d.join("t.nii.gz");
    let mha = d.join("t.mha");
    let nii2 = d.join("t2.nii");
    stdout(&medmae(&[&"convert", &src, &nii]));
    stdout(&medmae(&[&"convert", &src, &mha]));
    stdout(&medmae(&[&"convert", &"--nifti2", &mha, &nii2]));
    let facts = python(
        "import sys, json, nibabel as nib, SimpleITK as sitk\n\
         out = []\n\
         for p in sys.argv[1:3]:\n\
         \x20   h = nib.load(p).header\n\
         \x20   out.append([list(h.get_data_shape()), float(h['pixdim'][4]), list(h.get_xyzt_units()), int(h['sizeof_hdr'])])\n\
         i = sitk.ReadImage(sys.argv[3])\n\
         out.append([i.GetDimension(), list(i.GetSize()), i.GetSpacing()[3]])\n\
         print(json.dumps(out))",
        &[&nii, &nii2, &mha],
    );
    let f: serde_json::Value = serde_json::from_str(&facts).unwrap();
    assert_eq!(f[0][0], serde_json::json!([3, 3, 2, 4]));
    assert!(
        (f[0][1].as_f64().unwrap() - 0.8).abs() < 1e-6,
        "pixdim[4]: {f}"
    );
    assert_eq!(f[0][2], serde_json::json!(["mm", "msec"]));
    assert_eq!(f[1][0], serde_json::json!([3, 3, 2, 4]));
    assert_eq!(f[1][3], 540);
    // MetaImage has no time unit: the step survives, the unit cannot.
    assert!((f[1][1].as_f64().unwrap() - 0.8).abs() < 1e-6);
    assert_eq!(f[2][0], 4, "the .mha stays 4-D: {f}");
    assert_eq!(f[2][1], serde_json::json!([3, 3, 2, 4]));
    let sums: Vec<serde_json::Value> = [&src, &nii, &mha, &nii2]
        .iter()
        .map(|p| info_json(&[*p])["checksum"].clone())
        .collect();
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    // Asked otherwise, the channels become vector components of a 3-D image.
    let vec_mha = d.join("v.mha");
    stdout(&medmae(&[
        &"convert",
        &"--channels",
        &"components",
        &src,
        &vec_mha,
    ]));
    let v = info_json(&[&vec_mha]);
    assert_eq!(
        (
            v["ndim"].as_u64(),
            v["components"].as_u64(),
            v["time"].as_u64()
        ),
        (Some(3), Some(4), Some(1))
    );

    // -0.0 among integral values: auto keeps float32 so the sign bit survives every hop.
    let mut data = ndarray::Array4::from_shape_fn((1, 3, 2, 2), |(_, x, y, z)| (x + y + z) as f32);
    data[[0, 1, 0, 1]] = -0.0;
    let vol = imaging::Volume::new(data, imaging::Volume::diag_affine([1.0, 2.0, 3.0]));
    let a = d.join("z.nii");
    imaging::io::save(&vol, &a).unwrap();
    let (b, c) = (d.join("z.mha"), d.join("z.nii.gz"));
    stdout(&medmae(&[&"convert", &a, &b]));
    stdout(&medmae(&[&"convert", &b, &c]));
    for p in [&a, &b, &c] {
        let back = imaging::io::load(p).unwrap();
        assert_eq!(
            back.data[[0, 1, 0, 1]].to_bits(),
            (-0.0f32).to_bits(),
            "{}",
            p.display()
        );
        assert_eq!(back.checksum(), vol.checksum(), "{}", p.display());
    }
}

#[test]
fn info_tells_series_folders_from_image_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let vol = imaging::Volume::new(
        ndarray::Array4::zeros((1, 4, 3, 2)),
        imaging::Volume::diag_affine([1.0, 1.5, 2.0]),
    );
    imaging::io::save(&vol, &images.join("a.nii.gz")).unwrap();
    imaging::io::save(&vol, &images.join("b.mha")).unwrap();
    std::fs::write(images.join("notes.txt"), "not an image").unwrap();
    let text = stdout(&medmae(&[&"info", &images]));
    assert!(
        text.contains("a folder of 2 image file(s), not a DICOM series"),
        "{text}"
    );
    assert!(
        text.contains("a.nii.gz  niigz  4x3x2") && text.contains("b.mha  mha  4x3x2"),
        "{text}"
    );
    let j = info_json(&[&images]);
    assert_eq!(j["format"], "folder");
    assert_eq!(j["files"].as_array().unwrap().len(), 2);
    // A folder holding DICOM files is a series: read as one, and a stray file among the slices is an error naming
    // it (never silently left out).
    let mixed = tmp.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for e in std::fs::read_dir(series().join("series")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, mixed.join(p.file_name().unwrap())).unwrap();
    }
    let j = info_json(&[&mixed]);
    assert_eq!(
        (j["format"].as_str(), j["shape"].clone()),
        (Some("dicom"), serde_json::json!([128, 128, 62]))
    );
    let stray = mixed.join("stray.nii.gz");
    imaging::io::save(&vol, &stray).unwrap();
    let err = error_of(&medmae(&[&"info", &mixed]), &stray.display().to_string());
    assert!(err.contains("not a DICOM Part 10 file"), "{err}");
}
