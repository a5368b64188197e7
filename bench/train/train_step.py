"""PyTorch reference for bench/train: time training steps (zero_grad, forward, loss, loss.item(), backward, AdamW).

Models (arguments mirror train_step.rs):
- unetr: MONAI's UNETR with DiceCELoss(to_onehot_y, softmax), the fine-tuning step;
- mae: the masked autoencoder written here from its published formulation (SelfMedMAE MAE-3D / He et al. MAE-2D):
  channel-last patchify, per-sample masking by argsort of uniform noise (75 %), linear patch embedding of the
  visible patches plus the fixed sin-cos table, cls token with a zero position, pre-norm blocks (LayerNorm eps 1e-6,
  fused qkv with bias, scaled-dot-product attention, exact GELU MLP), final norm; decoder: linear to the decoder
  width, mask tokens, unshuffle, sin-cos table, blocks, norm, linear head; loss: MSE against per-patch normalised
  pixels (biased variance in 3-D as SelfMedMAE, unbiased in 2-D as He et al.) averaged over removed patches.
  He et al. embed every patch before masking; embedding only the visible ones gives the same numbers with a quarter
  of that matmul, so this reference takes the cheaper order.
AdamW: torch.optim.AdamW defaults (on CPU the per-parameter loop), betas (0.9, 0.95), weight decay 0.05 except on
biases, norms, position tables and tokens (as medmae's groups).

Usage: $MEDMAE_PYTHON bench/train/train_step.py --model unetr --roi 32 --hidden 96 --heads 4 --feature 8 --batch 2 --classes 3
Needs torch and monai (scripts/setup --with-references). Prints one JSON line: {"step_ms": [...], ...}.
With --callgrind-lib LIB (a build of callgrind_mark.c, see bench/train/profile) the timed steps are bracketed by
callgrind's START/STOP_INSTRUMENTATION, as in train_step.rs.
"""
import argparse
import ctypes
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--model", choices=["unetr", "mae"], default="unetr")
p.add_argument("--dims", type=int, default=3)
p.add_argument("--roi", type=int, required=True)
p.add_argument("--patch", type=int, default=16)
p.add_argument("--hidden", type=int, required=True)
p.add_argument("--depth", type=int, default=12)
p.add_argument("--heads", type=int, required=True)
p.add_argument("--feature", type=int, default=16)
p.add_argument("--classes", type=int, default=2)
p.add_argument("--dec-hidden", type=int, default=384)
p.add_argument("--dec-depth", type=int, default=8)
p.add_argument("--dec-heads", type=int, default=12)
p.add_argument("--batch", type=int, required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--callgrind-lib", default=None)
p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (scripts/gpu-check)")
p.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA only)")
a = p.parse_args()
dev = torch.device(a.device)
if a.amp and dev.type != "cuda":
    p.error("--amp needs a CUDA device")


class Block(nn.Module):
    """Pre-norm transformer block: x + proj(attn(norm1 x)), then x + fc2(gelu(fc1(norm2 x)))."""

    def __init__(self, dim, heads, eps=1e-6):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        b, n, e = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, e))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


def sincos(grid, dim):
    """[1, N, dim] fixed table: 3-D blocks (h, w, d) with dim/6 frequencies; 2-D blocks (column, row), dim/4."""
    axes = [torch.arange(g, dtype=torch.float32) for g in grid]
    coords = [c.reshape(-1) for c in torch.meshgrid(*axes, indexing="ij")]
    if len(grid) == 2:
        coords = coords[::-1]
    k = dim // (2 * len(grid))
    omega = 1.0 / 10000 ** (torch.arange(k, dtype=torch.float32) / k)
    parts = []
    for c in coords:
        arg = c[:, None] * omega[None]
        parts += [arg.sin(), arg.cos()]
    return torch.cat(parts, 1)[None]


