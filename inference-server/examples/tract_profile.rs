//! Profile one sliding-window batch through tract: per-op-type wall time of the plan medmae-serve optimises.
//! Run: cargo run --release -p medmae-inference-server --example tract_profile -- MODEL.onnx [BATCH] [ROI]
//! (MEDMAE_TRACT_DUMP=FILE also writes the first run's output as raw f32.)

use std::collections::HashMap;
use std::time::Instant;

use tract_onnx::prelude::*;

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).cloned().unwrap_or_else(|| "model.onnx".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let roi: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(64);
    let t0 = Instant::now();
    // The server's front end and plan (its own InstanceNormalization and Pad kernels included).
    // MEDMAE_TRACT_STOCK=1: tract's own kernels instead (for an A/B of the server's).
    let stock = std::env::var_os("MEDMAE_TRACT_STOCK").is_some();
    let model = if stock {
        tract_onnx::onnx().model_for_path(&path)?
    } else {
        server::backend::tract_ops::onnx().model_for_path(&path)?
    };
    eprintln!("parse {:.2}s", t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    let shape = [n, 1, roi, roi, roi];
    let plan = if stock {
        model
            .with_input_fact(0, f32::fact(shape).into())?
            .into_optimized()?
            .into_runnable()?
    } else {
        server::backend::tract_backend::optimised_plan(model, &shape)?
    };
    eprintln!(
        "optimised {:.2}s, {} nodes",
        t0.elapsed().as_secs_f64(),
        plan.model().nodes().len()
    );
    let input: Tensor =
        tract_ndarray::Array5::<f32>::from_shape_fn((n, 1, roi, roi, roi), |(_, _, a, b, c)| {
            ((a * 7 + b * 3 + c) % 17) as f32 / 17.0
        })
        .into();
    for rep in 0..2 {
        let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)?;
        let mut per_op: HashMap<String, (f64, usize)> = HashMap::new();
        let mut per_node: Vec<(f64, String)> = vec![];
        let t0 = Instant::now();
        let outputs =
            state.run_plan_with_eval(tvec!(input.clone().into()), |ctx, st, node, inputs| {
                let t = Instant::now();
                let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
                let dt = t.elapsed().as_secs_f64();
                let e = per_op.entry(node.op().name().to_string()).or_default();
                e.0 += dt;
                e.1 += 1;
                per_node.push((dt, format!("{} {}", node.name, node.op().name())));
                r
            })?;
        let total = t0.elapsed().as_secs_f64();
        // MEDMAE_TRACT_DUMP=FILE writes the first output as raw little-endian f32 (to compare with another engine).
        if let (0, Some(dump)) = (rep, std::env::var_os("MEDMAE_TRACT_DUMP")) {
            let out = outputs[0].try_as_plain_ram()?;
            let bytes: Vec<u8> = out
                .as_slice::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            std::fs::write(dump, bytes)?;
        }
        eprintln!("run {rep}: {total:.3}s");
        if rep == 1 {
            let mut v: Vec<_> = per_op.into_iter().collect();
            v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
            for (k, (t, c)) in v.iter().take(15) {
                eprintln!("  {k:30} {t:8.3}s x{c}");
            }
            per_node.sort_by(|a, b| b.0.total_cmp(&a.0));
            for (t, name) in per_node.iter().take(15) {
                eprintln!("  node {t:8.3}s {name}");
            }
        }
    }
    Ok(())
}
