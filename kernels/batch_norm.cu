// batch_norm.cu: batch normalisation over [N, C, H, W] per channel (PyTorch semantics, as
// src/backend/cpu/batch_norm.rs), and the fused BN + SiLU pair YOLOX's ConvBnAct uses.
// f32 accumulate.
//
// Contract (plane = H*W, M = N*plane values per channel, chunks = ceil(M / chunk))
//   batch_norm_stats_partial_f32(x, partial [C, chunks, 2], N, C, plane, chunk): block b takes
//     channel b / chunks, values [k·chunk, min((k+1)·chunk, M)) of it (k = b % chunks, in (n, p)
//     order), and writes that chunk's mean and sum of squared deviations from it (two passes over
//     the chunk; the second mostly hits L2).
//   batch_norm_stats_finalize_f32(partial, mean [C], invstd [C], var [C], C, M, chunk, eps): one
//     thread per channel combines the chunks in order (Chan et al.'s pairwise update, in double):
//     biased variance, invstd = 1/sqrt(var + eps).
//   batch_norm_update_running_f32(rm, rv, mean, var, C, momentum, unbias): running = (1-m)·running
//     + m·batch, the variance unbiased by `unbias` = M/(M-1).
//   batch_norm_fwd_f32(x, mean, s, gamma, beta, y, N, C, plane, eps, s_is_var):
//     y = (x - mean)·inv·gamma + beta with inv = s (training, s = invstd) or 1/sqrt(s + eps)
//     (eval, s = running var, s_is_var = 1).
//   batch_norm_bwd_partial_f32(dy, x, mean, inv, gamma, beta, partial [C, chunks, 2], N, C,
//     plane, chunk): per chunk as above, (Σdz, Σdz·xhat); xhat is recomputed from x.
//   batch_norm_sums_finalize_f32(partial, sum_dz [C], sum_dz_xhat [C], C, M, chunk): the chunks'
//     sums in order (double): dbeta = sum_dz, dgamma = sum_dz_xhat.
//   batch_norm_bwd_f32(dy, x, mean, inv, gamma, beta, sum_dy, sum_dy_xhat, dx, N, C, plane, training):
//     training: dx = gamma·inv/M·(M·dy − Σdy − xhat·Σ(dy·xhat)); eval: dx = gamma·inv·dy.
//   bn_silu_fwd_f32 / bn_silu_bwd_partial_f32 / bn_silu_bwd_f32: the same with y = silu(z),
//     z = bn(x); backward uses dz = dy·silu'(z) (z recomputed) in place of dy.
//   *_bf16 (x as bf16 bits: stats, forward, backward) and *_fwd_f32_to_bf16 (f32 x, y as bf16
//     bits): bf16 storage (src/backend/cuda/bf16.rs); x widened on load, y rounded to nearest
//     even on store, all arithmetic f32. Backward never reads y.
// Why chunks: one block per channel (the first version) left YOLOX-s's stem, 32 channels of
//   16·320² values at 640 px, to 32 blocks on a 132-SM card, each thread summing 6,400 values
//   one load at a time. Chunks of a few thousand values give every layer hundreds of blocks.
// Checked against: ops::batch_norm2d (+ ops::silu for the fused pair) through Tensor + autograd.
// Launch geometry: blockDim.x must be 256 (the trees assume it). Partial kernels: any grid
//   (blocks stride the C·chunks (channel, chunk) pairs), fixed tree per chunk, fixed order per
//   channel: deterministic, no atomics. Finalize kernels: 1-D grid-stride over channels.
//   Element-wise kernels: any grid; planes of 256 and more are walked row by row ([N·C, plane],
//   TILE positions per block step, the channel computed once per row), smaller ones by the flat
//   index (one 32-bit division pair per element).
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "bf16.cuh"

#define THREADS 256
#define TILE 1024
#include "common.cuh"

// Flat index of value j (in (n, p) order) of channel ch; 32-bit division when `small` (every
// index fits: 64-bit division costs tens of instructions per element).
__device__ __forceinline__ long long at(long long j, long long ch, long long C, long long plane,
                                        bool small) {
    if (small) {
        unsigned n = (unsigned)j / (unsigned)plane;
        return ((long long)n * C + ch) * plane + ((unsigned)j - n * (unsigned)plane);
    }
    return ((j / plane) * C + ch) * plane + (j % plane);
}

