#!/usr/bin/env python3
"""Fixtures for `medmae-train import` (read by models/tests/import.rs and trainer/tests/import.rs).

Each checkpoint here is written by the REAL upstream class, in the format its project saves it, so the Rust import
is tested against what users actually have; nothing of the upstream code is copied into medmae. Run once, from the
repository root, with the reference packages (`scripts/setup --with-references`) and checkouts of the two
repositories that are not on PyPI:

    $MEDMAE_PYTHON models/tests/import_fixtures/gen_import_fixtures.py --he-mae PATH/TO/facebookresearch/mae \\
        --selfmedmae PATH/TO/cvlab-stonybrook/SelfMedMAE

Pinned: torch 2.13.0, monai 1.6.1, timm 0.4.12 (SelfMedMAE's version), numpy 2.x, facebookresearch/mae at
efb2a8062c206524e35e47d04501ed4f544c0ae8 and SelfMedMAE at 21f38b1ff8fb9ce3948651c1e356f3cc3fddd45a (the sources used
are checked by SHA-256 below). All seeds are fixed.

Two compatibility shims, both for He et al.'s code written against timm 0.3.2 / numpy < 1.24: timm 0.4.12's `Block`
no longer takes `qk_scale` (He et al. pass `qk_scale=None`, which is the default scale head_dim^-0.5 anyway), so the
keyword is dropped; and `np.float` (removed from numpy) is set to the builtin `float` (the same float64).

Files written next to this script:
  monai_unetr_conv.pth          MONAI UNETR 3-D, proj_type="conv": `torch.save(model.half().state_dict())` (f16 keeps
                                the file small; the reference runs in f32 on the same f16-exact values)
  monai_unetr_perceptron.safetensors
                                MONAI UNETR 2-D, proj_type="perceptron", qkv_bias=True: safetensors of the state dict
  selfmedmae_mae3d.pth.tar      SelfMedMAE MAE3D as its trainer saves it: {epoch, arch, state_dict (DDP `module.`
                                prefix), optimizer, scaler}
  he_mae2d.pth                  He et al. MaskedAutoencoderViT as main_pretrain.py saves it: {model, optimizer, epoch,
                                scaler, args (an argparse.Namespace)}
  <case>.io.safetensors         the test input (and masking noise) with the upstream forward outputs
  dtypes.pt / dtypes.expected.safetensors
                                reader checks: every storage dtype, a transposed view, two views of one storage
  module.pt / module.expected.safetensors
                                a whole pickled nn.Module (torch.save(model)) and its state dict
  MANIFEST.json                 versions, upstream commits and file hashes
"""
import argparse
import hashlib
import json
import os
import sys
from functools import partial

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

OUT = os.path.dirname(os.path.abspath(__file__))
torch.set_num_threads(1)

VERSIONS = {"torch": "2.13.0", "monai": "1.6.1", "timm": "0.4.12"}
HE_COMMIT = "efb2a8062c206524e35e47d04501ed4f544c0ae8"
SELFMEDMAE_COMMIT = "21f38b1ff8fb9ce3948651c1e356f3cc3fddd45a"
UPSTREAM_SHA256 = {
    "he": {"models_mae.py": None, "util/pos_embed.py": None},
    "selfmedmae": {"lib/models/mae3d.py": None, "lib/networks/mae_vit.py": None,
                   "lib/networks/patch_embed_layers.py": None},
}


