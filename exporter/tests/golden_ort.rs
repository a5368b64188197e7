//! Golden parity through ONNX Runtime: export every fixture checkpoint, validate it with onnx.checker (full) and
//! strict shape inference, run it in ONNX Runtime and compare with the PyTorch/MONAI reference outputs (≤ 1e-4).

mod common;

use std::collections::BTreeMap;

use common::{cases, golden_dir, max_abs_diff, read_npy, run_ort, Case, TOL};
use exporter::{export, read_metadata, ExportKind, ExportOptions};

fn check_case(case: &Case, opset: i64) {
    let src = golden_dir().join(case.dir);
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join(format!("{}-{}.onnx", case.dir, case.kind));
    let opts = ExportOptions {
        kind: Some(case.kind),
        opset,
        hidden_states: case.hidden_states,
        output: Some(model.clone()),
        check: true,
    };
    let report = export(&src, &opts).unwrap_or_else(|e| panic!("{} {}: {e}", case.dir, case.kind));
    let check = report.check.as_ref().expect("check requested");
    assert_eq!(check.inputs, case.kind.input_names());

    let feeds: Vec<_> = case
        .inputs
        .iter()
        .map(|(name, stem)| (name.to_string(), src.join(format!("{stem}.npy"))))
        .collect();
    let out = run_ort(&model, &feeds, &tmp.path().join("ort"));
    for name in case.outputs {
        let got = read_npy(&out.join(format!("{name}.npy")));
        let want = read_npy(&src.join(format!("{name}.npy")));
        let d = max_abs_diff(&got, &want, &format!("{} {name}", case.dir));
        println!(
            "{} {} opset {opset} {name}: max abs diff {d:.2e}",
            case.dir, case.kind
        );
        assert!(
            d <= TOL,
            "{} {} output {name}: max abs diff {d:e} > {TOL:e}",
            case.dir,
            case.kind
        );
    }

    // onnx's own reader sees exactly the metadata the Rust reader returns.
    let text = std::fs::read_to_string(out.join("metadata.json")).unwrap();
    let props: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    let from_python = exporter::metadata_from_props(&props, &model).unwrap();
    let meta = read_metadata(&model).unwrap();
    assert_eq!(meta, from_python);
    assert_eq!(meta.kind, case.kind);
    assert_eq!(
        meta.checkpoint_sha256.as_deref(),
        Some(report.checkpoint_sha256.as_str())
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["opset"], serde_json::json!([opset]));
}

#[test]
fn unetr3d_selfmedmae_matches_reference() {
    check_case(&cases()[0], 17);
}

#[test]
fn unetr2d_selfmedmae_matches_reference() {
    check_case(&cases()[1], 17);
}

#[test]
fn unetr2d_monai_matches_reference() {
    check_case(&cases()[2], 17);
}

#[test]
fn mae3d_encoder_and_hidden_states_match_reference() {
    check_case(&cases()[3], 17);
}

#[test]
fn mae3d_masked_reconstruction_matches_reference() {
    check_case(&cases()[4], 17);
}

#[test]
fn mae2d_encoder_and_reconstructor_match_reference_at_opset_18() {
    check_case(&cases()[5], 18);
    check_case(&cases()[6], 18);
}

#[test]
fn metadata_describes_the_segmentation_model() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m.onnx");
    let opts = ExportOptions {
        output: Some(model.clone()),
        ..Default::default()
    };
    export(&golden_dir().join("unetr3d_timm"), &opts).unwrap();
    let m = read_metadata(&model).unwrap();
    assert_eq!(m.kind, ExportKind::Unetr);
    assert_eq!((m.spatial_dims, m.in_channels, m.out_channels), (3, 1, 2));
    assert_eq!(m.roi_size, vec![48, 32, 16]);
    assert_eq!(m.labels, vec!["background", "organ"]);
    assert_eq!(m.preprocessing.len(), 2);
    assert_eq!(
        m.inference.as_ref().map(|i| i.roi_size.clone()),
        Some(vec![48, 32, 16])
    );
    let text = std::fs::read_to_string(golden_dir().join("unetr3d_timm/model.json")).unwrap();
    assert_eq!(m.card, Some(spec::ModelCard::from_json(&text).unwrap()));
    assert_eq!(m.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(m.checkpoint_sha256.as_ref().map(String::len), Some(64));
}
