//! KServe v2 tensors ↔ the model's f32 arrays: datatype and shape validation (checked arithmetic, negative dims
//! rejected one by one), raw little-endian contents and typed `fp32_contents`.

use ndarray::ArrayD;

use crate::error::ServeError;
use crate::model::ModelInfo;
use crate::proto::inference::{model_infer_request::InferInputTensor, ModelInferRequest};

/// Every datatype string the protocol defines.
pub const DATATYPES: [&str; 14] = [
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16",
    "FP32", "FP64", "BYTES", "BF16",
];

/// Validate a shape against the model: rank, positive dims, model channels/roi, and the voxel limit. Returns the
/// element count.
pub fn check_shape(
    name: &str,
    shape: &[i64],
    info: &ModelInfo,
    max_voxels: u64,
) -> Result<usize, ServeError> {
    let want_rank = 2 + info.spatial_dims;
    let want: Vec<String> = std::iter::once("N".to_string())
        .chain(info.input_shape(1).iter().skip(1).map(|d| d.to_string()))
        .collect();
    let want = format!("[{}]", want.join(", "));
    if shape.len() != want_rank {
        return Err(ServeError::invalid(format!(
            "input {name:?}: shape {shape:?} has {} dims; the model takes {want}",
            shape.len()
        )));
    }
    if let Some((i, d)) = shape.iter().enumerate().find(|(_, &d)| d <= 0) {
        return Err(ServeError::invalid(format!(
            "input {name:?}: dim {i} of shape {shape:?} is {d}; every dim must be positive"
        )));
    }
    let model = info.input_shape(1);
    if shape
        .iter()
        .skip(1)
        .zip(model.iter().skip(1))
        .any(|(&d, &m)| d as u64 != m as u64)
    {
        return Err(ServeError::invalid(format!(
            "input {name:?}: shape {shape:?} does not match the model input {want}"
        )));
    }
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .filter(|&c| c <= max_voxels)
        .ok_or_else(|| {
            ServeError::TooLarge(format!(
                "input {name:?}: shape {shape:?} exceeds the server limit of {max_voxels} elements"
            ))
        })?;
    usize::try_from(count).map_err(|_| {
        ServeError::TooLarge(format!(
            "input {name:?}: shape {shape:?} is too large for this machine"
        ))
    })
}

fn check_datatype(t: &InferInputTensor) -> Result<(), ServeError> {
    if !DATATYPES.contains(&t.datatype.as_str()) {
        return Err(ServeError::invalid(format!(
            "input {:?}: unknown datatype {:?}; KServe v2 datatypes are {}",
            t.name,
            t.datatype,
            DATATYPES.join(", ")
        )));
    }
    if t.datatype != "FP32" {
        return Err(ServeError::invalid(format!(
            "input {:?}: datatype {} is not accepted; the model takes FP32",
            t.name, t.datatype
        )));
    }
    Ok(())
}

/// Decode the single model input of a request into `[N, C, roi...]`.
pub fn decode_input(
    req: &ModelInferRequest,
    info: &ModelInfo,
    max_voxels: u64,
) -> Result<ArrayD<f32>, ServeError> {
    let [t] = req.inputs.as_slice() else {
        return Err(ServeError::invalid(format!(
            "model {:?} takes exactly 1 input ({:?}), the request has {}",
            info.name,
            info.input.name,
            req.inputs.len()
        )));
    };
    if t.name != info.input.name {
        return Err(ServeError::invalid(format!(
            "unknown input {:?}; model {:?} takes {:?}",
            t.name, info.name, info.input.name
        )));
    }
    check_datatype(t)?;
    let count = check_shape(&t.name, &t.shape, info, max_voxels)?;
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let data = if !req.raw_input_contents.is_empty() {
        if req.raw_input_contents.len() != req.inputs.len() {
            return Err(ServeError::invalid(format!(
                "raw_input_contents has {} entries for {} inputs",
                req.raw_input_contents.len(),
                req.inputs.len()
            )));
        }
        if t.contents.is_some() {
            return Err(ServeError::invalid(format!("input {:?} has typed contents while raw_input_contents is used; use one or the other", t.name)));
        }
        let raw = &req.raw_input_contents[0];
        let need = count * 4;
        if raw.len() != need {
            let what = if raw.len() < need {
                "truncated"
            } else {
                "too long"
            };
            return Err(ServeError::invalid(format!("input {:?}: raw contents are {} bytes, shape {:?} of FP32 needs {need} bytes ({what})", t.name, raw.len(), t.shape)));
        }
        raw.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        let c = t.contents.as_ref().ok_or_else(|| {
            ServeError::invalid(format!(
                "input {:?} has no data: send raw_input_contents or contents.fp32_contents",
                t.name
            ))
        })?;
        let others = c.bool_contents.len()
            + c.int_contents.len()
            + c.int64_contents.len()
            + c.uint_contents.len()
            + c.uint64_contents.len()
            + c.fp64_contents.len()
            + c.bytes_contents.len();
        if others > 0 {
            return Err(ServeError::invalid(format!("input {:?} is FP32: its typed data belongs in fp32_contents, not another contents field", t.name)));
        }
        if c.fp32_contents.len() != count {
            return Err(ServeError::invalid(format!(
                "input {:?}: fp32_contents has {} values, shape {:?} needs {count}",
                t.name,
                c.fp32_contents.len(),
                t.shape
            )));
        }
        c.fp32_contents.clone()
    };
    ArrayD::from_shape_vec(shape, data).map_err(|e| ServeError::Internal(e.to_string()))
}

