#!/usr/bin/env bash
# Host emulation check of every kernel (no GPU, no NVRTC): needs g++ and python3 with numpy.
# Compiles kernels/*.cu as C++ with kernels/emu/emu.h (blockDim = gridDim = 1, THREADS = 1), dumps
# the parity cases' inputs and CPU outputs, runs each case through the emulated kernels and
# compares with the selftest's error measure. Exit 1 on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/../.."
W="${1:-$(mktemp -d)}"
mkdir -p "$W/dump"
for f in kernels/*.cu; do
    s=$(basename "$f" .cu)
    sed 's/#define THREADS 256/#define THREADS 1/' "$f" > "$W/$s.cpp"
    g++ -O1 -ffp-contract=off -shared -fPIC -include kernels/emu/emu.h "$W/$s.cpp" -o "$W/lib$s.so"
done
SSOD_DUMP="$W/dump" cargo test --release --test cuda_selftest dump_parity_cases -- --ignored --quiet
python3 kernels/emu/run.py "$W"
