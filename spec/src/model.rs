//! Architecture configs for the ViT encoder, MAE and UNETR, 2-D and 3-D, with validation that names the field.

use serde::{Deserialize, Serialize};

/// A config value that is missing, inconsistent or out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model config field `{field}`: {msg}")]
pub struct SpecError {
    /// Dotted path of the field.
    pub field: String,
    /// What was expected.
    pub msg: String,
}

fn err(field: &str, msg: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        msg: msg.into(),
    }
}

/// Upper bounds checked by `validate`, so a hostile or corrupt `model.json` cannot make code that sizes tensors
/// from a config overflow or allocate without bound (found by `fuzz/`): blocks per ViT, embedding width, input/output
/// channels and decoder width, image size per axis, patches per image, and the MLP ratio.
pub const MAX_DEPTH: usize = 1024;
/// See [`MAX_DEPTH`].
pub const MAX_WIDTH: usize = 1 << 16;
/// See [`MAX_DEPTH`].
pub const MAX_SIZE: usize = 1 << 16;
/// See [`MAX_DEPTH`].
pub const MAX_PATCHES: usize = 1 << 24;
/// See [`MAX_DEPTH`].
pub const MAX_MLP_RATIO: f64 = 64.0;

/// Parameter naming and small numeric conventions of the ViT encoder.
///
/// `Timm` is SelfMedMAE's layout (and medmae's default): cls token, qkv bias, LayerNorm eps 1e-6, blocks named
/// `norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2` under `encoder.`. `Monai` is MONAI's `ViT`: no cls token,
/// blocks named `norm1, attn.qkv, attn.out_proj, norm2, mlp.linear1, mlp.linear2` under `vit.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VitStyle {
    /// SelfMedMAE / timm names.
    #[default]
    Timm,
    /// MONAI names.
    Monai,
}

/// The ViT encoder shared by MAE and UNETR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VitConfig {
    /// 2 or 3.
    pub spatial_dims: usize,
    /// Input channels (modalities).
    pub in_channels: usize,
    /// Input size per spatial axis (h, w[, d]).
    pub img_size: Vec<usize>,
    /// Patch size per spatial axis.
    pub patch_size: Vec<usize>,
    /// Token width.
    pub embed_dim: usize,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// MLP hidden width = embed_dim * mlp_ratio.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Bias on the fused qkv projection.
    #[serde(default = "yes")]
    pub qkv_bias: bool,
    /// LayerNorm epsilon.
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
    /// Prepend a cls token (SelfMedMAE) or not (MONAI).
    #[serde(default = "yes")]
    pub cls_token: bool,
    /// Parameter naming.
    #[serde(default)]
    pub style: VitStyle,
    /// Stochastic depth rate (training only).
    #[serde(default)]
    pub drop_path_rate: f64,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_ln_eps() -> f64 {
    1e-6
}
fn yes() -> bool {
    true
}

