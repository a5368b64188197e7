//! The weight-name contract (`spec::expected_weights`), checkpoint save/load and MAE → UNETR initialisation.

mod common;

use std::path::Path;

use models::checkpoint::{expected_shapes, init_unetr_from_mae, load, save, variable_shapes};
use models::{Mae, Model, ModelError, Unetr};
use spec::{MaeConfig, ModelConfig, ReconLoss, UnetrConfig, VitConfig, VitStyle};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn vit(sd: usize, img: usize, patch: usize, e: usize, depth: usize, style: VitStyle) -> VitConfig {
    let monai = style == VitStyle::Monai;
    VitConfig {
        spatial_dims: sd,
        in_channels: 1,
        img_size: vec![img; sd],
        patch_size: vec![patch; sd],
        embed_dim: e,
        depth,
        num_heads: 2,
        mlp_ratio: 2.0,
        qkv_bias: !monai,
        layer_norm_eps: if monai { 1e-5 } else { 1e-6 },
        cls_token: !monai,
        style,
        drop_path_rate: 0.0,
    }
}

fn unetr(sd: usize, img: usize, e: usize, style: VitStyle) -> UnetrConfig {
    UnetrConfig {
        encoder: vit(sd, img, 16, e, 3, style),
        out_channels: 2,
        feature_size: 2,
        skip_layers: [0, 1, 2],
    }
}

fn mae(img: usize, e: usize, loss: ReconLoss) -> MaeConfig {
    MaeConfig {
        encoder: vit(3, img, 16, e, 3, VitStyle::Timm),
        decoder_embed_dim: 6,
        decoder_depth: 1,
        decoder_num_heads: 2,
        mask_ratio: 0.75,
        loss,
    }
}

fn build(cfg: &ModelConfig, vs: &VarStore) {
    let model = Model::new(&vs.root(), cfg).unwrap();
    assert_eq!(
        matches!(model, Model::Mae(_)),
        matches!(cfg, ModelConfig::Mae(_))
    );
}

#[test]
fn every_model_has_exactly_the_spec_weights() {
    common::single_thread();
    let mut cfgs: Vec<ModelConfig> = [
        "monai_unetr3d",
        "monai_unetr2d",
        "timm_unetr3d",
        "mae3d_mse",
        "mae3d_fourier",
        "mae2d_mse",
    ]
    .iter()
    .map(|c| common::config(c))
    .collect();
    cfgs.push(ModelConfig::Unetr(unetr(2, 32, 8, VitStyle::Timm)));
    cfgs.push(ModelConfig::Unetr(unetr(3, 32, 8, VitStyle::Monai)));
    cfgs.push(ModelConfig::Mae(mae(
        32,
        12,
        ReconLoss::Fourier {
            embed_dim: 24,
            temperature: 0.01,
        },
    )));
    for cfg in &cfgs {
        let vs = VarStore::new(Device::Cpu);
        build(cfg, &vs);
        assert_eq!(variable_shapes(&vs), expected_shapes(cfg), "{cfg:?}");
    }
}

