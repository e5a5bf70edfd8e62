#!/usr/bin/env python3
"""PyTorch-eager baseline of a backbone pretraining step (center loss, patch SSL), for BENCHMARKS.md.

The study's own pretraining code is PyTorch; this is its step, on the CSPDarknet of
benches/torch_yolox.py (the official module tree), so `ssod bench pretrain` can be compared with it
in the same run on the same card, as a ratio.

Usage:
    python3 benches/torch_pretrain.py --method center --model s --size 224 --batch 128 \
        --steps 10 --warmup 3 --precision f32 --device cuda --json center_s_f32.json
    python3 benches/torch_pretrain.py --method ssl --model s --size 224 --batch 16 --frame 1280x720 ...
    python3 benches/torch_pretrain.py --method center --model nano --size 64 --batch 8 --steps 3 --device cpu

Steps as in ssod (docs/pretraining.md):
- center: crops [B, 3, S, S] -> CSPDarknet C5 -> the study head (3 x [conv3x3, BN(eps 1e-5,
  momentum 0.1), ReLU] with 256w, 256w, 64w channels, AvgPool2d(2), flatten, Linear(., 2)) ->
  CE + center loss on the 2-d logits (centres [2, 2]) -> backward -> Adam(lr 1e-3, wd 5e-4)
  on backbone and head, SGD(lr 0.5) on the centres.
- ssl: frames [B, 3, H, W] on the device -> 9 patches per frame cut by indexing (anchor, four
  positives, four negatives) -> backbone + the study head's convs, pool and flatten on the
  anchor, positive and negative groups as three forward passes (the study's separate BN) ->
  the study's cosine loss (mean cos(a, n) - mean cos(a, p)) -> backward -> Adam.
The inputs are one seeded batch reused every step (data loading is not part of the step figure;
`ssod bench pretrain` reports its loader apart). TF32 off unless --tf32; cudnn.benchmark on.
Medians over the timed steps; on CUDA each step ends with one synchronize.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch_yolox import VARIANTS, CSPDarknet


class StudyHead(nn.Module):
    """3 x [Conv3x3 (no bias), BN, ReLU] -> AvgPool2d(2) -> flatten [-> Linear(., 2)]."""

    def __init__(self, width, size, classes):
        super().__init__()
        c5 = int(1024 * width)
        chans = [c5, int(256 * width), int(256 * width), int(64 * width)]
        layers = []
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        cells = max(size // 64, 1)
        self.fc = nn.Linear(chans[-1] * cells * cells, classes) if classes else None

    def embed(self, c5):
        return torch.flatten(F.avg_pool2d(self.convs(c5), 2), 1)

    def forward(self, c5):
        return self.fc(self.embed(c5))


def parse_frame(s):
    w, h = s.split("x")
    return int(w), int(h)


def study_plan(gen, w, h, s):
    """One frame's corners: anchor, positives (left, up, down, right), negatives in the far strip."""
    px = int(torch.randint(0, min(200, w - 3 * s) + 1, (1,), generator=gen))
    py = int(torch.randint(0, max(h - 3 * s - 1, 0) + 1, (1,), generator=gen))
    anchor = (px + s, py + s)
    pos = [(px, py + s), (px + s, py), (px + s, py + 2 * s), (px + 2 * s, py + s)]
    neg = [(int(torch.randint(w - 2 * s, w - s, (1,), generator=gen)),
            int(torch.randint(0, h - s, (1,), generator=gen))) for _ in range(4)]
    return [anchor] + pos + neg


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="center", choices=["center", "ssl"])
    ap.add_argument("--model", default="s", choices=list(VARIANTS))
    ap.add_argument("--size", type=int, default=224, help="crop (center) or patch (ssl) side")
    ap.add_argument("--batch", type=int, help="crops (center, default 128) or frames (ssl, default 16)")
    ap.add_argument("--frame", default="1280x720", help="ssl frame size WxH")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json")
    args = ap.parse_args()
    assert args.size % 32 == 0, "--size must be a multiple of 32"
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    depth, width, dw = VARIANTS[args.model]
    backbone = CSPDarknet(depth, width, dw).to(dev).train()
    classes = 2 if args.method == "center" else 0
    head = StudyHead(width, args.size, classes).to(dev).train()
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    gen = torch.Generator().manual_seed(args.seed)

    if args.method == "center":
        batch = args.batch or 128
        crops = (torch.rand(batch, 3, args.size, args.size, generator=gen) * 255).to(dev)
        labels = (torch.arange(batch) % 2).to(dev)
        centers = nn.Parameter(torch.randn(2, 2, generator=gen).to(dev))
        copt = torch.optim.SGD([centers], lr=0.5)
        per_step, unit = batch, "crops"

        def step():
            with amp:
                logits = head(backbone(crops)[2]).float()
            ce = F.cross_entropy(logits, labels)
            lc = ((logits - centers[labels]) ** 2).sum() / batch
            loss = ce + lc
            loss.backward()
            opt.step()
            copt.step()
            opt.zero_grad(set_to_none=True)
            copt.zero_grad(set_to_none=True)
            return loss
    else:
        batch = args.batch or 16
        w, h = parse_frame(args.frame)
        s = args.size
        frames = (torch.rand(batch, 3, h, w, generator=gen) * 255).to(dev)
        plans = [study_plan(gen, w, h, s) for _ in range(batch)]
        per_step, unit = batch * 9, "patches"

        def cut(k):
            return torch.stack([frames[i, :, p[k][1]:p[k][1] + s, p[k][0]:p[k][0] + s]
                                for i, p in enumerate(plans)])

        def step():
            groups = [cut(0), torch.cat([cut(k) for k in range(1, 5)]), torch.cat([cut(k) for k in range(5, 9)])]
            with amp:
                a, p, n = (head.embed(backbone(g)[2]).float() for g in groups)
            pos = F.cosine_similarity(a.repeat(4, 1), p, dim=1)
            neg = F.cosine_similarity(a.repeat(4, 1), n, dim=1)
            loss = neg.mean() - pos.mean()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss

    print(f"{args.method} pretraining step, {args.model} backbone + study head, {per_step} {unit} per step, "
          f"{args.precision}, TF32 {'on' if args.tf32 else 'off'}, {card}, torch {torch.__version__}")
    times = []
    for i in range(args.warmup + args.steps):
        if i == args.warmup and dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        loss = step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = 1e3 * (time.perf_counter() - t0)
        print(f"step {i:3d}{' (warm-up)' if i < args.warmup else ''}: loss {loss.item():.4f} {ms:.1f} ms")
        if i >= args.warmup:
            times.append(ms)
    step_ms = statistics.median(times)
    res = {
        "method": args.method, "model": args.model, "size": args.size, "batch": batch, "unit": unit,
        "per_step": per_step, "steps": args.steps, "precision": args.precision, "tf32": args.tf32,
        "device": card, "torch": torch.__version__, "step_ms": step_ms,
        "per_s": per_step / (step_ms / 1e3),
        "peak_mem_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }
    print(f"{res['per_s']:.1f} {unit}/s (median step {step_ms:.1f} ms)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
