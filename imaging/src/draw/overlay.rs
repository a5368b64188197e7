//! The two figures medmae draws: segmentation overlays (image | reference | prediction, one row per case) and MAE
//! reconstruction grids (input | masked | reconstruction, one row per sample).

use image::RgbImage;
use ndarray::{Array2, Array3, ArrayView3, Axis};

use super::{
    figure, render_panel, screen_slice, LegendEntry, Panel, PanelLayers, ScreenSlice, ViewAxis,
    OUTLINE,
};
use crate::error::{ImagingError, Result};
use crate::fingerprint::percentile_sorted;
use crate::orient;
use crate::volume::Volume;

/// One row of an overlay figure: an image and label maps (class ids) on its grid, in any orientation (they are
/// reoriented to RAS for display).
#[derive(Debug, Clone, Copy)]
pub struct OverlayCase<'a> {
    /// Shown in the first panel's title (e.g. the case id).
    pub title: &'a str,
    /// The image (channel 0 is drawn).
    pub image: &'a Volume,
    /// Reference (ground truth) label map.
    pub reference: Option<&'a Volume>,
    /// Predicted label map.
    pub prediction: Option<&'a Volume>,
}

/// Which slice an overlay shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayView {
    /// The plane.
    pub axis: ViewAxis,
    /// Index along the plane's RAS axis (0 = most right / posterior / inferior); `None` = the slice with the most
    /// reference foreground (prediction foreground without a reference; the middle slice without either).
    pub slice: Option<usize>,
}

/// The index along `axis` of the slice with the most foreground (label > 0) in a RAS-ordered label volume; `None`
/// when there is no foreground. Ties go to the lowest index.
pub fn most_foreground_slice(ras_labels: ArrayView3<u8>, axis: ViewAxis) -> Option<usize> {
    let ax = Axis(axis.ras_axis());
    let counts: Vec<usize> = ras_labels
        .axis_iter(ax)
        .map(|s| s.iter().filter(|&&v| v > 0).count())
        .collect();
    let best = *counts.iter().max()?;
    (best > 0).then(|| counts.iter().position(|&c| c == best).unwrap_or(0))
}

/// Class ids as bytes (rounded, clamped to 0..=255) of channel 0.
fn class_ids(v: &Volume) -> Array3<u8> {
    v.data.index_axis(Axis(0), 0).mapv(|x| {
        if x.is_finite() {
            x.round().clamp(0.0, 255.0) as u8
        } else {
            0
        }
    })
}

/// The 1st..99th percentile window of a slice (robust to a few extreme voxels), or (0, 1) when flat.
fn slice_window(s: &ScreenSlice<f32>) -> (f32, f32) {
    let mut v: Vec<f32> = s.data.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_unstable_by(f32::total_cmp);
    if v.is_empty() {
        return (0.0, 1.0);
    }
    let (lo, hi) = (
        percentile_sorted(&v, 1.0) as f32,
        percentile_sorted(&v, 99.0) as f32,
    );
    if hi > lo {
        (lo, hi)
    } else {
        super::auto_window(v.iter())
    }
}

struct RasCase {
    image: Array3<f32>,
    spacing: [f64; 3],
    reference: Option<Array3<u8>>,
    prediction: Option<Array3<u8>>,
}

fn to_ras(c: &OverlayCase<'_>) -> Result<RasCase> {
    let shape = c.image.spatial_shape();
    for (what, l) in [("reference", c.reference), ("prediction", c.prediction)] {
        if let Some(l) = l.filter(|l| l.spatial_shape() != shape) {
            return Err(ImagingError::Shape(format!(
                "{}: the {what} label map has spatial shape {:?}, the image {shape:?}",
                c.title,
                l.spatial_shape()
            )));
        }
    }
    let op = orient::plan(&c.image.affine, shape, "RAS")?;
    let first = Volume::new(
        c.image
            .data
            .index_axis(Axis(0), 0)
            .to_owned()
            .insert_axis(Axis(0)),
        c.image.affine,
    );
    let image = op.apply(&first)?;
    let labels = |l: Option<&Volume>| -> Result<Option<Array3<u8>>> {
        l.map(|l| {
            let mut v = Volume::new(class_ids(l).mapv(f32::from).insert_axis(Axis(0)), l.affine);
            v.affine = c.image.affine;
            Ok(class_ids(&op.apply(&v)?))
        })
        .transpose()
    };
    Ok(RasCase {
        spacing: image.spacing(),
        image: image.data.index_axis_move(Axis(0), 0),
        reference: labels(c.reference)?,
        prediction: labels(c.prediction)?,
    })
}

