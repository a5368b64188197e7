//! From a checkpoint directory to a written `.onnx` file: read and validate the card and the weights, build the
//! graph for the requested kind, wrap it in a `ModelProto` with metadata, write atomically, optionally re-check.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use onnx_protobuf::{Message, ModelProto, OperatorSetIdProto, StringStringEntryProto};
use spec::{ModelCard, ModelConfig};

use crate::check::{check_file, CheckReport};
use crate::error::{ExportError, Result};
use crate::graph::{fill_weights, GraphBuilder};
use crate::metadata::props;
use crate::weights::Weights;
use crate::{mae, unetr, ExportKind, ExportOptions};

/// ONNX IR version written (IR 8 = ONNX 1.13, which defines opsets up to 18).
pub const IR_VERSION: i64 = 8;

/// What [`export`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// The written file.
    pub output: PathBuf,
    /// The graph exported.
    pub kind: ExportKind,
    /// Opset of the file.
    pub opset: i64,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Initializers (checkpoint tensors + constants).
    pub initializers: usize,
    /// Size of the written file in bytes.
    pub file_bytes: u64,
    /// SHA-256 of `model.safetensors`.
    pub checkpoint_sha256: String,
    /// Checkpoint keys skipped as known-unused.
    pub ignored_tensors: Vec<String>,
    /// Seconds from start to the renamed file (excluding the check).
    pub seconds: f64,
    /// The re-check of the written file, when asked for.
    pub check: Option<CheckReport>,
}

fn resolve_kind(cfg: &ModelConfig, kind: Option<ExportKind>) -> Result<ExportKind> {
    match (cfg, kind) {
        (ModelConfig::Unetr(_), None | Some(ExportKind::Unetr)) => Ok(ExportKind::Unetr),
        (ModelConfig::Mae(_), None) => Ok(ExportKind::MaeEncoder),
        (
            ModelConfig::Mae(_),
            Some(k @ (ExportKind::MaeEncoder | ExportKind::MaeReconstructor)),
        ) => Ok(k),
        (ModelConfig::Unetr(_), Some(k)) => Err(ExportError::Unsupported(format!(
            "kind {k} needs an MAE checkpoint; this model.json describes a UNETR"
        ))),
        (ModelConfig::Mae(_), Some(k)) => Err(ExportError::Unsupported(format!(
            "kind {k} needs a UNETR checkpoint; this model.json describes an MAE"
        ))),
    }
}

/// Build the ONNX model of `card` with `weights` (validated against the card first).
pub fn build_model(
    card: &ModelCard,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<ModelProto> {
    let (mut model, slots) = build_unfilled(card, weights, opts)?;
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Graph("model without graph".into()))?;
    fill_weights(graph, &slots, |n| {
        weights.get(n).map(|t| t.le_bytes().to_vec())
    })?;
    Ok(model)
}

/// The model with the checkpoint initializers (at the returned indices) still empty.
fn build_unfilled(
    card: &ModelCard,
    weights: &Weights,
    opts: &ExportOptions,
) -> Result<(ModelProto, Vec<usize>)> {
    card.validate().map_err(|source| ExportError::Card {
        path: PathBuf::from("<model card>"),
        source,
    })?;
    weights.validate(&card.model)?;
    if opts.opset != 17 && opts.opset != 18 {
        return Err(ExportError::Unsupported(format!(
            "opset {} (expected 17 or 18)",
            opts.opset
        )));
    }
    let kind = resolve_kind(&card.model, opts.kind)?;
    if opts.hidden_states && kind != ExportKind::MaeEncoder {
        return Err(ExportError::Unsupported(format!(
            "hidden_states outputs exist only for mae-encoder exports, not {kind}"
        )));
    }
    let mut g = GraphBuilder::new(weights);
    match (&card.model, kind) {
        (ModelConfig::Unetr(u), _) => unetr::build(&mut g, u)?,
        (ModelConfig::Mae(m), ExportKind::MaeReconstructor) => mae::build_reconstructor(&mut g, m)?,
        (ModelConfig::Mae(m), _) => mae::build_encoder(&mut g, m, opts.hidden_states)?,
    }
    let sd = card.model.encoder().spatial_dims;
    let (graph, slots) =
        g.finish_unfilled(&format!("medmae_{}_{sd}d", kind.as_str().replace('-', "_")));
    let metadata_props = props(card, kind, weights.sha256())?
        .into_iter()
        .map(|(key, value)| StringStringEntryProto {
            key,
            value,
            ..Default::default()
        })
        .collect();
    let model = ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
            ..Default::default()
        }],
        producer_name: "medmae-export".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: "org.medmae".into(),
        model_version: 1,
        doc_string: format!(
            "medmae {kind} ({sd}-D), exported from a medmae/SelfMedMAE/MONAI checkpoint"
        ),
        graph: Some(graph).into(),
        metadata_props,
        ..Default::default()
    };
    Ok((model, slots))
}

