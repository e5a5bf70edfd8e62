#!/usr/bin/env bash
# Run ON THE GPU MACHINE, in the repository root, after benches/gpu/prepare.sh here:
#   with .device/ copied along (git-ignored), command: bash benches/gpu/checks.sh (docs/gpu.md)
# Every GPU check and benchmark in one run, most important first, each step under its own time
# limit so one hang cannot eat the device budget; results (logs, JSON) go to $OUT (default
# gpu-out/). A failing step is reported and the next one runs; the exit status is the number of
# failed steps. SKIP_BENCH=1 runs only the checks, SKIP_CHECKS=1 only the benchmarks: the whole
# script can outlast one device call (10 min), so run it as two calls. QUICK=1 keeps what
# decides the GPU training verdict, in this order: the selftest, the `auto` test, the training benchmark (default
# convs: `auto`) next to PyTorch (bf16, f32), then with im2col, training with the implicit convs
# (bf16 and f32), and the bf16 conv layers both ways. SEED: the selftest's inputs.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
PIPLIB=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cu13/lib   # PyTorch's CUDA 13 wheels
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:$PIPLIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# PTX compiled by prepare.sh (and by each step for the next: ptx_cache.rs).
export SSOD_PTX_CACHE="$PWD/.device/ptx-cache"
# PyTorch for the baselines: $PY if set, else the machine's torch venv, else python3 on PATH.
if [ -z "${PY:-}" ]; then
    PY=python3
    if [ -x /opt/torch/.venv/bin/python3 ]; then PY=/opt/torch/.venv/bin/python3; fi
fi
failed=0
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s)"
    if timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; then
        echo "    ok in $((SECONDS - t0)) s; last lines:"
        # Only about eight files come back from a device call: the results travel on stdout.
        tail -n 6 "$OUT/$name.txt" | sed 's/^/    /'
    else
        echo "    FAILED (exit $?) in $((SECONDS - t0)) s; failed rows (with the selftest's detail line), last lines:"
        grep -A1 -E " (FAIL|ERROR) " "$OUT/$name.txt" | head -n 24 | cut -c1-220 | sed 's/^/    /'
        tail -n 15 "$OUT/$name.txt" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}
echo "commit $(cat .device/commit 2>/dev/null || echo unknown)"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/card.txt"

# 1. Parity: every kernel against the CPU (exit 1 on any failure), then the carried test binaries.
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
    step selftest 240 ./.device/ssod selftest --device cuda --seed "${SEED:-0}"
    # `auto` (conv2d/algorithm.rs): its own binary, seconds.
    step test-cuda_conv_auto 60 ./.device/test-cuda_conv_auto
    if [ "${QUICK:-0}" != 1 ]; then
        step test-cuda_selftest 120 ./.device/test-cuda_selftest
        step test-cuda_engine 120 ./.device/test-cuda_engine
        step test-train_recipe 120 ./.device/test-train_recipe
        step test-train_overfit-cuda 240 env SSOD_TEST_DEVICE=cuda ./.device/test-train_overfit
        step test-train_overfit-cuda-bf16 240 env SSOD_TEST_DEVICE=cuda SSOD_TEST_PRECISION=bf16 \
            ./.device/test-train_overfit
    fi
fi
# The implicit-GEMM tensor-core convs (conv2d/implicit_gemm.rs) in the real training loop (QUICK:
# after the training benchmarks, which decide #6).
overfit_implicit() {
    step test-train_overfit-cuda-implicit 240 env SSOD_CUDA_CONV=implicit SSOD_TEST_DEVICE=cuda \
        ./.device/test-train_overfit
    step test-train_overfit-cuda-bf16-implicit 240 env SSOD_CUDA_CONV=implicit SSOD_TEST_DEVICE=cuda \
        SSOD_TEST_PRECISION=bf16 ./.device/test-train_overfit
}
[ "${SKIP_CHECKS:-0}" != 1 ] && [ "${QUICK:-0}" != 1 ] && overfit_implicit
[ "${SKIP_BENCH:-0}" = 1 ] && exit "$failed"

