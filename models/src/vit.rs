//! The ViT encoder of UNETR (learned position table) and the transformer pieces MAE reuses: conv patch embedding,
//! pre-norm blocks with fused qkv attention and exact-erf GELU MLP, in timm or MONAI naming (`spec::VitStyle`).

use spec::weights::{block_names, encoder_prefix, patch_embed_name, pos_embed_name};
use spec::VitConfig;
use tch::nn::{self, Init};
use tch::Tensor;

use crate::error::{shape_err, Result};
use crate::layers::{check_image, drop_path, sub, LayerNorm, Linear};

/// Patch embedding: a convolution with kernel = stride = patch size, `[B, C, spatial…] → [B, N, E]`.
#[derive(Debug)]
pub struct PatchEmbed {
    /// `[E, C, p…]`.
    pub weight: Tensor,
    /// `[E]`.
    pub bias: Tensor,
    patch: Vec<i64>,
}

impl PatchEmbed {
    /// Create `p.weight` / `p.bias`; Xavier-uniform on the flattened kernel (SelfMedMAE's init).
    pub fn new(
        p: &nn::Path,
        in_channels: usize,
        embed_dim: usize,
        patch: &[usize],
    ) -> Result<Self> {
        let fan_in = in_channels * patch.iter().product::<usize>();
        let mut shape = vec![embed_dim as i64, in_channels as i64];
        shape.extend(patch.iter().map(|&x| x as i64));
        let xb = (6.0 / (fan_in + embed_dim) as f64).sqrt();
        let weight = p.f_var("weight", &shape, Init::Uniform { lo: -xb, up: xb })?;
        let bb = 1.0 / (fan_in as f64).sqrt();
        let bias = p.f_var(
            "bias",
            &[embed_dim as i64],
            Init::Uniform { lo: -bb, up: bb },
        )?;
        Ok(Self {
            weight,
            bias,
            patch: patch.iter().map(|&x| x as i64).collect(),
        })
    }

    /// Embed a whole image: conv, then flatten the grid row-major into tokens.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let nd = self.patch.len();
        let y = x.f_convolution(
            &self.weight,
            Some(&self.bias),
            &self.patch,
            vec![0i64; nd],
            vec![1i64; nd],
            false,
            vec![0i64; nd],
            1,
        )?;
        Ok(y.f_flatten(2, -1)?.f_transpose(1, 2)?)
    }

    /// Embed already patchified tokens `[B, n, p…·C]` (channel-last inside a token, as `mae::patchify` makes them):
    /// the same numbers as [`PatchEmbed::forward`] on the patches' image, as one matmul.
    pub fn forward_patches(&self, tokens: &Tensor) -> Result<Tensor> {
        let nd = self.patch.len() as i64;
        // [E, C, p…] → [E, p…, C] → [E, p…·C] to match the channel-last token layout.
        let mut perm = vec![0i64];
        perm.extend(2..2 + nd);
        perm.push(1);
        let e = self.weight.size()[0];
        let w = self.weight.f_permute(&perm)?.f_reshape([e, -1])?;
        Ok(tokens.f_linear(&w, Some(&self.bias))?)
    }
}

/// Multi-head self-attention with a fused qkv projection (rows ordered qkv, head, head_dim).
#[derive(Debug)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    heads: i64,
}

impl Attention {
    /// `softmax(q kᵀ / √hd) v` per head, heads concatenated, then the output projection.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = x.size();
        let (b, n, e) = (s[0], s[1], s[2]);
        let hd = e / self.heads;
        let qkv = self
            .qkv
            .forward(x)?
            .f_reshape([b, n, 3, self.heads, hd])?
            .f_permute([2, 0, 3, 1, 4])?;
        let (q, k, v) = (qkv.f_get(0)?, qkv.f_get(1)?, qkv.f_get(2)?);
        let o = Tensor::f_scaled_dot_product_attention::<Tensor>(
            &q, &k, &v, None, 0.0, false, None, false,
        )?;
        self.proj
            .forward(&o.f_transpose(1, 2)?.f_reshape([b, n, e])?)
    }
}

/// A pre-norm transformer block: `x + attn(norm1 x)`, then `x + mlp(norm2 x)`, each branch under stochastic depth.
#[derive(Debug)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    drop_path: f64,
}

