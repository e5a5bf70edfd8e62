// softmax.cu: softmax and log_softmax along one axis, f32 (max-subtracted: no overflow).
//
// Contract: x viewed as [outer, len, inner] (the axis in the middle, contiguous row-major);
//   element (o, i, j) at (o*len + i)*inner + j.
//   softmax_fwd_f32(x, y, outer, len, inner):      y = exp(x - m) / sum exp(x - m)
//   log_softmax_fwd_f32(x, y, outer, len, inner):  y = (x - m) - log sum exp(x - m)
//   softmax_bwd_f32(dy, y, dx, ...):               dx = y·(dy − Σ dy·y)
//   log_softmax_bwd_f32(dy, y, dx, ...):           dx = dy − exp(y)·Σ dy
// Checked against: ops::softmax / ops::log_softmax (src/backend/cpu/softmax.rs); both sum the
//   backward's row in f64.
// Launch geometry: one thread per row (o, j), 1-D grid-stride over outer*inner rows; each thread
//   walks its row three times (max, sum, write). Fine for the class/channel axes of this project
//   (len <= a few thousand); a block-per-row variant is the next step if a benchmark asks.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "common.cuh"

template <bool LOG>
__device__ void fwd(const float* __restrict__ x, float* __restrict__ y, long long outer,
                    long long len, long long inner) {
    GRID_STRIDE(r, outer * inner) {
        long long o = r / inner, j = r % inner;
        const float* xr = x + o * len * inner + j;
        float* yr = y + o * len * inner + j;
        float m = -__int_as_float(0x7f800000);
        for (long long i = 0; i < len; ++i) m = fmaxf(m, xr[i * inner]);
        float s = 0.0f;
        for (long long i = 0; i < len; ++i) s += expf(xr[i * inner] - m);
        float ls = logf(s);
        for (long long i = 0; i < len; ++i) {
            float l = (xr[i * inner] - m) - ls;
            yr[i * inner] = LOG ? l : expf(l);
        }
    }
}

template <bool LOG>
__device__ void bwd(const float* __restrict__ dy, const float* __restrict__ y,
                    float* __restrict__ dx, long long outer, long long len, long long inner) {
    GRID_STRIDE(r, outer * inner) {
        long long base = (r / inner) * len * inner + r % inner;
        // The row sum in double, as the CPU twin: dx = y·(dy − s) cancels where dy ≈ s, so an
        // f32 sum's rounding would show up magnified in dx.
        double sd = 0.0;
        for (long long i = 0; i < len; ++i) {
            long long p = base + i * inner;
            sd += LOG ? (double)dy[p] : (double)dy[p] * (double)y[p];
        }
        float s = (float)sd;
        for (long long i = 0; i < len; ++i) {
            long long p = base + i * inner;
            dx[p] = LOG ? dy[p] - expf(y[p]) * s : y[p] * (dy[p] - s);
        }
    }
}

extern "C" __global__ void softmax_fwd_f32(const float* x, float* y, long long outer,
                                           long long len, long long inner) {
    fwd<false>(x, y, outer, len, inner);
}
extern "C" __global__ void log_softmax_fwd_f32(const float* x, float* y, long long outer,
                                               long long len, long long inner) {
    fwd<true>(x, y, outer, len, inner);
}
extern "C" __global__ void softmax_bwd_f32(const float* dy, const float* y, float* dx,
                                           long long outer, long long len, long long inner) {
    bwd<false>(dy, y, dx, outer, len, inner);
}
extern "C" __global__ void log_softmax_bwd_f32(const float* dy, const float* y, float* dx,
                                               long long outer, long long len, long long inner) {
    bwd<true>(dy, y, dx, outer, len, inner);
}
