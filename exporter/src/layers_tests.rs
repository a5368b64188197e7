//! Layer-by-layer checks: each emitted layer runs in tract and is compared with a direct f64 computation, so a
//! wrong epsilon, axis order or head split shows up here rather than as a small end-to-end drift.

use super::*;
use crate::graph::{Dim, GraphBuilder};
use crate::testing::{assert_close, run, values, weights};
use crate::weights::Weights;

fn fixed(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::Fixed(d)).collect()
}

#[test]
fn layer_norm_applies_eps_weight_and_bias() {
    let w = weights(&[("ln.weight", vec![4]), ("ln.bias", vec![4])]);
    let mut g = GraphBuilder::new(&w);
    let x = g.input("x", &fixed(&[1, 3, 4])).unwrap();
    let y = layer_norm(&mut g, &x, "ln", 0.25).unwrap();
    g.output(&y, "y", &fixed(&[1, 3, 4])).unwrap();
    // Small-variance rows: with eps 0.25 the result is far from a plain standardisation.
    let xv: Vec<f32> = values(12, 1).iter().map(|v| 0.3 * v).collect();
    let out = run(g, &[(vec![1, 3, 4], xv.clone())]);
    let (gw, gb) = (
        w.get("ln.weight").unwrap().to_f32(),
        w.get("ln.bias").unwrap().to_f32(),
    );
    let mut want = Vec::new();
    for row in xv.chunks(4) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / 4.0;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / 4.0;
        for (i, &v) in row.iter().enumerate() {
            want.push(
                (f64::from(v) - mean) / (var + 0.25).sqrt() * f64::from(gw[i]) + f64::from(gb[i]),
            );
        }
    }
    assert_close(&out[0].1, &want, 1e-6, "layer_norm");
}

#[test]
fn gelu_is_the_exact_erf_form() {
    let w = Weights::default();
    let mut g = GraphBuilder::new(&w);
    let x = g.input("x", &fixed(&[7])).unwrap();
    let y = gelu(&mut g, &x, "act").unwrap();
    g.output(&y, "y", &fixed(&[7])).unwrap();
    let out = run(g, &[(vec![7], vec![-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])]);
    // 0.5·x·(1 + erf(x/√2)) evaluated in f64.
    let want = [
        -0.004_049_694_094_890_31,
        -0.158_655_253_931_457_07,
        -0.154_268_769_362_993_44,
        0.0,
        0.345_731_230_637_006_56,
        0.841_344_746_068_542_9,
        1.954_499_736_103_641_6,
    ];
    assert_close(&out[0].1, &want, 2e-6, "gelu");
}

