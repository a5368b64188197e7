//! 2-D samples for 3-D and 2-D models: true-2D volumes (`Z = 1`) cut from a volume or read back from the PNG/`.npy`
//! slices of [`crate::slices`], and pseudo-3D volumes that replicate a 2-D slice along depth so 3-D models accept it.

use std::path::{Path, PathBuf};

use ndarray::{s, Array3, Array4, Axis};

use crate::error::{ImagingError, Result};
use crate::loader::SampleSource;
use crate::slices::{plane_axes, read_png, SliceRecord};
use crate::volume::Volume;
use crate::Sample;

/// Slice `index` across `axis` as a true-2D volume `(C, P, Q, 1)` in voxel order (no display rotation), with the
/// affine columns permuted so every voxel keeps its world position.
pub fn slice_volume(vol: &Volume, axis: usize, index: usize) -> Result<Volume> {
    if axis > 2 {
        return Err(ImagingError::config(
            "axis",
            format!("must be 0, 1 or 2, got {axis}"),
        ));
    }
    let n = vol.spatial_shape()[axis];
    if index >= n {
        return Err(ImagingError::config(
            "index",
            format!("{index} is outside 0..{n} on axis {axis}"),
        ));
    }
    let plane = vol
        .data
        .index_axis(Axis(axis + 1), index)
        .insert_axis(Axis(3))
        .to_owned();
    let (p, q) = plane_axes(axis);
    let a = &vol.affine;
    let mut affine = [[0.0; 4]; 4];
    for r in 0..3 {
        affine[r][0] = a[r][p];
        affine[r][1] = a[r][q];
        affine[r][2] = a[r][axis];
        affine[r][3] = a[r][3] + a[r][axis] * index as f64;
    }
    affine[3][3] = 1.0;
    Ok(Volume::new(plane, affine))
}

/// Replicate a true-2D volume (`Z = 1`) `depth` times along Z (same affine, so the Z spacing is kept).
pub fn replicate_depth(vol: &Volume, depth: usize) -> Result<Volume> {
    let [x, y, z] = vol.spatial_shape();
    if z != 1 {
        return Err(ImagingError::Shape(format!(
            "pseudo-3D needs a 2-D volume (Z = 1), got spatial shape [{x}, {y}, {z}]"
        )));
    }
    if depth == 0 {
        return Err(ImagingError::config("depth", "must be >= 1"));
    }
    let plane = vol.data.slice(s![.., .., .., 0]);
    let data = Array4::from_shape_fn((vol.channels(), x, y, depth), |(c, i, j, _)| {
        plane[(c, i, j)]
    });
    Ok(Volume::new(data, vol.affine))
}

/// A display-oriented slice `(C, rows, cols)` back in voxel order as a `(C, P, Q, 1)` volume (the inverse of
/// [`crate::slices::display_slice`]) with in-plane spacing `[col, row]` mm.
pub fn from_display(pixels: Array3<f32>, pixel_spacing: [f64; 2]) -> Volume {
    // display[r, c] = plane[c, Q-1-r]  =>  plane[p, q] = display[Q-1-q, p].
    let plane = pixels
        .slice(s![.., ..;-1, ..])
        .permuted_axes([0, 2, 1])
        .to_owned();
    let data = plane.insert_axis(Axis(3));
    Volume::new(
        data,
        Volume::diag_affine([pixel_spacing[0], pixel_spacing[1], 1.0]),
    )
}

fn read_u8_image(path: &Path) -> Result<Array3<u8>> {
    if path.extension().is_some_and(|e| e == "npy") {
        ndarray_npy::read_npy(path).map_err(|e| {
            ImagingError::format(path, format!("expected a u8 (C, rows, cols) .npy: {e}"))
        })
    } else {
        Ok(read_png(path)?.insert_axis(Axis(0)))
    }
}

/// Load a manifest row as a true-2D sample: image intensities scaled to [0, 1] (`u8 / 255`), channels stacked in
/// file order, and the label (class ids) when the row has one. Paths are relative to `root` (the slice folder).
pub fn load_slice_sample(record: &SliceRecord, root: &Path) -> Result<(Volume, Option<Volume>)> {
    let mut planes: Vec<Array3<u8>> = Vec::with_capacity(record.image_files.len());
    for f in &record.image_files {
        let path = root.join(f);
        let p = read_u8_image(&path)?;
        if p.shape()[1..] != record.size {
            return Err(ImagingError::format(
                &path,
                format!(
                    "size {:?} does not match the manifest's {:?}",
                    &p.shape()[1..],
                    record.size
                ),
            ));
        }
        planes.push(p);
    }
    if planes.is_empty() {
        return Err(ImagingError::config(
            "image_files",
            format!(
                "manifest row {}/{} lists no image file",
                record.case, record.index
            ),
        ));
    }
    let views: Vec<_> = planes.iter().map(|p| p.view()).collect();
    let stacked =
        ndarray::concatenate(Axis(0), &views).map_err(|e| ImagingError::Shape(e.to_string()))?;
    let image = from_display(stacked.mapv(|v| f32::from(v) / 255.0), record.pixel_spacing);
    let label = match &record.label_file {
        Some(f) => {
            let path = root.join(f);
            let l = read_png(&path)?;
            if l.dim() != (record.size[0], record.size[1]) {
                return Err(ImagingError::format(
                    &path,
                    format!(
                        "size {:?} does not match the manifest's {:?}",
                        l.dim(),
                        record.size
                    ),
                ));
            }
            Some(from_display(
                l.mapv(f32::from).insert_axis(Axis(0)),
                record.pixel_spacing,
            ))
        }
        None => None,
    };
    Ok((image, label))
}

