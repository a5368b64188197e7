//! Structural validation of an exported model (what `--check` runs after writing): versions, names, topological
//! order, initializer sizes, the op set both runtimes support, and the medmae metadata.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{Message, ModelProto, TensorProto};
use protobuf::Enum;

use crate::error::{ExportError, Result};
use crate::metadata::read_metadata;
use spec::OnnxMetadata;

/// Ops the exporter emits; each runs in ONNX Runtime and tract at opset 17 and 18.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "Concat",
    "Conv",
    "ConvTranspose",
    "Erf",
    "Expand",
    "Gather",
    "Greater",
    "Identity",
    "InstanceNormalization",
    "LayerNormalization",
    "LeakyRelu",
    "MatMul",
    "Mul",
    "Pad",
    "Reshape",
    "Shape",
    "Slice",
    "Softmax",
    "Transpose",
    "Unsqueeze",
    "Where",
];

/// What a successful check found.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of initializers (weights and constants).
    pub initializers: usize,
    /// f32 values in initializers.
    pub parameters: usize,
    /// Node count per op type.
    pub ops: BTreeMap<String, usize>,
    /// Graph input names.
    pub inputs: Vec<String>,
    /// Graph output names.
    pub outputs: Vec<String>,
    /// The medmae metadata, parsed (present only for checks of a file).
    pub metadata: Option<OnnxMetadata>,
}

fn elements(t: &TensorProto) -> std::result::Result<usize, String> {
    t.dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| format!("initializer `{}` has invalid dims {:?}", t.name, t.dims))
    })
}

/// Validate an in-memory model; the error string says which node, value or tensor is wrong.
pub fn check_model(m: &ModelProto) -> std::result::Result<CheckReport, String> {
    if !(8..=10).contains(&m.ir_version) {
        return Err(format!("ir_version {} (expected 8..=10)", m.ir_version));
    }
    let opset = m
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    if !matches!(opset, Some(17 | 18)) {
        return Err(format!(
            "default-domain opset {opset:?} (expected 17 or 18)"
        ));
    }
    let g = m.graph.as_ref().ok_or("model has no graph")?;
    let mut defined: HashSet<&str> = HashSet::new();
    let mut parameters = 0usize;
    for t in &g.initializer {
        if !defined.insert(&t.name) {
            return Err(format!("initializer `{}` defined twice", t.name));
        }
        let n = elements(t)?;
        let stored = match DataType::from_i32(t.data_type) {
            Some(DataType::FLOAT) => {
                parameters += n;
                if t.raw_data.is_empty() {
                    t.float_data.len()
                } else {
                    t.raw_data.len() / 4
                }
            }
            Some(DataType::INT64) => {
                if t.raw_data.is_empty() {
                    t.int64_data.len()
                } else {
                    t.raw_data.len() / 8
                }
            }
            other => {
                return Err(format!(
                    "initializer `{}` has data type {other:?} (expected FLOAT or INT64)",
                    t.name
                ))
            }
        };
        if stored != n {
            return Err(format!(
                "initializer `{}` holds {stored} values for dims {:?}",
                t.name, t.dims
            ));
        }
    }
    for i in &g.input {
        if !defined.insert(&i.name) {
            return Err(format!(
                "graph input `{}` clashes with another name",
                i.name
            ));
        }
    }
    let mut used: HashSet<&str> = HashSet::new();
    let mut ops = BTreeMap::new();
    for n in &g.node {
        if !SUPPORTED_OPS.contains(&n.op_type.as_str()) || !n.domain.is_empty() {
            return Err(format!(
                "node `{}` has op {}:{} outside the supported set",
                n.name, n.domain, n.op_type
            ));
        }
        for i in &n.input {
            if !defined.contains(i.as_str()) {
                return Err(format!(
                    "node `{}` reads `{i}` before it is defined",
                    n.name
                ));
            }
            used.insert(i);
        }
        for o in &n.output {
            if !defined.insert(o) {
                return Err(format!("node `{}` redefines `{o}`", n.name));
            }
        }
        *ops.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    if let Some(t) = g
        .initializer
        .iter()
        .find(|t| !used.contains(t.name.as_str()))
    {
        return Err(format!("initializer `{}` is not used by any node", t.name));
    }
    for o in &g.output {
        if !defined.contains(o.name.as_str()) {
            return Err(format!("graph output `{}` is not produced", o.name));
        }
    }
    if g.input.is_empty() || g.output.is_empty() {
        return Err("graph needs at least one input and one output".into());
    }
    Ok(CheckReport {
        nodes: g.node.len(),
        initializers: g.initializer.len(),
        parameters,
        ops,
        inputs: g.input.iter().map(|i| i.name.clone()).collect(),
        outputs: g.output.iter().map(|o| o.name.clone()).collect(),
        metadata: None,
    })
}

/// Re-load an `.onnx` file, validate its structure and parse its medmae metadata.
pub fn check_file(path: &Path) -> Result<CheckReport> {
    let file = File::open(path).map_err(|e| ExportError::io(path, e))?;
    let m = ModelProto::parse_from_reader(&mut BufReader::new(file)).map_err(|e| {
        ExportError::Protobuf {
            path: path.into(),
            msg: e.to_string(),
        }
    })?;
    let mut report = check_model(&m).map_err(|msg| ExportError::Check {
        path: path.into(),
        msg,
    })?;
    let meta = read_metadata(path)?;
    if meta.card.is_none() {
        return Err(ExportError::Metadata {
            path: path.into(),
            msg: "metadata key `medmae.card`: is missing (medmae-export always writes the model card)".into(),
        });
    }
    let expect_in = meta.kind.input_names();
    let expect_out = meta.kind.output_names();
    if report.inputs != expect_in || !report.outputs.starts_with(&expect_out) {
        return Err(ExportError::Check { path: path.into(), msg: format!("a {} model must have inputs {expect_in:?} and outputs starting with {expect_out:?}, found {:?} → {:?}", meta.kind, report.inputs, report.outputs) });
    }
    report.metadata = Some(meta);
    Ok(report)
}
