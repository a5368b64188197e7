//! Masked autoencoder (SelfMedMAE MAE-3D, He et al. MAE-2D): channel-last patchify, per-sample random masking by
//! argsort of noise, ViT encoder on the visible patches with a fixed sincos table, light decoder, and the
//! reconstruction losses of `spec::ReconLoss`.
//!
//! The decoder runs in the original token order (He et al.); SelfMedMAE runs it in shuffled order, which gives the
//! same outputs because attention is permutation-equivariant (checked against a shuffled-order reference).

use spec::{MaeConfig, ReconLoss};
use tch::nn::{self, Init};
use tch::{Kind, Tensor};

use crate::error::{shape_err, Result};
use crate::layers::{check_image, sub, Linear};
use crate::losses::{
    fft_amplitude_loss, fourier_features, masked_mse, norm_pix_target, patch_stats,
};
use crate::pos_embed::sincos_table;
use crate::vit::{PatchEmbed, Transformer};

/// `[B, C, spatial…] → [B, ∏grid, ∏patch·C]`, channel-last inside a token: reshape to `[B, C, g1, p1, g2, p2, …]`,
/// permute to `(B, g…, p…, C)`, flatten.
pub fn patchify(imgs: &Tensor, patch: &[usize]) -> Result<Tensor> {
    let s = imgs.size();
    let nd = patch.len();
    if s.len() != nd + 2
        || s[2..]
            .iter()
            .zip(patch)
            .any(|(&x, &p)| p == 0 || x % p as i64 != 0)
    {
        return Err(shape_err(
            "patchify input",
            format!("[B, C] + {nd} spatial sizes divisible by the patch {patch:?}"),
            s,
        ));
    }
    let (b, c) = (s[0], s[1]);
    let mut view = vec![b, c];
    for (&x, &p) in s[2..].iter().zip(patch) {
        view.extend([x / p as i64, p as i64]);
    }
    let mut perm = vec![0i64];
    perm.extend((0..nd as i64).map(|i| 2 + 2 * i));
    perm.extend((0..nd as i64).map(|i| 3 + 2 * i));
    perm.push(1);
    let l: i64 = s[2..]
        .iter()
        .zip(patch)
        .map(|(&x, &p)| x / p as i64)
        .product();
    let pv: i64 = patch.iter().map(|&p| p as i64).product();
    Ok(imgs
        .f_reshape(&view)?
        .f_permute(&perm)?
        .f_reshape([b, l, pv * c])?)
}

/// The exact inverse of [`patchify`]: `[B, ∏grid, ∏patch·C] → [B, C, grid·patch…]`.
pub fn unpatchify(
    tokens: &Tensor,
    patch: &[usize],
    grid: &[usize],
    channels: usize,
) -> Result<Tensor> {
    let s = tokens.size();
    let nd = patch.len();
    let l: usize = grid.iter().product();
    let width = patch.iter().product::<usize>() * channels;
    if grid.len() != nd || s.len() != 3 || s[1] != l as i64 || s[2] != width as i64 {
        return Err(shape_err(
            "unpatchify tokens",
            format!("[B, {l}, {width}]"),
            s,
        ));
    }
    let b = s[0];
    let mut view = vec![b];
    view.extend(grid.iter().map(|&g| g as i64));
    view.extend(patch.iter().map(|&p| p as i64));
    view.push(channels as i64);
    let nd = nd as i64;
    let mut perm = vec![0i64, 2 * nd + 1];
    for i in 1..=nd {
        perm.extend([i, nd + i]);
    }
    let mut out = vec![b, channels as i64];
    out.extend(grid.iter().zip(patch).map(|(&g, &p)| (g * p) as i64));
    Ok(tokens.f_reshape(&view)?.f_permute(&perm)?.f_reshape(&out)?)
}

