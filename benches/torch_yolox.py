#!/usr/bin/env python3
"""PyTorch-eager YOLOX training-step baseline (f32 and autocast bf16), for BENCHMARKS.md.

Written from docs/yolox.md ("notes §x" below: its section x); it does not import the `yolox`
package (the GPU machine has only torch + numpy). benches/check_torch_yolox.py loads the official
YOLOX weights into this model (same parameter names) and compares outputs, loss and gradients on CPU.

Usage:
    python3 benches/torch_yolox.py --model s --size 640 --batch 16 --steps 20 --warmup 5 \
        --precision f32 --device cuda --classes 1 --gts 30 --json s_f32.json
    python3 benches/torch_yolox.py --precision bf16 ...     # autocast bf16, f32 master weights
    python3 benches/torch_yolox.py --check-params           # 80-class counts of nano/tiny/s
    python3 benches/torch_yolox.py --model nano --size 128 --batch 2 --steps 3 --warmup 1 --device cpu

One step = forward (train mode) -> YOLOX loss (decode, SimOTA release version, IoU/obj/cls) ->
backward -> SGD (nesterov, momentum 0.9, wd 5e-4 on conv weights only). The data are one seeded
synthetic batch reused every step (raw 0..255 pixels, `--gts` boxes of 8..128 px per image); data
loading is not part of the measurement. TF32 is off unless --tf32. cudnn.benchmark is on, as in
YOLOX's tools/train.py. On CUDA each stage is timed with CUDA events; medians over the timed steps.
Differences from the official code, all timing-only: dynamic-k matching does one top-k for all GTs
of an image instead of a Python loop over GTs (same result up to ties in cost), and the loss runs in
f32 even under bf16 autocast (bf16 box coordinates at 640 px would be 4 px coarse).
"""
import argparse
import functools
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (depth, width, depthwise); notes §1.1 (m/l/x from exps/default: 0.67/0.75, 1.0/1.0, 1.33/1.25)
VARIANTS = {
    "nano": (0.33, 0.25, True),
    "tiny": (0.33, 0.375, False),
    "s": (0.33, 0.50, False),
    "m": (0.67, 0.75, False),
    "l": (1.0, 1.0, False),
    "x": (1.33, 1.25, False),
}
PARAMS_80 = {"nano": 912_159, "tiny": 5_055_855, "s": 8_968_255}  # notes §1.7
STRIDES = (8, 16, 32)


# ---------------------------------------------------------------------------------------------
# Blocks (notes §1.2). Attribute names reproduce the official module tree, so that an official
# state_dict loads with strict=True (backbone.backbone.stem.conv.conv.weight, ...).

