//! The 3D→2D path of SelfMedMAE-style 2-D pretraining: pick slices of a volume along an axis, map intensities to
//! 0–255 per volume, and write grayscale PNGs (or stacked `.npy`), label PNGs and a manifest.
//!
//! # Orientation of the PNGs
//! Volumes are expected in RAS voxel order (run `Orientation {axcodes: RAS}` first; otherwise "R/A/S" below read as
//! "+i/+j/+k"). A slice across axis `a` keeps the other two axes `p < q`; the PNG shows `np.rot90` of the `[p, q]`
//! plane: columns run along +p (left → right) and rows along −q (top → bottom), so **up is +q**:
//! - axis 2 (axial): image right = patient Right (+X, neurological convention), up = Anterior;
//! - axis 1 (coronal): image right = patient Right, up = Superior;
//! - axis 0 (sagittal): image right = Anterior, up = Superior.
//!
//! `pixel[row, col] = volume[.., col, Q − 1 − row]` in the `(p, q)` plane; [`crate::pseudo3d`] inverts it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::{s, Array2, Array3, ArrayView2, ArrayView3, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{ImagingError, Result};
use crate::volume::Volume;

/// Which slices of a volume are extracted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SliceSelection {
    /// The middle slice (`n / 2`).
    #[default]
    Middle,
    /// Every slice.
    All,
    /// Slices `0, k, 2k, …`.
    EveryK {
        /// The step (>= 1).
        k: usize,
    },
    /// Slices whose label has at least `min_voxels` foreground (nonzero) voxels; needs a label.
    Foreground {
        /// Minimum number of foreground voxels on the slice.
        #[serde(default = "one")]
        min_voxels: usize,
    },
}

fn one() -> usize {
    1
}
fn axial() -> usize {
    2
}
fn yes() -> bool {
    true
}

/// How intensities are mapped to 0–255, per volume and channel.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Normalization {
    /// The channel's min → 0 and max → 255.
    #[default]
    MinMax,
    /// The channel's `lower` and `upper` percentiles (numpy "linear" method) → 0 and 255, clipped.
    Percentile {
        /// Lower percentile, e.g. 0.5.
        lower: f64,
        /// Upper percentile, e.g. 99.5.
        upper: f64,
    },
    /// A fixed window `[lower, upper]` → 0 and 255, clipped (the same mapping for every volume, e.g. after
    /// `ScaleIntensityRange` to [0, 1]).
    Fixed {
        /// Value mapped to 0.
        lower: f64,
        /// Value mapped to 255.
        upper: f64,
    },
}

/// How multi-channel images are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChannelLayout {
    /// One grayscale PNG per channel (modality).
    #[default]
    PerModality,
    /// One `.npy` of `u8` with shape `(C, rows, cols)`.
    Stacked,
}

/// Slice extraction options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceOptions {
    /// The axis sliced across (0, 1 or 2; 2 = axial for RAS volumes).
    #[serde(default = "axial")]
    pub axis: usize,
    /// Which slices.
    #[serde(default)]
    pub selection: SliceSelection,
    /// Intensity window.
    #[serde(default)]
    pub normalization: Normalization,
    /// Multi-channel output layout.
    #[serde(default)]
    pub layout: ChannelLayout,
    /// Also write label slices (PNG of class ids) when a label exists.
    #[serde(default = "yes")]
    pub write_labels: bool,
}

impl Default for SliceOptions {
    fn default() -> Self {
        Self {
            axis: 2,
            selection: SliceSelection::Middle,
            normalization: Normalization::MinMax,
            layout: ChannelLayout::PerModality,
            write_labels: true,
        }
    }
}

