// elementwise.cu: unary forward/backward pairs and binary arithmetic, f32.
//
// Contract
//   Unary forward  `<op>_fwd_f32(x [n], y [n], n, p0, p1)`: y = f(x). p0/p1 are the op's scalars
//     (clamp: min, max; pow: exponent in p0); other ops ignore them.
//   Unary backward `<op>_bwd_f32(dy [n], saved [n], dx [n], n, p0, p1)`: dx = dy * f'(.), where
//     `saved` is the forward INPUT for silu, relu, log, abs, clamp, pow and the forward OUTPUT for
//     sigmoid, exp, sqrt (the same convention as src/ops/elementwise.rs: `*_from_input` /
//     `*_from_output`).
//   Binary same shape `<op>_f32(a [n], b [n], y [n], n)` for add, sub, mul, div.
//   Binary broadcast  `<op>_bcast_f32(a, b, y, n, Bcast)`: y has `n` elements in the row-major
//     order of `Bcast.dims`; a and b are read at the strides in `Bcast.sa` / `Bcast.sb` (0 on a
//     broadcast axis), rank <= 6 (as Shape::broadcast_strides in src/tensor/shape.rs).
//   div_bwd_f32(g, a, b, ga, gb, n): same-shape quotient rule (ga = g/b, gb = -g*a/b^2).
//   scale_shift_f32(x [n], y [n], n, a, b): y = a*x + b (scalar arithmetic, neg, and their
//     backward g*a).
//   fill_f32(y [n], n, v): y = v.
//   f32_to_bf16(x [n], y [n] as u16 bits, n): round to nearest even (NaN stays a quiet NaN,
//     overflow goes to inf, as __float2bfloat16_rn), for the bf16 products (gemm.rs) and bf16
//     storage (bf16.rs); written with bit operations so no cuda_bf16.h is needed under NVRTC.
//   bf16_to_f32(x [n] as u16 bits, y [n], n): exact (the bits shifted into an f32's top half).
//   add_bf16(a, b, y [n] as u16 bits, n): y = bf16(a + b), the sum in f32 (bf16 storage's
//     residual adds).
// Checked against: src/ops/elementwise.rs and src/ops/binary.rs (through Tensor) by the parity
//   table in src/selftest/mod.rs.
// Launch geometry: 1-D, 256 threads per block, grid-stride loops (any grid size is correct; the
//   launcher uses min(ceil(n/256), 65535) blocks).
// Check: cargo test --release --test cuda_kernels_compile (NVRTC, no GPU);
//        ssod selftest --device cuda (parity and timings, on a GPU).

#include "bf16.cuh"

#include "common.cuh"

// ---- unary ops: F(v, p0, p1) forward value, D(s, p0, p1) derivative from the saved value ----

__device__ __forceinline__ float silu_f(float x, float, float) { return x * sigmoid_stable(x); }
__device__ __forceinline__ float silu_d(float x, float, float) {
    float s = sigmoid_stable(x);
    return s * (1.0f + x * (1.0f - s));
}

__device__ __forceinline__ float sigmoid_f(float x, float, float) { return sigmoid_stable(x); }
__device__ __forceinline__ float sigmoid_d(float y, float, float) { return y * (1.0f - y); }

__device__ __forceinline__ float relu_f(float x, float, float) { return x > 0.0f ? x : 0.0f; }
__device__ __forceinline__ float relu_d(float x, float, float) { return x > 0.0f ? 1.0f : 0.0f; }

__device__ __forceinline__ float exp_f(float x, float, float) { return expf(x); }
__device__ __forceinline__ float exp_d(float y, float, float) { return y; }

__device__ __forceinline__ float log_f(float x, float, float) { return logf(x); }
__device__ __forceinline__ float log_d(float x, float, float) { return 1.0f / x; }

__device__ __forceinline__ float sqrt_f(float x, float, float) { return sqrtf(x); }
__device__ __forceinline__ float sqrt_d(float y, float, float) { return 0.5f / y; }

__device__ __forceinline__ float abs_f(float x, float, float) { return fabsf(x); }
__device__ __forceinline__ float abs_d(float x, float, float) {
    return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : 0.0f);
}

// clamp: p0 = min, p1 = max (either may be +-inf); NaN passes through as in f32::clamp.
__device__ __forceinline__ float clamp_f(float x, float lo, float hi) {
    return x < lo ? lo : (x > hi ? hi : x);
}
__device__ __forceinline__ float clamp_d(float x, float lo, float hi) {
    return (x >= lo && x <= hi) ? 1.0f : 0.0f;
}

