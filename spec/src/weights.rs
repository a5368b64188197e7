//! The checkpoint contract: every tensor name and shape a model of a given config has, in a stable order.
//!
//! The trainer's tch modules must create exactly these parameters (tested there), the exporter reads exactly these
//! (and rejects missing, extra or mis-shaped tensors), and checkpoints from SelfMedMAE (timm style) or MONAI (monai
//! style) load by the same names. Layouts: Linear `[out, in]`, ConvNd `[out, in, k…]`, ConvTransposeNd `[in, out, k…]`.

use crate::model::{MaeConfig, ModelConfig, UnetrConfig, VitConfig, VitStyle};

/// One expected tensor: name and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Full parameter name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
}

struct Out(Vec<TensorSpec>);

impl Out {
    fn t(&mut self, name: impl Into<String>, shape: Vec<usize>) {
        self.0.push(TensorSpec {
            name: name.into(),
            shape,
        });
    }
    fn linear(&mut self, name: &str, inp: usize, out: usize, bias: bool) {
        self.t(format!("{name}.weight"), vec![out, inp]);
        if bias {
            self.t(format!("{name}.bias"), vec![out]);
        }
    }
    fn norm(&mut self, name: &str, dim: usize) {
        self.t(format!("{name}.weight"), vec![dim]);
        self.t(format!("{name}.bias"), vec![dim]);
    }
    fn conv(&mut self, name: &str, inp: usize, out: usize, k: usize, sd: usize) {
        let mut s = vec![out, inp];
        s.extend(std::iter::repeat_n(k, sd));
        self.t(format!("{name}.weight"), s);
    }
    fn deconv(&mut self, name: &str, inp: usize, out: usize, sd: usize) {
        let mut s = vec![inp, out];
        s.extend(std::iter::repeat_n(2, sd));
        self.t(format!("{name}.weight"), s);
    }
}

/// Names of the sub-layers of one transformer block, per style.
pub struct BlockNames {
    /// Attention output projection.
    pub attn_proj: &'static str,
    /// First MLP linear.
    pub fc1: &'static str,
    /// Second MLP linear.
    pub fc2: &'static str,
}

/// Block sub-layer names for a style.
pub fn block_names(style: VitStyle) -> BlockNames {
    match style {
        VitStyle::Timm => BlockNames {
            attn_proj: "attn.proj",
            fc1: "mlp.fc1",
            fc2: "mlp.fc2",
        },
        VitStyle::Monai => BlockNames {
            attn_proj: "attn.out_proj",
            fc1: "mlp.linear1",
            fc2: "mlp.linear2",
        },
    }
}

/// Root prefix of the encoder (`encoder` for timm, `vit` for MONAI).
pub fn encoder_prefix(style: VitStyle) -> &'static str {
    match style {
        VitStyle::Timm => "encoder",
        VitStyle::Monai => "vit",
    }
}

/// Name of the patch-embedding conv (without `.weight`).
pub fn patch_embed_name(style: VitStyle) -> &'static str {
    match style {
        VitStyle::Timm => "encoder.patch_embed.proj",
        VitStyle::Monai => "vit.patch_embedding.patch_embeddings",
    }
}

/// Name of the learnable encoder position embedding of a segmentation model.
pub fn pos_embed_name(style: VitStyle) -> &'static str {
    match style {
        VitStyle::Timm => "encoder.pos_embed",
        VitStyle::Monai => "vit.patch_embedding.position_embeddings",
    }
}

fn blocks(o: &mut Out, prefix: &str, v: &VitConfig) {
    let n = block_names(v.style);
    let (e, m) = (v.embed_dim, v.mlp_dim());
    for i in 0..v.depth {
        let b = format!("{prefix}.blocks.{i}");
        o.norm(&format!("{b}.norm1"), e);
        o.linear(&format!("{b}.attn.qkv"), e, 3 * e, v.qkv_bias);
        o.linear(&format!("{b}.{}", n.attn_proj), e, e, true);
        o.norm(&format!("{b}.norm2"), e);
        o.linear(&format!("{b}.{}", n.fc1), e, m, true);
        o.linear(&format!("{b}.{}", n.fc2), m, e, true);
    }
    o.norm(&format!("{prefix}.norm"), e);
}

