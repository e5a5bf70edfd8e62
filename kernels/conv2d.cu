// conv2d.cu: 2-D convolution, f32 with f32 accumulation, NCHW.
//
// Contract (geometry as Conv2dGeometry in src/backend/cpu/conv2d.rs: symmetric stride and zero
// padding, groups; no bias)
//   x [N,C,H,W], w [K,C/g,kh,kw] -> y [N,K,Ho,Wo]
//   conv2d_fwd_f32(x, w, y, G)           direct: one thread per y element.
//   conv2d_bwd_input_f32(dy, w, dx, G)   direct gather: one thread per dx element (no atomics).
//   conv2d_bwd_weight_f32(dy, x, dw, G)  one block per dw element, tree over N*Ho*Wo (deterministic).
//   conv2d_im2col_f32(x, col, G, n0, items, grp) col [items, C/g*kh*kw, Ho*Wo] of batch items
//     n0..n0+items, group grp: the right operands of `y[n, grp] = w[grp] [K/g, C/g*kh*kw] · col[n]`
//     done by one strided-batched cuBLAS sgemm.
//   conv2d_im2col_bf16(x, col, G, n0, items, grp) the same matrix with every value rounded to
//     bf16 (col as u16 bits, round to nearest even as f32_to_bf16 in elementwise.cu): the operand
//     of the bf16 products (MatrixPrecision::Bf16) without an f32 column matrix in between.
//   conv2d_im2col_bf16_of_bf16(x as u16 bits, col, G, n0, items, grp) the same from an input in
//     bf16 storage (a bit copy: a widened bf16 rounds back to itself).
//   conv2d_col2im_f32(col, dx, G, n0, items, grp) the inverse scatter written as a gather (one
//     thread per dx element of items n0..n0+items, group grp, summing the col entries that read
//     it): `dcol = w^T · dy` by cuBLAS, then this kernel. Writes (not adds) its slices of dx.
//   conv2d_dw_*: depthwise (groups == C == K) direct kernels: fwd and bwd_input one thread per
//     output element, bwd_weight one block per (channel, tap) with a fixed tree.
// Checked against: backend::cpu::conv2d::{fwd, bwd_input, bwd_weight} (selftest parity table).
// Launch geometry: 1-D grid-stride, 256 threads; the per-element-block kernels loop over items
//   with stride gridDim.x and need blockDim.x == 256.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda;
//   time: ssod selftest --device cuda prints CPU and GPU ms per case.

#include "bf16.cuh"

#define THREADS 256
#include "common.cuh"

// Layout mirrored by `ConvGeom` in src/backend/cuda/conv2d.rs (all i64).
struct ConvGeom {
    long long n, c, h, w, k, kh, kw, stride, pad, groups, ho, wo;
};

extern "C" __global__ void conv2d_fwd_f32(const float* __restrict__ x, const float* __restrict__ w,
                                          float* __restrict__ y, ConvGeom g) {
    long long total = g.n * g.k * g.ho * g.wo;
    long long cin_g = g.c / g.groups, cout_g = g.k / g.groups;
    GRID_STRIDE(i, total) {
        long long ox = i % g.wo, oy = (i / g.wo) % g.ho, k = (i / (g.wo * g.ho)) % g.k,
                  n = i / (g.wo * g.ho * g.k);
        long long grp = k / cout_g;
        float acc = 0.0f;
        for (long long c = 0; c < cin_g; ++c) {
            long long ci = grp * cin_g + c;
            for (long long ky = 0; ky < g.kh; ++ky) {
                long long iy = oy * g.stride + ky - g.pad;
                if (iy < 0 || iy >= g.h) continue;
                for (long long kx = 0; kx < g.kw; ++kx) {
                    long long ix = ox * g.stride + kx - g.pad;
                    if (ix < 0 || ix >= g.w) continue;
                    acc += x[((n * g.c + ci) * g.h + iy) * g.w + ix] *
                           w[((k * cin_g + c) * g.kh + ky) * g.kw + kx];
                }
            }
        }
        y[i] = acc;
    }
}