// pow: p0 = exponent.
__device__ __forceinline__ float pow_f(float x, float p, float) {
    return p == 2.0f ? x * x : powf(x, p);
}
__device__ __forceinline__ float pow_d(float x, float p, float) {
    if (p == 0.0f) return 0.0f;
    if (p == 2.0f) return 2.0f * x;
    return p * powf(x, p - 1.0f);
}

#define UNARY_PAIR(name)                                                                     \
    extern "C" __global__ void name##_fwd_f32(const float* __restrict__ x,                  \
                                              float* __restrict__ y, long long n, float p0, \
                                              float p1) {                                    \
        GRID_STRIDE(i, n) { y[i] = name##_f(x[i], p0, p1); }                                 \
    }                                                                                        \
    extern "C" __global__ void name##_bwd_f32(const float* __restrict__ dy,                 \
                                              const float* __restrict__ saved,              \
                                              float* __restrict__ dx, long long n, float p0, \
                                              float p1) {                                    \
        GRID_STRIDE(i, n) { dx[i] = dy[i] * name##_d(saved[i], p0, p1); }                    \
    }

UNARY_PAIR(silu)
UNARY_PAIR(sigmoid)
UNARY_PAIR(relu)
UNARY_PAIR(exp)
UNARY_PAIR(log)
UNARY_PAIR(sqrt)
UNARY_PAIR(abs)
UNARY_PAIR(clamp)
UNARY_PAIR(pow)

// ---- binary ops ----

#define MAX_RANK 6

// Broadcast geometry, passed by value (layout mirrored by `Bcast` in src/backend/cuda/elementwise.rs).
struct Bcast {
    int rank;
    int pad_;
    long long dims[MAX_RANK];
    long long sa[MAX_RANK];
    long long sb[MAX_RANK];
};

__device__ __forceinline__ float add_op(float a, float b) { return a + b; }
__device__ __forceinline__ float sub_op(float a, float b) { return a - b; }
__device__ __forceinline__ float mul_op(float a, float b) { return a * b; }
__device__ __forceinline__ float div_op(float a, float b) { return a / b; }

#define BINARY(name)                                                                           \
    extern "C" __global__ void name##_f32(const float* __restrict__ a,                        \
                                          const float* __restrict__ b, float* __restrict__ y, \
                                          long long n) {                                       \
        GRID_STRIDE(i, n) { y[i] = name##_op(a[i], b[i]); }                                    \
    }                                                                                          \
    extern "C" __global__ void name##_bcast_f32(const float* __restrict__ a,                  \
                                                const float* __restrict__ b,                  \
                                                float* __restrict__ y, long long n, Bcast g) { \
        int rank = g.rank < 0 ? 0 : (g.rank > MAX_RANK ? MAX_RANK : g.rank);                   \
        GRID_STRIDE(i, n) {                                                                    \
            long long rem = i, ia = 0, ib = 0;                                                 \
            for (int d = rank - 1; d >= 0; --d) {                                              \
                long long dim = g.dims[d] > 0 ? g.dims[d] : 1;                                 \
                long long c = rem % dim;                                                       \
                rem /= dim;                                                                    \
                ia += c * g.sa[d];                                                             \
                ib += c * g.sb[d];                                                             \
            }                                                                                  \
            y[i] = name##_op(a[ia], b[ib]);                                                    \
        }                                                                                      \
    }

BINARY(add)
BINARY(sub)
BINARY(mul)
BINARY(div)

extern "C" __global__ void div_bwd_f32(const float* __restrict__ g, const float* __restrict__ a,
                                       const float* __restrict__ b, float* __restrict__ ga,
                                       float* __restrict__ gb, long long n) {
    GRID_STRIDE(i, n) {
        float bi = b[i];
        ga[i] = g[i] / bi;
        gb[i] = -g[i] * (a[i] / (bi * bi));
    }
}

extern "C" __global__ void scale_shift_f32(const float* __restrict__ x, float* __restrict__ y,
                                           long long n, float a, float b) {
    GRID_STRIDE(i, n) { y[i] = a * x[i] + b; }
}

extern "C" __global__ void fill_f32(float* __restrict__ y, long long n, float v) {
    GRID_STRIDE(i, n) { y[i] = v; }
}

extern "C" __global__ void f32_to_bf16(const float* __restrict__ x, unsigned short* __restrict__ y,
                                       long long n) {
    GRID_STRIDE(i, n) { y[i] = bf16_bits(x[i]); }
}

extern "C" __global__ void add_bf16(const unsigned short* __restrict__ a,
                                    const unsigned short* __restrict__ b,
                                    unsigned short* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) { y[i] = bf16_bits(bf16_value(a[i]) + bf16_value(b[i])); }
}

extern "C" __global__ void bf16_to_f32(const unsigned short* __restrict__ x, float* __restrict__ y,
                                       long long n) {
    GRID_STRIDE(i, n) { y[i] = bf16_value(x[i]); }
}