// Call f(i) for the flat index i of every value [lo, hi) of channel ch, spread over the block's
// threads in coalesced runs: (n, p) advanced by THREADS without division when a plane holds at
// least a block's worth, else by the flat index.
template <typename F>
__device__ __forceinline__ void for_chunk(long long ch, long long C, long long plane, long long lo,
                                          long long hi, F f) {
    long long j = lo + threadIdx.x;
    if (plane >= THREADS) {
        long long n = j / plane, p = j - n * plane;
        for (; j < hi; j += THREADS) {
            f((n * C + ch) * plane + p);
            p += THREADS;
            if (p >= plane) {  // plane >= THREADS: one wrap at most
                p -= plane;
                ++n;
            }
        }
    } else {
        const bool small = (hi / plane + 1) * C * plane < 2147483647LL;
        for (; j < hi; j += THREADS) f(at(j, ch, C, plane, small));
    }
}

// The values [lo, hi) of chunk k of the channels' M values.
__device__ __forceinline__ void chunk_range(long long k, long long chunk, long long m,
                                            long long* lo, long long* hi) {
    *lo = k * chunk;
    *hi = *lo + chunk < m ? *lo + chunk : m;
}

// Call f(i, ch) for every element of [N, C, plane]: planes of THREADS and more row by row (rows
// of [N·C, plane] cut in TILE-position steps, the channel computed once per step), smaller ones
// by the flat index.
template <typename F>
__device__ __forceinline__ void for_each_element(long long N, long long C, long long plane, F f) {
    const long long total = N * C * plane;
    if (plane >= THREADS) {
        const long long tiles = (plane + TILE - 1) / TILE;
        for (long long b = blockIdx.x; b < N * C * tiles; b += gridDim.x) {
            const long long row = b / tiles, p0 = (b - row * tiles) * TILE;
            const long long ch = row % C;
            const long long end = p0 + TILE < plane ? p0 + TILE : plane;
            for (long long p = p0 + threadIdx.x; p < end; p += THREADS) f(row * plane + p, ch);
        }
    } else {
        GRID_STRIDE(i, total) {
            long long ch = total < 2147483647LL
                               ? (long long)(((unsigned)i / (unsigned)plane) % (unsigned)C)
                               : (i / plane) % C;
            f(i, ch);
        }
    }
}

template <typename X>
__device__ void stats_partial(const X* __restrict__ x, float* __restrict__ partial, long long N,
                              long long C, long long plane, long long chunk) {
    __shared__ float sh[THREADS];
    const long long m = N * plane, chunks = (m + chunk - 1) / chunk;
    for (long long b = blockIdx.x; b < C * chunks; b += gridDim.x) {
        const long long ch = b / chunks, k = b - ch * chunks;
        long long lo, hi;
        chunk_range(k, chunk, m, &lo, &hi);
        float acc = 0.0f;
        for_chunk(ch, C, plane, lo, hi, [&](long long i) { acc += load_f32(x, i); });
        const float mu = block_sum(acc, sh) / (float)(hi - lo);
        float sq = 0.0f;
        for_chunk(ch, C, plane, lo, hi, [&](long long i) {
            float d = load_f32(x, i) - mu;
            sq += d * d;
        });
        const float m2 = block_sum(sq, sh);
        if (threadIdx.x == 0) {
            partial[2 * b] = mu;
            partial[2 * b + 1] = m2;
        }
    }
}

extern "C" __global__ void batch_norm_stats_finalize_f32(const float* __restrict__ partial,
                                                         float* __restrict__ mean,
                                                         float* __restrict__ invstd,
                                                         float* __restrict__ var, long long C,
                                                         long long m, long long chunk, float eps) {
    const long long chunks = (m + chunk - 1) / chunk;
    GRID_STRIDE(ch, C) {
        double n_a = 0.0, mean_a = 0.0, m2_a = 0.0;
        for (long long k = 0; k < chunks; ++k) {
            long long lo, hi;
            chunk_range(k, chunk, m, &lo, &hi);
            const double n_b = (double)(hi - lo);
            const double mean_b = partial[2 * (ch * chunks + k)];
            const double m2_b = partial[2 * (ch * chunks + k) + 1];
            const double n = n_a + n_b, delta = mean_b - mean_a;
            mean_a += delta * n_b / n;
            m2_a += m2_b + delta * delta * n_a * n_b / n;
            n_a = n;
        }
        const float v = (float)(m2_a / (double)(m > 0 ? m : 1));
        mean[ch] = (float)mean_a;
        var[ch] = v;
        invstd[ch] = 1.0f / sqrtf(v + eps);
    }
}

