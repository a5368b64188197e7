//! Importing checkpoints written by the real upstream classes (MONAI `UNETR` with conv and perceptron patch
//! embedding, SelfMedMAE `MAE3D`, He et al. `MaskedAutoencoderViT`; see `import_fixtures/gen_import_fixtures.py`):
//! the inferred config, and forward parity ≤ 1e-4 with the upstream output on the same input. Plus the torch.save
//! reader on every dtype and on crafted broken files, and the refusals (shapes, options, extra tensors).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::max_abs;
use models::import::{import_checkpoint, read_state_dict, Family, ImportOptions, Imported};
use models::{Model, ModelError};
use spec::{ModelConfig, PixVariance, ReconLoss, VitStyle};
use tch::{Kind, Tensor};

const TOL: f64 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    common::single_thread();
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("import_fixtures")
        .join(name)
}

fn io(case: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(&format!("{case}.io.safetensors")))
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                if v.kind() == Kind::Half {
                    v.to_kind(Kind::Float)
                } else {
                    v
                },
            )
        })
        .collect()
}

fn opts(img: Option<&[usize]>, heads: usize, dheads: Option<usize>) -> ImportOptions {
    ImportOptions {
        img_size: img.map(<[usize]>::to_vec),
        num_heads: Some(heads),
        decoder_num_heads: dheads,
        ..ImportOptions::default()
    }
}

fn unetr_parity(imported: &Imported, case: &str) {
    let (_vs, model) = imported.build().unwrap();
    let Model::Unetr(net) = model else {
        panic!("not a UNETR")
    };
    let io = io(case);
    let logits = tch::no_grad(|| net.forward(&io["x"], false)).unwrap();
    let d = max_abs(&logits, &io["logits"]);
    assert!(d < TOL, "{case}: logits differ from MONAI's by {d}");
}

#[test]
fn monai_unetr_conv_pth_matches_monai() {
    let imp = import_checkpoint(
        &fixture("monai_unetr_conv.pth"),
        &opts(Some(&[32, 16, 16]), 2, None),
    )
    .unwrap();
    assert_eq!(imp.family, Family::MonaiUnetr);
    let ModelConfig::Unetr(u) = &imp.config else {
        panic!()
    };
    let e = &u.encoder;
    // MONAI's conventions: no cls token, no qkv bias, nn.LayerNorm's eps 1e-5, MONAI names, skips 3/6/9.
    assert_eq!(
        (e.style, e.cls_token, e.qkv_bias, e.layer_norm_eps),
        (VitStyle::Monai, false, false, 1e-5)
    );
    assert_eq!(
        (
            e.spatial_dims,
            e.in_channels,
            e.embed_dim,
            e.depth,
            e.num_heads
        ),
        (3, 1, 6, 12, 2)
    );
    assert_eq!(
        (e.img_size.clone(), e.patch_size.clone(), e.mlp_ratio),
        (vec![32, 16, 16], vec![16; 3], 2.0)
    );
    assert_eq!(
        (u.out_channels, u.feature_size, u.skip_layers),
        (2, 1, [3, 6, 9])
    );
    // MONAI 1.6 keeps an unused cross-attention norm in every block: skipped, and said so.
    assert_eq!(imp.ignored.len(), 24, "{:?}", imp.ignored);
    assert!(imp.ignored.iter().all(|k| k.contains(".norm_cross_attn.")));
    unetr_parity(&imp, "monai_unetr_conv");
}

#[test]
fn monai_unetr_perceptron_safetensors_matches_monai() {
    let imp = import_checkpoint(
        &fixture("monai_unetr_perceptron.safetensors"),
        &opts(Some(&[32, 48]), 2, None),
    )
    .unwrap();
    let ModelConfig::Unetr(u) = &imp.config else {
        panic!()
    };
    assert_eq!(
        (
            u.encoder.spatial_dims,
            u.encoder.in_channels,
            u.encoder.qkv_bias
        ),
        (2, 2, true)
    );
    assert_eq!(u.out_channels, 3);
    assert!(
        imp.notes.iter().any(|n| n.contains("perceptron")),
        "{:?}",
        imp.notes
    );
    unetr_parity(&imp, "monai_unetr_perceptron");
}

fn mae_parity(imported: &Imported, case: &str) {
    let (_vs, model) = imported.build().unwrap();
    let Model::Mae(mae) = model else {
        panic!("not an MAE")
    };
    let io = io(case);
    let out = tch::no_grad(|| mae.forward(&io["imgs"], Some(&io["noise"]), false)).unwrap();
    let d = max_abs(&out.pred, &io["pred"]);
    assert!(
        d < TOL,
        "{case}: predictions differ from the reference by {d}"
    );
    if let Some(mask) = io.get("mask") {
        assert_eq!(max_abs(&out.mask, mask), 0.0, "{case}: mask");
    }
    let d = max_abs(&out.loss.reshape([1]), &io["loss"]);
    assert!(d < TOL, "{case}: loss differs from the reference by {d}");
}

