//! The text part of a MetaImage header: `Key = Value` lines up to `ElementDataFile`, the byte offset where local
//! data starts, and the file names of an `ElementDataFile = LIST`.

use std::io::Read;
use std::path::Path;

use super::super::input::Input;
use crate::error::{ImagingError, Result};

/// The parsed header text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MetaText {
    /// Fields in file order (`ElementDataFile` is the last one).
    fields: Vec<(String, String)>,
    /// Byte offset just after the `ElementDataFile` line (where `LOCAL` data starts).
    pub data_offset: u64,
    /// File names listed after `ElementDataFile = LIST`.
    pub list: Vec<String>,
}

impl MetaText {
    /// The value of the last occurrence of the first of `names` that is present, with the name found.
    pub(crate) fn get<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
        names.iter().find_map(|n| {
            self.fields
                .iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(k, v)| (k.as_str(), v.as_str()))
        })
    }
}

/// Read and parse the header of `input`, reading at most `max_bytes` bytes.
pub(crate) fn read(input: &mut Input, max_bytes: u64) -> Result<MetaText> {
    let name = input.name.clone();
    let mut buf = Vec::new();
    input
        .at(0)?
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| ImagingError::io(&name, e))?;
    let complete = buf.len() as u64 <= max_bytes;
    buf.truncate(usize::try_from(max_bytes).unwrap_or(usize::MAX));
    parse(&name, &buf, complete, max_bytes)
}

/// Parse header bytes. `complete` says whether `bytes` is the whole file (needed to trust a `LIST`).
pub(crate) fn parse(path: &Path, bytes: &[u8], complete: bool, max_bytes: u64) -> Result<MetaText> {
    let mut fields = Vec::new();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        line_no += 1;
        let rest = bytes.get(pos..).unwrap_or_default();
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (rest.get(..i).unwrap_or_default(), pos + i + 1),
            None => (rest, bytes.len()),
        };
        let line = std::str::from_utf8(line)
            .map_err(|_| ImagingError::NotFormat {
                path: path.into(),
                format: "MetaImage".into(),
                found: format!("header line {line_no} is not text"),
            })?
            .trim();
        pos = next;
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| ImagingError::NotFormat {
                path: path.into(),
                format: "MetaImage".into(),
                found: format!(
                    "header line {line_no} is {:?}; expected `Key = Value`",
                    truncate(line)
                ),
            })?;
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        if key == "ElementDataFile" {
            let list = if is_list(&value) {
                list_files(path, bytes.get(pos..).unwrap_or_default(), complete)?
            } else {
                Vec::new()
            };
            fields.push((key, value));
            return Ok(MetaText {
                fields,
                data_offset: pos as u64,
                list,
            });
        }
        fields.push((key, value));
    }
    let msg = if complete {
        "missing (it must end the header)".to_string()
    } else {
        format!("not found in the first {max_bytes} bytes")
    };
    Err(ImagingError::HeaderField {
        path: path.into(),
        field: "ElementDataFile".into(),
        msg,
    })
}

/// True for `LIST` and `LIST <n>D`.
pub(crate) fn is_list(value: &str) -> bool {
    value == "LIST" || value.starts_with("LIST ")
}

/// The non-empty lines after a `LIST` header line.
fn list_files(path: &Path, rest: &[u8], complete: bool) -> Result<Vec<String>> {
    let field = |msg: String| ImagingError::HeaderField {
        path: path.into(),
        field: "ElementDataFile".into(),
        msg,
    };
    if !complete {
        return Err(field(
            "LIST of data files is longer than the header size limit".into(),
        ));
    }
    let text =
        std::str::from_utf8(rest).map_err(|_| field("LIST of data files is not text".into()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_offset_and_list() {
        let p = Path::new("h.mha");
        let text = b"ObjectType = Image\r\nNDims = 2\nDimSize = 3 4\n\nElementDataFile = LOCAL\n\x00\x01\xff";
        let m = parse(p, text, true, 1000).unwrap();
        assert_eq!(m.get(&["NDims"]), Some(("NDims", "2")));
        assert_eq!(m.get(&["Offset", "DimSize"]), Some(("DimSize", "3 4")));
        assert_eq!(m.data_offset as usize, text.len() - 3);
        assert!(m.list.is_empty());
        let m = parse(
            p,
            b"NDims = 3\nElementDataFile = LIST 2D\na.raw\n  b.raw \n\n",
            true,
            1000,
        )
        .unwrap();
        assert_eq!(m.list, vec!["a.raw", "b.raw"]);
    }

    #[test]
    fn rejects_broken_headers() {
        let p = Path::new("h.mhd");
        let e = parse(p, b"NDims = 3\nDimSize = 1 2 3\n", true, 1000).unwrap_err();
        assert!(e.to_string().contains("ElementDataFile"), "{e}");
        assert!(parse(p, b"NDims 3\nElementDataFile = a.raw\n", true, 1000).is_err());
        assert!(parse(p, b"ND\xffims = 3\nElementDataFile = a.raw\n", true, 1000).is_err());
        assert!(parse(p, b"NDims = 3\nElementDataFile = LIST\na", false, 1000).is_err());
    }
}
