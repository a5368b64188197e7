//! The checks at the start of training (`trainer::checks`) stop a run before training, naming the config key and the
//! evidence: a binary dataset configured with 7 classes, a label map off its image's grid; and they warn about an
//! intensity window that does not fit the data.

mod common;

use std::path::{Path, PathBuf};

use imaging::io::NiftiDtype;
use imaging::synthetic::{phantom, PhantomConfig};
use imaging::Volume;
use trainer::checks::preflight;
use trainer::config::ExperimentConfig;

/// An MSD folder of 4 binary phantoms (32³); `scale`/`offset` map intensities; the label of case `shift` gets its
/// origin moved by 2 mm; `labels` is written as dataset.json's `labels`.
fn dataset(dir: &Path, labels: &[&str], shift: Option<usize>, scale: f32, offset: f32) -> PathBuf {
    let cfg = PhantomConfig::new([32, 32, 32], [1.0; 3], 1, 1).with_radius_fraction([0.2, 0.3]);
    let ds = dir.join("ds");
    std::fs::create_dir_all(ds.join("imagesTr")).unwrap();
    std::fs::create_dir_all(ds.join("labelsTr")).unwrap();
    let mut training = Vec::new();
    for i in 0..4 {
        let p = phantom(&cfg, i).unwrap();
        let img = Volume::new(p.image.data.mapv(|v| v * scale + offset), p.image.affine);
        let mut lab = p.label;
        if shift == Some(i as usize) {
            lab.affine[0][3] += 2.0;
        }
        let name = format!("case{i}.nii.gz");
        imaging::io::save_nifti(&img, &ds.join("imagesTr").join(&name), NiftiDtype::F32).unwrap();
        imaging::io::save_nifti(&lab, &ds.join("labelsTr").join(&name), NiftiDtype::U8).unwrap();
        training.push(serde_json::json!({"image": format!("imagesTr/{name}"), "label": format!("labelsTr/{name}")}));
    }
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .enumerate()
        .map(|(k, n)| (k.to_string(), serde_json::json!(n)))
        .collect();
    let doc = serde_json::json!({"name": "binary", "labels": labels, "training": training});
    std::fs::write(ds.join("dataset.json"), doc.to_string()).unwrap();
    ds
}

/// The UNETR demo config pointed at `ds` with `out_channels` classes (unnamed).
fn sets(dir: &Path, ds: &Path, out_channels: usize) -> Vec<String> {
    vec![
        format!("output_dir={}", dir.join("run").display()),
        format!("data.dataset={{kind: decathlon, path: {}}}", ds.display()),
        "data.labels=[]".into(),
        format!("model.out_channels={out_channels}"),
        "data.num_folds=2".into(),
        "threads=1".into(),
    ]
}

fn config(dir: &Path, ds: &Path, out_channels: usize) -> ExperimentConfig {
    ExperimentConfig::load(
        &common::config("demo_unetr3d.yaml"),
        &sets(dir, ds, out_channels),
    )
    .unwrap()
}

#[test]
fn binary_dataset_configured_with_seven_classes_stops_finetune() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), &["background", "tumour"], None, 1.0, 0.0);
    let cfg = config(t.path(), &ds, 7);
    let split = trainer::data::split(&cfg).unwrap();
    let e = preflight(&cfg, &split).unwrap_err().to_string();
    assert!(
        e.contains("model.out_channels") && e.contains("7, but dataset.json declares 2 labels"),
        "{e}"
    );
    assert!(
        e.contains("label values found: {0, 1}") && e.contains("4 of 4 case(s) checked"),
        "{e}"
    );
    // The same through the command line, before any training step.
    let o = common::train_output(
        &[
            "finetune",
            "--config",
            common::config("demo_unetr3d.yaml").to_str().unwrap(),
        ],
        &sets(t.path(), &ds, 7),
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("model.out_channels") && stderr.contains("declares 2 labels"),
        "{stderr}"
    );
    assert!(
        !t.path().join("run/checkpoints").exists(),
        "stopped before training"
    );
    // The matching class count passes.
    let cfg = config(t.path(), &ds, 2);
    assert!(preflight(&cfg, &split).unwrap().is_empty());
}

#[test]
fn undeclared_labels_warn_about_classes_never_found() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), &[], None, 1.0, 0.0);
    let cfg = config(t.path(), &ds, 7);
    let split = trainer::data::split(&cfg).unwrap();
    let w = preflight(&cfg, &split).unwrap();
    assert!(
        w.iter().any(|f| f.key == "model.out_channels"
            && f.message
                .contains("class(es) [2, 3, 4, 5, 6] occur in none")),
        "{w:?}"
    );
}

#[test]
fn label_off_its_image_grid_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), &["background", "tumour"], Some(2), 1.0, 0.0);
    let cfg = config(t.path(), &ds, 2);
    let split = trainer::data::split(&cfg).unwrap();
    let e = preflight(&cfg, &split).unwrap_err().to_string();
    assert!(
        e.contains("data.dataset")
            && e.contains("case case2: label map is not on the image grid: origin"),
        "{e}"
    );
    // pretrain runs the same checks.
    let o = common::train_output(
        &[
            "pretrain",
            "--config",
            common::config("demo_mae3d.yaml").to_str().unwrap(),
        ],
        &[
            format!("output_dir={}", t.path().join("mae").display()),
            format!("data.dataset={{kind: decathlon, path: {}}}", ds.display()),
            "data.num_folds=2".into(),
        ],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && stderr.contains("not on the image grid"),
        "{stderr}"
    );
}

#[test]
fn a_zero_to_one_window_on_hounsfield_units_warns_with_the_key() {
    let t = tempfile::tempdir().unwrap();
    // CT-like: background around -700 HU, the foreground from about -250 to +200.
    let ds = dataset(t.path(), &["background", "tumour"], None, 1200.0, -800.0);
    let cfg = config(t.path(), &ds, 2);
    let split = trainer::data::split(&cfg).unwrap();
    let w = preflight(&cfg, &split).unwrap();
    let on_window: Vec<&str> = w
        .iter()
        .filter(|f| f.key == "data.val_transforms.0")
        .map(|f| f.message.as_str())
        .collect();
    assert!(
        on_window
            .iter()
            .any(|m| m.contains("clips") && m.contains("of the foreground voxels")),
        "{w:?}"
    );
    assert!(
        on_window.iter().any(|m| m.contains("CT Hounsfield units?")),
        "{w:?}"
    );
}