impl Block {
    /// A block under `p` with the sub-layer names of `cfg.style`.
    pub fn new(p: &nn::Path, cfg: &VitConfig, drop_path: f64) -> Result<Self> {
        let names = block_names(cfg.style);
        let (e, m) = (cfg.embed_dim, cfg.mlp_dim());
        Ok(Self {
            norm1: LayerNorm::new(&p.sub("norm1"), e, cfg.layer_norm_eps)?,
            attn: Attention {
                qkv: Linear::new(&sub(p, "attn.qkv"), e, 3 * e, cfg.qkv_bias)?,
                proj: Linear::new(&sub(p, names.attn_proj), e, e, true)?,
                heads: cfg.num_heads as i64,
            },
            norm2: LayerNorm::new(&p.sub("norm2"), e, cfg.layer_norm_eps)?,
            fc1: Linear::new(&sub(p, names.fc1), e, m, true)?,
            fc2: Linear::new(&sub(p, names.fc2), m, e, true)?,
            drop_path,
        })
    }

    /// Apply to tokens `[B, N, E]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.attn.forward(&self.norm1.forward(x)?)?;
        let x = x.f_add(&drop_path(&a, self.drop_path, train)?)?;
        let m = self
            .fc2
            .forward(&self.fc1.forward(&self.norm2.forward(&x)?)?.f_gelu("none")?)?;
        Ok(x.f_add(&drop_path(&m, self.drop_path, train)?)?)
    }
}

/// A stack of blocks (`prefix.blocks.{i}`) and the final norm (`prefix.norm`); drop-path rates rise linearly from 0.
#[derive(Debug)]
pub struct Transformer {
    /// The blocks.
    pub blocks: Vec<Block>,
    /// The final LayerNorm.
    pub norm: LayerNorm,
}

impl Transformer {
    /// Blocks and norm under `p` (the encoder or decoder prefix).
    pub fn new(p: &nn::Path, cfg: &VitConfig) -> Result<Self> {
        let depth = cfg.depth;
        let blocks = (0..depth)
            .map(|i| {
                let rate = if depth > 1 {
                    cfg.drop_path_rate * i as f64 / (depth - 1) as f64
                } else {
                    0.0
                };
                Block::new(&p.sub("blocks").sub(i), cfg, rate)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            blocks,
            norm: LayerNorm::new(&p.sub("norm"), cfg.embed_dim, cfg.layer_norm_eps)?,
        })
    }

    /// Run the blocks; returns the normed output and every block's raw output.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Vec<Tensor>)> {
        let mut x = x.shallow_clone();
        let mut hidden = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            x = b.forward(&x, train)?;
            hidden.push(x.shallow_clone());
        }
        Ok((self.norm.forward(&x)?, hidden))
    }
}

/// The segmentation encoder: patch embedding, optional cls token, learned position table, blocks, final norm.
#[derive(Debug)]
pub struct Vit {
    cfg: VitConfig,
    /// Patch embedding.
    pub patch_embed: PatchEmbed,
    /// `[1, 1, E]` when the config has a cls token.
    pub cls_token: Option<Tensor>,
    /// `[1, (1+)N, E]`; row 0 belongs to the cls token when there is one.
    pub pos_embed: Tensor,
    /// Blocks and final norm.
    pub body: Transformer,
}

