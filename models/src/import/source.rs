//! The source side of an import: the checkpoint's tensors by name, how each medmae tensor is made from one of
//! them (with the shape check that names the tensor, the expected and the found shape), and the architecture facts
//! read off shapes, sincos tables and options.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use spec::{VitConfig, VitStyle};
use tch::{Kind, Tensor};

use super::{Family, ImportOptions, StateDict};
use crate::error::{ModelError, Result};
use crate::pos_embed::{grids_matching_sincos, sincos_table};

/// `(medmae name, source name, how)` for every tensor of the imported model.
pub(super) type Plan = Vec<(String, String, Op)>;

/// How a medmae tensor is made from its source tensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Op {
    /// Copied.
    Copy,
    /// MONAI perceptron Linear `[E, p…·C]` (channel-last tokens) → conv kernel `[E, C, p…]`.
    PerceptronToConv,
    /// A `[1, 1+N, D]` table without its leading (cls) row.
    DropFirstRow,
    /// He et al.'s cls token `[1, 1, E]` plus row 0 of `pos_embed` (added to it in every forward).
    AddPosRow0,
}

pub(super) struct Source<'a> {
    pub(super) path: &'a Path,
    pub(super) family: Family,
    pub(super) map: BTreeMap<String, Tensor>,
    pub(super) used: BTreeSet<String>,
}

impl<'a> Source<'a> {
    pub(super) fn new(path: &'a Path, family: Family, sd: StateDict) -> Self {
        let map = sd
            .tensors
            .into_iter()
            .map(|(k, v)| {
                (
                    k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                    v,
                )
            })
            .collect();
        Self {
            path,
            family,
            map,
            used: BTreeSet::new(),
        }
    }