/// Check the requested outputs (if any) name the model's output.
pub fn check_requested_outputs(
    req: &ModelInferRequest,
    info: &ModelInfo,
) -> Result<(), ServeError> {
    match req.outputs.iter().find(|o| o.name != info.output.name) {
        Some(o) => Err(ServeError::invalid(format!(
            "unknown output {:?}; model {:?} has {:?}",
            o.name, info.name, info.output.name
        ))),
        None => Ok(()),
    }
}

/// Little-endian bytes of an f32 array in standard order.
pub fn to_le_bytes(a: &ArrayD<f32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() * 4);
    for v in a.iter() {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::{OnnxSummary, TensorInfo};
    use crate::proto::inference::InferTensorContents;

    fn info() -> ModelInfo {
        let s = OnnxSummary {
            inputs: vec![TensorInfo {
                name: "input".into(),
                elem_type: 1,
                dims: vec![-1, 1, 2, 2, 2],
            }],
            outputs: vec![TensorInfo {
                name: "logits".into(),
                elem_type: 1,
                dims: vec![-1, 3, 2, 2, 2],
            }],
            metadata: Default::default(),
        };
        ModelInfo::from_summary("m", "1", std::path::Path::new("m.onnx"), s).unwrap()
    }

    fn req(
        datatype: &str,
        shape: Vec<i64>,
        raw: Option<Vec<u8>>,
        typed: Option<Vec<f32>>,
    ) -> ModelInferRequest {
        let contents = typed.map(|v| InferTensorContents {
            fp32_contents: v,
            ..Default::default()
        });
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: datatype.into(),
                shape,
                parameters: Default::default(),
                contents,
            }],
            raw_input_contents: raw.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn raw_and_typed_decode_the_same() {
        let vals: Vec<f32> = (0..16).map(|i| i as f32 * 0.5 - 2.0).collect();
        let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let a = decode_input(
            &req("FP32", vec![2, 1, 2, 2, 2], Some(raw), None),
            &info(),
            1000,
        )
        .unwrap();
        let b = decode_input(
            &req("FP32", vec![2, 1, 2, 2, 2], None, Some(vals.clone())),
            &info(),
            1000,
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.shape(), &[2, 1, 2, 2, 2]);
        assert_eq!(a[[1, 0, 1, 1, 1]], vals[15]);
        assert_eq!(to_le_bytes(&a)[60..64], vals[15].to_le_bytes());
    }

    #[test]
    fn malformed_requests_are_named() {
        let i = info();
        let msg = |r: ModelInferRequest| decode_input(&r, &i, 1000).unwrap_err().to_string();
        assert!(
            msg(req("FLOAT32", vec![1, 1, 2, 2, 2], Some(vec![0; 32]), None))
                .contains("unknown datatype \"FLOAT32\"")
        );
        assert!(
            msg(req("FP64", vec![1, 1, 2, 2, 2], Some(vec![0; 64]), None))
                .contains("datatype FP64 is not accepted")
        );
        assert!(
            msg(req("FP32", vec![1, 2, 2, 2, 2], Some(vec![0; 64]), None))
                .contains("does not match the model input [N, 1, 2, 2, 2]")
        );
        assert!(msg(req("FP32", vec![1, 1, 2, 2], Some(vec![0; 32]), None)).contains("has 4 dims"));
        assert!(msg(req("FP32", vec![-1, 1, 2, 2, -8], Some(vec![0; 32]), None)).contains("dim 0"));
        assert!(
            msg(req("FP32", vec![1, 1, 2, 2, 2], Some(vec![0; 31]), None)).contains("31 bytes")
                && msg(req("FP32", vec![1, 1, 2, 2, 2], Some(vec![0; 31]), None))
                    .contains("truncated")
        );
        assert!(
            msg(req("FP32", vec![1, 1, 2, 2, 2], None, Some(vec![0.0; 7])))
                .contains("fp32_contents has 7 values")
        );
        assert!(msg(req("FP32", vec![1, 1, 2, 2, 2], None, None)).contains("no data"));
        let e = decode_input(
            &req("FP32", vec![1 << 62, 1, 2, 2, 2], Some(vec![]), None),
            &i,
            u64::MAX,
        )
        .unwrap_err();
        assert!(matches!(e, ServeError::TooLarge(_)), "{e}");
        let e = decode_input(
            &req("FP32", vec![200, 1, 2, 2, 2], Some(vec![]), None),
            &i,
            1000,
        )
        .unwrap_err();
        assert!(e.to_string().contains("limit of 1000"));
    }
}