impl Vit {
    /// Build on the model root `p`; names come from `spec::weights` for `cfg.style` (`encoder.*` or `vit.*`).
    pub fn new(p: &nn::Path, cfg: &VitConfig) -> Result<Self> {
        cfg.validate("encoder")?;
        let prefix = sub(p, encoder_prefix(cfg.style));
        let patch_embed = PatchEmbed::new(
            &sub(p, patch_embed_name(cfg.style)),
            cfg.in_channels,
            cfg.embed_dim,
            &cfg.patch_size,
        )?;
        let e = cfg.embed_dim as i64;
        let cls_token = if cfg.cls_token {
            Some(prefix.f_var(
                "cls_token",
                &[1, 1, e],
                Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )?)
        } else {
            None
        };
        let n = (cfg.num_patches() + usize::from(cfg.cls_token)) as i64;
        let pos_path = pos_embed_name(cfg.style);
        let (parent, leaf) = pos_path.rsplit_once('.').unwrap_or(("", pos_path));
        let pos_embed = sub(p, parent).f_var(
            leaf,
            &[1, n, e],
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            patch_embed,
            cls_token,
            pos_embed,
            body: Transformer::new(&prefix, cfg)?,
        })
    }

    /// The config.
    pub fn config(&self) -> &VitConfig {
        &self.cfg
    }

    /// Encode `[B, C, spatial…]` (must equal `img_size`/`in_channels`): returns the final normed tokens and every
    /// block's output, `[B, N, E]` each, cls token stripped.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<(Tensor, Vec<Tensor>)> {
        check_image("ViT input", x, self.cfg.in_channels, &self.cfg.img_size)?;
        let mut t = self.patch_embed.forward(x)?;
        if let Some(cls) = &self.cls_token {
            let b = t.size()[0];
            t = Tensor::f_cat(&[cls.f_expand([b, -1, -1], false)?, t], 1)?;
        }
        t = t.f_add(&self.pos_embed)?;
        let (out, hidden) = self.body.forward(&t, train)?;
        let skip = i64::from(self.cls_token.is_some());
        let strip = |h: &Tensor| -> Result<Tensor> {
            Ok(h.f_narrow(1, skip, self.cfg.num_patches() as i64)?)
        };
        let hidden = hidden.iter().map(strip).collect::<Result<Vec<_>>>()?;
        Ok((strip(&out)?, hidden))
    }
}

/// `[B, N, E]` tokens to a `[B, E, g…]` feature map in grid order (the inverse of flatten + transpose).
pub fn tokens_to_grid(t: &Tensor, grid: &[usize]) -> Result<Tensor> {
    let s = t.size();
    let n: usize = grid.iter().product();
    if s.len() != 3 || s[1] != n as i64 {
        return Err(shape_err(
            "tokens",
            format!("[B, {n}, E] for grid {grid:?}"),
            s,
        ));
    }
    let mut view = vec![s[0]];
    view.extend(grid.iter().map(|&g| g as i64));
    view.push(s[2]);
    let nd = grid.len() as i64;
    let mut perm = vec![0i64, nd + 1];
    perm.extend(1..=nd);
    Ok(t.f_reshape(&view)?.f_permute(&perm)?.f_contiguous()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    pub(crate) fn cfg2d() -> VitConfig {
        VitConfig::timm(2, vec![16, 24], vec![8, 8], 16, 2, 2)
            .with_mlp_ratio(2.0)
            .with_drop_path_rate(0.1)
    }

    #[test]
    fn patch_embed_on_tokens_equals_conv_on_image() {
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let pe = PatchEmbed::new(&vs.root(), 2, 5, &[2, 3, 4]).unwrap();
        let x = Tensor::randn([2, 2, 4, 6, 8], (Kind::Float, Device::Cpu));
        let a = pe.forward(&x).unwrap();
        let b = pe
            .forward_patches(&crate::mae::patchify(&x, &[2, 3, 4]).unwrap())
            .unwrap();
        assert_eq!(a.size(), vec![2, 8, 5]);
        assert!((a - b).abs().max().double_value(&[]) < 1e-5);
    }

    #[test]
    fn vit_shapes_cls_strip_and_input_check() {
        let vs = VarStore::new(Device::Cpu);
        let v = Vit::new(&vs.root(), &cfg2d()).unwrap();
        let x = Tensor::randn([3, 2, 16, 24], (Kind::Float, Device::Cpu));
        let (out, hidden) = v.forward(&x, true).unwrap();
        assert_eq!(out.size(), vec![3, 6, 16]);
        assert_eq!(hidden.len(), 2);
        assert_eq!(hidden[1].size(), vec![3, 6, 16]);
        assert_eq!(vs.variables()["encoder.pos_embed"].size(), vec![1, 7, 16]);
        let bad = Tensor::randn([3, 2, 16, 16], (Kind::Float, Device::Cpu));
        assert!(v
            .forward(&bad, false)
            .unwrap_err()
            .to_string()
            .contains("[B, 2, 16, 24]"));
    }

    #[test]
    fn tokens_to_grid_inverts_flatten() {
        let img = Tensor::randn([2, 5, 3, 4, 2], (Kind::Float, Device::Cpu));
        let t = img.flatten(2, -1).transpose(1, 2);
        let back = tokens_to_grid(&t, &[3, 4, 2]).unwrap();
        assert_eq!((back - img).abs().max().double_value(&[]), 0.0);
    }
}
