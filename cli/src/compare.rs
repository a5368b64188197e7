//! `medmae compare`: agreement of two label maps (voxels that differ, Dice per class, geometry), and an optional
//! overlay PNG drawn by `imaging::draw` (the trainer's pictures use the same code): the image with the reference and
//! the prediction, in radiological orientation, on a chosen or the most-foreground slice, with a legend.

use std::path::Path;

use anyhow::{bail, Context, Result};
use imaging::draw::{OverlayCase, OverlayView, ViewAxis};
use imaging::io::LoadOptions;
use imaging::metrics::{dice_labels, DiceOptions};

use crate::load::describe;

/// How to draw the overlay.
#[derive(Debug, Clone, Default)]
pub struct OverlayArgs {
    /// Image to draw the label maps on.
    pub image: Option<std::path::PathBuf>,
    /// PNG to write.
    pub overlay: Option<std::path::PathBuf>,
    /// The plane.
    pub axis: ViewAxis,
    /// Slice index along the plane's RAS axis (default: most reference foreground).
    pub slice: Option<usize>,
    /// Class names for the legend, index = label value.
    pub names: Vec<String>,
}

/// Compare `prediction` with `reference`; print the report; write the overlay when asked.
pub fn run(prediction: &Path, reference: &Path, o: &OverlayArgs, opts: &LoadOptions) -> Result<()> {
    let load = |p: &Path| imaging::io::load_with(p, opts);
    let a = load(prediction)?;
    let b = load(reference)?;
    let Some(differing) = a.count_differing(&b) else {
        bail!(
            "{}: grid {} does not match the reference {} ({}); expected the same grid",
            prediction.display(),
            describe(&a),
            reference.display(),
            describe(&b)
        );
    };
    let max_affine_diff = a.max_affine_difference(&b);
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
    if let Some(out) = &o.overlay {
        let img = match &o.image {
            Some(p) => load(p)?,
            None => bail!("--overlay needs --image"),
        };
        let title = imaging::datasets::case_id(o.image.as_deref().unwrap_or(prediction));
        let case = OverlayCase {
            title: &title,
            image: &img,
            reference: Some(&b),
            prediction: Some(&a),
        };
        let view = OverlayView {
            axis: o.axis,
            slice: o.slice,
        };
        let (fig, shown) = imaging::draw::overlay_figure(&[case], &o.names, &view)
            .with_context(|| format!("cannot draw {}", out.display()))?;
        imaging::draw::save_png(&imaging::draw::encode_png(&fig)?, out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        println!(
            "overlay: {} ({} slice {} of the RAS-reoriented image)",
            out.display(),
            o.axis,
            shown.first().copied().unwrap_or_default()
        );
    }
    Ok(())
}
