// conv2d_tf32.cu: 2-D convolution (forward, input gradient, weight gradient) as implicit GEMMs on
// the TF32 tensor cores (mma.sync m16n8k8) with f32 accumulation, no column matrix: for
// precision "tf32" one TF32 product per product, for "f32" three (x = hi + lo, both TF32); the
// tiling, gathers and epilogues are conv2d_mma.cuh's, shared with conv2d_mma.cu.
//
// Contract (geometry as Conv2dGeometry in src/backend/cpu/conv2d.rs with groups == 1; grouped
// and depthwise convs stay on conv2d.cu): NCHW, every tensor f32; weights w [K,C,kh,kw]. The
// operands stay f32 in shared memory and are split into TF32 parts (cvt.rna) as fragments are
// loaded; products sum in f32, in another order than cuBLAS's. conv2d_tf32_* round each
// operand to TF32 (11 significant bits); conv2d_tf32x3_* add lo*hi + hi*lo before hi*hi (the
// lo*lo term dropped) per k step of 8, from zero, then that step's sum to the running sum with
// an f32 add: about f32's accuracy. `_m128` marks the 128-row tile form.
//   <prefix>[_m128]_fwd_f32(x, w, y, G), <prefix>[_m128]_bwd_input_f32(dy, w, dx, G) (one launch
//     per stride phase), <prefix>[_m128]_bwd_weight_f32(dy, x, part, G): the products, shapes
//     and splits of conv2d_mma.cu's contract.
//   conv2d_tf32_sum_splits(part, dw, len, splits)  dw[i] = sum_z part[z*len+i], z in order.
//   conv2d_tf32_pack_fwd / _pack_bwd_input(w, wp, G), <prefix>[_m128]_tap_fwd_f32(x, wp, y, G),
//     <prefix>[_m128]_tap_bwd_input_f32(dy, wp, dx, G): conv2d_mma.cu's tap-major forms with
//     f32 weights (the packing only reorders them).
// Checked against: backend::cpu::conv2d::{fwd, bwd_input, bwd_weight} (selftest rows
//   `conv2d tf32 *` by norm at 2e-3, `conv2d tf32x3 *` per element at the f32 bound 1e-4), and
//   in the host emulation with the PTX fragment layout of the m16n8k8 mma and cvt.rna
//   (kernels/emu/emu.h), element by element against numpy on the same rounded operands.
// Launch geometry: as conv2d_mma.cu: blockDim.x == 2 * TM, TM = 64 or 128 (`_m128`); 1-D grid
//   of tiles_n * tiles_m * splits blocks. conv2d_tf32_sum_splits, conv2d_tf32_pack_*: any 1-D
//   grid-stride launch.
// Check: cargo test --release --test cuda_kernels_compile (sm_90 assembles the mma and cvt);
//   CI=1 cargo test --release --test cuda_kernels_emulated; ssod selftest --device cuda;
//   ssod bench conv --device cuda --precision f32 --conv both.

