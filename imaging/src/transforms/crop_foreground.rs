//! MONAI `CropForeground`: crop image and label to the bounding box of the foreground of the image (or label),
//! widened by `margin` voxels and grown to a multiple of `k_divisible` (centred, extra voxel at the end); parts of
//! the box outside the volume are zero-padded (`allow_smaller=False`), and the affine origin moves to the box start.
//!
//! Deviation: when nothing is foreground MONAI returns an empty (0-voxel) volume; medmae keeps the volume unchanged
//! (and logs a warning), which is what a sliding-window consumer needs.

use rayon::prelude::*;

use super::geometry::{contiguous, crop_pad};
use super::spatial3;
use crate::{ImagingError, Result, Sample, Volume};
use spec::{Select, Source};

/// Crop to the foreground bounding box.
#[derive(Debug, Clone, PartialEq)]
pub struct CropForeground {
    source: Source,
    select: Select,
    margin: [usize; 3],
    k_divisible: [usize; 3],
}

/// A crop/pad box in input voxels: `[start, start + size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First voxel (may be negative: padded).
    pub start: [i64; 3],
    /// Output spatial shape.
    pub size: [usize; 3],
}

impl CropForeground {
    /// Build; `margin` and `k_divisible` take 0, 1 (all axes) or 3 values (2 = x, y only).
    pub fn new(
        source: Source,
        select: Select,
        margin: &[usize],
        k_divisible: &[usize],
    ) -> Result<Self> {
        let margin = spatial3("margin", margin, 0)?;
        let k_divisible = spatial3("k_divisible", k_divisible, 1)?;
        if let Select::Gt { threshold } = select {
            if threshold.is_nan() {
                return Err(ImagingError::config(
                    "select.threshold",
                    "expected a number, got NaN",
                ));
            }
        }
        Ok(Self {
            source,
            select,
            margin,
            k_divisible,
        })
    }

    /// Where the foreground is read.
    pub fn source(&self) -> Source {
        self.source
    }

    /// The foreground box of `src` after margin and k-divisibility; `None` when there is no foreground.
    pub fn compute_box(&self, src: &Volume) -> Option<CropBox> {
        let (lo, hi) = foreground_extent(src, self.select)?;
        let mut start = [0i64; 3];
        let mut size = [0usize; 3];
        for a in 0..3 {
            let s = lo[a] as i64 - self.margin[a] as i64;
            let e = hi[a] as i64 + self.margin[a] as i64 + 1;
            let orig = (e - s) as usize;
            let k = self.k_divisible[a];
            let new = if k > 0 { orig.div_ceil(k) * k } else { orig };
            start[a] = s - ((new - orig) / 2) as i64;
            size[a] = new;
        }
        Some(CropBox { start, size })
    }

    /// Crop a sample; also returns the box applied (None: no foreground, sample unchanged).
    pub fn apply(&self, sample: Sample) -> Result<(Sample, Option<CropBox>)> {
        let src = match self.source {
            Source::Image => &sample.image,
            Source::Label => sample.label.as_ref().ok_or_else(|| {
                ImagingError::config(
                    "source",
                    "CropForeground reads the label, but the sample has none",
                )
            })?,
        };
        let Some(b) = self.compute_box(src) else {
            tracing::warn!("CropForeground: no foreground voxel, volume left uncropped");
            return Ok((sample, None));
        };
        let out = sample.map_both(|v, _| Ok(crop_pad(v, b.start, b.size)))?;
        Ok((out, Some(b)))
    }
}

/// Per-axis first and last voxel index where any channel is foreground.
fn foreground_extent(vol: &Volume, select: Select) -> Option<([usize; 3], [usize; 3])> {
    let [nx, ny, nz] = vol.spatial_shape();
    if nx * ny * nz == 0 {
        return None;
    }
    let src = contiguous(&vol.data);
    let is_fg = move |x: f32| match select {
        Select::Gt { threshold } => x > threshold,
        Select::Nonzero => x != 0.0,
    };
    let merge =
        |a: Option<([usize; 3], [usize; 3])>, b: Option<([usize; 3], [usize; 3])>| match (a, b) {
            (Some((l1, h1)), Some((l2, h2))) => Some((
                [l1[0].min(l2[0]), l1[1].min(l2[1]), l1[2].min(l2[2])],
                [h1[0].max(h2[0]), h1[1].max(h2[1]), h1[2].max(h2[2])],
            )),
            (a, None) => a,
            (None, b) => b,
        };
    src.par_chunks(ny * nz)
        .enumerate()
        .map(|(ci, slab)| {
            let i = ci % nx;
            let mut acc = None;
            for (j, row) in slab.chunks(nz).enumerate() {
                if let Some(first) = row.iter().position(|&x| is_fg(x)) {
                    let last = row.iter().rposition(|&x| is_fg(x)).unwrap_or(first);
                    acc = merge(acc, Some(([i, j, first], [i, j, last])));
                }
            }
            acc
        })
        .reduce(|| None, merge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array4;

    fn blob() -> Sample {
        let mut img = Array4::<f32>::zeros((1, 10, 8, 6));
        img[[0, 3, 2, 1]] = 1.0;
        img[[0, 5, 4, 1]] = 2.0;
        let label = img.mapv(|x| if x > 1.5 { 1.0 } else { 0.0 });
        let a = Volume::diag_affine([2.0, 1.0, 1.0]);
        Sample::new(Volume::new(img, a), Some(Volume::new(label, a))).unwrap()
    }

    #[test]
    fn box_margin_and_k_divisible() {
        let c = CropForeground::new(Source::Image, Select::default(), &[], &[]).unwrap();
        let (out, b) = c.apply(blob()).unwrap();
        assert_eq!(
            b,
            Some(CropBox {
                start: [3, 2, 1],
                size: [3, 3, 1]
            })
        );
        assert_eq!(out.image.data[[0, 2, 2, 0]], 2.0);
        assert_eq!(out.label.as_ref().unwrap().data[[0, 2, 2, 0]], 1.0);
        assert_eq!(out.image.affine[0][3], 6.0);
        // margin 2, k 4: boxes x 1..=7, y 0..=6, z -1..=3 (sizes 7, 7, 5) grow to 8 with the start moved back by
        // floor(extra / 2); the negative z start is zero-padded.
        let c = CropForeground::new(Source::Image, Select::default(), &[2], &[4]).unwrap();
        let (out, b) = c.apply(blob()).unwrap();
        assert_eq!(
            b,
            Some(CropBox {
                start: [1, 0, -2],
                size: [8, 8, 8]
            })
        );
        assert_eq!(out.image.data[[0, 4, 4, 3]], 2.0);
        assert_eq!(out.image.data.sum(), 3.0);
        // label source, threshold select.
        let c =
            CropForeground::new(Source::Label, Select::Gt { threshold: 0.5 }, &[], &[]).unwrap();
        assert_eq!(
            c.apply(blob()).unwrap().1,
            Some(CropBox {
                start: [5, 4, 1],
                size: [1, 1, 1]
            })
        );
        let c =
            CropForeground::new(Source::Image, Select::Gt { threshold: 5.0 }, &[], &[]).unwrap();
        let (out, b) = c.apply(blob()).unwrap();
        assert_eq!((b, out), (None, blob()));
        assert!(
            CropForeground::new(Source::Image, Select::Nonzero, &[1, 2, 3, 4], &[])
                .unwrap_err()
                .to_string()
                .contains("margin")
        );
    }
}
