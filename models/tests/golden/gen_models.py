#!/usr/bin/env python3
"""Golden fixtures for medmae's `models` crate (read by models/tests/golden.rs).

Run from the repository root with the reference venv (torch 2.13.0, monai 1.6.1, safetensors; CPU is enough):

    $MEDMAE_PYTHON models/tests/golden/gen_models.py

It rewrites, next to this script:
  cases.json                    medmae model configs (spec::ModelConfig JSON) per case
  <case>.weights.safetensors    the reference model's state dict (f16, except the MAE's fixed f32 sincos tables;
                                every random value is f16-exact and the references run on them in f32)
  <case>.io.safetensors         inputs (f16, exact) and reference outputs (f32 / i64)
  ops.safetensors               op-level checks: sincos tables, LayerNorm eps, pos-embed interpolation, DiceCE

References (independent of the Rust code):
  monai_unetr3d / monai_unetr2d   MONAI's own `UNETR` (depth 12, conv patch embedding, no cls token, LN eps 1e-5)
  timm_unetr3d                    a timm-style ViT (cls token, LN 1e-6, qkv bias, learned [1,1+N,E] table) written
                                  here + MONAI's UNETR decoder blocks, skips from configurable blocks (SelfMedMAE)
  mae3d_mse / mae3d_fourier       SelfMedMAE MAE-3D written from its formulation: channel-last patchify, argsort
  mae2d_mse                       masking, decoder in *shuffled* order (as SelfMedMAE), norm-pix MSE (biased variance
                                  in 3-D, He et al.'s unbiased torch.var in 2-D) / Fourier-feature loss, FFT amplitude
                                  term; the 2-D case uses He et al.'s column-first sincos table
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceLoss
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets import UNETR
from safetensors.torch import save_file

OUT = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)


def f16(t):
    """Round to values exactly representable in f16 (kept in f32)."""
    return t.half().float()


def randomize(model, seed):
    """Give every parameter a random, f16-exact value (biases, norms and tokens non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith("weight") and p.dim() >= 2:
                v = torch.randn(p.shape, generator=g) / math.sqrt(p.numel() / p.shape[0])
            elif name.endswith("weight"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(f16(v))


def save_weights(case, model):
    # Fixed sincos tables stay f32 (they are computed, not random, and must keep their exact values).
    fixed = {"encoder_pos_embed", "decoder_pos_embed"}
    sd = {k: v.detach().contiguous() if k in fixed else v.detach().contiguous().half()
          for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(OUT, f"{case}.weights.safetensors"))


def save_io(case, tensors):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"{case}.io.safetensors"))


# ---------------------------------------------------------------- sincos tables (models/README.md)
def sincos_3d(grid, dim):
    """SelfMedMAE: blocks (h, w, d), omega in f32, no cls row. Returns [1, N, dim]."""
    h, w, d = grid
    gh, gw, gd = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                torch.arange(d, dtype=torch.float32), indexing="ij")
    pd = dim // 6
    omega = 1.0 / (10000.0 ** (torch.arange(pd, dtype=torch.float32) / pd))
    outs = []
    for g in (gh, gw, gd):
        o = g.flatten()[:, None] * omega[None, :]
        outs += [torch.sin(o), torch.cos(o)]
    return torch.cat(outs, dim=1)[None]


def sincos_2d(grid, dim):
    """He et al.: column-coordinate block first, numpy float64 then f32. Returns [1, N, dim]."""
    h, w = grid
    gw, gh = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))  # 'xy': [h, w] arrays
    q = dim // 4
    omega = 1.0 / 10000 ** (np.arange(q, dtype=np.float64) / q)
    parts = []
    for g in (gw, gh):
        o = np.einsum("m,d->md", g.reshape(-1), omega)
        parts += [np.sin(o), np.cos(o)]
    return torch.from_numpy(np.concatenate(parts, axis=1).astype(np.float32))[None]


# ---------------------------------------------------------------- timm-style transformer pieces
class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, e = x.shape
        hd = e // self.heads
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * hd ** -0.5
        return self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, e))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, eps=1e-6, qkv_bias=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(round(dim * mlp_ratio)))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Stack(nn.Module):
    def __init__(self, dim, depth, heads, mlp_ratio):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)


def conv_nd(sd):
    return nn.Conv3d if sd == 3 else nn.Conv2d


