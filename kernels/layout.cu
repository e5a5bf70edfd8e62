// layout.cu: copies between strided layouts, f32 (the CUDA side of views: contiguous(), cat,
// narrow/slice backward).
//
// Contract
//   strided_copy_f32(src, dst, n, Strided g): for every logical index i < n in the row-major order
//     of g.dims (rank <= 6), dst[g.dst_offset + sum_d c_d * g.ds[d]] =
//     src[g.src_offset + sum_d c_d * g.ss[d]], c being the coordinates of i. Strides are in
//     elements and non-negative; the launcher has checked that every index lies inside its
//     buffer. Distinct logical indices must map to distinct dst indices (the launcher's callers
//     write into fresh buffers or disjoint views), so there is no write race.
//   strided_copy_bf16: the same for bf16 storage bits (16-bit elements moved as they are).
// Checked against: Tensor::contiguous on the CPU (src/tensor/strided.rs order) by the parity
//   table in src/selftest/mod.rs.
// Launch geometry: 1-D, 256 threads per block, grid-stride loop.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "common.cuh"

#define MAX_RANK 6

// Mirrored by `Strided` in src/backend/cuda/layout.rs.
struct Strided {
    int rank;
    int pad_;
    long long src_offset;
    long long dst_offset;
    long long dims[MAX_RANK];
    long long ss[MAX_RANK];
    long long ds[MAX_RANK];
};

template <typename T>
__device__ __forceinline__ void strided_copy(const T* __restrict__ src, T* __restrict__ dst,
                                             long long n, const Strided& g) {
    int rank = g.rank < 0 ? 0 : (g.rank > MAX_RANK ? MAX_RANK : g.rank);
    GRID_STRIDE(i, n) {
        long long rem = i, is = g.src_offset, id = g.dst_offset;
        for (int d = rank - 1; d >= 0; --d) {
            long long dim = g.dims[d] > 0 ? g.dims[d] : 1;
            long long c = rem % dim;
            rem /= dim;
            is += c * g.ss[d];
            id += c * g.ds[d];
        }
        dst[id] = src[is];
    }
}

extern "C" __global__ void strided_copy_f32(const float* __restrict__ src, float* __restrict__ dst,
                                            long long n, Strided g) {
    strided_copy(src, dst, n, g);
}

extern "C" __global__ void strided_copy_bf16(const unsigned short* __restrict__ src,
                                            unsigned short* __restrict__ dst, long long n,
                                            Strided g) {
    strided_copy(src, dst, n, g);
}
