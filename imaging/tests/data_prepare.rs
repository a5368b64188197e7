//! `prepare::run` on the demo config: dataset generation, preprocessing cache shared with the loader, slices and
//! manifest, summary.

use std::path::Path;

use imaging::datasets::{decathlon, CaseSource};
use imaging::loader::{Loader, LoaderConfig};
use imaging::prepare::{run, PrepareConfig};
use imaging::slices::{read_manifest, read_png, SliceSelection};

fn demo(dir: &Path) -> PrepareConfig {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/data/demo.yaml");
    let mut cfg = PrepareConfig::from_file(Path::new(path)).unwrap();
    cfg.dataset = dir.join("data");
    cfg.output_dir = dir.join("prepared");
    cfg
}

#[test]
fn demo_prepare_writes_slices_manifest_and_cache() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = demo(dir.path());
    if let Some(s) = cfg.synthetic.as_mut() {
        s.num_training = 3;
        s.num_test = 1;
    }
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
    let ds = decathlon::load_dir_or_file(&cfg.dataset).unwrap();
    let lcfg = LoaderConfig {
        cache_dir: Some(cache.clone()),
        shuffle: false,
        num_workers: 1,
        ..LoaderConfig::default()
    };
    let loader = Loader::new(CaseSource(ds.datalist.training), &cfg.transforms, lcfg).unwrap();
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
    cfg.transforms
        .push(serde_yaml::from_str("{name: RandFlip, spatial_axis: 0}").unwrap());
    assert!(run(&cfg).unwrap_err().to_string().contains("RandFlip"));
    let mut cfg = demo(dir.path());
    if let Some(s) = cfg.synthetic.as_mut() {
        s.num_training = 1;
        s.num_test = 1;
    }
    cfg.sections = vec!["train".into()];
    assert!(run(&cfg).unwrap_err().to_string().contains("`train`"));
    cfg.sections = vec!["test".into()];
    let e = run(&cfg).unwrap_err().to_string();
    assert!(e.contains("needs a label"), "{e}");
    cfg.slices.selection = SliceSelection::Middle;
    assert_eq!(run(&cfg).unwrap().slices_written, 1);
}

#[test]
fn every_prepare_config_parses_and_builds_its_transforms() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/data"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let cfg = PrepareConfig::from_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            imaging::transforms::Compose::new(&cfg.transforms)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                cfg.transforms.iter().all(|t| !t.is_random()),
                "{}",
                path.display()
            );
            n += 1;
        }
    }
    assert!(n >= 3);
    let bad = "dataset: x\noutput_dir: y\nslices: {normalization: {kind: gamma}}\n";
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bad).unwrap();
    let e = PrepareConfig::from_file(f.path()).unwrap_err().to_string();
    assert!(e.contains("gamma"), "{e}");
}
