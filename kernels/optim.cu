// optim.cu: fused optimizer steps and the EMA update over flat f32 buffers (all parameters of
// one group concatenated, or one tensor at a time), PyTorch semantics.
//
// Contract (p, g, state buffers [n])
//   sgd_nesterov_f32(p, g, buf, n, lr, momentum, wd): d = g + wd·p; buf = momentum·buf + d;
//     p −= lr·(d + momentum·buf)   (torch.optim.SGD(nesterov=True, dampening=0); buf starts at 0,
//     which equals PyTorch's first-step clone).
//   adam_f32(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, decoupled): decoupled (AdamW):
//     p ·= 1 − lr·wd; else (Adam) d = g + wd·p. m = b1·m + (1−b1)·d; v = b2·v + (1−b2)·d²;
//     p −= (lr/bc1)·m / (sqrt(v)/sqrt(bc2) + eps), bc_i = 1 − b_i^step given by the host.
//   ema_f32(ema, p, n, decay): ema = decay·ema + (1 − decay)·p (YOLOX ModelEMA; the host computes
//     decay·(1 − exp(−updates/2000))).
//   sgd_nesterov_multi_f32(refs [T] SgdRef, chunks [K] Chunk, K, lr, momentum),
//   adam_multi_f32(refs [T] AdamRef, chunks, K, lr, b1, b2, eps, decoupled) and
//   ema_multi_f32(refs [T] EmaRef, chunks [K] Chunk, K, decay): the same updates over T tensors
//     in one launch ("over all parameters"): each tensor's buffers and length (and its weight
//     decay, and Adam's bias corrections for its own step count) are in its ref; chunk k covers elements [start, min(start + MULTI_CHUNK, n)) of
//     tensor `tensor`, and the host lists every tensor's chunks (src/backend/cuda/optim.rs).
// Checked against: plain CPU loops written from the PyTorch formulas
//   (src/selftest/cases/optim_cases.rs; src/train/optim/ runs the same rules on
//   the host, tests/train_recipe.rs compares the two on a GPU).
// Launch geometry: 1-D grid-stride, 256 threads, one thread per element; the multi-tensor
//   kernels: any grid, blocks stride the chunks, a block's threads stride its chunk.
// Check: cargo test --release --test cuda_kernels_compile; ssod selftest --device cuda.

#include "common.cuh"

__device__ __forceinline__ void sgd_nesterov_at(float* __restrict__ p, const float* __restrict__ g,
                                                float* __restrict__ buf, long long i, float lr,
                                                float momentum, float wd) {
    float d = g[i] + wd * p[i];
    float b = momentum * buf[i] + d;
    buf[i] = b;
    p[i] -= lr * (d + momentum * b);
}

__device__ __forceinline__ void ema_at(float* __restrict__ ema, const float* __restrict__ p,
                                       long long i, float decay) {
    ema[i] = decay * ema[i] + (1.0f - decay) * p[i];
}

extern "C" __global__ void sgd_nesterov_f32(float* __restrict__ p, const float* __restrict__ g,
                                            float* __restrict__ buf, long long n, float lr,
                                            float momentum, float wd) {
    GRID_STRIDE(i, n) { sgd_nesterov_at(p, g, buf, i, lr, momentum, wd); }
}

// One Adam element; step = lr/bc1, sbc2 = sqrt(bc2).
__device__ __forceinline__ void adam_at(float* __restrict__ p, const float* __restrict__ g,
                                        float* __restrict__ m, float* __restrict__ v, long long i,
                                        float lr, float b1, float b2, float eps, float wd,
                                        float step, float sbc2, int decoupled) {
    float pi = p[i];
    float d = g[i];
    if (decoupled) {
        pi *= 1.0f - lr * wd;
    } else {
        d += wd * pi;
    }
    float mi = b1 * m[i] + (1.0f - b1) * d;
    float vi = b2 * v[i] + (1.0f - b2) * d * d;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step * mi / (sqrtf(vi) / sbc2 + eps);
}

extern "C" __global__ void adam_f32(float* __restrict__ p, const float* __restrict__ g,
                                    float* __restrict__ m, float* __restrict__ v, long long n,
                                    float lr, float b1, float b2, float eps, float wd, float bc1,
                                    float bc2, int decoupled) {
    const float step = lr / bc1, sbc2 = sqrtf(bc2);
    GRID_STRIDE(i, n) { adam_at(p, g, m, v, i, lr, b1, b2, eps, wd, step, sbc2, decoupled); }
}

extern "C" __global__ void ema_f32(float* __restrict__ ema, const float* __restrict__ p,
                                   long long n, float decay) {
    GRID_STRIDE(i, n) { ema_at(ema, p, i, decay); }
}

// ---- multi-tensor forms (layouts mirrored by SgdRef / EmaRef / Chunk in optim.rs) ----

#define MULTI_CHUNK 4096

struct SgdRef {
    float* p;
    const float* g;
    float* buf;
    long long n;
    float wd;
    int pad_;
};

struct AdamRef {
    float* p;
    const float* g;
    float* m;
    float* v;
    long long n;
    float wd;
    float bc1;  // bias corrections of this tensor's step count
    float bc2;
    int pad_;
};

struct EmaRef {
    float* ema;
    const float* src;
    long long n;
};

struct Chunk {
    long long tensor;
    long long start;
};

extern "C" __global__ void sgd_nesterov_multi_f32(const SgdRef* __restrict__ refs,
                                                  const Chunk* __restrict__ chunks,
                                                  long long num_chunks, float lr, float momentum) {
    for (long long c = blockIdx.x; c < num_chunks; c += gridDim.x) {
        const SgdRef r = refs[chunks[c].tensor];
        const long long lo = chunks[c].start;
        const long long hi = lo + MULTI_CHUNK < r.n ? lo + MULTI_CHUNK : r.n;
        for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            sgd_nesterov_at(r.p, r.g, r.buf, i, lr, momentum, r.wd);
        }
    }
}

extern "C" __global__ void adam_multi_f32(const AdamRef* __restrict__ refs,
                                          const Chunk* __restrict__ chunks, long long num_chunks,
                                          float lr, float b1, float b2, float eps, int decoupled) {
    for (long long c = blockIdx.x; c < num_chunks; c += gridDim.x) {
        const AdamRef r = refs[chunks[c].tensor];
        const float step = lr / r.bc1, sbc2 = sqrtf(r.bc2);
        const long long lo = chunks[c].start;
        const long long hi = lo + MULTI_CHUNK < r.n ? lo + MULTI_CHUNK : r.n;
        for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            adam_at(r.p, r.g, r.m, r.v, i, lr, b1, b2, eps, r.wd, step, sbc2, decoupled);
        }
    }
}

extern "C" __global__ void ema_multi_f32(const EmaRef* __restrict__ refs,
                                         const Chunk* __restrict__ chunks, long long num_chunks,
                                         float decay) {
    for (long long c = blockIdx.x; c < num_chunks; c += gridDim.x) {
        const EmaRef r = refs[chunks[c].tensor];
        const long long lo = chunks[c].start;
        const long long hi = lo + MULTI_CHUNK < r.n ? lo + MULTI_CHUNK : r.n;
        for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
            ema_at(r.ema, r.src, i, decay);
        }
    }
}
