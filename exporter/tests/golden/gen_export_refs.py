#!/usr/bin/env python3
"""Golden fixtures for the medmae-export parity tests (exporter/tests/golden/<case>/).

Run once from the repository root, with the reference venv that has torch 2.13 + monai 1.6.1 + safetensors + numpy:

    $MEDMAE_PYTHON exporter/tests/golden/gen_export_refs.py

Each case directory gets a checkpoint the exporter reads (`model.safetensors` with exactly the names and shapes of
`spec::expected_weights`, and `model.json` = `spec::ModelCard`), the model input(s) as `.npy`, and the outputs that
PyTorch/MONAI compute from them. The checked-in files are the contract: regenerate only when the model definition
changes, and review the diff.

The references are independent of the exporter: MONAI's own `UNETR` class (monai variant), MONAI's `TransformerBlock`
and UNETR decoder blocks with SelfMedMAE's encoder glue (timm variant), and SelfMedMAE's MAE-3D forward (patchify
channel-last, shuffle, keep the first `len_keep`, cls token with a zero position embedding, decoder in shuffled order)
for the masked reconstructor. Weights are rounded to float16 and stored as F16 (the exporter widens them losslessly)
to keep each fixture set small; the reference runs in float64 on the same rounded values.
"""

import json
import os
import sys

import numpy as np
import torch
from monai.networks.blocks.dynunet_block import UnetOutBlock
from monai.networks.blocks.transformerblock import TransformerBlock
from monai.networks.blocks.unetr_block import UnetrBasicBlock, UnetrPrUpBlock, UnetrUpBlock
from monai.networks.nets import UNETR
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
TIMM_NAMES = {"attn.out_proj": "attn.proj", "mlp.linear1": "mlp.fc1", "mlp.linear2": "mlp.fc2"}


def vit_cfg(sd, cin, img, patch, embed, depth, heads, style="timm", mlp_ratio=4.0):
    timm = style == "timm"
    return {
        "spatial_dims": sd, "in_channels": cin, "img_size": img, "patch_size": patch, "embed_dim": embed,
        "depth": depth, "num_heads": heads, "mlp_ratio": mlp_ratio, "qkv_bias": timm,
        "layer_norm_eps": 1e-6 if timm else 1e-5, "cls_token": timm, "style": style, "drop_path_rate": 0.0,
    }


def card(model, labels=(), roi=None, activation="softmax"):
    return {
        "format_version": 1, "medmae_version": "0.1.0", "model": model,
        "preprocessing": [
            {"name": "Orientation", "axcodes": "RAS"},
            {"name": "ScaleIntensityRange", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True},
        ],
        "labels": list(labels),
        "inference": None if roi is None else {
            "roi_size": roi, "overlap": 0.5, "blend": "gaussian", "sw_batch_size": 4, "activation": activation},
    }


def randomize(module, gen):
    """Give every parameter a non-trivial value (LayerNorm weights away from 1, biases and tokens away from 0,
    weights scaled by 1/sqrt(fan-in) so activations stay O(1)), then round to float16 so the F16 checkpoint is
    exact."""
    with torch.no_grad():
        for mod in module.modules():
            for pname, p in mod.named_parameters(recurse=False):
                if isinstance(mod, torch.nn.LayerNorm) and pname == "weight":
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
                elif p.dim() == 1 or pname in ("cls_token", "pos_embed", "encoder_pos_embed", "decoder_pos_embed",
                                               "mask_token", "position_embeddings"):
                    p.copy_(0.3 * torch.randn(p.shape, generator=gen))
                else:
                    transposed = isinstance(mod, (torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d))
                    fan_in = p.shape[0] if transposed else int(np.prod(p.shape[1:]))
                    p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
                p.copy_(p.half().float())


def save_case(name, state, model_json, arrays):
    out = os.path.join(HERE, name)
    os.makedirs(out, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}
    save_file(state, os.path.join(out, "model.safetensors"))
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(model_json, f, indent=1)
    for key, arr in arrays.items():
        np.save(os.path.join(out, f"{key}.npy"), np.ascontiguousarray(arr))
    size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print(f"{name}: {len(state)} tensors, {size / 1024:.0f} KiB")


def to_timm_names(state, prefix):
    """MONAI TransformerBlock names → timm names under `prefix`, dropping MONAI's unused cross-attention norm."""
    out = {}
    for k, v in state.items():
        if "norm_cross_attn" in k:
            continue
        for a, b in TIMM_NAMES.items():
            k = k.replace(a, b)
        out[f"{prefix}{k}"] = v
    return out


