//! Models as the server sees them: the facts read from an ONNX file's metadata (`info`), and the repository of
//! loaded models with their backends (`repository`).

pub mod onnx;
pub mod repository;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use spec::{InferenceSpec, OnnxMetadata, TransformSpec};

use crate::error::ServeError;
use onnx::{OnnxSummary, TensorInfo, ONNX_FLOAT};

pub use repository::{Model, Repository};

/// What a loaded model is: tensors, geometry and (for segmentation models) how to pre- and post-process.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Folder name in the repository.
    pub name: String,
    /// Version folder name ("1" when the model file sits directly in the model folder).
    pub version: String,
    /// The ONNX file.
    pub path: PathBuf,
    /// Served geometry: 2 or 3 spatial dims (the medmae metadata's, else the graph's fixed dims).
    pub spatial_dims: usize,
    /// Model input size per spatial axis.
    pub roi_size: Vec<usize>,
    /// Input and output channels.
    pub in_channels: usize,
    /// See [`ModelInfo::in_channels`].
    pub out_channels: usize,
    /// The validated medmae metadata (kind, labels, preprocessing, inference spec, version); `None` for a plain ONNX
    /// model.
    pub medmae: Option<OnnxMetadata>,
    /// The graph input.
    pub input: TensorInfo,
    /// The graph output used (the first one).
    pub output: TensorInfo,
    /// Every `metadata_props` entry.
    pub metadata: BTreeMap<String, String>,
}

fn model_err(path: &Path, msg: impl Into<String>) -> ServeError {
    ServeError::Model {
        path: path.into(),
        msg: msg.into(),
    }
}

/// Geometry of a plain ONNX model (no medmae metadata), read from its fixed graph dims:
/// `(spatial_dims, roi, in_channels, out_channels)`.
fn graph_geometry(
    input: &TensorInfo,
    output: &TensorInfo,
    path: &Path,
) -> Result<(usize, Vec<usize>, usize, usize), ServeError> {
    let fixed = |d: &i64| usize::try_from(*d).ok();
    let sd = input.dims.len().saturating_sub(2);
    let roi: Option<Vec<usize>> = input.dims.iter().skip(2).map(fixed).collect();
    let roi = roi.ok_or_else(|| {
        model_err(
            path,
            format!(
                "input {:?} has symbolic spatial dims {:?} and no medmae.roi_size metadata",
                input.name, input.dims
            ),
        )
    })?;
    let c = input
        .dims
        .get(1)
        .and_then(fixed)
        .ok_or_else(|| model_err(path, "input channel axis is not fixed"))?;
    let k = output
        .dims
        .get(1)
        .and_then(fixed)
        .ok_or_else(|| model_err(path, "output channel axis is not fixed"))?;
    if !(sd == 2 || sd == 3) || roi.contains(&0) {
        return Err(model_err(
            path,
            format!(
                "expected 2 or 3 spatial dims with a positive roi per axis, got input dims {:?}",
                input.dims
            ),
        ));
    }
    Ok((sd, roi, c, k))
}

