//! Dataset selection: the one schema (`data.dataset`) by which `prepare` configs and training configs name their
//! dataset — its format (`kind`), its `path`, and optionally the synthetic phantom dataset to generate at that path
//! when it has no `dataset.json` yet (demos and tests). `imaging` reads and generates the datasets described here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// How the dataset at [`DatasetSource::path`] is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// A Medical Segmentation Decathlon folder (with `dataset.json`) or a decathlon-style JSON datalist
    /// (training/validation/test lists; relative paths resolved against the JSON's folder).
    #[default]
    Decathlon,
    /// A BTCV root (`imagesTr/`+`labelsTr/` or `Training/img`+`Training/label`), split as in TransUNet (18/12).
    Btcv,
    /// MSD Task01_BrainTumour (4 MRI channels, labels 0–3): its folder or `dataset.json`.
    Brats,
}

/// Which dataset a config uses (`data.dataset` of training and `prepare` configs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSource {
    /// How `path` is read (default `decathlon`).
    #[serde(default)]
    pub kind: DatasetKind,
    /// The dataset folder, or for `decathlon`/`brats` also a `dataset.json`-style file. Relative paths are relative
    /// to the working directory.
    pub path: PathBuf,
    /// Generate these phantoms as an MSD folder at `path` first when it has no `dataset.json` (reused afterwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticDatasetConfig>,
}

impl DatasetSource {
    /// The `dataset.json` a synthetic dataset is written to: `path` itself when it names a `.json` file, else
    /// `path/dataset.json`.
    pub fn dataset_json(&self) -> PathBuf {
        if self.path.extension().is_some_and(|e| e == "json") {
            self.path.clone()
        } else {
            self.path.join("dataset.json")
        }
    }

    /// The folder a synthetic dataset is written to (the folder of [`DatasetSource::dataset_json`]).
    pub fn dataset_dir(&self) -> PathBuf {
        self.dataset_json()
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    /// Check the source; errors name the field below `prefix` (e.g. `data.dataset.synthetic.num_training`).
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        if self.path.as_os_str().is_empty() {
            return Err(err(&format!("{prefix}.path"), "must not be empty"));
        }
        if let Some(s) = &self.synthetic {
            if self.kind == DatasetKind::Btcv {
                return Err(err(
                    &format!("{prefix}.kind"),
                    "synthetic data is written as an MSD folder: use `decathlon` (or `brats` for brats phantoms)",
                ));
            }
            let json = self.dataset_json();
            if json.file_name().is_some_and(|n| n != "dataset.json") {
                return Err(err(
                    &format!("{prefix}.path"),
                    format!(
                        "synthetic data is written as <folder>/dataset.json; got {}",
                        self.path.display()
                    ),
                ));
            }
            s.validate(&format!("{prefix}.synthetic"))?;
        }
        Ok(())
    }
}

fn err(field: &str, msg: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        msg: msg.into(),
    }
}

fn unit_spacing() -> [f64; 3] {
    [1.0, 1.0, 1.0]
}
fn one() -> usize {
    1
}
fn default_noise() -> f32 {
    0.05
}
/// Default ellipsoid radii as fractions [min, max] of each axis's extent.
pub fn default_radius() -> [f64; 2] {
    [0.12, 0.22]
}

/// Label maps of synthetic datasets are written as uint8, so at most this many foreground classes.
pub const MAX_PHANTOM_CLASSES: usize = 255;

/// Parameters of an ellipsoid phantom (a 2-D one when `shape[2] == 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomConfig {
    /// Spatial shape (X, Y, Z); Z = 1 gives a 2-D image of ellipses.
    pub shape: [usize; 3],
    /// Voxel spacing in mm.
    #[serde(default = "unit_spacing")]
    pub spacing: [f64; 3],
    /// Foreground classes K: one ellipsoid each, labels 1..=K.
    pub num_classes: usize,
    /// Image channels ("modalities"), each with its own class contrasts.
    #[serde(default = "one")]
    pub channels: usize,
    /// Standard deviation of the additive Gaussian noise.
    #[serde(default = "default_noise")]
    pub noise_std: f32,
    /// Ellipsoid radii as fractions [min, max] of the extent of each axis.
    #[serde(default = "default_radius")]
    pub radius_fraction: [f64; 2],
    /// What tells the classes apart: their intensity (default) or their shape.
    #[serde(default)]
    pub classes_by: ClassCue,
}