/// One written slice: a manifest row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceRecord {
    /// Case id.
    pub case: String,
    /// Source image file(s) of the volume.
    pub source_images: Vec<String>,
    /// Source label file, if any.
    pub source_label: Option<String>,
    /// Axis sliced across.
    pub axis: usize,
    /// Slice index along that axis.
    pub index: usize,
    /// Voxel spacing of the volume (mm, x/y/z).
    pub spacing: [f64; 3],
    /// Pixel spacing of the PNG (mm, column step then row step).
    pub pixel_spacing: [f64; 2],
    /// PNG size (rows, cols).
    pub size: [usize; 2],
    /// Written image files, relative to the output directory (one per channel, or one `.npy`).
    pub image_files: Vec<String>,
    /// Written label PNG, relative to the output directory.
    pub label_file: Option<String>,
    /// Whether the label slice has any foreground.
    pub has_foreground: bool,
    /// Nonzero classes present on the label slice.
    pub classes: Vec<u32>,
}

/// Where a volume came from (recorded in the manifest).
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    /// Case id, used in file names.
    pub case: String,
    /// Image file(s).
    pub images: Vec<String>,
    /// Label file.
    pub label: Option<String>,
}

fn check_axis(axis: usize) -> Result<()> {
    if axis > 2 {
        return Err(ImagingError::config(
            "slices.axis",
            format!("must be 0, 1 or 2, got {axis}"),
        ));
    }
    Ok(())
}

/// The two in-plane axes `(p, q)` of a slice across `axis`.
pub fn plane_axes(axis: usize) -> (usize, usize) {
    match axis {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    }
}

/// Indices of the selected slices of a volume with `shape` (X, Y, Z); `label` is `(X, Y, Z)` class ids.
pub fn select_slices(
    shape: [usize; 3],
    label: Option<ArrayView3<'_, f32>>,
    axis: usize,
    sel: &SliceSelection,
) -> Result<Vec<usize>> {
    check_axis(axis)?;
    let n = shape[axis];
    Ok(match sel {
        SliceSelection::Middle => vec![n / 2],
        SliceSelection::All => (0..n).collect(),
        SliceSelection::EveryK { k } => {
            if *k == 0 {
                return Err(ImagingError::config("slices.selection.k", "must be >= 1"));
            }
            (0..n).step_by(*k).collect()
        }
        SliceSelection::Foreground { min_voxels } => {
            let label = label.ok_or_else(|| {
                ImagingError::config(
                    "slices.selection",
                    "mode `foreground` needs a label for every volume",
                )
            })?;
            if label.shape() != shape {
                return Err(ImagingError::Shape(format!(
                    "label {:?} vs image {:?}",
                    label.shape(),
                    shape
                )));
            }
            (0..n)
                .filter(|&i| {
                    label
                        .index_axis(Axis(axis), i)
                        .iter()
                        .filter(|&&v| v != 0.0)
                        .count()
                        >= (*min_voxels).max(1)
                })
                .collect()
        }
    })
}

/// numpy's `percentile(x, p)` with the default "linear" method, on sorted values (same float operations:
/// virtual index `(n − 1) · p/100`, and numpy's two-sided lerp).
pub fn numpy_percentile(sorted: &[f64], p: f64) -> f64 {
    let (Some(&first), Some(&last)) = (sorted.first(), sorted.last()) else {
        return f64::NAN;
    };
    let n = sorted.len();
    let virtual_index = (n - 1) as f64 * (p / 100.0);
    if virtual_index >= (n - 1) as f64 {
        return last;
    }
    if virtual_index < 0.0 {
        return first;
    }
    let prev = virtual_index.floor();
    let gamma = virtual_index - prev;
    let lo = prev as usize;
    let (a, b) = (sorted[lo], sorted[(lo + 1).min(n - 1)]);
    let diff = b - a;
    if gamma >= 0.5 {
        b - diff * (1.0 - gamma)
    } else {
        a + diff * gamma
    }
}

