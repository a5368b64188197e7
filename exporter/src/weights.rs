//! Checkpoint tensors: read `model.safetensors`, widen to f32, and check them against `spec::expected_weights`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};
use spec::{ModelConfig, VitStyle};

use crate::error::{ExportError, Result};

/// One tensor as f32, stored as little-endian bytes (the layout of an ONNX `raw_data` initializer).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTensor {
    /// Shape.
    pub shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl WeightTensor {
    /// A tensor from f32 values; `values.len()` must equal the product of `shape`.
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(ExportError::Graph(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                values.len()
            )));
        }
        let mut bytes = Vec::with_capacity(4 * n);
        for v in values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Self { shape, bytes })
    }

    /// Raw little-endian f32 bytes.
    pub fn le_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The values as f32.
    pub fn to_f32(&self) -> Vec<f32> {
        self.bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

/// The tensors of a checkpoint by name, plus where they came from.
#[derive(Debug, Clone, Default)]
pub struct Weights {
    tensors: BTreeMap<String, WeightTensor>,
    ignored: Vec<String>,
    sha256: Option<String>,
    source: Option<PathBuf>,
}

/// IEEE half → f32 (exact: every f16 is representable in f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match exp {
        0 => {
            // Zero or subnormal: mant · 2^-24, exact in f32.
            let v = mant as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
}

/// Keys MONAI checkpoints carry that no medmae model uses (cross-attention of `TransformerBlock`).
fn known_unused(name: &str, cfg: &ModelConfig) -> bool {
    if cfg.encoder().style != VitStyle::Monai {
        return false;
    }
    let Some(rest) = name.strip_prefix("vit.blocks.") else {
        return false;
    };
    let Some((idx, tail)) = rest.split_once('.') else {
        return false;
    };
    idx.parse::<usize>().is_ok()
        && (tail.starts_with("norm_cross_attn.") || tail.starts_with("cross_attn."))
}

impl Weights {
    /// Read a safetensors file and check it against the tensors `cfg` needs (names, shapes; dtypes F32/F16/BF16/F64).
    pub fn load(path: &Path, cfg: &ModelConfig) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ExportError::io(path, e))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        let st = SafeTensors::deserialize(&bytes).map_err(|e| ExportError::Safetensors {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let mut w = Weights {
            sha256: Some(sha256),
            source: Some(path.into()),
            ..Default::default()
        };
        for (name, view) in st.iter() {
            if known_unused(name, cfg) {
                w.ignored.push(name.to_string());
                continue;
            }
            let data = view.data();
            let bytes = match view.dtype() {
                Dtype::F32 => data.to_vec(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .flat_map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])).to_le_bytes())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .flat_map(|c| [0, 0, c[0], c[1]])
                    .collect(),
                Dtype::F64 => data
                    .chunks_exact(8)
                    .flat_map(|c| {
                        (f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                            as f32)
                            .to_le_bytes()
                    })
                    .collect(),
                other => {
                    return Err(ExportError::Dtype {
                        path: path.into(),
                        name: name.into(),
                        dtype: format!("{other:?}"),
                    })
                }
            };
            w.tensors.insert(
                name.to_string(),
                WeightTensor {
                    shape: view.shape().to_vec(),
                    bytes,
                },
            );
        }
        w.validate(cfg)?;
        Ok(w)
    }

    /// Weights built in memory (tests, benchmarks, a trainer handing tensors over directly); not yet validated.
    pub fn from_tensors(tensors: impl IntoIterator<Item = (String, WeightTensor)>) -> Self {
        Weights {
            tensors: tensors.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Check names and shapes against `spec::expected_weights(cfg)`, reporting every difference at once.
    pub fn validate(&self, cfg: &ModelConfig) -> Result<()> {
        let expected = spec::expected_weights(cfg);
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        for t in &expected {
            match self.tensors.get(&t.name) {
                None => missing.push(t.name.clone()),
                Some(w) if w.shape != t.shape => {
                    misshaped.push((t.name.clone(), t.shape.clone(), w.shape.clone()))
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> =
            expected.iter().map(|t| t.name.as_str()).collect();
        let unexpected: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        if missing.is_empty() && unexpected.is_empty() && misshaped.is_empty() {
            return Ok(());
        }
        let path = self
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from("<in-memory weights>"));
        Err(ExportError::Mismatch {
            path,
            missing,
            unexpected,
            misshaped,
        })
    }

    /// A tensor by checkpoint name.
    pub fn get(&self, name: &str) -> Option<&WeightTensor> {
        self.tensors.get(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Remove a tensor and hand over its little-endian f32 bytes (lets an export move weights into the graph).
    pub(crate) fn take_bytes(&mut self, name: &str) -> Option<Vec<u8>> {
        self.tensors.remove(name).map(|t| t.bytes)
    }

    /// Keys skipped as known-unused (MONAI cross-attention norms).
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// Hex SHA-256 of the checkpoint file, when loaded from one.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.as_deref()
    }

    /// Write the tensors as an F32 safetensors file (checkpoints built in memory: tests, benchmarks).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let views = self
            .tensors
            .iter()
            .map(|(name, t)| {
                safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), &t.bytes)
                    .map(|v| (name.as_str(), v))
                    .map_err(|e| ExportError::Safetensors {
                        path: path.into(),
                        msg: e.to_string(),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize_to_file(views, None, path).map_err(|e| ExportError::Safetensors {
            path: path.into(),
            msg: e.to_string(),
        })
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_hand_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn f16_conversion_is_monotone_over_all_finite_positives() {
        let mut prev = -1.0f32;
        for h in 0u16..0x7c00 {
            let v = f16_to_f32(h);
            assert!(v > prev, "{h:#x}: {v} after {prev}");
            prev = v;
        }
    }

    #[test]
    fn weight_tensor_roundtrips_values() {
        let t = WeightTensor::from_f32(vec![2, 2], &[1.0, -2.5, 3.25, 0.0]).unwrap();
        assert_eq!(t.to_f32(), vec![1.0, -2.5, 3.25, 0.0]);
        assert_eq!(t.le_bytes().len(), 16);
        assert!(WeightTensor::from_f32(vec![3], &[1.0]).is_err());
    }

    #[test]
    fn monai_cross_attention_keys_are_known_unused() {
        let j = r#"{"kind":"unetr","encoder":{"spatial_dims":2,"in_channels":1,"img_size":[32,32],"patch_size":[16,16],"embed_dim":24,"depth":12,"num_heads":4,"style":"monai","cls_token":false,"qkv_bias":false},"out_channels":2}"#;
        let cfg: ModelConfig = serde_json::from_str(j).unwrap();
        assert!(known_unused("vit.blocks.3.norm_cross_attn.weight", &cfg));
        assert!(known_unused("vit.blocks.11.cross_attn.to_q.weight", &cfg));
        assert!(!known_unused("vit.blocks.x.norm_cross_attn.weight", &cfg));
        assert!(!known_unused("vit.blocks.3.norm1.weight", &cfg));
    }
}