/// Result of [`random_masking`]; every tensor is per sample (`[B, …]`).
#[derive(Debug)]
pub struct Masking {
    /// `argsort(noise)`: token order, kept tokens first.
    pub ids_shuffle: Tensor,
    /// `argsort(ids_shuffle)`: where each original token sits in the shuffled order.
    pub ids_restore: Tensor,
    /// The first `len_keep` entries of `ids_shuffle`.
    pub ids_keep: Tensor,
    /// `[B, L]` float, 1 for removed tokens, in original order.
    pub mask: Tensor,
}

/// Per-sample random masking: keep the `len_keep` tokens with the smallest noise (`noise`: `[B, L]`).
pub fn random_masking(noise: &Tensor, len_keep: usize) -> Result<Masking> {
    let s = noise.size();
    if s.len() != 2 || len_keep as i64 > s[1] {
        return Err(shape_err(
            "masking noise",
            format!("[B, L] with L ≥ {len_keep}"),
            s,
        ));
    }
    let ids_shuffle = noise.f_argsort(1, false)?;
    let ids_restore = ids_shuffle.f_argsort(1, false)?;
    let ids_keep = ids_shuffle.f_narrow(1, 0, len_keep as i64)?;
    let mask = Tensor::f_ones(&s, (Kind::Float, noise.device()))?;
    let _ = mask.f_narrow(1, 0, len_keep as i64)?.f_fill_(0.0)?;
    let mask = mask.f_gather(1, &ids_restore, false)?;
    Ok(Masking {
        ids_shuffle,
        ids_restore,
        ids_keep,
        mask,
    })
}

/// Gather whole tokens `[B, L, E]` along axis 1 with indices `[B, n]`.
fn gather_tokens(x: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let e = x.size()[2];
    let idx = ids.f_unsqueeze(-1)?.f_expand([-1, -1, e], false)?;
    Ok(x.f_gather(1, &idx, false)?)
}

/// What one MAE forward returns.
#[derive(Debug)]
pub struct MaeOutput {
    /// Scalar reconstruction loss (see [`Mae::forward`]).
    pub loss: Tensor,
    /// `[B, L, head_dim]` decoder predictions in original token order (cls row dropped).
    pub pred: Tensor,
    /// `[B, L]` float, 1 for removed tokens.
    pub mask: Tensor,
}

/// The masked autoencoder; parameters named as SelfMedMAE's MAE-3D (`encoder.*`, `encoder_pos_embed`, `decoder.*`…).
#[derive(Debug)]
pub struct Mae {
    cfg: MaeConfig,
    patch_embed: PatchEmbed,
    cls_token: Tensor,
    encoder_pos_embed: Tensor,
    encoder: Transformer,
    encoder_to_decoder: Linear,
    mask_token: Tensor,
    decoder_pos_embed: Tensor,
    decoder: Transformer,
    head: Linear,
}