class MAE(nn.Module):
    def __init__(self, dims, roi, patch, e, depth, heads, ed, ddepth, dheads):
        super().__init__()
        self.dims, self.patch = dims, patch
        self.grid = [roi // patch] * dims
        self.length = math.prod(self.grid)
        pv = patch ** dims
        self.patch_embed = nn.Linear(pv, e)
        self.cls_token = nn.Parameter(torch.randn(1, 1, e) * 0.02)
        self.register_buffer("pos", sincos(self.grid, e))
        self.encoder = nn.ModuleList(Block(e, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(e, eps=1e-6)
        self.encoder_to_decoder = nn.Linear(e, ed)
        self.mask_token = nn.Parameter(torch.randn(1, 1, ed) * 0.02)
        self.register_buffer("dec_pos", sincos(self.grid, ed))
        self.decoder = nn.ModuleList(Block(ed, dheads) for _ in range(ddepth))
        self.dec_norm = nn.LayerNorm(ed, eps=1e-6)
        self.head = nn.Linear(ed, pv)

    def patchify(self, imgs):
        b, c = imgs.shape[:2]
        view = [b, c]
        for s in imgs.shape[2:]:
            view += [s // self.patch, self.patch]
        perm = [0] + [2 + 2 * i for i in range(self.dims)] + [3 + 2 * i for i in range(self.dims)] + [1]
        return imgs.reshape(view).permute(perm).reshape(b, self.length, -1)

    def forward(self, imgs):
        x = self.patchify(imgs)
        b, l, pv = x.shape
        keep = int(l * (1 - 0.75))
        noise = torch.rand(b, l, device=imgs.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        mask = torch.ones(b, l, device=imgs.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)

        e = self.cls_token.shape[-1]
        t = self.patch_embed(torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, pv)))
        t = t + torch.gather(self.pos.expand(b, -1, -1), 1, ids_keep[..., None].expand(-1, -1, e))
        t = torch.cat([self.cls_token.expand(b, -1, -1), t], 1)
        for blk in self.encoder:
            t = blk(t)
        d = self.encoder_to_decoder(self.norm(t))
        ed = d.shape[-1]
        y = torch.cat([d[:, 1:], self.mask_token.expand(b, l - keep, ed)], 1)
        y = torch.gather(y, 1, ids_restore[..., None].expand(-1, -1, ed)) + self.dec_pos
        y = torch.cat([d[:, :1], y], 1)
        for blk in self.decoder:
            y = blk(y)
        pred = self.head(self.dec_norm(y))[:, 1:]

        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=self.dims == 2)
        target = (x - mean) / (var + 1e-6) ** 0.5
        per_token = ((pred - target) ** 2).mean(-1)
        return (per_token * mask).sum() / mask.sum()


def param_groups(net):
    decay, no_decay = [], []
    for name, q in net.named_parameters():
        if not q.requires_grad:
            continue
        skip = q.ndim <= 1 or "pos" in name or "token" in name
        (no_decay if skip else decay).append(q)
    return [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]


torch.set_num_threads(a.threads)
torch.manual_seed(0)
x = torch.randn(a.batch, 1, *([a.roi] * a.dims), device=dev)
if a.model == "unetr":
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNETR

    assert a.dims == 3, "the UNETR bench is 3-D"
    net = UNETR(in_channels=1, out_channels=a.classes, img_size=(a.roi,) * 3, feature_size=a.feature,
                hidden_size=a.hidden, mlp_dim=4 * a.hidden, num_heads=a.heads, proj_type="conv",
                norm_name="instance", res_block=True, dropout_rate=0.0).to(dev)
    y = torch.randint(0, a.classes, (a.batch, 1, a.roi, a.roi, a.roi), device=dev).float()
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)

    def loss_fn():
        return dice_ce(net(x), y)
else:
    net = MAE(a.dims, a.roi, a.patch, a.hidden, a.depth, a.heads, a.dec_hidden, a.dec_depth, a.dec_heads).to(dev)

    def loss_fn():
        return net(x)

opt = torch.optim.AdamW(param_groups(net), lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
scaler = torch.amp.GradScaler("cuda", enabled=a.amp)
mark = ctypes.CDLL(a.callgrind_lib) if a.callgrind_lib else None
net.train()
times = []
faults = 0
for i in range(a.warmup + a.steps):
    if i == a.warmup:
        if mark:
            mark.medmae_callgrind_start()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    opt.zero_grad()
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=a.amp):
        loss = loss_fn()
    value = loss.item()
    assert math.isfinite(value), f"loss {value} at step {i}"
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    if i >= a.warmup:
        times.append(1000 * (time.perf_counter() - t0))
if mark:
    mark.medmae_callgrind_stop()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) // max(a.steps, 1)
params = sum(q.numel() for q in net.parameters() if q.grad is not None)
print(json.dumps({"impl": "pytorch", "device": a.device, "amp": a.amp, "step_ms": times, "minor_faults_per_step": faults, "params": params,
                  "threads": torch.get_num_threads()}))
