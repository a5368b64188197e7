//! Reads what the server needs from an ONNX file without an ONNX runtime: graph input/output names, element types
//! and shapes, and the `metadata_props` written by `medmae-export`, by decoding a minimal subset of `ModelProto`.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use crate::error::ServeError;

/// `onnx.ModelProto`, only the fields read here (others are skipped by the decoder).
#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<NamedTensor>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

/// `TensorProto` reduced to its name (to tell initializers from real inputs in old IR versions).
#[derive(Clone, PartialEq, Message)]
struct NamedTensor {
    #[prost(string, tag = "8")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

/// ONNX `TensorProto.DataType.FLOAT`.
pub const ONNX_FLOAT: i32 = 1;

/// A graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// ONNX element type code (1 = float32).
    pub elem_type: i32,
    /// Dimensions; -1 where the axis is symbolic or unknown.
    pub dims: Vec<i64>,
}

/// The parts of an ONNX file the server reads before handing it to a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxSummary {
    /// Graph inputs that are not initializers.
    pub inputs: Vec<TensorInfo>,
    /// Graph outputs.
    pub outputs: Vec<TensorInfo>,
    /// `metadata_props` as a map.
    pub metadata: BTreeMap<String, String>,
}

fn tensor_info(v: &ValueInfoProto) -> TensorInfo {
    let tt = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
    let dims = tt
        .and_then(|t| t.shape.as_ref())
        .map(|s| {
            s.dim
                .iter()
                .map(|d| d.dim_value.filter(|&v| v > 0).unwrap_or(-1))
                .collect()
        })
        .unwrap_or_default();
    TensorInfo {
        name: v.name.clone(),
        elem_type: tt.map_or(0, |t| t.elem_type),
        dims,
    }
}

/// Decode the summary from the bytes of an ONNX file; `path` only names the file in errors.
pub fn summarize(bytes: &[u8], path: &Path) -> Result<OnnxSummary, ServeError> {
    let model = ModelProto::decode(bytes).map_err(|e| ServeError::Model {
        path: path.into(),
        msg: format!("not a valid ONNX ModelProto: {e}"),
    })?;
    let graph = model.graph.ok_or_else(|| ServeError::Model {
        path: path.into(),
        msg: "ONNX model has no graph".into(),
    })?;
    let inits: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = graph
        .input
        .iter()
        .filter(|v| !inits.contains(v.name.as_str()))
        .map(tensor_info)
        .collect();
    let outputs = graph.output.iter().map(tensor_info).collect();
    let metadata = model
        .metadata_props
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    Ok(OnnxSummary {
        inputs,
        outputs,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vi(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|d| Dimension {
                dim_value: *d,
                dim_param: if d.is_none() { Some("N".into()) } else { None },
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type: 1,
                    shape: Some(TensorShapeProto { dim }),
                }),
            }),
        }
    }

    #[test]
    fn decodes_io_and_metadata_and_skips_initializers() {
        let m = ModelProto {
            graph: Some(GraphProto {
                initializer: vec![NamedTensor { name: "w".into() }],
                input: vec![
                    vi("input", &[None, Some(1), Some(8), Some(8), Some(8)]),
                    vi("w", &[Some(3)]),
                ],
                output: vec![vi("logits", &[None, Some(2), Some(8), Some(8), Some(8)])],
            }),
            metadata_props: vec![StringStringEntryProto {
                key: "medmae.kind".into(),
                value: "unetr".into(),
            }],
        };
        let s = summarize(&m.encode_to_vec(), Path::new("m.onnx")).unwrap();
        assert_eq!(s.inputs.len(), 1);
        assert_eq!(s.inputs[0].dims, vec![-1, 1, 8, 8, 8]);
        assert_eq!(s.outputs[0].name, "logits");
        assert_eq!(s.metadata["medmae.kind"], "unetr");
    }

    #[test]
    fn garbage_is_a_model_error_naming_the_file() {
        let e = summarize(&[0xff, 0xff, 0xff, 0x01], Path::new("bad.onnx")).unwrap_err();
        assert!(e.to_string().starts_with("bad.onnx:"), "{e}");
    }
}