/// The legend: one entry per foreground class (`labels[k]` or `class k`) up to the largest class present or named,
/// and the outline when both label maps are drawn.
fn legend(labels: &[String], max_class: u8, outline: bool) -> Vec<LegendEntry> {
    let n = (labels.len().saturating_sub(1)).max(usize::from(max_class));
    let mut out: Vec<LegendEntry> = (1..=n.min(255))
        .map(|k| LegendEntry {
            colour: super::class_colour(k as u8),
            text: format!(
                "{k} {}",
                labels
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| format!("class {k}"))
            ),
        })
        .collect();
    if outline {
        out.push(LegendEntry {
            colour: OUTLINE,
            text: "outline = reference".into(),
        });
    }
    out
}

/// The overlay figure: per case a row of titled panels — image, image + reference, image + prediction with the
/// reference outlined — in radiological orientation (see the module docs), and a legend with `labels` (index =
/// class id; missing names become `class k`). Returns the figure and the slice index shown for each case.
pub fn overlay_figure(
    cases: &[OverlayCase<'_>],
    labels: &[String],
    view: &OverlayView,
) -> Result<(RgbImage, Vec<usize>)> {
    let mut rows = Vec::new();
    let mut shown = Vec::new();
    let mut max_class = 0u8;
    let mut any_outline = false;
    for c in cases {
        let r = to_ras(c)?;
        let extent = r.image.shape()[view.axis.ras_axis()];
        let index = match view.slice {
            Some(i) if i < extent => i,
            Some(i) => {
                return Err(ImagingError::config(
                    "slice",
                    format!(
                        "{}: {} slice {i} is outside 0..{extent}",
                        c.title, view.axis
                    ),
                ))
            }
            None => r
                .reference
                .as_ref()
                .or(r.prediction.as_ref())
                .and_then(|l| most_foreground_slice(l.view(), view.axis))
                .unwrap_or(extent / 2),
        };
        shown.push(index);
        let img = screen_slice(r.image.view(), r.spacing, view.axis, index);
        let window = slice_window(&img);
        let lab = |l: &Option<Array3<u8>>| -> Option<Array2<u8>> {
            l.as_ref()
                .map(|l| screen_slice(l.view(), r.spacing, view.axis, index).data)
        };
        let (reference, prediction) = (lab(&r.reference), lab(&r.prediction));
        for l in reference.iter().chain(&prediction) {
            max_class = max_class.max(l.iter().copied().max().unwrap_or(0));
        }
        let layers = |fill, outline| PanelLayers {
            image: &img,
            window,
            fill,
            outline,
            edges: Some(view.axis.edges()),
        };
        let mut row = vec![Panel {
            title: format!("{} ({} {index})", c.title, view.axis),
            image: render_panel(&layers(None, None)),
        }];
        if let Some(r) = &reference {
            row.push(Panel {
                title: "reference".into(),
                image: render_panel(&layers(Some(r), None)),
            });
        }
        if let Some(p) = &prediction {
            any_outline |= reference.is_some();
            row.push(Panel {
                title: if reference.is_some() {
                    "prediction (outline: reference)".into()
                } else {
                    "prediction".into()
                },
                image: render_panel(&layers(Some(p), reference.as_ref())),
            });
        }
        rows.push(row);
    }
    Ok((
        figure(&rows, &legend(labels, max_class, any_outline)),
        shown,
    ))
}

/// The MAE figure: per sample a row of titled panels — input, masked input, reconstruction — each an axial slice
/// given as an `(X, Y)` array of a RAS-ordered crop, drawn radiologically in the input's intensity window.
pub fn mae_figure(rows: &[[Array2<f32>; 3]]) -> Result<RgbImage> {
    const TITLES: [&str; 3] = ["input", "masked", "reconstruction"];
    let mut out = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let shape = row[0].dim();
        if row.iter().any(|a| a.dim() != shape) {
            return Err(ImagingError::Shape(format!(
                "MAE figure row {i}: slices of different shapes {:?}",
                row.iter().map(Array2::dim).collect::<Vec<_>>()
            )));
        }
        let slices: Vec<ScreenSlice<f32>> = row
            .iter()
            .map(|a| {
                let v = a.view().insert_axis(Axis(2));
                screen_slice(v, [1.0; 3], ViewAxis::Axial, 0)
            })
            .collect();
        let window = super::auto_window(slices[0].data.iter());
        out.push(
            slices
                .iter()
                .zip(TITLES)
                .map(|(s, t)| Panel {
                    title: if i == 0 {
                        t.to_string()
                    } else {
                        format!("{t} #{}", i + 1)
                    },
                    image: render_panel(&PanelLayers {
                        image: s,
                        window,
                        fill: None,
                        outline: None,
                        edges: Some(ViewAxis::Axial.edges()),
                    }),
                })
                .collect(),
        );
    }
    if out.is_empty() {
        return Err(ImagingError::Shape("MAE figure: no samples".into()));
    }
    Ok(figure(&out, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    /// Stored in LPS voxel order: voxel (0, 0, k) is the patient's right-anterior corner.
    fn lps_case() -> (Volume, Volume) {
        let mut aff = Volume::diag_affine([1.0, 1.0, 2.0]);
        aff[0][0] = -1.0;
        aff[1][1] = -1.0;
        let img = Volume::new(Array4::from_elem((1, 8, 6, 4), 0.5), aff);
        let mut lab = Volume::new(Array4::zeros((1, 8, 6, 4)), aff);
        lab.data[[0, 0, 0, 3]] = 2.0;
        lab.data[[0, 1, 0, 3]] = 2.0;
        lab.data[[0, 0, 1, 1]] = 1.0;
        (img, lab)
    }

    #[test]
    fn overlay_is_radiological_whatever_the_storage_order() {
        let (img, lab) = lps_case();
        let case = OverlayCase {
            title: "c1",
            image: &img,
            reference: Some(&lab),
            prediction: Some(&lab),
        };
        let (fig, shown) = overlay_figure(
            &[case],
            &["bg".into(), "one".into()],
            &OverlayView::default(),
        )
        .unwrap();
        assert_eq!(shown, vec![3], "the slice with most foreground");
        // Reference panel: the label sits at the top-left corner (patient right, anterior).
        let x0 = 2 * super::super::GAP + 256 * 8 / 6;
        let y0 = super::super::GAP + super::super::text::LINE_HEIGHT + 4;
        let red = fig.get_pixel(x0 + 5, y0 + 20).0;
        assert!(
            red[1] > 100 && red[0] < 100,
            "class 2 (green) top-left: {red:?}"
        );
        let far = fig.get_pixel(x0 + 300, y0 + 200).0;
        assert_eq!(far[0], far[1], "grey elsewhere");
        assert!(fig.width() >= 3 * 256 && fig.height() >= 256);
        let bad = OverlayView {
            axis: ViewAxis::Axial,
            slice: Some(4),
        };
        assert!(overlay_figure(&[case], &[], &bad)
            .unwrap_err()
            .to_string()
            .contains("axial slice 4 is outside 0..4"));
        let small = Volume::new(Array4::zeros((1, 2, 2, 2)), img.affine);
        let mismatched = OverlayCase {
            reference: Some(&small),
            ..case
        };
        assert!(overlay_figure(&[mismatched], &[], &OverlayView::default()).is_err());
    }

    #[test]
    fn legend_names_classes_and_outline() {
        let l = legend(&["background".into(), "liver".into()], 3, true);
        let texts: Vec<&str> = l.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(
            texts,
            ["1 liver", "2 class 2", "3 class 3", "outline = reference"]
        );
    }

    #[test]
    fn most_foreground_and_mae_figure() {
        let mut l = Array3::zeros((3, 3, 4));
        l[[0, 0, 2]] = 1;
        l[[1, 0, 2]] = 1;
        l[[2, 2, 1]] = 1;
        assert_eq!(most_foreground_slice(l.view(), ViewAxis::Axial), Some(2));
        assert_eq!(most_foreground_slice(l.view(), ViewAxis::Sagittal), Some(0));
        assert_eq!(
            most_foreground_slice(Array3::<u8>::zeros((2, 2, 2)).view(), ViewAxis::Axial),
            None
        );
        let a = Array2::from_shape_fn((16, 8), |(x, y)| (x + y) as f32);
        let fig =
            mae_figure(&[[a.clone(), a.clone(), a.clone()], [a.clone(), a.clone(), a]]).unwrap();
        // Three panels of 512×256 (aspect 16:8 mm, the smaller side 256) per row.
        assert_eq!(
            fig.width(),
            3 * (512 + super::super::GAP) + super::super::GAP
        );
        assert!(mae_figure(&[]).is_err());
    }
}
