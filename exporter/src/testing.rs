//! Test support: run a small graph built with [`GraphBuilder`] in tract, and make deterministic test tensors.

use onnx_protobuf::{Message, ModelProto, OperatorSetIdProto};
use tract_onnx::prelude::*;

use crate::graph::GraphBuilder;
use crate::weights::{WeightTensor, Weights};

/// Deterministic pseudo-random values in [-1, 1) (test-support's fixed LCG).
pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    medmae_test_support::uniform_values(n, seed, -1.0, 1.0)
}

/// Weights from (name, shape) with deterministic values.
pub(crate) fn weights(specs: &[(&str, Vec<usize>)]) -> Weights {
    Weights::from_tensors(specs.iter().enumerate().map(|(i, (name, shape))| {
        let n = shape.iter().product();
        (
            name.to_string(),
            WeightTensor::from_f32(shape.clone(), &values(n, 100 + i as u64)).unwrap(),
        )
    }))
}

/// Finish `g` into an opset-17 model, run it in tract with `feeds` (shape, values), return every output.
pub(crate) fn run(
    g: GraphBuilder,
    feeds: &[(Vec<usize>, Vec<f32>)],
) -> Vec<(Vec<usize>, Vec<f32>)> {
    let model = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: 17,
            ..Default::default()
        }],
        graph: Some(g.finish("test").unwrap()).into(),
        ..Default::default()
    };
    let bytes = model.write_to_bytes().unwrap();
    let mut m = tract_onnx::onnx()
        .model_for_read(&mut bytes.as_slice())
        .unwrap();
    for (i, (shape, _)) in feeds.iter().enumerate() {
        m = m
            .with_input_fact(i, f32::fact(shape.to_vec()).into())
            .unwrap();
    }
    let plan = m.into_optimized().unwrap().into_runnable().unwrap();
    let inputs: TVec<TValue> = feeds
        .iter()
        .map(|(s, v)| Tensor::from_shape(s, v).unwrap().into())
        .collect();
    plan.run(inputs)
        .unwrap()
        .iter()
        .map(|t| {
            let a = t.to_plain_array_view::<f32>().unwrap();
            (a.shape().to_vec(), a.iter().copied().collect())
        })
        .collect()
}

/// Assert two slices agree within `tol` element-wise.
pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}
