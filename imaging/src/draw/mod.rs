//! PNG figures people can read, shared by the trainer (MAE reconstructions, segmentation overlays) and the `medmae`
//! command line (`compare --overlay`): slices in radiological orientation, panels upscaled to at least
//! [`MIN_PANEL_PX`] pixels with the voxels' physical aspect, a title over every panel, orientation letters on the
//! panel edges, and a legend with the label names.
//!
//! Radiological convention, for a volume reoriented to RAS (voxel axes towards patient Right, Anterior, Superior):
//! - axial (slice along S): the patient's right on the left of the picture, anterior at the top;
//! - coronal (slice along A): the patient's right on the left, superior at the top;
//! - sagittal (slice along R): anterior on the left, superior at the top.

mod overlay;
pub mod text;

pub use overlay::{mae_figure, most_foreground_slice, overlay_figure, OverlayCase, OverlayView};

use std::path::Path;

use image::{ImageEncoder, Rgb, RgbImage};
use ndarray::{Array2, ArrayView3};
use serde::{Deserialize, Serialize};

use crate::error::{ImagingError, Result};

/// Smallest side of a panel in pixels (unless the slice's aspect ratio exceeds [`MAX_PANEL_PX`] / this).
pub const MIN_PANEL_PX: u32 = 256;
/// Largest side of a panel in pixels.
pub const MAX_PANEL_PX: u32 = 1024;
/// Gap between panels and around the figure.
pub const GAP: u32 = 6;
/// Figure background.
pub const BACKGROUND: [u8; 3] = [24, 24, 24];
/// Title and legend text colour.
pub const TEXT: [u8; 3] = [235, 235, 235];
/// Colour of the orientation letters.
pub const EDGE_TEXT: [u8; 3] = [255, 210, 0];
/// Colour of the reference outline drawn over predictions.
pub const OUTLINE: [u8; 3] = [255, 255, 255];

/// Class colours: class k ≥ 1 uses entry (k − 1) mod len.
pub const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [0, 130, 200],
    [255, 225, 25],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 212],
];

/// The colour of class `k` (k ≥ 1).
pub fn class_colour(k: u8) -> [u8; 3] {
    PALETTE[(usize::from(k).max(1) - 1) % PALETTE.len()]
}

/// Which plane a slice is taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ViewAxis {
    /// Perpendicular to the superior axis (the usual CT/MR slice).
    #[default]
    Axial,
    /// Perpendicular to the anterior axis.
    Coronal,
    /// Perpendicular to the right axis.
    Sagittal,
}

impl ViewAxis {
    /// The RAS voxel axis a slice index runs along (axial 2, coronal 1, sagittal 0).
    pub fn ras_axis(self) -> usize {
        match self {
            ViewAxis::Axial => 2,
            ViewAxis::Coronal => 1,
            ViewAxis::Sagittal => 0,
        }
    }

    /// Orientation letters at the (top, bottom, left, right) edges of a picture.
    pub fn edges(self) -> [char; 4] {
        match self {
            ViewAxis::Axial => ['A', 'P', 'R', 'L'],
            ViewAxis::Coronal => ['S', 'I', 'R', 'L'],
            ViewAxis::Sagittal => ['S', 'I', 'A', 'P'],
        }
    }
}

impl std::str::FromStr for ViewAxis {
    type Err = ImagingError;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "axial" => Ok(ViewAxis::Axial),
            "coronal" => Ok(ViewAxis::Coronal),
            "sagittal" => Ok(ViewAxis::Sagittal),
            other => Err(ImagingError::config(
                "axis",
                format!("expected axial, coronal or sagittal, got `{other}`"),
            )),
        }
    }
}

impl std::fmt::Display for ViewAxis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ViewAxis::Axial => "axial",
            ViewAxis::Coronal => "coronal",
            ViewAxis::Sagittal => "sagittal",
        })
    }
}

/// One slice in screen order (row 0 at the top, column 0 at the left) and the size of its pixels in mm.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenSlice<T> {
    /// `(rows, cols)`.
    pub data: Array2<T>,
    /// (row height, column width) in mm.
    pub pixel_mm: [f64; 2],
}

