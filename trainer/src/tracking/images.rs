//! PNG grids for visual checks: MAE reconstructions (input | masked | reconstruction) and segmentation overlays
//! (image | ground truth | prediction). Slices are shown with the first array axis (X) left→right and the second
//! (Y) bottom→top, i.e. an axial RAS slice appears in radiological-style "anterior up" orientation.

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};
use ndarray::{Array2, ArrayView2};

use crate::error::{Result, TrainError};

const GAP: u32 = 2;
const BACKGROUND: Rgb<u8> = Rgb([32, 32, 32]);

/// Class colours (class k uses entry (k−1) mod len).
const PALETTE: [[u8; 3]; 8] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [255, 225, 25],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
];

fn window(a: ArrayView2<f32>) -> (f32, f32) {
    let (lo, hi) = a
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

fn grey(v: f32, (lo, hi): (f32, f32)) -> u8 {
    if !v.is_finite() {
        return 0;
    }
    (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A grid of `rows × cols` tiles of equal shape, each drawn by `pixel(row, col, x, y)`.
fn grid(
    rows: usize,
    cols: usize,
    shape: (usize, usize),
    pixel: impl Fn(usize, usize, usize, usize) -> Rgb<u8>,
) -> RgbImage {
    let (w, h) = (shape.0 as u32, shape.1 as u32);
    let width = cols as u32 * (w + GAP) + GAP;
    let height = rows as u32 * (h + GAP) + GAP;
    let mut img = RgbImage::from_pixel(width.max(1), height.max(1), BACKGROUND);
    for r in 0..rows {
        for c in 0..cols {
            let (x0, y0) = (GAP + c as u32 * (w + GAP), GAP + r as u32 * (h + GAP));
            for x in 0..shape.0 {
                for y in 0..shape.1 {
                    img.put_pixel(x0 + x as u32, y0 + (h - 1 - y as u32), pixel(r, c, x, y));
                }
            }
        }
    }
    img
}

fn same_shape<'a>(tiles: impl Iterator<Item = &'a [usize]>) -> Result<(usize, usize)> {
    let mut shape = None;
    for s in tiles {
        let s = (s[0], s[1]);
        if *shape.get_or_insert(s) != s {
            return Err(TrainError::Data(format!(
                "PNG grid: tiles of different shapes {:?} and {s:?}",
                shape.unwrap_or(s)
            )));
        }
    }
    shape.ok_or_else(|| TrainError::Data("PNG grid: no tiles".into()))
}

/// MAE grid: one row per sample with (input, masked input, reconstruction), all three in the input's intensity window.
pub fn mae_grid(rows: &[[Array2<f32>; 3]]) -> Result<RgbImage> {
    let shape = same_shape(rows.iter().flat_map(|r| r.iter().map(|a| a.shape())))?;
    let windows: Vec<_> = rows.iter().map(|r| window(r[0].view())).collect();
    Ok(grid(rows.len(), 3, shape, |r, c, x, y| {
        let g = grey(rows[r][c][[x, y]], windows[r]);
        Rgb([g, g, g])
    }))
}

/// Segmentation grid: one row per sample with (image, image + ground truth, image + prediction); labels are class
/// ids (0 = background), blended at 50 %.
pub fn overlay_grid(rows: &[(Array2<f32>, Array2<u8>, Array2<u8>)]) -> Result<RgbImage> {
    let shape = same_shape(
        rows.iter()
            .flat_map(|(i, g, p)| [i.shape(), g.shape(), p.shape()]),
    )?;
    let windows: Vec<_> = rows.iter().map(|(i, _, _)| window(i.view())).collect();
    Ok(grid(rows.len(), 3, shape, |r, c, x, y| {
        let (img, gt, pred) = &rows[r];
        let g = grey(img[[x, y]], windows[r]);
        let label = match c {
            1 => gt[[x, y]],
            2 => pred[[x, y]],
            _ => 0,
        };
        if label == 0 {
            return Rgb([g, g, g]);
        }
        let col = PALETTE[(label as usize - 1) % PALETTE.len()];
        Rgb(col.map(|k| ((u16::from(g) + u16::from(k)) / 2) as u8))
    }))
}

/// PNG bytes of an image.
pub fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| TrainError::Data(format!("PNG encoding: {e}")))?;
    Ok(out)
}

/// Write PNG bytes to `path` (parent directories are created).
pub fn save_png(png: &[u8], path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::write(path, png).map_err(|e| TrainError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mae_grid_layout_and_window() {
        let input = Array2::from_shape_fn((4, 3), |(x, y)| (x + 4 * y) as f32);
        let masked = Array2::zeros((4, 3));
        let recon = input.mapv(|v| v * 2.0);
        let img = mae_grid(&[[input, masked, recon]]).unwrap();
        assert_eq!((img.width(), img.height()), (3 * 6 + 2, 3 + 4));
        // Voxel (0, 0) is bottom-left of the first tile: value 0 → black; (3, 2) is the max → white.
        assert_eq!(img.get_pixel(2, 2 + 2), &Rgb([0, 0, 0]));
        assert_eq!(img.get_pixel(2 + 3, 2), &Rgb([255, 255, 255]));
        // The reconstruction is clipped to the input's window.
        assert_eq!(img.get_pixel(2 + 2 * 6 + 3, 2), &Rgb([255, 255, 255]));
        let png = encode_png(&img).unwrap();
        assert_eq!(&png[1..4], b"PNG");
    }

    #[test]
    fn overlay_colours_labels_and_rejects_mixed_shapes() {
        let img = Array2::from_elem((2, 2), 1.0f32);
        let mut gt = Array2::zeros((2, 2));
        gt[[0, 1]] = 2;
        let pred = Array2::zeros((2, 2));
        let out = overlay_grid(&[(img.clone(), gt, pred)]).unwrap();
        // A constant image falls back to the window (0, 1): grey 255; label 2 (green) blends 50 %.
        // Second tile starts at x = 2 + (2 + 2); voxel (0, 1) is its top-left pixel.
        assert_eq!(out.get_pixel(6, 2), &Rgb([157, 217, 165]));
        assert_eq!(out.get_pixel(6, 3), &Rgb([255, 255, 255]));
        assert!(overlay_grid(&[(img, Array2::zeros((2, 3)), Array2::zeros((2, 2)))]).is_err());
    }
}
