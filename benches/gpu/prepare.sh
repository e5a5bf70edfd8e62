#!/usr/bin/env bash
# Run HERE (a machine with the Rust toolchain): builds the release binary and the test binaries
# with GPU halves, and copies them into .device/ (git-ignored; name it in the device tool's
# `carry`). Then, on the GPU machine: `bash benches/gpu/checks.sh` (see there).
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
git rev-parse --short HEAD > .device/commit
du -sh .device