impl VitConfig {
    /// A SelfMedMAE (timm-style) encoder over `img_size` (its length is the dimensionality) in patches of
    /// `patch_size`, with the defaults a `model.json` gets when it leaves them out: MLP ratio 4, qkv bias, LayerNorm
    /// eps 1e-6, a cls token and no stochastic depth.
    pub fn timm(
        in_channels: usize,
        img_size: Vec<usize>,
        patch_size: Vec<usize>,
        embed_dim: usize,
        depth: usize,
        num_heads: usize,
    ) -> Self {
        VitConfig {
            spatial_dims: img_size.len(),
            in_channels,
            img_size,
            patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio: default_mlp_ratio(),
            qkv_bias: yes(),
            layer_norm_eps: default_ln_eps(),
            cls_token: yes(),
            style: VitStyle::Timm,
            drop_path_rate: 0.0,
        }
    }
    /// This config with another MLP ratio.
    pub fn with_mlp_ratio(mut self, mlp_ratio: f64) -> Self {
        self.mlp_ratio = mlp_ratio;
        self
    }
    /// This config with another stochastic depth rate.
    pub fn with_drop_path_rate(mut self, drop_path_rate: f64) -> Self {
        self.drop_path_rate = drop_path_rate;
        self
    }
    /// Patch grid per axis.
    pub fn grid(&self) -> Vec<usize> {
        self.img_size
            .iter()
            .zip(&self.patch_size)
            .map(|(i, p)| i / p)
            .collect()
    }
    /// Number of patch tokens (without cls).
    pub fn num_patches(&self) -> usize {
        self.grid().iter().product()
    }
    /// Voxels in one patch.
    pub fn patch_volume(&self) -> usize {
        self.patch_size.iter().product()
    }
    /// MLP hidden width.
    pub fn mlp_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio).round() as usize
    }

    /// Check every field; `prefix` is the dotted path of this config in its parent.
    pub fn validate(&self, prefix: &str) -> Result<(), SpecError> {
        let f = |name: &str| format!("{prefix}.{name}");
        if self.spatial_dims != 2 && self.spatial_dims != 3 {
            return Err(err(
                &f("spatial_dims"),
                format!("expected 2 or 3, got {}", self.spatial_dims),
            ));
        }
        if self.in_channels == 0 {
            return Err(err(&f("in_channels"), "must be at least 1"));
        }
        for (name, v) in [
            ("img_size", &self.img_size),
            ("patch_size", &self.patch_size),
        ] {
            if v.len() != self.spatial_dims {
                return Err(err(
                    &f(name),
                    format!(
                        "expected {} values (one per spatial axis), got {}",
                        self.spatial_dims,
                        v.len()
                    ),
                ));
            }
            if v.contains(&0) {
                return Err(err(&f(name), "values must be positive"));
            }
        }
        for (ax, (i, p)) in self.img_size.iter().zip(&self.patch_size).enumerate() {
            if i % p != 0 {
                return Err(err(
                    &f("img_size"),
                    format!("axis {ax}: size {i} is not divisible by patch size {p}"),
                ));
            }
        }
        if self.embed_dim == 0 || self.depth == 0 || self.num_heads == 0 {
            return Err(err(&f("embed_dim/depth/num_heads"), "must be positive"));
        }
        for (name, v, max) in [
            ("depth", self.depth, MAX_DEPTH),
            ("embed_dim", self.embed_dim, MAX_WIDTH),
            ("in_channels", self.in_channels, MAX_WIDTH),
        ] {
            if v > max {
                return Err(err(
                    &f(name),
                    format!("{v} exceeds the supported maximum {max}"),
                ));
            }
        }
        if self.img_size.iter().any(|&s| s > MAX_SIZE) {
            return Err(err(
                &f("img_size"),
                format!("sizes above {MAX_SIZE} are not supported"),
            ));
        }
        let patches = self
            .img_size
            .iter()
            .zip(&self.patch_size)
            .try_fold(1usize, |n, (i, p)| n.checked_mul(i / p));
        if patches.is_none_or(|n| n > MAX_PATCHES) {
            return Err(err(
                &f("img_size"),
                format!("more than {MAX_PATCHES} patches per image are not supported"),
            ));
        }
        if self.embed_dim % self.num_heads != 0 {
            return Err(err(
                &f("embed_dim"),
                format!(
                    "{} is not divisible by num_heads {}",
                    self.embed_dim, self.num_heads
                ),
            ));
        }
        if !(self.mlp_ratio > 0.0 && self.mlp_ratio <= MAX_MLP_RATIO) {
            return Err(err(
                &f("mlp_ratio"),
                format!("must be a positive number up to {MAX_MLP_RATIO}"),
            ));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps < 1.0) {
            return Err(err(&f("layer_norm_eps"), "must be in (0, 1)"));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return Err(err(&f("drop_path_rate"), "must be in [0, 1)"));
        }
        Ok(())
    }

    /// The sincos table needs embed_dim divisible by 4 (2-D) or 6 (3-D).
    pub fn validate_sincos(&self, field: &str) -> Result<(), SpecError> {
        let m = 2 * self.spatial_dims;
        if self.embed_dim % m != 0 {
            return Err(err(
                field,
                format!(
                    "{}-D sincos position embedding needs a width divisible by {m}, got {}",
                    self.spatial_dims, self.embed_dim
                ),
            ));
        }
        Ok(())
    }
}