impl Mae {
    /// Build on the model root `p`. The sincos tables are non-trainable variables so checkpoints carry them.
    pub fn new(p: &nn::Path, cfg: &MaeConfig) -> Result<Self> {
        cfg.validate()?;
        let enc = &cfg.encoder;
        let dec = cfg.decoder_vit();
        let (e, ed) = (enc.embed_dim, cfg.decoder_embed_dim);
        let grid = enc.grid();
        let normal = Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        };
        let ep = p.sub("encoder");
        Ok(Self {
            patch_embed: PatchEmbed::new(
                &sub(p, "encoder.patch_embed.proj"),
                enc.in_channels,
                e,
                &enc.patch_size,
            )?,
            cls_token: ep.f_var("cls_token", &[1, 1, e as i64], normal)?,
            encoder_pos_embed: p.add(
                "encoder_pos_embed",
                sincos_table(&grid, e, p.device())?,
                false,
            ),
            encoder: Transformer::new(&ep, enc)?,
            encoder_to_decoder: Linear::new(&p.sub("encoder_to_decoder"), e, ed, true)?,
            mask_token: p.f_var("mask_token", &[1, 1, ed as i64], normal)?,
            decoder_pos_embed: p.add(
                "decoder_pos_embed",
                sincos_table(&grid, ed, p.device())?,
                false,
            ),
            decoder: Transformer::new(&p.sub("decoder"), &dec)?,
            head: Linear::new(&sub(p, "decoder.head"), ed, cfg.head_dim(), true)?,
            cfg: cfg.clone(),
        })
    }

    /// The config.
    pub fn config(&self) -> &MaeConfig {
        &self.cfg
    }

    /// Mask, encode, decode and score a batch `[B, C, spatial…]`.
    ///
    /// `noise` (`[B, L]`, default uniform random) decides the mask: the `len_keep` tokens with the smallest noise stay
    /// visible. The loss is averaged over removed tokens only:
    /// - `Mse`: MSE against the (optionally per-patch normalised) patch pixels; with `fft_weight > 0`, plus
    ///   `fft_weight ×` [`fft_amplitude_loss`] between the image made of the predicted masked patches pasted into the
    ///   visible target patches and the target image (both in the normalised space when `norm_pix_loss`).
    /// - `Fourier`: SelfMedMAE's Fourier-feature regression of the raw pixel values ([`fourier_features`]).
    pub fn forward(&self, imgs: &Tensor, noise: Option<&Tensor>, train: bool) -> Result<MaeOutput> {
        let enc = &self.cfg.encoder;
        check_image("MAE input", imgs, enc.in_channels, &enc.img_size)?;
        let b = imgs.size()[0];
        let l = enc.num_patches() as i64;
        let x = patchify(imgs, &enc.patch_size)?;
        let noise = match noise {
            Some(n) if n.size() == [b, l] => n.f_to_device(imgs.device())?,
            Some(n) => return Err(shape_err("MAE noise", [b, l], n.size())),
            None => Tensor::f_rand([b, l], (Kind::Float, imgs.device()))?,
        };
        let m = random_masking(&noise, self.cfg.len_keep())?;
        let k = self.cfg.len_keep() as i64;

        let kept = gather_tokens(&x, &m.ids_keep)?;
        let pos = gather_tokens(
            &self.encoder_pos_embed.f_expand([b, -1, -1], false)?,
            &m.ids_keep,
        )?;
        let t = self.patch_embed.forward_patches(&kept)?.f_add(&pos)?;
        // The cls token's position embedding is zero, so it enters as is.
        let t = Tensor::f_cat(&[self.cls_token.f_expand([b, -1, -1], false)?, t], 1)?;
        let (latent, _) = self.encoder.forward(&t, train)?;

        let d = self.encoder_to_decoder.forward(&latent)?;
        let ed = self.cfg.decoder_embed_dim as i64;
        let masked = self.mask_token.f_expand([b, l - k, ed], false)?;
        let shuffled = Tensor::f_cat(&[d.f_narrow(1, 1, k)?, masked], 1)?;
        let tokens = gather_tokens(&shuffled, &m.ids_restore)?.f_add(&self.decoder_pos_embed)?;
        let tokens = Tensor::f_cat(&[d.f_narrow(1, 0, 1)?, tokens], 1)?;
        let (y, _) = self.decoder.forward(&tokens, train)?;
        let pred = self.head.forward(&y.f_narrow(1, 1, l)?)?;

        let loss = self.loss(&x, &pred, &m.mask)?;
        Ok(MaeOutput {
            loss,
            pred,
            mask: m.mask,
        })
    }

    fn loss(&self, x: &Tensor, pred: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let enc = &self.cfg.encoder;
        match self.cfg.loss {
            ReconLoss::Mse {
                norm_pix_loss,
                fft_weight,
                ..
            } => {
                let target = if norm_pix_loss {
                    norm_pix_target(x, self.cfg.pix_variance())?
                } else {
                    x.shallow_clone()
                };
                let mse = masked_mse(pred, &target, mask)?;
                if fft_weight <= 0.0 {
                    return Ok(mse);
                }
                let me = mask.f_unsqueeze(-1)?;
                let pasted = pred
                    .f_mul(&me)?
                    .f_add(&target.f_mul(&me.f_neg()?.f_add_scalar(1.0)?)?)?;
                let grid = enc.grid();
                let recon = unpatchify(&pasted, &enc.patch_size, &grid, enc.in_channels)?;
                let tgt = unpatchify(&target, &enc.patch_size, &grid, enc.in_channels)?;
                Ok(mse.f_add(&fft_amplitude_loss(&recon, &tgt)?.f_mul_scalar(fft_weight)?)?)
            }
            ReconLoss::Fourier {
                embed_dim,
                temperature,
            } => {
                let target = fourier_features(x, embed_dim / (2 * enc.in_channels), temperature)?;
                masked_mse(pred, &target, mask)
            }
        }
    }

    /// Encoder features of whole images (no masking): `[B, L, E]` final normed tokens, cls stripped.
    pub fn encode(&self, imgs: &Tensor) -> Result<Tensor> {
        let enc = &self.cfg.encoder;
        check_image("MAE input", imgs, enc.in_channels, &enc.img_size)?;
        let b = imgs.size()[0];
        let t = self
            .patch_embed
            .forward(imgs)?
            .f_add(&self.encoder_pos_embed)?;
        let t = Tensor::f_cat(&[self.cls_token.f_expand([b, -1, -1], false)?, t], 1)?;
        let (y, _) = self.encoder.forward(&t, false)?;
        Ok(y.f_narrow(1, 1, enc.num_patches() as i64)?)
    }

    /// Images for visual inspection, `[B, C, spatial…]` each: the input with removed patches zeroed, and the input
    /// with removed patches replaced by the prediction in pixel units. With `norm_pix_loss` the prediction is mapped
    /// back through the patch's own target mean and std (the exact inverse of the target normalisation); with the
    /// Fourier loss, a pixel is decoded from its lowest frequency as `atan2(sin, cos)/2π mod 1` (exact for values
    /// in [0, 1), the usual intensity range after ScaleIntensityRange).
    pub fn reconstruct(&self, out: &MaeOutput, imgs: &Tensor) -> Result<(Tensor, Tensor)> {
        let enc = &self.cfg.encoder;
        check_image("MAE input", imgs, enc.in_channels, &enc.img_size)?;
        let x = patchify(imgs, &enc.patch_size)?;
        let pred = out.pred.f_detach()?;
        let (ps, xs) = (pred.size(), x.size());
        if ps.len() != 3 || ps[..2] != xs[..2] || out.mask.size() != xs[..2] {
            return Err(shape_err(
                "MAE output",
                format!("pred [B, L, D] and mask [B, L] for [B, L] = {:?}", &xs[..2]),
                pred.size(),
            ));
        }
        let pixels = match self.cfg.loss {
            ReconLoss::Mse {
                norm_pix_loss: true,
                ..
            } => {
                let (mean, std) = patch_stats(&x, self.cfg.pix_variance())?;
                pred.f_mul(&std)?.f_add(&mean)?
            }
            ReconLoss::Mse {
                norm_pix_loss: false,
                ..
            } => pred,
            ReconLoss::Fourier { embed_dim, .. } => {
                let k = (embed_dim / (2 * enc.in_channels)) as i64;
                let s = x.size();
                let f = pred.f_reshape([s[0], s[1], s[2], 2, k])?;
                let (sin, cos) = (
                    f.f_select(3, 0)?.f_select(3, 0)?,
                    f.f_select(3, 1)?.f_select(3, 0)?,
                );
                sin.f_atan2(&cos)?
                    .f_div_scalar(2.0 * std::f64::consts::PI)?
                    .f_remainder(1.0)?
            }
        };
        let me = out.mask.f_unsqueeze(-1)?.f_to_kind(Kind::Float)?;
        let keep = me.f_neg()?.f_add_scalar(1.0)?;
        let grid = enc.grid();
        let masked_input = unpatchify(&x.f_mul(&keep)?, &enc.patch_size, &grid, enc.in_channels)?;
        let recon = pixels.f_mul(&me)?.f_add(&x.f_mul(&keep)?)?;
        Ok((
            masked_input,
            unpatchify(&recon, &enc.patch_size, &grid, enc.in_channels)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::VitConfig;
    use tch::{nn::VarStore, Device};

    pub(crate) fn cfg(spatial_dims: usize, loss: ReconLoss) -> MaeConfig {
        let (img, patch) = if spatial_dims == 3 {
            (vec![8, 8, 12], vec![4, 4, 2])
        } else {
            (vec![16, 24], vec![4, 4])
        };
        let encoder = VitConfig::timm(2, img, patch, 24, 2, 2).with_mlp_ratio(2.0);
        MaeConfig {
            encoder,
            decoder_embed_dim: 12,
            decoder_depth: 1,
            decoder_num_heads: 2,
            mask_ratio: 0.75,
            loss,
        }
    }

    #[test]
    fn patchify_roundtrip_and_channel_last_layout() {
        let x = Tensor::randn([2, 3, 4, 6, 8], (Kind::Float, Device::Cpu));
        let t = patchify(&x, &[2, 3, 4]).unwrap();
        assert_eq!(t.size(), vec![2, 8, 72]);
        let back = unpatchify(&t, &[2, 3, 4], &[2, 2, 2], 3).unwrap();
        assert_eq!((&back - &x).abs().max().double_value(&[]), 0.0);
        // token (ih=1, iw=0, id=1) = (1*2 + 0)*2 + 1 = 5; in-patch (a=1, b=2, c=3), channel 2: ((1*3+2)*4+3)*3+2
        let v = t.double_value(&[1, 5, (((3 + 2) * 4 + 3) * 3 + 2) as i64]);
        assert_eq!(v, x.double_value(&[1, 2, 2 + 1, 2, 4 + 3]));
        let x2 = Tensor::randn([1, 2, 6, 4], (Kind::Float, Device::Cpu));
        let back2 = unpatchify(&patchify(&x2, &[3, 2]).unwrap(), &[3, 2], &[2, 2], 2).unwrap();
        assert_eq!((back2 - &x2).abs().max().double_value(&[]), 0.0);
        assert!(patchify(&x2, &[4, 2]).is_err());
    }

    #[test]
    fn masking_keeps_exactly_len_keep_per_sample() {
        tch::manual_seed(3);
        let noise = Tensor::rand([5, 24], (Kind::Float, Device::Cpu));
        let m = random_masking(&noise, 6).unwrap();
        let removed = m
            .mask
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        assert_eq!(Vec::<f32>::try_from(removed).unwrap(), vec![18.0; 5]);
        // kept tokens are exactly the 6 smallest noises, and their mask is 0
        for bi in 0..5 {
            let n = Vec::<f32>::try_from(noise.get(bi)).unwrap();
            let mut sorted = n.clone();
            sorted.sort_by(f32::total_cmp);
            for j in 0..24 {
                let kept = m.mask.double_value(&[bi, j]) == 0.0;
                assert_eq!(kept, n[j as usize] <= sorted[5]);
            }
        }
        // ids_restore inverts ids_shuffle
        let ident = m.ids_shuffle.gather(1, &m.ids_restore, false);
        assert_eq!(
            ident,
            Tensor::arange(24, (Kind::Int64, Device::Cpu)).expand([5, 24], false)
        );
    }

    #[test]
    fn forward_shapes_2d_and_3d_and_reconstruct_pastes_visible_patches() {
        for sd in [2, 3] {
            let c = cfg(
                sd,
                ReconLoss::Mse {
                    norm_pix_loss: true,
                    norm_pix_variance: None,
                    fft_weight: 0.3,
                },
            );
            let vs = VarStore::new(Device::Cpu);
            let mae = Mae::new(&vs.root(), &c).unwrap();
            let mut shape = vec![2i64, 2];
            shape.extend(c.encoder.img_size.iter().map(|&s| s as i64));
            let x = Tensor::rand(&shape, (Kind::Float, Device::Cpu));
            let out = mae.forward(&x, None, true).unwrap();
            assert_eq!(out.pred.size(), vec![2, 24, c.head_dim() as i64]);
            assert!(out.loss.double_value(&[]).is_finite());
            out.loss.backward();
            let (masked, recon) = mae.reconstruct(&out, &x).unwrap();
            assert_eq!(recon.size(), shape);
            // visible patches of the reconstruction equal the input; masked input is zero where tokens were removed
            let keep = 1.0 - out.mask.unsqueeze(-1);
            let kept_img = unpatchify(
                &(patchify(&x, &c.encoder.patch_size).unwrap() * &keep),
                &c.encoder.patch_size,
                &c.encoder.grid(),
                2,
            )
            .unwrap();
            assert!((&masked - &kept_img).abs().max().double_value(&[]) < 1e-7);
            let vis = patchify(&recon, &c.encoder.patch_size).unwrap() * &keep;
            assert!(
                (vis - patchify(&kept_img, &c.encoder.patch_size).unwrap())
                    .abs()
                    .max()
                    .double_value(&[])
                    < 1e-6
            );
            assert_eq!(mae.encode(&x).unwrap().size(), vec![2, 24, 24]);
        }
    }

    #[test]
    fn reconstruct_inverts_the_loss_targets() {
        use crate::losses::{fourier_features, norm_pix_target};
        // a perfect prediction of the target must reconstruct the input exactly, for both target kinds
        let fourier = ReconLoss::Fourier {
            embed_dim: 12,
            temperature: 0.01,
        };
        for (sd, loss) in [
            (3, ReconLoss::default()),
            (2, ReconLoss::default()),
            (3, fourier),
        ] {
            let c = cfg(sd, loss.clone());
            let vs = VarStore::new(Device::Cpu);
            let mae = Mae::new(&vs.root(), &c).unwrap();
            let mut shape = vec![2i64, 2];
            shape.extend(c.encoder.img_size.iter().map(|&s| s as i64));
            let x = Tensor::rand(&shape, (Kind::Float, Device::Cpu)) * 0.98;
            let tokens = patchify(&x, &c.encoder.patch_size).unwrap();
            let pred = match loss {
                ReconLoss::Fourier { .. } => fourier_features(&tokens, 3, 0.01).unwrap(),
                ReconLoss::Mse { .. } => norm_pix_target(&tokens, c.pix_variance()).unwrap(),
            };
            let mask = random_masking(&Tensor::rand([2, 24], (Kind::Float, Device::Cpu)), 6)
                .unwrap()
                .mask;
            let out = MaeOutput {
                loss: Tensor::from(0.0f32),
                pred,
                mask,
            };
            let (_, recon) = mae.reconstruct(&out, &x).unwrap();
            assert!(
                (recon - &x).abs().max().double_value(&[]) < 1e-5,
                "{loss:?}"
            );
        }
    }

    #[test]
    fn sincos_tables_are_frozen_variables() {
        let vs = VarStore::new(Device::Cpu);
        let c = cfg(3, ReconLoss::default());
        Mae::new(&vs.root(), &c).unwrap();
        let vars = vs.variables();
        assert!(!vars["encoder_pos_embed"].requires_grad());
        assert!(!vars["decoder_pos_embed"].requires_grad());
        assert!(vars["mask_token"].requires_grad());
        assert_eq!(vs.trainable_variables().len(), vars.len() - 2);
    }

    #[test]
    fn bad_noise_and_input_are_shape_errors() {
        let vs = VarStore::new(Device::Cpu);
        let mae = Mae::new(&vs.root(), &cfg(2, ReconLoss::default())).unwrap();
        let x = Tensor::rand([1, 2, 16, 24], (Kind::Float, Device::Cpu));
        let e = mae
            .forward(
                &x,
                Some(&Tensor::rand([1, 5], (Kind::Float, Device::Cpu))),
                false,
            )
            .unwrap_err();
        assert!(e.to_string().contains("MAE noise"), "{e}");
        let e = mae
            .forward(
                &Tensor::rand([1, 1, 16, 24], (Kind::Float, Device::Cpu)),
                None,
                false,
            )
            .unwrap_err();
        assert!(e.to_string().contains("[B, 2, 16, 24]"), "{e}");
    }
}