fn patch_embed(o: &mut Out, v: &VitConfig) {
    let name = patch_embed_name(v.style);
    let mut s = vec![v.embed_dim, v.in_channels];
    s.extend(&v.patch_size);
    o.t(format!("{name}.weight"), s);
    o.t(format!("{name}.bias"), vec![v.embed_dim]);
}

fn mae(o: &mut Out, m: &MaeConfig) {
    let v = &m.encoder;
    let (n, e, ed) = (v.num_patches(), v.embed_dim, m.decoder_embed_dim);
    patch_embed(o, v);
    o.t("encoder.cls_token", vec![1, 1, e]);
    o.t("encoder_pos_embed", vec![1, n, e]);
    blocks(o, "encoder", v);
    o.linear("encoder_to_decoder", e, ed, true);
    o.t("mask_token", vec![1, 1, ed]);
    o.t("decoder_pos_embed", vec![1, n, ed]);
    blocks(o, "decoder", &m.decoder_vit());
    o.linear("decoder.head", ed, m.head_dim(), true);
}

/// MONAI's UnetResBlock: conv1, conv2 (k3, no bias) and, when channels change, a 1x1 conv3 on the residual path.
fn res_block(o: &mut Out, name: &str, inp: usize, out: usize, sd: usize) {
    o.conv(&format!("{name}.conv1.conv"), inp, out, 3, sd);
    o.conv(&format!("{name}.conv2.conv"), out, out, 3, sd);
    if inp != out {
        o.conv(&format!("{name}.conv3.conv"), inp, out, 1, sd);
    }
}

fn unetr(o: &mut Out, u: &UnetrConfig) {
    let v = &u.encoder;
    let (sd, e, f) = (v.spatial_dims, v.embed_dim, u.feature_size);
    let p = encoder_prefix(v.style);
    patch_embed(o, v);
    if v.cls_token {
        o.t(format!("{p}.cls_token"), vec![1, 1, e]);
    }
    o.t(
        pos_embed_name(v.style),
        vec![1, v.num_patches() + usize::from(v.cls_token), e],
    );
    blocks(o, p, v);
    res_block(o, "encoder1.layer", v.in_channels, f, sd);
    for (name, out, layers) in [
        ("encoder2", 2 * f, 2),
        ("encoder3", 4 * f, 1),
        ("encoder4", 8 * f, 0),
    ] {
        o.deconv(&format!("{name}.transp_conv_init.conv"), e, out, sd);
        for i in 0..layers {
            o.deconv(&format!("{name}.blocks.{i}.0.conv"), out, out, sd);
            res_block(o, &format!("{name}.blocks.{i}.1"), out, out, sd);
        }
    }
    for (name, inp, out) in [
        ("decoder5", e, 8 * f),
        ("decoder4", 8 * f, 4 * f),
        ("decoder3", 4 * f, 2 * f),
        ("decoder2", 2 * f, f),
    ] {
        o.deconv(&format!("{name}.transp_conv.conv"), inp, out, sd);
        res_block(o, &format!("{name}.conv_block"), 2 * out, out, sd);
    }
    o.conv("out.conv.conv", f, u.out_channels, 1, sd);
    o.t("out.conv.conv.bias", vec![u.out_channels]);
}