/// Naive multi-head attention for one sequence `x` [l, e]; keys with `masked[j]` are excluded.
fn attention_ref(
    w: &Weights,
    x: &[f32],
    l: usize,
    e: usize,
    heads: usize,
    masked: &[bool],
) -> Vec<f64> {
    let get = |n: &str| {
        w.get(n)
            .unwrap()
            .to_f32()
            .into_iter()
            .map(f64::from)
            .collect::<Vec<_>>()
    };
    let (qw, qb, pw, pb) = (
        get("b.attn.qkv.weight"),
        get("b.attn.qkv.bias"),
        get("b.attn.proj.weight"),
        get("b.attn.proj.bias"),
    );
    let hd = e / heads;
    let qkv: Vec<Vec<f64>> = (0..l)
        .map(|t| {
            (0..3 * e)
                .map(|o| {
                    qb[o]
                        + (0..e)
                            .map(|i| qw[o * e + i] * f64::from(x[t * e + i]))
                            .sum::<f64>()
                })
                .collect()
        })
        .collect();
    let mut ctx = vec![vec![0.0; e]; l];
    for h in 0..heads {
        for (t, ctx_t) in ctx.iter_mut().enumerate() {
            let s: Vec<f64> = (0..l)
                .map(|j| {
                    (0..hd)
                        .map(|d| qkv[t][h * hd + d] * qkv[j][e + h * hd + d])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = (0..l)
                .filter(|&j| !masked[j])
                .map(|j| s[j])
                .fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = (0..l)
                .filter(|&j| !masked[j])
                .map(|j| (s[j] - m).exp())
                .sum();
            for j in (0..l).filter(|&j| !masked[j]) {
                let p = (s[j] - m).exp() / z;
                for d in 0..hd {
                    ctx_t[h * hd + d] += p * qkv[j][2 * e + h * hd + d];
                }
            }
        }
    }
    (0..l)
        .flat_map(|t| {
            (0..e)
                .map(|o| pb[o] + (0..e).map(|i| pw[o * e + i] * ctx[t][i]).sum::<f64>())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn attention_splits_qkv_heads_in_order_and_honours_key_bias() {
    let (n, l, e, heads) = (2, 3, 4, 2);
    let w = weights(&[
        ("b.attn.qkv.weight", vec![3 * e, e]),
        ("b.attn.qkv.bias", vec![3 * e]),
        ("b.attn.proj.weight", vec![e, e]),
        ("b.attn.proj.bias", vec![e]),
    ]);
    let mut g = GraphBuilder::new(&w);
    let x = g.input("x", &fixed(&[n, l, e])).unwrap();
    let bias = g.input("bias", &fixed(&[n, 1, 1, l])).unwrap();
    let v: VitConfig = serde_json::from_str(&format!(
        r#"{{"spatial_dims":2,"in_channels":1,"img_size":[2,2],"patch_size":[1,1],"embed_dim":{e},"depth":1,"num_heads":{heads}}}"#
    ))
    .unwrap();
    let y = attention(&mut g, &x, "b", &v, Some(&bias)).unwrap();
    g.output(&y, "y", &fixed(&[n, l, e])).unwrap();
    let xv: Vec<f32> = values(n * l * e, 7).iter().map(|v| 2.0 * v).collect();
    // Sample 0 hides key 1; sample 1 sees every key.
    let bv = vec![0.0, -1e9, 0.0, 0.0, 0.0, 0.0];
    let out = run(g, &[(vec![n, l, e], xv.clone()), (vec![n, 1, 1, l], bv)]);
    let mut want = attention_ref(&w, &xv[..l * e], l, e, heads, &[false, true, false]);
    want.extend(attention_ref(&w, &xv[l * e..], l, e, heads, &[false; 3]));
    assert_close(&out[0].1, &want, 1e-5, "attention");
}

#[test]
fn patch_tokens_are_row_major_over_the_grid_and_fold_back() {
    // [1, 2, 4, 2, 6] with patch [2, 1, 3] → grid [2, 2, 2], 8 tokens of width 3.
    let (c, e, img, patch, grid) = (2, 3, [4, 2, 6], [2, 1, 3], [2, 2, 2]);
    let w = weights(&[("pe.weight", vec![e, c, 2, 1, 3]), ("pe.bias", vec![e])]);
    let mut g = GraphBuilder::new(&w);
    let x = g.input("x", &fixed(&[1, c, 4, 2, 6])).unwrap();
    let t = patch_embed(&mut g, &x, "pe", &patch, e).unwrap();
    let v = tokens_to_volume(&mut g, &t, &grid, e, "fold").unwrap();
    g.output(&t, "tokens", &fixed(&[1, 8, e])).unwrap();
    g.output(&v, "volume", &fixed(&[1, e, 2, 2, 2])).unwrap();
    let xv = values(c * 48, 3);
    let out = run(g, &[(vec![1, c, 4, 2, 6], xv.clone())]);
    let (pw, pb) = (
        w.get("pe.weight").unwrap().to_f32(),
        w.get("pe.bias").unwrap().to_f32(),
    );
    let xi = |ch: usize, h: usize, wi: usize, d: usize| {
        f64::from(xv[((ch * img[0] + h) * img[1] + wi) * img[2] + d])
    };
    let mut tokens = vec![0.0; 8 * e];
    for (ih, iw, id) in
        (0..2).flat_map(|a| (0..2).flat_map(move |b| (0..2).map(move |d| (a, b, d))))
    {
        let n = (ih * grid[1] + iw) * grid[2] + id;
        for o in 0..e {
            let mut s = f64::from(pb[o]);
            for (ch, a, b, d) in (0..c).flat_map(|ch| {
                (0..2)
                    .flat_map(move |a| (0..1).flat_map(move |b| (0..3).map(move |d| (ch, a, b, d))))
            }) {
                s += f64::from(pw[(((o * c + ch) * 2 + a) + b) * 3 + d])
                    * xi(ch, ih * 2 + a, iw + b, id * 3 + d);
            }
            tokens[n * e + o] = s;
        }
    }
    assert_close(&out[0].1, &tokens, 1e-5, "tokens");
    let volume: Vec<f64> = (0..e)
        .flat_map(|o| (0..8).map(move |n| (o, n)))
        .map(|(o, n)| tokens[n * e + o])
        .collect();
    assert_close(&out[1].1, &volume, 1e-5, "volume");
}

#[test]
fn transposed_conv_uses_in_out_weight_layout() {
    let w = weights(&[("up.weight", vec![2, 3, 2, 2])]);
    let mut g = GraphBuilder::new(&w);
    let x = g.input("x", &fixed(&[1, 2, 2, 3])).unwrap();
    let y = conv_transpose(&mut g, &x, "up", 2).unwrap();
    g.output(&y, "y", &fixed(&[1, 3, 4, 6])).unwrap();
    let xv = values(12, 5);
    let out = run(g, &[(vec![1, 2, 2, 3], xv.clone())]);
    let wv = w.get("up.weight").unwrap().to_f32();
    let mut want = vec![0.0; 3 * 4 * 6];
    for (o, i, j, a, b) in (0..3).flat_map(|o| {
        (0..2).flat_map(move |i| {
            (0..3).flat_map(move |j| (0..2).flat_map(move |a| (0..2).map(move |b| (o, i, j, a, b))))
        })
    }) {
        want[(o * 4 + 2 * i + a) * 6 + 2 * j + b] = (0..2)
            .map(|ch| {
                f64::from(xv[(ch * 2 + i) * 3 + j]) * f64::from(wv[((ch * 3 + o) * 2 + a) * 2 + b])
            })
            .sum();
    }
    assert_close(&out[0].1, &want, 1e-6, "conv_transpose");
}

#[test]
fn instance_norm_then_leaky_relu() {
    let w = Weights::default();
    let mut g = GraphBuilder::new(&w);
    let x = g.input("x", &fixed(&[1, 2, 3, 3])).unwrap();
    let y = instance_norm(&mut g, &x, 2, "in").unwrap();
    let y = leaky_relu(&mut g, &y, "act").unwrap();
    g.output(&y, "y", &fixed(&[1, 2, 3, 3])).unwrap();
    let xv: Vec<f32> = values(18, 9).iter().map(|v| 0.01 * v).collect();
    let out = run(g, &[(vec![1, 2, 3, 3], xv.clone())]);
    let mut want = Vec::new();
    for ch in xv.chunks(9) {
        let mean = ch.iter().map(|&v| f64::from(v)).sum::<f64>() / 9.0;
        let var = ch
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / 9.0;
        want.extend(
            ch.iter()
                .map(|&v| (f64::from(v) - mean) / (var + 1e-5).sqrt())
                .map(|z| if z < 0.0 { 0.01 * z } else { z }),
        );
    }
    assert_close(&out[0].1, &want, 1e-5, "instance_norm + leaky_relu");
}

#[test]
fn cls_token_is_prepended_per_sample_and_stripped() {
    let w = weights(&[("cls", vec![1, 1, 4])]);
    let mut g = GraphBuilder::new(&w);
    let x = g
        .input("x", &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(4)])
        .unwrap();
    let y = prepend_cls(&mut g, &x, "cls", 4).unwrap();
    let back = strip_cls(&mut g, &y, "s").unwrap();
    let cls = take_cls(&mut g, &y, "s").unwrap();
    g.output(&back, "back", &[Dim::Batch, Dim::Fixed(3), Dim::Fixed(4)])
        .unwrap();
    g.output(&cls, "cls_out", &[Dim::Batch, Dim::Fixed(1), Dim::Fixed(4)])
        .unwrap();
    let xv = values(24, 11);
    let out = run(g, &[(vec![2, 3, 4], xv.clone())]);
    assert_eq!(out[0].0, vec![2, 3, 4]);
    assert_eq!(out[0].1, xv);
    let c = w.get("cls").unwrap().to_f32();
    assert_eq!(out[1].1, [c.clone(), c].concat());
}
