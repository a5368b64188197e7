//! Training losses: MAE reconstruction (norm-pix MSE on masked patches, SelfMedMAE's Fourier-feature regression,
//! an FFT amplitude term) and segmentation (Dice, Dice + cross-entropy as MONAI's `DiceCELoss`).

use spec::{OutputActivation, PixVariance};
use tch::{Kind, Reduction, Tensor};

use crate::error::{shape_err, Result};

/// Epsilon inside the square root of the per-patch target normalisation.
pub const NORM_PIX_EPS: f64 = 1e-6;

/// Per-token mean and `√(var + 1e-6)` over the last axis, `keepdim` (the norm-pix target statistics); the variance
/// divides by n (`Biased`, a non-affine LayerNorm) or by n − 1 (`Unbiased`, `torch.var`).
pub fn patch_stats(tokens: &Tensor, variance: PixVariance) -> Result<(Tensor, Tensor)> {
    let mean = tokens.f_mean_dim([-1i64].as_slice(), true, None::<Kind>)?;
    let correction = match variance {
        PixVariance::Biased => 0,
        PixVariance::Unbiased => 1,
    };
    let var = tokens.f_var_correction([-1i64].as_slice(), correction, true)?;
    Ok((mean, var.f_add_scalar(NORM_PIX_EPS)?.f_sqrt()?))
}

/// The norm-pix target: each token minus its mean, over `√(var + 1e-6)` with the given variance.
pub fn norm_pix_target(tokens: &Tensor, variance: PixVariance) -> Result<Tensor> {
    let (mean, std) = patch_stats(tokens, variance)?;
    Ok(tokens.f_sub(&mean)?.f_div(&std)?)
}

/// Mean of `(pred − target)²` over the tokens with `mask == 1` (`pred`, `target`: `[B, L, D]`; `mask`: `[B, L]`).
pub fn masked_mse(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let ps = pred.size();
    if ps.len() != 3 || ps != target.size() || ps[..2] != mask.size()[..] {
        return Err(shape_err(
            "masked MSE pred/target/mask",
            format!("[B, L, D] twice and [B, L]; target {:?}", target.size()),
            (pred.size(), mask.size()),
        ));
    }
    let per_token =
        pred.f_sub(target)?
            .f_square()?
            .f_mean_dim([-1i64].as_slice(), false, None::<Kind>)?;
    Ok(per_token
        .f_mul(mask)?
        .f_sum(None::<Kind>)?
        .f_div(&mask.f_sum(None::<Kind>)?)?)
}

/// SelfMedMAE's Fourier frequencies `ω_k = 2π / T^(k/K)`, k = 0..K−1, in f32 (computed with the same tensor ops as
/// the PyTorch reference, so the values agree bit for bit).
pub fn fourier_omega(k: usize, temperature: f64, device: tch::Device) -> Result<Tensor> {
    let e = Tensor::f_arange(k as i64, (Kind::Float, device))?.f_div_scalar(k as f64)?;
    Ok(Tensor::f_pow_scalar(temperature, &e)?
        .f_reciprocal()?
        .f_mul_scalar(2.0 * std::f64::consts::PI)?)
}

/// Fourier features of raw values `[B, L, P]` (P = voxels·channels, channel-last): `[B, L, P·2K]` read in the order
/// `((s·C + c)·2 + sin/cos)·K + k`, i.e. per value `[sin(t·ω_0..K−1), cos(t·ω_0..K−1)]`.
pub fn fourier_features(values: &Tensor, k: usize, temperature: f64) -> Result<Tensor> {
    if k == 0 || !(temperature > 0.0 && temperature < 1.0) {
        return Err(shape_err(
            "Fourier features",
            "K ≥ 1 and temperature in (0, 1)",
            (k, temperature),
        ));
    }
    let omega = fourier_omega(k, temperature, values.device())?;
    let arg = values.f_unsqueeze(-1)?.f_mul(&omega)?;
    let f = Tensor::f_stack(&[arg.f_sin()?, arg.f_cos()?], -2)?;
    Ok(f.f_flatten(2, -1)?)
}

/// Spectral amplitude loss on images `[B, C, spatial…]`: `mean |(|F(recon)| − |F(target)|)|²` where F is the
/// orthonormal `fftn` over the spatial axes, so the scale matches a pixel-domain MSE (Parseval).
pub fn fft_amplitude_loss(recon: &Tensor, target: &Tensor) -> Result<Tensor> {
    let s = recon.size();
    if s != target.size() || !(4..=5).contains(&s.len()) {
        return Err(shape_err(
            "FFT loss images",
            format!(
                "two [B, C, spatial…] of one shape; target {:?}",
                target.size()
            ),
            s,
        ));
    }
    let dims: Vec<i64> = (2..s.len() as i64).collect();
    let a = recon
        .f_fft_fftn(None::<&[i64]>, dims.as_slice(), "ortho")?
        .f_abs()?;
    let b = target
        .f_fft_fftn(None::<&[i64]>, dims.as_slice(), "ortho")?
        .f_abs()?;
    Ok(a.f_sub(&b)?.f_square()?.f_mean(None::<Kind>)?)
}