/// What distinguishes the foreground classes of an ellipsoid phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassCue {
    /// Each class has its own intensity band; radii are drawn independently per axis.
    #[default]
    Intensity,
    /// Every class draws its intensity from the same band, and the classes differ only in elongation: class k's
    /// in-plane aspect ratio (long/short radius, in the plane of the first two axes) is k, with the in-plane area
    /// kept, so neither intensity nor size gives the class away — telling them apart needs the object's shape.
    Shape,
}

/// `prefix.name`, or `name` alone for an empty prefix.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn check_geometry(prefix: &str, shape: [usize; 3], spacing: [f64; 3]) -> Result<(), SpecError> {
    if shape.contains(&0) {
        return Err(err(
            &join(prefix, "shape"),
            format!("every axis must be >= 1, got {shape:?}"),
        ));
    }
    if spacing.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        return Err(err(
            &join(prefix, "spacing"),
            format!("must be positive, got {spacing:?}"),
        ));
    }
    Ok(())
}

fn check_noise(prefix: &str, noise_std: f32) -> Result<(), SpecError> {
    if noise_std >= 0.0 && noise_std.is_finite() {
        Ok(())
    } else {
        Err(err(
            &join(prefix, "noise_std"),
            format!("must be >= 0, got {noise_std}"),
        ))
    }
}

impl PhantomConfig {
    /// A phantom of `shape` and `spacing` with `num_classes` foreground classes in `channels` channels, and the
    /// defaults a config gets when it leaves them out: noise 0.05, the default radii, classes told apart by intensity.
    pub fn new(shape: [usize; 3], spacing: [f64; 3], num_classes: usize, channels: usize) -> Self {
        PhantomConfig {
            shape,
            spacing,
            num_classes,
            channels,
            noise_std: default_noise(),
            radius_fraction: default_radius(),
            classes_by: ClassCue::default(),
        }
    }
    /// This config with other ellipsoid radii (fractions [min, max] of each axis's extent).
    pub fn with_radius_fraction(mut self, radius_fraction: [f64; 2]) -> Self {
        self.radius_fraction = radius_fraction;
        self
    }
    /// Check the parameters; errors name the field below `prefix` (empty `prefix`: the bare field name).
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        let key = |name: &str| join(prefix, name);
        check_geometry(prefix, self.shape, self.spacing)?;
        if self.channels == 0 {
            return Err(err(&key("channels"), "must be >= 1"));
        }
        if self.num_classes > MAX_PHANTOM_CLASSES {
            return Err(err(
                &key("num_classes"),
                format!(
                    "at most {MAX_PHANTOM_CLASSES} (uint8 label maps), got {}",
                    self.num_classes
                ),
            ));
        }
        let [lo, hi] = self.radius_fraction;
        if !(lo > 0.0 && lo <= hi && hi <= 0.5) {
            return Err(err(
                &key("radius_fraction"),
                format!("need 0 < min <= max <= 0.5, got {:?}", self.radius_fraction),
            ));
        }
        check_noise(prefix, self.noise_std)
    }
}

/// Which phantom a synthetic dataset holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum PhantomKind {
    /// Ellipsoid phantoms.
    Ellipsoids(PhantomConfig),
    /// BraTS-like 4-channel phantoms, written with MSD Task01 label numbering (1 oedema, 2 non-enhancing, 3 enhancing).
    Brats {
        /// Spatial shape.
        shape: [usize; 3],
        /// Voxel spacing in mm.
        #[serde(default = "unit_spacing")]
        spacing: [f64; 3],
        /// Noise standard deviation.
        #[serde(default = "default_noise")]
        noise_std: f32,
    },
}

impl PhantomKind {
    /// Image channels of the phantoms.
    pub fn channels(&self) -> usize {
        match self {
            PhantomKind::Ellipsoids(p) => p.channels,
            PhantomKind::Brats { .. } => 4,
        }
    }
}

/// A synthetic MSD-style dataset: `num_training` labelled cases and `num_test` unlabelled ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticDatasetConfig {
    /// Dataset name (also the file-name prefix).
    pub name: String,
    /// The phantom generator.
    pub phantom: PhantomKind,
    /// Labelled cases written to `imagesTr/` + `labelsTr/`.
    pub num_training: usize,
    /// Unlabelled cases written to `imagesTs/`.
    #[serde(default)]
    pub num_test: usize,
    /// Base seed; case i uses a seed derived from (seed, i).
    #[serde(default)]
    pub seed: u64,
}

