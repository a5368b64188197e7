//! Deterministic synthetic phantoms for demos and tests: labelled ellipsoids on a smooth noisy background,
//! multi-channel "modalities" with different contrasts, and BraTS-like nested tumour regions; plus a writer of a
//! complete MSD-style dataset folder (`imagesTr/`, `labelsTr/`, `imagesTs/`, `dataset.json`).
//!
//! Everything is a pure function of the config and the seed (ChaCha8), so a dataset regenerated anywhere is
//! bit-identical.

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

use ndarray::{Array3, Array4};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

pub use spec::dataset::{ClassCue, PhantomConfig, PhantomKind, SyntheticDatasetConfig};

/// A spec validation error as this crate's config error.
fn check(r: std::result::Result<(), spec::SpecError>) -> Result<()> {
    r.map_err(|e| ImagingError::config(e.field, e.msg))
}

/// A phantom image and its label map (same geometry; the label has one channel of class ids).
#[derive(Debug, Clone, PartialEq)]
pub struct Phantom {
    /// Image `(C, X, Y, Z)`.
    pub image: Volume,
    /// Label map `(1, X, Y, Z)`.
    pub label: Volume,
}

/// An axis-aligned ellipsoid in voxel coordinates; axes of extent 1 are ignored (2-D images).
#[derive(Debug, Clone, Copy)]
struct Ellipsoid {
    centre: [f64; 3],
    radii: [f64; 3],
}

impl Ellipsoid {
    fn random(rng: &mut ChaCha8Rng, shape: [usize; 3], frac: [f64; 2]) -> Self {
        let mut centre = [0.0; 3];
        let mut radii = [1.0; 3];
        for a in 0..3 {
            let n = shape[a] as f64;
            if shape[a] > 1 {
                radii[a] = (n * rng.random_range(frac[0]..=frac[1])).max(1.0);
                let lo = radii[a].min(n / 2.0);
                centre[a] = rng.random_range(lo..=(n - 1.0 - lo).max(lo));
            }
        }
        Self { centre, radii }
    }

    /// An ellipsoid of in-plane aspect ratio `aspect` (the long axis is axis 0 or 1, at random; axis 2 keeps the
    /// base radius). The radii keep the base radius's area in the plane and stay within 0.45 of each extent.
    fn random_elongated(
        rng: &mut ChaCha8Rng,
        shape: [usize; 3],
        frac: [f64; 2],
        aspect: f64,
    ) -> Self {
        let base = rng.random_range(frac[0]..=frac[1]);
        let long = rng.random_range(0..2usize);
        let mut centre = [0.0; 3];
        let mut radii = [1.0; 3];
        for a in 0..3 {
            let n = shape[a] as f64;
            if shape[a] > 1 {
                let f = match a {
                    2 => 1.0,
                    _ if a == long => aspect.sqrt(),
                    _ => 1.0 / aspect.sqrt(),
                };
                radii[a] = (n * base * f).min(0.45 * n).max(1.0);
                let lo = radii[a].min(n / 2.0);
                centre[a] = rng.random_range(lo..=(n - 1.0 - lo).max(lo));
            }
        }
        Self { centre, radii }
    }

    fn scaled(&self, f: f64) -> Self {
        Self {
            centre: self.centre,
            radii: self.radii.map(|r| r * f),
        }
    }

    fn contains(&self, idx: [usize; 3], shape: [usize; 3]) -> bool {
        let mut s = 0.0;
        for a in 0..3 {
            if shape[a] > 1 {
                let d = (idx[a] as f64 - self.centre[a]) / self.radii[a];
                s += d * d;
            }
        }
        s <= 1.0
    }

    fn volume(&self) -> f64 {
        self.radii.iter().product()
    }
}

/// A standard normal sample (Box–Muller), so noise needs no extra distribution crate.
fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

/// A smooth low-frequency background per channel (a product of random sinusoids).
fn background(rng: &mut ChaCha8Rng, shape: [usize; 3]) -> Array3<f32> {
    let base = rng.random_range(0.05..0.2);
    let amp = rng.random_range(0.02..0.08);
    let freq: [f64; 3] = std::array::from_fn(|_| rng.random_range(0.5..1.5));
    let phase: [f64; 3] = std::array::from_fn(|_| rng.random_range(0.0..2.0 * PI));
    Array3::from_shape_fn(shape, |(i, j, k)| {
        let u = [i, j, k]
            .into_iter()
            .enumerate()
            .map(|(a, x)| (2.0 * PI * freq[a] * x as f64 / shape[a] as f64 + phase[a]).cos());
        (base + amp * u.product::<f64>()) as f32
    })
}