/// Which variance normalises a norm-pix target patch: `(x − mean) / √(var + 1e-6)` over the patch's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixVariance {
    /// Divide by n (a non-affine LayerNorm): SelfMedMAE's MAE-3D.
    Biased,
    /// Divide by n − 1 (`torch.var`): He et al.'s MAE.
    Unbiased,
}

impl PixVariance {
    /// The reference formulation for a dimensionality: unbiased in 2-D (He et al.), biased in 3-D (SelfMedMAE).
    pub fn reference_for(spatial_dims: usize) -> Self {
        if spatial_dims == 2 {
            PixVariance::Unbiased
        } else {
            PixVariance::Biased
        }
    }
}

/// Reconstruction target of the MAE decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ReconLoss {
    /// MSE on masked patches' pixels, optionally per-patch normalised (norm_pix_loss), plus an optional FFT-spectrum
    /// amplitude term on the reconstructed image weighted by `fft_weight`.
    Mse {
        /// Normalise each target patch to zero mean and unit variance (eps 1e-6 inside the square root).
        #[serde(default = "yes")]
        norm_pix_loss: bool,
        /// The variance of that normalisation; absent means the reference of the model's dimensionality
        /// ([`PixVariance::reference_for`]); resolve it with [`MaeConfig::pix_variance`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        norm_pix_variance: Option<PixVariance>,
        /// Weight of the spectral amplitude loss (0 disables it).
        #[serde(default)]
        fft_weight: f64,
    },
    /// SelfMedMAE's Fourier-feature regression (`FourierMSELossv2`): the head predicts sin/cos features of raw values.
    Fourier {
        /// Fourier feature width per voxel (E); must be divisible by 2·in_channels.
        #[serde(default = "default_fourier_dim")]
        embed_dim: usize,
        /// Temperature T < 1; frequencies are 2π / T^(k/K).
        #[serde(default = "default_fourier_temp")]
        temperature: f64,
    },
}

fn default_fourier_dim() -> usize {
    24
}
fn default_fourier_temp() -> f64 {
    0.01
}

impl Default for ReconLoss {
    fn default() -> Self {
        ReconLoss::Mse {
            norm_pix_loss: true,
            norm_pix_variance: None,
            fft_weight: 0.0,
        }
    }
}

/// Masked autoencoder: ViT encoder on visible patches, light decoder with its own width and sincos table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaeConfig {
    /// Encoder (style must be timm; pos-embed is the fixed sincos table).
    pub encoder: VitConfig,
    /// Decoder width.
    pub decoder_embed_dim: usize,
    /// Decoder depth.
    pub decoder_depth: usize,
    /// Decoder heads.
    pub decoder_num_heads: usize,
    /// Fraction of patches removed.
    #[serde(default = "default_mask_ratio")]
    pub mask_ratio: f64,
    /// Reconstruction loss.
    #[serde(default)]
    pub loss: ReconLoss,
}

fn default_mask_ratio() -> f64 {
    0.75
}

impl MaeConfig {
    /// Values per token produced by the decoder head.
    pub fn head_dim(&self) -> usize {
        let pv = self.encoder.patch_volume();
        match self.loss {
            ReconLoss::Mse { .. } => pv * self.encoder.in_channels,
            ReconLoss::Fourier { embed_dim, .. } => pv * embed_dim,
        }
    }
    /// Decoder as a ViT config (for widths and heads).
    pub fn decoder_vit(&self) -> VitConfig {
        VitConfig {
            embed_dim: self.decoder_embed_dim,
            depth: self.decoder_depth,
            num_heads: self.decoder_num_heads,
            drop_path_rate: 0.0,
            ..self.encoder.clone()
        }
    }
    /// The norm-pix variance in effect: the configured one, else the reference of the dimensionality.
    pub fn pix_variance(&self) -> PixVariance {
        match self.loss {
            ReconLoss::Mse {
                norm_pix_variance: Some(v),
                ..
            } => v,
            _ => PixVariance::reference_for(self.encoder.spatial_dims),
        }
    }

