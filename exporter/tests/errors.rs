//! Bad inputs give errors that name the file, tensor or field and what was expected.

mod common;

use std::path::Path;
use std::process::Command;

use common::golden_dir;
use exporter::{export, ExportKind, ExportOptions};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// A tensor as read back from a checkpoint: name, dtype, shape, bytes.
type Raw = (String, Dtype, Vec<usize>, Vec<u8>);

/// A temporary copy of a golden checkpoint whose tensors `edit` may change.
fn checkpoint(case: &str, edit: impl FnOnce(&mut Vec<Raw>)) -> tempfile::TempDir {
    let src = golden_dir().join(case);
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("model.json"), tmp.path().join("model.json")).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut raw: Vec<Raw> = st
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                v.dtype(),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    edit(&mut raw);
    let views: Vec<_> = raw
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.path().join("model.safetensors")).unwrap();
    tmp
}

fn export_err(dir: &Path, opts: &ExportOptions) -> String {
    let opts = ExportOptions {
        output: Some(dir.join("out.onnx")),
        ..opts.clone()
    };
    match export(dir, &opts) {
        Ok(r) => panic!("export of {} unexpectedly succeeded: {r:?}", dir.display()),
        Err(e) => {
            assert!(!dir.join("out.onnx").exists(), "no output file on error");
            e.to_string()
        }
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = checkpoint("unetr3d_timm", |t| {
        t.retain(|(n, ..)| n != "encoder.blocks.2.attn.qkv.bias")
    });
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.contains("model.safetensors does not match its model card"),
        "{e}"
    );
    assert!(
        e.contains("1 missing tensor(s): `encoder.blocks.2.attn.qkv.bias`"),
        "{e}"
    );
    assert!(!e.contains("unexpected"), "{e}");
}

#[test]
fn extra_tensor_is_named() {
    let dir = checkpoint("unetr3d_timm", |t| {
        t.push((
            "decoder1.conv.weight".into(),
            Dtype::F32,
            vec![2],
            vec![0; 8],
        ))
    });
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.contains("1 unexpected tensor(s): `decoder1.conv.weight`"),
        "{e}"
    );
    assert!(!e.contains("missing"), "{e}");
}

#[test]
fn wrong_shape_says_expected_and_got() {
    let dir = checkpoint("unetr3d_timm", |t| {
        let w = t
            .iter_mut()
            .find(|(n, ..)| n == "encoder.norm.weight")
            .unwrap();
        w.2 = vec![4, 4];
    });
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.contains("`encoder.norm.weight` expected shape [16], got [4, 4]"),
        "{e}"
    );
}

#[test]
fn all_problems_are_reported_together() {
    let dir = checkpoint("mae3d", |t| {
        t.retain(|(n, ..)| n != "mask_token");
        t.push((
            "decoder.pred.weight".into(),
            Dtype::F32,
            vec![1],
            vec![0; 4],
        ));
        t.iter_mut()
            .find(|(n, ..)| n == "decoder_pos_embed")
            .unwrap()
            .2 = vec![24, 24];
    });
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.contains("`mask_token`")
            && e.contains("`decoder.pred.weight`")
            && e.contains("`decoder_pos_embed` expected shape [1, 24, 24], got [24, 24]"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = checkpoint("mae2d", |t| {
        let w = t.iter_mut().find(|(n, ..)| n == "mask_token").unwrap();
        let n: usize = w.2.iter().product();
        *w = (w.0.clone(), Dtype::I32, w.2.clone(), vec![0; 4 * n]);
    });
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.contains("tensor `mask_token` has dtype I32; expected F32, F16, BF16 or F64"),
        "{e}"
    );
}

#[test]
fn monai_cross_attention_keys_are_ignored_not_rejected() {
    let dir = checkpoint("unetr2d_monai", |t| {
        for i in [0, 11] {
            t.push((
                format!("vit.blocks.{i}.norm_cross_attn.weight"),
                Dtype::F32,
                vec![24],
                vec![0; 96],
            ));
            t.push((
                format!("vit.blocks.{i}.norm_cross_attn.bias"),
                Dtype::F32,
                vec![24],
                vec![0; 96],
            ));
        }
    });
    let r = export(dir.path(), &ExportOptions::default()).unwrap();
    assert_eq!(r.ignored_tensors.len(), 4);
}