/// The (low, high) intensity window of one channel (`(X, Y, Z)`), ignoring NaNs.
pub fn intensity_window(channel: ArrayView3<'_, f32>, norm: &Normalization) -> Result<(f64, f64)> {
    let values = || {
        channel
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| f64::from(x))
    };
    match *norm {
        Normalization::Fixed { lower, upper } => {
            if lower.partial_cmp(&upper) != Some(std::cmp::Ordering::Less) {
                return Err(ImagingError::config(
                    "slices.normalization",
                    format!("need lower < upper, got {lower}, {upper}"),
                ));
            }
            Ok((lower, upper))
        }
        Normalization::MinMax => {
            let lo = values().fold(f64::INFINITY, f64::min);
            let hi = values().fold(f64::NEG_INFINITY, f64::max);
            Ok(if lo <= hi { (lo, hi) } else { (0.0, 0.0) })
        }
        Normalization::Percentile { lower, upper } => {
            if !(0.0..=100.0).contains(&lower) || !(0.0..=100.0).contains(&upper) || lower >= upper
            {
                return Err(ImagingError::config(
                    "slices.normalization",
                    format!("need 0 <= lower < upper <= 100, got {lower}, {upper}"),
                ));
            }
            let mut v: Vec<f64> = values().collect();
            if v.is_empty() {
                return Ok((0.0, 0.0));
            }
            v.sort_by(f64::total_cmp);
            Ok((numpy_percentile(&v, lower), numpy_percentile(&v, upper)))
        }
    }
}

/// Map values to 0–255: `round_half_even((v − lo) / (hi − lo) · 255)` clipped; all 0 when `hi <= lo`, NaN → 0.
pub fn to_u8(values: ArrayView2<'_, f32>, lo: f64, hi: f64) -> Array2<u8> {
    values.mapv(|v| {
        if hi <= lo || v.is_nan() {
            return 0;
        }
        ((f64::from(v) - lo) / (hi - lo) * 255.0)
            .round_ties_even()
            .clamp(0.0, 255.0) as u8
    })
}

/// Slice `index` across `axis` of a `(X, Y, Z)` array, in display orientation `(rows, cols)` (see the module doc).
pub fn display_slice(data: ArrayView3<'_, f32>, axis: usize, index: usize) -> Result<Array2<f32>> {
    check_axis(axis)?;
    let n = data.shape()[axis];
    if index >= n {
        return Err(ImagingError::config(
            "slices.index",
            format!("{index} is outside 0..{n} on axis {axis}"),
        ));
    }
    let plane = data.index_axis(Axis(axis), index);
    // plane is [p, q]; rot90: row r = q reversed, col = p.
    Ok(plane.slice(s![.., ..;-1]).reversed_axes().to_owned())
}

/// Write a grayscale 8-bit PNG.
pub fn write_png(path: &Path, pixels: ArrayView2<'_, u8>) -> Result<()> {
    let (rows, cols) = pixels.dim();
    let buf: Vec<u8> = pixels.iter().copied().collect();
    let img = image::GrayImage::from_raw(cols as u32, rows as u32, buf).ok_or_else(|| {
        ImagingError::Shape(format!("{}: {rows}x{cols} pixel buffer", path.display()))
    })?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| ImagingError::format(path, e.to_string()))
}

/// Read a grayscale 8-bit PNG as `(rows, cols)`.
pub fn read_png(path: &Path) -> Result<Array2<u8>> {
    let img = image::open(path).map_err(|e| ImagingError::format(path, e.to_string()))?;
    if img.color() != image::ColorType::L8 {
        return Err(ImagingError::format(
            path,
            format!("expected an 8-bit grayscale PNG, got {:?}", img.color()),
        ));
    }
    let g = img.into_luma8();
    let (w, h) = g.dimensions();
    Array2::from_shape_vec((h as usize, w as usize), g.into_raw())
        .map_err(|e| ImagingError::format(path, e.to_string()))
}

fn create_dir(d: &Path) -> Result<()> {
    std::fs::create_dir_all(d).map_err(|e| ImagingError::io(d, e))
}

