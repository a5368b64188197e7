//! DICOM series through the real `medmae-serve`: a series made at set-up from a real NIfTI volume (ITK's
//! `KmeansTest_T1UCharRaw.nii.gz`, Debian `insighttoolkit5-examples`; SimpleITK writes one file per slice, shuffled
//! names, oblique orientation, patient attributes) is segmented by `medmae-client` as DICOM SEG and as NIfTI; the SEG,
//! read back with highdicom, must match the NIfTI path voxel for voxel and in geometry, and the NIfTI must equal the
//! offline pipeline on the series. Malformed series give INVALID_ARGUMENT (limits RESOURCE_EXHAUSTED) with clear
//! messages while the server keeps serving, and the server log holds no patient attribute or file name.

#[allow(dead_code)]
#[path = "integration/common.rs"]
mod common;
#[path = "integration/dicom_series.rs"]
mod dicom_series;

use std::path::{Path, PathBuf};
use std::process::Command;

use client::{Client, ClientError, ClientOptions, SegmentParams};
use common::{fixtures, start_server, ServeProcess};
use dicom_series::dicom_dir;
use server::backend::{BackendKind, BackendOptions};
use server::model::Repository;
use server::pipeline::{segment_volume, SegmentOptions};
use server::proto::medmae_v1::{OutputFormat, VolumeFormat};
use tonic::Code;

fn facts() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dicom_dir().join("series.json")).unwrap())
        .unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Run `medmae-client --server URL args...`, returning (success, stdout, stderr).