# 2. Benchmarks, most wanted first (a call that runs out of time loses the tail): the training
# step's target (ssod next to PyTorch eager, bf16 and f32, with the im2col convs and with `auto`: per
# conv pass the faster of im2col and the implicit-GEMM tensor-core convs (bf16 products, and in
# f32 three TF32 products per product), as PyTorch's cudnn.benchmark picks cuDNN's algorithms),
# then the conv layers both ways next to cuDNN and the card's matrix rate (per layer, where the
# implicit kernels win), then the implicit convs alone and A/B runs of the older switches (their
# answers are in BENCHMARKS.md: last when time is short).
# STEPS: timed steps of each training benchmark (ssod and PyTorch alike).
S="--model yolox-s --size 640 --batch 16 --steps ${STEPS:-8} --gts 30 --device cuda"
T="--model s --size 640 --batch 16 --steps ${STEPS:-10} --warmup 3 --device cuda"
# The default convs are `auto` (context.rs process_default).
step bench-s-bf16 150 ./.device/ssod bench train $S --precision bf16
step torch-s-bf16 150 "$PY" benches/torch_yolox.py $T --precision bf16 --json "$OUT/torch-s-bf16.json"
step bench-s-f32 150 ./.device/ssod bench train $S --precision f32
step torch-s-f32 150 "$PY" benches/torch_yolox.py $T --precision f32 --json "$OUT/torch-s-f32.json"
# End to end: the training loader (one worker per core: decode, mosaic, affine, mixup, HSV) beside
# the steps, on a generated FloW-like set at 1280x720, then with decoded images kept in RAM.
step synth-e2e 120 ./.device/ssod synth --out /tmp/ssod-e2e --train 512 --test 0 --videos 0 --seed 1 --force
step bench-s-bf16-e2e 180 ./.device/ssod bench train $S --precision bf16 --data /tmp/ssod-e2e
step bench-s-bf16-e2e-cache 180 ./.device/ssod bench train $S --precision bf16 --data /tmp/ssod-e2e --cache
# Pretraining (docs/pretraining.md) at the study's sizes, ssod next to PyTorch eager: center loss
# (128 crops of 224 px per step) and patch SSL (16 frames of 1280x720, 144 patches of 224 px).
PC="--method center --size 224 --batch 128 --steps ${STEPS:-8}"
PS="--method ssl --size 224 --batch 16 --frame 1280x720 --steps ${STEPS:-8}"
for p in f32 bf16; do
    step "pretrain-center-$p" 150 ./.device/ssod bench pretrain $PC --model yolox-s --device cuda --precision $p
    step "torch-pretrain-center-$p" 120 "$PY" benches/torch_pretrain.py $PC --model s --warmup 3 \
        --device cuda --precision $p
    step "pretrain-ssl-$p" 150 ./.device/ssod bench pretrain $PS --model yolox-s --device cuda --precision $p
    step "torch-pretrain-ssl-$p" 120 "$PY" benches/torch_pretrain.py $PS --model s --warmup 3 \
        --device cuda --precision $p
done
step bench-s-bf16-im2col 120 ./.device/ssod bench train $S --precision bf16 --conv im2col
step bench-s-f32-im2col 120 ./.device/ssod bench train $S --precision f32 --conv im2col
[ "${SKIP_CHECKS:-0}" != 1 ] && [ "${QUICK:-0}" = 1 ] && overfit_implicit
# 3. Per conv layer, ssod (im2col and implicit GEMM side by side) next to cuDNN (which layers
# lose, and which pass).
for p in bf16 f32; do
    rm -f "$OUT/conv-s-$p.json"
    step "conv-s-$p" 180 ./.device/ssod bench conv --model yolox-s --size 640 --batch 16 --device cuda \
        --precision $p --conv both --json "$OUT/conv-s-$p.json"
    step "torch-conv-s-$p" 120 "$PY" benches/torch_conv_layers.py "$OUT/conv-s-$p.json" --precision $p
    [ "${QUICK:-0}" = 1 ] && exit "$failed"
done
step bench-s-bf16-implicit 120 ./.device/ssod bench train $S --precision bf16 --conv implicit
step bench-s-f32-implicit 120 ./.device/ssod bench train $S --precision f32 --conv implicit
step bench-s-bf16-implicit-profile 120 ./.device/ssod bench train $S --precision bf16 --conv implicit \
    --profile-ops
step bench-s-tf32 150 ./.device/ssod bench train $S --precision tf32
step bench-s-tf32-im2col 120 ./.device/ssod bench train $S --precision tf32 --conv im2col
step bench-simota 60 ./.device/ssod bench simota --batch 16 --size 640 --gts 30
# bf16 products with every activation kept f32 (backend/cuda/bf16.rs): what the storage gains.
step bench-s-bf16-f32storage 120 env SSOD_CUDA_BF16_STORAGE=0 ./.device/ssod bench train $S \
    --precision bf16
# The driver's default pool (memory returned at every synchronisation, context.rs
# keep_freed_memory): what keeping freed memory gains.
step bench-s-f32-poolrelease 120 env SSOD_CUDA_POOL_RELEASE=1 ./.device/ssod bench train $S \
    --precision f32
# The weight gradient's split reduction (conv2d/weight_grad.rs) against no split, f32 im2col.
step conv-s-f32-nosplit 120 env SSOD_CUDA_WGRAD_SLICE=0 ./.device/ssod bench conv --model yolox-s \
    --size 640 --batch 16 --device cuda --precision f32 --conv im2col
# As training runs: no GPU wait after each stage (trainer.rs set_stage_times), bf16 and f32.
step bench-s-bf16-nostages 150 ./.device/ssod bench train $S --precision bf16 --no-stage-times
step bench-s-f32-nostages 150 ./.device/ssod bench train $S --precision f32 --no-stage-times
# The same two runs again: the spread between runs of one version (auto may choose differently).
step bench-s-bf16-again 150 ./.device/ssod bench train $S --precision bf16
step bench-s-f32-again 150 ./.device/ssod bench train $S --precision f32
exit "$failed"
