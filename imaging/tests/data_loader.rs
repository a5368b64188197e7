//! Loader: determinism across worker counts, sharding like `DistributedSampler`, and the on-disk cache of the
//! deterministic transforms, over a synthetic MSD dataset.

use std::path::Path;

use imaging::datasets::{decathlon, CaseSource};
use imaging::loader::{
    item_rng, shard_indices, Batch, DiskCache, Loader, LoaderConfig, SampleSource, Shard,
};
use imaging::synthetic::{write_msd_dataset, PhantomConfig, PhantomKind, SyntheticDatasetConfig};
use rand::Rng;
use spec::TransformSpec;

fn dataset(dir: &Path, n: usize) -> CaseSource {
    let cfg = SyntheticDatasetConfig {
        name: "toy".into(),
        phantom: PhantomKind::Ellipsoids(
            PhantomConfig::new([14, 12, 10], [1.0, 1.0, 2.0], 2, 1)
                .with_radius_fraction([0.15, 0.3]),
        ),
        num_training: n,
        num_test: 0,
        seed: 11,
    };
    let json = write_msd_dataset(dir, &cfg).unwrap();
    CaseSource(decathlon::load(&json).unwrap().datalist.training)
}

fn transforms() -> Vec<TransformSpec> {
    yaml_serde::from_str(
        "- name: NormalizeIntensity\n- name: SpatialPad\n  spatial_size: [16, 16, 12]\n\
         - name: RandSpatialCrop\n  roi_size: [8, 8, 8]\n- name: RandFlip\n  spatial_axis: 0\n\
         - name: RandScaleIntensity\n  factors: 0.2\n",
    )
    .unwrap()
}

fn run(source: &CaseSource, cfg: LoaderConfig, epoch: u64) -> Vec<Batch> {
    let loader = Loader::new(source.clone(), &transforms(), cfg).unwrap();
    loader.epoch(epoch).unwrap().map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.index, &x.items), (y.index, &y.items));
        assert_eq!(x.samples, y.samples, "batch {}", x.index);
    }
}

#[test]
fn batches_do_not_depend_on_the_number_of_workers() {
    let dir = tempfile::tempdir().unwrap();
    let source = dataset(dir.path(), 7);
    let cfg = |w: usize| LoaderConfig {
        batch_size: 2,
        num_workers: w,
        prefetch: 3,
        seed: 5,
        ..LoaderConfig::default()
    };
    let one = run(&source, cfg(1), 2);
    assert_eq!(one.len(), 4, "7 items in batches of 2");
    assert_eq!(one[3].items.len(), 1);
    assert!(one.iter().all(|b| b
        .samples
        .iter()
        .all(|s| s.image.spatial_shape() == [8, 8, 8])));
    same(&one, &run(&source, cfg(3), 2));
    same(&one, &run(&source, cfg(0), 2));
    let other_epoch = run(&source, cfg(3), 3);
    assert_ne!(
        one.iter().flat_map(|b| b.items.clone()).collect::<Vec<_>>(),
        other_epoch
            .iter()
            .flat_map(|b| b.items.clone())
            .collect::<Vec<_>>()
    );
    let dropped = run(
        &source,
        LoaderConfig {
            drop_last_batch: true,
            ..cfg(2)
        },
        2,
    );
    assert_eq!(dropped.len(), 3);
}

#[test]
fn shards_cover_the_epoch_and_agree_with_the_loader() {
    let dir = tempfile::tempdir().unwrap();
    let source = dataset(dir.path(), 5);
    let mut seen = Vec::new();
    for rank in 0..2 {
        let cfg = LoaderConfig {
            batch_size: 2,
            num_workers: 2,
            seed: 1,
            shard: Shard {
                rank,
                world_size: 2,
                drop_last: false,
            },
            ..LoaderConfig::default()
        };
        let loader = Loader::new(source.clone(), &[], cfg).unwrap();
        let items: Vec<usize> = loader
            .epoch(0)
            .unwrap()
            .flat_map(|b| b.unwrap().items)
            .collect();
        assert_eq!(items, loader.epoch_items(0));
        assert_eq!(items.len(), 3, "ceil(5 / 2)");
        seen.extend(items);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, vec![0, 1, 2, 3, 4]);
}

