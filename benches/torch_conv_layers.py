"""PyTorch (cuDNN on a GPU) timings of the conv layers `ssod bench conv --json FILE` measured, next
to ssod's own: forward, input gradient and weight gradient of each distinct layer on its own, and
the per-step totals (each layer times its calls per forward).

    ssod bench conv --model yolox-s --size 640 --batch 16 --device cuda --json s_conv.json
    python3 benches/torch_conv_layers.py s_conv.json --precision f32 [--json torch_conv.json]

--precision f32 turns TF32 off for cuDNN (as benches/torch_yolox.py does), tf32 turns it on, bf16
runs the layers on bf16 tensors (what autocast does with a conv). Times are medians over --reps
runs after a warm-up, each pass timed alone (synchronised before and after, as ssod does).
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight


def timed_ms(fn, dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t0 = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return (time.perf_counter() - t0) * 1e3


def time_layer(layer, dev, dtype, reps):
    n, c, h, w = layer["batch"], layer["in_channels"], layer["in_h"], layer["in_w"]
    k, ks, s, p, g = layer["out_channels"], layer["kernel"], layer["stride"], layer["padding"], layer["groups"]
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(n, c, h, w, generator=gen).to(dev, dtype)
    wt = torch.rand(k, c // g, ks, ks, generator=gen).to(dev, dtype)
    ho, wo = (h + 2 * p - ks) // s + 1, (w + 2 * p - ks) // s + 1
    dy = torch.rand(n, k, ho, wo, generator=gen).to(dev, dtype)
    passes = [
        lambda: F.conv2d(x, wt, stride=s, padding=p, groups=g),
        lambda: conv2d_input(x.shape, wt, dy, stride=s, padding=p, groups=g),
        lambda: conv2d_weight(x, wt.shape, dy, stride=s, padding=p, groups=g),
    ]
    times = [[], [], []]
    with torch.no_grad():
        for rep in range(reps + 1):
            for i, f in enumerate(passes):
                t = timed_ms(f, dev)
                if rep > 0:
                    times[i].append(t)
    return [statistics.median(t) for t in times]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layers", help="JSON written by `ssod bench conv --json`")
    ap.add_argument("--precision", choices=["f32", "tf32", "bf16"], default="f32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", help="write the torch times here (refused if the file exists)")
    args = ap.parse_args()
    if args.json and os.path.exists(args.json):
        raise SystemExit(f"--json {args.json}: the file exists; not overwriting it")
    with open(args.layers) as f:
        ssod = json.load(f)
    dev = torch.device(args.device)
    tf32 = args.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"{ssod['model']} at {ssod['size']}, batch {ssod['batch']}: torch {torch.__version__} on {card}, "
          f"{args.precision} (ssod's times: device {ssod['device']}, precision {ssod['precision']})")
    # ssod's own algorithm first (`conv`, im2col when absent), then any other it was timed with
    # (`ssod bench conv --conv both` adds an "implicit" entry per layer).
    first = ssod["layers"][0] if ssod["layers"] else {}
    algos = [first.get("conv", "im2col")] + [a for a in ("im2col", "implicit") if isinstance(first.get(a), dict)]
    ms = lambda layer, a: [(layer if a == algos[0] else layer[a])[k] for k in ("ms_fwd", "ms_bwd_input", "ms_bwd_weight")]
    print("| # | layer | calls | torch ms fwd / bwd_input / bwd_weight | "
          + " | ".join(f"ssod {a} ms fwd / bwd_input / bwd_weight | {a} / torch" for a in algos) + " |")
    print("|---|---|---|---|" + "---|---|" * len(algos))
    rows, tot_t, tot_s = [], [0.0, 0.0, 0.0], {a: [0.0, 0.0, 0.0] for a in algos}
    for i, layer in enumerate(ssod["layers"]):
        t = time_layer(layer, dev, dtype, args.reps)
        per_step = [layer["calls"], layer.get("input_grad_calls", layer["calls"]), layer["calls"]]
        cells = []
        for a in algos:
            s = ms(layer, a)
            for j in range(3):
                tot_s[a][j] += s[j] * per_step[j]
            cells.append(f"{s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f} | {sum(s) / sum(t):.2f}")
        for j in range(3):
            tot_t[j] += t[j] * per_step[j]
        print(f"| {i} | {layer['layer']} | {layer['calls']} | {t[0]:.3f} / {t[1]:.3f} / {t[2]:.3f} | "
              + " | ".join(cells) + " |")
        rows.append({**layer, "torch_ms_fwd": t[0], "torch_ms_bwd_input": t[1], "torch_ms_bwd_weight": t[2]})
    print(f"per step, every call, no dx for the convs on the images (fwd / bwd_input / bwd_weight / total ms): torch "
          f"{tot_t[0]:.1f} / {tot_t[1]:.1f} / {tot_t[2]:.1f} / {sum(tot_t):.1f}; "
          + "; ".join(f"ssod {a} {v[0]:.1f} / {v[1]:.1f} / {v[2]:.1f} / {sum(v):.1f}" for a, v in tot_s.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"precision": args.precision, "device": card, "torch": torch.__version__, "layers": rows}, f, indent=1)


if __name__ == "__main__":
    main()
