//! Experiment config: every shipped config parses and validates; overrides; unknown keys and out-of-range values are
//! errors naming the key path.

use std::path::{Path, PathBuf};

use config::ExperimentConfig;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn load(name: &str, sets: &[&str]) -> config::Result<ExperimentConfig> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    ExperimentConfig::load(&configs_dir().join(name), &sets)
}

fn err(name: &str, sets: &[&str]) -> String {
    load(name, sets)
        .expect_err("expected a config error")
        .to_string()
}

#[test]
fn every_shipped_config_is_valid() {
    let mut n = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let cfg =
                ExperimentConfig::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(cfg.peak_lr() > 0.0);
            n += 1;
        }
    }
    assert_eq!(
        n, 11,
        "btcv/brats × mae/unetr (3-D), btcv 2-D × 2, four demo configs, the real-data KmeansTest config"
    );
}

#[test]
fn recipe_values_are_as_documented() {
    let c = load("btcv_unetr3d.yaml", &[]).unwrap();
    let spec::ModelConfig::Unetr(u) = &c.model else {
        panic!("unetr")
    };
    assert_eq!(
        (
            u.encoder.embed_dim,
            u.encoder.depth,
            u.encoder.num_heads,
            u.out_channels
        ),
        (768, 12, 12, 14)
    );
    assert_eq!(u.encoder.img_size, vec![96, 96, 96]);
    assert_eq!(c.data.labels.len(), 14);
    assert_eq!(c.effective_batch(), 4, "1 volume × 4 crops");
    assert!((c.peak_lr() - 1e-4).abs() < 1e-12);
    let m = load("btcv_mae3d.yaml", &[]).unwrap();
    let spec::ModelConfig::Mae(m) = &m.model else {
        panic!("mae")
    };
    assert_eq!(
        (m.decoder_embed_dim, m.decoder_depth, m.decoder_num_heads),
        (384, 8, 12)
    );
    let b = load("brats_unetr3d.yaml", &[]).unwrap();
    assert_eq!(b.data.activation, spec::OutputActivation::Sigmoid);
    assert_eq!(b.model.encoder().in_channels, 4);
    assert_eq!(b.model.encoder().img_size, vec![128, 128, 128]);
}

#[test]
fn overrides_use_yaml_values_and_nested_paths() {
    let c = load(
        "demo_unetr3d.yaml",
        &[
            "optim.base_lr=1e-3",
            "schedule.epochs=3",
            "model.encoder.depth=6",
            "optim.betas=[0.8, 0.9]",
            "data.train_transforms.2.prob=0.25",
            "init=/tmp/x",
        ],
    )
    .unwrap();
    assert_eq!(c.optim.base_lr, 1e-3);
    assert_eq!(c.schedule.epochs, 3);
    assert_eq!(c.model.encoder().depth, 6);
    assert_eq!(c.optim.betas, [0.8, 0.9]);
    assert!(
        matches!(c.data.train_transforms[2], spec::TransformSpec::RandFlip { prob, .. } if prob == 0.25)
    );
    assert_eq!(c.init.as_deref(), Some(Path::new("/tmp/x")));
}

#[test]
fn unknown_keys_name_their_full_path() {
    let e = err("demo_mae3d.yaml", &["optim.base_lrr=1"]);
    assert!(
        e.contains("`optim.base_lrr`") && e.contains("unknown field"),
        "{e}"
    );
    let e = err("demo_mae3d.yaml", &["model.encoder.dept=3"]);
    assert!(e.contains("`model.encoder.dept`"), "{e}");
    let e = err(
        "demo_unetr3d.yaml",
        &["data.train_transforms.1.mode=bilinear"],
    );
    assert!(e.contains("`data.train_transforms.1.mode`"), "{e}");
    let e = err("demo_unetr3d.yaml", &["logging.colour=true"]);
    assert!(e.contains("`logging.colour`"), "{e}");
    let e = err("demo_unetr3d.yaml", &["schedule={warmup_epochs: 1}"]);
    assert!(
        e.contains("`schedule.epochs`") && e.contains("missing"),
        "{e}"
    );
    let e = err("demo_unetr3d.yaml", &["optim.base_lr=fast"]);
    assert!(e.contains("`optim.base_lr`"), "{e}");
}

