#!/usr/bin/env python3
"""Whole-training accuracy of ssod against the official YOLOX 0.3.0 (PyTorch, CPU).

One generated set (`ssod synth`), one recipe (YOLOX-nano, defaults of `exps/default/yolox_nano.py`
plus the overrides in RECIPE), several seeds, trained by ssod (`benches/accuracy_vs_official.rhai`)
and by the official `yolox.core.Trainer` on the CPU (torch.set_num_threads(2)); both final EMA
models are then run through the same inference (the official model class, `ValTransform`,
`postprocess`, boxes divided by the letterbox ratio as `COCOEvaluator` does) and the same COCO
evaluation (`ssod eval`, pycocotools' numbers, max dets 1/10/100). The last epoch's mean training
losses of both are recorded too (iou weighted by 5 on both sides, as YOLOX logs it).

    cargo build --release
    python3 -m pip install pycocotools          # the official COCODataset reads its json with it
    nohup python3 benches/accuracy_vs_official.py --out /tmp/acc > /tmp/acc.log 2>&1 &

Resumable: a finished run (its `result.json`) is not trained again. `--sides ssod` or
`--sides official` runs one side (`--sides ""` none), `--seeds 1` one seed; `--ssod BINARY
--ssod-name NAME` sets another ssod build beside the default one. Prints a markdown table of
every finished run in `--out` and writes `summary.json`. Every training runs alone (one process
at a time).

Subcommands used by the driver itself: `official-train` (one official run) and `predict`
(detections of a weights file on the test set).
"""
import argparse
import importlib.machinery
import json
import math
import os
import random
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The shared recipe (YOLOX-nano; everything not listed is the nano/base default on both sides:
# mosaic_prob 0.5, mosaic_scale (0.5, 1.5), no mixup, degrees 10, translate 0.1, shear 2,
# hsv 1.0, flip 0.5, SGD nesterov 0.9, wd 5e-4, EMA 0.9998, min_lr_ratio 0.05, test_conf 0.01,
# nms 0.65).
RECIPE = {
    "epochs": 30,
    "warmup": 3,
    "no_aug": 5,
    "batch": 8,
    "lr_per_image": 0.005 / 8,
    "size_h": 192,
    "size_w": 320,
    "random_lo": 5,
    "random_hi": 7,
}
DATA = {"train": 256, "test": 128, "size": "320x192", "seed": 1}


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# --------------------------------------------------------------------------------------------
# The official side on the CPU
# --------------------------------------------------------------------------------------------


def _stub_missing_modules():
    """tqdm and tensorboard are imported by yolox but not used by this driver."""
    try:
        import tqdm  # noqa: F401
    except ImportError:
        m = types.ModuleType("tqdm")
        m.__spec__ = importlib.machinery.ModuleSpec("tqdm", None)
        m.tqdm = lambda it=None, *a, **k: it
        sys.modules["tqdm"] = m
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        m = types.ModuleType("torch.utils.tensorboard")
        m.__spec__ = importlib.machinery.ModuleSpec("torch.utils.tensorboard", None)

        class SummaryWriter:
            def __init__(self, *a, **k):
                pass

            def add_scalar(self, *a, **k):
                pass

        m.SummaryWriter = SummaryWriter
        sys.modules["torch.utils.tensorboard"] = m


def yolox_layout(data, work):
    """The COCODataset layout (annotations/<json>, train2017/, val2017/) as symlinks to `data`."""
    root = os.path.join(work, "yolox_data")
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    links = {
        "annotations/train.json": "train.json",
        "annotations/test.json": "test.json",
        "train2017": "training/images",
        "val2017": "test/images",
    }
    for name, target in links.items():
        p = os.path.join(root, name)
        if not os.path.lexists(p):
            os.symlink(os.path.join(os.path.abspath(data), target), p)
    return root


def official_exp(recipe, data_root, seed, workers):
    from yolox.exp import get_exp

    exp = get_exp(None, "yolox-nano")
    exp.num_classes = 1
    exp.data_dir = data_root
    exp.train_ann = "train.json"
    exp.val_ann = "test.json"
    exp.input_size = (recipe["size_h"], recipe["size_w"])
    exp.test_size = (recipe["size_h"], recipe["size_w"])
    exp.random_size = (recipe["random_lo"], recipe["random_hi"])
    exp.max_epoch = recipe["epochs"]
    exp.warmup_epochs = recipe["warmup"]
    exp.no_aug_epochs = recipe["no_aug"]
    exp.basic_lr_per_img = recipe["lr_per_image"]
    exp.data_num_workers = workers
    exp.seed = seed
    exp.eval_interval = 10**9
    exp.print_interval = 10**9
    exp.save_history_ckpt = False
    return exp


def official_train(args):
    """One official training run on the CPU: yolox.core.Trainer with its CUDA calls replaced."""
    import numpy as np
    import torch

    _stub_missing_modules()
    from yolox.utils import configure_module

    configure_module()  # tools/train.py: cv2 single-threaded, no OpenCL
    torch.set_num_threads(args.threads)
    recipe = json.loads(args.recipe)
    os.makedirs(args.out, exist_ok=True)
    data_root = yolox_layout(args.data, args.out)

    import yolox.core.trainer as trainer_mod
    from yolox.utils import ModelEMA  # noqa: F401

    exp = official_exp(recipe, data_root, args.seed, args.workers)
    exp.output_dir = args.out

    # tools/train.py: seeds before the trainer builds the model.
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    class CpuPrefetcher:
        """DataPrefetcher without the CUDA stream."""

        def __init__(self, loader):
            self.it = iter(loader)

        def next(self):
            inps, targets, _, _ = next(self.it)
            return inps, targets

    def random_resize(data_loader, epoch, rank, is_distributed):
        # yolox_base.py random_resize without the CUDA tensor.
        size_factor = exp.input_size[1] * 1.0 / exp.input_size[0]
        size = random.randint(*exp.random_size)
        return (int(32 * size), 32 * int(size * size_factor))

    def worker_init(worker_id):
        # Deterministic per seed (the official worker_init_reset_seed draws from uuid4).
        s = (args.seed * 1000 + worker_id) % 2**32
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

    import yolox.exp.yolox_base as base_mod
    import yolox.data as data_mod

    orig_loader = base_mod.Exp.get_data_loader

    def get_data_loader(self, batch_size, is_distributed, no_aug=False, cache_img=False):
        real = data_mod.worker_init_reset_seed
        data_mod.worker_init_reset_seed = worker_init
        try:
            return orig_loader(self, batch_size, is_distributed, no_aug, cache_img)
        finally:
            data_mod.worker_init_reset_seed = real

    # On the class: an instance attribute would enter the exp's printed table (and a bound
    # method's repr holds the exp's repr, a recursion).
    cls = type(exp)
    cls.get_data_loader = get_data_loader
    cls.random_resize = lambda self, *a: random_resize(*a)
    cls.get_evaluator = lambda self, *a, **k: None
    trainer_mod.DataPrefetcher = CpuPrefetcher
    trainer_mod.gpu_mem_usage = lambda: 0.0
    trainer_mod.torch.cuda.set_device = lambda *a, **k: None

    losses = []  # per iteration
    state = {"t0": time.time()}

    class Recorder:
        def __init__(self, inner, trainer):
            self.inner, self.trainer = inner, trainer

        def update(self, values=None, **kw):
            row = {k: float(v) for k, v in kw.items() if k.endswith("loss") or k == "num_fg"}
            row["epoch"] = self.trainer.epoch + 1
            row["size"] = list(self.trainer.input_size)
            losses.append(row)
            self.inner.update(values, **kw)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __getitem__(self, k):
            return self.inner[k]

    class CpuTrainer(trainer_mod.Trainer):
        def __init__(self, exp, a):
            super().__init__(exp, a)
            self.device = "cpu"
            self.meter = Recorder(self.meter, self)

        def after_epoch(self):
            ep = [r for r in losses if r["epoch"] == self.epoch + 1]
            mean = {k: sum(r[k] for r in ep) / len(ep) for k in ("total_loss", "iou_loss", "conf_loss", "cls_loss", "l1_loss")}
            log(f"official epoch {self.epoch + 1}/{self.max_epoch}: "
                + ", ".join(f"{k} {v:.3f}" for k, v in mean.items())
                + f" ({time.time() - state['t0']:.0f} s)")

        def save_ckpt(self, ckpt_name, update_best_ckpt=False):
            pass

    targs = types.SimpleNamespace(
        fp16=False, batch_size=recipe["batch"], experiment_name="official", resume=False,
        ckpt=None, start_epoch=None, cache=False, occupy=False, logger="tensorboard", opts=[],
    )
    trainer = CpuTrainer(exp, targs)
    trainer.train()

    from safetensors.torch import save_file

    ema = trainer.ema_model.ema
    sd = {k: v.detach().contiguous() for k, v in ema.state_dict().items()}
    save_file(sd, os.path.join(args.out, "last.safetensors"))
    with open(os.path.join(args.out, "losses.json"), "w") as f:
        json.dump(losses, f)
    log(f"official run done in {time.time() - state['t0']:.0f} s")


# --------------------------------------------------------------------------------------------
# Inference shared by both sides: the official model and post-processing, COCOEvaluator's
# conversion to COCO results
# --------------------------------------------------------------------------------------------


def predict(args):
    import cv2
    import numpy as np
    import torch
    from safetensors.torch import load_file

    _stub_missing_modules()
    torch.set_num_threads(args.threads)
    recipe = json.loads(args.recipe)
    from yolox.data.data_augment import ValTransform
    from yolox.utils import postprocess, xyxy2xywh

    exp = official_exp(recipe, None, 0, 0)
    model = exp.get_model()
    sd = load_file(args.weights)
    model.load_state_dict(sd, strict=True)
    model.eval()
    size = exp.test_size
    with open(args.gt) as f:
        gt = json.load(f)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    tf = ValTransform(legacy=False)
    results = []
    images = gt["images"]
    with torch.no_grad():
        for i in range(0, len(images), 8):
            chunk = images[i:i + 8]
            batch, ratios = [], []
            for im in chunk:
                img = cv2.imread(os.path.join(args.images, im["file_name"]))
                x, _ = tf(img, None, size)
                batch.append(torch.from_numpy(x))
                ratios.append(min(size[0] / img.shape[0], size[1] / img.shape[1]))
            out = model(torch.stack(batch))
            out = postprocess(out, exp.num_classes, exp.test_conf, exp.nmsthre)
            for im, r, o in zip(chunk, ratios, out):
                if o is None:
                    continue
                boxes = xyxy2xywh(o[:, 0:4] / r)
                scores = o[:, 4] * o[:, 5]
                for b, s, c in zip(boxes.tolist(), scores.tolist(), o[:, 6].tolist()):
                    results.append({"image_id": im["id"], "category_id": cat_ids[int(c)],
                                    "bbox": b, "score": s})
    with open(args.out, "w") as f:
        json.dump(results, f)


# --------------------------------------------------------------------------------------------
# Same batches: both trainers on one recorded batch sequence from the same initial weights
# --------------------------------------------------------------------------------------------


def same_batches(args):
    """Record the official loader's batches (fixed input size) and the official initial weights,
    train the official step (Trainer.train_one_iter's arithmetic) on them, then ssod's
    (`tests/accuracy_same_batches.rs`), and compare the per-epoch losses and the final APs."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    _stub_missing_modules()
    from yolox.utils import configure_module

    configure_module()
    torch.set_num_threads(args.threads)
    recipe = dict(RECIPE)
    for kv in args.set:
        k, v = kv.split("=", 1)
        recipe[k] = type(recipe[k])(v)
    recipe["random_lo"] = recipe["random_hi"] = recipe["size_h"] // 32
    out = args.out
    os.makedirs(out, exist_ok=True)
    data_root = yolox_layout(args.data, out)
    exp = official_exp(recipe, data_root, args.seed, args.workers)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    model = exp.get_model()
    model.train()
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
              os.path.join(out, "init.safetensors"))
    epochs = recipe["epochs"]
    no_aug_start = epochs - recipe["no_aug"] - 1
    meta_path = os.path.join(out, "meta.json")
    if not os.path.exists(meta_path):
        import yolox.data as data_mod

        def worker_init(worker_id):
            s = (args.seed * 1000 + worker_id) % 2**32
            random.seed(s)
            np.random.seed(s)
            torch.manual_seed(s)

        data_mod.worker_init_reset_seed = worker_init
        loader = exp.get_data_loader(recipe["batch"], False, no_aug=False)
        iters = len(loader)
        it = iter(loader)
        zero_rows = 0
        for e in range(epochs):
            if e == no_aug_start:
                loader.close_mosaic()
            for i in range(iters):
                inps, targets, _, _ = next(it)
                t = targets.numpy().copy()
                if args.drop_zero_size:
                    for b in range(t.shape[0]):
                        n = int((t[b].sum(1) > 0).sum())
                        rows = [r for r in t[b, :n] if r[3] > 0 and r[4] > 0]
                        zero_rows += n - len(rows)
                        t[b] = 0
                        if rows:
                            t[b, :len(rows)] = np.stack(rows)
                np.save(os.path.join(out, f"batch_{e}_{i}_images.npy"), inps.numpy().astype(np.uint8))
                np.save(os.path.join(out, f"batch_{e}_{i}_labels.npy"), t.astype(np.float32))
            log(f"recorded epoch {e + 1}/{epochs}")
        del it, loader
        ssod_recipe = {
            "max_epoch": epochs, "warmup_epochs": recipe["warmup"], "no_aug_epochs": recipe["no_aug"],
            "batch_size": recipe["batch"], "basic_lr_per_img": recipe["lr_per_image"],
            "input_size": [recipe["size_h"], recipe["size_w"]],
            "test_size": [recipe["size_h"], recipe["size_w"]],
            "random_size": [recipe["random_lo"], recipe["random_hi"]], "seed": args.seed,
        }
        with open(meta_path, "w") as f:
            json.dump({"epochs": epochs, "iters_per_epoch": iters, "no_aug_start": no_aug_start,
                       "recipe": ssod_recipe, "zero_size_rows_dropped": zero_rows}, f)
    with open(meta_path) as f:
        meta = json.load(f)
    iters = meta["iters_per_epoch"]

    if not os.path.exists(os.path.join(out, "official_ema.safetensors")):
        from yolox.utils import ModelEMA

        optimizer = exp.get_optimizer(recipe["batch"])
        sched = exp.get_lr_scheduler(exp.basic_lr_per_img * recipe["batch"], iters)
        ema = ModelEMA(model, 0.9998)
        rows = []
        for e in range(epochs):
            if e == no_aug_start:
                model.head.use_l1 = True
            for i in range(iters):
                inps = torch.from_numpy(np.load(os.path.join(out, f"batch_{e}_{i}_images.npy"))).float()
                targets = torch.from_numpy(np.load(os.path.join(out, f"batch_{e}_{i}_labels.npy")))
                o = model(inps, targets)
                optimizer.zero_grad()
                o["total_loss"].backward()
                optimizer.step()
                ema.update(model)
                lr = sched.update_lr(e * iters + i + 1)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                rows.append({"epoch": e + 1, "iter": i, "total": float(o["total_loss"]),
                             "iou": float(o["iou_loss"]), "obj": float(o["conf_loss"]),
                             "cls": float(o["cls_loss"]), "l1": float(o["l1_loss"]),
                             "num_fg": float(o["num_fg"])})
            m = [r for r in rows if r["epoch"] == e + 1]
            log(f"official epoch {e + 1}: total {sum(r['total'] for r in m) / len(m):.3f} "
                f"obj {sum(r['obj'] for r in m) / len(m):.3f}")
        with open(os.path.join(out, "official_losses.jsonl"), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        save_file({k: v.detach().contiguous() for k, v in ema.ema.state_dict().items()},
                  os.path.join(out, "official_ema.safetensors"))

    tag = args.ssod_tag
    if not os.path.exists(os.path.join(out, f"{tag}_ema.safetensors")):
        env = dict(os.environ, SSOD_SAME_BATCHES=os.path.abspath(out),
                   SSOD_SAME_BATCHES_TAG=tag, RAYON_NUM_THREADS=str(args.threads))
        if args.keep_zero_size:
            env["SSOD_SAME_BATCHES_KEEP_ZERO"] = "1"
        run_cmd_env(["cargo", "test", "--release", "--test", "accuracy_same_batches", "--",
                     "--ignored", "--nocapture"], os.path.join(out, f"{tag}.log"), env,
                    cwd=args.repo)

    def per_epoch(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f]
        for r in rows:
            # The official num_fg is foregrounds per ground truth (get_losses returns
            # num_fg / max(num_gts, 1)); ssod's test writes both counts.
            if "num_gt" in r:
                r["num_fg"] = r["num_fg"] / max(r["num_gt"], 1)
        out_rows = []
        for e in range(1, epochs + 1):
            m = [r for r in rows if r["epoch"] == e]
            out_rows.append({k: sum(r[k] for r in m) / len(m) for k in ("total", "iou", "obj", "cls", "l1", "num_fg")})
        return out_rows

    off = per_epoch(os.path.join(out, "official_losses.jsonl"))
    sso = per_epoch(os.path.join(out, f"{tag}_losses.jsonl"))
    print(f"epoch | official total / obj / fg per gt | {tag} total / obj / fg per gt")
    for e, (a, b) in enumerate(zip(off, sso)):
        print(f"{e + 1:3d} | {a['total']:.3f} / {a['obj']:.3f} / {a['num_fg']:.2f} | "
              f"{b['total']:.3f} / {b['obj']:.3f} / {b['num_fg']:.2f}")
    res = {}
    for side in ("official", tag):
        if not os.path.exists(os.path.join(out, side, "eval.json")):
            evaluate(args, os.path.join(out, f"{side}_ema.safetensors"), os.path.join(out, side),
                     recipe)
        with open(os.path.join(out, side, "eval.json")) as f:
            stats = json.load(f)["stats"]
        res[side] = {"AP": stats[0], "AP50": stats[1]}
        print(side, res[side])
    with open(os.path.join(out, f"same_batches_{tag}.json"), "w") as f:
        json.dump({"official": off, tag: sso, "eval": res, "recipe": recipe}, f, indent=1)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def omp_env():
    """PyTorch's OpenMP threads sleep instead of spinning while they wait: on a 2-core machine
    shared with the loader's workers (and other jobs) spinning threads made the official step
    3-4x slower (nano 320/8: 2.8 images/s against 8.3 with PASSIVE under a load of 4)."""
    return dict(os.environ, OMP_WAIT_POLICY="PASSIVE")


def run_cmd(cmd, logfile):
    run_cmd_env(cmd, logfile, None)


def run_cmd_env(cmd, logfile, env, cwd=ROOT):
    log("$ " + " ".join(cmd) + f"  > {logfile}")
    os.makedirs(os.path.dirname(logfile), exist_ok=True)
    with open(logfile, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    if r.returncode != 0:
        raise SystemExit(f"failed ({r.returncode}): see {logfile}")


def ssod_losses(run_dir):
    """The last epoch's mean losses from ssod's metrics.csv (iou there is unweighted)."""
    import csv

    with open(os.path.join(run_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    g = lambda k: float(last["train/" + k])  # noqa: E731
    return {
        "total": g("total"), "iou": 5.0 * g("iou"), "obj": g("obj"),
        "cls": g("cls"), "l1": g("l1"), "epoch": int(last["epoch"]),
        "own_eval_AP": float(last["AP"]), "own_eval_AP50": float(last["AP50"]),
    }


def official_losses(run_dir, epochs):
    with open(os.path.join(run_dir, "losses.json")) as f:
        rows = [r for r in json.load(f) if r["epoch"] == epochs]
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    return {
        "total": mean("total_loss"), "iou": mean("iou_loss"), "obj": mean("conf_loss"),
        "cls": mean("cls_loss"), "l1": mean("l1_loss"), "epoch": epochs,
    }


def evaluate(args, weights, run_dir, recipe):
    dets = os.path.join(run_dir, "detections.json")
    run_cmd_env([sys.executable, __file__, "predict", "--weights", weights, "--gt",
             os.path.join(args.data, "test.json"), "--images", os.path.join(args.data, "test", "images"),
             "--out", dets, "--recipe", json.dumps(recipe), "--threads", str(args.threads)],
            os.path.join(run_dir, "predict.log"), omp_env())
    out = os.path.join(run_dir, "eval.json")
    run_cmd([args.ssod, "eval", "--gt", os.path.join(args.data, "test.json"), "--dt", dets,
             "--max-dets", "1,10,100", "--json", out, "--force"], os.path.join(run_dir, "eval.log"))
    with open(out) as f:
        stats = json.load(f)["stats"]
    return {"AP": stats[0], "AP50": stats[1]}


def one_run(args, side, seed, recipe):
    label = args.ssod_name if side == "ssod" else side
    run_dir = os.path.join(args.out, f"{label}_seed{seed}")
    result_path = os.path.join(run_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    t0 = time.time()
    if side == "ssod":
        train_dir = os.path.join(run_dir, "train")
        notebook = os.path.join(run_dir, "notebook")
        if os.path.exists(train_dir):
            subprocess.run(["rm", "-rf", train_dir, notebook])
        cmd = [args.ssod, "run", os.path.join(ROOT, "benches", "accuracy_vs_official.rhai"),
               "--out", notebook, "--fresh", "--set", f"data={os.path.abspath(args.data)}",
               "--set", f"seed={seed}", "--set", f"out={train_dir}",
               "--set", f"workers={args.workers}"]
        for k, v in recipe.items():
            cmd += ["--set", f"{k}={v}"]
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        log("$ " + " ".join(cmd))
        with open(os.path.join(run_dir, "train.log"), "w") as f:
            r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        if r.returncode != 0:
            raise SystemExit(f"ssod run failed: see {run_dir}/train.log")
        weights = os.path.join(train_dir, "last.safetensors")
        losses = ssod_losses(train_dir)
    else:
        run_cmd_env([sys.executable, __file__, "official-train", "--data", args.data, "--out",
                     run_dir, "--seed", str(seed), "--recipe", json.dumps(recipe), "--threads",
                     str(args.threads), "--workers", str(args.workers)],
                    os.path.join(run_dir, "train.log"), omp_env())
        weights = os.path.join(run_dir, "last.safetensors")
        losses = official_losses(run_dir, recipe["epochs"])
    train_s = time.time() - t0
    metrics = evaluate(args, weights, run_dir, recipe)
    result = {"side": label, "seed": seed, "train_seconds": train_s, "losses": losses, **metrics}
    with open(result_path, "w") as f:
        json.dump(result, f, indent=1)
    log(f"{label} seed {seed}: AP {metrics['AP']:.4f} AP50 {metrics['AP50']:.4f} "
        f"final loss {losses['total']:.3f} (obj {losses['obj']:.3f}) in {train_s:.0f} s")
    return result


def mean_std(xs):
    m = sum(xs) / len(xs)
    s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, s


def main_run(args):
    recipe = dict(RECIPE)
    for kv in args.set:
        k, v = kv.split("=", 1)
        if k not in recipe:
            raise SystemExit(f"--set {k}: not a recipe key ({', '.join(recipe)})")
        recipe[k] = type(recipe[k])(v)
    os.makedirs(args.out, exist_ok=True)
    if args.data is None:
        args.data = os.path.join(args.out, "data")
        if not os.path.exists(os.path.join(args.data, "test.json")):
            run_cmd([args.ssod, "synth", "--out", args.data, "--train", str(DATA["train"]),
                     "--test", str(DATA["test"]), "--size", DATA["size"], "--videos", "0",
                     "--seed", str(DATA["seed"])], os.path.join(args.out, "synth.log"))
    log(f"recipe {recipe}")
    for seed in args.seeds:
        for side in args.sides.split(","):
            if side:
                one_run(args, side, seed, recipe)
    # Every finished run in --out (earlier invocations too), official first.
    import glob

    results = []
    for path in sorted(glob.glob(os.path.join(args.out, "*_seed*", "result.json"))):
        with open(path) as f:
            results.append(json.load(f))
    results.sort(key=lambda r: (r["side"] != "official", r["side"], r["seed"]))
    summary = {"recipe": recipe, "data": args.data, "runs": results}
    lines = ["| side | seed | AP | AP50 | final loss (total / iou×5 / obj / cls / l1) | train s |",
             "|---|---|---|---|---|---|"]
    for r in results:
        l = r["losses"]  # noqa: E741
        lines.append(f"| {r['side']} | {r['seed']} | {r['AP']:.4f} | {r['AP50']:.4f} | "
                     f"{l['total']:.3f} / {l['iou']:.3f} / {l['obj']:.3f} / {l['cls']:.3f} / "
                     f"{l['l1']:.3f} | {r['train_seconds']:.0f} |")
    for side in dict.fromkeys(r["side"] for r in results):
        rs = [r for r in results if r["side"] == side]
        ap, ap50 = (mean_std([r[k] for r in rs]) for k in ("AP", "AP50"))
        tot, obj = (mean_std([r["losses"][k] for r in rs]) for k in ("total", "obj"))
        summary[side] = {"AP": ap, "AP50": ap50, "loss": tot, "obj": obj}
        lines.append(f"| **{side}** mean ± std | | {ap[0]:.4f} ± {ap[1]:.4f} | "
                     f"{ap50[0]:.4f} ± {ap50[1]:.4f} | {tot[0]:.3f} ± {tot[1]:.3f} "
                     f"(obj {obj[0]:.3f} ± {obj[1]:.3f}) | |")
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd")
    r = sub.add_parser("run", help="the benchmark (default)")
    for p in (ap, r):
        p.add_argument("--out", default="/tmp/accuracy_vs_official")
        p.add_argument("--data", default=None, help="an ssod synth folder (default: generated in --out)")
        p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
        p.add_argument("--sides", default="ssod,official")
        p.add_argument("--ssod", default=os.path.join(ROOT, "target", "release", "ssod"))
        p.add_argument("--ssod-name", default="ssod",
                       help="label of the ssod runs (their folders: NAME_seedS), to set a variant "
                            "binary beside the default one")
        p.add_argument("--threads", type=int, default=2)
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--set", action="append", default=[], help="recipe key=value")
    t = sub.add_parser("official-train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--seed", type=int, required=True)
    t.add_argument("--recipe", required=True)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--workers", type=int, default=2)
    sb = sub.add_parser("same-batches")
    sb.add_argument("--data", required=True)
    sb.add_argument("--out", required=True)
    sb.add_argument("--seed", type=int, default=1)
    sb.add_argument("--threads", type=int, default=2)
    sb.add_argument("--workers", type=int, default=2)
    sb.add_argument("--ssod", default=os.path.join(ROOT, "target", "release", "ssod"))
    sb.add_argument("--drop-zero-size", action="store_true",
                    help="remove zero-size boxes from the recorded labels (ssod drops them)")
    sb.add_argument("--keep-zero-size", action="store_true",
                    help="ssod's side trains on the zero-size boxes too (the test's own step)")
    sb.add_argument("--ssod-tag", default="ssod",
                    help="name of ssod's outputs in --out (another tag reuses the recording "
                         "and the official run)")
    sb.add_argument("--repo", default=ROOT, help="the checkout whose test runs ssod's side")
    sb.add_argument("--set", action="append", default=[], help="recipe key=value")
    p = sub.add_parser("predict")
    p.add_argument("--weights", required=True)
    p.add_argument("--gt", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--recipe", required=True)
    p.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.cmd == "official-train":
        official_train(args)
    elif args.cmd == "predict":
        predict(args)
    elif args.cmd == "same-batches":
        same_batches(args)
    else:
        main_run(args)


if __name__ == "__main__":
    main()
