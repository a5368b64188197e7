//! The in-memory volume: channel-first voxel data plus its physical geometry.

use ndarray::Array4;

/// A (possibly multi-channel) image volume in memory.
///
/// `data` is channel-first `(C, X, Y, Z)` in voxel index order (i, j, k) of the source file; 2-D images have `Z = 1`.
/// `affine` maps voxel indices (i, j, k, 1) to RAS+ world millimetres (the NIfTI/nibabel convention). MetaImage's
/// LPS geometry is converted on load, so every volume speaks RAS.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    /// Voxel data, `(C, X, Y, Z)`.
    pub data: Array4<f32>,
    /// 4x4 voxel-to-RAS affine (row-major).
    pub affine: [[f64; 4]; 4],
}

impl Volume {
    /// Build a volume from data and an affine.
    pub fn new(data: Array4<f32>, affine: [[f64; 4]; 4]) -> Self {
        Self { data, affine }
    }

    /// How many values differ from `other`'s (same data shape required: `None` when the shapes differ).
    pub fn count_differing(&self, other: &Volume) -> Option<usize> {
        (self.data.shape() == other.data.shape()).then(|| {
            self.data
                .iter()
                .zip(other.data.iter())
                .filter(|(x, y)| x != y)
                .count()
        })
    }

    /// The largest absolute difference between an entry of this volume's affine and `other`'s.
    pub fn max_affine_difference(&self, other: &Volume) -> f64 {
        self.affine
            .iter()
            .flatten()
            .zip(other.affine.iter().flatten())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max)
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.data.shape()[0]
    }

    /// Spatial shape `(X, Y, Z)`.
    pub fn spatial_shape(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[1], s[2], s[3]]
    }

    /// Voxel spacing in mm: the column norms of the affine's 3x3 part.
    pub fn spacing(&self) -> [f64; 3] {
        let a = &self.affine;
        let mut out = [0.0; 3];
        for (j, o) in out.iter_mut().enumerate() {
            *o = (a[0][j] * a[0][j] + a[1][j] * a[1][j] + a[2][j] * a[2][j]).sqrt();
        }
        out
    }

    /// World position (RAS mm) of voxel (0, 0, 0).
    pub fn origin(&self) -> [f64; 3] {
        [self.affine[0][3], self.affine[1][3], self.affine[2][3]]
    }

    /// SHA-256 (lower-case hex) of the voxel values as little-endian IEEE-754 `f32`, in the order x fastest, then y,
    /// z and channel — the on-disk order of a float32 NIfTI file, so that
    /// `hashlib.sha256(np.asarray(img.dataobj, "<f4").tobytes(order="F")).hexdigest()` reproduces it. Equal
    /// checksums mean bit-identical values on the same grid (`-0.0` and `0.0` differ, as do NaN payloads).
    pub fn checksum(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let ordered = self.data.view().permuted_axes([0, 3, 2, 1]);
        let mut buf = Vec::with_capacity(4 * 4096);
        for v in ordered.iter() {
            buf.extend_from_slice(&v.to_le_bytes());
            if buf.len() >= 4 * 4096 {
                h.update(&buf);
                buf.clear();
            }
        }
        h.update(&buf);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Direction cosines: the affine's 3x3 part with unit columns (columns = voxel axes).
    pub fn direction(&self) -> [[f64; 3]; 3] {
        let sp = self.spacing();
        let mut d = [[0.0; 3]; 3];
        for (r, row) in d.iter_mut().enumerate() {
            for (c, v) in row.iter_mut().enumerate() {
                *v = if sp[c] > 0.0 {
                    self.affine[r][c] / sp[c]
                } else {
                    0.0
                };
            }
        }
        d
    }

    /// Affine from spacing, origin and direction (columns = voxel axes), all in RAS.
    pub fn affine_from(
        spacing: [f64; 3],
        origin: [f64; 3],
        direction: [[f64; 3]; 3],
    ) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                a[r][c] = direction[r][c] * spacing[c];
            }
            a[r][3] = origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// The identity-direction affine for a spacing (origin 0).
    pub fn diag_affine(spacing: [f64; 3]) -> [[f64; 4]; 4] {
        Self::affine_from(
            spacing,
            [0.0; 3],
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_values_and_affine_distance() {
        let mut eye = [[0.0; 4]; 4];
        (0..4).for_each(|i| eye[i][i] = 1.0);
        let a = Volume::new(Array4::zeros((1, 2, 2, 1)), eye);
        let mut b = a.clone();
        b.data[[0, 1, 0, 0]] = 2.0;
        b.data[[0, 1, 1, 0]] = -1.0;
        b.affine[0][3] = -0.25;
        b.affine[2][2] = 1.5;
        assert_eq!(a.count_differing(&b), Some(2));
        assert_eq!(a.count_differing(&a), Some(0));
        let c = Volume::new(Array4::zeros((1, 2, 1, 2)), eye);
        assert_eq!(a.count_differing(&c), None);
        assert_eq!(a.max_affine_difference(&b), 0.5);
        assert_eq!(b.max_affine_difference(&a), 0.5);
    }

    #[test]
    fn spacing_origin_direction_roundtrip() {
        let dir = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]];
        let a = Volume::affine_from([1.5, 2.0, 3.0], [10.0, -5.0, 2.5], dir);
        let v = Volume::new(Array4::zeros((1, 2, 3, 4)), a);
        assert_eq!(v.spacing(), [1.5, 2.0, 3.0]);
        assert_eq!(v.origin(), [10.0, -5.0, 2.5]);
        assert_eq!(v.direction(), dir);
        assert_eq!(v.spatial_shape(), [2, 3, 4]);
    }

    #[test]
    fn checksum_hashes_values_in_nifti_order() {
        // Empty input: the SHA-256 of no bytes.
        let empty = Volume::new(Array4::zeros((0, 1, 1, 1)), Volume::diag_affine([1.0; 3]));
        assert_eq!(
            empty.checksum(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // x fastest: (x=0, y=0), (x=1, y=0) -> values 1.0, 2.0; hand-checked with Python:
        // hashlib.sha256(np.array([1, 2], "<f4").tobytes()).hexdigest()
        let mut a = Array4::zeros((1, 2, 1, 1));
        a[[0, 0, 0, 0]] = 1.0;
        a[[0, 1, 0, 0]] = 2.0;
        let v = Volume::new(a, Volume::diag_affine([1.0; 3]));
        assert_eq!(
            v.checksum(),
            "b9c80b5adeca450753a16950c3cc655d271f7bef7a485bc83f112b72fef21d37"
        );
        let mut neg = v.clone();
        neg.data[[0, 0, 0, 0]] = -0.0;
        let mut pos = v.clone();
        pos.data[[0, 0, 0, 0]] = 0.0;
        assert_ne!(neg.checksum(), pos.checksum());
    }
}
