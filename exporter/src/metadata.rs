//! `metadata_props` of exported models: what the server needs to serve a `.onnx` file without any other
//! configuration (kind, geometry, labels, the preprocessing spec, sliding-window defaults, the whole model card),
//! and a reader that scans only the top level of the protobuf file, so it needs no ONNX library and does not
//! decode the graph or its weights.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use serde::de::DeserializeOwned;
use spec::TransformSpec;
use spec::{InferenceSpec, ModelCard, ModelConfig};

use crate::error::{ExportError, Result};
use crate::ExportKind;

/// `medmae.kind`: `unetr`, `mae-encoder` or `mae-reconstructor`.
pub const KEY_KIND: &str = "medmae.kind";
/// `medmae.spatial_dims`: 2 or 3.
pub const KEY_SPATIAL_DIMS: &str = "medmae.spatial_dims";
/// `medmae.roi_size`: JSON array, the model input size per spatial axis.
pub const KEY_ROI_SIZE: &str = "medmae.roi_size";
/// `medmae.in_channels`.
pub const KEY_IN_CHANNELS: &str = "medmae.in_channels";
/// `medmae.out_channels`: classes (unetr), token width (mae-encoder) or values per token (mae-reconstructor).
pub const KEY_OUT_CHANNELS: &str = "medmae.out_channels";
/// `medmae.labels`: JSON array of label names, index = output channel.
pub const KEY_LABELS: &str = "medmae.labels";
/// `medmae.preprocessing`: JSON of the card's `Vec<TransformSpec>`.
pub const KEY_PREPROCESSING: &str = "medmae.preprocessing";
/// `medmae.inference`: JSON of the card's `Option<InferenceSpec>`.
pub const KEY_INFERENCE: &str = "medmae.inference";
/// `medmae.card`: the whole `model.json`.
pub const KEY_CARD: &str = "medmae.card";
/// `medmae.version`: version of the exporter that wrote the file.
pub const KEY_VERSION: &str = "medmae.version";
/// `medmae.checkpoint_sha256`: hex SHA-256 of the `model.safetensors` the weights came from.
pub const KEY_CHECKPOINT_SHA256: &str = "medmae.checkpoint_sha256";

/// The medmae facts stored in an exported model, parsed back into typed values.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportMetadata {
    /// Which graph the file holds.
    pub kind: ExportKind,
    /// 2 or 3.
    pub spatial_dims: usize,
    /// Model input size per spatial axis.
    pub roi_size: Vec<usize>,
    /// Input channels.
    pub in_channels: usize,
    /// Channels of the main output (see [`KEY_OUT_CHANNELS`]).
    pub out_channels: usize,
    /// Label names (segmentation models).
    pub labels: Vec<String>,
    /// Deterministic preprocessing to apply before inference.
    pub preprocessing: Vec<TransformSpec>,
    /// Sliding-window defaults (segmentation models).
    pub inference: Option<InferenceSpec>,
    /// The model card the file was exported from.
    pub card: ModelCard,
    /// Exporter version.
    pub version: String,
    /// SHA-256 of the source checkpoint, when exported from a file.
    pub checkpoint_sha256: Option<String>,
}

/// Channels of the main output of `kind`.
pub(crate) fn out_channels(cfg: &ModelConfig, kind: ExportKind) -> usize {
    match (cfg, kind) {
        (ModelConfig::Unetr(u), _) => u.out_channels,
        (ModelConfig::Mae(m), ExportKind::MaeReconstructor) => m.head_dim(),
        (ModelConfig::Mae(m), _) => m.encoder.embed_dim,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| ExportError::Graph(format!("metadata serialisation: {e}")))
}

/// The `metadata_props` entries of an export, in a stable order.
pub(crate) fn props(
    card: &ModelCard,
    kind: ExportKind,
    sha256: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let v = card.model.encoder();
    let mut p = vec![
        (KEY_KIND, kind.as_str().to_string()),
        (KEY_SPATIAL_DIMS, v.spatial_dims.to_string()),
        (KEY_ROI_SIZE, json(&v.img_size)?),
        (KEY_IN_CHANNELS, v.in_channels.to_string()),
        (
            KEY_OUT_CHANNELS,
            out_channels(&card.model, kind).to_string(),
        ),
        (KEY_LABELS, json(&card.labels)?),
        (KEY_PREPROCESSING, json(&card.preprocessing)?),
        (KEY_INFERENCE, json(&card.inference)?),
        (KEY_CARD, json(card)?),
        (KEY_VERSION, env!("CARGO_PKG_VERSION").to_string()),
    ];
    if let Some(s) = sha256 {
        p.push((KEY_CHECKPOINT_SHA256, s.to_string()));
    }
    Ok(p.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

impl ExportMetadata {
    /// Parse the medmae entries of a `metadata_props` map; `path` is only used in error messages.
    pub fn from_props(map: &BTreeMap<String, String>, path: &Path) -> Result<Self> {
        let err = |msg: String| ExportError::Metadata {
            path: path.into(),
            msg,
        };
        let get = |k: &str| {
            map.get(k)
                .ok_or_else(|| err(format!("key `{k}` is missing")))
        };
        fn parse<T: DeserializeOwned>(
            k: &str,
            v: &str,
            err: &dyn Fn(String) -> ExportError,
        ) -> Result<T> {
            serde_json::from_str(v).map_err(|e| err(format!("key `{k}`: {e} in {v:?}")))
        }
        let card: ModelCard = parse(KEY_CARD, get(KEY_CARD)?, &err)?;
        Ok(ExportMetadata {
            kind: get(KEY_KIND)?
                .parse()
                .map_err(|e: ExportError| err(format!("key `{KEY_KIND}`: {e}")))?,
            spatial_dims: parse(KEY_SPATIAL_DIMS, get(KEY_SPATIAL_DIMS)?, &err)?,
            roi_size: parse(KEY_ROI_SIZE, get(KEY_ROI_SIZE)?, &err)?,
            in_channels: parse(KEY_IN_CHANNELS, get(KEY_IN_CHANNELS)?, &err)?,
            out_channels: parse(KEY_OUT_CHANNELS, get(KEY_OUT_CHANNELS)?, &err)?,
            labels: parse(KEY_LABELS, get(KEY_LABELS)?, &err)?,
            preprocessing: parse(KEY_PREPROCESSING, get(KEY_PREPROCESSING)?, &err)?,
            inference: parse(KEY_INFERENCE, get(KEY_INFERENCE)?, &err)?,
            version: get(KEY_VERSION)?.clone(),
            checkpoint_sha256: map.get(KEY_CHECKPOINT_SHA256).cloned(),
            card,
        })
    }
}

/// Read the medmae `metadata_props` of an `.onnx` file (skipping the graph without decoding it).
pub fn read_metadata(path: &Path) -> Result<ExportMetadata> {
    let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
    let map = read_props(&mut BufReader::new(file), path)?;
    ExportMetadata::from_props(&map, path)
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
        let mut map = BTreeMap::new();
        map.insert(KEY_KIND.to_string(), "unetr".to_string());
        let e = ExportMetadata::from_props(&map, Path::new("x.onnx"))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "medmae metadata of x.onnx: key `medmae.card` is missing");
        map.insert(KEY_CARD.to_string(), "{".to_string());
        let e = ExportMetadata::from_props(&map, Path::new("x.onnx"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("key `medmae.card`: EOF"), "{e}");
    }
}
