//! A small ONNX graph builder over `onnx-protobuf`: unique value names, checkpoint weights as initializers under
//! their own names, deduplicated constants, and graph inputs/outputs with a symbolic batch axis.

use std::collections::HashSet;

use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::{dimension, Dimension};
use onnx_protobuf::type_proto::{self, Tensor as TensorType};
use onnx_protobuf::{
    AttributeProto, GraphProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

use crate::error::{ExportError, Result};
use crate::weights::Weights;

/// Name of the symbolic batch dimension of every graph input and output.
pub const BATCH_DIM: &str = "N";

/// One dimension of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// The dynamic batch axis `N`.
    Batch,
    /// A fixed size.
    Fixed(usize),
}

/// An attribute `name` of type `ty` whose value `set` fills in.
fn attr(name: &str, ty: AttributeType, set: impl FnOnce(&mut AttributeProto)) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.into(),
        ..Default::default()
    };
    a.type_ = ty.into();
    set(&mut a);
    a
}

/// An ONNX attribute (name + value) for [`GraphBuilder::op`].
pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    attr(name, AttributeType::INT, |a| a.i = v)
}

/// An integer-list attribute.
pub(crate) fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    attr(name, AttributeType::INTS, |a| a.ints = v.to_vec())
}

/// A float attribute.
pub(crate) fn attr_float(name: &str, v: f32) -> AttributeProto {
    attr(name, AttributeType::FLOAT, |a| a.f = v)
}

/// `usize` dims as ONNX `i64`s.
pub(crate) fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

/// Builds one `GraphProto`; every node has a single named output equal to its node name unless stated otherwise.
pub(crate) struct GraphBuilder<'w> {
    weights: &'w Weights,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    values: HashSet<String>,
    batch: Option<String>,
    /// Indices into `initializers` of checkpoint tensors, whose `raw_data` is filled at the end.
    weight_slots: Vec<usize>,
}

fn value_info(name: &str, elem: DataType, dims: &[Dim]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Batch => dimension::Value::DimParam(BATCH_DIM.into()),
                Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
            }),
            ..Default::default()
        })
        .collect();
    let tensor = TensorType {
        elem_type: elem as i32,
        shape: Some(TensorShapeProto {
            dim,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let ty = TypeProto {
        value: Some(type_proto::Value::TensorType(tensor)),
        ..Default::default()
    };
    ValueInfoProto {
        name: name.into(),
        type_: Some(ty).into(),
        ..Default::default()
    }
}

impl<'w> GraphBuilder<'w> {
    /// An empty graph reading its initializers from `weights`.
    pub fn new(weights: &'w Weights) -> Self {
        Self {
            weights,
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            values: HashSet::new(),
            batch: None,
            weight_slots: Vec::new(),
        }
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if !self.values.insert(name.to_string()) {
            return Err(ExportError::Graph(format!(
                "value name `{name}` defined twice"
            )));
        }
        Ok(())
    }

    fn require(&self, name: &str) -> Result<()> {
        if !self.values.contains(name) {
            return Err(ExportError::Graph(format!(
                "value `{name}` used before it is defined"
            )));
        }
        Ok(())
    }

    /// Declare an f32 graph input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> Result<String> {
        self.claim(name)?;
        self.inputs.push(value_info(name, DataType::FLOAT, dims));
        Ok(name.to_string())
    }

    /// Expose `value` as the f32 graph output `name` (through an Identity node when the names differ).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) -> Result<()> {
        if value != name {
            self.op("Identity", name, &[value], vec![])?;
        } else {
            self.require(value)?;
        }
        self.outputs.push(value_info(name, DataType::FLOAT, dims));
        Ok(())
    }

    /// Add node `name` of type `op` whose single output value is also called `name`.
    pub fn op(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[&str],
        attribute: Vec<AttributeProto>,
    ) -> Result<String> {
        for i in inputs {
            self.require(i)?;
        }
        self.claim(name)?;
        self.nodes.push(NodeProto {
            name: name.into(),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![name.into()],
            attribute,
            ..Default::default()
        });
        Ok(name.to_string())
    }

    /// The checkpoint tensor `name` as an initializer (added on first use, under its checkpoint name). Its bytes are
    /// attached when the graph is finished, so a caller that owns the weights can move them instead of copying.
    pub fn weight(&mut self, name: &str) -> Result<String> {
        if self.values.contains(name) {
            return Ok(name.to_string());
        }
        let t = self.weights.get(name).ok_or_else(|| {
            ExportError::Graph(format!("checkpoint tensor `{name}` is not loaded"))
        })?;
        let dims = i64s(&t.shape);
        self.claim(name)?;
        self.weight_slots.push(self.initializers.len());
        self.initializers.push(TensorProto {
            name: name.into(),
            dims,
            data_type: DataType::FLOAT as i32,
            ..Default::default()
        });
        Ok(name.to_string())
    }

    /// An f32 constant initializer `const.f32.<name>` (shared between users of the same name).
    pub fn const_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<String> {
        let full = format!("const.f32.{name}");
        if self.values.contains(&full) {
            return Ok(full);
        }
        if dims.iter().product::<usize>() != values.len() {
            return Err(ExportError::Graph(format!(
                "constant {full}: {} values for shape {dims:?}",
                values.len()
            )));
        }
        self.claim(&full)?;
        self.initializers.push(TensorProto {
            name: full.clone(),
            dims: i64s(dims),
            data_type: DataType::FLOAT as i32,
            float_data: values.to_vec(),
            ..Default::default()
        });
        Ok(full)
    }

    /// An f32 scalar constant.
    pub fn scalar(&mut self, name: &str, v: f32) -> Result<String> {
        self.const_f32(name, &[], &[v])
    }

    /// A 1-D int64 constant initializer `const.i64.<name>`.
    pub fn const_i64(&mut self, name: &str, values: &[i64]) -> Result<String> {
        let full = format!("const.i64.{name}");
        if self.values.contains(&full) {
            return Ok(full);
        }
        self.claim(&full)?;
        self.initializers.push(TensorProto {
            name: full.clone(),
            dims: vec![values.len() as i64],
            data_type: DataType::INT64 as i32,
            int64_data: values.to_vec(),
            ..Default::default()
        });
        Ok(full)
    }

    /// An int64 scalar constant `const.i64.<name>`.
    pub fn scalar_i64(&mut self, name: &str, v: i64) -> Result<String> {
        let full = format!("const.i64.{name}");
        if self.values.contains(&full) {
            return Ok(full);
        }
        self.claim(&full)?;
        self.initializers.push(TensorProto {
            name: full.clone(),
            data_type: DataType::INT64 as i32,
            int64_data: vec![v],
            ..Default::default()
        });
        Ok(full)
    }

    /// The batch size of the first graph input as a 1-element int64 tensor (computed once).
    pub fn batch_size(&mut self) -> Result<String> {
        if let Some(b) = &self.batch {
            return Ok(b.clone());
        }
        let input =
            self.inputs.first().map(|i| i.name.clone()).ok_or_else(|| {
                ExportError::Graph("batch size asked before any graph input".into())
            })?;
        let shape = self.op("Shape", "batch/shape", &[&input], vec![])?;
        let zero = self.const_i64("zero", &[0])?;
        let one = self.const_i64("one", &[1])?;
        let b = self.op("Slice", "batch/size", &[&shape, &zero, &one], vec![])?;
        self.batch = Some(b.clone());
        Ok(b)
    }

    /// The finished graph with the checkpoint tensors' bytes copied in (tests run single layers this way).
    #[cfg(test)]
    pub fn finish(self, name: &str) -> Result<GraphProto> {
        let weights = self.weights;
        let (mut graph, slots) = self.finish_unfilled(name);
        fill_weights(&mut graph, &slots, |n| {
            weights.get(n).map(|t| t.le_bytes().to_vec())
        })?;
        Ok(graph)
    }

    /// The finished graph whose checkpoint initializers (at the returned indices) still lack their bytes.
    pub fn finish_unfilled(self, name: &str) -> (GraphProto, Vec<usize>) {
        let graph = GraphProto {
            name: name.into(),
            node: self.nodes,
            initializer: self.initializers,
            input: self.inputs,
            output: self.outputs,
            ..Default::default()
        };
        (graph, self.weight_slots)
    }
}