#[test]
fn out_of_range_values_are_rejected_by_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("optim.betas=[0.9, 1.5]", "optim.betas.1", "[0, 1)"),
        ("optim.base_lr=-1", "optim.base_lr", "positive"),
        ("optim.layer_decay=1.5", "optim.layer_decay", "(0, 1]"),
        ("optim.accum_steps=0", "optim.accum_steps", "at least 1"),
        (
            "schedule.warmup_epochs=100",
            "schedule.warmup_epochs",
            "[0, epochs",
        ),
        ("data.batch_size=0", "data.batch_size", "at least 1"),
        ("validation.overlap=1.0", "validation.overlap", "[0, 1)"),
        ("validation.blend=linear", "validation.blend", "gaussian"),
        ("device=gpu", "device", "cuda:N"),
        ("data.labels=[a, b]", "data.labels", "out_channels = 3"),
        (
            "model.encoder.img_size=[40, 32, 32]",
            "model.encoder.img_size",
            "not divisible",
        ),
        (
            "model.encoder.img_size=[48, 48, 48]",
            "data.train_transforms.1.spatial_size",
            "model input size",
        ),
        (
            "model.skip_layers=[0, 1, 4]",
            "model.skip_layers",
            "below depth 4",
        ),
        (
            "data.val_transforms=[{name: RandFlip, spatial_axis: 0}]",
            "data.val_transforms.0",
            "deterministic",
        ),
    ];
    for (set, key, msg) in cases {
        let e = err("demo_unetr3d.yaml", &[set]);
        assert!(
            e.contains(&format!("`{key}`")) && e.contains(msg),
            "{set}: {e}"
        );
    }
    let e = err("demo_mae3d.yaml", &["model.encoder.embed_dim=100"]);
    assert!(
        e.contains("`model.encoder.embed_dim`") && e.contains("divisible by 6"),
        "{e}"
    );
    let e = err(
        "demo_mae3d.yaml",
        &["model.encoder.patch_size=[16, 16, 12]"],
    );
    assert!(
        e.contains("`model.encoder.img_size`") && e.contains("patch size 12"),
        "{e}"
    );
}

#[test]
fn file_and_override_syntax_errors() {
    let e = ExperimentConfig::load(Path::new("/nonexistent/x.yaml"), &[])
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.yaml"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "seed: [1,\n").unwrap();
    let e = ExperimentConfig::load(&p, &[]).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("YAML"), "{e}");
    assert!(err("demo_mae3d.yaml", &["optim.base_lr"]).contains("a.b.c=value"));
    assert!(err("demo_mae3d.yaml", &["data.train_transforms.9.prob=1"]).contains("past the end"));
}