fn client(srv: &ServeProcess, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(medmae_test_support::workspace_bin("medmae-client"))
        .arg("--server")
        .arg(srv.url())
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn client_ok(srv: &ServeProcess, args: &[&str]) -> String {
    let (ok, out, err) = client(srv, args);
    assert!(ok, "medmae-client {args:?}: {err}\nserver:\n{}", srv.logs());
    out
}

/// Read a SEG back with highdicom against the fixture series.
fn read_seg(seg: &Path) -> (ndarray::Array4<u8>, serde_json::Value) {
    dicom_series::read_seg(seg, &dicom_dir().join("series"))
}

/// The secrets of the fixtures plus the series' file names: none may appear in server logs or messages.
fn forbidden() -> Vec<String> {
    let f = facts();
    let mut v = strings(&f["secrets"]);
    v.extend(strings(&f["sorted_files"]));
    v.push("Doe".into());
    v.push(dicom_dir().display().to_string());
    v.push("study/".into());
    v
}

fn assert_clean(what: &str, text: &str) {
    for s in forbidden() {
        assert!(!text.contains(&s), "{what} contains {s:?}:\n{text}");
    }
}

/// The server log must not even hold the DICOM UIDs (error messages to the client may name series UIDs).
fn assert_log_clean(srv: &ServeProcess) {
    let logs = srv.logs();
    assert_clean("server log", &logs);
    let root = facts()["study_uid"]
        .as_str()
        .unwrap()
        .trim_end_matches(".1")
        .to_string();
    assert!(
        !logs.contains(&root),
        "server log contains a UID under {root}:\n{logs}"
    );
}

#[test]
fn dicom_series_to_seg_matches_the_nifti_path_voxel_for_voxel() {
    let srv = start_server("repo", &["--backend", "ort"]);
    let series = dicom_dir().join("series");
    let out = tempfile::tempdir().unwrap();
    let (seg_path, nii_path, anon_path) = (
        out.path().join("seg.dcm"),
        out.path().join("mask.nii.gz"),
        out.path().join("anon.dcm"),
    );
    let json = client_ok(
        &srv,
        &[
            "segment",
            series.to_str().unwrap(),
            "-o",
            seg_path.to_str().unwrap(),
            "--json",
            "--quiet",
        ],
    );
    let summary: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    let f = facts();
    assert_eq!(summary["mask_format"], "dicom_seg", "{summary}");
    assert_eq!(summary["series_uid"], f["series_uid"]);
    assert_eq!(summary["slices"], 24);
    client_ok(
        &srv,
        &[
            "segment",
            series.to_str().unwrap(),
            "-o",
            nii_path.to_str().unwrap(),
            "--quiet",
        ],
    );
    // The zip path, anonymised.
    client_ok(
        &srv,
        &[
            "segment",
            dicom_dir().join("series.zip").to_str().unwrap(),
            "-o",
            anon_path.to_str().unwrap(),
            "--anonymize",
            "--quiet",
        ],
    );

    // The NIfTI equals the offline pipeline on the series as imaging::dicom reads it (values and geometry).
    let mask = imaging::io::load(&nii_path).unwrap();
    let source = imaging::dicom::read_series(&series, None).unwrap();
    assert_eq!(mask.spatial_shape(), source.spatial_shape());
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (mask.affine[r][c] - source.affine[r][c]).abs() < 1e-4,
                "mask affine {:?} vs series {:?}",
                mask.affine,
                source.affine
            );
        }
    }
    let opts = BackendOptions {
        kind: BackendKind::Ort,
        threads: 1,
        use_gpu: false,
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
    };
    let repo = Repository::load(&fixtures().join("repo"), &opts).unwrap();
    let model = repo.get("demo", "").unwrap();
    let offline = segment_volume(
        &model,
        source.clone(),
        &SegmentOptions::default(),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        mask.data, offline.mask.data,
        "served NIfTI differs from the offline pipeline"
    );
    let counts: Vec<usize> = (0..3)
        .map(|l| mask.data.iter().filter(|&&v| v == l as f32).count())
        .collect();
    assert!(
        counts.iter().all(|&n| n > 0),
        "every class should occur: {counts:?}"
    );

    // The SEG, read by highdicom, holds the same voxels per segment, on the same grid.
    for (path, anonymized) in [(&seg_path, false), (&anon_path, true)] {
        let (masks, j) = read_seg(path);
        assert_eq!(j["sop_class"], "1.2.840.10008.5.1.4.1.1.66.4");
        assert_eq!(j["modality"], "SEG");
        assert_eq!(j["segmentation_type"], "BINARY");
        let segs = j["segments"].as_array().unwrap();
        let named: Vec<(u64, &str)> = segs
            .iter()
            .map(|s| (s["number"].as_u64().unwrap(), s["label"].as_str().unwrap()))
            .collect();
        assert_eq!(named, vec![(1, "rim"), (2, "core")]);
        assert!(segs[0]["algorithm"].as_str().unwrap().contains("demo"));
        assert_eq!(j["referenced_series"][0], f["series_uid"]);
        assert_eq!(j["referenced_instances"], j["source_instances"]);
        assert_eq!(j["referenced_instances"].as_array().unwrap().len(), 24);
        assert_eq!(j["frame_of_reference"], f["frame_of_reference"]);
        assert_eq!(j["study_uid"], f["study_uid"]);
        let [nx, ny, nz] = mask.spatial_shape();
        assert_eq!(masks.dim(), (nz, ny, nx, 2));
        for ((z, y, x, s), &v) in masks.indexed_iter() {
            let want = mask.data[[0, x, y, z]] == (s + 1) as f32;
            assert_eq!(v == 1, want, "segment {} voxel ({x}, {y}, {z})", s + 1);
        }
        // highdicom's volume axes are (slice, row, column) in LPS: ours (column, row, slice) reversed, world x and y
        // negated; the slice axis may point either way along the normal.
        let flip = [-1.0, -1.0, 1.0];
        let hd = |r: usize, c: usize| j["volume_affine_lps"][r][c].as_f64().unwrap();
        let sign: f64 = (0..3)
            .map(|r| hd(r, 0) * flip[r] * mask.affine[r][2])
            .sum::<f64>()
            .signum();
        for (r, fl) in flip.iter().enumerate() {
            for c in 0..3 {
                let want = fl * mask.affine[r][2 - c] * if c == 0 { sign } else { 1.0 };
                assert!(
                    (hd(r, c) - want).abs() < 1e-4,
                    "affine[{r}][{c}]: {} vs {want}",
                    hd(r, c)
                );
            }
        }
        let text = String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned();
        if anonymized {
            assert_eq!(j["patient_name"], "Anonymous^");
            for s in strings(&f["secrets"]) {
                assert!(!text.contains(&s), "{s} left in the anonymised SEG");
            }
        } else {
            assert_eq!(j["patient_id"], "PAT-SECRET-42");
        }
    }
    assert_log_clean(&srv);
    assert!(srv.logs().contains("request finished"), "{}", srv.logs());
}