/// Attach the bytes of the checkpoint initializers at `slots`, asking `bytes` for each tensor by name.
pub(crate) fn fill_weights(
    graph: &mut GraphProto,
    slots: &[usize],
    mut bytes: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Result<()> {
    for &i in slots {
        let init = graph
            .initializer
            .get_mut(i)
            .ok_or_else(|| ExportError::Graph(format!("initializer slot {i} out of range")))?;
        init.raw_data = bytes(&init.name).ok_or_else(|| {
            ExportError::Graph(format!("checkpoint tensor `{}` is not loaded", init.name))
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::WeightTensor;

    #[test]
    fn names_are_unique_and_defined_before_use() {
        let w = Weights::from_tensors([(
            "a.weight".to_string(),
            WeightTensor::from_f32(vec![2], &[1.0, 2.0]).unwrap(),
        )]);
        let mut g = GraphBuilder::new(&w);
        let x = g.input("input", &[Dim::Batch, Dim::Fixed(2)]).unwrap();
        let a = g.weight("a.weight").unwrap();
        assert_eq!(g.weight("a.weight").unwrap(), a, "a weight is added once");
        let y = g.op("Add", "y", &[&x, &a], vec![]).unwrap();
        assert!(
            g.op("Add", "y", &[&x, &a], vec![]).is_err(),
            "duplicate value name"
        );
        assert!(
            g.op("Add", "z", &[&x, "nope"], vec![]).is_err(),
            "undefined input"
        );
        assert!(g.weight("b.weight").is_err());
        g.output(&y, "out", &[Dim::Batch, Dim::Fixed(2)]).unwrap();
        let gp = g.finish("t").unwrap();
        assert_eq!(gp.initializer.len(), 1);
        assert_eq!(gp.initializer[0].raw_data.len(), 8);
        assert_eq!(gp.node.len(), 2);
        assert_eq!(gp.node[1].op_type, "Identity");
        assert_eq!(gp.output[0].name, "out");
    }
}