#[test]
fn sharding_covers_every_item_once_or_pads() {
    for (n, w) in [(10, 3), (9, 3), (7, 4), (2, 4), (1, 1)] {
        for drop_last in [false, true] {
            let mut all = Vec::new();
            let mut lens = Vec::new();
            for rank in 0..w {
                let s = shard_indices(
                    n,
                    true,
                    9,
                    4,
                    &Shard {
                        rank,
                        world_size: w,
                        drop_last,
                    },
                )
                .unwrap();
                lens.push(s.len());
                all.extend(s);
            }
            assert!(
                lens.iter().all(|&l| l == lens[0]),
                "equal shard sizes {lens:?}"
            );
            let mut uniq = all.clone();
            uniq.sort_unstable();
            uniq.dedup();
            if drop_last {
                assert_eq!(all.len(), n / w * w);
                assert_eq!(uniq.len(), all.len(), "no repeats");
            } else {
                assert_eq!(all.len(), n.div_ceil(w) * w);
                assert_eq!(uniq, (0..n).collect::<Vec<_>>(), "every item at least once");
                assert!(all.len() - n < w, "padding is less than one item per rank");
            }
        }
    }
    assert!(shard_indices(
        5,
        true,
        0,
        0,
        &Shard {
            rank: 2,
            world_size: 2,
            drop_last: false
        }
    )
    .is_err());
    let a = shard_indices(20, true, 1, 0, &Shard::default()).unwrap();
    assert_ne!(
        a,
        shard_indices(20, true, 1, 1, &Shard::default()).unwrap(),
        "reshuffled per epoch"
    );
    assert_eq!(
        shard_indices(4, false, 1, 0, &Shard::default()).unwrap(),
        vec![0, 1, 2, 3]
    );
}

#[test]
fn item_rngs_depend_only_on_seed_epoch_and_item() {
    let a: u64 = item_rng(1, 2, 3).random();
    assert_eq!(a, item_rng(1, 2, 3).random::<u64>());
    assert_ne!(a, item_rng(1, 3, 3).random::<u64>());
    assert_ne!(a, item_rng(1, 2, 4).random::<u64>());
}

#[test]
fn deterministic_part_is_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let source = dataset(&dir.path().join("ds"), 3);
    let cache = dir.path().join("cache");
    let cfg = LoaderConfig {
        num_workers: 2,
        seed: 3,
        cache_dir: Some(cache.clone()),
        ..LoaderConfig::default()
    };
    let plain = run(
        &source,
        LoaderConfig {
            cache_dir: None,
            ..cfg.clone()
        },
        0,
    );
    let cold = run(&source, cfg.clone(), 0);
    same(&plain, &cold);
    let metas = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "json")
        })
        .count();
    assert_eq!(metas, 3, "one entry per volume");
    same(&plain, &run(&source, cfg, 0));
    // The key covers the deterministic transforms and the file identity.
    let det = &transforms()[..2];
    let id = source.identity(0).unwrap();
    let key = DiskCache::key(&id, det);
    assert!(DiskCache::new(&cache).get(&key).unwrap().is_some());
    assert_ne!(key, DiskCache::key(&id, &transforms()[..1]));
    assert_ne!(key, DiskCache::key(&source.identity(1).unwrap(), det));
}

#[test]
fn errors_are_reported_per_batch_and_config_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut source = dataset(dir.path(), 2);
    assert!(Loader::new(CaseSource(vec![]), &[], LoaderConfig::default()).is_err());
    assert!(Loader::new(
        source.clone(),
        &[],
        LoaderConfig {
            batch_size: 0,
            ..LoaderConfig::default()
        }
    )
    .is_err());
    let bad_shard = LoaderConfig {
        shard: Shard {
            rank: 1,
            world_size: 1,
            drop_last: false,
        },
        ..LoaderConfig::default()
    };
    assert!(Loader::new(source.clone(), &[], bad_shard)
        .unwrap_err()
        .to_string()
        .contains("rank"));
    source.0[1].images[0] = dir.path().join("gone.nii.gz");
    let loader = Loader::new(
        source,
        &[],
        LoaderConfig {
            shuffle: false,
            num_workers: 2,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let out: Vec<_> = loader.epoch(0).unwrap().collect();
    assert!(out[0].is_ok());
    let e = out[1].as_ref().unwrap_err().to_string();
    assert!(e.contains("gone.nii.gz"), "{e}");
}

#[test]
fn a_corrupt_cache_entry_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let source = dataset(&dir.path().join("ds"), 1);
    let cache = dir.path().join("cache");
    let cfg = LoaderConfig {
        num_workers: 1,
        cache_dir: Some(cache.clone()),
        ..LoaderConfig::default()
    };
    let first = run(&source, cfg.clone(), 0);
    let key = DiskCache::key(&source.identity(0).unwrap(), &transforms()[..2]);
    std::fs::write(cache.join(format!("{key}_0_image.npy")), b"garbage").unwrap();
    assert!(DiskCache::new(&cache).get(&key).unwrap().is_none());
    same(&first, &run(&source, cfg, 0));
}