fn add_noise(rng: &mut ChaCha8Rng, data: &mut Array4<f32>, std: f32, only: Option<&Array3<bool>>) {
    if std == 0.0 {
        return;
    }
    for mut ch in data.outer_iter_mut() {
        for (idx, v) in ch.indexed_iter_mut() {
            if only.is_none_or(|m| m[idx]) {
                *v += std * gaussian(rng) as f32;
            }
        }
    }
}

/// An ellipsoid phantom: K labelled ellipsoids (random centres, radii, per-channel intensities) drawn largest first on
/// a smooth background, plus Gaussian noise.
pub fn phantom(cfg: &PhantomConfig, seed: u64) -> Result<Phantom> {
    check(cfg.validate(""))?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shape = cfg.shape;
    let mut shapes: Vec<(usize, Ellipsoid)> = (1..=cfg.num_classes)
        .map(|k| {
            let e = match cfg.classes_by {
                ClassCue::Intensity => Ellipsoid::random(&mut rng, shape, cfg.radius_fraction),
                ClassCue::Shape => {
                    Ellipsoid::random_elongated(&mut rng, shape, cfg.radius_fraction, k as f64)
                }
            };
            (k, e)
        })
        .collect();
    // Largest first so small classes stay visible where ellipsoids overlap.
    shapes.sort_by(|a, b| b.1.volume().total_cmp(&a.1.volume()).then(a.0.cmp(&b.0)));
    // Class k's contrast is drawn around the centre of its own band of [0.3, 1.0) (±25 % of the band width), so the
    // classes differ in intensity in every phantom and a segmentation network can tell them apart.
    let k = cfg.num_classes.max(1) as f32;
    // With `classes_by: shape` every class draws from one band, [0.45, 0.85).
    let contrast: Vec<Vec<f32>> = (0..cfg.channels)
        .map(|_| {
            (0..=cfg.num_classes)
                .map(|c| match cfg.classes_by {
                    ClassCue::Intensity => {
                        0.3 + 0.7 * (c.max(1) as f32 - 0.5) / k
                            + 0.7 / k * rng.random_range(-0.25..0.25)
                    }
                    ClassCue::Shape => rng.random_range(0.45..0.85),
                })
                .collect()
        })
        .collect();
    let mut label = Array3::<f32>::zeros(shape);
    for (idx, v) in label.indexed_iter_mut() {
        let idx = [idx.0, idx.1, idx.2];
        for (k, e) in &shapes {
            if e.contains(idx, shape) {
                *v = *k as f32;
            }
        }
    }
    let mut data = Array4::<f32>::zeros((cfg.channels, shape[0], shape[1], shape[2]));
    for (c, mut ch) in data.outer_iter_mut().enumerate() {
        let bg = background(&mut rng, shape);
        ndarray::Zip::from(&mut ch)
            .and(&bg)
            .and(&label)
            .for_each(|v, &b, &l| {
                *v = if l > 0.0 { contrast[c][l as usize] } else { b };
            });
    }
    add_noise(&mut rng, &mut data, cfg.noise_std, None);
    let affine = Volume::diag_affine(cfg.spacing);
    Ok(Phantom {
        image: Volume::new(data, affine),
        label: Volume::new(label.insert_axis(ndarray::Axis(0)), affine),
    })
}

/// Label numbering of BraTS-like phantoms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BratsNumbering {
    /// BraTS challenge: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour.
    #[default]
    Brats,
    /// Medical Segmentation Decathlon Task01: 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour.
    Msd,
}

impl BratsNumbering {
    /// Label values of (necrotic core, oedema, enhancing tumour).
    pub fn values(self) -> [f32; 3] {
        match self {
            BratsNumbering::Brats => [1.0, 2.0, 4.0],
            BratsNumbering::Msd => [2.0, 1.0, 3.0],
        }
    }
}

/// Modality names of BraTS-like phantoms, in channel order (the MSD Task01 order).
pub const BRATS_MODALITIES: [&str; 4] = ["FLAIR", "T1w", "t1gd", "T2w"];

