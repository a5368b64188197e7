//! The NIfTI-1 (348-byte) and NIfTI-2 (540-byte) headers as one structure: decoding (either byte order, told apart by
//! `sizeof_hdr` as the standards say) and encoding (little-endian), with the field offsets of both specifications.

use std::path::Path;

use super::super::dtype::ByteOrder;
use crate::error::{ImagingError, Result};

/// The NIfTI header version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NiftiVersion {
    /// NIfTI-1: 348-byte header, 16-bit dimensions, 32-bit floats.
    #[serde(rename = "1")]
    One,
    /// NIfTI-2: 540-byte header, 64-bit dimensions and floats.
    #[serde(rename = "2")]
    Two,
}

impl NiftiVersion {
    /// `sizeof_hdr` of this version.
    pub(crate) fn header_bytes(self) -> u64 {
        match self {
            Self::One => 348,
            Self::Two => 540,
        }
    }

    /// Smallest `vox_offset` of a single file: the header plus the 4-byte extension flag.
    pub(crate) fn min_vox_offset(self) -> u64 {
        self.header_bytes() + 4
    }

    /// The version number (1 or 2).
    pub fn number(self) -> u8 {
        match self {
            Self::One => 1,
            Self::Two => 2,
        }
    }

    /// The magic of a single-file (`.nii`) header.
    fn single_magic(self) -> &'static [u8] {
        match self {
            Self::One => b"n+1\0",
            Self::Two => b"n+2\0\r\n\x1a\n",
        }
    }

    /// The magic of a header/image pair (`.hdr` + `.img`), which medmae does not read.
    fn pair_magic(self) -> &'static [u8] {
        match self {
            Self::One => b"ni1\0",
            Self::Two => b"ni2\0\r\n\x1a\n",
        }
    }
}

/// The header fields medmae uses, widened to the NIfTI-2 types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawHeader {
    pub version: NiftiVersion,
    pub order: ByteOrder,
    pub dim: [i64; 8],
    pub intent_code: i32,
    pub datatype: i16,
    pub bitpix: i16,
    pub pixdim: [f64; 8],
    pub vox_offset: f64,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub xyzt_units: i32,
    pub qform_code: i32,
    pub sform_code: i32,
    pub quatern: [f64; 3],
    pub qoffset: [f64; 3],
    pub srow: [[f64; 4]; 3],
    pub descrip: Vec<u8>,
}

/// Byte offsets of the fields in one version's header.
struct Offsets {
    dim: usize,
    intent_code: usize,
    datatype: usize,
    bitpix: usize,
    pixdim: usize,
    vox_offset: usize,
    scl_slope: usize,
    scl_inter: usize,
    xyzt_units: usize,
    descrip: usize,
    qform_code: usize,
    sform_code: usize,
    quatern: usize,
    qoffset: usize,
    srow: usize,
    magic: usize,
}

const V1: Offsets = Offsets {
    dim: 40,
    intent_code: 68,
    datatype: 70,
    bitpix: 72,
    pixdim: 76,
    vox_offset: 108,
    scl_slope: 112,
    scl_inter: 116,
    xyzt_units: 123,
    descrip: 148,
    qform_code: 252,
    sform_code: 254,
    quatern: 256,
    qoffset: 268,
    srow: 280,
    magic: 344,
};

const V2: Offsets = Offsets {
    dim: 16,
    intent_code: 504,
    datatype: 12,
    bitpix: 14,
    pixdim: 104,
    vox_offset: 168,
    scl_slope: 176,
    scl_inter: 184,
    xyzt_units: 500,
    descrip: 240,
    qform_code: 344,
    sform_code: 348,
    quatern: 352,
    qoffset: 376,
    srow: 400,
    magic: 4,
};

/// Reads fixed-size numbers from header bytes in one byte order (the caller checked the length).
struct Fields<'a> {
    b: &'a [u8],
    order: ByteOrder,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.b.get(at..at + N) {
            a.copy_from_slice(s);
        }
        if self.order == ByteOrder::Big {
            a.reverse();
        }
        a
    }
    fn i16(&self, at: usize) -> i16 {
        i16::from_le_bytes(self.bytes(at))
    }
    fn i32(&self, at: usize) -> i32 {
        i32::from_le_bytes(self.bytes(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.bytes(at))
    }
    fn f32(&self, at: usize) -> f64 {
        f32::from_le_bytes(self.bytes(at)) as f64
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.bytes(at))
    }
}

/// The version and byte order that the first four bytes (`sizeof_hdr`) announce, or why the input is not NIfTI.
pub(crate) fn sniff(path: &Path, head: &[u8]) -> Result<(NiftiVersion, ByteOrder)> {
    let not_nifti = |found: String| ImagingError::NotFormat {
        path: path.into(),
        format: "NIfTI".into(),
        found,
    };
    let Some(first) = head.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Err(not_nifti(format!(
            "{} bytes; a NIfTI header has at least 348",
            head.len()
        )));
    };
    for (v, order) in [
        (i32::from_le_bytes(first), ByteOrder::Little),
        (i32::from_be_bytes(first), ByteOrder::Big),
    ] {
        match v {
            348 => return Ok((NiftiVersion::One, order)),
            540 => return Ok((NiftiVersion::Two, order)),
            _ => {}
        }
    }
    Err(not_nifti(format!(
        "sizeof_hdr is {}; expected 348 for NIfTI-1 or 540 for NIfTI-2",
        i32::from_le_bytes(first)
    )))
}