/// Slice `index` of a RAS-ordered volume (`(X, Y, Z)` towards R, A, S) with voxel `spacing`, laid out in
/// radiological screen order for `axis` (see the module docs). `index` must be inside the volume.
pub fn screen_slice<T: Copy>(
    ras: ArrayView3<T>,
    spacing: [f64; 3],
    axis: ViewAxis,
    index: usize,
) -> ScreenSlice<T> {
    let (nx, ny, nz) = ras.dim();
    let (data, pixel_mm) = match axis {
        ViewAxis::Axial => (
            Array2::from_shape_fn((ny, nx), |(r, c)| ras[[nx - 1 - c, ny - 1 - r, index]]),
            [spacing[1], spacing[0]],
        ),
        ViewAxis::Coronal => (
            Array2::from_shape_fn((nz, nx), |(r, c)| ras[[nx - 1 - c, index, nz - 1 - r]]),
            [spacing[2], spacing[0]],
        ),
        ViewAxis::Sagittal => (
            Array2::from_shape_fn((nz, ny), |(r, c)| ras[[index, ny - 1 - c, nz - 1 - r]]),
            [spacing[2], spacing[1]],
        ),
    };
    ScreenSlice { data, pixel_mm }
}

/// Panel size in pixels for a slice: the physical aspect ratio, the smaller side at least [`MIN_PANEL_PX`] and the
/// larger at most [`MAX_PANEL_PX`] (the larger bound wins for extreme aspect ratios).
pub fn panel_size(rows: usize, cols: usize, pixel_mm: [f64; 2]) -> (u32, u32) {
    let ok = |v: f64| if v > 0.0 && v.is_finite() { v } else { 1.0 };
    let h = rows.max(1) as f64 * ok(pixel_mm[0]);
    let w = cols.max(1) as f64 * ok(pixel_mm[1]);
    let mut s = f64::from(MIN_PANEL_PX) / h.min(w);
    if h.max(w) * s > f64::from(MAX_PANEL_PX) {
        s = f64::from(MAX_PANEL_PX) / h.max(w);
    }
    (
        (w * s).round().max(1.0) as u32,
        (h * s).round().max(1.0) as u32,
    )
}

/// The intensity window of a slice: its finite min and max, or (0, 1) when it is constant or empty.
pub fn auto_window<'a>(values: impl Iterator<Item = &'a f32>) -> (f32, f32) {
    let (lo, hi) = values
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

fn grey(v: f32, (lo, hi): (f32, f32)) -> [u8; 3] {
    let g = if v.is_finite() {
        (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
    } else {
        0
    };
    [g; 3]
}

/// What to draw in a panel: a grey slice, optionally class colours filled at 50 % and class outlines.
#[derive(Debug, Clone, Copy)]
pub struct PanelLayers<'a> {
    /// The image slice.
    pub image: &'a ScreenSlice<f32>,
    /// Grey window `(low, high)`.
    pub window: (f32, f32),
    /// Class ids to fill with their colours (0 = none).
    pub fill: Option<&'a Array2<u8>>,
    /// Class ids whose outlines are drawn in [`OUTLINE`].
    pub outline: Option<&'a Array2<u8>>,
    /// Orientation letters (top, bottom, left, right), if any.
    pub edges: Option<[char; 4]>,
}

/// Render a panel at its display size ([`panel_size`]), nearest-neighbour upscaled.
pub fn render_panel(l: &PanelLayers<'_>) -> RgbImage {
    let (rows, cols) = l.image.data.dim();
    let (w, h) = panel_size(rows, cols, l.image.pixel_mm);
    let src = |x: u32, y: u32| {
        let r = ((f64::from(y) + 0.5) / f64::from(h) * rows as f64) as usize;
        let c = ((f64::from(x) + 0.5) / f64::from(w) * cols as f64) as usize;
        (r.min(rows.saturating_sub(1)), c.min(cols.saturating_sub(1)))
    };
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let at = src(x, y);
            let mut px = grey(l.image.data[at], l.window);
            if let Some(k) = l.fill.map(|f| f[at]).filter(|&k| k > 0) {
                let c = class_colour(k);
                px = [0, 1, 2].map(|i| ((u16::from(px[i]) + u16::from(c[i])) / 2) as u8);
            }
            img.put_pixel(x, y, Rgb(px));
        }
    }
    if let Some(o) = l.outline {
        // A pixel inside a class region whose neighbour (up to 2 px away) belongs to another class is outline.
        let class = |x: i64, y: i64| -> Option<u8> {
            (x >= 0 && y >= 0 && x < i64::from(w) && y < i64::from(h))
                .then(|| o[src(x as u32, y as u32)])
        };
        for y in 0..i64::from(h) {
            for x in 0..i64::from(w) {
                let k = class(x, y).unwrap_or(0);
                if k == 0 {
                    continue;
                }
                let edge = [
                    (-1, 0),
                    (1, 0),
                    (0, -1),
                    (0, 1),
                    (-2, 0),
                    (2, 0),
                    (0, -2),
                    (0, 2),
                ]
                .iter()
                .any(|(dx, dy)| class(x + dx, y + dy).is_some_and(|n| n != k));
                if edge {
                    img.put_pixel(x as u32, y as u32, Rgb(OUTLINE));
                }
            }
        }
    }
    if let Some([top, bottom, left, right]) = l.edges {
        let cw = i64::from(text::char_width());
        let lh = i64::from(text::LINE_HEIGHT);
        let (w, h) = (i64::from(w), i64::from(h));
        text::draw_text(&mut img, w / 2 - cw / 2, 2, &top.to_string(), EDGE_TEXT);
        text::draw_text(
            &mut img,
            w / 2 - cw / 2,
            h - lh - 2,
            &bottom.to_string(),
            EDGE_TEXT,
        );
        text::draw_text(&mut img, 3, h / 2 - lh / 2, &left.to_string(), EDGE_TEXT);
        text::draw_text(
            &mut img,
            w - cw - 3,
            h / 2 - lh / 2,
            &right.to_string(),
            EDGE_TEXT,
        );
    }
    img
}

