// similarity.cu: cosine similarity along an axis and its gradient (PyTorch's
// F.cosine_similarity, eps 1e-8): cos = a·b / (max(|a|, eps)·max(|b|, eps)). f32 accumulate.
//
// Contract: a, b [outer, len, inner] (same shape; the engine broadcasts before the call), the
//   reduced axis in the middle; y [outer, inner].
//   cosine_similarity_fwd_f32(a, b, y, outer, len, inner)
//   cosine_similarity_bwd_f32(g [outer,inner], a, b, da, db, outer, len, inner): fused: recomputes
//     dot and norms (nothing saved) and writes
//     da = g·(b/(|a||b|) − cos·a/|a|²), db = g·(a/(|a||b|) − cos·b/|b|²), the |a|² (|b|²) term
//     dropped where that norm is clamped at eps (as src/backend/cpu/similarity.rs).
//   The patch-contrastive loss (1 − cos, averaged) is this pair with g = −1/count.
// Checked against: ops::cosine_similarity (f64 accumulation there) through Tensor + autograd.
// Launch geometry: one thread per output (o, j), 1-D grid-stride, 256 threads.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "common.cuh"

#define COS_EPS 1e-8f

extern "C" __global__ void cosine_similarity_fwd_f32(const float* __restrict__ a,
                                                     const float* __restrict__ b,
                                                     float* __restrict__ y, long long outer,
                                                     long long len, long long inner) {
    GRID_STRIDE(r, outer * inner) {
        long long base = (r / inner) * len * inner + r % inner;
        float dot = 0.0f, na = 0.0f, nb = 0.0f;
        for (long long i = 0; i < len; ++i) {
            float x = a[base + i * inner], z = b[base + i * inner];
            dot += x * z;
            na += x * x;
            nb += z * z;
        }
        y[r] = dot / (fmaxf(sqrtf(na), COS_EPS) * fmaxf(sqrtf(nb), COS_EPS));
    }
}

extern "C" __global__ void cosine_similarity_bwd_f32(const float* __restrict__ g,
                                                     const float* __restrict__ a,
                                                     const float* __restrict__ b,
                                                     float* __restrict__ da,
                                                     float* __restrict__ db, long long outer,
                                                     long long len, long long inner) {
    GRID_STRIDE(r, outer * inner) {
        long long base = (r / inner) * len * inner + r % inner;
        float dot = 0.0f, na = 0.0f, nb = 0.0f;
        for (long long i = 0; i < len; ++i) {
            float x = a[base + i * inner], z = b[base + i * inner];
            dot += x * z;
            na += x * x;
            nb += z * z;
        }
        float la = fmaxf(sqrtf(na), COS_EPS), lb = fmaxf(sqrtf(nb), COS_EPS);
        bool a_clamped = la <= COS_EPS, b_clamped = lb <= COS_EPS;
        float cos = dot / (la * lb);
        float gg = g[r];
        for (long long i = 0; i < len; ++i) {
            long long p = base + i * inner;
            float x = a[p], z = b[p];
            float dxa = z / (la * lb) - (a_clamped ? 0.0f : cos * x / (la * la));
            float dzb = x / (la * lb) - (b_clamped ? 0.0f : cos * z / (lb * lb));
            da[p] = gg * dxa;
            db[p] = gg * dzb;
        }
    }
}