/// Extract the selected slices of one volume (and its label) into `out_dir/images` and `out_dir/labels`.
pub fn write_case_slices(
    image: &Volume,
    label: Option<&Volume>,
    source: &Provenance,
    out_dir: &Path,
    opts: &SliceOptions,
) -> Result<Vec<SliceRecord>> {
    check_axis(opts.axis)?;
    let shape = image.spatial_shape();
    let label_data = match label {
        Some(l) if l.channels() != 1 || l.spatial_shape() != shape => {
            return Err(ImagingError::Shape(format!(
                "case {}: label {:?} does not match image {:?} (expected one channel)",
                source.case,
                l.data.shape(),
                image.data.shape()
            )))
        }
        Some(l) => Some(l.data.index_axis(Axis(0), 0)),
        None => None,
    };
    let indices = select_slices(shape, label_data, opts.axis, &opts.selection)?;
    let windows: Vec<(f64, f64)> = image
        .data
        .outer_iter()
        .map(|c| intensity_window(c, &opts.normalization))
        .collect::<Result<_>>()?;
    let (p, q) = plane_axes(opts.axis);
    let spacing = image.spacing();
    let (img_dir, lab_dir) = (out_dir.join("images"), out_dir.join("labels"));
    create_dir(&img_dir)?;
    if label_data.is_some() && opts.write_labels {
        create_dir(&lab_dir)?;
    }
    let mut records = Vec::with_capacity(indices.len());
    for index in indices {
        let stem = format!("{}_a{}_s{index:04}", source.case, opts.axis);
        let planes: Vec<Array2<u8>> = image
            .data
            .outer_iter()
            .zip(&windows)
            .map(|(c, &(lo, hi))| {
                display_slice(c, opts.axis, index).map(|s| to_u8(s.view(), lo, hi))
            })
            .collect::<Result<_>>()?;
        let size = [shape[q], shape[p]];
        let mut image_files = Vec::new();
        match opts.layout {
            ChannelLayout::PerModality => {
                for (c, plane) in planes.iter().enumerate() {
                    let name = if planes.len() == 1 {
                        format!("images/{stem}.png")
                    } else {
                        format!("images/{stem}_c{c}.png")
                    };
                    write_png(&out_dir.join(&name), plane.view())?;
                    image_files.push(name);
                }
            }
            ChannelLayout::Stacked => {
                let mut stack = Array3::<u8>::zeros((planes.len(), size[0], size[1]));
                for (mut dst, plane) in stack.outer_iter_mut().zip(&planes) {
                    dst.assign(plane);
                }
                let name = format!("images/{stem}.npy");
                let path = out_dir.join(&name);
                ndarray_npy::write_npy(&path, &stack)
                    .map_err(|e| ImagingError::format(&path, e.to_string()))?;
                image_files.push(name);
            }
        }
        let (mut label_file, mut classes) = (None, BTreeSet::new());
        if let Some(l) = &label_data {
            let ls = display_slice(l.view(), opts.axis, index)?;
            classes = ls
                .iter()
                .filter(|&&v| v > 0.0)
                .map(|&v| v.round() as u32)
                .collect();
            if opts.write_labels {
                let ids = ls.mapv(|v| v.round().clamp(0.0, 255.0) as u8);
                let name = format!("labels/{stem}.png");
                write_png(&out_dir.join(&name), ids.view())?;
                label_file = Some(name);
            }
        }
        records.push(SliceRecord {
            case: source.case.clone(),
            source_images: source.images.clone(),
            source_label: source.label.clone(),
            axis: opts.axis,
            index,
            spacing,
            pixel_spacing: [spacing[p], spacing[q]],
            size,
            image_files,
            label_file,
            has_foreground: !classes.is_empty(),
            classes: classes.into_iter().collect(),
        });
    }
    Ok(records)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Write `manifest.csv` and `manifest.json` into `out_dir`; returns their paths.
pub fn write_manifest(out_dir: &Path, records: &[SliceRecord]) -> Result<(PathBuf, PathBuf)> {
    let json_path = out_dir.join("manifest.json");
    let text = serde_json::to_string_pretty(records)
        .map_err(|e| ImagingError::format(&json_path, e.to_string()))?;
    std::fs::write(&json_path, text).map_err(|e| ImagingError::io(&json_path, e))?;
    let mut csv = String::from(
        "case,source_images,source_label,axis,index,spacing_x,spacing_y,spacing_z,pixel_spacing_col,pixel_spacing_row,rows,cols,image_files,label_file,has_foreground,classes\n",
    );
    for r in records {
        let fields = [
            csv_field(&r.case),
            csv_field(&r.source_images.join(";")),
            csv_field(r.source_label.as_deref().unwrap_or("")),
            r.axis.to_string(),
            r.index.to_string(),
            r.spacing[0].to_string(),
            r.spacing[1].to_string(),
            r.spacing[2].to_string(),
            r.pixel_spacing[0].to_string(),
            r.pixel_spacing[1].to_string(),
            r.size[0].to_string(),
            r.size[1].to_string(),
            csv_field(&r.image_files.join(";")),
            csv_field(r.label_file.as_deref().unwrap_or("")),
            r.has_foreground.to_string(),
            r.classes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(";"),
        ];
        csv.push_str(&fields.join(","));
        csv.push('\n');
    }
    let csv_path = out_dir.join("manifest.csv");
    std::fs::write(&csv_path, csv).map_err(|e| ImagingError::io(&csv_path, e))?;
    Ok((csv_path, json_path))
}

/// Read a `manifest.json` written by [`write_manifest`].
pub fn read_manifest(path: &Path) -> Result<Vec<SliceRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| ImagingError::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| ImagingError::format(path, format!("not a slice manifest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array3};

    #[test]
    fn display_orientation_is_rot90_of_the_plane() {
        // data[x, y, z] = 100x + 10y + z; axial slice z=1 is the [x, y] plane.
        let d = Array3::from_shape_fn((3, 2, 2), |(x, y, z)| (100 * x + 10 * y + z) as f32);
        let s = display_slice(d.view(), 2, 1).unwrap();
        // Top row is the highest y (anterior), columns run along +x.
        assert_eq!(s, array![[11.0, 111.0, 211.0], [1.0, 101.0, 201.0]]);
        let sag = display_slice(d.view(), 0, 2).unwrap();
        assert_eq!(sag, array![[201.0, 211.0], [200.0, 210.0]]);
        assert!(display_slice(d.view(), 3, 0).is_err());
        assert!(display_slice(d.view(), 2, 2)
            .unwrap_err()
            .to_string()
            .contains("outside"));
    }

    #[test]
    fn percentile_and_u8_mapping_hand_computed() {
        let sorted: Vec<f64> = (0..11).map(f64::from).collect();
        assert_eq!(numpy_percentile(&sorted, 50.0), 5.0);
        assert!((numpy_percentile(&sorted, 25.0) - 2.5).abs() < 1e-12);
        assert_eq!(numpy_percentile(&sorted, 100.0), 10.0);
        assert_eq!(numpy_percentile(&sorted, 0.0), 0.0);
        let px = to_u8(
            array![[0.0f32, 0.5, 1.0, 2.0, -1.0, f32::NAN]].view(),
            0.0,
            1.0,
        );
        assert_eq!(px, array![[0u8, 128, 255, 255, 0, 0]]);
        // 127.5 rounds half to even.
        assert_eq!(to_u8(array![[0.5f32]].view(), 0.0, 1.0)[(0, 0)], 128);
        assert_eq!(
            to_u8(array![[0.5f32, 1.5, 2.5]].view(), 0.0, 255.0),
            array![[0u8, 2, 2]]
        );
        assert_eq!(to_u8(array![[3.0f32]].view(), 2.0, 2.0)[(0, 0)], 0);
        let ch = Array3::from_shape_fn((2, 2, 1), |(i, j, _)| (i * 2 + j) as f32);
        let fixed = Normalization::Fixed {
            lower: -1.0,
            upper: 1.0,
        };
        assert_eq!(intensity_window(ch.view(), &fixed).unwrap(), (-1.0, 1.0));
        assert_eq!(
            intensity_window(ch.view(), &Normalization::MinMax).unwrap(),
            (0.0, 3.0)
        );
        let bad = Normalization::Fixed {
            lower: 1.0,
            upper: 1.0,
        };
        assert!(intensity_window(ch.view(), &bad).is_err());
    }
}