def sha256(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def check_versions():
    import monai
    import timm
    found = {"torch": torch.__version__.split("+")[0], "monai": monai.__version__, "timm": timm.__version__}
    if found != VERSIONS:
        sys.exit(f"gen_import_fixtures: need {VERSIONS}, found {found}")
    return found


def randomize(model, seed):
    """Give every trainable parameter a random, non-trivial value (biases, norms and tokens included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if name.endswith("weight") and p.dim() >= 2:
                v = torch.randn(p.shape, generator=g) / np.sqrt(p.numel() / p.shape[0])
            elif name.endswith("weight"):
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif name.endswith("bias"):
                v = 0.1 * torch.randn(p.shape, generator=g)
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(v)


def save_io(case, tensors):
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, os.path.join(OUT, f"{case}.io.safetensors"))


# ---------------------------------------------------------------- MONAI UNETR (pip monai)
def monai_cases():
    from monai.networks.nets import UNETR
    # 3-D, conv patch embedding, a non-cubic grid (2, 1, 1) so the image size must come from --img-size.
    torch.manual_seed(1)
    m = UNETR(in_channels=1, out_channels=2, img_size=(32, 16, 16), feature_size=1, hidden_size=6, mlp_dim=12,
              num_heads=2, proj_type="conv", spatial_dims=3).eval()
    randomize(m, 2)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(p.half().float())
    x = torch.randn(1, 1, 32, 16, 16, generator=torch.Generator().manual_seed(3)).half()
    with torch.no_grad():
        logits = m(x.float())
    torch.save({k: v.half() for k, v in m.state_dict().items()}, os.path.join(OUT, "monai_unetr_conv.pth"))
    save_io("monai_unetr_conv", {"x": x, "logits": logits})

    # 2-D, perceptron patch embedding (Rearrange + Linear), qkv bias on, two channels, grid (2, 3).
    torch.manual_seed(4)
    m = UNETR(in_channels=2, out_channels=3, img_size=(32, 48), feature_size=1, hidden_size=6, mlp_dim=12,
              num_heads=2, proj_type="perceptron", qkv_bias=True, spatial_dims=2).eval()
    randomize(m, 5)
    x = torch.randn(1, 2, 32, 48, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        logits = m(x)
    save_file({k: v.contiguous() for k, v in m.state_dict().items()},
              os.path.join(OUT, "monai_unetr_perceptron.safetensors"))
    save_io("monai_unetr_perceptron", {"x": x, "logits": logits})


# ---------------------------------------------------------------- SelfMedMAE MAE3D (repository checkout)
def selfmedmae_case(root):
    import importlib.util
    sys.path.insert(0, root)
    # Load lib/models/mae3d.py by path: lib/models/__init__.py also imports the 2-D MAE and UNETR3D modules, which
    # need more than MAE3D does (a `networks` top-level package, `requests`).
    spec = importlib.util.spec_from_file_location("selfmedmae_mae3d", os.path.join(root, "lib/models/mae3d.py"))
    mae3d = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mae3d)
    MAE3D = mae3d.MAE3D
    from lib.networks.mae_vit import MAEViTDecoder, MAEViTEncoder

    args = argparse.Namespace(input_size=(16, 8, 8), patch_size=4, in_chans=2, pos_embed_type="sincos",
                              encoder_embed_dim=12, decoder_embed_dim=6, patchembed="PatchEmbed3D",
                              encoder_depth=2, encoder_num_heads=2, decoder_depth=1, decoder_num_heads=2,
                              mask_ratio=0.75)
    torch.manual_seed(7)
    m = MAE3D(MAEViTEncoder, MAEViTDecoder, args).eval()
    randomize(m, 8)
    imgs = torch.randn(2, 2, 16, 8, 8, generator=torch.Generator().manual_seed(9))
    length = 4 * 2 * 2
    # MAE3D draws its shuffle with torch.rand(B, L) as the first random op of forward: replay it.
    torch.manual_seed(10)
    noise = torch.rand(2, length)
    captured = {}
    m.decoder.register_forward_hook(lambda mod, inp, out: captured.update(dec=out))
    torch.manual_seed(10)
    with torch.no_grad():
        loss = m(imgs)
    # The decoder ran on [cls, kept..., masked...] in shuffled order; put its outputs back in token order.
    dec = captured["dec"][:, 1:]
    restore = noise.argsort(1).argsort(1)
    pred = dec.gather(1, restore[:, :, None].expand(-1, -1, dec.shape[-1]))
    # SelfMedMAE's trainer saves the (DDP-wrapped) model's state dict with optimizer and AMP scaler state.
    ddp_style = {f"module.{k}": v for k, v in m.state_dict().items()}
    opt = torch.optim.AdamW(m.parameters(), lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    torch.save({"epoch": 3, "arch": "mae3d_base", "state_dict": ddp_style, "optimizer": opt.state_dict(),
                "scaler": scaler}, os.path.join(OUT, "selfmedmae_mae3d.pth.tar"))
    save_io("selfmedmae_mae3d", {"imgs": imgs, "noise": noise, "pred": pred, "loss": loss.reshape(1)})
    sys.path.remove(root)


# ---------------------------------------------------------------- He et al. MAE-2D (repository checkout)
def he_case(root):
    import timm.models.vision_transformer as tvit

    class Block(tvit.Block):
        def __init__(self, *a, qk_scale=None, **kw):
            assert qk_scale is None
            super().__init__(*a, **kw)

    tvit.Block = Block
    if not hasattr(np, "float"):
        np.float = float
    sys.path.insert(0, root)
    from models_mae import MaskedAutoencoderViT

    torch.manual_seed(11)
    m = MaskedAutoencoderViT(img_size=16, patch_size=4, in_chans=3, embed_dim=24, depth=2, num_heads=2,
                             decoder_embed_dim=12, decoder_depth=1, decoder_num_heads=2, mlp_ratio=2.0,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6), norm_pix_loss=True).eval()
    randomize(m, 12)
    imgs = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(13))
    torch.manual_seed(14)
    noise = torch.rand(2, 16)
    torch.manual_seed(14)
    with torch.no_grad():
        loss, pred, mask = m(imgs, mask_ratio=0.75)
    keep = noise.argsort(1)[:, :4]
    assert torch.equal(mask.gather(1, keep), torch.zeros(2, 4)), "noise replay failed"
    args = argparse.Namespace(model="mae_vit_tiny", input_size=16, mask_ratio=0.75, norm_pix_loss=True,
                              weight_decay=0.05, blr=1.5e-4, epochs=400, output_dir="./output_dir")
    opt = torch.optim.AdamW(m.parameters(), lr=1.5e-4, betas=(0.9, 0.95))
    scaler = torch.amp.GradScaler("cpu").state_dict()
    torch.save({"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 399, "scaler": scaler,
                "args": args}, os.path.join(OUT, "he_mae2d.pth"))
    save_io("he_mae2d", {"imgs": imgs, "noise": noise, "pred": pred, "mask": mask, "loss": loss.reshape(1)})
    sys.path.remove(root)


# ---------------------------------------------------------------- reader checks
def dtypes_case():
    g = torch.Generator().manual_seed(15)
    base = torch.randn(4, 6, generator=g)
    shared = torch.arange(12, dtype=torch.float32)
    sd = {
        "f32": base,
        "f64": base.double(),
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "i64": torch.arange(-3, 5, dtype=torch.int64).reshape(2, 4),
        "i32": torch.tensor([7, -8, 9], dtype=torch.int32),
        "i16": torch.tensor([-2, 3], dtype=torch.int16),
        "i8": torch.tensor([-5, 6], dtype=torch.int8),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),
        "view_a": shared[2:8].reshape(2, 3),
        "view_b": shared[5:],
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    torch.save(sd, os.path.join(OUT, "dtypes.pt"))
    # A whole pickled module (torch.save(model)): parameters, a persistent and a non-persistent buffer, nesting.
    torch.manual_seed(16)
    mod = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.LayerNorm(3)))
    mod.register_buffer("counter", torch.tensor([4.0]))
    mod.register_buffer("scratch", torch.zeros(2), persistent=False)
    torch.save(mod, os.path.join(OUT, "module.pt"))
    save_file({k: v.contiguous().clone() for k, v in mod.state_dict().items()},
              os.path.join(OUT, "module.expected.safetensors"))
    expected = {k: (v.float() if v.dtype in (torch.float16, torch.bfloat16, torch.float64) else v).contiguous().clone()
                for k, v in sd.items() if v.dtype != torch.bool}
    expected["bool"] = sd["bool"].to(torch.uint8)
    save_file(expected, os.path.join(OUT, "dtypes.expected.safetensors"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--he-mae", required=True, help="checkout of github.com/facebookresearch/mae")
    ap.add_argument("--selfmedmae", required=True, help="checkout of github.com/cvlab-stonybrook/SelfMedMAE")
    a = ap.parse_args()
    found = check_versions()
    hashes = {}
    for name, root in (("he", a.he_mae), ("selfmedmae", a.selfmedmae)):
        hashes[name] = {f: sha256(os.path.join(root, f)) for f in UPSTREAM_SHA256[name]}
    pinned = os.path.join(OUT, "MANIFEST.json")
    if os.path.exists(pinned):
        with open(pinned) as fh:
            want = json.load(fh)["upstream_sha256"]
        if want != hashes:
            sys.exit(f"gen_import_fixtures: upstream sources differ from the pinned commits: {hashes} vs {want}")
    monai_cases()
    selfmedmae_case(os.path.abspath(a.selfmedmae))
    he_case(os.path.abspath(a.he_mae))
    dtypes_case()
    files = sorted(f for f in os.listdir(OUT) if not f.endswith((".py", ".json")))
    manifest = {"versions": found, "numpy": np.__version__,
                "upstream": {"facebookresearch/mae": HE_COMMIT, "cvlab-stonybrook/SelfMedMAE": SELFMEDMAE_COMMIT},
                "upstream_sha256": hashes, "files": {f: sha256(os.path.join(OUT, f)) for f in files}}
    with open(pinned, "w") as fh:
        json.dump(manifest, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main()