#include "bf16.cuh"
#include "conv2d_mma.cuh"

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: A 16x8 (a0 row g col t, a1 row g+8,
// a2 col t+4, a3 row g+8 col t+4), B 8x8 (b0 row t col g, b1 row t+4), C as m16n8k16.
__device__ __forceinline__ void mma_tf32_1688(float c[4], const unsigned a[4], const unsigned b[2]) {
#ifdef SSOD_EMULATION
    emu_mma_tf32_1688(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// x rounded to TF32 (nearest, ties away from zero: cvt.rna), as the bits of an f32 whose low
// 13 mantissa bits are zero.
__device__ __forceinline__ unsigned tf32_bits(float x) {
#ifdef SSOD_EMULATION
    return emu_cvt_rna_tf32(x);
#else
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#endif
}

// f32 operands kept as f32 in shared memory, multiplied on the TF32 path (mma.m16n8k8):
// PASSES = 1 rounds each operand to TF32 (cvt.rna, 11 significant bits: precision "tf32");
// PASSES = 3 also splits off each operand's remainder, x = hi + lo with both TF32, and adds
// lo·hi + hi·lo before hi·hi (the lo·lo term, ~2^-22 relative, is dropped): products good to
// about f32 rounding, so the f32 rows hold their 1e-4 bound (precision "f32"). The split sums
// each k step's three products from zero and adds that to the running sum with an f32 add:
// the tensor cores round a sum once, toward zero, at the magnitude of their accumulator (Fasi
// et al. 2021), so three products accumulated straight into the running sum truncate it three
// times per step, a bias that grows with the reduction (2.8e-4 over 1,260 terms in the
// emulation, which models it; 1.2e-5 this way). Its tiles are 8 deep, not 16: the per-step
// sums need registers that a 16-deep tile's second step would otherwise hold (ptxas: 180-196
// registers, no spills, against 255 and spills at 16).
template <int PASSES> struct Tf32Math {
    typedef float Elem;
    static const int K_TILE = PASSES == 3 ? 8 : 16;
    static const int LD = K_TILE + 4;
    static __device__ __forceinline__ Elem from(float v) { return v; }
    static __device__ __forceinline__ Elem from(unsigned short bits) { return bf16_value(bits); }
    static __device__ __forceinline__ Elem zero() { return 0.0f; }
    template <int RUN> static __device__ __forceinline__ void store(Elem* tile, int row, int part,
                                                                    const Elem* v) {
        float4* dst = (float4*)(tile + row * LD + part * RUN);
#pragma unroll
        for (int i = 0; i < RUN / 4; ++i) dst[i] = make_float4(v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]);
    }
    static __device__ __forceinline__ void split(float x, unsigned& hi, unsigned& lo) {
        hi = tf32_bits(x);
        lo = PASSES == 3 ? tf32_bits(x - __uint_as_float(hi)) : 0u;
    }
    // A fragment: rows g, g+8 x columns t, t+4; B: rows (k) t, t+4 of column (n) g.
    static __device__ __forceinline__ void multiply(const Elem* a_tile, const Elem* b_tile, int wm, int wn,
                                                    int g, int t, float acc[2][8][4]) {
#pragma unroll
        for (int kk = 0; kk < K_TILE; kk += 8) {
            unsigned a_hi[2][4], a_lo[2][4];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const Elem* p = a_tile + (wm + mi * 16 + g) * LD + kk + t;
                split(p[0], a_hi[mi][0], a_lo[mi][0]);
                split(p[8 * LD], a_hi[mi][1], a_lo[mi][1]);
                split(p[4], a_hi[mi][2], a_lo[mi][2]);
                split(p[8 * LD + 4], a_hi[mi][3], a_lo[mi][3]);
            }
#pragma unroll
            for (int ni = 0; ni < 8; ++ni) {
                unsigned b_hi[2], b_lo[2];
                const Elem* q = b_tile + (wn + ni * 8 + g) * LD + kk + t;
                split(q[0], b_hi[0], b_lo[0]);
                split(q[4], b_hi[1], b_lo[1]);
#pragma unroll
                for (int mi = 0; mi < 2; ++mi) {
                    if (PASSES == 3) {
                        // From zero, then one f32 add (see above).
                        float step[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma_tf32_1688(step, a_lo[mi], b_hi);
                        mma_tf32_1688(step, a_hi[mi], b_lo);
                        mma_tf32_1688(step, a_hi[mi], b_hi);
#pragma unroll
                        for (int i = 0; i < 4; ++i) acc[mi][ni][i] += step[i];
                    } else {
                        mma_tf32_1688(acc[mi][ni], a_hi[mi], b_hi);
                    }
                }
            }
        }
    }
};

CONV_MMA_FWD(conv2d_tf32_fwd_f32, Tf32Math<1>, 64, float, float)
CONV_MMA_BWD_INPUT(conv2d_tf32_bwd_input_f32, Tf32Math<1>, 64)
CONV_MMA_BWD_WEIGHT(conv2d_tf32_bwd_weight_f32, Tf32Math<1>, 64, float)
CONV_MMA_FWD(conv2d_tf32_m128_fwd_f32, Tf32Math<1>, 128, float, float)
CONV_MMA_BWD_INPUT(conv2d_tf32_m128_bwd_input_f32, Tf32Math<1>, 128)
CONV_MMA_BWD_WEIGHT(conv2d_tf32_m128_bwd_weight_f32, Tf32Math<1>, 128, float)

CONV_MMA_FWD(conv2d_tf32x3_fwd_f32, Tf32Math<3>, 64, float, float)
CONV_MMA_BWD_INPUT(conv2d_tf32x3_bwd_input_f32, Tf32Math<3>, 64)
CONV_MMA_BWD_WEIGHT(conv2d_tf32x3_bwd_weight_f32, Tf32Math<3>, 64, float)
CONV_MMA_FWD(conv2d_tf32x3_m128_fwd_f32, Tf32Math<3>, 128, float, float)
CONV_MMA_BWD_INPUT(conv2d_tf32x3_m128_bwd_input_f32, Tf32Math<3>, 128)
CONV_MMA_BWD_WEIGHT(conv2d_tf32x3_m128_bwd_weight_f32, Tf32Math<3>, 128, float)

// Tap-major forms (C, or K for the input gradient, a multiple of 32: conv2d_mma.cuh) on the
// weights in tap-major order, still f32 (one packing serves both arithmetics: from() keeps f32).
CONV_MMA_PACK(conv2d_tf32, Tf32Math<1>)
// 512 resident threads fit 128 registers without spills in TF32; the split (three products,
// 180-190 registers) stays at one block.
CONV_MMA_TAP_FWD(conv2d_tf32_tap_fwd_f32, Tf32Math<1>, 64, 4, float, float)
CONV_MMA_TAP_FWD(conv2d_tf32_m128_tap_fwd_f32, Tf32Math<1>, 128, 2, float, float)
CONV_MMA_TAP_BWD_INPUT(conv2d_tf32_tap_bwd_input_f32, Tf32Math<1>, 64, 4)
CONV_MMA_TAP_BWD_INPUT(conv2d_tf32_m128_tap_bwd_input_f32, Tf32Math<1>, 128, 2)
CONV_MMA_TAP_FWD(conv2d_tf32x3_tap_fwd_f32, Tf32Math<3>, 64, 1, float, float)
CONV_MMA_TAP_FWD(conv2d_tf32x3_m128_tap_fwd_f32, Tf32Math<3>, 128, 1, float, float)
CONV_MMA_TAP_BWD_INPUT(conv2d_tf32x3_tap_bwd_input_f32, Tf32Math<3>, 64, 1)
CONV_MMA_TAP_BWD_INPUT(conv2d_tf32x3_m128_tap_bwd_input_f32, Tf32Math<3>, 128, 1)

CONV_MMA_SUM_SPLITS(conv2d_tf32_sum_splits)
