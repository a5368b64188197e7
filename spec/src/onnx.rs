//! The ONNX contract: which graph an export holds ([`ExportKind`]) and the `medmae.*` `metadata_props` that let a
//! runtime serve the file with no other configuration. [`OnnxMetadata::from_card`] + [`OnnxMetadata::to_props`] is
//! the one writer (the exporter), [`OnnxMetadata::from_props`] the one reader (the exporter's check and the server);
//! the reader validates every value and refuses, naming the key, what it cannot use — it never defaults it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::card::{parse_json, InferenceSpec, ModelCard};
use crate::model::{ModelConfig, MAX_PATCHES, MAX_SIZE, MAX_WIDTH};
use crate::transforms::TransformSpec;

/// The metadata keys, in the order the writer emits them.
pub mod keys {
    /// Prefix of every medmae key; a file with none of them is a plain ONNX model.
    pub const PREFIX: &str = "medmae.";
    /// `unetr`, `mae-encoder` or `mae-reconstructor` ([`super::ExportKind`]).
    pub const KIND: &str = "medmae.kind";
    /// 2 or 3.
    pub const SPATIAL_DIMS: &str = "medmae.spatial_dims";
    /// JSON array: the model input size per spatial axis.
    pub const ROI_SIZE: &str = "medmae.roi_size";
    /// Input channels.
    pub const IN_CHANNELS: &str = "medmae.in_channels";
    /// Classes (unetr), token width (mae-encoder) or values per token (mae-reconstructor).
    pub const OUT_CHANNELS: &str = "medmae.out_channels";
    /// JSON array of label names, index = output channel.
    pub const LABELS: &str = "medmae.labels";
    /// JSON of the card's `Vec<TransformSpec>`.
    pub const PREPROCESSING: &str = "medmae.preprocessing";
    /// JSON of the card's `Option<InferenceSpec>` (`null` for models that do not segment).
    pub const INFERENCE: &str = "medmae.inference";
    /// The whole `model.json`.
    pub const CARD: &str = "medmae.card";
    /// Version of the medmae that wrote the file.
    pub const VERSION: &str = "medmae.version";
    /// Hex SHA-256 of the `model.safetensors` the weights came from.
    pub const CHECKPOINT_SHA256: &str = "medmae.checkpoint_sha256";
    /// Every key, in the writer's order.
    pub const ALL: [&str; 11] = [
        KIND,
        SPATIAL_DIMS,
        ROI_SIZE,
        IN_CHANNELS,
        OUT_CHANNELS,
        LABELS,
        PREPROCESSING,
        INFERENCE,
        CARD,
        VERSION,
        CHECKPOINT_SHA256,
    ];
}

/// Which graph an ONNX export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportKind {
    /// UNETR segmentation: `input` `[N, C, *roi]` → `logits` `[N, K, *roi]`.
    Unetr,
    /// MAE encoder: `input` → `features` `[N, L, E]` (final-normed patch tokens, no masking).
    MaeEncoder,
    /// MAE reconstructor: `input` + `mask` `[N, L]` (float, 1 = removed) → `pred` `[N, L, head_dim]`.
    MaeReconstructor,
}

/// An export kind spelled in none of the known ways.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown export kind {0:?} (expected unetr, mae-encoder or mae-reconstructor)")]
pub struct UnknownKind(pub String);

impl ExportKind {
    /// The CLI / metadata spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ExportKind::Unetr => "unetr",
            ExportKind::MaeEncoder => "mae-encoder",
            ExportKind::MaeReconstructor => "mae-reconstructor",
        }
    }

    /// Graph input names, in order.
    pub fn input_names(self) -> Vec<String> {
        match self {
            ExportKind::MaeReconstructor => vec!["input".into(), "mask".into()],
            _ => vec!["input".into()],
        }
    }

    /// Names of the main graph outputs (an encoder export may add `hidden_state_{i}` after them).
    pub fn output_names(self) -> Vec<String> {
        vec![match self {
            ExportKind::Unetr => "logits",
            ExportKind::MaeEncoder => "features",
            ExportKind::MaeReconstructor => "pred",
        }
        .into()]
    }

    /// True when a model of this architecture can be exported as this kind.
    pub fn fits(self, model: &ModelConfig) -> bool {
        matches!(
            (self, model),
            (ExportKind::Unetr, ModelConfig::Unetr(_))
                | (
                    ExportKind::MaeEncoder | ExportKind::MaeReconstructor,
                    ModelConfig::Mae(_)
                )
        )
    }

    /// Channels of the main output of this kind of export of `model` (see [`keys::OUT_CHANNELS`]).
    pub fn out_channels(self, model: &ModelConfig) -> usize {
        match (model, self) {
            (ModelConfig::Unetr(u), _) => u.out_channels,
            (ModelConfig::Mae(m), ExportKind::MaeReconstructor) => m.head_dim(),
            (ModelConfig::Mae(m), _) => m.encoder.embed_dim,
        }
    }
}