# ---------------------------------------------------------------- SelfMedMAE-style MAE (reference)
def patchify(x, patch):
    b, c = x.shape[:2]
    sp = x.shape[2:]
    nd = len(patch)
    grid = [s // p for s, p in zip(sp, patch)]
    view = [b, c]
    for g, p in zip(grid, patch):
        view += [g, p]
    perm = [0] + [2 + 2 * i for i in range(nd)] + [3 + 2 * i for i in range(nd)] + [1]
    return x.reshape(view).permute(perm).reshape(b, int(np.prod(grid)), int(np.prod(patch)) * c)


def unpatchify(t, patch, grid, c):
    b = t.shape[0]
    nd = len(patch)
    x = t.reshape([b] + list(grid) + list(patch) + [c])
    perm = [0, 2 * nd + 1]
    for i in range(1, nd + 1):
        perm += [i, nd + i]
    return x.permute(perm).reshape([b, c] + [g * p for g, p in zip(grid, patch)])


class Encoder(Stack):
    def __init__(self, sd, c, patch, dim, depth, heads, mlp_ratio):
        super().__init__(dim, depth, heads, mlp_ratio)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = conv_nd(sd)(c, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))


class Decoder(Stack):
    def __init__(self, dim, depth, heads, mlp_ratio, out):
        super().__init__(dim, depth, heads, mlp_ratio)
        self.head = nn.Linear(dim, out)


class RefMAE(nn.Module):
    def __init__(self, sd, c, img, patch, e, depth, heads, ed, ddepth, dheads, mlp_ratio, ratio, loss):
        super().__init__()
        self.sd, self.c, self.patch, self.ratio, self.loss_cfg = sd, c, patch, ratio, loss
        self.grid = [i // p for i, p in zip(img, patch)]
        table = sincos_3d if sd == 3 else sincos_2d
        pv = int(np.prod(patch))
        head = pv * c if loss["kind"] == "mse" else pv * loss["embed_dim"]
        self.encoder = Encoder(sd, c, patch, e, depth, heads, mlp_ratio)
        self.encoder_pos_embed = nn.Parameter(table(self.grid, e), requires_grad=False)
        self.encoder_to_decoder = nn.Linear(e, ed, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, ed))
        self.decoder_pos_embed = nn.Parameter(table(self.grid, ed), requires_grad=False)
        self.decoder = Decoder(ed, ddepth, dheads, mlp_ratio, head)

    def embed(self, tokens):
        """SelfMedMAE embeds each channel-last patch with the conv, patch by patch."""
        b, n, _ = tokens.shape
        x = tokens.reshape([b * n] + list(self.patch) + [self.c])
        x = x.permute([0, self.sd + 1] + list(range(1, self.sd + 1)))
        return self.encoder.patch_embed.proj(x).reshape(b, n, -1)

    def forward(self, imgs, noise):
        b = imgs.shape[0]
        x = patchify(imgs, self.patch)
        L, P = x.shape[1], x.shape[2]
        sel = int(L * (1 - self.ratio))
        msk = L - sel
        shuffle = noise.argsort(dim=1)
        unshuffle = shuffle.argsort(dim=1)
        sx = x.gather(1, shuffle[:, :, None].expand(-1, -1, P))
        sel_x, msk_x = sx[:, :sel], sx[:, -msk:]
        e = self.encoder_pos_embed.shape[-1]
        pos = self.encoder_pos_embed.expand(b, -1, -1).gather(1, shuffle[:, :sel, None].expand(-1, -1, e))
        t = torch.cat([self.encoder.cls_token.expand(b, -1, -1), self.embed(sel_x)], 1)
        t = t + torch.cat([torch.zeros(b, 1, e), pos], 1)
        for blk in self.encoder.blocks:
            t = blk(t)
        t = self.encoder_to_decoder(self.encoder.norm(t))
        ed = t.shape[-1]
        all_x = torch.cat([t, self.mask_token.expand(b, msk, -1)], 1)
        dpos = self.decoder_pos_embed.expand(b, -1, -1).gather(1, shuffle[:, :, None].expand(-1, -1, ed))
        all_x = torch.cat([all_x[:, :1], all_x[:, 1:] + dpos], 1)
        for blk in self.decoder.blocks:
            all_x = blk(all_x)
        y = self.decoder.head(self.decoder.norm(all_x))
        pred = y[:, 1:].gather(1, unshuffle[:, :, None].expand(-1, -1, y.shape[-1]))
        mask = torch.cat([torch.zeros(b, sel), torch.ones(b, msk)], 1).gather(1, unshuffle)
        out = {"pred": pred, "mask": mask, "ids_shuffle": shuffle, "ids_restore": unshuffle, "patches": x}
        if self.loss_cfg["kind"] == "mse":
            if not self.loss_cfg["norm_pix_loss"]:
                target = x
            elif self.sd == 3:
                target = F.layer_norm(x, (P,), eps=1e-6)  # SelfMedMAE: a non-affine LayerNorm (biased variance)
            else:  # He et al.: torch.var, unbiased
                target = (x - x.mean(-1, keepdim=True)) / (x.var(-1, keepdim=True) + 1e-6) ** 0.5
            out["loss"] = F.mse_loss(y[:, -msk:], target.gather(1, shuffle[:, -msk:, None].expand(-1, -1, P)))
            m = mask[:, :, None]
            pasted = pred * m + target * (1 - m)
            rec = unpatchify(pasted, self.patch, self.grid, self.c)
            tgt = unpatchify(target, self.patch, self.grid, self.c)
            dims = tuple(range(2, 2 + self.sd))
            amp = lambda z: torch.fft.fftn(z, dim=dims, norm="ortho").abs()
            out["loss_fft"] = ((amp(rec) - amp(tgt)) ** 2).mean()
        else:
            K = self.loss_cfg["embed_dim"] // (2 * self.c)
            T = self.loss_cfg["temperature"]
            omega = 2 * math.pi / (T ** (torch.arange(K, dtype=torch.float32) / K))
            arg = msk_x[..., None] * omega  # [B, msk, P, K]
            feats = torch.stack([torch.sin(arg), torch.cos(arg)], dim=-2).flatten(2)
            out["loss"] = F.mse_loss(y[:, -msk:], feats)
        return out