#[test]
fn bad_model_json_names_the_field() {
    let dir = checkpoint("unetr2d_timm", |_| {});
    let card = dir.path().join("model.json");
    let good = std::fs::read_to_string(&card).unwrap();

    std::fs::write(&card, good.replace("\"num_heads\": 4", "\"num_heads\": 5")).unwrap();
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.starts_with(&format!("bad model card {}", card.display())),
        "{e}"
    );
    assert!(
        e.contains("`unetr.encoder.embed_dim`: 24 is not divisible by num_heads 5"),
        "{e}"
    );

    std::fs::write(&card, good.replace("\"depth\"", "\"dpeth\"")).unwrap();
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(e.contains("dpeth"), "{e}");

    std::fs::write(&card, &good[..good.len() / 2]).unwrap();
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(e.contains("bad model card") && e.contains("EOF"), "{e}");

    std::fs::remove_file(&card).unwrap();
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(
        e.contains("model.json") && e.contains("No such file"),
        "{e}"
    );
}

#[test]
fn model_json_describing_other_weights_is_a_mismatch() {
    // A card whose depth disagrees with the checkpoint: the blocks the card expects are missing.
    let dir = checkpoint("unetr2d_timm", |_| {});
    let card = dir.path().join("model.json");
    let text = std::fs::read_to_string(&card)
        .unwrap()
        .replace("\"depth\": 4", "\"depth\": 5");
    std::fs::write(&card, text).unwrap();
    let e = export_err(dir.path(), &ExportOptions::default());
    assert!(e.contains("`encoder.blocks.4.norm1.weight`"), "{e}");
}

#[test]
fn wrong_kind_and_opset_are_rejected() {
    let dir = checkpoint("unetr2d_timm", |_| {});
    let e = export_err(
        dir.path(),
        &ExportOptions {
            kind: Some(ExportKind::MaeEncoder),
            ..Default::default()
        },
    );
    assert!(
        e.contains("kind mae-encoder needs an MAE checkpoint"),
        "{e}"
    );
    let e = export_err(
        dir.path(),
        &ExportOptions {
            opset: 16,
            ..Default::default()
        },
    );
    assert!(e.contains("opset 16 (expected 17 or 18)"), "{e}");
    let e = export_err(
        dir.path(),
        &ExportOptions {
            hidden_states: true,
            ..Default::default()
        },
    );
    assert!(e.contains("hidden_states"), "{e}");
    assert_eq!(
        "mae".parse::<ExportKind>(),
        Err(spec::UnknownKind("mae".into()))
    );
}

#[test]
fn cli_exports_checks_and_reports_errors() {
    let exe = env!("CARGO_BIN_EXE_medmae-export");
    let dir = checkpoint("mae2d", |_| {});
    let out = dir.path().join("recon.onnx");
    let ok = Command::new(exe)
        .args([
            "--checkpoint",
            dir.path().to_str().unwrap(),
            "--kind",
            "mae-reconstructor",
            "--opset",
            "18",
            "--check",
            "--output",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(
        stdout.contains("mae-reconstructor, opset 18") && stdout.contains("check ok"),
        "{stdout}"
    );
    let meta = exporter::read_metadata(&out).unwrap();
    assert_eq!(meta.kind, ExportKind::MaeReconstructor);
    assert_eq!(
        meta.out_channels,
        64 * 24,
        "Fourier head: 8x8 patch x 24 features"
    );

    let bad = Command::new(exe)
        .args([
            "--checkpoint",
            dir.path().to_str().unwrap(),
            "--kind",
            "unetr",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("kind unetr needs a UNETR checkpoint"),
        "{stderr}"
    );

    let bad = Command::new(exe)
        .args([
            "--checkpoint",
            dir.path().to_str().unwrap(),
            "--opset",
            "16",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("16"));
}

/// A server running as another user must be able to read the export: under a 0022 umask model.onnx is 0644, like
/// the checkpoint files (and unlike tempfile's 0600 default).
#[cfg(unix)]
#[test]
fn cli_export_is_readable_by_group_and_others_under_umask_0022() {
    use std::os::unix::fs::PermissionsExt;
    let exe = env!("CARGO_BIN_EXE_medmae-export");
    let dir = checkpoint("unetr3d_timm", |_| {});
    let script = format!(
        "umask 0022 && exec '{exe}' --checkpoint '{}'",
        dir.path().display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let onnx = dir.path().join("model.onnx");
    let mode = std::fs::metadata(&onnx).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "model.onnx mode {mode:o}");
}