impl fmt::Display for ExportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportKind {
    type Err = UnknownKind;
    fn from_str(s: &str) -> Result<Self, UnknownKind> {
        match s {
            "unetr" => Ok(ExportKind::Unetr),
            "mae-encoder" => Ok(ExportKind::MaeEncoder),
            "mae-reconstructor" => Ok(ExportKind::MaeReconstructor),
            other => Err(UnknownKind(other.into())),
        }
    }
}

/// A `medmae.*` metadata entry that is missing, unknown, malformed or inconsistent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("metadata key `{key}`{}: {msg}", shown(.value))]
pub struct MetadataError {
    /// The key.
    pub key: String,
    /// Its value as stored (`None` when the key is missing).
    pub value: Option<String>,
    /// What is wrong and what was expected.
    pub msg: String,
}

/// How a value appears in an error: quoted, and cut after 160 characters (a card is long).
fn shown(value: &Option<String>) -> String {
    const MAX: usize = 160;
    match value {
        None => String::new(),
        Some(v) if v.chars().count() <= MAX => format!(" = {v:?}"),
        Some(v) => format!(" = {:?}…", v.chars().take(MAX).collect::<String>()),
    }
}

/// The medmae facts stored in an exported model, typed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxMetadata {
    /// Which graph the file holds.
    pub kind: ExportKind,
    /// 2 or 3.
    pub spatial_dims: usize,
    /// Model input size per spatial axis.
    pub roi_size: Vec<usize>,
    /// Input channels.
    pub in_channels: usize,
    /// Channels of the main output (see [`keys::OUT_CHANNELS`]).
    pub out_channels: usize,
    /// Label names (segmentation models; may be empty).
    pub labels: Vec<String>,
    /// Deterministic preprocessing to apply before inference.
    pub preprocessing: Vec<TransformSpec>,
    /// Sliding-window defaults: present exactly for `unetr` exports.
    pub inference: Option<InferenceSpec>,
    /// The model card the file was exported from (medmae exports always carry it; other tools may omit it).
    pub card: Option<ModelCard>,
    /// Version of the medmae that wrote the file, when recorded.
    pub version: Option<String>,
    /// SHA-256 of the source checkpoint, when exported from a file.
    pub checkpoint_sha256: Option<String>,
}

fn err(key: &str, value: Option<&str>, msg: impl Into<String>) -> MetadataError {
    MetadataError {
        key: key.into(),
        value: value.map(str::to_string),
        msg: msg.into(),
    }
}

fn to_json<T: Serialize>(key: &str, v: &T) -> Result<String, MetadataError> {
    serde_json::to_string(v).map_err(|e| err(key, None, format!("cannot serialise: {e}")))
}

/// The typed view of a `metadata_props` map: each key parsed once, errors naming the key and its value.
struct Props<'a>(&'a BTreeMap<String, String>);

impl Props<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn required(&self, key: &str) -> Result<&str, MetadataError> {
        self.raw(key).ok_or_else(|| err(key, None, "is missing"))
    }
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        text: &str,
    ) -> Result<T, MetadataError> {
        parse_json(text, key).map_err(|e| {
            let msg = if e.field == key {
                e.msg
            } else {
                format!("{}: {}", e.field, e.msg)
            };
            err(key, Some(text), msg)
        })
    }
    fn json<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T, MetadataError> {
        self.parse(key, self.required(key)?)
    }
    fn json_or_default<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &str,
    ) -> Result<T, MetadataError> {
        self.raw(key)
            .map_or_else(|| Ok(T::default()), |text| self.parse(key, text))
    }
}

