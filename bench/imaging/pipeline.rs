//! Benchmark of medmae's preprocessing per volume: load (NIfTI) + Orientation RAS + Spacing (1.5, 1.5, 2) +
//! ScaleIntensityRange (-175..250 → 0..1, clipped) + CropForeground — the MONAI pipeline of `monai_pipeline.py`.
//!
//! Usage: `cargo bench -p medmae-imaging --bench pipeline -- [--passes N] FILE...` (see `bench/imaging/run`).
//! Prints one JSON line per volume (last pass) and a summary line with each pass's seconds per volume. With
//! `--stages` each volume's line also gives the seconds of every transform applied on its own (a profile, slower
//! than the composed pipeline by nothing but the timing calls).

use std::path::PathBuf;
use std::time::Instant;

use imaging::transforms::Compose;
use imaging::{Rng, Sample};
use rand::SeedableRng;
use spec::TransformSpec;

fn specs() -> Vec<TransformSpec> {
    use TransformSpec as T;
    vec![
        T::Orientation {
            axcodes: "RAS".into(),
        },
        T::Spacing {
            pixdim: vec![1.5, 1.5, 2.0],
        },
        T::ScaleIntensityRange {
            a_min: -175.0,
            a_max: 250.0,
            b_min: 0.0,
            b_max: 1.0,
            clip: true,
        },
        T::CropForeground {
            source: Default::default(),
            select: Default::default(),
            margin: vec![],
            k_divisible: vec![],
        },
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut passes = 3usize;
    let mut stages = false;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--passes" => passes = args.next().ok_or("--passes needs a number")?.parse()?,
            "--bench" => {}
            "--stages" => stages = true,
            _ => files.push(PathBuf::from(a)),
        }
    }
    if files.is_empty() {
        return Err("usage: pipeline [--passes N] FILE...".into());
    }
    let compose = Compose::new(&specs())?;
    let steps = specs()
        .iter()
        .map(|s| Compose::new(std::slice::from_ref(s)))
        .collect::<imaging::Result<Vec<_>>>()?;
    let mut pass_seconds = Vec::new();
    for pass in 0..passes.max(1) {
        let t_pass = Instant::now();
        for f in &files {
            let t = Instant::now();
            let image = imaging::io::load(f)?;
            let load = t.elapsed().as_secs_f64();
            let mut stage_seconds = Vec::new();
            let out = if stages {
                let mut sample = vec![Sample::image_only(image)];
                for step in &steps {
                    let ts = Instant::now();
                    let one = sample.pop().ok_or("a transform produced no sample")?;
                    sample = step.apply(one, &mut Rng::seed_from_u64(0))?;
                    stage_seconds.push(format!("{:.4}", ts.elapsed().as_secs_f64()));
                }
                sample
            } else {
                compose.apply(Sample::image_only(image), &mut Rng::seed_from_u64(0))?
            };
            let secs = t.elapsed().as_secs_f64();
            if pass + 1 == passes.max(1) {
                let shape = out
                    .first()
                    .map(|s| s.image.data.shape().to_vec())
                    .unwrap_or_default();
                let stages = if stages {
                    format!(", \"stage_seconds\": [{}]", stage_seconds.join(", "))
                } else {
                    String::new()
                };
                println!(
                    "{{\"file\": {:?}, \"seconds\": {secs:.4}, \"load_seconds\": {load:.4}{stages}, \"shape\": {shape:?}}}",
                    f.display().to_string()
                );
            }
        }
        pass_seconds.push(t_pass.elapsed().as_secs_f64() / files.len() as f64);
    }
    let per_volume: Vec<String> = pass_seconds.iter().map(|s| format!("{s:.4}")).collect();
    println!(
        "{{\"impl\": \"medmae\", \"volumes\": {}, \"pass_per_volume_seconds\": [{}], \"threads\": {}}}",
        files.len(),
        per_volume.join(", "),
        rayon::current_num_threads()
    );
    Ok(())
}
