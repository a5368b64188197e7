//! Tests of the ONNX metadata writer and reader.

use super::*;
use crate::card::{BlendMode, OutputActivation};
use crate::model::tests::vit3d;
use crate::model::{MaeConfig, ReconLoss, UnetrConfig};

fn unetr_card() -> ModelCard {
    let model = ModelConfig::Unetr(UnetrConfig {
        encoder: vit3d(),
        out_channels: 2,
        feature_size: 8,
        skip_layers: [0, 1, 2],
    });
    let inference = InferenceSpec {
        overlap: 0.25,
        sw_batch_size: 2,
        ..InferenceSpec::new(vec![32; 3], OutputActivation::Softmax)
    };
    let pre = vec![TransformSpec::Orientation {
        axcodes: "RAS".into(),
    }];
    ModelCard::new(
        model,
        pre,
        vec!["background".into(), "organ".into()],
        Some(inference),
    )
}

fn mae_card() -> ModelCard {
    let mut encoder = vit3d();
    encoder.patch_size = vec![8, 8, 8];
    let model = ModelConfig::Mae(MaeConfig {
        encoder,
        decoder_embed_dim: 24,
        decoder_depth: 1,
        decoder_num_heads: 2,
        mask_ratio: 0.75,
        loss: ReconLoss::default(),
    });
    ModelCard::new(model, vec![], vec![], None)
}

const SHA: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

fn props(card: &ModelCard, kind: ExportKind) -> BTreeMap<String, String> {
    OnnxMetadata::from_card(card, kind, Some(SHA))
        .unwrap()
        .to_props()
        .unwrap()
        .into_iter()
        .collect()
}

fn read_err(map: &BTreeMap<String, String>) -> MetadataError {
    OnnxMetadata::from_props(map).unwrap_err()
}

#[test]
fn writer_and_reader_round_trip_every_kind() {
    for (card, kind, out) in [
        (unetr_card(), ExportKind::Unetr, 2),
        (mae_card(), ExportKind::MaeEncoder, 48),
        (mae_card(), ExportKind::MaeReconstructor, 512),
    ] {
        let written = OnnxMetadata::from_card(&card, kind, Some(SHA)).unwrap();
        let entries = written.to_props().unwrap();
        let order: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(order, keys::ALL, "{kind}: the writer's order");
        let map: BTreeMap<String, String> = entries.into_iter().collect();
        let read = OnnxMetadata::from_props(&map).unwrap().unwrap();
        assert_eq!(read, written);
        assert_eq!((read.kind, read.out_channels), (kind, out));
        assert_eq!(read.card.as_ref(), Some(&card));
    }
    // The on-disk spelling of the values (files already exported must keep loading).
    let map = props(&unetr_card(), ExportKind::Unetr);
    assert_eq!(map[keys::KIND], "unetr");
    assert_eq!(map[keys::ROI_SIZE], "[32,32,32]");
    assert_eq!(
        map[keys::INFERENCE],
        r#"{"roi_size":[32,32,32],"overlap":0.25,"blend":"gaussian","sw_batch_size":2,"activation":"softmax"}"#
    );
    assert_eq!(
        map[keys::PREPROCESSING],
        r#"[{"name":"Orientation","axcodes":"RAS"}]"#
    );
}

#[test]
fn writer_refuses_a_kind_that_does_not_fit() {
    let e = OnnxMetadata::from_card(&mae_card(), ExportKind::Unetr, None).unwrap_err();
    assert_eq!(e.key, keys::KIND);
}

#[test]
fn plain_onnx_has_no_medmae_metadata() {
    let mut map = BTreeMap::new();
    map.insert("producer.note".to_string(), "x".to_string());
    assert_eq!(OnnxMetadata::from_props(&map).unwrap(), None);
}

#[test]
fn metadata_of_other_tools_needs_no_card() {
    // The keys a non-medmae tool writes (the server's Python fixtures): no card, no hash.
    let mut map = props(&unetr_card(), ExportKind::Unetr);
    map.remove(keys::CARD);
    map.remove(keys::CHECKPOINT_SHA256);
    map.remove(keys::LABELS);
    let m = OnnxMetadata::from_props(&map).unwrap().unwrap();
    assert_eq!((m.card, m.labels.len()), (None, 0));
    assert_eq!(m.inference.unwrap().blend, BlendMode::Gaussian);
}

/// Replace `from` by `to` in the value of `key` (which must contain it) and read the map back.
fn tampered(key: &str, from: &str, to: &str) -> MetadataError {
    let mut map = props(&unetr_card(), ExportKind::Unetr);
    let v = map.get_mut(key).unwrap();
    assert!(v.contains(from), "{v}");
    *v = v.replace(from, to);
    read_err(&map)
}