/// A titled panel.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Drawn above the panel (cut to the panel's width).
    pub title: String,
    /// The picture.
    pub image: RgbImage,
}

/// A legend entry: colour swatch and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegendEntry {
    /// Swatch colour.
    pub colour: [u8; 3],
    /// Text.
    pub text: String,
}

/// Lay out rows of titled panels (rows may differ in length and panel sizes) with a legend underneath.
pub fn figure(rows: &[Vec<Panel>], legend: &[LegendEntry]) -> RgbImage {
    let title_h = text::LINE_HEIGHT + 4;
    let row_sizes: Vec<(u32, u32)> = rows
        .iter()
        .map(|r| {
            let w = r.iter().map(|p| p.image.width() + GAP).sum::<u32>();
            let h = r.iter().map(|p| p.image.height()).max().unwrap_or(0);
            (w, h + title_h)
        })
        .collect();
    let panels_w = row_sizes.iter().map(|s| s.0).max().unwrap_or(0) + GAP;
    // Legend entries flow left to right, wrapping at the figure width.
    let swatch = text::LINE_HEIGHT;
    let entry_w = |e: &LegendEntry| swatch + 6 + text::text_width(&e.text) + 3 * GAP;
    let width = panels_w.max(legend.iter().map(entry_w).max().unwrap_or(0) + 2 * GAP);
    let mut lines = 0u32;
    let mut x = width;
    let mut places = Vec::new();
    for e in legend {
        if x + entry_w(e) > width {
            lines += 1;
            x = GAP;
        }
        places.push((x, lines - 1));
        x += entry_w(e);
    }
    let legend_h = lines * (text::LINE_HEIGHT + GAP);
    let height = row_sizes.iter().map(|s| s.1 + GAP).sum::<u32>() + GAP + legend_h;
    let mut img = RgbImage::from_pixel(width.max(1), height.max(1), Rgb(BACKGROUND));
    let mut y = GAP;
    for (r, (_, rh)) in rows.iter().zip(&row_sizes) {
        let mut x = GAP;
        for p in r {
            let title = text::fit(&p.title, p.image.width());
            text::draw_text(&mut img, i64::from(x), i64::from(y), &title, TEXT);
            image::imageops::replace(&mut img, &p.image, i64::from(x), i64::from(y + title_h));
            x += p.image.width() + GAP;
        }
        y += rh + GAP;
    }
    for (e, (x, line)) in legend.iter().zip(places) {
        let ly = y + line * (text::LINE_HEIGHT + GAP);
        for dy in 2..swatch - 2 {
            for dx in 0..swatch {
                img.put_pixel(x + dx, ly + dy, Rgb(e.colour));
            }
        }
        text::draw_text(
            &mut img,
            i64::from(x + swatch + 6),
            i64::from(ly),
            &e.text,
            TEXT,
        );
    }
    img
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
        .map_err(|e| ImagingError::format("<png>", format!("PNG encoding: {e}")))?;
    Ok(out)
}