/// The series' files in SimpleITK's (spatial) order.
fn sorted_bytes() -> Vec<Vec<u8>> {
    strings(&facts()["sorted_files"])
        .iter()
        .map(|n| std::fs::read(dicom_dir().join("series").join(n)).unwrap())
        .collect()
}

async fn expect_error(c: &Client, files: Vec<Vec<u8>>, series: &str, code: Code, text: &[&str]) {
    let params = SegmentParams {
        model: "demo".into(),
        series: series.into(),
        ..Default::default()
    };
    match c
        .upload(VolumeFormat::DicomFiles, files, &params, |_, _| {})
        .await
    {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), code, "{text:?}: {}", s.message());
            for t in text {
                assert!(s.message().contains(t), "{t:?} not in {:?}", s.message());
            }
            assert_clean("error message", s.message());
        }
        other => panic!("{text:?}: expected {code:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_series_are_rejected_clearly_and_serving_continues() {
    let n = strings(&facts()["sorted_files"]).len();
    let max_files = (n + 1).to_string();
    let srv = start_server(
        "repo",
        &[
            "--backend",
            "tract",
            "--max-dicom-files",
            &max_files,
            "--max-upload-bytes",
            "4000000",
        ],
    );
    let c = Client::connect(&ClientOptions {
        server: srv.url(),
        ..Default::default()
    })
    .await
    .unwrap();
    let good = sorted_bytes();
    let extra = |name: &str| std::fs::read(dicom_dir().join(name)).unwrap();

    let mut missing = good.clone();
    missing.remove(n / 2);
    expect_error(&c, missing, "", Code::InvalidArgument, &["missing slice"]).await;

    let mut duplicated = good.clone();
    duplicated.push(good[3].clone());
    expect_error(
        &c,
        duplicated,
        "",
        Code::InvalidArgument,
        &["duplicated slice position"],
    )
    .await;

    let mut mixed = good.clone();
    mixed.push(extra("other.dcm"));
    let other_uid = facts()["other_series_uid"].as_str().unwrap().to_string();
    expect_error(
        &c,
        mixed.clone(),
        "",
        Code::InvalidArgument,
        &["2 series found", &other_uid],
    )
    .await;
    expect_error(
        &c,
        mixed.clone(),
        "1.2.3",
        Code::InvalidArgument,
        &["no series `1.2.3`"],
    )
    .await;

    let mut nonimage = good.clone();
    nonimage.insert(0, extra("report.dcm"));
    expect_error(
        &c,
        nonimage,
        "",
        Code::InvalidArgument,
        &["non-image object", "file 1"],
    )
    .await;

    let mut truncated = good.clone();
    let cut = truncated[5].len() / 2;
    truncated[5].truncate(cut);
    expect_error(&c, truncated, "", Code::InvalidArgument, &["file 6"]).await;

    let mut stray = good.clone();
    stray.push(b"not a dicom file at all".to_vec());
    expect_error(
        &c,
        stray,
        "",
        Code::InvalidArgument,
        &["file 25", "not a DICOM Part 10 file"],
    )
    .await;

    let mut too_many = mixed.clone();
    too_many.push(extra("report.dcm"));
    expect_error(
        &c,
        too_many,
        "",
        Code::ResourceExhausted,
        &["files exceeds the server limit"],
    )
    .await;
    expect_error(
        &c,
        vec![vec![0u8; 4_100_000]],
        "",
        Code::ResourceExhausted,
        &["4000000 bytes"],
    )
    .await;

    // Zip entries are named by position, never by their stored name.
    match c
        .upload(
            VolumeFormat::DicomZip,
            vec![extra("broken.zip")],
            &SegmentParams {
                model: "demo".into(),
                ..Default::default()
            },
            |_, _| {},
        )
        .await
    {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
            assert!(
                s.message().contains("upload.zip!entry 8"),
                "{}",
                s.message()
            );
            assert_clean("error message", s.message());
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }

    // A zip that is not one, and SEG output asked for a NIfTI upload.
    let params = SegmentParams {
        model: "demo".into(),
        ..Default::default()
    };
    match c
        .upload(
            VolumeFormat::DicomZip,
            vec![b"PK\x03\x04garbage".to_vec()],
            &params,
            |_, _| {},
        )
        .await
    {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message())
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    let seg_of_nifti = SegmentParams {
        output: OutputFormat::DicomSeg,
        ..params.clone()
    };
    let nifti = std::fs::read(fixtures().join("volume.nii.gz")).unwrap();
    match c
        .upload(VolumeFormat::NiftiGz, vec![nifti], &seg_of_nifti, |_, _| {})
        .await
    {
        Err(ClientError::Status(s)) => {
            assert_eq!(s.code(), Code::InvalidArgument);
            assert!(
                s.message().contains("needs a DICOM upload"),
                "{}",
                s.message()
            );
        }
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }

    // Still serving: the mixed upload with the series picked, in shuffled order, as NIfTI.
    let mut shuffled = mixed;
    shuffled.reverse();
    let pick = SegmentParams {
        series: "7".into(),
        output: OutputFormat::NiftiGz,
        ..params
    };
    let r = c
        .upload(VolumeFormat::DicomFiles, shuffled, &pick, |_, _| {})
        .await
        .unwrap();
    assert_eq!(r.summary.mask_format, OutputFormat::NiftiGz as i32);
    assert_eq!(r.summary.slices as usize, n);
    assert_eq!(r.summary.shape, vec![64, 64, n as u64]);
    assert_log_clean(&srv);
}

