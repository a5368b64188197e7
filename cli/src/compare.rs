//! `medmae compare`: agreement of two label maps (voxels that differ, Dice per class, geometry), and an optional
//! overlay PNG of the middle axial slice of an image with the first label map drawn on it.

use std::path::Path;

use anyhow::{bail, Result};
use imaging::io::LoadOptions;
use imaging::metrics::{dice_labels, DiceOptions};
use imaging::Volume;

use crate::load::{describe, grid};

/// Distinct colours for classes 1.. (class 0 is not drawn).
const PALETTE: [[u8; 3]; 6] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
];

/// Compare `prediction` with `reference`; print the report; write the overlay when asked.
pub fn run(
    prediction: &Path,
    reference: &Path,
    image: Option<&Path>,
    overlay: Option<&Path>,
    opts: &LoadOptions,
) -> Result<()> {
    let load = |p: &Path| imaging::io::load_with(p, opts);
    let a = load(prediction)?;
    let b = load(reference)?;
    if a.data.shape() != b.data.shape() {
        bail!(
            "{}: grid {} does not match the reference {} ({}); expected the same grid",
            prediction.display(),
            describe(&a),
            reference.display(),
            describe(&b)
        );
    }
    let max_affine_diff = (0..4)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .map(|(r, c)| (a.affine[r][c] - b.affine[r][c]).abs())
        .fold(0.0, f64::max);
    let differing = a
        .data
        .iter()
        .zip(b.data.iter())
        .filter(|(x, y)| x != y)
        .count();
    let num_classes = a
        .data
        .iter()
        .chain(b.data.iter())
        .fold(0.0f32, |m, &v| m.max(v)) as usize
        + 1;
    let dice = dice_labels(
        a.data.view().into_dyn(),
        b.data.view().into_dyn(),
        num_classes,
        &DiceOptions {
            include_background: false,
            ignore_empty: true,
        },
    )?;
    println!("voxels: {} total, {differing} differ", a.data.len());
    println!("affine: max |difference| {max_affine_diff:.2e}");
    for (i, d) in dice.iter().enumerate() {
        println!("Dice class {}: {d:.4}", i + 1);
    }
    if let Some(out) = overlay {
        let img = match image {
            Some(p) => imaging::io::load_with(p, opts)?,
            None => bail!("--overlay needs --image"),
        };
        write_overlay(&img, &a, out)?;
        println!("overlay: {}", out.display());
    }
    Ok(())
}

/// Middle axial (k) slice of channel 0 in grey (min/max scaled), labels blended at 50 %; rows run along j, flipped
/// so anterior is up.
fn write_overlay(img: &Volume, labels: &Volume, out: &Path) -> Result<()> {
    let [x, y, z] = img.spatial_shape();
    if labels.spatial_shape() != [x, y, z] {
        bail!(
            "--image grid {} differs from the label grid {}; expected the same grid",
            grid([x, y, z]),
            grid(labels.spatial_shape())
        );
    }
    let k = z / 2;
    let (lo, hi) = img
        .data
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let mut png = image::RgbImage::new(x as u32, y as u32);
    for i in 0..x {
        for j in 0..y {
            let g = ((img.data[[0, i, j, k]] - lo) * scale).clamp(0.0, 255.0);
            let class = labels.data[[0, i, j, k]] as usize;
            let px = if class == 0 {
                [g as u8; 3]
            } else {
                let c = PALETTE[(class - 1) % PALETTE.len()];
                [0, 1, 2].map(|n| (0.5 * g + 0.5 * c[n] as f32) as u8)
            };
            png.put_pixel(i as u32, (y - 1 - j) as u32, image::Rgb(px));
        }
    }
    let tmp = out.with_extension("png.tmp");
    png.save_with_format(&tmp, image::ImageFormat::Png)
        .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    Ok(())
}
