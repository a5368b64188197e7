//! On-disk element types shared by the NIfTI and MetaImage readers, and their decoding to `f32`.

use std::fmt;

/// The scalar type of the voxels stored in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElementType {
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Unsigned 16-bit integer.
    U16,
    /// Signed 16-bit integer.
    I16,
    /// Unsigned 32-bit integer.
    U32,
    /// Signed 32-bit integer.
    I32,
    /// Unsigned 64-bit integer.
    U64,
    /// Signed 64-bit integer.
    I64,
    /// IEEE 754 single precision.
    F32,
    /// IEEE 754 double precision.
    F64,
}

impl ElementType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
        }
    }

    /// Lower-case name (`u8`, `i16`, `f32`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::U8 => "u8",
            Self::I8 => "i8",
            Self::U16 => "u16",
            Self::I16 => "i16",
            Self::U32 => "u32",
            Self::I32 => "i32",
            Self::U64 => "u64",
            Self::I64 => "i64",
            Self::F32 => "f32",
            Self::F64 => "f64",
        }
    }

    /// True for the integer types (label maps keep integer values).
    pub fn is_integer(self) -> bool {
        !matches!(self, Self::F32 | Self::F64)
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Byte order of multi-byte elements on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteOrder {
    /// Least significant byte first.
    Little,
    /// Most significant byte first.
    Big,
}

/// Decode `bytes` (a whole number of elements of type `ty`) to `f32`, applying `value * slope + inter` in `f64`
/// when `scaling` is given (the NIfTI `scl_slope`/`scl_inter` rule, computed like nibabel's float64 path).
///
/// Without scaling the value goes through `f64` (exact for every type up to 32 bits) and rounds once to `f32`.
/// Any trailing partial element is ignored; callers pass exactly `n * ty.size()` bytes.
pub(crate) fn decode(
    bytes: &[u8],
    ty: ElementType,
    order: ByteOrder,
    scaling: Option<(f64, f64)>,
) -> Vec<f32> {
    let mut out = vec![0f32; bytes.len() / ty.size()];
    decode_into(bytes, ty, order, scaling, &mut out);
    out
}

/// [`decode`] into `out`, which receives `min(out.len(), bytes.len() / ty.size())` values.
pub(crate) fn decode_into(
    bytes: &[u8],
    ty: ElementType,
    order: ByteOrder,
    scaling: Option<(f64, f64)>,
    out: &mut [f32],
) {
    macro_rules! run {
        ($t:ty, $n:literal) => {{
            let pairs = bytes.chunks_exact($n).zip(out.iter_mut());
            // One loop per (order, scaling) so that each is a plain, vectorisable conversion.
            match (order, scaling) {
                (ByteOrder::Little, None) => pairs.for_each(|(c, o)| {
                    *o = <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])) as f64 as f32
                }),
                (ByteOrder::Big, None) => pairs.for_each(|(c, o)| {
                    *o = <$t>::from_be_bytes(c.try_into().unwrap_or([0; $n])) as f64 as f32
                }),
                (ByteOrder::Little, Some((slope, inter))) => pairs.for_each(|(c, o)| {
                    let v = <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n])) as f64;
                    *o = (v * slope + inter) as f32
                }),
                (ByteOrder::Big, Some((slope, inter))) => pairs.for_each(|(c, o)| {
                    let v = <$t>::from_be_bytes(c.try_into().unwrap_or([0; $n])) as f64;
                    *o = (v * slope + inter) as f32
                }),
            }
        }};
    }
    match ty {
        ElementType::U8 => run!(u8, 1),
        ElementType::I8 => run!(i8, 1),
        ElementType::U16 => run!(u16, 2),
        ElementType::I16 => run!(i16, 2),
        ElementType::U32 => run!(u32, 4),
        ElementType::I32 => run!(i32, 4),
        ElementType::U64 => run!(u64, 8),
        ElementType::I64 => run!(i64, 8),
        ElementType::F32 => run!(f32, 4),
        ElementType::F64 => run!(f64, 8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_type_in_both_orders() {
        let v: i16 = -1234;
        assert_eq!(
            decode(&v.to_le_bytes(), ElementType::I16, ByteOrder::Little, None),
            vec![-1234.0]
        );
        assert_eq!(
            decode(&v.to_be_bytes(), ElementType::I16, ByteOrder::Big, None),
            vec![-1234.0]
        );
        let u: u32 = 4_000_000_000;
        assert_eq!(
            decode(&u.to_be_bytes(), ElementType::U32, ByteOrder::Big, None),
            vec![4.0e9]
        );
        let f: f64 = 0.1;
        assert_eq!(
            decode(&f.to_le_bytes(), ElementType::F64, ByteOrder::Little, None),
            vec![0.1f32]
        );
        let g: f32 = -2.5;
        assert_eq!(
            decode(&g.to_be_bytes(), ElementType::F32, ByteOrder::Big, None),
            vec![-2.5]
        );
        assert_eq!(
            decode(&[0xff, 0x80], ElementType::I8, ByteOrder::Little, None),
            vec![-1.0, -128.0]
        );
        assert_eq!(
            decode(&[0xff, 0x80], ElementType::U8, ByteOrder::Big, None),
            vec![255.0, 128.0]
        );
        let l: i64 = -(1 << 40);
        assert_eq!(
            decode(&l.to_le_bytes(), ElementType::I64, ByteOrder::Little, None),
            vec![-(2f32.powi(40))]
        );
    }

    #[test]
    fn applies_scaling_in_f64() {
        // 3 * 0.5 + 10 = 11.5; 255 * 0.5 + 10 = 137.5
        let out = decode(
            &[3, 255],
            ElementType::U8,
            ByteOrder::Little,
            Some((0.5, 10.0)),
        );
        assert_eq!(out, vec![11.5, 137.5]);
        let out = decode(
            &1.5f32.to_le_bytes(),
            ElementType::F32,
            ByteOrder::Little,
            Some((2.0, -1.0)),
        );
        assert_eq!(out, vec![2.0]);
    }

    #[test]
    fn ignores_partial_trailing_element() {
        assert_eq!(
            decode(&[1, 0, 7], ElementType::U16, ByteOrder::Little, None),
            vec![1.0]
        );
    }
}
