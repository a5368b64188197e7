//! Text targets: Decathlon `dataset.json`, the training YAML experiment config (`medmae-config`, the crate the trainer
//! uses, with `--set` overrides taken from leading `#set key=value` lines), and `model.json` (`spec::ModelCard`, plus the
//! weight-name contract derived from an accepted card).

use std::path::Path;

use super::{seed_bytes, Env, Target};
use crate::mutate::Hints;
use config::{apply_override, parse_text, ExperimentConfig};

fn utf8(input: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(input).map_err(|e| format!("not UTF-8: {e}"))
}

const JSON_DICT: &[&str] = &[
    "\"training\": [",
    "\"test\": [",
    "\"validation\": [",
    "\"image\": ",
    "\"label\": ",
    "\"labels\": {",
    "\"modality\": {",
    "\"numTraining\": ",
    "\"name\": ",
    "\"0\": \"background\"",
    "\"-1\": \"x\"",
    "\"4294967296\": \"x\"",
    "null",
    "true",
    "[]",
    "{}",
    "[[",
    "]]",
    "\"../../etc/passwd\"",
    "\"/abs/path.nii.gz\"",
    "\"\"",
    ",",
    ":",
    "1e999",
    "-0",
    "\"image\": [\"a.nii.gz\", \"b.nii.gz\"]",
    "\"\\u0000\"",
    "\"\\ud800\"",
];

/// `imaging::datasets::decathlon::parse` on the text, then the derived channel and class counts.
pub struct DatasetJson {
    seeds: Vec<Vec<u8>>,
}

impl DatasetJson {
    /// Seeds: `seeds/dataset_json/*.json`.
    pub fn new(env: &Env) -> Result<Self, String> {
        Ok(Self {
            seeds: seed_bytes(env, "dataset_json", &[".json"])?,
        })
    }
}

impl Target for DatasetJson {
    fn name(&self) -> &'static str {
        "dataset_json"
    }
    fn hints(&self) -> Hints {
        Hints {
            dict: JSON_DICT,
            text: true,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let text = utf8(input)?;
        let ds = imaging::datasets::decathlon::parse(
            text,
            Path::new("/fuzz/dataset.json"),
            Path::new("/fuzz"),
        )
        .map_err(|e| e.to_string())?;
        let _ = (ds.channels(), ds.num_classes());
        let n = ds
            .datalist
            .section("training")
            .map(|s| s.len())
            .unwrap_or(0);
        if n >= 2 {
            imaging::datasets::kfold(n, n.min(5), 0).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

const YAML_DICT: &[&str] = &[
    "#set schedule.epochs=2",
    "#set model.kind=mae",
    "#set optim.base_lr=-1",
    "#set data.batch_size=0",
    "#set model.encoder.img_size=[8, 8, 8]",
    "#set a..b=1",
    "#set =",
    "#set data.train_transforms=[]",
    "kind: mae",
    "kind: unetr",
    "spatial_dims: 2",
    "spatial_dims: 3",
    "img_size: [0, 0, 0]",
    "patch_size: [3, 3, 3]",
    "hidden_size: 0",
    "num_heads: 7",
    "num_layers: 0",
    "mask_ratio: 1.0",
    "epochs: 0",
    "warmup_epochs: 99",
    "batch_size: 0",
    "accum_steps: 0",
    "device: cuda:x",
    "device: cuda:99999999999999999999",
    "- name: RandSpatialCrop",
    "- name: Spacing\n  pixdim: [0, 0, 0]",
    "roi_size: [-1, 16, 16]",
    "num_samples: 0",
    "overlap: 1.5",
    "~",
    "&a [1]",
    "*a",
    "!!binary AAAA",
    "? [1, 2]\n: 3",
    "{",
    "[",
    "'",
    "\"",
    ":",
    "- ",
    "<<: *a",
    "seed: -1",
    "threads: 999999",
];

/// The training `ExperimentConfig` (`medmae-config`): YAML → optional `--set` override → typed parse → validation.
pub struct YamlConfig {
    seeds: Vec<Vec<u8>>,
}

impl YamlConfig {
    /// Seeds: `seeds/yaml_config/*.yaml` (copies of `configs/`, some with a leading `#set` line).
    pub fn new(env: &Env) -> Result<Self, String> {
        Ok(Self {
            seeds: seed_bytes(env, "yaml_config", &[".yaml", ".yml"])?,
        })
    }
}

impl Target for YamlConfig {
    fn name(&self) -> &'static str {
        "yaml_config"
    }
    fn hints(&self) -> Hints {
        Hints {
            dict: YAML_DICT,
            text: true,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let text = utf8(input)?;
        let mut value = parse_text(text, Path::new("<input>")).map_err(|e| e.to_string())?;
        for line in text.lines().take(4) {
            if let Some(o) = line.strip_prefix("#set ") {
                apply_override(&mut value, o).map_err(|e| e.to_string())?;
            }
        }
        let cfg = ExperimentConfig::from_value(value).map_err(|e| e.to_string())?;
        let _ = (
            cfg.samples_per_item(),
            cfg.effective_batch(),
            cfg.cache_dir(),
        );
        Ok(())
    }
}

/// `spec::ModelCard::from_json`, then `spec::expected_weights` of the accepted architecture.
pub struct ModelJson {
    seeds: Vec<Vec<u8>>,
}

impl ModelJson {
    /// Seeds: `seeds/model_json/*.json` (exported cards).
    pub fn new(env: &Env) -> Result<Self, String> {
        Ok(Self {
            seeds: seed_bytes(env, "model_json", &[".json"])?,
        })
    }
}

const CARD_DICT: &[&str] = &[
    "\"kind\": \"mae\"",
    "\"kind\": \"unetr\"",
    "\"spatial_dims\": 2",
    "\"spatial_dims\": 4",
    "\"img_size\": [0, 0]",
    "\"patch_size\": [0, 16, 16]",
    "\"hidden_size\": 0",
    "\"num_heads\": 0",
    "\"mlp_ratio\": -1",
    "\"mask_ratio\": 1",
    "\"feature_size\": 0",
    "\"in_channels\": 0",
    "\"out_channels\": 0",
    "\"labels\": []",
    "\"preprocessing\": [",
    "{\"name\": \"Spacing\", \"pixdim\": [0, 0, 0]}",
    "{\"name\": \"Nope\"}",
    "\"inference\": null",
    "\"overlap\": 1",
    "\"sw_batch_size\": 0",
    "\"roi_size\": [1, 1]",
    "\"format_version\": 999",
    "null",
    "[]",
    "{}",
    "1e999",
    "-1",
];

impl Target for ModelJson {
    fn name(&self) -> &'static str {
        "model_json"
    }
    fn hints(&self) -> Hints {
        Hints {
            dict: CARD_DICT,
            text: true,
            ..Hints::default()
        }
    }
    fn seeds(&self) -> &[Vec<u8>] {
        &self.seeds
    }
    fn run(&mut self, input: &[u8]) -> Result<(), String> {
        let card = spec::ModelCard::from_json(utf8(input)?).map_err(|e| e.to_string())?;
        let w = spec::expected_weights(&card.model);
        assert!(!w.is_empty(), "a valid card implies weights");
        Ok(())
    }
}