#[test]
fn selfmedmae_mae3d_checkpoint_matches_selfmedmae() {
    let path = fixture("selfmedmae_mae3d.pth.tar");
    let imp = import_checkpoint(&path, &opts(None, 2, Some(2))).unwrap();
    assert_eq!(imp.family, Family::SelfMedMaeMae3d);
    let ModelConfig::Mae(m) = &imp.config else {
        panic!()
    };
    // The patch grid (4, 2, 2) is read off the decoder's sincos table: no --img-size needed.
    assert_eq!(
        (m.encoder.img_size.clone(), m.encoder.patch_size.clone()),
        (vec![16, 8, 8], vec![4; 3])
    );
    assert_eq!(
        (
            m.encoder.in_channels,
            m.encoder.embed_dim,
            m.encoder.depth,
            m.encoder.mlp_ratio
        ),
        (2, 12, 2, 4.0)
    );
    assert_eq!((m.decoder_embed_dim, m.decoder_depth), (6, 1));
    assert_eq!(m.encoder.layer_norm_eps, 1e-6);
    assert_eq!(
        m.pix_variance(),
        PixVariance::Biased,
        "SelfMedMAE normalises with a LayerNorm"
    );
    assert!(
        imp.notes.iter().any(|n| n.contains("`state_dict`")),
        "{:?}",
        imp.notes
    );
    mae_parity(&imp, "selfmedmae_mae3d");
}

#[test]
fn he_mae2d_checkpoint_matches_he_et_al() {
    let imp = import_checkpoint(&fixture("he_mae2d.pth"), &opts(None, 2, Some(2))).unwrap();
    assert_eq!(imp.family, Family::HeMae2d);
    let ModelConfig::Mae(m) = &imp.config else {
        panic!()
    };
    assert_eq!(
        (m.encoder.img_size.clone(), m.encoder.in_channels),
        (vec![16, 16], 3)
    );
    assert_eq!(
        m.pix_variance(),
        PixVariance::Unbiased,
        "He et al. use torch.var"
    );
    let ReconLoss::Mse {
        norm_pix_variance, ..
    } = m.loss
    else {
        panic!()
    };
    assert_eq!(
        norm_pix_variance,
        Some(PixVariance::Unbiased),
        "written explicitly into model.json"
    );
    mae_parity(&imp, "he_mae2d");

    // The same weights with the biased variance give a different loss: the variance is really in use.
    let mut biased = imp.config.clone();
    if let ModelConfig::Mae(m) = &mut biased {
        m.loss = ReconLoss::Mse {
            norm_pix_loss: true,
            norm_pix_variance: Some(PixVariance::Biased),
            fft_weight: 0.0,
        };
    }
    let other = Imported {
        config: biased,
        tensors: imp
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.copy()))
            .collect(),
        ..imp
    };
    let (_vs, model) = other.build().unwrap();
    let Model::Mae(mae) = model else { panic!() };
    let io = io("he_mae2d");
    let out = tch::no_grad(|| mae.forward(&io["imgs"], Some(&io["noise"]), false)).unwrap();
    assert!(max_abs(&out.loss.reshape([1]), &io["loss"]) > 1e-3);
}

#[test]
fn torch_save_reader_handles_every_dtype_and_view() {
    let sd = read_state_dict(&fixture("dtypes.pt"), None).unwrap();
    let want: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("dtypes.expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(sd.tensors.len(), want.len());
    for (name, t) in &sd.tensors {
        let w = &want[name];
        let t = match t.kind() {
            Kind::Half | Kind::BFloat16 | Kind::Double => t.to_kind(Kind::Float),
            Kind::Bool => t.to_kind(Kind::Uint8),
            _ => t.shallow_clone(),
        };
        assert_eq!(t.kind(), w.kind(), "{name}");
        assert_eq!(t.size(), w.size(), "{name}");
        assert!(t.equal(w), "{name}: {t:?} vs {w:?}");
    }
    let kinds: HashMap<&str, Kind> = sd
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t.kind()))
        .collect();
    assert_eq!(
        (kinds["f16"], kinds["bf16"], kinds["i64"], kinds["bool"]),
        (Kind::Half, Kind::BFloat16, Kind::Int64, Kind::Bool)
    );
}