// For input row iy, the outputs oy with oy*stride + ky - pad == iy, ky in [0, kh).
extern "C" __global__ void conv2d_bwd_input_f32(const float* __restrict__ dy,
                                                const float* __restrict__ w,
                                                float* __restrict__ dx, ConvGeom g) {
    long long total = g.n * g.c * g.h * g.w;
    long long cin_g = g.c / g.groups, cout_g = g.k / g.groups;
    GRID_STRIDE(i, total) {
        long long ix = i % g.w, iy = (i / g.w) % g.h, ci = (i / (g.w * g.h)) % g.c,
                  n = i / (g.w * g.h * g.c);
        long long grp = ci / cin_g, c = ci % cin_g;
        float acc = 0.0f;
        for (long long kk = 0; kk < cout_g; ++kk) {
            long long k = grp * cout_g + kk;
            for (long long ky = 0; ky < g.kh; ++ky) {
                long long ty = iy + g.pad - ky;
                if (ty < 0 || ty % g.stride != 0) continue;
                long long oy = ty / g.stride;
                if (oy >= g.ho) continue;
                for (long long kx = 0; kx < g.kw; ++kx) {
                    long long tx = ix + g.pad - kx;
                    if (tx < 0 || tx % g.stride != 0) continue;
                    long long ox = tx / g.stride;
                    if (ox >= g.wo) continue;
                    acc += dy[((n * g.k + k) * g.ho + oy) * g.wo + ox] *
                           w[((k * cin_g + c) * g.kh + ky) * g.kw + kx];
                }
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void conv2d_bwd_weight_f32(const float* __restrict__ dy,
                                                 const float* __restrict__ x,
                                                 float* __restrict__ dw, ConvGeom g) {
    __shared__ float sh[THREADS];
    long long cin_g = g.c / g.groups, cout_g = g.k / g.groups;
    long long wlen = g.k * cin_g * g.kh * g.kw;
    long long per = g.n * g.ho * g.wo;
    for (long long wi = blockIdx.x; wi < wlen; wi += gridDim.x) {
        long long kx = wi % g.kw, ky = (wi / g.kw) % g.kh, c = (wi / (g.kw * g.kh)) % cin_g,
                  k = wi / (g.kw * g.kh * cin_g);
        long long ci = (k / cout_g) * cin_g + c;
        float acc = 0.0f;
        for (long long j = threadIdx.x; j < per; j += THREADS) {
            long long ox = j % g.wo, oy = (j / g.wo) % g.ho, n = j / (g.wo * g.ho);
            long long iy = oy * g.stride + ky - g.pad, ix = ox * g.stride + kx - g.pad;
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
            acc += dy[((n * g.k + k) * g.ho + oy) * g.wo + ox] *
                   x[((n * g.c + ci) * g.h + iy) * g.w + ix];
        }
        float s = block_sum(acc, sh);
        if (threadIdx.x == 0) dw[wi] = s;
    }
}

// col row r = (c*kh + ky)*kw + kx, column = oy*wo + ox.
// im2col and col2im do several divisions per element; they run in 32-bit arithmetic (I = int)
// when every index of the launch fits, which is every YOLOX layer (64-bit division costs tens of
// instructions). The launcher-visible kernels pick the type; the bodies are the same.
template <typename I, typename X, typename T>
__device__ __forceinline__ void im2col_body(const X* __restrict__ x, T* __restrict__ col,
                                            const ConvGeom& g, long long n0, long long items,
                                            long long grp) {
    const I cin_g = (I)(g.c / g.groups), cols = (I)(g.ho * g.wo), wo = (I)g.wo, kw = (I)g.kw,
            kh = (I)g.kh, h = (I)g.h, w = (I)g.w, stride = (I)g.stride, pad = (I)g.pad;
    const I per_item = cin_g * kh * kw * cols;
    const I total = (I)items * per_item;
    for (I i = (I)(blockIdx.x * blockDim.x + threadIdx.x); i < total;
         i += (I)(blockDim.x * gridDim.x)) {
        const I n = (I)n0 + i / per_item;
        const I p = i % cols, r = (i % per_item) / cols;
        const I ox = p % wo, oy = p / wo;
        const I kx = r % kw, ky = (r / kw) % kh, c = r / (kw * kh);
        const I iy = oy * stride + ky - pad, ix = ox * stride + kx - pad;
        float v = 0.0f;
        if (iy >= 0 && iy < h && ix >= 0 && ix < w) {
            v = load_f32(x, (((long long)n * g.c + grp * cin_g + c) * h + iy) * w + ix);
        }
        store_f32(col, i, v);
    }
}

template <typename I>
__device__ __forceinline__ void col2im_body(const float* __restrict__ col, float* __restrict__ dx,
                                            const ConvGeom& g, long long n0, long long items,
                                            long long grp) {
    const I cin_g = (I)(g.c / g.groups), cols = (I)(g.ho * g.wo), wo = (I)g.wo, ho = (I)g.ho,
            kw = (I)g.kw, kh = (I)g.kh, h = (I)g.h, w = (I)g.w, stride = (I)g.stride,
            pad = (I)g.pad;
    const I per_item = cin_g * h * w;
    const long long col_item = (long long)cin_g * kh * kw * cols;
    const I total = (I)items * per_item;
    for (I j = (I)(blockIdx.x * blockDim.x + threadIdx.x); j < total;
         j += (I)(blockDim.x * gridDim.x)) {
        const I item = j / per_item, i = j % per_item, n = (I)n0 + item;
        const float* colr = col + item * col_item;
        const I ix = i % w, iy = (i / w) % h, c = i / (w * h);
        float acc = 0.0f;
        for (I ky = 0; ky < kh; ++ky) {
            const I ty = iy + pad - ky;
            if (ty < 0 || ty % stride != 0) continue;
            const I oy = ty / stride;
            if (oy >= ho) continue;
            for (I kx = 0; kx < kw; ++kx) {
                const I tx = ix + pad - kx;
                if (tx < 0 || tx % stride != 0) continue;
                const I ox = tx / stride;
                if (ox >= wo) continue;
                acc += colr[((long long)(c * kh + ky) * kw + kx) * cols + oy * wo + ox];
            }
        }
        dx[(((long long)n * g.c + grp * cin_g + c) * h + iy) * w + ix] = acc;
    }
}

// Whether every index of an (items × per_item) launch, and the grid stride, fit in an int.
__device__ __forceinline__ bool fits_int(long long items, long long per_item) {
    return items * per_item + (long long)blockDim.x * gridDim.x < 2147483647LL;
}

// The im2col kernels: one body, 32-bit indices when the launch allows.
template <typename X, typename T>
__device__ __forceinline__ void im2col(const X* __restrict__ x, T* __restrict__ col,
                                       const ConvGeom& g, long long n0, long long items,
                                       long long grp) {
    const long long per_item = (g.c / g.groups) * g.kh * g.kw * g.ho * g.wo;
    if (fits_int(items, per_item)) {
        im2col_body<int>(x, col, g, n0, items, grp);
    } else {
        im2col_body<long long>(x, col, g, n0, items, grp);
    }
}

extern "C" __global__ void conv2d_im2col_f32(const float* __restrict__ x, float* __restrict__ col,
                                             ConvGeom g, long long n0, long long items,
                                             long long grp) {
    im2col(x, col, g, n0, items, grp);
}

extern "C" __global__ void conv2d_im2col_bf16(const float* __restrict__ x,
                                              unsigned short* __restrict__ col, ConvGeom g,
                                              long long n0, long long items, long long grp) {
    im2col(x, col, g, n0, items, grp);
}

extern "C" __global__ void conv2d_im2col_bf16_of_bf16(const unsigned short* __restrict__ x,
                                                      unsigned short* __restrict__ col,
                                                      ConvGeom g, long long n0, long long items,
                                                      long long grp) {
    im2col(x, col, g, n0, items, grp);
}

extern "C" __global__ void conv2d_col2im_f32(const float* __restrict__ col, float* __restrict__ dx,
                                             ConvGeom g, long long n0, long long items,
                                             long long grp) {
    const long long per_item = (g.c / g.groups) * g.h * g.w;
    if (fits_int(items, per_item)) {
        col2im_body<int>(col, dx, g, n0, items, grp);
    } else {
        col2im_body<long long>(col, dx, g, n0, items, grp);
    }
}

// ---- depthwise: groups == C == K, w [C,1,kh,kw] ----

extern "C" __global__ void conv2d_dw_fwd_f32(const float* __restrict__ x,
                                             const float* __restrict__ w, float* __restrict__ y,
                                             ConvGeom g) {
    long long total = g.n * g.c * g.ho * g.wo;
    GRID_STRIDE(i, total) {
        long long ox = i % g.wo, oy = (i / g.wo) % g.ho, plane = i / (g.wo * g.ho);
        long long c = plane % g.c;
        const float* xp = x + plane * g.h * g.w;
        const float* wp = w + c * g.kh * g.kw;
        float acc = 0.0f;
        for (long long ky = 0; ky < g.kh; ++ky) {
            long long iy = oy * g.stride + ky - g.pad;
            if (iy < 0 || iy >= g.h) continue;
            for (long long kx = 0; kx < g.kw; ++kx) {
                long long ix = ox * g.stride + kx - g.pad;
                if (ix < 0 || ix >= g.w) continue;
                acc += xp[iy * g.w + ix] * wp[ky * g.kw + kx];
            }
        }
        y[i] = acc;
    }
}

extern "C" __global__ void conv2d_dw_bwd_input_f32(const float* __restrict__ dy,
                                                   const float* __restrict__ w,
                                                   float* __restrict__ dx, ConvGeom g) {
    long long total = g.n * g.c * g.h * g.w;
    GRID_STRIDE(i, total) {
        long long ix = i % g.w, iy = (i / g.w) % g.h, plane = i / (g.w * g.h);
        long long c = plane % g.c;
        const float* dp = dy + plane * g.ho * g.wo;
        const float* wp = w + c * g.kh * g.kw;
        float acc = 0.0f;
        for (long long ky = 0; ky < g.kh; ++ky) {
            long long ty = iy + g.pad - ky;
            if (ty < 0 || ty % g.stride != 0) continue;
            long long oy = ty / g.stride;
            if (oy >= g.ho) continue;
            for (long long kx = 0; kx < g.kw; ++kx) {
                long long tx = ix + g.pad - kx;
                if (tx < 0 || tx % g.stride != 0) continue;
                long long ox = tx / g.stride;
                if (ox >= g.wo) continue;
                acc += dp[oy * g.wo + ox] * wp[ky * g.kw + kx];
            }
        }
        dx[i] = acc;
    }
}

extern "C" __global__ void conv2d_dw_bwd_weight_f32(const float* __restrict__ dy,
                                                    const float* __restrict__ x,
                                                    float* __restrict__ dw, ConvGeom g) {
    __shared__ float sh[THREADS];
    long long wlen = g.c * g.kh * g.kw;
    long long per = g.n * g.ho * g.wo;
    for (long long wi = blockIdx.x; wi < wlen; wi += gridDim.x) {
        long long kx = wi % g.kw, ky = (wi / g.kw) % g.kh, c = wi / (g.kw * g.kh);
        float acc = 0.0f;
        for (long long j = threadIdx.x; j < per; j += THREADS) {
            long long ox = j % g.wo, oy = (j / g.wo) % g.ho, n = j / (g.wo * g.ho);
            long long iy = oy * g.stride + ky - g.pad, ix = ox * g.stride + kx - g.pad;
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) continue;
            acc += dy[((n * g.c + c) * g.ho + oy) * g.wo + ox] *
                   x[((n * g.c + c) * g.h + iy) * g.w + ix];
        }
        float s = block_sum(acc, sh);
        if (threadIdx.x == 0) dw[wi] = s;
    }
}