/// PNG/`.npy` slices of a manifest (the 2-D path), loaded as true-2D samples (see [`crate::pseudo3d`]).
#[derive(Debug, Clone)]
pub struct SliceSource {
    /// Manifest rows.
    pub records: Vec<SliceRecord>,
    /// The folder the manifest's paths are relative to.
    pub root: PathBuf,
}

impl SampleSource for SliceSource {
    fn len(&self) -> usize {
        self.records.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        let (image, label) =
            load_slice_sample(crate::loader::item(&self.records, index)?, &self.root)?;
        Ok(Sample { image, label })
    }
    fn identity(&self, index: usize) -> Option<String> {
        let r = self.records.get(index)?;
        Some(
            r.image_files
                .iter()
                .chain(&r.label_file)
                .map(|f| crate::loader::file_identity(&self.root.join(f)))
                .collect::<Vec<_>>()
                .join(";"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slices::{display_slice, write_case_slices, Provenance, SliceOptions};

    fn vol() -> Volume {
        let data = Array4::from_shape_fn((2, 4, 3, 5), |(c, x, y, z)| {
            (c * 1000 + x * 100 + y * 10 + z) as f32
        });
        Volume::new(
            data,
            Volume::affine_from(
                [0.5, 1.0, 2.0],
                [10.0, 20.0, 30.0],
                [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            ),
        )
    }

    fn world(v: &Volume, i: [usize; 3]) -> [f64; 3] {
        std::array::from_fn(|r| {
            (0..3).map(|c| v.affine[r][c] * i[c] as f64).sum::<f64>() + v.affine[r][3]
        })
    }

    #[test]
    fn slice_volume_keeps_world_positions() {
        let v = vol();
        for axis in 0..3 {
            let s = slice_volume(&v, axis, 2).unwrap();
            let (p, q) = plane_axes(axis);
            assert_eq!(
                s.spatial_shape(),
                [v.spatial_shape()[p], v.spatial_shape()[q], 1]
            );
            for (i, j) in [(0, 0), (1, 2)] {
                let mut src = [0; 3];
                src[p] = i;
                src[q] = j;
                src[axis] = 2;
                assert_eq!(s.data[(1, i, j, 0)], v.data[(1, src[0], src[1], src[2])]);
                assert_eq!(world(&s, [i, j, 0]), world(&v, src));
            }
        }
        assert!(slice_volume(&v, 2, 5).is_err());
    }

    #[test]
    fn replicate_and_invert_display() {
        let v = vol();
        let s = slice_volume(&v, 2, 1).unwrap();
        let r = replicate_depth(&s, 4).unwrap();
        assert_eq!(r.spatial_shape(), [4, 3, 4]);
        for z in 0..4 {
            assert_eq!(
                r.data.slice(s![.., .., .., z]),
                s.data.slice(s![.., .., .., 0])
            );
        }
        assert!(replicate_depth(&v, 4)
            .unwrap_err()
            .to_string()
            .contains("Z = 1"));
        let disp = display_slice(v.data.index_axis(Axis(0), 0), 2, 1)
            .unwrap()
            .insert_axis(Axis(0));
        let back = from_display(disp, [0.5, 1.0]);
        assert_eq!(
            back.data.index_axis(Axis(0), 0),
            s.data.index_axis(Axis(0), 0)
        );
    }

    #[test]
    fn manifest_rows_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let v = vol();
        let mut lab = Array4::<f32>::zeros((1, 4, 3, 5));
        lab[(0, 3, 1, 2)] = 5.0;
        let l = Volume::new(lab, v.affine);
        let recs = write_case_slices(
            &v,
            Some(&l),
            &Provenance {
                case: "x".into(),
                ..Provenance::default()
            },
            dir.path(),
            &SliceOptions::default(),
        )
        .unwrap();
        let (img, label) = load_slice_sample(&recs[0], dir.path()).unwrap();
        assert_eq!(img.data.shape(), &[2, 4, 3, 1]);
        assert_eq!(
            img.data[(0, 0, 0, 0)],
            2.0 / 255.0,
            "value 2 of 0..=324 maps to round(1.57) = 2"
        );
        // Min-max is per volume: the channel spans 0..=324, the middle slice (z=2) has 322 at x=3, y=2.
        assert_eq!(img.data[(0, 3, 2, 0)], 253.0 / 255.0);
        let label = label.unwrap();
        assert_eq!(label.data[(0, 3, 1, 0)], 5.0);
        assert_eq!(label.data.iter().filter(|&&x| x > 0.0).count(), 1);
    }
}