fn write_modified(
    dir: &Path,
    from: &str,
    edit: impl FnOnce(&mut Vec<(String, Tensor)>),
) -> PathBuf {
    let mut t = read_state_dict(&fixture(from), None).unwrap().tensors;
    edit(&mut t);
    let path = dir.join("edited.safetensors");
    Tensor::write_safetensors(&t, &path).unwrap();
    path
}

fn err_text(r: models::Result<Imported>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mismatched_shapes_name_tensor_expected_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_modified(dir.path(), "monai_unetr_perceptron.safetensors", |t| {
        let w = t
            .iter_mut()
            .find(|(n, _)| n == "vit.blocks.4.mlp.linear2.weight")
            .unwrap();
        w.1 = w.1.transpose(0, 1).contiguous();
    });
    let e = err_text(import_checkpoint(&path, &opts(Some(&[32, 48]), 2, None)));
    assert!(
        e.contains("vit.blocks.4.mlp.linear2.weight")
            && e.contains("expected shape [6, 12]")
            && e.contains("found [12, 6]"),
        "{e}"
    );

    // He et al. names: the message gives the file's name and the medmae name it maps to.
    let path = write_modified(dir.path(), "he_mae2d.pth", |t| {
        let w = t
            .iter_mut()
            .find(|(n, _)| n == "decoder_blocks.0.norm1.weight")
            .unwrap();
        w.1 = Tensor::ones([5], (Kind::Float, tch::Device::Cpu));
    });
    let e = err_text(import_checkpoint(&path, &opts(None, 2, Some(2))));
    assert!(
        e.contains("`decoder_blocks.0.norm1.weight`")
            && e.contains("medmae `decoder.blocks.0.norm1.weight`")
            && e.contains("found [5]"),
        "{e}"
    );
}