#[test]
fn invalid_values_are_refused_naming_key_and_value() {
    let e = tampered(keys::INFERENCE, "gaussian", "linear");
    assert_eq!(e.key, keys::INFERENCE);
    let text = e.to_string();
    assert!(
        text.starts_with("metadata key `medmae.inference` = ")
            && text.contains("\\\"blend\\\":\\\"linear\\\"")
            && text.contains("blend: unknown variant `linear`"),
        "{text}"
    );
    let e = tampered(keys::INFERENCE, "softmax", "relu").to_string();
    assert!(e.contains("activation: unknown variant `relu`"), "{e}");
    let e = tampered(keys::INFERENCE, "0.25", "1.5").to_string();
    assert!(e.contains("overlap: must be in [0, 1), got 1.5"), "{e}");
    let e = tampered(
        keys::INFERENCE,
        "\"sw_batch_size\":2",
        "\"sw_batch_size\":0",
    );
    assert!(e.msg.contains("sw_batch_size"), "{e}");
    let e = tampered(keys::KIND, "unetr", "segmenter");
    assert_eq!(e.value.as_deref(), Some("segmenter"));
    assert!(e.to_string().contains("unknown export kind"), "{e}");
    let e = tampered(keys::SPATIAL_DIMS, "3", "4");
    assert_eq!(e.key, keys::SPATIAL_DIMS);
    let e = tampered(keys::ROI_SIZE, "[32,32,32]", "[32,32]");
    assert_eq!(e.key, keys::ROI_SIZE);
    let e = tampered(keys::LABELS, ",\"organ\"", "");
    assert!(
        e.key == keys::LABELS && e.msg.contains("1 names for 2"),
        "{e}"
    );
    let e = tampered(keys::IN_CHANNELS, "1", "0");
    assert_eq!(e.key, keys::IN_CHANNELS);
    let e = tampered(keys::OUT_CHANNELS, "2", "two");
    assert_eq!(e.key, keys::OUT_CHANNELS);
    let e = tampered(keys::PREPROCESSING, "Orientation", "Reorient");
    assert!(
        e.key == keys::PREPROCESSING && e.msg.contains("Reorient"),
        "{e}"
    );
    let e = tampered(
        keys::PREPROCESSING,
        r#"{"name":"Orientation","axcodes":"RAS"}"#,
        r#"{"name":"RandFlip","spatial_axis":0}"#,
    );
    assert!(e.msg.contains("RandFlip is a random transform"), "{e}");
    let e = tampered(keys::CHECKPOINT_SHA256, "ff", "zz");
    assert_eq!(e.key, keys::CHECKPOINT_SHA256);
}

#[test]
fn the_card_is_validated_and_must_agree() {
    let e = tampered(keys::CARD, "\"gaussian\"", "\"linear\"");
    assert_eq!(e.key, keys::CARD);
    assert!(e.msg.contains("inference.blend"), "{e}");
    // A top-level value that parses but differs from the card.
    let e = tampered(keys::INFERENCE, "0.25", "0.5");
    assert!(
        e.key == keys::INFERENCE && e.msg.contains("differs from medmae.card"),
        "{e}"
    );
    let e = tampered(keys::LABELS, "organ", "liver");
    assert_eq!(e.key, keys::LABELS);
}

#[test]
fn missing_unknown_and_misplaced_keys_are_refused() {
    let mut map = props(&unetr_card(), ExportKind::Unetr);
    map.remove(keys::KIND);
    let e = read_err(&map);
    assert_eq!(e.to_string(), "metadata key `medmae.kind`: is missing");
    let mut map = props(&unetr_card(), ExportKind::Unetr);
    map.insert("medmae.blend".into(), "linear".into());
    let e = read_err(&map);
    assert!(
        e.key == "medmae.blend" && e.msg.contains("not a medmae key"),
        "{e}"
    );
    let mut map = props(&unetr_card(), ExportKind::Unetr);
    map.remove(keys::CARD);
    map.insert(keys::INFERENCE.into(), "null".into());
    let e = read_err(&map);
    assert!(
        e.key == keys::INFERENCE && e.msg.contains("sliding-window"),
        "{e}"
    );
    let mut map = props(&mae_card(), ExportKind::MaeEncoder);
    map.remove(keys::CARD);
    map.insert(keys::INFERENCE.into(), r#"{"roi_size":[32,32,32]}"#.into());
    assert_eq!(read_err(&map).key, keys::INFERENCE);
}

#[test]
fn card_parse_errors_name_the_field() {
    let text = serde_json::to_string(&unetr_card())
        .unwrap()
        .replace("\"gaussian\"", "\"linear\"");
    let e = ModelCard::from_json(&text).unwrap_err();
    assert_eq!(e.field, "inference.blend");
    assert!(e.msg.contains("unknown variant `linear`"), "{e}");
    let e = ModelCard::from_json("{").unwrap_err();
    assert_eq!(e.field, "model.json");
    let text = serde_json::to_string(&unetr_card())
        .unwrap()
        .replace("\"overlap\":0.25", "\"overlap\":1.0");
    let e = ModelCard::from_json(&text).unwrap_err();
    assert_eq!(e.field, "inference.overlap");
}