fn training_configs() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(configs_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn the_dataset_path_override_works_on_every_training_config() {
    let configs = training_configs();
    assert_eq!(configs.len(), 11);
    for p in configs {
        let cfg = ExperimentConfig::load(&p, &["data.dataset.path=/x".into()])
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(cfg.data.dataset.path, Path::new("/x"), "{}", p.display());
    }
    let c = load("demo_unetr3d.yaml", &["data.dataset.path=/x"]).unwrap();
    assert_eq!(c.data.dataset.kind, config::DatasetKind::Decathlon);
    assert!(
        c.data.dataset.synthetic.is_some(),
        "the phantoms are generated at the new path"
    );
}

#[test]
fn transforms_are_selected_by_name() {
    let c = load(
        "kmeans_unetr3d.yaml",
        &[
            "data.train_transforms.Spacing.pixdim=[2, 2, 5]",
            "data.val_transforms.Spacing.pixdim=[2, 2, 5]",
            "data.train_transforms.RandCropByPosNegLabel.num_samples=2",
        ],
    )
    .unwrap();
    for list in [&c.data.train_transforms, &c.data.val_transforms] {
        let pix: Vec<&Vec<f64>> = list
            .iter()
            .filter_map(|t| match t {
                spec::TransformSpec::Spacing { pixdim } => Some(pixdim),
                _ => None,
            })
            .collect();
        assert_eq!(pix, [&vec![2.0, 2.0, 5.0]]);
    }
    assert_eq!(c.samples_per_item(), 2);
    // A name that several transforms share, or none has, is an error naming the key and the candidates.
    let e = err(
        "btcv_unetr3d.yaml",
        &["data.train_transforms.RandFlip.prob=0.5"],
    );
    assert!(
        e.contains("`data.train_transforms.RandFlip`")
            && e.contains("3 elements")
            && e.contains(
                "data.train_transforms.6, data.train_transforms.7, data.train_transforms.8"
            ),
        "{e}"
    );
    let e = err(
        "demo_unetr3d.yaml",
        &["data.train_transforms.Spacing.pixdim=[2, 2, 2]"],
    );
    assert!(
        e.contains("`data.train_transforms.Spacing`")
            && e.contains("names: ScaleIntensityRange, RandCropByPosNegLabel, RandFlip"),
        "{e}"
    );
    // A misspelt field below a name is still reported at its index.
    let e = err(
        "demo_unetr3d.yaml",
        &["data.train_transforms.RandFlip.prb=1"],
    );
    assert!(e.contains("`data.train_transforms.2.prb`"), "{e}");
}

#[test]
fn dataset_selection_errors_name_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("data.dataset.dir=/x", "data.dataset.dir", "unknown field"),
        (
            "data.dataset.kind=nifti",
            "data.dataset.kind",
            "unknown variant",
        ),
        (
            "data.dataset.synthetic.num_training=0",
            "data.dataset.synthetic.num_training",
            "at least 1",
        ),
        (
            "data.dataset.synthetic.phantom.channels=2",
            "data.dataset.synthetic.phantom.channels",
            "in_channels = 1",
        ),
        (
            "data.dataset.synthetic.phantom.shape=[48, 0, 48]",
            "data.dataset.synthetic.phantom.shape",
            ">= 1",
        ),
        (
            "data.dataset.synthetic.name=../up",
            "data.dataset.synthetic.name",
            "plain file-name",
        ),
        ("data.dataset.kind=btcv", "data.dataset.kind", "MSD folder"),
    ];
    for (set, key, msg) in cases {
        let e = err("demo_unetr3d.yaml", &[set]);
        assert!(
            e.contains(&format!("`{key}`")) && e.contains(msg),
            "{set}: {e}"
        );
    }
}

#[test]
fn a_run_saves_its_config_and_checkpoints_find_it() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cfg = load("demo_unetr3d.yaml", &["schedule.epochs=3"]).unwrap();
    let saved = cfg.save(&run).unwrap();
    assert_eq!(saved, run.join(config::SAVED_CONFIG));
    let best = run.join("checkpoints").join("best");
    std::fs::create_dir_all(&best).unwrap();
    let found = config::saved_config_for_checkpoint(&best).unwrap();
    assert_eq!(found, std::fs::canonicalize(&saved).unwrap());
    assert_eq!(ExperimentConfig::load(&found, &[]).unwrap(), cfg);
    // A checkpoint outside a run folder, or a missing one, is an error naming what was looked for.
    let lone = dir.path().join("a").join("b").join("ckpt");
    std::fs::create_dir_all(&lone).unwrap();
    let e = config::saved_config_for_checkpoint(&lone)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("config.yaml") && e.contains("--config") && e.contains("ckpt"),
        "{e}"
    );
    let e = config::saved_config_for_checkpoint(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
}
