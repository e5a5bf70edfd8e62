// batch_norm.cu: batch normalisation over [N, C, H, W] per channel (PyTorch semantics, as
// src/ops/batch_norm.rs), and the fused BN + SiLU pair YOLOX's ConvBnAct uses. f32 accumulate.
//
// Contract (plane = H*W, M = N*plane values per channel)
//   batch_norm_stats_f32(x, mean [C], invstd [C], var [C], N, C, plane, eps): two-pass biased
//     variance; invstd = 1/sqrt(var + eps). One block per channel (blocks stride channels).
//   batch_norm_update_running_f32(rm, rv, mean, var, C, momentum, unbias): running = (1-m)·running
//     + m·batch, the variance unbiased by `unbias` = M/(M-1).
//   batch_norm_fwd_f32(x, mean, s, gamma, beta, y, N, C, plane, eps, s_is_var):
//     y = (x - mean)·inv·gamma + beta with inv = s (training, s = invstd) or 1/sqrt(s + eps)
//     (eval, s = running var, s_is_var = 1).
//   batch_norm_bwd_reduce_f32(dy, x, mean, inv, sum_dy [C], sum_dy_xhat [C], N, C, plane):
//     dbeta = sum_dy, dgamma = sum_dy_xhat; xhat is recomputed from x (nothing saved but stats).
//   batch_norm_bwd_f32(dy, x, mean, inv, gamma, sum_dy, sum_dy_xhat, dx, N, C, plane, training):
//     training: dx = gamma·inv/M·(M·dy − Σdy − xhat·Σ(dy·xhat)); eval: dx = gamma·inv·dy.
//   bn_silu_fwd_f32 / bn_silu_bwd_reduce_f32 / bn_silu_bwd_f32: the same with y = silu(z),
//     z = bn(x); backward uses dz = dy·silu'(z) (z recomputed) in place of dy.
// Checked against: ops::batch_norm2d (+ ops::silu for the fused pair) through Tensor + autograd.
// Launch geometry: elementwise kernels 1-D grid-stride; stats/reduce kernels one 256-thread
//   block per channel (blockDim.x must be 256), fixed tree: deterministic, no atomics.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#define THREADS 256
#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float block_sum(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

