//! Where a MetaImage's voxel bytes are (`ElementDataFile`: `LOCAL`, one file, a `LIST` of files, or the pattern form
//! `fmt min max [step]`), the confinement of data files to the header's folder, and reading them (raw, `.gz`,
//! zlib `CompressedData` bounded by `CompressedDataSize`).

use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use super::super::input::Input;
use super::super::stream::{self, Codec};
use super::super::LoadOptions;
use super::text::{self, MetaText};
use crate::error::{ImagingError, Result};

/// Most files a pattern may expand to (a slice per file; far more than any real volume has).
pub(crate) const MAX_PATTERN_FILES: u64 = 1 << 16;

/// Where the voxel bytes are.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Source {
    /// In the header file, from this byte offset.
    Local(u64),
    /// In these files, concatenated in order (one file, a `LIST` or a pattern).
    Files(Vec<PathBuf>),
}

/// How the voxel bytes are stored in each chunk.
pub(crate) struct Storage {
    /// `CompressedData = True`.
    pub compressed: bool,
    /// `CompressedDataSize`, if given.
    pub compressed_size: Option<u64>,
    /// `HeaderSize`: bytes to skip in each data file; -1 means "the data is at the end of the file".
    pub header_size: i64,
}

fn field_err(path: &Path, msg: impl Into<String>) -> ImagingError {
    ImagingError::field(path, "ElementDataFile", msg)
}

/// Interpret `ElementDataFile` of the header `path` (whose data files live in `dir`, if it has a folder).
pub(crate) fn source(
    path: &Path,
    dir: Option<&Path>,
    t: &MetaText,
    opts: &LoadOptions,
) -> Result<Source> {
    let (_, value) = t
        .get(&["ElementDataFile"])
        .ok_or_else(|| field_err(path, "missing"))?;
    if value == "LOCAL" {
        return Ok(Source::Local(t.data_offset));
    }
    let names: Vec<String> = if text::is_list(value) {
        if t.list.is_empty() {
            return Err(field_err(
                path,
                "LIST names no files; expected one file name per line after it",
            ));
        }
        t.list.clone()
    } else if value.contains('%') {
        pattern(path, value)?
    } else if value.is_empty() {
        return Err(field_err(
            path,
            "is empty; expected LOCAL, LIST, a file name or a pattern",
        ));
    } else {
        vec![value.to_string()]
    };
    let Some(dir) = dir else {
        return Err(ImagingError::Unsupported {
            path: path.into(),
            what: format!(
                "ElementDataFile {value:?} for a header read from memory; expected LOCAL (the data in the header \
                 itself): a separate data file needs a folder"
            ),
        });
    };
    names
        .iter()
        .map(|name| confine(path, dir, name, opts))
        .collect::<Result<Vec<_>>>()
        .map(Source::Files)
}

/// Resolve a data file name against the header's folder; unless external data is allowed, an absolute name or one
/// with a `..` component is refused.
fn confine(path: &Path, dir: &Path, name: &str, opts: &LoadOptions) -> Result<PathBuf> {
    let p = Path::new(name);
    let inside = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !inside && !opts.allow_external_data {
        return Err(field_err(
            path,
            format!(
                "{name:?} is outside the header's directory; expected a file name inside it (absolute paths and \
                 `..` are refused unless external data files are allowed: LoadOptions::allow_external_data, \
                 `medmae --allow-external-data`)"
            ),
        ));
    }
    Ok(dir.join(p))
}

/// Expand the pattern form `fmt min max [step]` (MetaIO: one file per value `min, min + step, ... <= max`, the
/// value printed with the `printf` integer conversion in `fmt`).
fn pattern(path: &Path, value: &str) -> Result<Vec<String>> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let bad = |msg: String| field_err(path, format!("pattern {value:?}: {msg}"));
    let (fmt, nums) = match parts.split_first() {
        Some((fmt, nums)) if (2..=3).contains(&nums.len()) => (*fmt, nums),
        _ => {
            return Err(bad(
                "expected `format min max [step]`, e.g. `slice%03d.raw 1 40 1`".into(),
            ))
        }
    };
    let num = |i: usize, what: &str| -> Result<i64> {
        nums.get(i).map_or(Ok(1), |s| {
            s.parse::<i64>()
                .map_err(|_| bad(format!("{what} {s:?} is not an integer")))
        })
    };
    let (min, max, step) = (num(0, "min")?, num(1, "max")?, num(2, "step")?);
    if step <= 0 || max < min {
        return Err(bad(format!(
            "min {min}, max {max}, step {step}; expected min <= max and step >= 1"
        )));
    }
    let count = ((max as i128 - min as i128) / step as i128 + 1) as u64;
    if count > MAX_PATTERN_FILES {
        return Err(bad(format!(
            "expands to {count} files; expected at most {MAX_PATTERN_FILES}"
        )));
    }
    let (prefix, spec, suffix) = split_conversion(fmt).ok_or_else(|| {
        bad("expected exactly one integer conversion such as %d or %03d in the file name".into())
    })?;
    Ok((0..count)
        .map(|i| {
            let n = min + i as i64 * step;
            format!("{prefix}{}{suffix}", spec.render(n))
        })
        .collect())
}

/// A `printf` integer conversion `%[0][width]d` (also `i`/`u`).
struct Conversion {
    zero: bool,
    width: usize,
}

impl Conversion {
    fn render(&self, n: i64) -> String {
        if self.zero {
            if n < 0 {
                format!(
                    "-{:0>w$}",
                    n.unsigned_abs(),
                    w = self.width.saturating_sub(1)
                )
            } else {
                format!("{n:0>w$}", w = self.width)
            }
        } else {
            format!("{n:>w$}", w = self.width)
        }
    }
}