    pub(super) fn key_err(&self, key: &str, msg: impl Into<String>) -> ModelError {
        ModelError::CheckpointKey {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            msg: msg.into(),
        }
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(super) fn get(&self, name: &str) -> Result<&Tensor> {
        self.map.get(name).ok_or_else(|| {
            self.key_err(
                name,
                format!("missing: a {} checkpoint has this tensor", self.family),
            )
        })
    }

    /// The shape of `name`, which must have `rank` axes.
    pub(super) fn shape(&self, name: &str, rank: &[usize], what: &str) -> Result<Vec<usize>> {
        let s = self.get(name)?.size();
        if !rank.contains(&s.len()) {
            return Err(self.key_err(name, format!("expected {what}, found shape {s:?}")));
        }
        Ok(s.into_iter().map(|d| d as usize).collect())
    }

    /// Number of blocks `prefix.{0..n}.` present (indices must be contiguous from 0).
    pub(super) fn depth(&self, prefix: &str) -> Result<usize> {
        let p = format!("{prefix}.");
        let idx: BTreeSet<usize> = self
            .map
            .keys()
            .filter_map(|k| k.strip_prefix(&p)?.split('.').next()?.parse().ok())
            .collect();
        match idx.iter().enumerate().find(|(i, v)| i != *v) {
            Some((i, _)) => Err(self.key_err(
                &format!("{prefix}.{i}"),
                format!("missing: blocks {idx:?} are not numbered 0, 1, 2, …"),
            )),
            None if idx.is_empty() => {
                Err(self.key_err(&format!("{prefix}.0"), "missing: no transformer blocks"))
            }
            None => Ok(idx.len()),
        }
    }

    /// The source tensor for one medmae tensor of shape `want`, transformed by `op`.
    pub(super) fn produce(
        &mut self,
        src: &str,
        op: Op,
        want: &[usize],
        dst: &str,
    ) -> Result<Tensor> {
        let t = self.get(src)?.shallow_clone();
        if !matches!(
            t.kind(),
            Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
        ) {
            return Err(self.key_err(
                src,
                format!("expected floating-point values, found {:?}", t.kind()),
            ));
        }
        let want_i: Vec<i64> = want.iter().map(|&d| d as i64).collect();
        let expected_src: Vec<i64> = match op {
            Op::Copy | Op::AddPosRow0 => want_i.clone(),
            Op::DropFirstRow => vec![want_i[0], want_i[1] + 1, want_i[2]],
            Op::PerceptronToConv => vec![want_i[0], want_i[1..].iter().product()],
        };
        if t.size() != expected_src {
            let via = if src == dst {
                String::new()
            } else {
                format!(" (medmae `{dst}`)")
            };
            return Err(self.key_err(
                src,
                format!("expected shape {expected_src:?}{via}, found {:?}", t.size()),
            ));
        }
        self.used.insert(src.to_string());
        let t = t.f_to_kind(Kind::Float)?;
        Ok(match op {
            Op::Copy => t,
            Op::DropFirstRow => t.f_narrow(1, 1, want_i[1])?.f_contiguous()?,
            Op::PerceptronToConv => {
                // MONAI's Rearrange "b c (h p1) (w p2) (d p3) -> b (h w d) (p1 p2 p3 c)": a token is channel-last.
                let nd = want_i.len() - 2;
                let mut view = vec![want_i[0]];
                view.extend(&want_i[2..]);
                view.push(want_i[1]);
                let mut perm = vec![0i64, nd as i64 + 1];
                perm.extend(1..=nd as i64);
                t.f_reshape(&view)?.f_permute(&perm)?.f_contiguous()?
            }
            Op::AddPosRow0 => {
                let pos = self.get("pos_embed")?.f_to_kind(Kind::Float)?;
                t.f_add(&pos.f_narrow(1, 0, 1)?)?
            }
        })
    }
}

pub(super) fn mlp_ratio(src: &Source, fc1: &str, embed: usize) -> Result<f64> {
    let s = src.shape(fc1, &[2], "a Linear weight [hidden, embed]")?;
    if s[1] != embed {
        return Err(src.key_err(fc1, format!("expected [hidden, {embed}], found {s:?}")));
    }
    Ok(s[0] as f64 / embed as f64)
}

pub(super) fn required<T: Clone>(v: &Option<T>, option: &str, why: String) -> Result<T> {
    v.clone().ok_or_else(|| ModelError::ImportOption {
        option: option.to_string(),
        msg: why,
    })
}

pub(super) fn opt_err(option: &str, msg: String) -> ModelError {
    ModelError::ImportOption {
        option: option.to_string(),
        msg,
    }
}

/// The patch grid: from `--img-size` when given (checked against the token count), else read off the fixed sincos
/// table `table_name` (`[1, (1+)N, D]`, `skip` leading rows).
pub(super) fn patch_grid(
    src: &Source,
    img_size: Option<&[usize]>,
    patch: &[usize],
    table_name: &str,
    skip: i64,
    notes: &mut Vec<String>,
) -> Result<Vec<usize>> {
    let table = src.get(table_name)?;
    let s = table.size();
    if s.len() != 3 || s[0] != 1 || s[1] <= skip {
        return Err(src.key_err(
            table_name,
            format!("expected a position table [1, N, D], found {s:?}"),
        ));
    }
    let n = (s[1] - skip) as usize;
    let dims = patch.len();
    if let Some(img) = img_size {
        if img.len() != dims || img.iter().zip(patch).any(|(i, p)| *i == 0 || i % p != 0) {
            return Err(opt_err(
                "img_size",
                format!("{img:?}: expected {dims} sizes divisible by the patch size {patch:?}"),
            ));
        }
        let grid: Vec<usize> = img.iter().zip(patch).map(|(i, p)| i / p).collect();
        if grid.iter().product::<usize>() != n {
            return Err(opt_err(
                "img_size",
                format!("{img:?} makes a {grid:?} patch grid of {} tokens, but `{table_name}` has {n} rows", grid.iter().product::<usize>()),
            ));
        }
        return Ok(grid);
    }
    let rows = table
        .f_narrow(1, skip, n as i64)?
        .f_to_kind(Kind::Float)?
        .f_flatten(0, -1)?;
    let values = Vec::<f32>::try_from(&rows)?;
    let found = grids_matching_sincos(&values, s[2] as usize, dims, 1e-3);
    match found.as_slice() {
        [grid] => {
            notes.push(format!("patch grid {grid:?} read off the fixed sincos table `{table_name}`"));
            Ok(grid.clone())
        }
        _ => Err(opt_err(
            "img_size",
            format!(
                "needed: `{table_name}` ({n} tokens) is {} so the patch grid cannot be read off it; give the input size",
                if found.is_empty() { "not a sincos table of any grid".to_string() } else { format!("the sincos table of several grids {found:?}") }
            ),
        )),
    }
}

/// Check an MAE encoder table against the sincos table of `grid` and say what was found.
pub(super) fn note_table(
    src: &Source,
    name: &str,
    skip: i64,
    grid: &[usize],
    notes: &mut Vec<String>,
) -> Result<()> {
    let t = src.get(name)?;
    let s = t.size();
    let n: usize = grid.iter().product();
    let sincos_width = s
        .last()
        .is_some_and(|&e| e > 0 && e as usize % (2 * grid.len()) == 0);
    if s.len() != 3 || s[1] != skip + n as i64 || !sincos_width {
        return Ok(()); // a mis-shaped table is reported, named, when the tensors are mapped
    }
    let rows = t.f_narrow(1, skip, n as i64)?.f_to_kind(Kind::Float)?;
    let want = sincos_table(grid, s[2] as usize, tch::Device::Cpu)?;
    let d = rows.f_sub(&want)?.f_abs()?.f_max()?.double_value(&[]);
    if d > 1e-3 {
        notes.push(format!(
            "`{name}` is not the sincos table of the {grid:?} grid (largest difference {d:.3}): kept as it is (a learned table)"
        ));
    }
    Ok(())
}

/// The encoder widths read off a checkpoint.
pub(super) struct Encoder {
    pub(super) spatial_dims: usize,
    pub(super) in_channels: usize,
    pub(super) img_size: Vec<usize>,
    pub(super) patch_size: Vec<usize>,
    pub(super) embed_dim: usize,
    pub(super) depth: usize,
    pub(super) mlp_ratio: f64,
    pub(super) qkv_bias: bool,
}

impl Encoder {
    pub(super) fn config(
        self,
        num_heads: usize,
        layer_norm_eps: f64,
        style: VitStyle,
    ) -> VitConfig {
        VitConfig {
            spatial_dims: self.spatial_dims,
            in_channels: self.in_channels,
            img_size: self.img_size,
            patch_size: self.patch_size,
            embed_dim: self.embed_dim,
            depth: self.depth,
            num_heads,
            mlp_ratio: self.mlp_ratio,
            qkv_bias: self.qkv_bias,
            layer_norm_eps,
            cls_token: style == VitStyle::Timm,
            style,
            drop_path_rate: 0.0,
        }
    }
}

pub(super) fn heads(opts: &ImportOptions, embed: usize) -> Result<usize> {
    let h = required(
        &opts.num_heads,
        "num_heads",
        format!("needed: attention heads do not show in the weights (width {embed}; ViT-B uses 12 heads for 768)"),
    )?;
    if h == 0 || embed % h != 0 {
        return Err(opt_err(
            "num_heads",
            format!("{h} does not divide the encoder width {embed}"),
        ));
    }
    Ok(h)
}