__device__ __forceinline__ float sigmoid_stable(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

// Element j of channel ch: (j / plane)-th image, (j % plane)-th pixel.
__device__ __forceinline__ long long at(long long j, long long ch, long long C, long long plane) {
    return ((j / plane) * C + ch) * plane + (j % plane);
}

// Call f(i) for every element i of channel ch, spread over the block's threads: image by image
// in contiguous, coalesced runs when a plane fills the block (no division per element), else by
// the flat index (planes at stride 32 are smaller than the block).
template <typename F>
__device__ __forceinline__ void for_channel(long long ch, long long N, long long C,
                                            long long plane, F f) {
    if (plane >= THREADS) {
        for (long long n = 0; n < N; ++n) {
            const long long base = (n * C + ch) * plane;
            for (long long p = threadIdx.x; p < plane; p += THREADS) f(base + p);
        }
    } else {
        for (long long j = threadIdx.x; j < N * plane; j += THREADS) f(at(j, ch, C, plane));
    }
}

// Channel of flat element i of [N, C, plane] (32-bit division when the tensor allows: 64-bit
// division costs tens of instructions per element).
__device__ __forceinline__ long long chan(long long i, long long C, long long plane, long long total) {
    if (total < 2147483647LL) {
        return (long long)(((unsigned)i / (unsigned)plane) % (unsigned)C);
    }
    return (i / plane) % C;
}

extern "C" __global__ void batch_norm_stats_f32(const float* __restrict__ x,
                                                float* __restrict__ mean,
                                                float* __restrict__ invstd,
                                                float* __restrict__ var, long long N, long long C,
                                                long long plane, float eps) {
    __shared__ float sh[THREADS];
    long long m = N * plane;
    for (long long ch = blockIdx.x; ch < C; ch += gridDim.x) {
        float acc = 0.0f;
        for_channel(ch, N, C, plane, [&](long long i) { acc += x[i]; });
        float mu = block_sum(acc, sh) / (float)(m > 0 ? m : 1);
        float sq = 0.0f;
        for_channel(ch, N, C, plane, [&](long long i) {
            float d = x[i] - mu;
            sq += d * d;
        });
        float v = block_sum(sq, sh) / (float)(m > 0 ? m : 1);
        if (threadIdx.x == 0) {
            mean[ch] = mu;
            var[ch] = v;
            invstd[ch] = 1.0f / sqrtf(v + eps);
        }
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

template <bool SILU>
__device__ void bn_fwd(const float* __restrict__ x, const float* __restrict__ mean,
                       const float* __restrict__ s, const float* __restrict__ gamma,
                       const float* __restrict__ beta, float* __restrict__ y, long long N,
                       long long C, long long plane, float eps, int s_is_var) {
    GRID_STRIDE(i, N * C * plane) {
        long long ch = chan(i, C, plane, N * C * plane);
        float xhat = (x[i] - mean[ch]) * inv_of(s, ch, eps, s_is_var);
        float z = xhat * gamma[ch] + beta[ch];
        y[i] = SILU ? z * sigmoid_stable(z) : z;
    }
}

// dz: the gradient reaching the BN output (dy, or dy·silu'(z) for the fused pair).
template <bool SILU>
__device__ __forceinline__ float dz_of(float dy, float xhat, float gamma, float beta) {
    if (!SILU) return dy;
    float z = xhat * gamma + beta;
    float sg = sigmoid_stable(z);
    return dy * sg * (1.0f + z * (1.0f - sg));
}

template <bool SILU>
__device__ void bn_bwd_reduce(const float* __restrict__ dy, const float* __restrict__ x,
                              const float* __restrict__ mean, const float* __restrict__ inv,
                              const float* __restrict__ gamma, const float* __restrict__ beta,
                              float* __restrict__ sum_dz, float* __restrict__ sum_dz_xhat,
                              long long N, long long C, long long plane) {
    __shared__ float sh[THREADS];
    for (long long ch = blockIdx.x; ch < C; ch += gridDim.x) {
        float s1 = 0.0f, s2 = 0.0f;
        float g = SILU ? gamma[ch] : 0.0f, b = SILU ? beta[ch] : 0.0f;
        const float mu = mean[ch], iv = inv[ch];
        for_channel(ch, N, C, plane, [&](long long i) {
            float xhat = (x[i] - mu) * iv;
            float dz = dz_of<SILU>(dy[i], xhat, g, b);
            s1 += dz;
            s2 += dz * xhat;
        });
        float t1 = block_sum(s1, sh);
        float t2 = block_sum(s2, sh);
        if (threadIdx.x == 0) {
            sum_dz[ch] = t1;
            sum_dz_xhat[ch] = t2;
        }
    }
}

template <bool SILU>
__device__ void bn_bwd(const float* __restrict__ dy, const float* __restrict__ x,
                       const float* __restrict__ mean, const float* __restrict__ inv,
                       const float* __restrict__ gamma, const float* __restrict__ beta,
                       const float* __restrict__ sum_dz, const float* __restrict__ sum_dz_xhat,
                       float* __restrict__ dx, long long N, long long C, long long plane,
                       int training) {
    float m = (float)(N * plane);
    GRID_STRIDE(i, N * C * plane) {
        long long ch = chan(i, C, plane, N * C * plane);
        float xhat = (x[i] - mean[ch]) * inv[ch];
        float dz = dz_of<SILU>(dy[i], xhat, gamma[ch], SILU ? beta[ch] : 0.0f);
        if (training) {
            float scale = gamma[ch] * inv[ch] / m;
            dx[i] = scale * (m * dz - sum_dz[ch] - xhat * sum_dz_xhat[ch]);
        } else {
            dx[i] = gamma[ch] * inv[ch] * dz;
        }
    }
}

extern "C" __global__ void batch_norm_fwd_f32(const float* x, const float* mean, const float* s,
                                              const float* gamma, const float* beta, float* y,
                                              long long N, long long C, long long plane, float eps,
                                              int s_is_var) {
    bn_fwd<false>(x, mean, s, gamma, beta, y, N, C, plane, eps, s_is_var);
}
extern "C" __global__ void bn_silu_fwd_f32(const float* x, const float* mean, const float* s,
                                           const float* gamma, const float* beta, float* y,
                                           long long N, long long C, long long plane, float eps,
                                           int s_is_var) {
    bn_fwd<true>(x, mean, s, gamma, beta, y, N, C, plane, eps, s_is_var);
}
extern "C" __global__ void batch_norm_bwd_reduce_f32(const float* dy, const float* x,
                                                     const float* mean, const float* inv,
                                                     const float* gamma, const float* beta,
                                                     float* sum_dy, float* sum_dy_xhat,
                                                     long long N, long long C, long long plane) {
    bn_bwd_reduce<false>(dy, x, mean, inv, gamma, beta, sum_dy, sum_dy_xhat, N, C, plane);
}
extern "C" __global__ void bn_silu_bwd_reduce_f32(const float* dy, const float* x,
                                                  const float* mean, const float* inv,
                                                  const float* gamma, const float* beta,
                                                  float* sum_dz, float* sum_dz_xhat, long long N,
                                                  long long C, long long plane) {
    bn_bwd_reduce<true>(dy, x, mean, inv, gamma, beta, sum_dz, sum_dz_xhat, N, C, plane);
}
extern "C" __global__ void batch_norm_bwd_f32(const float* dy, const float* x, const float* mean,
                                              const float* inv, const float* gamma,
                                              const float* beta, const float* sum_dy,
                                              const float* sum_dy_xhat, float* dx, long long N,
                                              long long C, long long plane, int training) {
    bn_bwd<false>(dy, x, mean, inv, gamma, beta, sum_dy, sum_dy_xhat, dx, N, C, plane, training);
}
extern "C" __global__ void bn_silu_bwd_f32(const float* dy, const float* x, const float* mean,
                                           const float* inv, const float* gamma,
                                           const float* beta, const float* sum_dz,
                                           const float* sum_dz_xhat, float* dx, long long N,
                                           long long C, long long plane, int training) {
    bn_bwd<true>(dy, x, mean, inv, gamma, beta, sum_dz, sum_dz_xhat, dx, N, C, plane, training);
}