    /// Number of patches kept visible: floor(L·(1−ratio)) computed in f64.
    pub fn len_keep(&self) -> usize {
        (self.encoder.num_patches() as f64 * (1.0 - self.mask_ratio)) as usize
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.encoder.validate("mae.encoder")?;
        if self.encoder.style != VitStyle::Timm || !self.encoder.cls_token {
            return Err(err(
                "mae.encoder.style",
                "the MAE encoder uses the timm layout with a cls token",
            ));
        }
        self.encoder.validate_sincos("mae.encoder.embed_dim")?;
        self.decoder_vit().validate("mae.decoder")?;
        self.decoder_vit()
            .validate_sincos("mae.decoder_embed_dim")?;
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return Err(err(
                "mae.mask_ratio",
                format!("must be in (0, 1), got {}", self.mask_ratio),
            ));
        }
        if self.len_keep() == 0 {
            return Err(err(
                "mae.mask_ratio",
                "keeps no patch visible at this image/patch size",
            ));
        }
        match &self.loss {
            ReconLoss::Mse { fft_weight, .. } => {
                if !(*fft_weight >= 0.0 && fft_weight.is_finite()) {
                    return Err(err("mae.loss.fft_weight", "must be a non-negative number"));
                }
            }
            ReconLoss::Fourier {
                embed_dim,
                temperature,
            } => {
                let c2 = 2 * self.encoder.in_channels;
                if *embed_dim == 0 || embed_dim % c2 != 0 || *embed_dim > MAX_WIDTH {
                    return Err(err(
                        "mae.loss.embed_dim",
                        format!(
                            "must be a positive multiple of 2·in_channels = {c2}, got {embed_dim}"
                        ),
                    ));
                }
                if !(*temperature > 0.0 && *temperature < 1.0) {
                    return Err(err(
                        "mae.loss.temperature",
                        format!("must be in (0, 1), got {temperature}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// UNETR: ViT encoder with skips from three hidden states, MONAI's conv/deconv residual decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetrConfig {
    /// Encoder; patch size must be 16 on every axis (four ×2 upsamplings).
    pub encoder: VitConfig,
    /// Output classes (channels of the logits).
    pub out_channels: usize,
    /// Decoder base width.
    #[serde(default = "default_feature_size")]
    pub feature_size: usize,
    /// 0-based block indices whose outputs feed encoder2/3/4 (MONAI: 3, 6, 9).
    #[serde(default = "default_skips")]
    pub skip_layers: [usize; 3],
}

fn default_feature_size() -> usize {
    16
}
fn default_skips() -> [usize; 3] {
    [3, 6, 9]
}

impl UnetrConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.encoder.validate("unetr.encoder")?;
        if self.encoder.patch_size.iter().any(|&p| p != 16) {
            return Err(err("unetr.encoder.patch_size", format!("UNETR's decoder upsamples 4 times by 2, so the patch size must be 16 on every axis, got {:?}", self.encoder.patch_size)));
        }
        if self.out_channels == 0 || self.feature_size == 0 {
            return Err(err("unetr.out_channels/feature_size", "must be positive"));
        }
        if self.out_channels > MAX_WIDTH || self.feature_size > MAX_WIDTH {
            return Err(err(
                "unetr.out_channels/feature_size",
                format!("must be at most {MAX_WIDTH}"),
            ));
        }
        if self.encoder.style == VitStyle::Monai && self.encoder.cls_token {
            return Err(err(
                "unetr.encoder.cls_token",
                "MONAI's ViT has no cls token; set cls_token: false with style: monai",
            ));
        }
        let [a, b, c] = self.skip_layers;
        if !(a < b && b < c && c < self.encoder.depth) {
            return Err(err(
                "unetr.skip_layers",
                format!(
                    "must be increasing block indices below depth {}, got {:?}",
                    self.encoder.depth, self.skip_layers
                ),
            ));
        }
        Ok(())
    }
}

/// A model of any kind, as stored in `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// Masked autoencoder (pretraining).
    Mae(MaeConfig),
    /// UNETR segmentation.
    Unetr(UnetrConfig),
}

impl ModelConfig {
    /// Check every field.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self {
            ModelConfig::Mae(m) => m.validate(),
            ModelConfig::Unetr(u) => u.validate(),
        }
    }
    /// The encoder config.
    pub fn encoder(&self) -> &VitConfig {
        match self {
            ModelConfig::Mae(m) => &m.encoder,
            ModelConfig::Unetr(u) => &u.encoder,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn vit3d() -> VitConfig {
        VitConfig::timm(1, vec![32; 3], vec![16; 3], 48, 4, 4)
    }

    #[test]
    fn validation_names_fields() {
        let mut v = vit3d();
        v.img_size = vec![30, 32, 32];
        let e = v.validate("x").unwrap_err();
        assert_eq!(e.field, "x.img_size");
        assert!(e.msg.contains("not divisible"));
        let mut v = vit3d();
        v.embed_dim = 40;
        assert_eq!(v.validate_sincos("f").unwrap_err().field, "f");
        let u = UnetrConfig {
            encoder: vit3d(),
            out_channels: 2,
            feature_size: 8,
            skip_layers: [0, 1, 4],
        };
        assert_eq!(u.validate().unwrap_err().field, "unetr.skip_layers");
    }

    #[test]
    fn len_keep_truncates() {
        let mut e = vit3d();
        e.patch_size = vec![8, 8, 8];
        let m = MaeConfig {
            encoder: e,
            decoder_embed_dim: 24,
            decoder_depth: 1,
            decoder_num_heads: 2,
            mask_ratio: 0.75,
            loss: ReconLoss::default(),
        };
        assert_eq!(m.len_keep(), 16);
        assert_eq!(m.head_dim(), 512);
        m.validate().unwrap();
    }

    #[test]
    fn norm_pix_variance_defaults_follow_the_references() {
        let j = |sd: usize, extra: &str| {
            let (img, patch) = if sd == 2 {
                ("[32,32]", "[8,8]")
            } else {
                ("[16,16,16]", "[8,8,8]")
            };
            format!(
                r#"{{"encoder":{{"spatial_dims":{sd},"in_channels":1,"img_size":{img},"patch_size":{patch},"embed_dim":24,"depth":1,"num_heads":2}},"decoder_embed_dim":12,"decoder_depth":1,"decoder_num_heads":2,"loss":{{"kind":"mse","norm_pix_loss":true{extra}}}}}"#
            )
        };
        // an old config without the field still parses, and gets each reference's variance
        let m2: MaeConfig = serde_json::from_str(&j(2, "")).unwrap();
        let m3: MaeConfig = serde_json::from_str(&j(3, "")).unwrap();
        assert_eq!(m2.pix_variance(), PixVariance::Unbiased);
        assert_eq!(m3.pix_variance(), PixVariance::Biased);
        // and writes back without it
        assert!(!serde_json::to_string(&m2)
            .unwrap()
            .contains("norm_pix_variance"));
        let m: MaeConfig = serde_json::from_str(&j(2, r#","norm_pix_variance":"biased""#)).unwrap();
        assert_eq!(m.pix_variance(), PixVariance::Biased);
        assert!(
            serde_json::from_str::<MaeConfig>(&j(2, r#","norm_pix_variance":"sample""#)).is_err()
        );
    }

    #[test]
    fn json_roundtrip_with_defaults() {
        let j = r#"{"kind":"unetr","encoder":{"spatial_dims":2,"in_channels":1,"img_size":[64,64],"patch_size":[16,16],"embed_dim":64,"depth":4,"num_heads":4},"out_channels":3,"skip_layers":[0,1,2]}"#;
        let m: ModelConfig = serde_json::from_str(j).unwrap();
        m.validate().unwrap();
        let back: ModelConfig = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(m, back);
        let bad = j.replace("\"depth\"", "\"dept\"");
        assert!(serde_json::from_str::<ModelConfig>(&bad).is_err());
    }
}