/// Write PNG bytes to `path` atomically (a temporary file in the same folder, fsync, rename; folders created).
pub fn save_png(png: &[u8], path: &Path) -> Result<()> {
    let dir = spec::file::parent_dir(path);
    std::fs::create_dir_all(dir).map_err(|e| ImagingError::io(dir, e))?;
    crate::io::write_file_atomic(path, png)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// A RAS volume whose single marked voxel lies at the patient's right (high X), anterior (high Y), superior
    /// (high Z) corner.
    fn marked() -> Array3<u8> {
        let mut v = Array3::zeros((4, 3, 2));
        v[[3, 2, 1]] = 1;
        v
    }

    #[test]
    fn radiological_layout_per_view() {
        let v = marked();
        let ax = screen_slice(v.view(), [1.0, 2.0, 3.0], ViewAxis::Axial, 1);
        assert_eq!(ax.data.dim(), (3, 4));
        assert_eq!(ax.data[[0, 0]], 1, "right-anterior is top-left");
        assert_eq!(ax.pixel_mm, [2.0, 1.0]);
        let co = screen_slice(v.view(), [1.0, 2.0, 3.0], ViewAxis::Coronal, 2);
        assert_eq!(co.data.dim(), (2, 4));
        assert_eq!(co.data[[0, 0]], 1, "right-superior is top-left");
        let sa = screen_slice(v.view(), [1.0, 2.0, 3.0], ViewAxis::Sagittal, 3);
        assert_eq!(sa.data.dim(), (2, 3));
        assert_eq!(sa.data[[0, 0]], 1, "anterior-superior is top-left");
        assert_eq!(ViewAxis::Sagittal.edges(), ['S', 'I', 'A', 'P']);
        assert!("oblique".parse::<ViewAxis>().is_err());
        assert_eq!("Coronal".parse::<ViewAxis>().unwrap(), ViewAxis::Coronal);
    }

    #[test]
    fn panels_keep_aspect_and_minimum_size() {
        assert_eq!(panel_size(48, 48, [1.0, 1.0]), (256, 256));
        assert_eq!(panel_size(10, 20, [3.0, 1.0]), (256, 384));
        assert_eq!(panel_size(1, 500, [1.0, 1.0]), (1024, 2));
        let img = ScreenSlice {
            data: Array2::from_shape_fn((2, 2), |(r, c)| (r * 2 + c) as f32),
            pixel_mm: [1.0, 1.0],
        };
        let mut fill = Array2::zeros((2, 2));
        fill[[0, 1]] = 2;
        let p = render_panel(&PanelLayers {
            image: &img,
            window: (0.0, 3.0),
            fill: Some(&fill),
            outline: Some(&fill),
            edges: None,
        });
        assert_eq!(p.dimensions(), (256, 256));
        assert_eq!(p.get_pixel(10, 200).0, [170; 3], "bottom-left: value 2");
        assert_eq!(
            p.get_pixel(200, 60).0,
            [72, 132, 80],
            "top-right: grey 85 + class 2 green"
        );
        assert_eq!(
            p.get_pixel(128, 60).0,
            OUTLINE,
            "outline at the region border"
        );
    }

    #[test]
    fn figure_places_titles_panels_and_legend() {
        let panel = |t: &str| Panel {
            title: t.into(),
            image: RgbImage::from_pixel(256, 256, Rgb([9, 9, 9])),
        };
        let legend = [LegendEntry {
            colour: [1, 2, 3],
            text: "1 liver".into(),
        }];
        let f = figure(&[vec![panel("input"), panel("masked")]], &legend);
        assert_eq!(f.width(), 2 * (256 + GAP) + GAP);
        assert!(f.height() > 256 + text::LINE_HEIGHT);
        let title_y = GAP + text::LINE_HEIGHT + 4;
        assert_eq!(f.get_pixel(GAP, title_y).0, [9, 9, 9]);
        assert!(f.pixels().any(|p| p.0 == [1, 2, 3]), "legend swatch");
        assert!(
            (GAP..GAP + text::LINE_HEIGHT)
                .any(|y| (GAP..GAP + 40).any(|x| f.get_pixel(x, y).0[0] > 100)),
            "title text"
        );
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("sub/f.png");
        save_png(&encode_png(&f).unwrap(), &path).unwrap();
        assert_eq!(image::open(&path).unwrap().width(), f.width());
        assert_eq!(std::fs::read_dir(t.path().join("sub")).unwrap().count(), 1);
    }
}
