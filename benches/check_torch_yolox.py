#!/usr/bin/env python3
"""Checks benches/torch_yolox.py against the official `yolox` package (0.3.0, release SimOTA) on CPU.

    python3 benches/check_torch_yolox.py [--size 128 --batch 2 --gts 8 --classes 1 --double]

Builds the official YOLOX-s (depth 0.33, width 0.5), BN eps 1e-3 momentum 0.03 and the -4.595 bias
prior as YOLOX's exp does, loads its state_dict into ours with strict=True, and compares
1. eval-mode decoded outputs (max abs diff),
2. train-mode total loss and num_fg on the same seeded images and GT boxes,
3. every parameter gradient after backward (max abs diff, and relative to max |grad|),
4. BN running statistics after the train-mode forward,
5. (printed only) the loss of our model under bf16 autocast.
Exits non-zero when a difference exceeds the tolerance (f32: 1e-4 relative; --double: 1e-9).
"""
import argparse
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_yolox as ours  # noqa: E402
from yolox.models import YOLOX, YOLOPAFPN, YOLOXHead  # noqa: E402


def official(num_classes):
    width, depth = 0.5, 0.33
    in_ch = [256, 512, 1024]
    model = YOLOX(YOLOPAFPN(depth, width, in_channels=in_ch, act="silu"),
                  YOLOXHead(num_classes, width, in_channels=in_ch, act="silu"))
    for m in model.modules():  # init_yolo in yolox/exp/yolox_base.py
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = 1e-3, 0.03
    model.head.initialize_biases(1e-2)
    return model


def maxdiff(a, b):
    return (a.double() - b.double()).abs().max().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--gts", type=int, default=8)
    ap.add_argument("--classes", type=int, default=1)
    ap.add_argument("--double", action="store_true", help="compare in float64")
    args = ap.parse_args()
    torch.manual_seed(0)
    dtype = torch.float64 if args.double else torch.float32
    tol = 1e-9 if args.double else 1e-4

    ref = official(args.classes).to(dtype)
    mine = ours.YOLOX("s", args.classes).to(dtype)
    # perturb BN affine params and running stats so the comparison is not at the trivial init
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 2.0)
    mine.load_state_dict(ref.state_dict(), strict=True)
    print(f"state_dict loaded strict=True: {len(ref.state_dict())} tensors, "
          f"{ours.n_params(mine):,} params ({args.classes} classes)")

    imgs, gt_boxes, gt_cls = ours.synthetic_batch(args.batch, args.size, args.gts, args.classes, "cpu")
    imgs, gt_boxes = imgs.to(dtype), gt_boxes.to(dtype)
    labels = torch.cat([gt_cls[..., None].to(dtype), gt_boxes], -1)  # official rows: cls, cx, cy, w, h
    ok = True

    def report(what, d, scale=1.0):
        nonlocal ok
        good = d <= tol * max(scale, 1.0)
        ok &= good
        print(f"{what:<44} maxdiff={d:.3e}{'' if good else '  FAIL'}")

    ref.eval(), mine.eval()
    with torch.no_grad():
        a, b = ref(imgs), mine(imgs)
    report(f"eval output {tuple(a.shape)}", maxdiff(a, b), a.abs().max().item())
    report("eval output, obj+cls scores", maxdiff(a[..., 4:], b[..., 4:]))

    ref.train(), mine.train()
    out_ref = ref(imgs, labels)
    sizes = [(args.size // s, args.size // s) for s in ours.STRIDES]
    loss, num_fg = ours.yolox_loss(mine(imgs), gt_boxes, gt_cls, args.classes, sizes)
    ref_fg = round(out_ref["num_fg"] * args.batch * args.gts)
    print(f"official loss {out_ref['total_loss'].item():.8f} (iou {out_ref['iou_loss'].item():.6f} obj "
          f"{out_ref['conf_loss'].item():.6f} cls {out_ref['cls_loss'].item():.6f}) num_fg {ref_fg}")
    print(f"ours     loss {loss.item():.8f} num_fg {num_fg}")
    report("total loss", maxdiff(out_ref["total_loss"], loss), loss.abs().item())
    ok &= num_fg == ref_fg

    out_ref["total_loss"].backward()
    loss.backward()
    worst, worst_rel = ("", 0.0), ("", 0.0)
    p_ref = dict(ref.named_parameters())
    for name, p in mine.named_parameters():
        d = maxdiff(p_ref[name].grad, p.grad)
        rel = d / max(p_ref[name].grad.abs().max().item(), 1e-30)
        worst = max(worst, (name, d), key=lambda t: t[1])
        worst_rel = max(worst_rel, (name, rel), key=lambda t: t[1])
    for name in ["backbone.backbone.stem.conv.conv.weight", "backbone.backbone.dark5.1.conv2.bn.weight",
                 "backbone.C3_n4.conv3.conv.weight", "head.reg_preds.0.weight", "head.obj_preds.2.bias",
                 "head.cls_preds.1.weight"]:
        g = p_ref[name].grad
        report(f"grad {name}", maxdiff(g, dict(mine.named_parameters())[name].grad), g.abs().max().item())
    print(f"largest abs grad diff: {worst[0]} {worst[1]:.3e}; largest relative: {worst_rel[0]} {worst_rel[1]:.3e}")
    ok &= worst_rel[1] <= tol * 10
    b_ref = dict(ref.named_buffers())
    d = max(maxdiff(b_ref[n], b) for n, b in mine.named_buffers() if b.is_floating_point())
    report("BN running stats after train forward", d)
    if not args.double:  # informational: the benchmark's bf16 autocast path on the same batch
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            bf, _ = ours.yolox_loss(mine(imgs), gt_boxes, gt_cls, args.classes, sizes)
        print(f"bf16 autocast loss {bf.item():.6f} vs f32 {loss.item():.6f} (not checked)")
    print("OK" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