extern "C" __global__ void batch_norm_update_running_f32(float* __restrict__ rm,
                                                         float* __restrict__ rv,
                                                         const float* __restrict__ mean,
                                                         const float* __restrict__ var,
                                                         long long C, float momentum,
                                                         float unbias) {
    GRID_STRIDE(ch, C) {
        rm[ch] = (1.0f - momentum) * rm[ch] + momentum * mean[ch];
        rv[ch] = (1.0f - momentum) * rv[ch] + momentum * (var[ch] * unbias);
    }
}

__device__ __forceinline__ float inv_of(const float* s, long long ch, float eps, int s_is_var) {
    return s_is_var ? 1.0f / sqrtf(s[ch] + eps) : s[ch];
}

template <bool SILU, typename X, typename Y>
__device__ void bn_fwd(const X* __restrict__ x, const float* __restrict__ mean,
                       const float* __restrict__ s, const float* __restrict__ gamma,
                       const float* __restrict__ beta, Y* __restrict__ y, long long N,
                       long long C, long long plane, float eps, int s_is_var) {
    for_each_element(N, C, plane, [&](long long i, long long ch) {
        float xhat = (load_f32(x, i) - mean[ch]) * inv_of(s, ch, eps, s_is_var);
        float z = xhat * gamma[ch] + beta[ch];
        store_f32(y, i, SILU ? z * sigmoid_stable(z) : z);
    });
}

// dz: the gradient reaching the BN output (dy, or dy·silu'(z) for the fused pair).
template <bool SILU>
__device__ __forceinline__ float dz_of(float dy, float xhat, float gamma, float beta) {
    if (!SILU) return dy;
    float z = xhat * gamma + beta;
    float sg = sigmoid_stable(z);
    return dy * sg * (1.0f + z * (1.0f - sg));
}

template <bool SILU, typename X>
__device__ void bn_bwd_partial(const float* __restrict__ dy, const X* __restrict__ x,
                               const float* __restrict__ mean, const float* __restrict__ inv,
                               const float* __restrict__ gamma, const float* __restrict__ beta,
                               float* __restrict__ partial, long long N, long long C,
                               long long plane, long long chunk) {
    __shared__ float sh[THREADS];
    const long long m = N * plane, chunks = (m + chunk - 1) / chunk;
    for (long long b = blockIdx.x; b < C * chunks; b += gridDim.x) {
        const long long ch = b / chunks, k = b - ch * chunks;
        long long lo, hi;
        chunk_range(k, chunk, m, &lo, &hi);
        float s1 = 0.0f, s2 = 0.0f;
        const float g = SILU ? gamma[ch] : 0.0f, bt = SILU ? beta[ch] : 0.0f;
        const float mu = mean[ch], iv = inv[ch];
        for_chunk(ch, C, plane, lo, hi, [&](long long i) {
            float xhat = (load_f32(x, i) - mu) * iv;
            float dz = dz_of<SILU>(dy[i], xhat, g, bt);
            s1 += dz;
            s2 += dz * xhat;
        });
        const float t1 = block_sum(s1, sh);
        const float t2 = block_sum(s2, sh);
        if (threadIdx.x == 0) {
            partial[2 * b] = t1;
            partial[2 * b + 1] = t2;
        }
    }
}

extern "C" __global__ void batch_norm_sums_finalize_f32(const float* __restrict__ partial,
                                                        float* __restrict__ sum_dz,
                                                        float* __restrict__ sum_dz_xhat,
                                                        long long C, long long m,
                                                        long long chunk) {
    const long long chunks = (m + chunk - 1) / chunk;
    GRID_STRIDE(ch, C) {
        double t1 = 0.0, t2 = 0.0;
        for (long long k = 0; k < chunks; ++k) {
            t1 += partial[2 * (ch * chunks + k)];
            t2 += partial[2 * (ch * chunks + k) + 1];
        }
        sum_dz[ch] = (float)t1;
        sum_dz_xhat[ch] = (float)t2;
    }
}

