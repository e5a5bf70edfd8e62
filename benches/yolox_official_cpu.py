#!/usr/bin/env python3
"""The official YOLOX (PyPI `yolox` 0.3.0) training step on the CPU: the reference the CPU speed
targets of `ssod bench train` quote ("official YOLOX on PyTorch, CPU, 2 threads").

One step = model(images, targets) in train mode (forward, SimOTA with the official per-GT loop,
IoU/obj/cls losses) -> backward -> SGD from `exp.get_optimizer` (nesterov, momentum 0.9, weight
decay on conv weights) -> ModelEMA update (0.9998), as in yolox/core/trainer.py; no data loading.
Random images (0..255) and 1-5 random boxes per image (as `ssod bench train`), seeded.

    pip install --no-deps --no-build-isolation yolox==0.3.0   # after torch torchvision loguru ...
    python3 benches/yolox_official_cpu.py --model yolox-s --size 640 --batch 8 --steps 3

Prints images/s (median step time over the timed steps, after one warm-up step) and the peak
resident memory of the process.
"""
import argparse
import resource
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="yolox-s", help="yolox-nano, yolox-tiny, yolox-s, ...")
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from yolox.exp import get_exp
    from yolox.utils import ModelEMA

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    exp = get_exp(None, args.model)
    exp.num_classes = args.classes
    model = exp.get_model()
    model.train()
    optimizer = exp.get_optimizer(args.batch)
    ema = ModelEMA(model, 0.9998)

    b, s = args.batch, args.size
    images = torch.rand(b, 3, s, s) * 255.0
    # targets [B, 50, 5]: (class, cx, cy, w, h) in pixels, zero rows are padding.
    targets = torch.zeros(b, 50, 5)
    gen = torch.Generator().manual_seed(args.seed)
    for i in range(b):
        n = int(torch.randint(1, 6, (1,), generator=gen))
        wh = 8 + torch.rand(n, 2, generator=gen) * (s / 4)
        c = wh / 2 + torch.rand(n, 2, generator=gen) * (s - wh)
        targets[i, :n, 0] = torch.randint(0, args.classes, (n,), generator=gen).float()
        targets[i, :n, 1:3] = c
        targets[i, :n, 3:5] = wh

    def step():
        out = model(images, targets)
        optimizer.zero_grad()
        out["total_loss"].backward()
        optimizer.step()
        ema.update(model)

    step()  # warm-up
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"official {args.model} at {s}x{s}, batch {b}, {args.threads} threads, torch {torch.__version__}")
    print(f"images/s      {b / med:.2f}")
    print(f"peak memory   {peak_mb:.0f} MB (host RSS)")
    print(f"step times    {', '.join(f'{t * 1000:.0f}' for t in times)} ms")


if __name__ == "__main__":
    main()