#[test]
fn client_lists_series_and_picks_one() {
    let srv = start_server("repo", &["--backend", "tract"]);
    let dir = tempfile::tempdir().unwrap();
    let both = dir.path().join("both");
    std::fs::create_dir(&both).unwrap();
    for e in std::fs::read_dir(dicom_dir().join("series")).unwrap() {
        let p: PathBuf = e.unwrap().path();
        std::fs::copy(&p, both.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(dicom_dir().join("other.dcm"), both.join("other.dcm")).unwrap();
    let out = dir.path().join("seg.dcm");
    let (ok, _, err) = client(
        &srv,
        &[
            "segment",
            both.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    let f = facts();
    assert!(!ok);
    for want in [
        "2 DICOM series",
        "--series",
        f["series_uid"].as_str().unwrap(),
        f["other_series_uid"].as_str().unwrap(),
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    let uid = f["series_uid"].as_str().unwrap();
    let text = client_ok(
        &srv,
        &[
            "segment",
            both.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--series",
            uid,
            "--quiet",
        ],
    );
    assert!(text.contains("dicom_seg") && text.contains(uid), "{text}");
    assert!(out.is_file());

    // A truncated file is named by its local path in the client's message (the client's own element-length check
    // finds it while grouping the series, before anything is uploaded).
    std::fs::remove_file(both.join("other.dcm")).unwrap();
    let victim = both.join(&strings(&f["sorted_files"])[7]);
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() - 2000]).unwrap();
    let (ok, _, err) = client(
        &srv,
        &[
            "segment",
            both.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains(&victim.display().to_string()) && err.contains("remain in the file"),
        "{err}"
    );
    assert_log_clean(&srv);
}