/// Every tensor of a model, in a stable order.
pub fn expected_weights(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let mut o = Out(Vec::new());
    match cfg {
        ModelConfig::Mae(m) => mae(&mut o, m),
        ModelConfig::Unetr(u) => unetr(&mut o, u),
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::vit3d;

    fn find<'a>(w: &'a [TensorSpec], name: &str) -> &'a TensorSpec {
        w.iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn monai_unetr_names_match_monai_state_dict() {
        // Hand-checked against MONAI 1.6 `UNETR(in_channels=1, out_channels=14, img_size=96, feature_size=16)`:
        // 16 ViT tensors per block, conv3 only where channels change, transposed convs stored [in, out, k, k, k].
        let mut v = vit3d();
        v.style = VitStyle::Monai;
        v.cls_token = false;
        v.qkv_bias = false;
        v.embed_dim = 768;
        v.depth = 12;
        v.num_heads = 12;
        v.img_size = vec![96, 96, 96];
        let u = UnetrConfig {
            encoder: v,
            out_channels: 14,
            feature_size: 16,
            skip_layers: [3, 6, 9],
        };
        let w = expected_weights(&ModelConfig::Unetr(u));
        assert_eq!(
            find(&w, "vit.patch_embedding.position_embeddings").shape,
            vec![1, 216, 768]
        );
        assert_eq!(
            find(&w, "vit.blocks.11.attn.qkv.weight").shape,
            vec![2304, 768]
        );
        assert!(!w.iter().any(|t| t.name == "vit.blocks.0.attn.qkv.bias"));
        assert_eq!(
            find(&w, "vit.blocks.0.mlp.linear1.weight").shape,
            vec![3072, 768]
        );
        assert_eq!(
            find(&w, "encoder1.layer.conv3.conv.weight").shape,
            vec![16, 1, 1, 1, 1]
        );
        assert_eq!(
            find(&w, "encoder2.transp_conv_init.conv.weight").shape,
            vec![768, 32, 2, 2, 2]
        );
        assert_eq!(
            find(&w, "encoder2.blocks.1.1.conv2.conv.weight").shape,
            vec![32, 32, 3, 3, 3]
        );
        assert!(!w.iter().any(|t| t.name.starts_with("encoder4.blocks")));
        assert_eq!(
            find(&w, "decoder5.conv_block.conv1.conv.weight").shape,
            vec![128, 256, 3, 3, 3]
        );
        assert_eq!(
            find(&w, "decoder2.conv_block.conv3.conv.weight").shape,
            vec![16, 32, 1, 1, 1]
        );
        assert_eq!(
            find(&w, "out.conv.conv.weight").shape,
            vec![14, 16, 1, 1, 1]
        );
        // 12 blocks x 11 tensors (no qkv bias) + vit.norm (2) + patch embed (2) + pos embed (1) = 137 ViT tensors.
        assert_eq!(w.iter().filter(|t| t.name.starts_with("vit.")).count(), 137);
    }

    #[test]
    fn mae_names_follow_selfmedmae() {
        let mut e = vit3d();
        e.patch_size = vec![8, 8, 8];
        let m = MaeConfig {
            encoder: e,
            decoder_embed_dim: 24,
            decoder_depth: 2,
            decoder_num_heads: 2,
            mask_ratio: 0.75,
            loss: Default::default(),
        };
        let w = expected_weights(&ModelConfig::Mae(m));
        assert_eq!(
            find(&w, "encoder.patch_embed.proj.weight").shape,
            vec![48, 1, 8, 8, 8]
        );
        assert_eq!(find(&w, "encoder_pos_embed").shape, vec![1, 64, 48]);
        assert_eq!(find(&w, "encoder.blocks.3.attn.qkv.bias").shape, vec![144]);
        assert_eq!(find(&w, "encoder_to_decoder.weight").shape, vec![24, 48]);
        assert_eq!(
            find(&w, "decoder.blocks.1.mlp.fc2.weight").shape,
            vec![24, 96]
        );
        assert_eq!(find(&w, "decoder.head.weight").shape, vec![512, 24]);
        let mut names: Vec<_> = w.iter().map(|t| &t.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), w.len(), "names are unique");
    }
}