impl OnnxMetadata {
    /// The writer's facts for a `kind` export of `card` (validated, and checked to fit `kind`), from the checkpoint
    /// whose `model.safetensors` hashes to `checkpoint_sha256`.
    pub fn from_card(
        card: &ModelCard,
        kind: ExportKind,
        checkpoint_sha256: Option<&str>,
    ) -> Result<Self, MetadataError> {
        card.validate()
            .map_err(|e| err(keys::CARD, None, e.to_string()))?;
        if !kind.fits(&card.model) {
            return Err(err(
                keys::KIND,
                Some(kind.as_str()),
                "does not fit the card's model",
            ));
        }
        let v = card.model.encoder();
        let meta = OnnxMetadata {
            kind,
            spatial_dims: v.spatial_dims,
            roi_size: v.img_size.clone(),
            in_channels: v.in_channels,
            out_channels: kind.out_channels(&card.model),
            labels: card.labels.clone(),
            preprocessing: card.preprocessing.clone(),
            inference: card.inference.clone(),
            card: Some(card.clone()),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            checkpoint_sha256: checkpoint_sha256.map(str::to_string),
        };
        meta.validate()?;
        Ok(meta)
    }

    /// The `metadata_props` entries, in the stable order of [`keys::ALL`] (absent optional facts are left out).
    pub fn to_props(&self) -> Result<Vec<(String, String)>, MetadataError> {
        let mut p = vec![
            (keys::KIND, self.kind.as_str().to_string()),
            (keys::SPATIAL_DIMS, self.spatial_dims.to_string()),
            (keys::ROI_SIZE, to_json(keys::ROI_SIZE, &self.roi_size)?),
            (keys::IN_CHANNELS, self.in_channels.to_string()),
            (keys::OUT_CHANNELS, self.out_channels.to_string()),
            (keys::LABELS, to_json(keys::LABELS, &self.labels)?),
            (
                keys::PREPROCESSING,
                to_json(keys::PREPROCESSING, &self.preprocessing)?,
            ),
            (keys::INFERENCE, to_json(keys::INFERENCE, &self.inference)?),
        ];
        if let Some(card) = &self.card {
            p.push((keys::CARD, to_json(keys::CARD, card)?));
        }
        if let Some(v) = &self.version {
            p.push((keys::VERSION, v.clone()));
        }
        if let Some(s) = &self.checkpoint_sha256 {
            p.push((keys::CHECKPOINT_SHA256, s.clone()));
        }
        Ok(p.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// Read and validate the medmae entries of a `metadata_props` map. `Ok(None)`: no `medmae.*` key at all (a plain
    /// ONNX model). Required: kind, spatial dims, roi, channels, and the inference spec of a `unetr` export; labels,
    /// preprocessing, card, version and hash may be absent (files written by other tools), never invalid.
    pub fn from_props(map: &BTreeMap<String, String>) -> Result<Option<Self>, MetadataError> {
        let mut medmae = map.keys().filter(|k| k.starts_with(keys::PREFIX));
        if medmae.clone().next().is_none() {
            return Ok(None);
        }
        if let Some(k) = medmae.find(|k| !keys::ALL.contains(&k.as_str())) {
            return Err(err(
                k,
                map.get(k).map(String::as_str),
                format!("is not a medmae key (known: {})", keys::ALL.join(", ")),
            ));
        }
        let p = Props(map);
        let kind_text = p.required(keys::KIND)?;
        let kind = kind_text
            .parse()
            .map_err(|e: UnknownKind| err(keys::KIND, Some(kind_text), e.to_string()))?;
        let mut meta = OnnxMetadata {
            kind,
            spatial_dims: p.json(keys::SPATIAL_DIMS)?,
            roi_size: p.json(keys::ROI_SIZE)?,
            in_channels: p.json(keys::IN_CHANNELS)?,
            out_channels: p.json(keys::OUT_CHANNELS)?,
            labels: p.json_or_default(keys::LABELS)?,
            preprocessing: p.json_or_default(keys::PREPROCESSING)?,
            inference: p.json_or_default(keys::INFERENCE)?,
            card: None,
            version: p.raw(keys::VERSION).map(str::to_string),
            checkpoint_sha256: p.raw(keys::CHECKPOINT_SHA256).map(str::to_string),
        };
        // The top-level facts first, so an invalid value is named by its own key rather than by the card's copy.
        meta.validate_in(map)?;
        if let Some(text) = p.raw(keys::CARD) {
            let card = ModelCard::from_json(text)
                .map_err(|e| err(keys::CARD, Some(text), e.to_string()))?;
            meta.agrees_with(&card, &|key, msg| err(key, p.raw(key), msg))?;
            meta.card = Some(card);
        }
        Ok(Some(meta))
    }

    /// Check every fact and their agreement (with each other and with the card, when there is one).
    pub fn validate(&self) -> Result<(), MetadataError> {
        self.validate_in(&BTreeMap::new())
    }

    /// [`Self::validate`], quoting values from `map` in errors.
    fn validate_in(&self, map: &BTreeMap<String, String>) -> Result<(), MetadataError> {
        let bad = |key: &str, msg: String| err(key, map.get(key).map(String::as_str), msg);
        if !(2..=3).contains(&self.spatial_dims) {
            return Err(bad(keys::SPATIAL_DIMS, "expected 2 or 3".into()));
        }
        if self.roi_size.len() != self.spatial_dims
            || self.roi_size.iter().any(|&r| r == 0 || r > MAX_SIZE)
        {
            return Err(bad(
                keys::ROI_SIZE,
                format!(
                    "expected {} sizes in 1..={MAX_SIZE} (one per spatial axis)",
                    self.spatial_dims
                ),
            ));
        }
        if !(1..=MAX_WIDTH).contains(&self.in_channels) {
            return Err(bad(keys::IN_CHANNELS, format!("expected 1..={MAX_WIDTH}")));
        }
        if !(1..=MAX_PATCHES).contains(&self.out_channels) {
            return Err(bad(
                keys::OUT_CHANNELS,
                format!("expected 1..={MAX_PATCHES}"),
            ));
        }
        if !self.labels.is_empty() && self.labels.len() != self.out_channels {
            return Err(bad(
                keys::LABELS,
                format!(
                    "{} names for {} output channels",
                    self.labels.len(),
                    self.out_channels
                ),
            ));
        }
        if let Some(t) = self.preprocessing.iter().find(|t| t.is_random()) {
            return Err(bad(
                keys::PREPROCESSING,
                format!(
                    "{} is a random transform; preprocessing must be deterministic",
                    t.name()
                ),
            ));
        }
        self.validate_inference(&bad)?;
        if let Some(card) = &self.card {
            self.agrees_with(card, &bad)?;
        }
        if let Some(s) = &self.checkpoint_sha256 {
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    keys::CHECKPOINT_SHA256,
                    "expected 64 hexadecimal digits".into(),
                ));
            }
        }
        Ok(())
    }

    fn validate_inference(
        &self,
        bad: &dyn Fn(&str, String) -> MetadataError,
    ) -> Result<(), MetadataError> {
        match (&self.inference, self.kind) {
            (None, ExportKind::Unetr) => Err(bad(
                keys::INFERENCE,
                "a unetr export needs its sliding-window defaults".into(),
            )),
            (Some(_), ExportKind::MaeEncoder | ExportKind::MaeReconstructor) => Err(bad(
                keys::INFERENCE,
                format!("must be null for a {} export", self.kind),
            )),
            (Some(inf), _) => {
                inf.validate("inference").map_err(|e| {
                    bad(
                        keys::INFERENCE,
                        format!("{}: {}", e.field.trim_start_matches("inference."), e.msg),
                    )
                })?;
                if inf.roi_size != self.roi_size {
                    return Err(bad(
                        keys::INFERENCE,
                        format!(
                            "roi_size {:?} differs from {} {:?}",
                            inf.roi_size,
                            keys::ROI_SIZE,
                            self.roi_size
                        ),
                    ));
                }
                Ok(())
            }
            (None, _) => Ok(()),
        }
    }

    /// Every top-level fact must be what the card says.
    fn agrees_with(
        &self,
        card: &ModelCard,
        bad: &dyn Fn(&str, String) -> MetadataError,
    ) -> Result<(), MetadataError> {
        if !self.kind.fits(&card.model) {
            return Err(bad(
                keys::KIND,
                format!("does not fit the model in {}", keys::CARD),
            ));
        }
        let v = card.model.encoder();
        let differs = |key: &str| bad(key, format!("differs from {}", keys::CARD));
        if self.spatial_dims != v.spatial_dims {
            return Err(differs(keys::SPATIAL_DIMS));
        }
        if self.roi_size != v.img_size {
            return Err(differs(keys::ROI_SIZE));
        }
        if self.in_channels != v.in_channels {
            return Err(differs(keys::IN_CHANNELS));
        }
        if self.out_channels != self.kind.out_channels(&card.model) {
            return Err(differs(keys::OUT_CHANNELS));
        }
        if self.labels != card.labels {
            return Err(differs(keys::LABELS));
        }
        if self.preprocessing != card.preprocessing {
            return Err(differs(keys::PREPROCESSING));
        }
        if self.inference != card.inference {
            return Err(differs(keys::INFERENCE));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "onnx_tests.rs"]
mod tests;