class TimmVit(torch.nn.Module):
    """SelfMedMAE's ViT backbone built from MONAI's TransformerBlock (timm eps, qkv bias, cls token)."""

    def __init__(self, c):
        super().__init__()
        conv = torch.nn.Conv3d if c["spatial_dims"] == 3 else torch.nn.Conv2d
        e, n = c["embed_dim"], int(np.prod([i // p for i, p in zip(c["img_size"], c["patch_size"])]))
        self.patch_embed = torch.nn.Module()
        self.patch_embed.proj = conv(c["in_channels"], e, c["patch_size"], stride=c["patch_size"])
        self.cls_token = torch.nn.Parameter(torch.zeros(1, 1, e))
        self.pos_embed = torch.nn.Parameter(torch.zeros(1, 1 + n, e))
        mlp = round(e * c["mlp_ratio"])
        self.blocks = torch.nn.ModuleList(
            TransformerBlock(e, mlp, c["num_heads"], qkv_bias=True) for _ in range(c["depth"]))
        self.norm = torch.nn.LayerNorm(e, eps=1e-6)
        for b in self.blocks:
            b.norm1.eps = b.norm2.eps = 1e-6

    def tokens(self, x):
        return self.patch_embed.proj(x).flatten(2).transpose(1, 2)

    def forward(self, x):
        x = self.tokens(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        hidden = []
        for b in self.blocks:
            x = b(x)
            hidden.append(x[:, 1:])
        return self.norm(x)[:, 1:], hidden

    def state(self):
        return to_timm_names({k: v for k, v in self.state_dict().items()}, "encoder.")


class TimmUnetr(torch.nn.Module):
    """SelfMedMAE's UNETR3D: timm ViT + MONAI's UNETR decoder blocks, skips from configurable block indices."""

    def __init__(self, u):
        super().__init__()
        c = u["encoder"]
        sd, e, f = c["spatial_dims"], c["embed_dim"], u["feature_size"]
        self.grid = [i // p for i, p in zip(c["img_size"], c["patch_size"])]
        self.skips = u["skip_layers"]
        self.vit = TimmVit(c)
        kw = dict(spatial_dims=sd, kernel_size=3, norm_name="instance", res_block=True)
        self.encoder1 = UnetrBasicBlock(in_channels=c["in_channels"], out_channels=f, stride=1, **kw)
        self.encoder2 = UnetrPrUpBlock(in_channels=e, out_channels=2 * f, num_layer=2, stride=1,
                                       upsample_kernel_size=2, conv_block=True, **kw)
        self.encoder3 = UnetrPrUpBlock(in_channels=e, out_channels=4 * f, num_layer=1, stride=1,
                                       upsample_kernel_size=2, conv_block=True, **kw)
        self.encoder4 = UnetrPrUpBlock(in_channels=e, out_channels=8 * f, num_layer=0, stride=1,
                                       upsample_kernel_size=2, conv_block=True, **kw)
        self.decoder5 = UnetrUpBlock(in_channels=e, out_channels=8 * f, upsample_kernel_size=2, **kw)
        self.decoder4 = UnetrUpBlock(in_channels=8 * f, out_channels=4 * f, upsample_kernel_size=2, **kw)
        self.decoder3 = UnetrUpBlock(in_channels=4 * f, out_channels=2 * f, upsample_kernel_size=2, **kw)
        self.decoder2 = UnetrUpBlock(in_channels=2 * f, out_channels=f, upsample_kernel_size=2, **kw)
        self.out = UnetOutBlock(spatial_dims=sd, in_channels=f, out_channels=u["out_channels"])

    def proj(self, x):
        x = x.reshape(x.shape[0], *self.grid, x.shape[-1])
        return x.permute(0, x.dim() - 1, *range(1, x.dim() - 1)).contiguous()

    def forward(self, x_in):
        x, hidden = self.vit(x_in)
        enc1 = self.encoder1(x_in)
        enc2 = self.encoder2(self.proj(hidden[self.skips[0]]))
        enc3 = self.encoder3(self.proj(hidden[self.skips[1]]))
        enc4 = self.encoder4(self.proj(hidden[self.skips[2]]))
        dec3 = self.decoder5(self.proj(x), enc4)
        dec2 = self.decoder4(dec3, enc3)
        dec1 = self.decoder3(dec2, enc2)
        return self.out(self.decoder2(dec1, enc1))

    def state(self):
        s = self.vit.state()
        s.update({k: v for k, v in self.state_dict().items() if not k.startswith("vit.")})
        return s


def unetr_timm_case(name, gen, sd, cin, img, embed, depth, heads, feature, labels, skips, batch):
    u = {"kind": "unetr", "encoder": vit_cfg(sd, cin, img, [16] * sd, embed, depth, heads),
         "out_channels": len(labels), "feature_size": feature, "skip_layers": skips}
    net = TimmUnetr(u)
    randomize(net, gen)
    net = net.double().eval()
    x = torch.randn(batch, cin, *img, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
    save_case(name, net.state(), card(u, labels, img), {"input": x.float().numpy(), "logits": y.float().numpy()})


def unetr_monai_case(name, gen, sd, cin, img, embed, heads, mlp, feature, labels, batch):
    net = UNETR(in_channels=cin, out_channels=len(labels), img_size=img, feature_size=feature, hidden_size=embed,
                mlp_dim=mlp, num_heads=heads, spatial_dims=sd, qkv_bias=False)
    randomize(net, gen)
    net = net.double().eval()
    state = {k: v for k, v in net.state_dict().items() if "norm_cross_attn" not in k}
    enc = vit_cfg(sd, cin, img, [16] * sd, embed, 12, heads, style="monai", mlp_ratio=mlp / embed)
    u = {"kind": "unetr", "encoder": enc, "out_channels": len(labels), "feature_size": feature,
         "skip_layers": [3, 6, 9]}
    x = torch.randn(batch, cin, *img, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
    save_case(name, state, card(u, labels, img), {"input": x.float().numpy(), "logits": y.float().numpy()})


class Mae(torch.nn.Module):
    """SelfMedMAE MAE-3D (and its 2-D analogue): per-patch conv embedding of channel-last patch vectors."""

    def __init__(self, m):
        super().__init__()
        c = m["encoder"]
        self.c = c
        self.patch, self.cin = c["patch_size"], c["in_channels"]
        self.grid = [i // p for i, p in zip(c["img_size"], c["patch_size"])]
        n, e, ed = int(np.prod(self.grid)), c["embed_dim"], m["decoder_embed_dim"]
        self.encoder = TimmVit(dict(c, img_size=c["patch_size"]))
        self.encoder_pos_embed = torch.nn.Parameter(torch.zeros(1, n, e))
        self.encoder_to_decoder = torch.nn.Linear(e, ed)
        self.mask_token = torch.nn.Parameter(torch.zeros(1, 1, ed))
        self.decoder_pos_embed = torch.nn.Parameter(torch.zeros(1, n, ed))
        self.dec_blocks = torch.nn.ModuleList(
            TransformerBlock(ed, round(ed * c["mlp_ratio"]), m["decoder_num_heads"], qkv_bias=True)
            for _ in range(m["decoder_depth"]))
        for b in self.dec_blocks:
            b.norm1.eps = b.norm2.eps = 1e-6
        self.dec_norm = torch.nn.LayerNorm(ed, eps=1e-6)
        self.head = torch.nn.Linear(ed, head_dim(m))

    def patchify(self, x):
        """[B, C, *img] → [B, L, prod(patch)·C], channel-last inside a token (SelfMedMAE)."""
        b, sd = x.shape[0], len(self.grid)
        shape = [b, self.cin]
        for g, p in zip(self.grid, self.patch):
            shape += [g, p]
        perm = [0] + [2 + 2 * i for i in range(sd)] + [3 + 2 * i for i in range(sd)] + [1]
        return x.reshape(shape).permute(perm).reshape(b, int(np.prod(self.grid)), -1)

    def embed(self, patches):
        """SelfMedMAE's PatchEmbed3D on patch vectors: each token is a one-patch image through the conv."""
        b, length, _ = patches.shape
        img = patches.reshape(b * length, *self.patch, self.cin)
        img = img.permute(0, img.dim() - 1, *range(1, img.dim() - 1))
        return self.encoder.patch_embed.proj(img).reshape(b, length, -1)

    def encode(self, patches, pos):
        x = self.embed(patches)
        cls = self.encoder.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + torch.cat([torch.zeros_like(pos[:, :1]), pos], dim=1)
        hidden = []
        for blk in self.encoder.blocks:
            x = blk(x)
            hidden.append(x[:, 1:])
        return self.encoder.norm(x), hidden

    def features(self, x):
        """Encoder on all patches (no masking): final-normed patch tokens and per-block patch tokens."""
        b = x.shape[0]
        tokens, hidden = self.encode(self.patchify(x), self.encoder_pos_embed.expand(b, -1, -1))
        return tokens[:, 1:], hidden

    def reconstruct(self, x, shuffle, len_keep):
        """SelfMedMAE's masked forward for given shuffle indices; predictions returned in natural token order."""
        b, ed = x.shape[0], self.mask_token.shape[-1]
        patches = self.patchify(x)
        length = patches.shape[1]
        unshuffle = shuffle.argsort(dim=1)

        def gather(t, idx):
            return t.gather(1, idx[:, :, None].expand(-1, -1, t.shape[-1]))

        keep = shuffle[:, :len_keep]
        sel = gather(patches, keep)
        sel_pos = gather(self.encoder_pos_embed.expand(b, -1, -1), keep)
        enc, _ = self.encode(sel, sel_pos)
        y = self.encoder_to_decoder(enc)
        y = torch.cat([y, self.mask_token.expand(b, length - len_keep, -1)], dim=1)
        dec_pos = gather(self.decoder_pos_embed.expand(b, -1, ed), shuffle)
        y = torch.cat([y[:, :1], y[:, 1:] + dec_pos], dim=1)
        for blk in self.dec_blocks:
            y = blk(y)
        y = self.head(self.dec_norm(y))
        return gather(y[:, 1:], unshuffle)

    def state(self):
        s = self.encoder.state()
        del s["encoder.pos_embed"]  # the one-patch ViT's own table; MAE uses encoder_pos_embed
        s["encoder_pos_embed"] = self.encoder_pos_embed
        s["encoder_to_decoder.weight"] = self.encoder_to_decoder.weight
        s["encoder_to_decoder.bias"] = self.encoder_to_decoder.bias
        s["mask_token"] = self.mask_token
        s["decoder_pos_embed"] = self.decoder_pos_embed
        s.update(to_timm_names({k: v for k, v in self.dec_blocks.state_dict().items()}, "decoder.blocks."))
        s["decoder.norm.weight"] = self.dec_norm.weight
        s["decoder.norm.bias"] = self.dec_norm.bias
        s["decoder.head.weight"] = self.head.weight
        s["decoder.head.bias"] = self.head.bias
        return s


def head_dim(m):
    pv = int(np.prod(m["encoder"]["patch_size"]))
    loss = m["loss"]
    return pv * (m["encoder"]["in_channels"] if loss["kind"] == "mse" else loss["embed_dim"])


def mae_case(name, gen, sd, cin, img, patch, embed, depth, heads, dec, loss, batch):
    m = {"kind": "mae", "encoder": vit_cfg(sd, cin, img, patch, embed, depth, heads),
         "decoder_embed_dim": dec[0], "decoder_depth": dec[1], "decoder_num_heads": dec[2], "mask_ratio": 0.75,
         "loss": loss}
    net = Mae(m)
    randomize(net, gen)
    net = net.double().eval()
    x = torch.randn(batch, cin, *img, generator=gen, dtype=torch.float64)
    length = int(np.prod(net.grid))
    len_keep = int(length * (1 - 0.75))
    shuffle = torch.stack([torch.randperm(length, generator=gen) for _ in range(batch)])
    mask = torch.ones(batch, length)
    mask.scatter_(1, shuffle[:, :len_keep], 0.0)
    with torch.no_grad():
        feats, hidden = net.features(x)
        pred = net.reconstruct(x, shuffle, len_keep)
    arrays = {"input": x.float().numpy(), "features": feats.float().numpy(), "mask": mask.numpy(),
              "pred": pred.float().numpy()}
    for i, h in enumerate(hidden):
        arrays[f"hidden_state_{i}"] = h.float().numpy()
    save_case(name, net.state(), card(m), arrays)


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(20240611)
    # SelfMedMAE UNETR3D: non-cubic roi (grid 3x2x1) so a wrong token→volume axis order cannot pass.
    unetr_timm_case("unetr3d_timm", gen, 3, 1, [48, 32, 16], 16, 4, 4, 3, ["background", "organ"], [1, 2, 3], 1)
    unetr_timm_case("unetr2d_timm", gen, 2, 2, [64, 48], 24, 4, 4, 4, ["background", "liver", "tumor"],
                    [0, 2, 3], 2)
    unetr_monai_case("unetr2d_monai", gen, 2, 1, [32, 48], 24, 4, 96, 4, ["background", "organ"], 1)
    mae_case("mae3d", gen, 3, 2, [32, 24, 8], [8, 8, 4], 48, 2, 4, (24, 2, 2), {"kind": "mse",
             "norm_pix_loss": True, "fft_weight": 0.0}, 2)
    mae_case("mae2d", gen, 2, 1, [32, 24], [8, 8], 32, 2, 2, (16, 1, 2), {"kind": "fourier", "embed_dim": 24,
             "temperature": 0.01}, 1)


if __name__ == "__main__":
    sys.exit(main())
