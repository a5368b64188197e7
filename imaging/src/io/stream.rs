//! Bounded reading of voxel bytes: file lengths are checked before allocating, and gzip/zlib streams are inflated
//! only up to the size the header promises (with the buffer grown as data really arrives), so no header value can
//! make the reader allocate more than the file can back.

use std::io::{self, Read};
use std::path::Path;

use flate2::read::{MultiGzDecoder, ZlibDecoder};

use super::input::Input;
use crate::error::{ImagingError, Result};

/// DEFLATE cannot expand data by more than about 1032:1, which bounds what a compressed stream can produce.
pub(crate) const MAX_DEFLATE_RATIO: u64 = 1032;

/// Buffer of the compressed bytes fed to an inflater (larger than `BufReader`'s 8 KiB: fewer, longer inflate calls).
pub(crate) const READ_BUFFER: usize = 256 << 10;

/// A compression codec of a data stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// zlib (RFC 1950), as written by MetaImage's `CompressedData = True`.
    Zlib,
}

impl Codec {
    /// The codec's name for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zlib => "zlib",
        }
    }

    /// gzip if the bytes start with the gzip magic, zlib otherwise (MetaIO's inflate auto-detects both).
    pub(crate) fn sniff(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else {
            Self::Zlib
        }
    }

    /// Wrap a reader in this codec's decoder.
    pub(crate) fn decoder<'a, R: Read + 'a>(self, r: R) -> Box<dyn Read + 'a> {
        match self {
            Self::Gzip => Box::new(MultiGzDecoder::new(r)),
            Self::Zlib => Box::new(ZlibDecoder::new(r)),
        }
    }
}

/// Convert a byte count to `usize`, or report it as too large for this platform.
pub(crate) fn to_usize(path: &Path, n: u64) -> Result<usize> {
    usize::try_from(n).map_err(|_| ImagingError::TooLarge {
        path: path.into(),
        msg: format!("{n} bytes do not fit in memory"),
    })
}

/// Read `len` bytes at `offset` of an uncompressed input, after checking the input holds them (trailing bytes are
/// tolerated; too few is a `Truncated` error naming `what`).
pub(crate) fn read_region(input: &mut Input, offset: u64, len: u64, what: &str) -> Result<Vec<u8>> {
    let have = input.len();
    let end = offset
        .checked_add(len)
        .ok_or_else(|| ImagingError::TooLarge {
            path: input.name.clone(),
            msg: format!("{what} at offset {offset} with {len} bytes overflows"),
        })?;
    if have < end {
        return Err(ImagingError::Truncated {
            path: input.name.clone(),
            what: what.into(),
            expected: end,
            found: have,
        });
    }
    let mut buf = vec![0u8; to_usize(&input.name, len)?];
    let name = input.name.clone();
    input
        .at(offset)?
        .read_exact(&mut buf)
        .map_err(|e| ImagingError::io(&name, e))?;
    Ok(buf)
}

/// Read exactly `len` decompressed bytes from `reader` (already wrapped in `codec`'s decoder). `compressed_len`
/// (the size of the compressed input) caps the initial allocation.
pub(crate) fn read_inflated(
    path: &Path,
    reader: &mut dyn Read,
    codec: Codec,
    len: u64,
    compressed_len: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let cap = len.min(
        compressed_len
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(4096),
    );
    let mut buf = Vec::with_capacity(to_usize(path, cap)?);
    let res = reader.take(len).read_to_end(&mut buf);
    finish_inflate(path, codec, res, buf.len() as u64, len, what)?;
    Ok(buf)
}

/// Discard `n` decompressed bytes (e.g. NIfTI extensions before `vox_offset`).
pub(crate) fn skip_inflated(
    path: &Path,
    reader: &mut dyn Read,
    codec: Codec,
    n: u64,
    what: &str,
) -> Result<()> {
    let res = io::copy(&mut reader.take(n), &mut io::sink());
    let got = *res.as_ref().unwrap_or(&0);
    finish_inflate(path, codec, res.map(|_| 0), got, n, what)
}

