//! ORT and tract give the same logits on the test models.

use server::backend::{self, BackendKind, BackendOptions};
use server::model::{onnx, ModelInfo};

use crate::common::*;

fn load(
    path: &std::path::Path,
    kind: BackendKind,
    threads: usize,
) -> (ModelInfo, Box<dyn backend::Backend>) {
    let bytes = std::fs::read(path).unwrap();
    let info =
        ModelInfo::from_summary("m", "1", path, onnx::summarize(&bytes, path).unwrap()).unwrap();
    let opts = BackendOptions {
        kind,
        threads,
        use_gpu: false,
        ort_library: std::env::var_os("ORT_DYLIB_PATH").map(Into::into),
    };
    let b = backend::load(&info, &opts).unwrap();
    (info, b)
}

#[test]
fn ort_and_tract_agree_within_1e_4() {
    // threads 2: both backends split a batch across sessions / workers (ORT in contiguous chunks, tract strided).
    for (path, threads) in [demo_onnx(), fixtures().join("slow_repo/slow/model.onnx")]
        .into_iter()
        .flat_map(|p| [(p.clone(), 1), (p, 2)])
    {
        let (info, ort) = load(&path, BackendKind::Ort, threads);
        let (_, tract) = load(&path, BackendKind::Tract, threads);
        for n in [1usize, 3] {
            let shape = info.input_shape(n);
            let x = ndarray::ArrayD::from_shape_vec(
                shape.clone(),
                values(shape.iter().product(), n as u32)
                    .iter()
                    .map(|v| v / 50.0)
                    .collect(),
            )
            .unwrap();
            let a = ort.run(x.clone()).unwrap();
            let b = tract.run(x).unwrap();
            assert_eq!(a.shape(), b.shape());
            let diff = a
                .iter()
                .zip(b.iter())
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(
                diff <= 1e-4,
                "{}: threads {threads}, batch {n}: max |ort - tract| = {diff} (max |logit| {scale})",
                path.display()
            );
        }
    }
}