impl ModelInfo {
    /// Build from an ONNX summary; checks that metadata and graph agree.
    pub fn from_summary(
        name: &str,
        version: &str,
        path: &Path,
        s: OnnxSummary,
    ) -> Result<Self, ServeError> {
        let [input] = <[TensorInfo; 1]>::try_from(s.inputs).map_err(|v| {
            model_err(
                path,
                format!("expected exactly one graph input, found {}", v.len()),
            )
        })?;
        let output = s
            .outputs
            .into_iter()
            .next()
            .ok_or_else(|| model_err(path, "the graph has no output"))?;
        for t in [&input, &output] {
            if t.elem_type != ONNX_FLOAT {
                return Err(model_err(
                    path,
                    format!(
                        "tensor {:?} has ONNX element type {}, expected 1 (float32)",
                        t.name, t.elem_type
                    ),
                ));
            }
        }
        let meta = s.metadata;
        // The one reader of the medmae keys: every value is validated, an invalid one refuses the model.
        let medmae = OnnxMetadata::from_props(&meta).map_err(|e| model_err(path, e.to_string()))?;
        let (spatial_dims, roi_size, in_channels, out_channels) = match &medmae {
            Some(m) => (
                m.spatial_dims,
                m.roi_size.clone(),
                m.in_channels,
                m.out_channels,
            ),
            None => graph_geometry(&input, &output, path)?,
        };
        let mut want = vec![-1, in_channels as i64];
        want.extend(roi_size.iter().map(|&r| r as i64));
        let agrees = input.dims.len() == want.len()
            && input
                .dims
                .iter()
                .zip(&want)
                .skip(1)
                .all(|(&d, &w)| d == -1 || d == w);
        if !agrees {
            return Err(model_err(
                path,
                format!(
                    "input {:?} has dims {:?}, metadata says [N, {in_channels}, {roi_size:?}]",
                    input.name, input.dims
                ),
            ));
        }
        Ok(Self {
            name: name.into(),
            version: version.into(),
            path: path.into(),
            spatial_dims,
            roi_size,
            in_channels,
            out_channels,
            medmae,
            input,
            output,
            metadata: meta,
        })
    }

    /// The `medmae.kind` spelling (`unetr`, `mae-encoder`, `mae-reconstructor`), or "onnx" for a model without
    /// medmae metadata.
    pub fn kind(&self) -> &str {
        self.medmae.as_ref().map_or("onnx", |m| m.kind.as_str())
    }

    /// Label names (index = output channel); may be empty.
    pub fn labels(&self) -> &[String] {
        self.medmae.as_ref().map_or(&[], |m| &m.labels)
    }

    /// Deterministic preprocessing to apply to uploaded volumes.
    pub fn preprocessing(&self) -> &[TransformSpec] {
        self.medmae.as_ref().map_or(&[], |m| &m.preprocessing)
    }

    /// Sliding-window defaults; `None` for models that are not segmentation models.
    pub fn inference(&self) -> Option<&InferenceSpec> {
        self.medmae.as_ref().and_then(|m| m.inference.as_ref())
    }

    /// medmae version that exported the model (empty if unknown).
    pub fn medmae_version(&self) -> &str {
        self.medmae
            .as_ref()
            .and_then(|m| m.version.as_deref())
            .unwrap_or_default()
    }