def vit_cfg(sd, c, img, patch, e, depth, heads, mlp_ratio, style="timm", eps=1e-6, qkv_bias=True, cls=True, dpr=0.0):
    return {"spatial_dims": sd, "in_channels": c, "img_size": img, "patch_size": patch, "embed_dim": e,
            "depth": depth, "num_heads": heads, "mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias, "layer_norm_eps": eps,
            "cls_token": cls, "style": style, "drop_path_rate": dpr}


def mae_case(cases, name, sd, img, patch, loss, seed):
    c, e, ed = 2, 24, 12
    torch.manual_seed(seed)
    m = RefMAE(sd, c, img, patch, e, 2, 2, ed, 2, 2, 2.0, 0.75, loss).eval()
    randomize(m, seed)
    b = 2
    L = int(np.prod([i // p for i, p in zip(img, patch)]))
    imgs = f16(torch.rand([b, c] + img)) if loss["kind"] == "fourier" else f16(torch.randn([b, c] + img))
    noise = torch.rand(b, L)
    with torch.no_grad():
        out = m(imgs, noise)
    io = {"imgs": imgs.half(), "noise": noise}
    io.update(out)
    io["patches"] = out["patches"].half()  # f16-exact: a permutation of the f16-rounded input
    io["loss"] = out["loss"].reshape(1)
    if "loss_fft" in out:
        io["loss_fft"] = out["loss_fft"].reshape(1)
    save_weights(name, m)
    save_io(name, io)
    mloss = {"kind": "mse", "norm_pix_loss": loss["norm_pix_loss"], "fft_weight": 0.0} if loss["kind"] == "mse" else \
        {"kind": "fourier", "embed_dim": loss["embed_dim"], "temperature": loss["temperature"]}
    cases[name] = {"kind": "mae", "encoder": vit_cfg(sd, c, img, patch, e, 2, 2, 2.0), "decoder_embed_dim": ed,
                   "decoder_depth": 2, "decoder_num_heads": 2, "mask_ratio": 0.75, "loss": mloss}


# ---------------------------------------------------------------- UNETR references
def proj_feat(x, grid):
    b, n, e = x.shape
    nd = len(grid)
    return x.view([b] + list(grid) + [e]).permute([0, nd + 1] + list(range(1, nd + 1))).contiguous()


class TimmUnetr(nn.Module):
    def __init__(self, sd, c, k, img, e, depth, heads, mlp_ratio, f, skips):
        super().__init__()
        self.grid = [i // 16 for i in img]
        self.skips = skips
        n = int(np.prod(self.grid))
        self.encoder = Encoder(sd, c, [16] * sd, e, depth, heads, mlp_ratio)
        self.encoder.pos_embed = nn.Parameter(torch.zeros(1, 1 + n, e))
        kw = dict(spatial_dims=sd, kernel_size=3, norm_name="instance")
        self.encoder1 = UnetrBasicBlock(in_channels=c, out_channels=f, stride=1, res_block=True, **kw)
        for name, out, layers in (("encoder2", 2 * f, 2), ("encoder3", 4 * f, 1), ("encoder4", 8 * f, 0)):
            setattr(self, name, UnetrPrUpBlock(in_channels=e, out_channels=out, num_layer=layers, stride=1,
                                               upsample_kernel_size=2, conv_block=True, res_block=True, **kw))
        for name, i, o in (("decoder5", e, 8 * f), ("decoder4", 8 * f, 4 * f), ("decoder3", 4 * f, 2 * f),
                           ("decoder2", 2 * f, f)):
            setattr(self, name, UnetrUpBlock(in_channels=i, out_channels=o, upsample_kernel_size=2, res_block=True, **kw))
        self.out = UnetOutBlock(spatial_dims=sd, in_channels=f, out_channels=k)

    def forward(self, x_in):
        b = x_in.shape[0]
        t = self.encoder.patch_embed.proj(x_in).flatten(2).transpose(1, 2)
        t = torch.cat([self.encoder.cls_token.expand(b, -1, -1), t], 1) + self.encoder.pos_embed
        hidden = []
        for blk in self.encoder.blocks:
            t = blk(t)
            hidden.append(t[:, 1:])
        last = self.encoder.norm(t)[:, 1:]
        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(proj_feat(hidden[self.skips[0]], self.grid))
        enc3 = self.encoder3(proj_feat(hidden[self.skips[1]], self.grid))
        enc4 = self.encoder4(proj_feat(hidden[self.skips[2]], self.grid))
        d = self.decoder5(proj_feat(last, self.grid), enc4)
        d = self.decoder2(self.decoder3(self.decoder4(d, enc3), enc2), enc1)
        return self.out(d), last


def unetr_case(cases, name, model, cfg, x, seed):
    randomize(model, seed)
    model.eval()
    with torch.no_grad():
        if isinstance(model, UNETR):
            logits = model(x)
            last, _ = model.vit(x)
        else:
            logits, last = model(x)
    save_weights(name, model)
    save_io(name, {"x": x.half(), "logits": logits, "vit_out": last})  # x is f16-exact
    cases[name] = cfg


def main():
    cases = {}
    # MONAI UNETR 3-D: non-cubic grid (2, 1, 2), 12 blocks (fixed by MONAI), skips 3/6/9.
    torch.manual_seed(10)
    m = UNETR(in_channels=1, out_channels=2, img_size=(32, 16, 32), feature_size=2, hidden_size=12, mlp_dim=24,
              num_heads=2, proj_type="conv", spatial_dims=3)
    unetr_case(cases, "monai_unetr3d", m,
               {"kind": "unetr", "encoder": vit_cfg(3, 1, [32, 16, 32], [16] * 3, 12, 12, 2, 2.0, "monai", 1e-5, False,
                                                    False), "out_channels": 2, "feature_size": 2, "skip_layers": [3, 6, 9]},
               f16(torch.randn(1, 1, 32, 16, 32)), 11)
    # MONAI UNETR 2-D, two input channels, three classes.
    torch.manual_seed(20)
    m = UNETR(in_channels=2, out_channels=3, img_size=(32, 48), feature_size=2, hidden_size=12, mlp_dim=24,
              num_heads=3, proj_type="conv", spatial_dims=2)
    unetr_case(cases, "monai_unetr2d", m,
               {"kind": "unetr", "encoder": vit_cfg(2, 2, [32, 48], [16] * 2, 12, 12, 3, 2.0, "monai", 1e-5, False,
                                                    False), "out_channels": 3, "feature_size": 2, "skip_layers": [3, 6, 9]},
               f16(torch.randn(2, 2, 32, 48)), 21)
    # timm-style (SelfMedMAE) UNETR 3-D: cls token, LN 1e-6, qkv bias, depth 4, skips 0/2/3.
    torch.manual_seed(30)
    m = TimmUnetr(3, 2, 2, [16, 32, 16], 6, 4, 2, 2.0, 2, [0, 2, 3])
    unetr_case(cases, "timm_unetr3d", m,
               {"kind": "unetr", "encoder": vit_cfg(3, 2, [16, 32, 16], [16] * 3, 6, 4, 2, 2.0, dpr=0.1),
                "out_channels": 2, "feature_size": 2, "skip_layers": [0, 2, 3]},
               f16(torch.randn(1, 2, 16, 32, 16)), 31)
    # MAE: grids (4, 2, 3) / (4, 6), 24 tokens, 6 kept per sample.
    mae_case(cases, "mae3d_mse", 3, [16, 8, 12], [4, 4, 4], {"kind": "mse", "norm_pix_loss": True}, 40)
    mae_case(cases, "mae3d_fourier", 3, [8, 4, 6], [2, 2, 2], {"kind": "fourier", "embed_dim": 12, "temperature": 0.01}, 50)
    mae_case(cases, "mae2d_mse", 2, [16, 24], [4, 4], {"kind": "mse", "norm_pix_loss": True}, 60)
    with open(os.path.join(OUT, "cases.json"), "w") as fh:
        json.dump(cases, fh, indent=1, sort_keys=True)
        fh.write("\n")

    # ------------------------------------------------------------ op-level fixtures
    g = torch.Generator().manual_seed(70)
    ops = {"sincos3d_g4x2x3_d12": sincos_3d([4, 2, 3], 12)[0], "sincos2d_g3x4_d8": sincos_2d([3, 4], 8)[0]}
    # LayerNorm with a tiny variance, where eps 1e-6 vs 1e-5 matters.
    x = 0.5 + 3e-3 * torch.randn(3, 16, generator=g)
    w, bb = 1 + 0.1 * torch.randn(16, generator=g), 0.1 * torch.randn(16, generator=g)
    ops.update({"ln_x": x, "ln_w": w, "ln_b": bb, "ln_eps1e-6": F.layer_norm(x, (16,), w, bb, eps=1e-6)})
    # Position-table interpolation, align_corners=False, as init_unetr_from_mae does it.
    p3 = torch.randn(1, 8, 6, generator=g)
    ops["interp3d_in"] = p3
    ops["interp3d_out"] = F.interpolate(p3.transpose(1, 2).reshape(1, 6, 2, 2, 2), size=(4, 4, 4), mode="trilinear",
                                        align_corners=False).reshape(1, 6, 64).transpose(1, 2)
    p2 = torch.randn(1, 6, 4, generator=g)
    ops["interp2d_in"] = p2
    ops["interp2d_out"] = F.interpolate(p2.transpose(1, 2).reshape(1, 4, 2, 3), size=(4, 6), mode="bicubic",
                                        align_corners=False).reshape(1, 4, 24).transpose(1, 2)
    # The MAE sincos table of a 2^3 grid (width 6) resampled to 4^3: what init_unetr_from_mae must produce.
    ops["mae_pos_2to4"] = F.interpolate(sincos_3d([2, 2, 2], 6).transpose(1, 2).reshape(1, 6, 2, 2, 2), size=(4, 4, 4),
                                        mode="trilinear", align_corners=False).reshape(1, 6, 64).transpose(1, 2)
    # DiceCE: softmax (2-D and 3-D), single-channel sigmoid (MONAI DiceCELoss), multi-label (DiceLoss + BCE).
    lg = torch.randn(2, 3, 6, 5, generator=g)
    lab = torch.randint(0, 3, (2, 1, 6, 5), generator=g).float()
    ops.update({"dce_sm2d_logits": lg, "dce_sm2d_target": lab,
                "dce_sm2d_loss": DiceCELoss(to_onehot_y=True, softmax=True)(lg, lab).reshape(1)})
    lg = torch.randn(1, 4, 4, 5, 3, generator=g)
    lab = torch.randint(0, 4, (1, 1, 4, 5, 3), generator=g).float()
    ops.update({"dce_sm3d_logits": lg, "dce_sm3d_target": lab,
                "dce_sm3d_loss": DiceCELoss(to_onehot_y=True, softmax=True)(lg, lab).reshape(1)})
    lg = torch.randn(2, 1, 6, 5, generator=g)
    lab = torch.randint(0, 2, (2, 1, 6, 5), generator=g).float()
    ops.update({"dce_sg1_logits": lg, "dce_sg1_target": lab, "dce_sg1_loss": DiceCELoss(sigmoid=True)(lg, lab).reshape(1)})
    lg = torch.randn(2, 3, 4, 4, 3, generator=g)
    lab = torch.randint(0, 2, (2, 3, 4, 4, 3), generator=g).float()
    multi = DiceLoss(sigmoid=True)(lg, lab) + F.binary_cross_entropy_with_logits(lg, lab)
    ops.update({"dce_sg3_logits": lg, "dce_sg3_target": lab, "dce_sg3_loss": multi.reshape(1)})
    save_file({k: v.contiguous() for k, v in ops.items()}, os.path.join(OUT, "ops.safetensors"))


if __name__ == "__main__":
    main()
