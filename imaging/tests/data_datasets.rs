//! Synthetic MSD datasets on disk, read back through `dataset.json`: single-file and per-modality multi-channel
//! images, BraTS/Task01 labels, and the errors for unreadable or mismatched modality files.

use std::path::Path;
use std::time::Instant;

use imaging::datasets::{brats, decathlon, Case};
use imaging::io::{save_nifti, NiftiDtype};
use imaging::synthetic::{
    brats_phantom, write_msd_dataset, BratsNumbering, PhantomConfig, PhantomKind,
    SyntheticDatasetConfig,
};
use imaging::Volume;
use ndarray::{s, Array4};

fn demo_config() -> SyntheticDatasetConfig {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/data/demo.yaml"
    ))
    .unwrap();
    let v: yaml_serde::Value = yaml_serde::from_str(&text).unwrap();
    yaml_serde::from_value(v["data"]["dataset"]["synthetic"].clone()).unwrap()
}

#[test]
fn demo_dataset_is_written_fast_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config();
    let t = Instant::now();
    let json = write_msd_dataset(dir.path(), &cfg).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "demo dataset ({} volumes of {:?}) written in {secs:.2} s",
        cfg.num_training + cfg.num_test,
        cfg.phantom
    );
    assert!(
        secs < 8.0,
        "demo data generation took {secs:.2} s (target < 2 s in release builds)"
    );
    let ds = decathlon::load(&json).unwrap();
    assert_eq!(
        (ds.datalist.training.len(), ds.datalist.test.len()),
        (cfg.num_training, cfg.num_test)
    );
    assert_eq!(ds.num_classes(), 3);
    let sample = ds.datalist.training[0].load().unwrap();
    let want = imaging::synthetic::case(&cfg, 0).unwrap();
    assert_eq!(sample.image.spatial_shape(), [48, 48, 48]);
    assert_eq!(
        sample.label.as_ref().unwrap().data,
        want.label.data,
        "labels are stored exactly (uint8)"
    );
    assert_eq!(
        sample.image.data, want.image.data,
        "images are stored as float32"
    );
    assert_eq!(sample.image.affine, want.image.affine);
    assert!(ds.datalist.test[0].label.is_none());
}

#[test]
fn brats_dataset_has_four_channels_and_msd_labels() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticDatasetConfig {
        name: "BRATS".into(),
        phantom: PhantomKind::Brats {
            shape: [24, 24, 16],
            spacing: [1.0; 3],
            noise_std: 0.02,
        },
        num_training: 2,
        num_test: 1,
        seed: 3,
    };
    let json = write_msd_dataset(dir.path(), &cfg).unwrap();
    let ds = brats::load_task01(&json).unwrap();
    assert_eq!(ds.channels(), 4);
    let s = ds.datalist.training[1].load().unwrap();
    assert_eq!(s.image.channels(), 4);
    let label = s.label.unwrap();
    let mut values: Vec<u32> = label.data.iter().map(|&v| v as u32).collect();
    values.sort_unstable();
    values.dedup();
    assert_eq!(values, vec![0, 1, 2, 3]);
    let regions = brats::regions(&label, BratsNumbering::Msd).unwrap();
    let same =
        brats::regions(&brats::msd_to_brats(&label).unwrap(), BratsNumbering::Brats).unwrap();
    assert_eq!(regions, same);
    let voxels = |c: usize| regions.data.slice(s![c, .., .., ..]).sum();
    assert!(
        voxels(2) <= voxels(0) && voxels(0) <= voxels(1),
        "ET ⊂ TC ⊂ WT"
    );
}

fn write(path: &Path, vol: &Volume) {
    save_nifti(vol, path, NiftiDtype::F32).unwrap();
}

#[test]
fn per_modality_lists_stack_and_mismatches_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let p = brats_phantom([12, 10, 8], [1.0; 3], 0.0, BratsNumbering::Msd, 1).unwrap();
    let names = ["flair", "t1", "t1ce", "t2"];
    for (c, n) in names.iter().enumerate() {
        let ch = Volume::new(
            p.image.data.slice(s![c..c + 1, .., .., ..]).to_owned(),
            p.image.affine,
        );
        write(&dir.path().join(format!("{n}.nii.gz")), &ch);
    }
    save_nifti(&p.label, &dir.path().join("seg.nii.gz"), NiftiDtype::U8).unwrap();
    let small = Volume::new(Array4::zeros((1, 12, 10, 7)), p.image.affine);
    write(&dir.path().join("small.nii.gz"), &small);
    let json = dir.path().join("dataset.json");
    std::fs::write(
        &json,
        r#"{"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "training": [{"image": ["flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"], "label": "seg.nii.gz"},
                         {"image": ["flair.nii.gz", "t1.nii.gz", "small.nii.gz", "t2.nii.gz"], "label": "seg.nii.gz"},
                         {"image": ["flair.nii.gz", "t1.nii.gz", "t1ce.nii.gz", "t2.nii.gz"], "label": "small.nii.gz"}]}"#,
    )
    .unwrap();
    let ds = decathlon::load(&json).unwrap();
    let ok = ds.datalist.training[0].load().unwrap();
    assert_eq!(
        ok.image.data, p.image.data,
        "channels stacked in list order"
    );
    let e = ds.datalist.training[1].load().unwrap_err().to_string();
    assert!(
        e.contains("flair.nii.gz") && e.contains("small.nii.gz"),
        "{e}"
    );
    let e = ds.datalist.training[2].load().unwrap_err().to_string();
    assert!(e.contains("label") && e.contains("small.nii.gz"), "{e}");
    let missing = Case::new(vec![dir.path().join("nope.nii.gz")], None)
        .load()
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.nii.gz"), "{missing}");
}

#[test]
fn two_d_phantom_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SyntheticDatasetConfig {
        name: "flat".into(),
        phantom: PhantomKind::Ellipsoids(PhantomConfig::new([32, 24, 1], [0.8, 0.8, 1.0], 3, 2)),
        num_training: 2,
        num_test: 0,
        seed: 0,
    };
    let ds = decathlon::load(&write_msd_dataset(dir.path(), &cfg).unwrap()).unwrap();
    let s = ds.datalist.training[0].load().unwrap();
    assert_eq!(s.image.data.shape(), &[2, 32, 24, 1]);
    assert_eq!(ds.channels(), 2);
}