/// A BraTS-like 4-channel MRI phantom: a brain ellipsoid (zero outside) containing a tumour whose oedema surrounds an
/// enhancing shell around a necrotic core. Channels follow [`BRATS_MODALITIES`]; noise is added inside the brain only.
pub fn brats_phantom(
    shape: [usize; 3],
    spacing: [f64; 3],
    noise_std: f32,
    numbering: BratsNumbering,
    seed: u64,
) -> Result<Phantom> {
    check(
        PhantomConfig {
            noise_std,
            ..PhantomConfig::new(shape, spacing, 3, 4)
        }
        .validate(""),
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centre = shape.map(|n| (n as f64 - 1.0) / 2.0);
    let brain = Ellipsoid {
        centre,
        radii: shape.map(|n| 0.45 * n as f64),
    };
    let mut tumour_centre = centre;
    let mut radii = [1.0; 3];
    for a in 0..3 {
        if shape[a] > 1 {
            let n = shape[a] as f64;
            radii[a] = (n * rng.random_range(0.14..0.2)).max(2.0);
            tumour_centre[a] += rng.random_range(-0.12..0.12) * n;
        }
    }
    let whole = Ellipsoid {
        centre: tumour_centre,
        radii,
    };
    let core = whole.scaled(rng.random_range(0.55..0.7));
    let necrosis = core.scaled(rng.random_range(0.45..0.6));
    let [ncr, ed, et] = numbering.values();
    // Tissue intensities per modality (FLAIR, T1w, T1gd, T2w): brain, oedema, enhancing, necrosis.
    let tissue: [[f32; 4]; 4] = [
        [0.45, 0.6, 0.55, 0.4],
        [0.95, 0.5, 0.5, 0.85],
        [0.7, 0.55, 1.0, 0.7],
        [0.6, 0.3, 0.25, 0.95],
    ];
    let gain: [f32; 4] = std::array::from_fn(|_| rng.random_range(0.9..1.1));
    let mut label = Array3::<f32>::zeros(shape);
    let mut inside = Array3::from_elem(shape, false);
    let mut data = Array4::<f32>::zeros((4, shape[0], shape[1], shape[2]));
    for ((i, j, k), l) in label.indexed_iter_mut() {
        let idx = [i, j, k];
        if !brain.contains(idx, shape) {
            continue;
        }
        inside[(i, j, k)] = true;
        let t = if necrosis.contains(idx, shape) {
            *l = ncr;
            3
        } else if core.contains(idx, shape) {
            *l = et;
            2
        } else if whole.contains(idx, shape) {
            *l = ed;
            1
        } else {
            0
        };
        for c in 0..4 {
            data[(c, i, j, k)] = tissue[t][c] * gain[c];
        }
    }
    add_noise(&mut rng, &mut data, noise_std, Some(&inside));
    let affine = Volume::diag_affine(spacing);
    Ok(Phantom {
        image: Volume::new(data, affine),
        label: Volume::new(label.insert_axis(ndarray::Axis(0)), affine),
    })
}

/// The seed of case `index` of a dataset with base `seed` (SplitMix64 mixing).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed
        ^ index
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(0x6A09_E667_F3BC_C909);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The phantom of case `index` of a synthetic dataset.
pub fn case(cfg: &SyntheticDatasetConfig, index: usize) -> Result<Phantom> {
    let seed = case_seed(cfg.seed, index as u64);
    match &cfg.phantom {
        PhantomKind::Ellipsoids(cfg) => phantom(cfg, seed),
        PhantomKind::Brats {
            shape,
            spacing,
            noise_std,
        } => brats_phantom(*shape, *spacing, *noise_std, BratsNumbering::Msd, seed),
    }
}

/// The `dataset.json` of a written synthetic dataset.
fn dataset_json(
    cfg: &SyntheticDatasetConfig,
    training: &[(String, String)],
    test: &[String],
) -> serde_json::Value {
    let (modality, labels, tensor) = match &cfg.phantom {
        PhantomKind::Ellipsoids(cfg) => {
            let m: serde_json::Map<String, serde_json::Value> = (0..cfg.channels)
                .map(|c| (c.to_string(), format!("contrast{c}").into()))
                .collect();
            let mut l = serde_json::Map::new();
            l.insert("0".into(), "background".into());
            for k in 1..=cfg.num_classes {
                l.insert(k.to_string(), format!("class{k}").into());
            }
            (m, l, if cfg.channels > 1 { "4D" } else { "3D" })
        }
        PhantomKind::Brats { .. } => {
            let m = BRATS_MODALITIES
                .iter()
                .enumerate()
                .map(|(c, n)| (c.to_string(), (*n).into()))
                .collect();
            let l = [
                (0, "background"),
                (1, "edema"),
                (2, "non-enhancing tumor"),
                (3, "enhancing tumour"),
            ]
            .iter()
            .map(|(k, n)| (k.to_string(), (*n).into()))
            .collect();
            (m, l, "4D")
        }
    };
    serde_json::json!({
        "name": cfg.name,
        "description": "medmae synthetic phantoms",
        "reference": "medmae imaging::synthetic",
        "licence": "CC0",
        "tensorImageSize": tensor,
        "modality": modality,
        "labels": labels,
        "numTraining": training.len(),
        "numTest": test.len(),
        "training": training.iter().map(|(i, l)| serde_json::json!({"image": i, "label": l})).collect::<Vec<_>>(),
        "test": test,
    })
}

/// Write the dataset as an MSD folder under `dir` (created if needed) and return the path of its `dataset.json`.
///
/// Images are float32 NIfTI-1 (`.nii.gz`, 4-D when multi-channel), labels uint8.
pub fn write_msd_dataset(dir: &Path, cfg: &SyntheticDatasetConfig) -> Result<PathBuf> {
    check(cfg.validate(""))?;
    for sub in ["imagesTr", "labelsTr", "imagesTs"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| ImagingError::io(&d, e))?;
    }
    // Cases are independent: generate and write them in parallel, then list them in case order.
    let written: Vec<(String, Option<String>)> = (0..cfg.num_training + cfg.num_test)
        .into_par_iter()
        .map(|i| {
            let p = case(cfg, i)?;
            let file = format!("{}_{i:03}.nii.gz", cfg.name);
            let labelled = i < cfg.num_training;
            let img = format!("{}/{file}", if labelled { "imagesTr" } else { "imagesTs" });
            crate::io::save_nifti(&p.image, &dir.join(&img), crate::io::NiftiDtype::F32)?;
            if !labelled {
                return Ok((format!("./{img}"), None));
            }
            let lab = format!("labelsTr/{file}");
            crate::io::save_nifti(&p.label, &dir.join(&lab), crate::io::NiftiDtype::U8)?;
            Ok((format!("./{img}"), Some(format!("./{lab}"))))
        })
        .collect::<Result<_>>()?;
    let mut training = Vec::new();
    let mut test = Vec::new();
    for (img, lab) in written {
        match lab {
            Some(l) => training.push((img, l)),
            None => test.push(img),
        }
    }
    let json_path = dir.join("dataset.json");
    let text = serde_json::to_string_pretty(&dataset_json(cfg, &training, &test))
        .map_err(|e| ImagingError::format(&json_path, e.to_string()))?;
    std::fs::write(&json_path, text).map_err(|e| ImagingError::io(&json_path, e))?;
    Ok(json_path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PhantomConfig {
        PhantomConfig::new([24, 20, 16], [1.0, 1.5, 2.0], 3, 2).with_radius_fraction([0.15, 0.25])
    }

    /// In-plane (axes 0, 1) long/short ratio of a label's extent, from its second moments.
    fn elongation(label: &Array3<f32>, k: f32) -> f64 {
        let pts: Vec<[f64; 2]> = label
            .indexed_iter()
            .filter(|(_, &l)| l == k)
            .map(|((i, j, _), _)| [i as f64, j as f64])
            .collect();
        let n = pts.len() as f64;
        let m = [0, 1].map(|a| pts.iter().map(|p| p[a]).sum::<f64>() / n);
        let c = |a: usize, b: usize| {
            pts.iter()
                .map(|p| (p[a] - m[a]) * (p[b] - m[b]))
                .sum::<f64>()
                / n
        };
        let (xx, yy, xy) = (c(0, 0), c(1, 1), c(0, 1));
        let tr = xx + yy;
        let disc = ((xx - yy).powi(2) + 4.0 * xy * xy).sqrt();
        ((tr + disc) / (tr - disc)).sqrt()
    }

    #[test]
    fn shape_coded_classes_share_intensities_and_differ_in_elongation() {
        let mut c = cfg();
        c.shape = [64, 64, 8];
        c.num_classes = 2;
        c.channels = 1;
        c.noise_std = 0.0;
        c.classes_by = ClassCue::Shape;
        let (mut round, mut long) = (Vec::new(), Vec::new());
        let mut means = [Vec::new(), Vec::new()];
        for seed in 0..12 {
            let p = phantom(&c, seed).unwrap();
            let label = p.label.data.index_axis(ndarray::Axis(0), 0).to_owned();
            let img = p.image.data.index_axis(ndarray::Axis(0), 0).to_owned();
            for k in 1..=2 {
                // Skip a class mostly hidden under the other ellipsoid.
                if label.iter().filter(|&&l| l == k as f32).count() < 200 {
                    continue;
                }
                let e = elongation(&label, k as f32);
                if k == 1 {
                    round.push(e)
                } else {
                    long.push(e)
                }
                let v = img
                    .iter()
                    .zip(&label)
                    .find(|(_, &l)| l == k as f32)
                    .unwrap()
                    .0;
                means[k - 1].push(f64::from(*v));
            }
        }
        // Class 1 round (aspect 1; overlaps can only cut it), class 2 twice as long as wide.
        let med = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        assert!(med(&mut round) < 1.3, "class 1 elongation {round:?}");
        assert!(med(&mut long) > 1.7, "class 2 elongation {long:?}");
        // Both classes' intensities come from the same band.
        for m in &means {
            assert!(m.iter().all(|v| (0.45..0.85).contains(v)), "{m:?}");
        }
    }

    #[test]
    fn phantom_is_deterministic_and_seed_dependent() {
        let a = phantom(&cfg(), 7).unwrap();
        assert_eq!(a, phantom(&cfg(), 7).unwrap());
        assert_ne!(a.image.data, phantom(&cfg(), 8).unwrap().image.data);
        assert_eq!(a.image.data.shape(), &[2, 24, 20, 16]);
        assert_eq!(a.label.data.shape(), &[1, 24, 20, 16]);
        assert_eq!(a.image.spacing(), [1.0, 1.5, 2.0]);
        let classes: std::collections::BTreeSet<u32> =
            a.label.data.iter().map(|&v| v as u32).collect();
        assert_eq!(classes.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn classes_have_distinct_contrast_from_background() {
        let mut c = cfg();
        c.noise_std = 0.0;
        let p = phantom(&c, 3).unwrap();
        for k in 1..=3 {
            let vals: Vec<f32> = p
                .image
                .data
                .index_axis(ndarray::Axis(0), 0)
                .iter()
                .zip(p.label.data.iter())
                .filter(|(_, &l)| l == k as f32)
                .map(|(&v, _)| v)
                .collect();
            assert!(!vals.is_empty());
            assert!(
                vals.iter().all(|&v| v == vals[0]),
                "class {k} is uniform without noise"
            );
            assert!(vals[0] >= 0.3);
        }
    }

    #[test]
    fn two_d_phantom_has_z_one() {
        let mut c = cfg();
        c.shape = [32, 32, 1];
        let p = phantom(&c, 1).unwrap();
        assert_eq!(p.image.spatial_shape(), [32, 32, 1]);
        assert!(p.label.data.iter().any(|&v| v > 0.0));
        c.shape = [0, 3, 3];
        assert!(phantom(&c, 1).unwrap_err().to_string().contains("shape"));
    }

    #[test]
    fn brats_regions_are_nested() {
        for numbering in [BratsNumbering::Brats, BratsNumbering::Msd] {
            let p = brats_phantom([40, 40, 32], [1.0; 3], 0.02, numbering, 5).unwrap();
            let [ncr, ed, et] = numbering.values();
            let count = |v: f32| p.label.data.iter().filter(|&&l| l == v).count();
            assert!(
                count(ncr) > 0 && count(ed) > 0 && count(et) > 0,
                "{numbering:?}"
            );
            // Outside the brain the image is exactly zero (no noise), inside it is not.
            assert_eq!(p.image.data[(0, 0, 0, 0)], 0.0);
            assert!(p.image.data[(1, 20, 20, 16)] != 0.0);
            // The enhancing region is brightest on T1gd (channel 2).
            let et_t1gd: f32 = p
                .image
                .data
                .index_axis(ndarray::Axis(0), 2)
                .iter()
                .zip(p.label.data.iter())
                .filter(|(_, &l)| l == et)
                .map(|(&v, _)| v)
                .sum::<f32>()
                / count(et) as f32;
            assert!(et_t1gd > 0.85);
        }
    }

    #[test]
    fn case_seeds_differ() {
        assert_ne!(case_seed(0, 0), case_seed(0, 1));
        assert_ne!(case_seed(0, 1), case_seed(1, 1));
    }
}
