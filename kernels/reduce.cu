// reduce.cu: deterministic sums, f32 with f32 accumulation.
//
// Contract
//   sum_partial_f32(x [n], partial [gridDim.x], n): block b writes the sum of the elements
//     b, b + gridDim.x*256, ... (grid-stride) folded by a fixed shared-memory tree. Run it once
//     over x, then once more with ONE block over the partials: the total lands in partial'[0].
//     Same n and same grid size give bit-identical results (no atomics).
//   sum_keepdim_f32(x, y, outputs, reduced, Reduce): y [outputs] = x summed over the reduced axes
//     of `Reduce.dims` (kept shape: `Reduce.kept`, 1 where reduced, same rank; the output is
//     row-major over `kept`). One block per output (blocks loop over outputs with stride
//     gridDim.x); the block's threads stride the `reduced` = prod(dims)/prod(kept) inputs and fold
//     them with the same fixed tree: deterministic. rank <= 6. Contiguous row-major x.
// Checked against: ops::sum_all / ops::sum (src/backend/cpu/reduce.rs; f64 accumulation there,
//   hence the selftest's relative-error floor for sums of mixed-sign values).
// Launch geometry: blockDim.x == 256 exactly (the tree assumes it); sum_partial any grid <= 65535.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#define THREADS 256
#include "common.cuh"

#define MAX_RANK 6

extern "C" __global__ void sum_partial_f32(const float* __restrict__ x,
                                           float* __restrict__ partial, long long n) {
    __shared__ float sh[THREADS];
    float acc = 0.0f;
    for (long long i = (long long)blockIdx.x * THREADS + threadIdx.x; i < n;
         i += (long long)gridDim.x * THREADS) {
        acc += x[i];
    }
    float s = block_sum(acc, sh);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Shapes of a keepdim reduction (layout mirrored by `Reduce` in src/backend/cuda/reduce.rs).
struct Reduce {
    int rank;
    int pad_;
    long long dims[MAX_RANK];
    long long kept[MAX_RANK];
};

extern "C" __global__ void sum_keepdim_f32(const float* __restrict__ x, float* __restrict__ y,
                                           long long outputs, long long reduced, Reduce r) {
    __shared__ float sh[THREADS];
    int rank = r.rank < 0 ? 0 : (r.rank > MAX_RANK ? MAX_RANK : r.rank);
    // Row-major strides of x.
    long long xs[MAX_RANK];
    long long acc_stride = 1;
    for (int d = rank - 1; d >= 0; --d) {
        xs[d] = acc_stride;
        acc_stride *= r.dims[d];
    }
    for (long long o = blockIdx.x; o < outputs; o += gridDim.x) {
        // Offset of the output's first input: decode o over the kept shape.
        long long rem = o, base = 0;
        for (int d = rank - 1; d >= 0; --d) {
            long long k = r.kept[d] > 0 ? r.kept[d] : 1;
            long long c = rem % k;
            rem /= k;
            if (r.kept[d] == r.dims[d]) base += c * xs[d];
        }
        float acc = 0.0f;
        for (long long j = threadIdx.x; j < reduced; j += THREADS) {
            // Decode j over the reduced axes (those with kept == 1 and dims != 1).
            long long rj = j, off = base;
            for (int d = rank - 1; d >= 0; --d) {
                if (r.kept[d] != r.dims[d]) {
                    long long dim = r.dims[d] > 0 ? r.dims[d] : 1;
                    off += (rj % dim) * xs[d];
                    rj /= dim;
                }
            }
            acc += x[off];
        }
        float s = block_sum(acc, sh);
        if (threadIdx.x == 0) y[o] = s;
    }
}
