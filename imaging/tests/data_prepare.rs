//! `prepare::run` on the demo config: dataset generation, preprocessing cache shared with the loader, slices and
//! manifest, summary.

use std::path::Path;

use imaging::datasets::{decathlon, CaseSource};
use imaging::loader::{Loader, LoaderConfig};
use imaging::prepare::{run, PrepareConfig};
use imaging::slices::{read_manifest, read_png, SliceSelection};

fn demo(dir: &Path) -> PrepareConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/data/demo.yaml");
    let mut cfg: PrepareConfig =
        yaml_serde::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    cfg.data.dataset.path = dir.join("data");
    cfg.output_dir = dir.join("prepared");
    cfg
}

fn synthetic(cfg: &mut PrepareConfig) -> &mut imaging::synthetic::SyntheticDatasetConfig {
    cfg.data.dataset.synthetic.as_mut().unwrap()
}

#[test]
fn demo_prepare_writes_slices_manifest_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = demo(dir.path());
    synthetic(&mut cfg).num_training = 3;
    synthetic(&mut cfg).num_test = 1;
    let summary = run(&cfg).unwrap();
    assert!(summary.generated_dataset);
    assert_eq!(summary.volumes, 3);
    assert!(summary.slices_written > 3);
    let records = read_manifest(&summary.manifest_json).unwrap();
    assert_eq!(records.len(), summary.slices_written);
    assert!(
        records.iter().all(|r| r.has_foreground && r.axis == 2),
        "foreground mode"
    );
    let total: u64 = summary.class_voxel_counts.values().sum();
    assert_eq!(total, 3 * 48 * 48 * 48);
    assert!(summary.class_voxel_counts.keys().copied().eq([0, 1, 2]));
    let png = read_png(
        &cfg.output_dir
            .join("slices")
            .join(&records[0].image_files[0]),
    )
    .unwrap();
    assert_eq!(png.dim(), (48, 48));
    assert_eq!(
        std::fs::read_to_string(&summary.manifest_csv)
            .unwrap()
            .lines()
            .count(),
        records.len() + 1
    );
    assert!(cfg.output_dir.join("summary.json").is_file());

    // A second run reuses the dataset and the cache, and the loader with the same transforms starts warm.
    let again = run(&cfg).unwrap();
    assert!(!again.generated_dataset);
    assert_eq!(again.slices_written, summary.slices_written);
    let cache = summary.cache_dir.clone().unwrap();
    let before = std::fs::read_dir(&cache).unwrap().count();
    let ds = decathlon::load_dir_or_file(&cfg.data.dataset.path).unwrap();
    let lcfg = LoaderConfig {
        cache_dir: Some(cache.clone()),
        shuffle: false,
        num_workers: 1,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(CaseSource(ds.datalist.training), &cfg.data.transforms, lcfg).unwrap();
    assert_eq!(loader.epoch(0).unwrap().count(), 3);
    assert_eq!(
        std::fs::read_dir(&cache).unwrap().count(),
        before,
        "the loader found every volume in the cache"
    );
}

#[test]
fn prepare_rejects_random_transforms_and_bad_sections() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = demo(dir.path());
    cfg.data
        .transforms
        .push(yaml_serde::from_str("{name: RandFlip, spatial_axis: 0}").unwrap());
    let e = run(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("RandFlip") && e.contains("`data.transforms.2`"),
        "{e}"
    );
    let mut cfg = demo(dir.path());
    synthetic(&mut cfg).num_training = 1;
    synthetic(&mut cfg).num_test = 1;
    cfg.data.sections = vec!["train".into()];
    assert!(run(&cfg).unwrap_err().to_string().contains("`train`"));
    cfg.data.sections = vec!["test".into()];
    let e = run(&cfg).unwrap_err().to_string();
    assert!(e.contains("needs a label"), "{e}");
    cfg.slices.selection = SliceSelection::Middle;
    assert_eq!(run(&cfg).unwrap().slices_written, 1);
}

/// Every shipped prepare config, read as `medmae-train prepare` reads it (with `--set` overrides).
#[test]
fn every_prepare_config_takes_overrides_and_builds_its_transforms() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/data"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let sets = ["data.dataset.path=/x".to_string(), "output_dir=/y".into()];
            let cfg: PrepareConfig =
                config::load(&path, &sets).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(cfg.data.dataset.path, Path::new("/x"));
            assert_eq!(cfg.output_dir, Path::new("/y"));
            imaging::transforms::Compose::new(&cfg.data.transforms)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                cfg.data.transforms.iter().all(|t| !t.is_random()),
                "{}",
                path.display()
            );
            n += 1;
        }
    }
    assert_eq!(n, 3, "demo, btcv_2d, brats_2d");
    let btcv = dir.join("btcv_2d.yaml");
    let cfg: PrepareConfig =
        config::load(&btcv, &["data.transforms.Spacing.pixdim=[2, 2, 5]".into()]).unwrap();
    assert!(cfg
        .data
        .transforms
        .contains(&yaml_serde::from_str("{name: Spacing, pixdim: [2, 2, 5]}").unwrap()));
    let e = config::load::<PrepareConfig>(&btcv, &["slices.normalization={kind: gamma}".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`slices.normalization.kind`") && e.contains("gamma"),
        "{e}"
    );
    let e = config::load::<PrepareConfig>(&btcv, &["dataset=data/BTCV".into()])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`dataset`") && e.contains("unknown field"),
        "{e}"
    );
}
