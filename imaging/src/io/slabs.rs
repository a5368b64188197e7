//! Decoding voxel bytes straight into the channel-first `(C, X, Y, Z)` layout, slab of slices by slab of slices, so
//! that a compressed file is inflated on one thread while the slabs already inflated are decoded and transposed on
//! another: the load of a `.nii.gz` costs about its inflate time instead of inflate + decode + transpose.

use std::io::Read;
use std::path::Path;
use std::sync::mpsc;

use ndarray::Array4;

use super::dtype::{decode_into, ByteOrder, ElementType};
use super::stream::{self, Codec};
use crate::error::{ImagingError, Result};

/// Slices decoded together: a slab's values for one `y` are 32 rows in cache, and each output run along `z` is at
/// least a cache line long.
const SLAB_SLICES: usize = 32;
/// Bytes inflated per message between the two threads, at least (whole slices).
const MIN_CHUNK_BYTES: usize = 2 << 20;

/// Decodes scalar voxels stored as `(C, Z, Y, X)` (x fastest) into `(C, X, Y, Z)` (z fastest), whole slices at a
/// time, in file order.
pub(crate) struct SlabDecoder {
    ty: ElementType,
    order: ByteOrder,
    scaling: Option<(f64, f64)>,
    /// Channels, z, y, x.
    shape: [usize; 4],
    out: Vec<f32>,
    /// Slices (over all channels) decoded so far.
    done: usize,
    scratch: Vec<f32>,
}

/// How scalar voxels are stored: element type, byte order, NIfTI scaling, channels and `[z, y, x]` per channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    /// Element type on disk.
    pub ty: ElementType,
    /// Byte order on disk.
    pub order: ByteOrder,
    /// `value * slope + inter`, as in [`super::dtype::decode`].
    pub scaling: Option<(f64, f64)>,
    /// Volumes stored one after the other.
    pub channels: usize,
    /// Slices, rows, columns of each volume.
    pub dims: [usize; 3],
}

impl Stored {
    /// Bytes of all the voxel data.
    pub(crate) fn total_bytes(&self) -> u64 {
        let [z, y, x] = self.dims;
        [self.channels, z, y, x, self.ty.size()]
            .iter()
            .fold(1u64, |acc, &n| acc.saturating_mul(n as u64))
    }
}

impl SlabDecoder {
    /// A decoder for voxels stored as `stored` describes; allocates the whole output.
    pub(crate) fn new(stored: Stored) -> Self {
        let [z, y, x] = stored.dims;
        let c = stored.channels;
        Self {
            ty: stored.ty,
            order: stored.order,
            scaling: stored.scaling,
            shape: [c, z, y, x],
            out: vec![0f32; c * z * y * x],
            done: 0,
            scratch: Vec::new(),
        }
    }

    /// Bytes of one stored slice.
    pub(crate) fn slice_bytes(&self) -> usize {
        self.shape[2] * self.shape[3] * self.ty.size()
    }

    /// Decode the slices that follow those already pushed; `bytes` holds whole slices (a partial trailing slice and
    /// slices beyond the volume are ignored).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let [c, z, ..] = self.shape;
        let sb = self.slice_bytes();
        if sb == 0 {
            return;
        }
        let mut slices = (bytes.len() / sb).min(c * z - self.done);
        let mut at = 0;
        while slices > 0 {
            // A run of slices within one channel, at most one slab.
            let (ch, z0) = (self.done / z, self.done % z);
            let n = slices.min(z - z0).min(SLAB_SLICES);
            self.decode_run(&bytes[at..at + n * sb], ch, z0, n);
            self.done += n;
            slices -= n;
            at += n * sb;
        }
    }

    /// Decode `n` slices of channel `ch` starting at `z0`: per `y`, the `n` rows are decoded into a small scratch
    /// buffer and written out as runs of `n` values along z.
    fn decode_run(&mut self, bytes: &[u8], ch: usize, z0: usize, n: usize) {
        let [_, z, y, x] = self.shape;
        let size = self.ty.size();
        let (row_bytes, sb) = (x * size, y * x * size);
        self.scratch.resize(n * x, 0.0);
        let out = &mut self.out[ch * x * y * z..(ch + 1) * x * y * z];
        for yi in 0..y {
            for k in 0..n {
                let row = &bytes[k * sb + yi * row_bytes..][..row_bytes];
                decode_into(
                    row,
                    self.ty,
                    self.order,
                    self.scaling,
                    &mut self.scratch[k * x..(k + 1) * x],
                );
            }
            for xi in 0..x {
                let dst = &mut out[(xi * y + yi) * z + z0..][..n];
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = self.scratch[k * x + xi];
                }
            }
        }
    }

    /// The decoded volume `(C, X, Y, Z)`; an error naming `path` if fewer slices than the volume holds were pushed.
    pub(crate) fn finish(self, path: &Path) -> Result<Array4<f32>> {
        let [c, z, y, x] = self.shape;
        if self.done != c * z {
            return Err(ImagingError::format(
                path,
                format!(
                    "voxel data does not fit its shape: {} of {} slices decoded",
                    self.done,
                    c * z
                ),
            ));
        }
        Array4::from_shape_vec((c, x, y, z), self.out).map_err(|e| {
            ImagingError::format(path, format!("voxel data does not fit its shape: {e}"))
        })
    }
}

