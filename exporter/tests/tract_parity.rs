//! Golden parity through tract (pure-Rust runtime): the same exported graphs, with the symbolic batch axis
//! concretised from the input shape before `into_runnable`, against the PyTorch/MONAI references (≤ 1e-4).

mod common;

use std::path::Path;

use common::{cases, golden_dir, max_abs_diff, read_npy, Case, TOL};
use exporter::{export, ExportOptions};
use ndarray::ArrayD;
use tract_onnx::prelude::*;

/// Load `model` in tract with every input fixed to the shape of its feed, optimise, run.
fn run_tract(model: &Path, feeds: &[ArrayD<f32>]) -> TractResult<Vec<ArrayD<f32>>> {
    let mut m = tract_onnx::onnx().model_for_path(model)?;
    for (i, x) in feeds.iter().enumerate() {
        m = m.with_input_fact(i, f32::fact(x.shape().to_vec()).into())?;
    }
    let plan = m.into_optimized()?.into_runnable()?;
    let inputs: TVec<TValue> = feeds
        .iter()
        .map(|x| Tensor::from(x.clone()).into())
        .collect();
    let out = plan.run(inputs)?;
    out.iter()
        .map(|t| Ok(t.to_plain_array_view::<f32>()?.to_owned()))
        .collect()
}

fn check_case(case: &Case) {
    let src = golden_dir().join(case.dir);
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.onnx");
    let opts = ExportOptions {
        kind: Some(case.kind),
        hidden_states: case.hidden_states,
        output: Some(model.clone()),
        ..Default::default()
    };
    export(&src, &opts).unwrap_or_else(|e| panic!("{} {}: {e}", case.dir, case.kind));
    let feeds: Vec<_> = case
        .inputs
        .iter()
        .map(|(_, stem)| read_npy(&src.join(format!("{stem}.npy"))))
        .collect();
    let outs = run_tract(&model, &feeds)
        .unwrap_or_else(|e| panic!("tract on {} {}: {e:?}", case.dir, case.kind));
    assert_eq!(
        outs.len(),
        case.outputs.len(),
        "{} {}: number of outputs",
        case.dir,
        case.kind
    );
    for (name, got) in case.outputs.iter().zip(&outs) {
        let want = read_npy(&src.join(format!("{name}.npy")));
        let d = max_abs_diff(got, &want, &format!("{} {name}", case.dir));
        println!(
            "tract {} {} {name}: max abs diff {d:.2e}",
            case.dir, case.kind
        );
        assert!(
            d <= TOL,
            "tract {} {} output {name}: max abs diff {d:e} > {TOL:e}",
            case.dir,
            case.kind
        );
    }
}

#[test]
fn tract_unetr_graphs_match_reference() {
    for case in cases()
        .iter()
        .filter(|c| c.kind == exporter::ExportKind::Unetr)
    {
        check_case(case);
    }
}

#[test]
fn tract_mae_graphs_match_reference() {
    for case in cases()
        .iter()
        .filter(|c| c.kind != exporter::ExportKind::Unetr)
    {
        check_case(case);
    }
}
