// pool.cu: pooling over [N, C, H, W] planes and nearest ×2 upsampling, f32.
//
// Contract (planes = N*C; Pool: square kernel k, stride s, zero padding p, as
// ops::Pool2dParams; Ho = (H + 2p - k)/s + 1)
//   max_pool2d_fwd_f32(x, y, arg, planes, H, W, Ho, Wo, k, s, p): y [planes,Ho,Wo] = window max
//     (padding acts as -inf; NaN propagates; ties keep the first in row-major window order);
//     arg [planes,Ho,Wo] (int) = index of the max inside its plane (iy*W + ix).
//   max_pool2d_bwd_f32(dy, arg, dx, ...): dx [planes,H,W]; each dx gathers the dy of the outputs
//     whose window holds it and whose arg points at it (no atomics, deterministic).
//   avg_pool2d_fwd_f32 / avg_pool2d_bwd_f32: mean with divisor k² (count_include_pad=True); the
//     backward gathers dy/k² over the windows that hold the element.
//   upsample2x_fwd_f32(x, y, planes, H, W): y [planes,2H,2W], y[oy][ox] = x[oy/2][ox/2];
//   upsample2x_bwd_f32(dy, dx, planes, H, W): dx = sum of its 4 copies.
//   max_pool2d_fwd_bf16 / upsample2x_fwd_bf16: the forwards on bf16 bits (bf16 storage; the
//     window max compared as f32, its bits written back unchanged); backward is f32 (gradients).
// Checked against: ops::max_pool2d, ops::avg_pool2d, ops::upsample_nearest2x (Tensor + autograd).
// Launch geometry: 1-D grid-stride, 256 threads, one thread per output element.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "bf16.cuh"

#include "common.cuh"

// Window maxima of bf16 bits are compared as f32 and written back with store_f32 (exact: the
// max is one of the values).
template <typename T>
__device__ __forceinline__ void max_pool_fwd(const T* __restrict__ x, T* __restrict__ y,
                                             int* __restrict__ arg, long long planes, long long H,
                                             long long W, long long Ho, long long Wo, long long k,
                                             long long s, long long p) {
    GRID_STRIDE(i, planes * Ho * Wo) {
        long long ox = i % Wo, oy = (i / Wo) % Ho, pl = i / (Wo * Ho);
        const T* xp = x + pl * H * W;
        float best = -__int_as_float(0x7f800000);
        long long bi = -1;
        for (long long ky = 0; ky < k; ++ky) {
            long long iy = oy * s + ky - p;
            if (iy < 0 || iy >= H) continue;
            for (long long kx = 0; kx < k; ++kx) {
                long long ix = ox * s + kx - p;
                if (ix < 0 || ix >= W) continue;
                float v = load_f32(xp, iy * W + ix);
                if (bi < 0 || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    bi = iy * W + ix;
                }
            }
        }
        store_f32(y, i, best);
        arg[i] = (int)bi;
    }
}

extern "C" __global__ void max_pool2d_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                              int* __restrict__ arg, long long planes, long long H,
                                              long long W, long long Ho, long long Wo, long long k,
                                              long long s, long long p) {
    max_pool_fwd(x, y, arg, planes, H, W, Ho, Wo, k, s, p);
}

extern "C" __global__ void max_pool2d_fwd_bf16(const unsigned short* __restrict__ x,
                                               unsigned short* __restrict__ y,
                                               int* __restrict__ arg, long long planes,
                                               long long H, long long W, long long Ho, long long Wo,
                                               long long k, long long s, long long p) {
    max_pool_fwd(x, y, arg, planes, H, W, Ho, Wo, k, s, p);
}

// Outputs (oy, ox) whose window holds input (iy, ix): oy*s - p <= iy < oy*s - p + k.
#define FOR_WINDOWS(body)                                                        \
    long long oy_lo = (iy + p - k + 1 + s - 1) / s, oy_hi = (iy + p) / s;        \
    long long ox_lo = (ix + p - k + 1 + s - 1) / s, ox_hi = (ix + p) / s;        \
    if (iy + p - k + 1 < 0) oy_lo = 0;                                           \
    if (ix + p - k + 1 < 0) ox_lo = 0;                                           \
    if (oy_hi >= Ho) oy_hi = Ho - 1;                                             \
    if (ox_hi >= Wo) ox_hi = Wo - 1;                                             \
    for (long long oy = oy_lo; oy <= oy_hi; ++oy)                                \
        for (long long ox = ox_lo; ox <= ox_hi; ++ox) { body }

