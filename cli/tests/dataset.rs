//! `medmae dataset create` and `medmae dataset check` on folders written here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imaging::io::NiftiDtype;
use imaging::synthetic::{phantom, PhantomConfig};

fn medmae(args: &[&str], paths: &[&Path]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medmae"))
        .args(args)
        .args(paths)
        .output()
        .expect("medmae runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `images/` and `labels/` with `n` labelled phantoms (`c0`, `c1`, ...; labels named `cN_seg`) and one unlabelled
/// image `extra`; the label of case `shift` gets its origin moved by 3 mm.
fn folders(t: &Path, n: usize, shift: Option<usize>) -> (PathBuf, PathBuf) {
    let (img, lab) = (t.join("images"), t.join("labels"));
    std::fs::create_dir_all(&img).unwrap();
    std::fs::create_dir_all(&lab).unwrap();
    let cfg =
        PhantomConfig::new([16, 16, 12], [1.0, 1.0, 2.0], 1, 1).with_radius_fraction([0.2, 0.3]);
    for i in 0..=n {
        let p = phantom(&cfg, i as u64).unwrap();
        let id = if i == n {
            "extra".to_string()
        } else {
            format!("c{i}")
        };
        imaging::io::save_nifti(&p.image, &img.join(format!("{id}.nii.gz")), NiftiDtype::F32)
            .unwrap();
        if i < n {
            let mut l = p.label;
            if shift == Some(i) {
                l.affine[2][3] += 3.0;
            }
            imaging::io::save_nifti(&l, &lab.join(format!("{id}_seg.nii.gz")), NiftiDtype::U8)
                .unwrap();
        }
    }
    (img, lab)
}

#[test]
fn create_writes_an_msd_folder_that_checks_clean() {
    let t = tempfile::tempdir().unwrap();
    let (img, lab) = folders(t.path(), 2, None);
    let ds = t.path().join("ds");
    let o = medmae(
        &[
            "dataset",
            "create",
            "--modality",
            "CT",
            "--label-names",
            "background,blob",
            "--images",
        ],
        &[&img],
    );
    assert!(!o.status.success(), "--labels and -o are required");
    let o = Command::new(env!("CARGO_BIN_EXE_medmae"))
        .args([
            "dataset",
            "create",
            "--modality",
            "CT",
            "--label-names",
            "background,blob",
        ])
        .arg("--images")
        .arg(&img)
        .arg("--labels")
        .arg(&lab)
        .arg("-o")
        .arg(&ds)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("2 labelled case(s), 1 unlabelled"),
        "{}",
        text(&o)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ds.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(json["modality"]["0"], "CT");
    assert_eq!(json["labels"]["1"], "blob");
    assert_eq!(json["training"][1]["label"], "./labelsTr/c1.nii.gz");
    assert_eq!(json["test"][0], "./imagesTs/extra.nii.gz");
    assert!(ds.join("imagesTr/c0.nii.gz").is_file() && ds.join("labelsTr/c0.nii.gz").is_file());
    // The written dataset is what the trainer reads.
    let parsed = imaging::datasets::decathlon::load_dir_or_file(&ds).unwrap();
    assert_eq!(parsed.datalist.training.len(), 2);
    let o = medmae(&["dataset", "check"], &[&ds]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 error(s)"), "{}", text(&o));
    // Never overwrites a dataset.
    let o = Command::new(env!("CARGO_BIN_EXE_medmae"))
        .args(["dataset", "create", "--images"])
        .arg(&img)
        .arg("--labels")
        .arg(&lab)
        .arg("-o")
        .arg(&ds)
        .output()
        .unwrap();
    assert!(
        !o.status.success() && text(&o).contains("already exists"),
        "{}",
        text(&o)
    );
}

#[test]
fn create_refuses_a_label_off_its_image_grid() {
    let t = tempfile::tempdir().unwrap();
    let (img, lab) = folders(t.path(), 2, Some(1));
    let ds = t.path().join("ds");
    let o = Command::new(env!("CARGO_BIN_EXE_medmae"))
        .args(["dataset", "create", "--images"])
        .arg(&img)
        .arg("--labels")
        .arg(&lab)
        .arg("-o")
        .arg(&ds)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("case c1: label map is not on the image grid: origin"),
        "{out}"
    );
    assert!(out.contains("nothing written"), "{out}");
    assert!(!ds.join("dataset.json").exists());
}

#[test]
fn check_lists_undeclared_labels_grid_mismatches_and_missing_files() {
    let t = tempfile::tempdir().unwrap();
    let (img, lab) = folders(t.path(), 3, Some(2));
    let entry = |i: usize| {
        serde_json::json!({
            "image": img.join(format!("c{i}.nii.gz")),
            "label": lab.join(format!("c{i}_seg.nii.gz")),
        })
    };
    let mut training: Vec<serde_json::Value> = (0..3).map(entry).collect();
    training.push(serde_json::json!({"image": "gone.nii.gz", "label": "gone_seg.nii.gz"}));
    let doc = serde_json::json!({
        "name": "broken",
        "modality": {"0": "MR"},
        "labels": {"0": "background"},
        "training": training,
    });
    let json = t.path().join("dataset.json");
    std::fs::write(&json, doc.to_string()).unwrap();
    let o = medmae(&["dataset", "check"], &[t.path()]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    for want in [
        "error: case c0: label value(s) [1] are not declared in dataset.json's `labels` [0]",
        "error: case c2: label map is not on the image grid: origin",
        "error: case gone: file",
        "does not exist",
    ] {
        assert!(out.contains(want), "missing `{want}` in:\n{out}");
    }
    let o = medmae(&["dataset", "check", "--json"], &[&json]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["dataset"], "broken");
    assert!(v["errors"].as_u64().unwrap() >= 4, "{v}");
    assert!(v["label_values"]["1"].as_u64().is_some(), "{v}");
}