/// Serialize `model` to `path` atomically: a temporary file in the same directory (created if missing), fsync, rename.
pub fn write_model(model: &ModelProto, path: &Path) -> Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Like `mkdir -p` for the output's folder (e.g. a new `<repo>/<model>/` of a model repository).
    std::fs::create_dir_all(&dir).map_err(|e| ExportError::io(&dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".medmae-export-").suffix(".onnx.tmp");
    // tempfile creates 0600 files; model.onnx is read by servers running as other users, so it gets the usual
    // 0666 & !umask (0644 under a 0022 umask), like the checkpoint files and any file written with std::fs.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let tmp = builder
        .tempfile_in(&dir)
        .map_err(|e| ExportError::io(&dir, e))?;
    {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        model
            .write_to_writer(&mut w)
            .map_err(|e| ExportError::Protobuf {
                path: path.into(),
                msg: e.to_string(),
            })?;
        w.flush().map_err(|e| ExportError::io(tmp.path(), e))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| ExportError::io(tmp.path(), e))?;
    let file = tmp
        .persist(path)
        .map_err(|e| ExportError::io(path, e.error))?;
    let bytes = file.metadata().map_err(|e| ExportError::io(path, e))?.len();
    Ok(bytes)
}

/// Export the checkpoint in `checkpoint_dir` (`model.json` + `model.safetensors`) to ONNX.
pub fn export(checkpoint_dir: &Path, opts: &ExportOptions) -> Result<ExportReport> {
    let start = Instant::now();
    let card_path = checkpoint_dir.join("model.json");
    let text = std::fs::read_to_string(&card_path).map_err(|e| ExportError::io(&card_path, e))?;
    let card = ModelCard::from_json(&text).map_err(|source| ExportError::Card {
        path: card_path.clone(),
        source,
    })?;
    let mut weights = Weights::load(&checkpoint_dir.join("model.safetensors"), &card.model)?;
    let (mut model, slots) = build_unfilled(&card, &weights, opts)?;
    let checkpoint_sha256 = weights.sha256().unwrap_or_default().to_string();
    let ignored_tensors = weights.ignored().to_vec();
    // The weights are not needed after this: move their bytes into the initializers instead of copying 4 B/param.
    let graph = model
        .graph
        .as_mut()
        .ok_or_else(|| ExportError::Graph("model without graph".into()))?;
    fill_weights(graph, &slots, |n| weights.take_bytes(n))?;
    drop(weights);
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| checkpoint_dir.join("model.onnx"));
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| ExportError::Graph("model without graph".into()))?;
    let (nodes, initializers) = (graph.node.len(), graph.initializer.len());
    let file_bytes = write_model(&model, &output)?;
    drop(model);
    let seconds = start.elapsed().as_secs_f64();
    let check = if opts.check {
        Some(check_file(&output)?)
    } else {
        None
    };
    let kind = resolve_kind(&card.model, opts.kind)?;
    Ok(ExportReport {
        output,
        kind,
        opset: opts.opset,
        nodes,
        initializers,
        file_bytes,
        checkpoint_sha256,
        ignored_tensors,
        seconds,
        check,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::check_model;
    use crate::testing::weights;
    use onnx_protobuf::attribute_proto::AttributeType;

    fn tiny_card(style: &str) -> ModelCard {
        let (cls, bias, eps) = if style == "monai" {
            (false, false, 1e-5)
        } else {
            (true, true, 1e-6)
        };
        let j = format!(
            r#"{{"format_version":1,"medmae_version":"0.1.0","model":{{"kind":"unetr","encoder":{{"spatial_dims":2,"in_channels":1,"img_size":[32,16],"patch_size":[16,16],"embed_dim":8,"depth":3,"num_heads":2,"style":"{style}","cls_token":{cls},"qkv_bias":{bias},"layer_norm_eps":{eps}}},"out_channels":2,"feature_size":2,"skip_layers":[0,1,2]}},"preprocessing":[],"labels":["bg","fg"],"inference":{{"roi_size":[32,16]}}}}"#
        );
        ModelCard::from_json(&j).unwrap()
    }

    fn tiny_weights(card: &ModelCard) -> Weights {
        let specs: Vec<_> = spec::expected_weights(&card.model)
            .into_iter()
            .map(|t| (t.name, t.shape))
            .collect();
        let refs: Vec<_> = specs.iter().map(|(n, s)| (n.as_str(), s.clone())).collect();
        weights(&refs)
    }

    #[test]
    fn layer_norm_epsilon_follows_the_config() {
        for (style, eps) in [("timm", 1e-6f32), ("monai", 1e-5)] {
            let card = tiny_card(style);
            let m = build_model(&card, &tiny_weights(&card), &ExportOptions::default()).unwrap();
            let r = check_model(&m).unwrap();
            assert_eq!(r.ops["LayerNormalization"], 2 * 3 + 1, "{style}");
            let g = m.graph.as_ref().unwrap();
            for n in g.node.iter().filter(|n| n.op_type == "LayerNormalization") {
                let a = n.attribute.iter().find(|a| a.name == "epsilon").unwrap();
                assert_eq!(a.type_.enum_value(), Ok(AttributeType::FLOAT));
                assert_eq!(a.f, eps, "{style} {}", n.name);
            }
            for n in g
                .node
                .iter()
                .filter(|n| n.op_type == "InstanceNormalization")
            {
                assert_eq!(n.attribute[0].f, 1e-5);
            }
            // Every checkpoint tensor is an initializer under its own name, byte for byte.
            let w = tiny_weights(&card);
            for t in spec::expected_weights(&card.model) {
                let init = g
                    .initializer
                    .iter()
                    .find(|i| i.name == t.name)
                    .unwrap_or_else(|| panic!("{} not in graph", t.name));
                assert_eq!(init.raw_data, w.get(&t.name).unwrap().le_bytes());
            }
            assert_eq!(
                r.ops.get("Expand").copied().unwrap_or(0),
                usize::from(style == "timm"),
                "cls broadcast only with a cls token"
            );
        }
    }

    #[test]
    fn check_model_rejects_broken_graphs() {
        let card = tiny_card("timm");
        let m = build_model(&card, &tiny_weights(&card), &ExportOptions::default()).unwrap();
        let mut bad = m.clone();
        bad.graph.as_mut().unwrap().node.remove(3);
        assert!(check_model(&bad)
            .unwrap_err()
            .contains("before it is defined"));
        let mut bad = m.clone();
        let g = bad.graph.as_mut().unwrap();
        let mut extra = g.initializer[0].clone();
        extra.name = "orphan".into();
        g.initializer.push(extra);
        assert_eq!(
            check_model(&bad).unwrap_err(),
            "initializer `orphan` is not used by any node"
        );
        let mut bad = m.clone();
        bad.graph.as_mut().unwrap().initializer[0].raw_data.pop();
        assert!(check_model(&bad).unwrap_err().contains("holds"));
        let mut bad = m;
        bad.opset_import[0].version = 13;
        assert!(check_model(&bad).unwrap_err().contains("opset"));
    }

    #[test]
    fn written_file_roundtrips_metadata_and_structure() {
        let card = tiny_card("timm");
        let m = build_model(
            &card,
            &tiny_weights(&card),
            &ExportOptions {
                opset: 18,
                ..Default::default()
            },
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.onnx");
        let bytes = write_model(&m, &path).unwrap();
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        let r = check_file(&path).unwrap();
        let meta = r.metadata.unwrap();
        assert_eq!(meta.kind, ExportKind::Unetr);
        assert_eq!(meta.card, Some(card));
        assert_eq!(
            (meta.spatial_dims, meta.roi_size.clone(), meta.out_channels),
            (2, vec![32, 16], 2)
        );
        assert_eq!(
            meta.checkpoint_sha256, None,
            "in-memory weights have no file hash"
        );
    }
}
