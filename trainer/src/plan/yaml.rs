//! The commented YAML of the two planned configs (MAE pretraining, UNETR fine-tuning).

use std::fmt::Write;

use spec::TransformSpec;

use super::rules::SplitPlan;
use super::Planned;

/// A YAML scalar or collection in flow style (`{a: 1, b: [2, 3]}`), strings quoted only when needed.
fn flow(v: &yaml_serde::Value) -> String {
    use yaml_serde::Value;
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        // Values that came from f32 (spacings, windows) print as their shortest f32 form (0.8, not 0.800000011920929).
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f64::from(f as f32) == f && f.is_finite() => {
                let s = (f as f32).to_string();
                if s.contains(['.', 'e', 'E']) {
                    s
                } else {
                    format!("{s}.0")
                }
            }
            _ => n.to_string(),
        },
        Value::String(s) => {
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
                && s.parse::<f64>().is_err()
                && !matches!(
                    s.as_str(),
                    "true" | "false" | "null" | "yes" | "no" | "on" | "off"
                );
            if plain {
                s.clone()
            } else {
                serde_json::to_string(s).unwrap_or_default()
            }
        }
        Value::Sequence(items) => {
            format!(
                "[{}]",
                items.iter().map(flow).collect::<Vec<_>>().join(", ")
            )
        }
        Value::Mapping(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", flow(k), flow(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Tagged(t) => flow(&t.value),
    }
}

/// One transform as a flow mapping (`{name: Spacing, pixdim: [2.0, 3.0, 2.0]}`).
pub fn transform(t: &TransformSpec) -> String {
    yaml_serde::to_value(t).map_or_else(|e| format!("# {e}"), |v| flow(&v))
}

fn string(s: &str) -> String {
    flow(&yaml_serde::Value::String(s.to_string()))
}