#[test]
fn missing_or_contradicting_options_are_named() {
    let conv = fixture("monai_unetr_conv.pth");
    let e = err_text(import_checkpoint(&conv, &opts(None, 2, None)));
    assert!(e.contains("`img_size`") && e.contains("2 tokens"), "{e}");
    let e = err_text(import_checkpoint(
        &conv,
        &opts(Some(&[16, 16, 16]), 2, None),
    ));
    assert!(
        e.contains("`img_size`") && e.contains("1 tokens") && e.contains("2 rows"),
        "{e}"
    );
    let e = err_text(import_checkpoint(
        &conv,
        &ImportOptions {
            img_size: Some(vec![32, 16, 16]),
            ..ImportOptions::default()
        },
    ));
    assert!(e.contains("`num_heads`"), "{e}");
    let e = err_text(import_checkpoint(
        &conv,
        &opts(Some(&[32, 16, 16]), 4, None),
    ));
    assert!(
        e.contains("`num_heads`") && e.contains("does not divide"),
        "{e}"
    );
    let e = err_text(import_checkpoint(
        &fixture("he_mae2d.pth"),
        &opts(None, 2, None),
    ));
    assert!(e.contains("`decoder_num_heads`"), "{e}");
    // a wrong family named on the command line is refused by the first tensor it lacks
    let o = ImportOptions {
        family: Some(Family::HeMae2d),
        ..opts(None, 2, Some(2))
    };
    let e = err_text(import_checkpoint(&fixture("selfmedmae_mae3d.pth.tar"), &o));
    assert!(
        e.contains("patch_embed.proj.weight") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn extra_and_encoder_only_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_modified(dir.path(), "monai_unetr_perceptron.safetensors", |t| {
        t.push((
            "vit.head.weight".into(),
            Tensor::zeros([3, 6], (Kind::Float, tch::Device::Cpu)),
        ));
    });
    let e = err_text(import_checkpoint(&path, &opts(Some(&[32, 48]), 2, None)));
    assert!(
        e.contains("`vit.head.weight`") && e.contains("has no place"),
        "{e}"
    );
    let path = write_modified(dir.path(), "he_mae2d.pth", |t| {
        t.retain(|(n, _)| !n.starts_with("decoder") && n != "mask_token");
    });
    let e = err_text(import_checkpoint(&path, &opts(None, 2, Some(2))));
    assert!(e.contains("encoder-only"), "{e}");
}

#[test]
fn wrapped_state_dicts_are_found_or_named() {
    let sd = read_state_dict(&fixture("he_mae2d.pth"), None).unwrap();
    assert_eq!(sd.location, "model");
    assert!(sd.tensors.iter().any(|(n, _)| n == "decoder_pred.weight"));
    let sd = read_state_dict(&fixture("he_mae2d.pth"), Some("model")).unwrap();
    assert_eq!(sd.location, "model");
    let e = read_state_dict(&fixture("he_mae2d.pth"), Some("optimizer"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`optimizer`") && e.contains("not a state dict"),
        "{e}"
    );
    let e = read_state_dict(&fixture("he_mae2d.pth"), Some("weights"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no entry `weights`") && e.contains("\"args\" (argparse.Namespace object)"),
        "{e}"
    );
}

/// A minimal torch.save archive: `{"w": tensor}` whose storage `0` holds `numel` f32 values (the record holds
/// `stored` of them) and whose view is `size`/`stride`/`offset`.
fn crafted(dir: &Path, numel: u8, stored: usize, size: u8, offset: u8) -> PathBuf {
    let mut p = vec![0x80, 2, b'}', b'X', 1, 0, 0, 0, b'w', b'c'];
    p.extend(b"torch._utils\n_rebuild_tensor_v2\n(");
    p.extend([b'(', b'X', 7, 0, 0, 0]);
    p.extend(b"storage");
    p.push(b'c');
    p.extend(b"torch\nFloatStorage\n");
    p.extend([b'X', 1, 0, 0, 0, b'0', b'X', 3, 0, 0, 0]);
    p.extend(b"cpu");
    p.extend([
        b'K', numel, b't', b'Q', b'K', offset, b'K', size, 0x85, b'K', 1, 0x85, 0x89, b')', b't',
        b'R', b's', b'.',
    ]);
    let path = dir.join("crafted.pt");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let o = zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("crafted/data.pkl", o).unwrap();
    z.write_all(&p).unwrap();
    z.start_file("crafted/data/0", o).unwrap();
    for i in 0..stored {
        z.write_all(&(i as f32).to_le_bytes()).unwrap();
    }
    z.finish().unwrap();
    path
}

#[test]
fn broken_torch_files_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ok = read_state_dict(&crafted(dir.path(), 6, 6, 4, 2), None).unwrap();
    assert_eq!(
        Vec::<f32>::try_from(&ok.tensors[0].1).unwrap(),
        vec![2.0, 3.0, 4.0, 5.0]
    );
    let e = read_state_dict(&crafted(dir.path(), 6, 6, 5, 2), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`w`") && e.contains("past its storage of 6"),
        "{e}"
    );
    let e = read_state_dict(&crafted(dir.path(), 6, 3, 4, 0), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("crafted/data/0") && e.contains("12 bytes") && e.contains("needs 24"),
        "{e}"
    );
    let text = dir.path().join("notes.pth");
    std::fs::write(&text, "just text").unwrap();
    let e = read_state_dict(&text, None).unwrap_err().to_string();
    assert!(
        e.contains("notes.pth") && e.contains("not a zip-format torch.save"),
        "{e}"
    );
    let e =
        import_checkpoint(&dir.path().join("missing.pt"), &ImportOptions::default()).unwrap_err();
    assert!(matches!(e, ModelError::CheckpointFile { .. }), "{e}");
}

#[test]
fn mutated_pickles_never_panic() {
    use std::io::Read;
    let mut z =
        zip::ZipArchive::new(std::fs::File::open(fixture("he_mae2d.pth")).unwrap()).unwrap();
    let mut data = Vec::new();
    z.by_name("he_mae2d/data.pkl")
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert!(models::import::pickle::parse(&data).is_ok());
    // A fixed LCG: byte flips, splices and truncations at many places; every outcome must be Ok or a typed error.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((state >> 33) as usize) % m
    };
    let mut errors = 0;
    for i in 0..3000 {
        let mut d = data.clone();
        match i % 3 {
            0 => {
                for _ in 0..1 + next(4) {
                    let at = next(d.len());
                    d[at] = next(256) as u8;
                }
            }
            1 => d.truncate(next(d.len())),
            _ => {
                let (a, b) = (next(d.len()), next(d.len()));
                let chunk = d[a.min(b)..a.max(b)].to_vec();
                let at = next(d.len());
                d.splice(at..at, chunk);
            }
        }
        errors += usize::from(models::import::pickle::parse(&d).is_err());
    }
    assert!(
        errors > 1000,
        "most mutations are malformed streams ({errors})"
    );
}

#[test]
fn a_pickled_module_gives_its_state_dict() {
    let sd = read_state_dict(&fixture("module.pt"), None).unwrap();
    let want: HashMap<String, Tensor> =
        Tensor::read_safetensors(fixture("module.expected.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let mut names: Vec<&str> = sd.tensors.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    // `scratch` was registered with persistent=False: not part of the state dict
    assert_eq!(
        names,
        vec!["0.bias", "0.weight", "1.0.bias", "1.0.weight", "counter"]
    );
    for (n, t) in &sd.tensors {
        assert!(t.equal(&want[n]), "{n}");
    }
}
