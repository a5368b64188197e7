//! `model.json`: the card that travels with every checkpoint and ONNX export (architecture, preprocessing, labels,
//! inference defaults), so the exporter and the server need no other configuration.

use crate::transforms::TransformSpec;
use serde::{Deserialize, Serialize};

use crate::model::{ModelConfig, SpecError, MAX_SIZE};

/// How logits become a label map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputActivation {
    /// Mutually exclusive classes: softmax, argmax (class 0 = background).
    #[default]
    Softmax,
    /// Overlapping channels (BraTS TC/WT/ET): sigmoid, threshold 0.5 per channel.
    Sigmoid,
}

/// How overlapping sliding-window outputs are weighted (MONAI `BlendMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BlendMode {
    /// Every voxel of every window has weight 1 (MONAI's default).
    #[default]
    Constant,
    /// Separable Gaussian weights centred on the window.
    Gaussian,
}

/// Sliding-window defaults for inference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSpec {
    /// Window size per spatial axis (the model's input size).
    pub roi_size: Vec<usize>,
    /// Fractional overlap of windows.
    #[serde(default = "default_overlap")]
    pub overlap: f64,
    /// Window blending (medmae's default for trained models is Gaussian).
    #[serde(default = "default_blend")]
    pub blend: BlendMode,
    /// Windows per forward call.
    #[serde(default = "default_sw_batch")]
    pub sw_batch_size: usize,
    /// Logit activation.
    #[serde(default)]
    pub activation: OutputActivation,
}

impl InferenceSpec {
    /// Windows of `roi_size` with `activation` and the defaults a `model.json` gets when it leaves them out:
    /// overlap 0.5, Gaussian blending, 4 windows per call.
    pub fn new(roi_size: Vec<usize>, activation: OutputActivation) -> Self {
        InferenceSpec {
            roi_size,
            overlap: default_overlap(),
            blend: default_blend(),
            sw_batch_size: default_sw_batch(),
            activation,
        }
    }

    /// Check the values serde cannot: a positive roi, overlap in [0, 1), at least one window per call.
    /// `prefix` is the dotted path of this spec in its parent (e.g. `inference`).
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        let e = |name: &str, msg: String| SpecError {
            field: format!("{prefix}.{name}"),
            msg,
        };
        if !(2..=3).contains(&self.roi_size.len())
            || self.roi_size.iter().any(|&r| r == 0 || r > MAX_SIZE)
        {
            return Err(e(
                "roi_size",
                format!(
                    "expected 2 or 3 sizes in 1..={MAX_SIZE}, got {:?}",
                    self.roi_size
                ),
            ));
        }
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(e(
                "overlap",
                format!("must be in [0, 1), got {}", self.overlap),
            ));
        }
        if self.sw_batch_size == 0 {
            return Err(e("sw_batch_size", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// Deserialize JSON `text`, naming the dotted path of a value that does not fit (`what` when the text as a whole
/// is not JSON).
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
    what: &str,
) -> Result<T, SpecError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let path = err.path().to_string();
        SpecError {
            field: if matches!(path.as_str(), "." | "?" | "") {
                what.into()
            } else {
                path
            },
            msg: err.into_inner().to_string(),
        }
    })
}

fn default_overlap() -> f64 {
    0.5
}
fn default_blend() -> BlendMode {
    BlendMode::Gaussian
}
fn default_sw_batch() -> usize {
    4
}

/// The contents of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Format version of this card.
    pub format_version: u32,
    /// medmae version that wrote it.
    pub medmae_version: String,
    /// Architecture.
    pub model: ModelConfig,
    /// Deterministic preprocessing applied to every input (training and serving).
    pub preprocessing: Vec<TransformSpec>,
    /// Label names, index = output channel (segmentation models).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Sliding-window defaults (segmentation models).
    #[serde(default)]
    pub inference: Option<InferenceSpec>,
}

/// Current card format version.
pub const CARD_FORMAT_VERSION: u32 = 1;

impl ModelCard {
    /// A card for a model with this crate's version.
    pub fn new(
        model: ModelConfig,
        preprocessing: Vec<TransformSpec>,
        labels: Vec<String>,
        inference: Option<InferenceSpec>,
    ) -> Self {
        Self {
            format_version: CARD_FORMAT_VERSION,
            medmae_version: env!("CARGO_PKG_VERSION").into(),
            model,
            preprocessing,
            labels,
            inference,
        }
    }

    /// Check the card as a whole: model config, no random transform in the preprocessing, labels vs outputs.
    pub fn validate(&self) -> Result<(), SpecError> {
        let e = |field: &str, msg: String| SpecError {
            field: field.into(),
            msg,
        };
        if self.format_version != CARD_FORMAT_VERSION {
            return Err(e(
                "format_version",
                format!(
                    "expected {CARD_FORMAT_VERSION}, got {}",
                    self.format_version
                ),
            ));
        }
        self.model.validate()?;
        if let Some(t) = self.preprocessing.iter().find(|t| t.is_random()) {
            return Err(e(
                "preprocessing",
                format!(
                    "{} is a random transform; preprocessing must be deterministic",
                    t.name()
                ),
            ));
        }
        if let ModelConfig::Unetr(u) = &self.model {
            if !self.labels.is_empty() && self.labels.len() != u.out_channels {
                return Err(e(
                    "labels",
                    format!(
                        "{} names for {} output channels",
                        self.labels.len(),
                        u.out_channels
                    ),
                ));
            }
            let inf = self.inference.as_ref().ok_or_else(|| {
                e(
                    "inference",
                    "segmentation models need sliding-window defaults".into(),
                )
            })?;
            inf.validate("inference")?;
            if inf.roi_size != u.encoder.img_size {
                return Err(e(
                    "inference.roi_size",
                    format!(
                        "{:?} differs from the model input size {:?}",
                        inf.roi_size, u.encoder.img_size
                    ),
                ));
            }
        } else if self.inference.is_some() {
            return Err(e(
                "inference",
                "only segmentation (UNETR) models have sliding-window defaults".into(),
            ));
        }
        Ok(())
    }

    /// Parse and validate `model.json` text; a value that does not parse is named by its dotted path
    /// (e.g. `inference.blend: unknown variant `linear``).
    pub fn from_json(text: &str) -> Result<Self, SpecError> {
        let card: ModelCard = parse_json(text, "model.json")?;
        card.validate()?;
        Ok(card)
    }
}