fn list<T: ToString>(v: &[T]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn transforms(out: &mut String, key: &str, ts: &[(TransformSpec, &str)]) {
    let _ = writeln!(out, "  {key}:");
    for (t, why) in ts {
        let line = format!("    - {}", transform(t));
        if why.is_empty() {
            let _ = writeln!(out, "{line}");
        } else {
            let _ = writeln!(out, "{line:<100} # {why}");
        }
    }
}

fn header(out: &mut String, p: &Planned, what: &str) {
    let _ = writeln!(
        out,
        "# {what} for dataset `{}`, written by `medmae-train plan`.",
        p.name
    );
    for line in &p.notes {
        let _ = writeln!(out, "# {line}");
    }
    let _ = writeln!(out, "seed: {}", p.seed);
}

fn encoder(out: &mut String, p: &Planned) {
    let a = &p.arch;
    let _ = writeln!(out, "  encoder:");
    let _ = writeln!(out, "    spatial_dims: 3");
    let _ = writeln!(out, "    in_channels: {}", p.in_channels);
    let _ = writeln!(
        out,
        "    img_size: {}                 # the roi (RAS voxels at the planned spacing)",
        list(&p.roi)
    );
    let _ = writeln!(out, "    patch_size: [16, 16, 16]");
    let _ = writeln!(out, "    embed_dim: {}", a.embed_dim);
    let _ = writeln!(out, "    depth: {}", a.depth);
    let _ = writeln!(out, "    num_heads: {}", a.num_heads);
}

fn device(out: &mut String, p: &Planned) {
    let _ = writeln!(out, "device: {}", string(&p.device));
    let _ = writeln!(
        out,
        "threads: {}                      # libtorch threads (0 = libtorch's default)",
        p.threads
    );
}

/// `data.dataset` and the split keys.
fn dataset(out: &mut String, p: &Planned) {
    let _ = writeln!(
        out,
        "  dataset: {{kind: decathlon, path: {}}}",
        string(&p.dataset_path.to_string_lossy())
    );
    if let SplitPlan::Folds { num_folds, fold } = p.split {
        let _ = writeln!(
            out,
            "  num_folds: {num_folds}                  # {}",
            p.split_note
        );
        let _ = writeln!(out, "  fold: {fold}");
    } else {
        let _ = writeln!(out, "  # split: {}", p.split_note);
    }
}

fn deterministic(p: &Planned) -> Vec<(TransformSpec, &str)> {
    vec![
        (
            TransformSpec::Orientation {
                axcodes: "RAS".into(),
            },
            "one axis order for every case",
        ),
        (
            TransformSpec::Spacing {
                pixdim: p.spacing.to_vec(),
            },
            p.spacing_note.as_str(),
        ),
        (p.norm.clone(), p.norm_note.as_str()),
    ]
}

fn augmentation(p: &Planned) -> Vec<(TransformSpec, &'static str)> {
    let mut v: Vec<(TransformSpec, &str)> = (0..3)
        .map(|axis| {
            (
                TransformSpec::RandFlip {
                    prob: 0.1,
                    spatial_axis: axis,
                },
                "",
            )
        })
        .collect();
    if p.roi[0] == p.roi[1] {
        v.push((
            TransformSpec::RandRotate90 {
                prob: 0.1,
                max_k: 3,
                spatial_axes: [0, 1],
            },
            "in-plane (the roi is square there)",
        ));
    }
    v
}

/// The MAE pretraining config.
pub fn mae(p: &Planned) -> String {
    let mut out = String::new();
    header(&mut out, p, "MAE-3D pretraining");
    let _ = writeln!(out, "output_dir: {}", string(&p.mae_out.to_string_lossy()));
    device(&mut out, p);
    let a = &p.arch;
    let _ = writeln!(out, "model:");
    let _ = writeln!(out, "  kind: mae");
    encoder(&mut out, p);
    let _ = writeln!(out, "  decoder_embed_dim: {}", a.decoder[0]);
    let _ = writeln!(out, "  decoder_depth: {}", a.decoder[1]);
    let _ = writeln!(out, "  decoder_num_heads: {}", a.decoder[2]);
    let _ = writeln!(out, "  mask_ratio: 0.75");
    let _ = writeln!(out, "  loss: {{kind: mse, norm_pix_loss: true}}");
    let _ = writeln!(out, "data:");
    dataset(&mut out, p);
    let mut train = deterministic(p);
    train.push((
        TransformSpec::SpatialPad {
            spatial_size: p.roi.to_vec(),
        },
        "images smaller than the roi",
    ));
    train.push((
        TransformSpec::RandSpatialCrop {
            roi_size: p.roi.to_vec(),
        },
        "",
    ));
    train.extend(augmentation(p));
    transforms(&mut out, "train_transforms", &train);
    transforms(&mut out, "val_transforms", &deterministic(p));
    let _ = writeln!(
        out,
        "  cache_dir: {}",
        string(&p.cache_dir.to_string_lossy())
    );
    let _ = writeln!(out, "  workers: {}", p.workers);
    let _ = writeln!(out, "  batch_size: {}", p.mae_batch);
    let _ = writeln!(
        out,
        "  samples_per_volume: {}        # visits per volume and epoch",
        p.mae_spv
    );
    optim(
        &mut out,
        p.mae_base_lr,
        p.mae_batch,
        p.arch.peak_lr[0],
        p.amp,
        None,
    );
    schedule(&mut out, &p.mae_sched);
    let _ = writeln!(out, "logging:");
    let _ = writeln!(out, "  log_every_steps: {}", p.mae_sched.log_every_steps);
    let _ = writeln!(out, "  png_every_epochs: {}", p.mae_sched.every_epochs);
    out
}

fn optim(
    out: &mut String,
    base_lr: f64,
    batch: usize,
    peak: f64,
    amp: bool,
    layer_decay: Option<f64>,
) {
    let _ = writeln!(out, "optim:");
    let _ = writeln!(
        out,
        "  base_lr: {base_lr:e}              # lr = base_lr × {batch} samples per step / 256 = {peak:e}"
    );
    let _ = writeln!(out, "  weight_decay: 0.05");
    if let Some(d) = layer_decay {
        let _ = writeln!(out, "  layer_decay: {d}");
        let _ = writeln!(out, "  grad_clip: 1.0");
    }
    if amp {
        let _ = writeln!(out, "  amp: true");
    }
}

fn schedule(out: &mut String, s: &super::rules::Schedule) {
    let _ = writeln!(out, "schedule:");
    let _ = writeln!(out, "  epochs: {}", s.epochs);
    let _ = writeln!(out, "  warmup_epochs: {}", s.warmup_epochs);
}

/// The UNETR fine-tuning config.
pub fn unetr(p: &Planned) -> String {
    let mut out = String::new();
    header(&mut out, p, "UNETR-3D fine-tuning");
    let _ = writeln!(
        out,
        "output_dir: {}",
        string(&p.unetr_out.to_string_lossy())
    );
    let _ = writeln!(
        out,
        "init: {}   # the planned MAE's checkpoint; delete this line to train from scratch",
        string(&p.mae_out.join("checkpoints").join("last").to_string_lossy())
    );
    device(&mut out, p);
    let a = &p.arch;
    let _ = writeln!(out, "model:");
    let _ = writeln!(out, "  kind: unetr");
    encoder(&mut out, p);
    let _ = writeln!(
        out,
        "  out_channels: {}                # largest label value found + 1",
        p.labels.len()
    );
    let _ = writeln!(out, "  feature_size: {}", a.feature_size);
    let _ = writeln!(out, "  skip_layers: {}", list(&a.skip_layers));
    let _ = writeln!(out, "data:");
    dataset(&mut out, p);
    let names: Vec<String> = p.labels.iter().map(|l| string(l)).collect();
    let _ = writeln!(out, "  labels: [{}]", names.join(", "));
    let _ = writeln!(out, "  activation: softmax");
    let mut train = deterministic(p);
    train.push((
        TransformSpec::SpatialPad {
            spatial_size: p.roi.to_vec(),
        },
        "images smaller than the roi",
    ));
    train.push((
        TransformSpec::RandCropByPosNegLabel {
            spatial_size: p.roi.to_vec(),
            pos: 1.0,
            neg: 1.0,
            num_samples: p.crops,
            image_threshold: None,
        },
        "half the crops centred on foreground",
    ));
    train.extend(augmentation(p));
    train.push((
        TransformSpec::RandShiftIntensity {
            offsets: 0.1,
            prob: 0.5,
        },
        "",
    ));
    transforms(&mut out, "train_transforms", &train);
    transforms(&mut out, "val_transforms", &deterministic(p));
    let _ = writeln!(
        out,
        "  cache_dir: {}",
        string(&p.cache_dir.to_string_lossy())
    );
    let _ = writeln!(out, "  workers: {}", p.workers);
    let _ = writeln!(
        out,
        "  batch_size: 1              # volumes per step; each gives num_samples crops"
    );
    let _ = writeln!(
        out,
        "  samples_per_volume: {}        # visits per volume and epoch",
        p.unetr_spv
    );
    optim(
        &mut out,
        p.unetr_base_lr,
        p.crops,
        p.arch.peak_lr[1],
        p.amp,
        Some(0.75),
    );
    schedule(&mut out, &p.unetr_sched);
    let _ = writeln!(out, "validation:");
    let _ = writeln!(out, "  every_epochs: {}", p.unetr_sched.every_epochs);
    let _ = writeln!(out, "  overlap: 0.5");
    let _ = writeln!(out, "  blend: gaussian");
    let _ = writeln!(out, "  sw_batch_size: 4");
    let _ = writeln!(out, "logging:");
    let _ = writeln!(out, "  log_every_steps: {}", p.unetr_sched.log_every_steps);
    let _ = writeln!(out, "  png_every_epochs: {}", p.unetr_sched.every_epochs);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_render_as_yaml_flow_maps() {
        let t = TransformSpec::ScaleIntensityRange {
            a_min: -120.5,
            a_max: 240.25,
            b_min: 0.0,
            b_max: 1.0,
            clip: true,
        };
        let s = transform(&t);
        assert_eq!(
            s,
            "{name: ScaleIntensityRange, a_min: -120.5, a_max: 240.25, b_min: 0.0, b_max: 1.0, clip: true}"
        );
        let back: TransformSpec = yaml_serde::from_str(&s).unwrap();
        assert_eq!(back, t);
        assert_eq!(string("a b:c"), "\"a b:c\"");
        assert_eq!(string("/data/x_1"), "/data/x_1");
        assert_eq!(string("1e3"), "\"1e3\"");
        assert_eq!(string("yes"), "\"yes\"");
        let f32_origin = TransformSpec::Spacing {
            pixdim: vec![f64::from(0.8f32), 3.0, 1.25],
        };
        assert_eq!(
            transform(&f32_origin),
            "{name: Spacing, pixdim: [0.8, 3.0, 1.25]}"
        );
    }
}