/// Smoothing and weights of [`dice_ce_loss`]; defaults are MONAI's (`smooth_nr = smooth_dr = 1e-5`, λ = 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiceCeOptions {
    /// Added to the Dice numerator.
    pub smooth_nr: f64,
    /// Added to the Dice denominator.
    pub smooth_dr: f64,
    /// Weight of the Dice term.
    pub lambda_dice: f64,
    /// Weight of the cross-entropy term.
    pub lambda_ce: f64,
}

impl Default for DiceCeOptions {
    fn default() -> Self {
        Self {
            smooth_nr: 1e-5,
            smooth_dr: 1e-5,
            lambda_dice: 1.0,
            lambda_ce: 1.0,
        }
    }
}

/// MONAI's `DiceLoss` on probabilities and a one-hot/binary target of the same shape `[B, K, spatial…]`:
/// per sample and channel `1 − (2·Σ p·t + smooth_nr) / (Σ p + Σ t + smooth_dr)` over the spatial axes, averaged
/// (background included, unsquared prediction).
pub fn dice_loss(
    probs: &Tensor,
    target: &Tensor,
    smooth_nr: f64,
    smooth_dr: f64,
) -> Result<Tensor> {
    let s = probs.size();
    if s != target.size() || s.len() < 3 {
        return Err(shape_err("Dice target", s.clone(), target.size()));
    }
    let dims: Vec<i64> = (2..s.len() as i64).collect();
    let sum = |t: &Tensor| t.f_sum_dim_intlist(dims.as_slice(), false, None::<Kind>);
    let inter = sum(&probs.f_mul(target)?)?;
    let denom = sum(probs)?.f_add(&sum(target)?)?;
    let ratio = inter
        .f_mul_scalar(2.0)?
        .f_add_scalar(smooth_nr)?
        .f_div(&denom.f_add_scalar(smooth_dr)?)?;
    Ok(ratio.f_neg()?.f_add_scalar(1.0)?.f_mean(None::<Kind>)?)
}

