//! Export benchmark (driven by `bench/export/run`): a ViT-B UNETR-3D at roi 96³ with random weights written here in
//! Rust, exported and timed, then loaded (and optionally run once) in tract with the batch axis fixed to 1.
//!
//! `cargo run --release -p medmae-exporter --example bench_export -- --work DIR [--run] [--opset 17|18]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use exporter::{check_file, export, ExportOptions, WeightTensor, Weights};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spec::{InferenceSpec, ModelCard, ModelConfig, UnetrConfig, VitConfig};
use tract_onnx::prelude::*;

/// ViT-B/16 UNETR-3D as in the UNETR paper / SelfMedMAE BTCV config: 14 classes, feature size 16.
fn vit_b_unetr() -> ModelCard {
    let encoder = VitConfig::timm(1, vec![96; 3], vec![16; 3], 768, 12, 12);
    let labels = (0..14).map(|i| format!("class{i}")).collect();
    let model = ModelConfig::Unetr(UnetrConfig {
        encoder,
        out_channels: 14,
        feature_size: 16,
        skip_layers: [3, 6, 9],
    });
    let inference = InferenceSpec::new(vec![96; 3], Default::default());
    ModelCard::new(model, vec![], labels, Some(inference))
}

/// Random weights of the right shapes, uniform in ±1/√fan-in (so a forward pass stays finite).
fn random_weights(card: &ModelCard, seed: u64) -> Result<Weights> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut tensors = Vec::new();
    for t in spec::expected_weights(&card.model) {
        let n: usize = t.shape.iter().product();
        let fan_in: usize = if t.shape.len() > 1 {
            t.shape[1..].iter().product()
        } else {
            t.shape.iter().product()
        };
        let a = 1.0 / (fan_in.max(1) as f32).sqrt();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a)).collect();
        tensors.push((t.name, WeightTensor::from_f32(t.shape, &v)?));
    }
    Ok(Weights::from_tensors(tensors))
}

fn tract_load(model: &Path, run: bool) -> Result<()> {
    let t = Instant::now();
    let m = tract_onnx::onnx()
        .model_for_path(model)?
        .with_input_fact(0, f32::fact([1, 1, 96, 96, 96]).into())?;
    let plan = m.into_optimized()?.into_runnable()?;
    println!(
        "tract: loaded and optimised in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    if run {
        let t = Instant::now();
        let x = Tensor::zero::<f32>(&[1, 1, 96, 96, 96])?;
        let out = plan.run(tvec!(x.into()))?;
        let shape = out[0].shape().to_vec();
        let finite = out[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        println!(
            "tract: one 96³ window in {:.2} s, logits {shape:?}, finite: {finite}",
            t.elapsed().as_secs_f64()
        );
        if shape != [1, 14, 96, 96, 96] || !finite {
            bail!("tract produced an unexpected output");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let mut work: Option<PathBuf> = None;
    let (mut run, mut opset) = (false, 17);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--work" => work = args.next().map(PathBuf::from),
            "--run" => run = true,
            "--opset" => opset = args.next().context("--opset needs a value")?.parse()?,
            other => bail!("unknown argument {other:?} (expected --work DIR, --run, --opset N)"),
        }
    }
    let work = work.context("--work DIR is required")?;
    std::fs::create_dir_all(&work)?;

    let card = vit_b_unetr();
    let t = Instant::now();
    let weights = random_weights(&card, 0)?;
    weights.save_safetensors(&work.join("model.safetensors"))?;
    std::fs::write(
        work.join("model.json"),
        serde_json::to_string_pretty(&card)?,
    )?;
    let params: usize = spec::expected_weights(&card.model)
        .iter()
        .map(|t| t.shape.iter().product::<usize>())
        .sum();
    println!(
        "checkpoint: ViT-B UNETR-3D, {:.1} M parameters, written in {:.2} s",
        params as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    drop(weights);

    let model = work.join("model.onnx");
    let opts = ExportOptions {
        opset,
        output: Some(model.clone()),
        ..Default::default()
    };
    let r = export(&work, &opts)?;
    println!(
        "export: {} nodes, {} initializers, {:.1} MB in {:.2} s (goal < 5 s)",
        r.nodes,
        r.initializers,
        r.file_bytes as f64 / 1e6,
        r.seconds
    );

    let t = Instant::now();
    let c = check_file(&model)?;
    println!(
        "check: {} parameters, {:?} → {:?} in {:.2} s",
        c.parameters,
        c.inputs,
        c.outputs,
        t.elapsed().as_secs_f64()
    );
    if c.parameters < params {
        bail!(
            "the graph holds {} parameters, the checkpoint {params}",
            c.parameters
        );
    }
    tract_load(&model, run)?;
    println!("EXPORT_SECONDS {:.3}", r.seconds);
    Ok(())
}
