//! Reading the `metadata_props` of an `.onnx` file: a scanner of the top level of the protobuf file (no ONNX library,
//! the graph and its weights are skipped, not decoded), whose map goes to the one reader of the `medmae.*` keys,
//! [`spec::OnnxMetadata::from_props`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use spec::{ExportKind, ModelCard, OnnxMetadata};

use crate::error::{ExportError, Result};

/// The `metadata_props` entries of a `kind` export of `card`, in the contract's order (the one writer in `spec`).
pub(crate) fn props(
    card: &ModelCard,
    kind: ExportKind,
    sha256: Option<&str>,
) -> Result<Vec<(String, String)>> {
    OnnxMetadata::from_card(card, kind, sha256)
        .and_then(|m| m.to_props())
        .map_err(|e| ExportError::Graph(format!("metadata: {e}")))
}

/// The medmae metadata of a `metadata_props` map, which must have it; `path` is only used in error messages.
pub fn metadata_from_props(map: &BTreeMap<String, String>, path: &Path) -> Result<OnnxMetadata> {
    let err = |msg: String| ExportError::Metadata {
        path: path.into(),
        msg,
    };
    OnnxMetadata::from_props(map)
        .map_err(|e| err(e.to_string()))?
        .ok_or_else(|| err("the file carries no medmae.* metadata".into()))
}

/// Read and validate the medmae `metadata_props` of an `.onnx` file (skipping the graph without decoding it).
pub fn read_metadata(path: &Path) -> Result<OnnxMetadata> {
    let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
    let map = read_props(&mut BufReader::new(file), path)?;
    metadata_from_props(&map, path)
}

/// All `metadata_props` of a serialized `ModelProto` read from `r`.
pub fn read_props<R: Read + Seek>(r: &mut R, path: &Path) -> Result<BTreeMap<String, String>> {
    const METADATA_PROPS: u64 = 14;
    let bad = |msg: String| ExportError::Metadata {
        path: path.into(),
        msg: format!("not a valid ONNX protobuf: {msg}"),
    };
    let mut map = BTreeMap::new();
    while let Some(tag) = read_varint(r, true).map_err(|e| bad(e.to_string()))? {
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                read_varint(r, false).map_err(|e| bad(e.to_string()))?;
            }
            1 => skip(r, 8).map_err(|e| bad(e.to_string()))?,
            5 => skip(r, 4).map_err(|e| bad(e.to_string()))?,
            2 => {
                let len = read_varint(r, false)
                    .map_err(|e| bad(e.to_string()))?
                    .unwrap_or(0);
                if field == METADATA_PROPS {
                    let len =
                        usize::try_from(len).map_err(|_| bad(format!("entry length {len}")))?;
                    if len > 1 << 30 {
                        return Err(bad(format!("metadata entry of {len} bytes")));
                    }
                    // Read what is there instead of allocating the declared length up front: a few corrupt
                    // bytes must not cost a 1 GiB buffer (found by fuzz/).
                    let mut buf = Vec::new();
                    r.by_ref()
                        .take(len as u64)
                        .read_to_end(&mut buf)
                        .map_err(|e| bad(e.to_string()))?;
                    if buf.len() != len {
                        return Err(bad(format!(
                            "metadata entry of {len} bytes is truncated after {} bytes",
                            buf.len()
                        )));
                    }
                    let (k, v) = parse_entry(&buf).map_err(bad)?;
                    map.insert(k, v);
                } else {
                    let len = i64::try_from(len).map_err(|_| bad(format!("field length {len}")))?;
                    r.seek_relative(len).map_err(|e| bad(e.to_string()))?;
                }
            }
            w => return Err(bad(format!("unsupported wire type {w} for field {field}"))),
        }
    }
    Ok(map)
}

fn skip<R: Read + Seek>(r: &mut R, n: i64) -> std::io::Result<()> {
    r.seek_relative(n)
}

/// A protobuf varint; `Ok(None)` only at a clean end of input when `eof_ok`.
fn read_varint<R: Read>(r: &mut R, eof_ok: bool) -> std::io::Result<Option<u64>> {
    let mut v = 0u64;
    for i in 0..10 {
        let mut b = [0u8];
        if r.read(&mut b)? == 0 {
            if i == 0 && eof_ok {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated varint",
            ));
        }
        v |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(v));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "varint longer than 10 bytes",
    ))
}