/// Dice + cross-entropy on logits `[B, K, spatial…]`.
///
/// - `Softmax`: `target` holds class indices, `[B, 1, spatial…]` or `[B, spatial…]`, values in `0..K`; equals MONAI
///   `DiceCELoss(to_onehot_y=True, softmax=True)`.
/// - `Sigmoid`: `target` is a binary map `[B, K, spatial…]`; Dice on sigmoid probabilities plus BCE-with-logits.
///   For K = 1 this equals MONAI `DiceCELoss(sigmoid=True)`; for K > 1 MONAI 1.6 would take a soft-label softmax
///   cross-entropy across channels, which is wrong for overlapping labels, so medmae keeps BCE per channel.
pub fn dice_ce_loss(
    logits: &Tensor,
    target: &Tensor,
    activation: OutputActivation,
    opts: &DiceCeOptions,
) -> Result<Tensor> {
    let s = logits.size();
    if s.len() < 3 {
        return Err(shape_err("segmentation logits", "[B, K, spatial…]", s));
    }
    let (dice, ce) = match activation {
        OutputActivation::Softmax => {
            let mut spatial = vec![s[0]];
            spatial.extend(&s[2..]);
            let ts = target.size();
            let labels = if ts == spatial {
                target.shallow_clone()
            } else if ts.len() == s.len() && ts[1] == 1 && ts[2..] == s[2..] && ts[0] == s[0] {
                target.f_squeeze_dim(1)?
            } else {
                return Err(shape_err(
                    "softmax target (class indices)",
                    format!("{spatial:?} or with a channel axis of 1"),
                    ts,
                ));
            };
            let labels = labels.f_to_kind(Kind::Int64)?;
            let (lo, hi) = (
                labels.f_min()?.int64_value(&[]),
                labels.f_max()?.int64_value(&[]),
            );
            if lo < 0 || hi >= s[1] {
                return Err(shape_err(
                    "softmax target values",
                    format!("class indices in 0..{}", s[1]),
                    (lo, hi),
                ));
            }
            let mut perm = vec![0i64, s.len() as i64 - 1];
            perm.extend(1..s.len() as i64 - 1);
            let onehot = labels
                .f_one_hot(s[1])?
                .f_permute(&perm)?
                .f_to_kind(logits.kind())?;
            let probs = logits.f_softmax(1, None::<Kind>)?;
            let dice = dice_loss(&probs, &onehot, opts.smooth_nr, opts.smooth_dr)?;
            (
                dice,
                logits.f_cross_entropy_loss::<Tensor>(&labels, None, Reduction::Mean, -100, 0.0)?,
            )
        }
        OutputActivation::Sigmoid => {
            if target.size() != s {
                return Err(shape_err(
                    "sigmoid target (binary map)",
                    s.clone(),
                    target.size(),
                ));
            }
            let t = target.f_to_kind(logits.kind())?;
            let dice = dice_loss(&logits.f_sigmoid()?, &t, opts.smooth_nr, opts.smooth_dr)?;
            (
                dice,
                logits.f_binary_cross_entropy_with_logits::<Tensor>(
                    &t,
                    None,
                    None,
                    Reduction::Mean,
                )?,
            )
        }
    };
    Ok(dice
        .f_mul_scalar(opts.lambda_dice)?
        .f_add(&ce.f_mul_scalar(opts.lambda_ce)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    #[test]
    fn dice_hand_case() {
        // one sample, one channel, 4 pixels: p = [1, .5, 0, 0], t = [1, 1, 0, 0]
        let p = t(&[1.0, 0.5, 0.0, 0.0], &[1, 1, 2, 2]);
        let g = t(&[1.0, 1.0, 0.0, 0.0], &[1, 1, 2, 2]);
        let d = dice_loss(&p, &g, 1e-5, 1e-5).unwrap().double_value(&[]);
        let want = 1.0 - (2.0 * 1.5 + 1e-5) / (1.5 + 2.0 + 1e-5);
        assert!((d - want).abs() < 1e-7);
    }

    #[test]
    fn perfect_prediction_has_near_zero_dice_ce() {
        let labels = t(&[0.0, 1.0, 2.0, 1.0, 0.0, 2.0], &[1, 1, 2, 3]);
        let logits = labels
            .squeeze_dim(1)
            .to_kind(Kind::Int64)
            .one_hot(3)
            .permute([0, 3, 1, 2])
            .to_kind(Kind::Float)
            * 40.0;
        let l = dice_ce_loss(
            &logits,
            &labels,
            OutputActivation::Softmax,
            &DiceCeOptions::default(),
        )
        .unwrap();
        assert!(l.double_value(&[]) < 1e-5);
        let bad = t(&[0.0, 1.0, 3.0, 1.0, 0.0, 2.0], &[1, 1, 2, 3]);
        let e = dice_ce_loss(
            &logits,
            &bad,
            OutputActivation::Softmax,
            &DiceCeOptions::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("0..3"), "{e}");
    }

    #[test]
    fn norm_pix_target_uses_the_chosen_variance() {
        // values 1, 2, 3, 6: mean 3, squared deviations 4 + 1 + 0 + 9 = 14 → biased 14/4, unbiased 14/3
        let x = t(&[1.0, 2.0, 3.0, 6.0], &[1, 1, 4]);
        for (variance, var) in [
            (PixVariance::Biased, 3.5f64),
            (PixVariance::Unbiased, 14.0 / 3.0),
        ] {
            let y = Vec::<f32>::try_from(norm_pix_target(&x, variance).unwrap().flatten(0, -1))
                .unwrap();
            let s = (var + 1e-6).sqrt();
            for (a, b) in y.iter().zip([-2.0, -1.0, 0.0, 3.0]) {
                assert!((*a as f64 - b / s).abs() < 1e-6, "{variance:?}: {y:?}");
            }
        }
        // masked MSE ignores visible tokens
        let pred = Tensor::zeros([1, 2, 3], (Kind::Float, Device::Cpu));
        let tgt = t(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0], &[1, 2, 3]);
        let m = masked_mse(&pred, &tgt, &t(&[0.0, 1.0], &[1, 2]))
            .unwrap()
            .double_value(&[]);
        assert_eq!(m, 4.0);
    }

    #[test]
    fn fourier_features_layout_and_frequencies() {
        // C = 1, K = 2, T = 0.01: ω = [2π, 2π/0.1]
        let v = t(&[0.25, 0.5], &[1, 1, 2]);
        let f =
            Vec::<f32>::try_from(fourier_features(&v, 2, 0.01).unwrap().flatten(0, -1)).unwrap();
        let w = [2.0 * std::f64::consts::PI, 20.0 * std::f64::consts::PI];
        let mut want = vec![];
        for x in [0.25, 0.5] {
            want.extend(w.iter().map(|w| (x * w).sin()));
            want.extend(w.iter().map(|w| (x * w).cos()));
        }
        for (a, b) in f.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{f:?} vs {want:?}");
        }
    }

    #[test]
    fn fft_loss_is_zero_for_shifts_and_positive_otherwise() {
        let x = Tensor::randn([1, 1, 4, 6], (Kind::Float, Device::Cpu));
        // a circular shift keeps every amplitude
        let shifted = x.roll([1i64].as_slice(), [3i64].as_slice());
        assert!(fft_amplitude_loss(&shifted, &x).unwrap().double_value(&[]) < 1e-10);
        assert!(
            fft_amplitude_loss(&(&x * 2.0), &x)
                .unwrap()
                .double_value(&[])
                > 1e-3
        );
    }
}