#[test]
fn save_is_atomic_and_load_roundtrips_and_reports() {
    common::single_thread();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let cfg = unetr(2, 32, 8, VitStyle::Timm);
    let a = VarStore::new(Device::Cpu);
    Unetr::new(&a.root(), &cfg).unwrap();
    save(&a, &path).unwrap();
    assert!(!dir.path().join("model.safetensors.tmp").exists());

    let b = VarStore::new(Device::Cpu);
    Unetr::new(&b.root(), &cfg).unwrap();
    assert!(load(&b, &path, true).unwrap().is_clean());
    let (va, vb) = (a.variables(), b.variables());
    for (k, v) in &va {
        assert_eq!(v, &vb[k], "{k}");
    }

    // libtorch's own format (what `VarStore::save` writes for other extensions) loads the same way
    let ot = dir.path().join("model.ot");
    a.save(&ot).unwrap();
    let b2 = VarStore::new(Device::Cpu);
    Unetr::new(&b2.root(), &cfg).unwrap();
    assert!(load(&b2, &ot, true).unwrap().is_clean());
    assert_eq!(
        b2.variables()["out.conv.conv.bias"],
        va["out.conv.conv.bias"]
    );

    // a different width: strict load names the first mis-shaped tensor, lenient load reports all of them
    let c = VarStore::new(Device::Cpu);
    Unetr::new(&c.root(), &unetr(2, 32, 12, VitStyle::Timm)).unwrap();
    let before = c.variables()["encoder.norm.weight"].copy();
    let e = load(&c, &path, true).unwrap_err();
    assert!(
        matches!(&e, ModelError::CheckpointKey { key, .. } if key == "decoder5.transp_conv.conv.weight"),
        "{e}"
    );
    assert_eq!(
        c.variables()["encoder.norm.weight"],
        before,
        "strict failure copies nothing"
    );
    let r = load(&c, &path, false).unwrap();
    assert!(r
        .mismatched
        .iter()
        .any(|(k, got, want)| k == "encoder.norm.weight" && got == &[8] && want == &[12]));
    assert!(r.missing.is_empty() && r.unexpected.is_empty());

    // a MONAI-style model shares no encoder names with a timm checkpoint
    let d = VarStore::new(Device::Cpu);
    Unetr::new(&d.root(), &unetr(2, 32, 8, VitStyle::Monai)).unwrap();
    let r = load(&d, &path, false).unwrap();
    assert!(r.missing.contains(&"vit.norm.weight".to_string()));
    assert!(r.unexpected.contains(&"encoder.cls_token".to_string()));
    assert!(matches!(
        load(&d, &dir.path().join("none.safetensors"), false),
        Err(ModelError::CheckpointFile { .. })
    ));
}

fn save_mae(dir: &Path, cfg: &MaeConfig) -> (VarStore, std::path::PathBuf) {
    let vs = VarStore::new(Device::Cpu);
    Mae::new(&vs.root(), cfg).unwrap();
    let path = dir.join("mae.safetensors");
    save(&vs, &path).unwrap();
    (vs, path)
}

#[test]
fn mae_to_unetr_interpolates_the_table_and_reports_keys() {
    common::single_thread();
    let dir = tempfile::tempdir().unwrap();
    let (mae_vs, path) = save_mae(dir.path(), &mae(32, 6, ReconLoss::default()));
    let cfg = unetr(3, 64, 6, VitStyle::Timm);
    let vs = VarStore::new(Device::Cpu);
    Unetr::new(&vs.root(), &cfg).unwrap();
    let r = init_unetr_from_mae(&vs, &path, &cfg).unwrap();

    assert_eq!(
        r.interpolated,
        vec![(
            "encoder_pos_embed".to_string(),
            vec![2, 2, 2],
            vec![4, 4, 4]
        )]
    );
    assert!(r.unexpected.is_empty() && r.mismatched.is_empty(), "{r:?}");
    // the whole encoder is loaded; only the CNN decoder stays as initialised
    assert!(
        r.missing.iter().all(|k| !k.starts_with("encoder.")),
        "{:?}",
        r.missing
    );
    assert!(r
        .missing
        .contains(&"encoder1.layer.conv1.conv.weight".to_string()));
    assert!(r.missing.contains(&"out.conv.conv.bias".to_string()));
    for k in [
        "decoder.head.weight",
        "decoder_pos_embed",
        "encoder_to_decoder.weight",
        "mask_token",
        "decoder.blocks.0.attn.qkv.weight",
    ] {
        assert!(
            r.ignored.contains(&k.to_string()),
            "{k} not ignored: {:?}",
            r.ignored
        );
    }
    let (m, u) = (mae_vs.variables(), vs.variables());
    assert_eq!(
        m["encoder.blocks.2.mlp.fc2.weight"],
        u["encoder.blocks.2.mlp.fc2.weight"]
    );
    assert_eq!(m["encoder.cls_token"], u["encoder.cls_token"]);

    // row 0 (cls) is zero; rows 1.. are F.interpolate(trilinear, align_corners=False) of the MAE's sincos table
    let pos = &u["encoder.pos_embed"];
    assert_eq!(pos.size(), vec![1, 65, 6]);
    assert_eq!(pos.get(0).get(0).abs().max().double_value(&[]), 0.0);
    let ops = common::read("ops.safetensors");
    assert!(common::max_abs(&pos.narrow(1, 1, 64), &ops["mae_pos_2to4"]) < 1e-6);
    // corners keep the source corner values
    assert!(common::max_abs(&pos.get(0).get(1), &m["encoder_pos_embed"].get(0).get(0)) < 1e-6);
    assert!(common::max_abs(&pos.get(0).get(64), &m["encoder_pos_embed"].get(0).get(7)) < 1e-6);

    // the same grid copies the table as is (plus the zero cls row)
    let same = unetr(3, 32, 6, VitStyle::Timm);
    let vs2 = VarStore::new(Device::Cpu);
    Unetr::new(&vs2.root(), &same).unwrap();
    let r2 = init_unetr_from_mae(&vs2, &path, &same).unwrap();
    assert!(r2.interpolated.is_empty());
    assert_eq!(
        vs2.variables()["encoder.pos_embed"].narrow(1, 1, 8),
        m["encoder_pos_embed"]
    );
}