/// Split `fmt` around its one integer conversion (`%%` is a literal percent sign).
fn split_conversion(fmt: &str) -> Option<(String, Conversion, String)> {
    let mut prefix = String::new();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            prefix.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            prefix.push('%');
            continue;
        }
        let zero = chars.peek() == Some(&'0');
        let mut digits = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(*d);
            chars.next();
        }
        if !matches!(chars.next(), Some('d' | 'i' | 'u')) {
            return None;
        }
        let width = if digits.is_empty() {
            0
        } else {
            digits.parse::<usize>().ok().filter(|w| *w <= 32)?
        };
        let rest: String = chars.collect();
        let suffix = rest.replace("%%", "%");
        if suffix.contains('%') {
            return None;
        }
        return Some((prefix, Conversion { zero, width }, suffix));
    }
    None
}

/// Read `len` voxel bytes of one chunk: the header's own data (`data` is `None`; `base` is where it starts) or the
/// data file `data`.
pub(crate) fn read_chunk(
    header: &mut Input,
    data: Option<&Path>,
    base: u64,
    len: u64,
    s: &Storage,
) -> Result<Vec<u8>> {
    let Some(d) = data else {
        return read_from(header, base, len, s, false, "voxel data");
    };
    let mut file = Input::file(d).map_err(|e| match e {
        ImagingError::Io { error, .. } => ImagingError::MissingDataFile {
            header: header.name.clone(),
            data: d.into(),
            error,
        },
        other => other,
    })?;
    // Errors name the data file; say which header it belongs to.
    let what = format!("voxel data for {}", header.name.display());
    let gz_name = d.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    read_from(&mut file, base, len, s, gz_name, &what)
}

fn read_from(
    input: &mut Input,
    base: u64,
    len: u64,
    s: &Storage,
    gz_name: bool,
    what: &str,
) -> Result<Vec<u8>> {
    if s.compressed || gz_name {
        return read_compressed(input, base, len, s, what);
    }
    let file_len = input.len();
    let offset = match s.header_size {
        -1 => file_len
            .checked_sub(len)
            .filter(|&o| o >= base)
            .ok_or_else(|| ImagingError::Truncated {
                path: input.name.clone(),
                what: format!("{what} (HeaderSize = -1)"),
                expected: base.saturating_add(len),
                found: file_len,
            })?,
        h => base.saturating_add(h.max(0) as u64),
    };
    stream::read_region(input, offset, len, what)
}

/// Inflate `len` bytes from `base` (+ `HeaderSize`); a `CompressedDataSize` larger than the bytes there is refused.
fn read_compressed(
    input: &mut Input,
    base: u64,
    len: u64,
    s: &Storage,
    what: &str,
) -> Result<Vec<u8>> {
    let start = base.saturating_add(s.header_size.max(0) as u64);
    let available = input.len().saturating_sub(start);
    if let Some(size) = s.compressed_size.filter(|&size| size > available) {
        return Err(ImagingError::field(
            &input.name,
            "CompressedDataSize",
            format!(
                "is {size} but only {available} bytes of {what} follow; expected the size of the compressed stream"
            ),
        ));
    }
    let compressed_len = s.compressed_size.unwrap_or(available);
    let head = stream::read_region(input, start, compressed_len.min(2), what)?;
    let codec = Codec::sniff(&head);
    let name = input.name.clone();
    let mut dec = codec.decoder(BufReader::new(input.at(start)?).take(compressed_len));
    stream::read_inflated(&name, &mut dec, codec, len, compressed_len, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_expand_like_metaio() {
        let p = Path::new("h.mhd");
        assert_eq!(
            pattern(p, "s%03d.raw 1 3 1").unwrap(),
            vec!["s001.raw", "s002.raw", "s003.raw"]
        );
        assert_eq!(
            pattern(p, "a%d_b 0 4 2").unwrap(),
            vec!["a0_b", "a2_b", "a4_b"]
        );
        assert_eq!(pattern(p, "x%2d 9 10").unwrap(), vec!["x 9", "x10"]);
        assert_eq!(pattern(p, "100%%_%i.raw 5 5").unwrap(), vec!["100%_5.raw"]);
        assert_eq!(pattern(p, "n%03d -2 -1 1").unwrap(), vec!["n-02", "n-01"]);
        for bad in [
            "s%03d.raw 1",
            "s%03d.raw 3 1 1",
            "s%03d.raw 1 3 0",
            "s%s.raw 1 3 1",
            "s%d%d.raw 1 3 1",
            "s%03d.raw a 3 1",
            "s%d.raw 0 100000000 1",
        ] {
            let e = pattern(p, bad).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("h.mhd: header field `ElementDataFile`: pattern"),
                "{e}"
            );
        }
    }

    #[test]
    fn confinement_refuses_escapes_unless_allowed() {
        let p = Path::new("d/h.mhd");
        let dir = Path::new("d");
        let strict = LoadOptions::default();
        assert_eq!(
            confine(p, dir, "a/b.raw", &strict).unwrap(),
            dir.join("a/b.raw")
        );
        assert_eq!(
            confine(p, dir, "./b.raw", &strict).unwrap(),
            dir.join("./b.raw")
        );
        for name in ["../x.raw", "/etc/passwd", "a/../../x.raw", "a/../b.raw"] {
            let e = confine(p, dir, name, &strict).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{name:?} is outside the header's directory"))
                    && e.starts_with("d/h.mhd: "),
                "{e}"
            );
        }
        let open = LoadOptions {
            allow_external_data: true,
            ..LoadOptions::default()
        };
        assert_eq!(
            confine(p, dir, "/etc/passwd", &open).unwrap(),
            PathBuf::from("/etc/passwd")
        );
    }
}