extern "C" __global__ void max_pool2d_bwd_f32(const float* __restrict__ dy,
                                              const int* __restrict__ arg,
                                              float* __restrict__ dx, long long planes, long long H,
                                              long long W, long long Ho, long long Wo, long long k,
                                              long long s, long long p) {
    GRID_STRIDE(i, planes * H * W) {
        long long ix = i % W, iy = (i / W) % H, pl = i / (W * H);
        long long self = iy * W + ix;
        float acc = 0.0f;
        FOR_WINDOWS({
            long long o = (pl * Ho + oy) * Wo + ox;
            if (arg[o] == self) acc += dy[o];
        })
        dx[i] = acc;
    }
}

extern "C" __global__ void avg_pool2d_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                              long long planes, long long H, long long W,
                                              long long Ho, long long Wo, long long k, long long s,
                                              long long p) {
    float inv = 1.0f / (float)(k * k);
    GRID_STRIDE(i, planes * Ho * Wo) {
        long long ox = i % Wo, oy = (i / Wo) % Ho, pl = i / (Wo * Ho);
        const float* xp = x + pl * H * W;
        float acc = 0.0f;
        for (long long ky = 0; ky < k; ++ky) {
            long long iy = oy * s + ky - p;
            if (iy < 0 || iy >= H) continue;
            for (long long kx = 0; kx < k; ++kx) {
                long long ix = ox * s + kx - p;
                if (ix < 0 || ix >= W) continue;
                acc += xp[iy * W + ix];
            }
        }
        y[i] = acc * inv;
    }
}

extern "C" __global__ void avg_pool2d_bwd_f32(const float* __restrict__ dy,
                                              float* __restrict__ dx, long long planes, long long H,
                                              long long W, long long Ho, long long Wo, long long k,
                                              long long s, long long p) {
    float inv = 1.0f / (float)(k * k);
    GRID_STRIDE(i, planes * H * W) {
        long long ix = i % W, iy = (i / W) % H, pl = i / (W * H);
        float acc = 0.0f;
        FOR_WINDOWS({ acc += dy[(pl * Ho + oy) * Wo + ox] * inv; })
        dx[i] = acc;
    }
}

template <typename T>
__device__ __forceinline__ void upsample2x_fwd(const T* __restrict__ x, T* __restrict__ y,
                                               long long planes, long long H, long long W) {
    long long W2 = 2 * W, H2 = 2 * H;
    GRID_STRIDE(i, planes * H2 * W2) {
        long long ox = i % W2, oy = (i / W2) % H2, pl = i / (W2 * H2);
        y[i] = x[(pl * H + oy / 2) * W + ox / 2];
    }
}

extern "C" __global__ void upsample2x_fwd_f32(const float* __restrict__ x, float* __restrict__ y,
                                              long long planes, long long H, long long W) {
    upsample2x_fwd(x, y, planes, H, W);
}

extern "C" __global__ void upsample2x_fwd_bf16(const unsigned short* __restrict__ x,
                                               unsigned short* __restrict__ y, long long planes,
                                               long long H, long long W) {
    upsample2x_fwd(x, y, planes, H, W);
}

extern "C" __global__ void upsample2x_bwd_f32(const float* __restrict__ dy,
                                              float* __restrict__ dx, long long planes,
                                              long long H, long long W) {
    long long W2 = 2 * W;
    GRID_STRIDE(i, planes * H * W) {
        long long ix = i % W, iy = (i / W) % H, pl = i / (W * H);
        const float* d = dy + pl * 4 * H * W;
        long long r0 = (2 * iy) * W2 + 2 * ix, r1 = (2 * iy + 1) * W2 + 2 * ix;
        dx[i] = d[r0] + d[r0 + 1] + d[r1] + d[r1 + 1];
    }
}