template <bool SILU, typename X>
__device__ void bn_bwd(const float* __restrict__ dy, const X* __restrict__ x,
                       const float* __restrict__ mean, const float* __restrict__ inv,
                       const float* __restrict__ gamma, const float* __restrict__ beta,
                       const float* __restrict__ sum_dz, const float* __restrict__ sum_dz_xhat,
                       float* __restrict__ dx, long long N, long long C, long long plane,
                       int training) {
    const float m = (float)(N * plane);
    for_each_element(N, C, plane, [&](long long i, long long ch) {
        float xhat = (load_f32(x, i) - mean[ch]) * inv[ch];
        float dz = dz_of<SILU>(dy[i], xhat, gamma[ch], SILU ? beta[ch] : 0.0f);
        if (training) {
            float scale = gamma[ch] * inv[ch] / m;
            dx[i] = scale * (m * dz - sum_dz[ch] - xhat * sum_dz_xhat[ch]);
        } else {
            dx[i] = gamma[ch] * inv[ch] * dz;
        }
    });
}

// Entry points: the reductions and the backward per stored format of x (`_f32`, `_bf16`);
// the forwards per (x, y) pair: f32 -> f32 (`_f32`), f32 -> bf16 (`_f32_to_bf16`, a conv output
// kept in f32), bf16 -> bf16 (`_bf16`).
#define BN_X_KERNELS(SFX, X)                                                                      \
    extern "C" __global__ void batch_norm_stats_partial_##SFX(                                    \
        const X* x, float* partial, long long N, long long C, long long plane, long long chunk) { \
        stats_partial(x, partial, N, C, plane, chunk);                                            \
    }                                                                                             \
    extern "C" __global__ void batch_norm_bwd_partial_##SFX(                                      \
        const float* dy, const X* x, const float* mean, const float* inv, const float* gamma,     \
        const float* beta, float* partial, long long N, long long C, long long plane,             \
        long long chunk) {                                                                        \
        bn_bwd_partial<false>(dy, x, mean, inv, gamma, beta, partial, N, C, plane, chunk);        \
    }                                                                                             \
    extern "C" __global__ void bn_silu_bwd_partial_##SFX(                                         \
        const float* dy, const X* x, const float* mean, const float* inv, const float* gamma,     \
        const float* beta, float* partial, long long N, long long C, long long plane,             \
        long long chunk) {                                                                        \
        bn_bwd_partial<true>(dy, x, mean, inv, gamma, beta, partial, N, C, plane, chunk);         \
    }                                                                                             \
    extern "C" __global__ void batch_norm_bwd_##SFX(                                              \
        const float* dy, const X* x, const float* mean, const float* inv, const float* gamma,     \
        const float* beta, const float* sum_dz, const float* sum_dz_xhat, float* dx, long long N, \
        long long C, long long plane, int training) {                                             \
        bn_bwd<false>(dy, x, mean, inv, gamma, beta, sum_dz, sum_dz_xhat, dx, N, C, plane,        \
                      training);                                                                  \
    }                                                                                             \
    extern "C" __global__ void bn_silu_bwd_##SFX(                                                 \
        const float* dy, const X* x, const float* mean, const float* inv, const float* gamma,     \
        const float* beta, const float* sum_dz, const float* sum_dz_xhat, float* dx, long long N, \
        long long C, long long plane, int training) {                                             \
        bn_bwd<true>(dy, x, mean, inv, gamma, beta, sum_dz, sum_dz_xhat, dx, N, C, plane,         \
                     training);                                                                   \
    }

#define BN_FWD_KERNELS(SFX, X, Y)                                                                 \
    extern "C" __global__ void batch_norm_fwd_##SFX(                                              \
        const X* x, const float* mean, const float* s, const float* gamma, const float* beta,     \
        Y* y, long long N, long long C, long long plane, float eps, int s_is_var) {               \
        bn_fwd<false>(x, mean, s, gamma, beta, y, N, C, plane, eps, s_is_var);                    \
    }                                                                                             \
    extern "C" __global__ void bn_silu_fwd_##SFX(                                                 \
        const X* x, const float* mean, const float* s, const float* gamma, const float* beta,     \
        Y* y, long long N, long long C, long long plane, float eps, int s_is_var) {               \
        bn_fwd<true>(x, mean, s, gamma, beta, y, N, C, plane, eps, s_is_var);                     \
    }

BN_X_KERNELS(f32, float)
BN_X_KERNELS(bf16, unsigned short)
BN_FWD_KERNELS(f32, float, float)
BN_FWD_KERNELS(f32_to_bf16, float, unsigned short)
BN_FWD_KERNELS(bf16, unsigned short, unsigned short)