    /// Label name for an output channel (falls back to `label_<i>`).
    pub fn label_name(&self, i: usize) -> String {
        self.labels()
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("label_{i}"))
    }

    /// True for models whose output is per-voxel class logits `[N, K, roi...]` (the metadata reader guarantees
    /// that exactly `unetr` exports carry an inference spec).
    pub fn is_segmentation(&self) -> bool {
        self.inference().is_some()
    }

    /// Output dims for a batch of `n` (`n = -1` for "any"): `[n, K, roi...]` for segmentation models, else the
    /// graph's output dims (-1 where symbolic) with the batch axis set to `n`.
    pub fn output_dims(&self, n: i64) -> Vec<i64> {
        if self.is_segmentation() {
            let mut d = vec![n, self.out_channels as i64];
            d.extend(self.roi_size.iter().map(|&r| r as i64));
            return d;
        }
        let mut d = self.output.dims.clone();
        if let Some(first) = d.first_mut() {
            *first = n;
        }
        d
    }

    /// The model input shape for a batch of `n` windows.
    pub fn input_shape(&self, n: usize) -> Vec<usize> {
        let mut s = vec![n, self.in_channels];
        s.extend(&self.roi_size);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(meta: &[(&str, &str)]) -> OnnxSummary {
        OnnxSummary {
            inputs: vec![TensorInfo {
                name: "input".into(),
                elem_type: 1,
                dims: vec![-1, 1, 8, 8, 8],
            }],
            outputs: vec![TensorInfo {
                name: "logits".into(),
                elem_type: 1,
                dims: vec![-1, 2, 8, 8, 8],
            }],
            metadata: meta
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    const META: [(&str, &str); 8] = [
        ("medmae.kind", "unetr"),
        ("medmae.spatial_dims", "3"),
        ("medmae.roi_size", "[8,8,8]"),
        ("medmae.in_channels", "1"),
        ("medmae.out_channels", "2"),
        ("medmae.labels", r#"["background","organ"]"#),
        (
            "medmae.preprocessing",
            r#"[{"name":"ScaleIntensityRange","a_min":0,"a_max":100,"b_min":0,"b_max":1,"clip":true}]"#,
        ),
        ("medmae.inference", r#"{"roi_size":[8,8,8],"overlap":0.25}"#),
    ];

    #[test]
    fn medmae_metadata_is_read_and_checked() {
        let p = Path::new("m/1/model.onnx");
        let i = ModelInfo::from_summary("m", "1", p, summary(&META)).unwrap();
        assert_eq!(i.roi_size, vec![8, 8, 8]);
        assert_eq!(i.label_name(1), "organ");
        assert_eq!(i.inference().unwrap().overlap, 0.25);
        assert_eq!(i.input_shape(4), vec![4, 1, 8, 8, 8]);

        let mut bad = META;
        bad[3] = ("medmae.in_channels", "2");
        let e = ModelInfo::from_summary("m", "1", p, summary(&bad))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m/1/model.onnx") && e.contains("dims"), "{e}");
        let mut bad = META;
        bad[2] = ("medmae.roi_size", "[8,8,16]");
        let e = ModelInfo::from_summary("m", "1", p, summary(&bad))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("medmae.inference") && e.contains("roi_size"),
            "{e}"
        );
        let mut bad = META;
        bad[5] = ("medmae.labels", r#"["a"]"#);
        assert!(ModelInfo::from_summary("m", "1", p, summary(&bad))
            .unwrap_err()
            .to_string()
            .contains("medmae.labels"));
        let mut bad = META;
        bad[6] = (
            "medmae.preprocessing",
            r#"[{"name":"RandFlip","spatial_axis":0}]"#,
        );
        assert!(ModelInfo::from_summary("m", "1", p, summary(&bad))
            .unwrap_err()
            .to_string()
            .contains("RandFlip"));
    }

    #[test]
    fn invalid_inference_values_are_refused_not_defaulted() {
        let p = Path::new("m/1/model.onnx");
        for (value, want) in [
            (
                r#"{"roi_size":[8,8,8],"blend":"linear"}"#,
                "blend: unknown variant `linear`",
            ),
            (
                r#"{"roi_size":[8,8,8],"activation":"relu"}"#,
                "activation: unknown variant `relu`",
            ),
            (
                r#"{"roi_size":[8,8,8],"overlap":1.5}"#,
                "overlap: must be in [0, 1)",
            ),
            ("null", "sliding-window defaults"),
        ] {
            let mut bad = META;
            bad[7] = ("medmae.inference", value);
            let e = ModelInfo::from_summary("m", "1", p, summary(&bad))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("metadata key `medmae.inference`") && e.contains(want),
                "{e}"
            );
        }
    }

    #[test]
    fn null_inference_means_not_a_segmentation_model() {
        let mut meta = META;
        meta[0] = ("medmae.kind", "mae-encoder");
        meta[7] = ("medmae.inference", "null");
        let mut s = summary(&meta);
        s.outputs[0].dims = vec![-1, 9, 48];
        let i = ModelInfo::from_summary("m", "1", Path::new("e.onnx"), s).unwrap();
        assert!(i.inference().is_none() && !i.is_segmentation());
        assert_eq!(i.output_dims(2), vec![2, 9, 48]);
        let seg = ModelInfo::from_summary("m", "1", Path::new("m.onnx"), summary(&META)).unwrap();
        assert_eq!(seg.output_dims(-1), vec![-1, 2, 8, 8, 8]);
    }

    #[test]
    fn plain_onnx_reads_geometry_from_the_graph() {
        let i = ModelInfo::from_summary("m", "1", Path::new("x.onnx"), summary(&[])).unwrap();
        assert_eq!(
            (i.kind(), i.spatial_dims, i.in_channels, i.out_channels),
            ("onnx", 3, 1, 2)
        );
        assert!(i.inference().is_none());
    }
}
