#!/usr/bin/env bash
# Run HERE (a machine with the Rust toolchain): builds the release binary and the test binaries
# with GPU halves, and copies them into .device/ (git-ignored: copy it to the GPU machine with the tree;
# docs/gpu.md). Then, on the GPU machine: `bash benches/gpu/checks.sh` (see there).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release
mkdir -p .device
cp target/release/ssod .device/ssod
for t in cuda_engine cuda_conv_auto cuda_selftest train_recipe train_overfit; do
    exe=$(cargo test --release --test "$t" --no-run 2>&1 | grep -o "target/release/deps/$t-[0-9a-f]*" | tail -n 1)
    [ -n "$exe" ] || { echo "no test binary for $t" >&2; exit 1; }
    cp "$exe" ".device/test-$t"
done
# The kernels' PTX for the H100/H200 (compute_90), compiled here into the PTX cache that
# checks.sh points at: no step there spends its device time in NVRTC (if the device's NVRTC
# version differs, the keys differ and it compiles there, as without this).
NVRTC_LIB="${SSOD_NVRTC_DIR:-$HOME/.cache/ssod/nvrtc-13.0}/nvidia/cu13/lib"
rm -rf .device/ptx-cache
LD_LIBRARY_PATH="$NVRTC_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" SSOD_PTX_CACHE=.device/ptx-cache \
    .device/ssod selftest --compile compute_90 | tail -n 1 ||
    echo "no NVRTC here ($NVRTC_LIB): the device machine compiles the kernels itself"
git rev-parse --short HEAD > .device/commit
du -sh .device