/// Decode a whole header (`raw` holds at least `version.header_bytes()` bytes).
pub(crate) fn decode(
    path: &Path,
    raw: &[u8],
    version: NiftiVersion,
    order: ByteOrder,
) -> Result<RawHeader> {
    let f = Fields { b: raw, order };
    let (o, wide) = match version {
        NiftiVersion::One => (&V1, false),
        NiftiVersion::Two => (&V2, true),
    };
    let magic_len = version.single_magic().len();
    let magic = raw.get(o.magic..o.magic + magic_len).unwrap_or_default();
    if magic == version.pair_magic() {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: format!(
                "NIfTI-{} header/image pair (.hdr + .img); expected a single .nii or .nii.gz file",
                version.number()
            ),
        });
    }
    if magic != version.single_magic() {
        return Err(ImagingError::field(
            path,
            "magic",
            format!(
                "is {:?}; expected {:?} (single-file NIfTI-{})",
                String::from_utf8_lossy(magic),
                String::from_utf8_lossy(version.single_magic()),
                version.number()
            ),
        ));
    }
    let int = |at: usize| if wide { f.i64(at) } else { f.i16(at) as i64 };
    let float = |at: usize| if wide { f.f64(at) } else { f.f32(at) };
    let (isz, fsz) = if wide { (8, 8) } else { (2, 4) };
    let code = |at: usize| if wide { f.i32(at) } else { f.i16(at) as i32 };
    let descrip_bytes = raw.get(o.descrip..o.descrip + 80).unwrap_or_default();
    let descrip_len = descrip_bytes.iter().position(|&b| b == 0).unwrap_or(80);
    Ok(RawHeader {
        version,
        order,
        dim: std::array::from_fn(|i| int(o.dim + i * isz)),
        intent_code: if wide {
            f.i32(o.intent_code)
        } else {
            f.i16(o.intent_code) as i32
        },
        datatype: f.i16(o.datatype),
        bitpix: f.i16(o.bitpix),
        pixdim: std::array::from_fn(|i| float(o.pixdim + i * fsz)),
        vox_offset: if wide {
            f.i64(o.vox_offset) as f64
        } else {
            f.f32(o.vox_offset)
        },
        scl_slope: float(o.scl_slope),
        scl_inter: float(o.scl_inter),
        xyzt_units: if wide {
            f.i32(o.xyzt_units)
        } else {
            raw.get(o.xyzt_units).copied().unwrap_or(0) as i32
        },
        qform_code: code(o.qform_code),
        sform_code: code(o.sform_code),
        quatern: std::array::from_fn(|i| float(o.quatern + i * fsz)),
        qoffset: std::array::from_fn(|i| float(o.qoffset + i * fsz)),
        srow: std::array::from_fn(|r| std::array::from_fn(|c| float(o.srow + (4 * r + c) * fsz))),
        descrip: descrip_bytes[..descrip_len].to_vec(),
    })
}

/// Appends little-endian numbers at fixed offsets of a header buffer.
struct Writer {
    b: Vec<u8>,
}

impl Writer {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
    }
}

/// Encode a header (little-endian) for writing; NIfTI-1 narrows its fields (the caller checked the ranges).
pub(crate) fn encode(h: &RawHeader) -> Vec<u8> {
    let (o, wide) = match h.version {
        NiftiVersion::One => (&V1, false),
        NiftiVersion::Two => (&V2, true),
    };
    let mut w = Writer {
        b: vec![0u8; h.version.header_bytes() as usize],
    };
    w.put(0, &(h.version.header_bytes() as i32).to_le_bytes());
    let int = |w: &mut Writer, at: usize, v: i64| {
        if wide {
            w.put(at, &v.to_le_bytes())
        } else {
            w.put(at, &(v as i16).to_le_bytes())
        }
    };
    let float = |w: &mut Writer, at: usize, v: f64| {
        if wide {
            w.put(at, &v.to_le_bytes())
        } else {
            w.put(at, &(v as f32).to_le_bytes())
        }
    };
    let (isz, fsz) = if wide { (8, 8) } else { (2, 4) };
    for (i, &d) in h.dim.iter().enumerate() {
        int(&mut w, o.dim + i * isz, d);
    }
    for (i, &p) in h.pixdim.iter().enumerate() {
        float(&mut w, o.pixdim + i * fsz, p);
    }
    if wide {
        w.put(o.intent_code, &h.intent_code.to_le_bytes());
        w.put(o.vox_offset, &(h.vox_offset as i64).to_le_bytes());
        w.put(o.xyzt_units, &h.xyzt_units.to_le_bytes());
        w.put(o.qform_code, &h.qform_code.to_le_bytes());
        w.put(o.sform_code, &h.sform_code.to_le_bytes());
    } else {
        w.put(o.intent_code, &(h.intent_code as i16).to_le_bytes());
        w.put(o.vox_offset, &(h.vox_offset as f32).to_le_bytes());
        w.put(o.xyzt_units, &[h.xyzt_units as u8]);
        w.put(o.qform_code, &(h.qform_code as i16).to_le_bytes());
        w.put(o.sform_code, &(h.sform_code as i16).to_le_bytes());
        // The Analyze-era `regular` flag that old readers check.
        w.put(38, b"r");
    }
    w.put(o.datatype, &h.datatype.to_le_bytes());
    w.put(o.bitpix, &h.bitpix.to_le_bytes());
    float(&mut w, o.scl_slope, h.scl_slope);
    float(&mut w, o.scl_inter, h.scl_inter);
    for i in 0..3 {
        float(&mut w, o.quatern + i * fsz, h.quatern[i]);
        float(&mut w, o.qoffset + i * fsz, h.qoffset[i]);
    }
    for (r, row) in h.srow.iter().enumerate() {
        for (c, &v) in row.iter().enumerate() {
            float(&mut w, o.srow + (4 * r + c) * fsz, v);
        }
    }
    let n = h.descrip.len().min(79);
    w.put(o.descrip, &h.descrip[..n]);
    w.put(o.magic, h.version.single_magic());
    w.b
}