/// Read the voxel data of an uncompressed input (`bytes`) into `(C, X, Y, Z)`.
pub(crate) fn decode_all(path: &Path, bytes: &[u8], stored: Stored) -> Result<Array4<f32>> {
    let mut d = SlabDecoder::new(stored);
    d.push(bytes);
    d.finish(path)
}

/// Inflate the voxel data from `reader` (already wrapped in `codec`'s decoder) and decode it, the two overlapped:
/// this thread inflates chunks of whole slices while a scoped worker decodes the previous ones. Errors are those of
/// [`stream::read_inflated`] (truncation, corrupt stream), naming `path` and `what`. As there, nothing larger than
/// `compressed_len` of input can back is allocated: a header claiming more than DEFLATE can expand to goes through
/// [`stream::read_inflated`], which reports the truncation.
pub(crate) fn inflate_decoded(
    path: &Path,
    reader: &mut dyn Read,
    codec: Codec,
    compressed_len: u64,
    stored: Stored,
    what: &str,
) -> Result<Array4<f32>> {
    let total = stored.total_bytes();
    let bound = compressed_len
        .saturating_mul(stream::MAX_DEFLATE_RATIO)
        .saturating_add(4096);
    if total > bound {
        let bytes = stream::read_inflated(path, reader, codec, total, compressed_len, what)?;
        return decode_all(path, &bytes, stored);
    }
    // Within the DEFLATE bound, so it fits in memory's address space.
    let total = stream::to_usize(path, total)?;
    let decoder = SlabDecoder::new(stored);
    let sb = decoder.slice_bytes().max(1);
    let chunk = (MIN_CHUNK_BYTES.div_ceil(sb).max(SLAB_SLICES) * sb).min(total.max(1));
    std::thread::scope(|s| {
        // Two chunks in flight at most; used buffers come back for reuse.
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(1);
        let (back_tx, back_rx) = mpsc::channel::<Vec<u8>>();
        let worker = s.spawn(move || {
            let mut decoder = decoder;
            for buf in rx {
                decoder.push(&buf);
                let _ = back_tx.send(buf);
            }
            decoder
        });
        let mut read = 0usize;
        let mut failure = None;
        while read < total {
            let want = chunk.min(total - read);
            let mut buf = back_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(chunk));
            buf.clear();
            let res = reader.take(want as u64).read_to_end(&mut buf);
            let got = buf.len();
            if let Err(e) = stream::finish_inflate(
                path,
                codec,
                res,
                (read + got) as u64,
                (read + want) as u64,
                what,
            ) {
                failure = Some(e);
                break;
            }
            read += got;
            if tx.send(buf).is_err() {
                break;
            }
        }
        drop(tx);
        let decoder = worker.join().map_err(|_| {
            ImagingError::format(path, "the voxel decoding thread stopped unexpectedly")
        })?;
        match failure {
            Some(e) => Err(e),
            None => decoder.finish(path),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;

    /// Values stored as i16 little-endian in file order (c, z, y, x), each its own file index modulo 30000.
    fn stored(c: usize, z: usize, y: usize, x: usize) -> Vec<u8> {
        (0..c * z * y * x)
            .flat_map(|i| ((i % 30000) as i16 - 15000).to_le_bytes())
            .collect()
    }

    fn stored_i16(channels: usize, dims: [usize; 3], scaling: Option<(f64, f64)>) -> Stored {
        Stored {
            ty: ElementType::I16,
            order: ByteOrder::Little,
            scaling,
            channels,
            dims,
        }
    }

    fn check(a: &Array4<f32>, [c, z, y, x]: [usize; 4], slope: f32, inter: f32) {
        assert_eq!(a.shape(), &[c, x, y, z]);
        for ((ci, xi, yi, zi), &v) in a.indexed_iter() {
            let i = ((ci * z + zi) * y + yi) * x + xi;
            assert_eq!(
                v,
                ((i % 30000) as f32 - 15000.0) * slope + inter,
                "at {ci},{xi},{yi},{zi}"
            );
        }
    }

    #[test]
    fn pushes_in_any_slice_grouping_give_the_transposed_volume() {
        // Sizes around the slab edge, several channels; pushed all at once and a few slices at a time.
        for [c, z, y, x] in [[1, 1, 1, 1], [2, 33, 3, 40], [3, 70, 5, 7], [1, 64, 2, 65]] {
            let bytes = stored(c, z, y, x);
            for per_push in [c * z, 1, 5, 32] {
                let mut d = SlabDecoder::new(stored_i16(c, [z, y, x], None));
                for part in bytes.chunks(per_push * d.slice_bytes()) {
                    d.push(part);
                }
                check(&d.finish(Path::new("t")).unwrap(), [c, z, y, x], 1.0, 0.0);
            }
        }
    }

    #[test]
    fn too_few_slices_is_an_error_naming_the_file() {
        let mut d = SlabDecoder::new(Stored {
            ty: ElementType::U8,
            order: ByteOrder::Big,
            scaling: None,
            channels: 1,
            dims: [4, 2, 2],
        });
        d.push(&[0u8; 12]);
        let err = d.finish(Path::new("short.nii")).unwrap_err().to_string();
        assert!(
            err.contains("short.nii") && err.contains("3 of 4 slices"),
            "{err}"
        );
    }

    #[test]
    fn overlapped_inflate_matches_and_reports_truncation() {
        let [c, z, y, x] = [2, 40, 30, 50];
        let bytes = stored(c, z, y, x);
        let mut g = GzEncoder::new(Vec::new(), Compression::fast());
        g.write_all(&bytes).unwrap();
        let gz = g.finish().unwrap();
        let p = Path::new("v.nii.gz");
        let st = stored_i16(c, [z, y, x], Some((0.5, 2.0)));
        let n = gz.len() as u64;
        let mut r = Codec::Gzip.decoder(&gz[..]);
        let a = inflate_decoded(p, &mut r, Codec::Gzip, n, st, "voxel data").unwrap();
        check(&a, [c, z, y, x], 0.5, 2.0);
        // A stream cut in the middle: truncation naming the file, not a partial volume.
        let mut r = Codec::Gzip.decoder(&gz[..gz.len() / 2]);
        let err = inflate_decoded(p, &mut r, Codec::Gzip, n / 2, st, "voxel data").unwrap_err();
        assert!(
            matches!(
                err,
                ImagingError::Truncated { .. } | ImagingError::Compression { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("v.nii.gz"), "{err}");
        // A stream shorter than the header promises: Truncated with the counts.
        let mut g = GzEncoder::new(Vec::new(), Compression::fast());
        g.write_all(&bytes[..bytes.len() - 100]).unwrap();
        let short = g.finish().unwrap();
        let mut r = Codec::Gzip.decoder(&short[..]);
        let err = inflate_decoded(p, &mut r, Codec::Gzip, short.len() as u64, st, "voxel data")
            .unwrap_err();
        assert!(
            matches!(err, ImagingError::Truncated { expected, found, .. }
                if expected == bytes.len() as u64 && found == bytes.len() as u64 - 100),
            "{err}"
        );
        // A header claiming far more than the stream can expand to: refused without allocating the claim.
        let huge = Stored {
            dims: [1 << 12, 1 << 10, 1 << 10],
            ..st
        };
        let mut r = Codec::Gzip.decoder(&short[..]);
        let err = inflate_decoded(
            p,
            &mut r,
            Codec::Gzip,
            short.len() as u64,
            huge,
            "voxel data",
        )
        .unwrap_err();
        assert!(matches!(err, ImagingError::Truncated { .. }), "{err}");
    }
}