class BaseConv(nn.Module):
    """Conv2d(pad (k-1)//2, no bias) -> BN(eps 1e-3, momentum 0.03; notes §1.6) -> SiLU."""

    def __init__(self, cin, cout, k, s=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DWConv(nn.Module):
    """Depthwise k×k BaseConv then pointwise 1×1 BaseConv, both with BN and SiLU."""

    def __init__(self, cin, cout, k, s=1):
        super().__init__()
        self.dconv = BaseConv(cin, cin, k, s, groups=cin)
        self.pconv = BaseConv(cin, cout, 1, 1)

    def forward(self, x):
        return self.pconv(self.dconv(x))


def Conv(dw):
    """`Conv = DWConv if depthwise else BaseConv`: only for the s2 downsamplers, Bottleneck.conv2,
    PAFPN bu_conv*, and the head's 3×3 convs (notes §1.2)."""
    return DWConv if dw else BaseConv


class Bottleneck(nn.Module):
    def __init__(self, cin, cout, shortcut, expansion, dw):
        super().__init__()
        hid = int(cout * expansion)
        self.conv1 = BaseConv(cin, hid, 1)
        self.conv2 = Conv(dw)(hid, cout, 3, 1)
        self.use_add = shortcut and cin == cout

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return x + y if self.use_add else y


class CSPLayer(nn.Module):
    """YOLOv5 C3 block; concat order is [main path, bypass] (notes §1.2)."""

    def __init__(self, cin, cout, n, shortcut, dw):
        super().__init__()
        hid = int(cout * 0.5)
        self.conv1 = BaseConv(cin, hid, 1)
        self.conv2 = BaseConv(cin, hid, 1)
        self.conv3 = BaseConv(2 * hid, cout, 1)
        self.m = nn.Sequential(*[Bottleneck(hid, hid, shortcut, 1.0, dw) for _ in range(n)])

    def forward(self, x):
        return self.conv3(torch.cat([self.m(self.conv1(x)), self.conv2(x)], 1))


class SPPBottleneck(nn.Module):
    """Parallel max-pools 5, 9, 13 (SPP, not the cascaded SPPF); concat [x, mp5, mp9, mp13]."""

    def __init__(self, cin, cout, ks=(5, 9, 13)):
        super().__init__()
        hid = cin // 2
        self.conv1 = BaseConv(cin, hid, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(k, 1, k // 2) for k in ks])
        self.conv2 = BaseConv(hid * (len(ks) + 1), cout, 1)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [m(x) for m in self.m], 1))


class Focus(nn.Module):
    """Space-to-depth in the order TL, BL, TR, BR (rows are dim -2), then BaseConv 12->b, k3."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv = BaseConv(cin * 4, cout, 3, 1)

    def forward(self, x):
        tl, bl = x[..., ::2, ::2], x[..., 1::2, ::2]
        tr, br = x[..., ::2, 1::2], x[..., 1::2, 1::2]
        return self.conv(torch.cat([tl, bl, tr, br], 1))


# ---------------------------------------------------------------------------------------------
# Network (notes §1.3-1.5)

class CSPDarknet(nn.Module):
    def __init__(self, depth, width, dw):
        super().__init__()
        b, n = int(64 * width), max(round(depth * 3), 1)
        C = Conv(dw)
        self.stem = Focus(3, b)                                                          # /2
        self.dark2 = nn.Sequential(C(b, 2 * b, 3, 2), CSPLayer(2 * b, 2 * b, n, True, dw))          # /4
        self.dark3 = nn.Sequential(C(2 * b, 4 * b, 3, 2), CSPLayer(4 * b, 4 * b, 3 * n, True, dw))  # /8
        self.dark4 = nn.Sequential(C(4 * b, 8 * b, 3, 2), CSPLayer(8 * b, 8 * b, 3 * n, True, dw))  # /16
        self.dark5 = nn.Sequential(C(8 * b, 16 * b, 3, 2), SPPBottleneck(16 * b, 16 * b),
                                   CSPLayer(16 * b, 16 * b, n, False, dw))                          # /32

    def forward(self, x):
        x = self.dark2(self.stem(x))
        c3 = self.dark3(x)    # [B, 4b, H/8, W/8]
        c4 = self.dark4(c3)   # [B, 8b, H/16, W/16]
        c5 = self.dark5(c4)   # [B, 16b, H/32, W/32]
        return c3, c4, c5


class YOLOPAFPN(nn.Module):
    """PAFPN; every CSP has shortcut=False; concat order [resampled, lateral] (notes §1.4, §7.2)."""

    def __init__(self, depth, width, dw):
        super().__init__()
        c3, c4, c5 = (int(c * width) for c in (256, 512, 1024))
        n = round(3 * depth)
        C = Conv(dw)
        self.backbone = CSPDarknet(depth, width, dw)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.lateral_conv0 = BaseConv(c5, c4, 1)
        self.C3_p4 = CSPLayer(2 * c4, c4, n, False, dw)
        self.reduce_conv1 = BaseConv(c4, c3, 1)
        self.C3_p3 = CSPLayer(2 * c3, c3, n, False, dw)
        self.bu_conv2 = C(c3, c3, 3, 2)
        self.C3_n3 = CSPLayer(2 * c3, c4, n, False, dw)
        self.bu_conv1 = C(c4, c4, 3, 2)
        self.C3_n4 = CSPLayer(2 * c4, c5, n, False, dw)

    def forward(self, x):
        x2, x1, x0 = self.backbone(x)
        fpn_out0 = self.lateral_conv0(x0)                                            # [B, c4, H/32]
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))             # [B, c4, H/16]
        fpn_out1 = self.reduce_conv1(f_out0)                                         # [B, c3, H/16]
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))           # P3 [B, c3, H/8]
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))     # P4 [B, c4, H/16]
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))     # P5 [B, c5, H/32]
        return pan_out2, pan_out1, pan_out0


class YOLOXHead(nn.Module):
    """Decoupled head, nothing shared between levels; obj is read from the reg branch; output
    channels [reg(4), obj(1), cls(C)] (notes §1.5)."""

    def __init__(self, num_classes, width, dw):
        super().__init__()
        h, C = int(256 * width), Conv(dw)
        self.num_classes = num_classes
        self.stems, self.cls_convs, self.reg_convs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.cls_preds, self.reg_preds, self.obj_preds = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for cin in (int(c * width) for c in (256, 512, 1024)):
            self.stems.append(BaseConv(cin, h, 1))
            self.cls_convs.append(nn.Sequential(C(h, h, 3, 1), C(h, h, 3, 1)))
            self.reg_convs.append(nn.Sequential(C(h, h, 3, 1), C(h, h, 3, 1)))
            self.cls_preds.append(nn.Conv2d(h, num_classes, 1))
            self.reg_preds.append(nn.Conv2d(h, 4, 1))
            self.obj_preds.append(nn.Conv2d(h, 1, 1))
        prior = -math.log((1 - 1e-2) / 1e-2)  # -4.59512 on cls and obj biases (notes §1.6)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, prior)

    def forward(self, feats):
        """Train: raw [B, A, 5+C] (A = Σ h·w, levels P3,P4,P5, row-major). Eval: decoded, sigmoids."""
        outs = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            reg_feat = self.reg_convs[k](x)
            out = torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat),
                             self.cls_preds[k](self.cls_convs[k](x))], 1)             # [B, 5+C, h, w]
            outs.append(out.flatten(2))
        out = torch.cat(outs, 2).permute(0, 2, 1)                                    # [B, A, 5+C]
        if self.training:
            return out
        grid, stride = anchor_grid(tuple(tuple(f.shape[-2:]) for f in feats), out.device, out.dtype)
        return torch.cat([decode_boxes(out[..., :4], grid, stride), out[..., 4:].sigmoid()], -1)


class YOLOX(nn.Module):
    def __init__(self, name, num_classes):
        super().__init__()
        depth, width, dw = VARIANTS[name]
        self.backbone = YOLOPAFPN(depth, width, dw)
        self.head = YOLOXHead(num_classes, width, dw)

    def forward(self, x):
        return self.head(self.backbone(x))


# ---------------------------------------------------------------------------------------------
# Decode, SimOTA, loss (notes §2-§4)

@functools.lru_cache(maxsize=None)
def anchor_grid(sizes, device, dtype=torch.float32):
    """Grid (gx, gy) [A, 2] and stride [A, 1] for levels of sizes ((h, w), ...); y outer, x inner.
    Cached per size, as YOLOX caches its grids."""
    grids, strides = [], []
    for (h, w), s in zip(sizes, STRIDES):
        yv, xv = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        grids.append(torch.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(torch.full((h * w, 1), float(s), device=device))
    return torch.cat(grids).to(dtype), torch.cat(strides).to(dtype)


def decode_boxes(t, grid, stride):
    """YOLOX: no 0.5 offset in decode, no clamp on exp (notes §2): cxcy=(t+g)·s, wh=exp(t)·s."""
    return torch.cat([(t[..., :2] + grid) * stride, torch.exp(t[..., 2:4]) * stride], -1)


def box_iou(a, b, eps=0.0):
    """IoU of cxcywh boxes broadcast against each other; inter=0 unless tl<br on both axes."""
    tl = torch.max(a[..., :2] - a[..., 2:] / 2, b[..., :2] - b[..., 2:] / 2)
    br = torch.min(a[..., :2] + a[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2)
    inter = (br - tl).prod(-1) * (tl < br).all(-1).to(a.dtype)
    return inter / (a[..., 2:].prod(-1) + b[..., 2:].prod(-1) - inter + eps)


@torch.no_grad()
def simota(boxes, obj, cls, gt_boxes, gt_cls, centers, stride):
    """SimOTA, release version (notes §3.1), for one image.
    boxes [A,4] decoded cxcywh, obj [A], cls [A,C] logits, gt_boxes [G,4], gt_cls [G] (long),
    centers [A,2] = (g+0.5)·s, stride [A]. Returns fg_mask [A], matched GT index and IoU per fg."""
    G, C = gt_boxes.shape[0], cls.shape[1]
    xc, yc = centers[:, 0], centers[:, 1]
    gcx, gcy, gw, gh = (v[:, None] for v in gt_boxes.unbind(1))
    in_box = torch.stack([xc - (gcx - gw / 2), (gcx + gw / 2) - xc,
                          yc - (gcy - gh / 2), (gcy + gh / 2) - yc]).amin(0) > 0          # [G, A] strict
    r = 2.5 * stride                                                                  # center_radius 2.5
    in_ctr = torch.stack([xc - (gcx - r), (gcx + r) - xc, yc - (gcy - r), (gcy + r) - yc]).amin(0) > 0
    fg_mask = (in_box | in_ctr).any(0)                                                # candidates [A]
    cand = fg_mask.nonzero()[:, 0]
    N = cand.numel()
    if N == 0:
        return fg_mask, cand, boxes.new_zeros(0)
    box_and_ctr = (in_box & in_ctr)[:, cand]                                          # [G, N]
    iou = box_iou(gt_boxes[:, None], boxes[cand][None])                               # [G, N], no eps
    with torch.autocast(boxes.device.type, enabled=False):
        # p = sqrt(σ(cls)·σ(obj)); cost target is plain one-hot (notes §3.1, §7.3)
        p = (cls[cand].float().sigmoid() * obj[cand, None].float().sigmoid()).sqrt()  # [N, C]
        onehot = F.one_hot(gt_cls, C).float()                                         # [G, C]
        cls_cost = F.binary_cross_entropy(p[None].expand(G, N, C), onehot[:, None].expand(G, N, C),
                                          reduction="none").sum(-1)                   # [G, N]
    cost = cls_cost + 3.0 * -torch.log(iou + 1e-8) + 100000.0 * (~box_and_ctr)
    # dynamic k = max(1, int(Σ top-10 IoUs)) <= k_cand, so one top-k_cand on cost covers every GT
    k_cand = min(10, N)
    dyn_k = iou.topk(k_cand, 1).values.sum(1).int().clamp(min=1)                      # [G]
    order = cost.topk(k_cand, 1, largest=False).indices                               # [G, k_cand]
    take = torch.arange(k_cand, device=cost.device)[None] < dyn_k[:, None]
    matching = torch.zeros_like(cost).scatter_(1, order, take.to(cost.dtype))
    # an anchor taken by >1 GT goes to argmin cost over all GTs (notes §3.1, §7.4)
    multi = matching.sum(0) > 1
    best = F.one_hot(cost.argmin(0), G).T.to(cost.dtype)
    matching = torch.where(multi[None], best, matching)
    fg = matching.sum(0) > 0                                                          # [N]
    fg_mask[cand] = fg
    matched = matching[:, fg].argmax(0)
    ious = (matching * iou).sum(0)[fg]
    return fg_mask, matched, ious


def yolox_loss(out, gt_boxes, gt_cls, num_classes, sizes):
    """out [B, A, 5+C] raw head output; gt_boxes [B, G, 4] cxcywh px; gt_cls [B, G] long (every row
    a real box). Returns total = 5·iou + obj + cls (no L1: it starts in the no-aug epochs), num_fg."""
    if out.dtype in (torch.bfloat16, torch.float16):
        out = out.float()  # loss in f32 even under bf16 autocast (see module docstring)
    grid, stride = anchor_grid(tuple(sizes), out.device, out.dtype)
    boxes = decode_boxes(out[..., :4], grid, stride)                                  # [B, A, 4]
    obj, cls = out[..., 4], out[..., 5:]
    centers = (grid + 0.5) * stride                     # 0.5-offset centre for geometry only (§7.1)
    fg_masks, reg_t, cls_t = [], [], []
    for b in range(out.shape[0]):
        fg, matched, ious = simota(boxes[b].detach(), obj[b].detach(), cls[b].detach(),
                                   gt_boxes[b], gt_cls[b], centers, stride[:, 0])
        fg_masks.append(fg)
        reg_t.append(gt_boxes[b][matched])
        cls_t.append(F.one_hot(gt_cls[b][matched], num_classes).to(out.dtype) * ious[:, None])  # IoU-aware
    fg = torch.cat(fg_masks)                                                          # [B·A]
    reg_t, cls_t = torch.cat(reg_t), torch.cat(cls_t)
    num_fg = max(reg_t.shape[0], 1)                     # whole batch, not per image (§7.6)
    iou = box_iou(boxes.reshape(-1, 4)[fg], reg_t, eps=1e-16)
    loss_iou = (1 - iou ** 2).sum() / num_fg            # IOUloss "iou": 1 - IoU²
    loss_obj = F.binary_cross_entropy_with_logits(obj.reshape(-1), fg.to(out.dtype), reduction="sum") / num_fg
    loss_cls = F.binary_cross_entropy_with_logits(cls.reshape(-1, num_classes)[fg], cls_t,
                                                  reduction="sum") / num_fg
    return 5.0 * loss_iou + loss_obj + loss_cls, reg_t.shape[0]


def sgd(model, lr):
    """SGD nesterov momentum 0.9; wd 5e-4 on conv weights only, none on BN weights or any bias (§5)."""
    bn_w, conv_w, biases = [], [], []
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            bn_w.append(m.weight)
            biases.append(m.bias)
        elif isinstance(m, nn.Conv2d):
            conv_w.append(m.weight)
            if m.bias is not None:
                biases.append(m.bias)
    assert len(bn_w) + len(conv_w) + len(biases) == len(list(model.parameters()))
    opt = torch.optim.SGD(bn_w, lr=lr, momentum=0.9, nesterov=True)
    opt.add_param_group({"params": conv_w, "weight_decay": 5e-4})
    opt.add_param_group({"params": biases})
    return opt


def synthetic_batch(batch, size, gts, classes, device, seed=0):
    """Raw 0..255 pixels (YOLOX feeds them unnormalised, §2) and `gts` boxes of 8..128 px per image."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.rand(batch, 3, size, size, generator=g) * 255
    wh = 8 + torch.rand(batch, gts, 2, generator=g) * (min(128, size) - 8)
    cxy = wh / 2 + torch.rand(batch, gts, 2, generator=g) * (size - wh)
    cls = torch.randint(0, classes, (batch, gts), generator=g)
    return imgs.to(device), torch.cat([cxy, wh], -1).to(device), cls.to(device)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def check_params():
    for name, want in PARAMS_80.items():
        got = n_params(YOLOX(name, 80))
        print(f"{name}: {got:,} parameters at 80 classes (notes: {want:,})")
        assert got == want, f"{name}: {got} != {want}"
    print("parameter counts OK")


# ---------------------------------------------------------------------------------------------
# Benchmark

class Clock:
    """Stage marks: CUDA events on CUDA (resolved after one synchronize per step), else perf_counter."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b):
        return a.elapsed_time(b) if self.cuda else 1e3 * (b - a)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="s", choices=list(VARIANTS))
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--precision", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--classes", type=int, default=1)
    ap.add_argument("--gts", type=int, default=30)
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmul/conv (off by default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--check-params", action="store_true", help="assert 80-class nano/tiny/s counts, exit")
    args = ap.parse_args()
    if args.check_params:
        check_params()
        return
    assert args.size % 32 == 0, "--size must be a multiple of 32"

    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True  # as YOLOX tools/train.py
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"

    model = YOLOX(args.model, args.classes).to(dev).train()
    opt = sgd(model, lr=0.01 / 64 * args.batch)  # basic_lr_per_img · batch (§5); constant here
    imgs, gt_boxes, gt_cls = synthetic_batch(args.batch, args.size, args.gts, args.classes, dev, args.seed)
    sizes = [(args.size // s, args.size // s) for s in STRIDES]
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    print(f"YOLOX-{args.model} {n_params(model):,} params ({args.classes} classes), {args.size}x{args.size}, "
          f"batch {args.batch}, {args.gts} GTs/image, {args.precision}, TF32 {'on' if args.tf32 else 'off'}, "
          f"{card}, torch {torch.__version__}")

    clock = Clock(dev)
    stages = ("forward", "loss", "backward", "optimizer")
    rows = []
    for step in range(args.warmup + args.steps):
        if step == args.warmup and dev.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(dev)
        t = [clock.mark()]
        with amp:
            out = model(imgs)
            t.append(clock.mark())
            loss, num_fg = yolox_loss(out, gt_boxes, gt_cls, args.classes, sizes)
            t.append(clock.mark())
        loss.backward()
        t.append(clock.mark())
        opt.step()
        opt.zero_grad(set_to_none=True)
        t.append(clock.mark())
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ms = [clock.ms(a, b) for a, b in zip(t, t[1:])]
        print(f"step {step:3d}{' (warm-up)' if step < args.warmup else ''}: loss {loss.item():.4f} "
              f"num_fg {num_fg} " + " ".join(f"{s} {m:.1f}" for s, m in zip(stages, ms)) + " ms")
        if step >= args.warmup:
            rows.append(ms)

    med = {s: statistics.median(r[i] for r in rows) for i, s in enumerate(stages)}
    step_ms = statistics.median(sum(r) for r in rows)
    res = {
        "model": args.model, "params": n_params(model), "classes": args.classes, "size": args.size,
        "batch": args.batch, "gts": args.gts, "steps": args.steps, "warmup": args.warmup,
        "precision": args.precision, "tf32": args.tf32, "device": card, "torch": torch.__version__,
        "images_per_s": statistics.median(args.batch / (sum(r) / 1e3) for r in rows),
        "step_ms": step_ms, "stage_ms": med,
        "peak_mem_mib": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
        "final_loss": loss.item(),
    }
    print(f"\nYOLOX-{args.model} {args.size} batch {args.batch}, {args.precision}"
          f"{' +TF32' if args.tf32 else ''}, {card}, torch {torch.__version__}")
    print("| metric | value |\n|---|---|")
    print(f"| images/s (median) | {res['images_per_s']:.1f} |\n| step ms (median) | {step_ms:.1f} |")
    for s in stages:
        print(f"| {s} ms (median) | {med[s]:.2f} |")
    if res["peak_mem_mib"] is not None:
        print(f"| peak memory MiB | {res['peak_mem_mib']:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