/// A `StringStringEntryProto` (key = field 1, value = field 2).
fn parse_entry(buf: &[u8]) -> std::result::Result<(String, String), String> {
    let mut cur = std::io::Cursor::new(buf);
    let (mut key, mut value) = (String::new(), String::new());
    while let Some(tag) = read_varint(&mut cur, true).map_err(|e| e.to_string())? {
        if tag & 7 != 2 {
            return Err(format!(
                "metadata entry field {} has wire type {}",
                tag >> 3,
                tag & 7
            ));
        }
        let len = read_varint(&mut cur, false)
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        let start = usize::try_from(cur.position()).map_err(|e| e.to_string())?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= buf.len())
            .ok_or("metadata entry overruns its message")?;
        let text = std::str::from_utf8(&buf[start..end])
            .map_err(|e| e.to_string())?
            .to_string();
        match tag >> 3 {
            1 => key = text,
            2 => value = text,
            _ => {}
        }
        cur.set_position(end as u64);
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::{Message, ModelProto, StringStringEntryProto};
    use std::io::Cursor;

    fn model_bytes(props: &[(&str, &str)]) -> Vec<u8> {
        let m = ModelProto {
            ir_version: 8,
            producer_name: "t".into(),
            metadata_props: props
                .iter()
                .map(|(k, v)| StringStringEntryProto {
                    key: k.to_string(),
                    value: v.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        m.write_to_bytes().unwrap()
    }

    #[test]
    fn scanner_reads_props_and_skips_other_fields() {
        let bytes = model_bytes(&[("a", "1"), ("medmae.kind", "unetr"), ("ünï", "çødé")]);
        let map = read_props(&mut Cursor::new(bytes), Path::new("m.onnx")).unwrap();
        assert_eq!(map.len(), 3);
        assert_eq!(map["medmae.kind"], "unetr");
        assert_eq!(map["ünï"], "çødé");
    }

    #[test]
    fn malformed_bytes_are_errors_not_panics() {
        let p = Path::new("bad.onnx");
        // Wire type 3 (group start) is not used by ONNX.
        assert!(read_props(&mut Cursor::new(vec![0x0b]), p).is_err());
        // A metadata entry whose key claims more bytes than the entry holds.
        assert!(read_props(&mut Cursor::new(vec![0x72, 0x03, 0x0a, 0x09, 0x41]), p).is_err());
        // A varint that never ends.
        assert!(read_props(&mut Cursor::new(vec![0x08, 0xff, 0xff]), p).is_err());
        // Every truncation of a valid file and pseudo-random garbage: Ok or Err, never a panic.
        let good = model_bytes(&[("medmae.kind", "unetr")]);
        for n in 0..good.len() {
            let _ = read_props(&mut Cursor::new(good[..n].to_vec()), p);
        }
        let mut s = 7u32;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    s = s.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    (s >> 16) as u8
                })
                .collect();
            let _ = read_props(&mut Cursor::new(junk), p);
        }
    }

    #[test]
    fn missing_or_malformed_keys_are_named() {
        let p = Path::new("x.onnx");
        let mut map = BTreeMap::new();
        let e = metadata_from_props(&map, p).unwrap_err().to_string();
        assert_eq!(
            e,
            "medmae metadata of x.onnx: the file carries no medmae.* metadata"
        );
        map.insert("medmae.kind".to_string(), "unetr".to_string());
        let e = metadata_from_props(&map, p).unwrap_err().to_string();
        assert_eq!(
            e,
            "medmae metadata of x.onnx: metadata key `medmae.spatial_dims`: is missing"
        );
        map.insert("medmae.card".to_string(), "{".to_string());
        map.insert("medmae.kind".to_string(), "mae".to_string());
        let e = metadata_from_props(&map, p).unwrap_err().to_string();
        assert!(
            e.contains("key `medmae.kind` = \"mae\": unknown export kind"),
            "{e}"
        );
    }
}