impl SyntheticDatasetConfig {
    /// Check the dataset; errors name the field below `prefix` (e.g. `data.dataset.synthetic`).
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        let key = |name: &str| join(prefix, name);
        let plain = !self.name.is_empty()
            && self.name != "."
            && self.name != ".."
            && !self.name.contains(['/', '\\', '\0']);
        if !plain {
            return Err(err(
                &key("name"),
                format!("must be a plain file-name prefix, got {:?}", self.name),
            ));
        }
        if self.num_training == 0 {
            return Err(err(&key("num_training"), "must be at least 1"));
        }
        match &self.phantom {
            PhantomKind::Ellipsoids(p) => p.validate(&key("phantom")),
            PhantomKind::Brats {
                shape,
                spacing,
                noise_std,
            } => {
                check_geometry(&key("phantom"), *shape, *spacing)?;
                check_noise(&key("phantom"), *noise_std)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> DatasetSource {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn kind_defaults_to_decathlon_and_json_paths_are_kept() {
        let s = source("path: data/x");
        assert_eq!(s.kind, DatasetKind::Decathlon);
        assert_eq!(s.dataset_json(), Path::new("data/x/dataset.json"));
        assert_eq!(s.dataset_dir(), Path::new("data/x"));
        let s = source("{kind: brats, path: d/list.json}");
        assert_eq!(s.kind, DatasetKind::Brats);
        assert_eq!(s.dataset_json(), Path::new("d/list.json"));
        assert_eq!(s.dataset_dir(), Path::new("d"));
        assert_eq!(source("path: dataset.json").dataset_dir(), Path::new("."));
        assert!(yaml_serde::from_str::<DatasetSource>("{dir: x}")
            .unwrap_err()
            .to_string()
            .contains("unknown field `dir`"));
    }

    #[test]
    fn validation_names_the_field() {
        let yaml = "path: d\nsynthetic:\n  name: p\n  phantom: {kind: ellipsoids, shape: [8, 8, 8], num_classes: 2}\n  num_training: 2\n";
        let good = source(yaml);
        good.validate("data.dataset").unwrap();
        let bad = |edit: &dyn Fn(&mut DatasetSource)| {
            let mut s = good.clone();
            edit(&mut s);
            s.validate("data.dataset").unwrap_err().field
        };
        let syn = |s: &mut DatasetSource| s.synthetic.as_mut().unwrap().clone();
        assert_eq!(
            bad(&|s| s.synthetic.as_mut().unwrap().num_training = 0),
            "data.dataset.synthetic.num_training"
        );
        assert_eq!(
            bad(&|s| s.synthetic.as_mut().unwrap().name = "../x".into()),
            "data.dataset.synthetic.name"
        );
        assert_eq!(bad(&|s| s.kind = DatasetKind::Btcv), "data.dataset.kind");
        assert_eq!(bad(&|s| s.path = PathBuf::new()), "data.dataset.path");
        assert_eq!(bad(&|s| s.path = "d/list.json".into()), "data.dataset.path");
        let with_phantom = |p: PhantomKind| {
            move |s: &mut DatasetSource| {
                let mut d = syn(s);
                d.phantom = p.clone();
                s.synthetic = Some(d);
            }
        };
        let PhantomKind::Ellipsoids(e) = &good.synthetic.as_ref().unwrap().phantom else {
            panic!("ellipsoids")
        };
        let mut zero = e.clone();
        zero.shape = [8, 0, 8];
        assert_eq!(
            bad(&with_phantom(PhantomKind::Ellipsoids(zero))),
            "data.dataset.synthetic.phantom.shape"
        );
        let mut many = e.clone();
        many.num_classes = 300;
        assert_eq!(
            bad(&with_phantom(PhantomKind::Ellipsoids(many))),
            "data.dataset.synthetic.phantom.num_classes"
        );
        let brats = PhantomKind::Brats {
            shape: [8, 8, 8],
            spacing: [1.0; 3],
            noise_std: -1.0,
        };
        assert_eq!(brats.channels(), 4);
        assert_eq!(
            bad(&with_phantom(brats)),
            "data.dataset.synthetic.phantom.noise_std"
        );
        assert!(e.validate("").is_ok());
    }

    #[test]
    fn bare_prefix_gives_bare_field_names() {
        let mut p = PhantomConfig {
            shape: [4, 4, 0],
            spacing: [1.0; 3],
            num_classes: 1,
            channels: 1,
            noise_std: 0.0,
            radius_fraction: default_radius(),
            classes_by: ClassCue::Intensity,
        };
        assert_eq!(p.validate("").unwrap_err().field, "shape");
        p.shape = [4, 4, 1];
        p.channels = 0;
        assert_eq!(p.validate("").unwrap_err().field, "channels");
    }
}
