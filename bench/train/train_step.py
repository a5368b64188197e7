"""PyTorch/MONAI reference for bench/train: time UNETR training steps (forward + DiceCE + backward + AdamW).

Usage: $MEDMAE_PYTHON bench/train/train_step.py --roi 32 --hidden 96 --heads 4 --feature 8 --batch 2 --classes 3
Needs torch and monai (scripts/setup --references). Prints one JSON line: {"ms_per_step": ..., ...}.
"""
import argparse
import json
import time

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNETR

p = argparse.ArgumentParser()
p.add_argument("--roi", type=int, required=True)
p.add_argument("--hidden", type=int, required=True)
p.add_argument("--heads", type=int, required=True)
p.add_argument("--feature", type=int, required=True)
p.add_argument("--batch", type=int, required=True)
p.add_argument("--classes", type=int, required=True)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--steps", type=int, default=3)
p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (scripts/gpu-check)")
p.add_argument("--amp", action="store_true", help="fp16 autocast + GradScaler (CUDA only)")
a = p.parse_args()
dev = torch.device(a.device)
if a.amp and dev.type != "cuda":
    p.error("--amp needs a CUDA device")

torch.set_num_threads(a.threads)
torch.manual_seed(0)
net = UNETR(in_channels=1, out_channels=a.classes, img_size=(a.roi,) * 3, feature_size=a.feature,
            hidden_size=a.hidden, mlp_dim=4 * a.hidden, num_heads=a.heads, proj_type="conv",
            norm_name="instance", res_block=True, dropout_rate=0.0).to(dev)
loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
opt = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
x = torch.randn(a.batch, 1, a.roi, a.roi, a.roi, device=dev)
y = torch.randint(0, a.classes, (a.batch, 1, a.roi, a.roi, a.roi), device=dev).float()
scaler = torch.amp.GradScaler("cuda", enabled=a.amp)
net.train()
times = []
for i in range(a.warmup + a.steps):
    t0 = time.perf_counter()
    opt.zero_grad()
    with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=a.amp):
        loss = loss_fn(net(x), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    if i >= a.warmup:
        times.append(time.perf_counter() - t0)
print(json.dumps({"impl": "monai", "device": a.device, "amp": a.amp, "ms_per_step": 1000 * sum(times) / len(times), "params": sum(p.numel() for p in net.parameters())}))