/// Turn a decoder's outcome into the right typed error: too few bytes is truncation, a decode error is corruption.
pub(crate) fn finish_inflate(
    path: &Path,
    codec: Codec,
    res: io::Result<usize>,
    got: u64,
    want: u64,
    what: &str,
) -> Result<()> {
    match res {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ImagingError::Truncated {
            path: path.into(),
            what: format!("{what} ({})", codec.name()),
            expected: want,
            found: got,
        }),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other
            ) =>
        {
            Err(ImagingError::Compression {
                path: path.into(),
                codec: codec.name().into(),
                msg: format!("{what}: {e}"),
            })
        }
        Err(e) => Err(ImagingError::io(path, e)),
        Ok(_) if got < want => Err(ImagingError::Truncated {
            path: path.into(),
            what: format!("{what} (decompressed {})", codec.name()),
            expected: want,
            found: got,
        }),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::{GzEncoder, ZlibEncoder};
    use flate2::Compression;
    use std::io::Write;

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_exactly_and_detects_short_streams() {
        let data: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let z = zlib(&data);
        assert_eq!(Codec::sniff(&z), Codec::Zlib);
        let p = Path::new("x.zraw");
        let mut r = Codec::Zlib.decoder(&z[..]);
        assert_eq!(
            read_inflated(p, &mut r, Codec::Zlib, 5000, z.len() as u64, "data").unwrap(),
            data
        );
        let mut r = Codec::Zlib.decoder(&z[..]);
        let err = read_inflated(p, &mut r, Codec::Zlib, 6000, z.len() as u64, "data").unwrap_err();
        assert!(
            matches!(
                err,
                ImagingError::Truncated {
                    expected: 6000,
                    found: 5000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_a_compression_error_and_gzip_is_sniffed() {
        let p = Path::new("x.gz");
        let mut g = GzEncoder::new(Vec::new(), Compression::fast());
        g.write_all(b"hello").unwrap();
        let mut gz = g.finish().unwrap();
        assert_eq!(Codec::sniff(&gz), Codec::Gzip);
        gz.truncate(10); // keep the gzip header only; 0xff starts a block of reserved type 3
        gz.extend_from_slice(&[0xff; 20]);
        let mut r = Codec::Gzip.decoder(&gz[..]);
        let err = read_inflated(p, &mut r, Codec::Gzip, 5, 32, "data").unwrap_err();
        assert!(
            matches!(
                err,
                ImagingError::Compression { .. } | ImagingError::Truncated { .. }
            ),
            "{err}"
        );
        let garbage = [0x78u8, 0x9c, 0xff, 0xff, 0xff, 0xff, 0x00, 0x12];
        let mut r = Codec::Zlib.decoder(&garbage[..]);
        let err = read_inflated(p, &mut r, Codec::Zlib, 100, 8, "data").unwrap_err();
        assert!(err.to_string().contains("x.gz"), "{err}");
    }

    #[test]
    fn region_checks_length_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.raw");
        std::fs::write(&p, [1u8, 2, 3, 4, 5]).unwrap();
        let mut f = Input::file(&p).unwrap();
        assert_eq!(
            read_region(&mut f, 1, 3, "voxel data").unwrap(),
            vec![2, 3, 4]
        );
        let err = read_region(&mut f, 2, 4, "voxel data").unwrap_err();
        assert!(
            matches!(
                err,
                ImagingError::Truncated {
                    expected: 6,
                    found: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(read_region(&mut f, u64::MAX, 2, "voxel data").is_err());
        let bytes = [7u8, 8, 9];
        let mut m = Input::memory(Path::new("upload"), &bytes);
        assert_eq!(read_region(&mut m, 1, 2, "voxel data").unwrap(), vec![8, 9]);
        let err = read_region(&mut m, 1, 3, "voxel data").unwrap_err();
        assert!(err.to_string().starts_with("upload: truncated"), "{err}");
    }
}