#[test]
fn mae_to_unetr_reports_width_mismatches() {
    common::single_thread();
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = save_mae(dir.path(), &mae(32, 12, ReconLoss::default()));
    let cfg = unetr(3, 32, 6, VitStyle::Timm);
    let vs = VarStore::new(Device::Cpu);
    Unetr::new(&vs.root(), &cfg).unwrap();
    let before = vs.variables()["encoder.norm.weight"].copy();
    let r = init_unetr_from_mae(&vs, &path, &cfg).unwrap();
    assert!(
        r.mismatched
            .iter()
            .any(|(k, got, want)| k == "encoder.norm.weight" && got == &[12] && want == &[6]),
        "{r:?}"
    );
    assert!(r.missing.contains(&"encoder.norm.weight".to_string()));
    assert_eq!(vs.variables()["encoder.norm.weight"], before);
}

#[test]
fn monai_checkpoint_initialises_a_unetr_encoder() {
    common::single_thread();
    // MONAI's UNETR state dict (golden fixture) as a pretrained ViT: `vit.*` keys, cross-attention norms ignored.
    let ModelConfig::Unetr(cfg) = common::config("monai_unetr3d") else {
        unreachable!()
    };
    let path = common::golden_dir().join("monai_unetr3d.weights.safetensors");
    let vs = VarStore::new(Device::Cpu);
    Unetr::new(&vs.root(), &cfg).unwrap();
    let r = init_unetr_from_mae(&vs, &path, &cfg).unwrap();
    assert!(
        r.unexpected.is_empty() && r.mismatched.is_empty() && r.interpolated.is_empty(),
        "{r:?}"
    );
    assert!(
        r.missing.iter().all(|k| !k.starts_with("vit.")),
        "{:?}",
        r.missing
    );
    assert!(r.ignored.iter().any(|k| k.contains("norm_cross_attn")));
    assert!(r
        .ignored
        .contains(&"decoder5.transp_conv.conv.weight".to_string()));
    let file = common::read("monai_unetr3d.weights.safetensors");
    let v = vs.variables();
    assert_eq!(
        v["vit.blocks.11.attn.out_proj.weight"],
        file["vit.blocks.11.attn.out_proj.weight"]
    );

    // into a timm-style encoder: the table gains a zero cls row, MONAI has no qkv bias or cls token to give
    let mut timm = cfg.clone();
    timm.encoder.style = VitStyle::Timm;
    timm.encoder.cls_token = true;
    timm.encoder.qkv_bias = true;
    let vs2 = VarStore::new(Device::Cpu);
    Unetr::new(&vs2.root(), &timm).unwrap();
    let r2 = init_unetr_from_mae(&vs2, &path, &timm).unwrap();
    assert!(
        r2.unexpected.is_empty() && r2.mismatched.is_empty(),
        "{r2:?}"
    );
    assert!(r2.missing.contains(&"encoder.cls_token".to_string()));
    assert!(r2
        .missing
        .contains(&"encoder.blocks.0.attn.qkv.bias".to_string()));
    let pos = &vs2.variables()["encoder.pos_embed"];
    assert_eq!(
        pos.narrow(1, 1, 4),
        file["vit.patch_embedding.position_embeddings"]
    );
    assert_eq!(
        pos.narrow(1, 0, 1),
        Tensor::zeros([1, 1, 12], (Kind::Float, Device::Cpu))
    );
    assert_eq!(
        vs2.variables()["encoder.blocks.3.mlp.fc1.weight"],
        file["vit.blocks.3.mlp.linear1.weight"]
    );
}
