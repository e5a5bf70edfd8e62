// conv2d_mma.cu: 2-D convolution (forward, input gradient, weight gradient) as implicit GEMMs on
// the tensor cores with bf16 operands (mma.sync m16n8k16) and f32 accumulation, no column
// matrix; the tiling, gathers and epilogues are conv2d_mma.cuh's, shared with conv2d_tf32.cu.
//
// Contract (geometry as Conv2dGeometry in src/backend/cpu/conv2d.rs with groups == 1; grouped
// and depthwise convs stay on conv2d.cu): NCHW; weights w [K,C,kh,kw] f32 (the master weights);
// x f32 or bf16 bits (bf16 storage); dy f32. Each operand is rounded to bf16 once as it is
// fetched (the rounding of the im2col + cuBLAS bf16 path; bf16 storage taken as it is);
// products of two bf16 are exact in f32 and sum in f32, in another order than cuBLAS's.
// `_m128` marks the 128-row tile form (bf16-storage forms and dx only).
//   conv2d_mma[_m128]_fwd_<x>_to_<y>(x, w, y, G)  y[n,k,p] = sum_(c,u,v) w[k,c,u,v]
//     x[n,c,oh*s-pad+u, ow*s-pad+v]: M = K, N = batch*Ho*Wo, R = C*kh*kw; x, y f32 or bf16 bits.
//   conv2d_mma[_m128]_bwd_input_f32(dy, w, dx, G)  dx[n,c,ih,iw] = sum_(k,u,v) w[k,c,u,v]
//     dy[n,k,oh,ow] with oh*s = ih+pad-u, ow*s = iw+pad-v inside the output, for the input
//     positions of stride phase (G.phase_h, G.phase_w) only ((ih+pad) % s, (iw+pad) % s; see
//     StridePhase): M = C, N = batch * the phase's positions, R = K * the phase's taps. One
//     launch per phase with taps and positions; dx must be zero where a phase has no taps.
//   conv2d_mma[_m128]_bwd_weight_<x>(dy, x, part, G)  part[z,k,(c,u,v)] = the sum of dy[n,k,p]
//     x[...] over split z's output positions r in [z*split_len, (z+1)*split_len): M = K,
//     N = C*kh*kw, R = batch*Ho*Wo. With one split part is dw itself.
//   conv2d_mma_sum_splits(part, dw, len, splits)  dw[i] = sum_z part[z*len+i], z in order.
//   conv2d_mma_pack_fwd(w, wp, G)  wp[k, u*kw+v, c] = bf16(w[k,c,u,v]);
//   conv2d_mma_pack_bwd_input(w, wp, G)  wp[c, a*taps_w+b, k] = bf16(w[k, c, phase_h+s*a,
//     phase_w+s*b]) for G's stride phase.
//   conv2d_mma[_m128]_tap_fwd_bf16_to_<y>(x, wp, y, G), conv2d_mma[_m128]_tap_bwd_input_f32(dy,
//     wp, dx, G): the forward and the input gradient above with the reduction in tap-major order
//     (r = tap * C + c, r = tap * K + k) on the packed weights; C (forward) or K (input gradient)
//     a multiple of 32. Same products, summed in another order.
// Checked against: backend::cpu::conv2d::{fwd, bwd_input, bwd_weight} (selftest rows
//   `conv2d mma *`), and in the host emulation with the PTX fragment layout of mma.sync
//   (kernels/emu/emu.h runs a block's threads as OS threads, warps exchange registers),
//   element by element against numpy on the same rounded operands.
// Launch geometry: blockDim.x == 2 * TM: TM x 128 block tiles, TM = 64 (four warps, 2 x 2) or
//   128 for the `_m128` kernels (eight warps, 4 x 2); 1-D grid of tiles_n * tiles_m * splits
//   blocks, tile_n fastest (blocks that share a weight tile run together). Offsets are int: the
//   launcher keeps every tensor under 2^31 elements and the partial sums under 2^26.
//   conv2d_mma_sum_splits, conv2d_mma_pack_*: any 1-D grid-stride launch.
// Check: cargo test --release --test cuda_kernels_compile (compiles for sm_90 too, which
//   assembles the mma); CI=1 cargo test --release --test cuda_kernels_emulated;
//   ssod selftest --device cuda; ssod bench conv --device cuda --precision bf16 --conv both.

#include "bf16.cuh"
#include "conv2d_mma.cuh"

__device__ __forceinline__ void mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
#ifdef SSOD_EMULATION
    emu_mma_bf16_16816(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

__device__ __forceinline__ unsigned shared_pair(const unsigned short* p) {
    return *(const unsigned*)p;
}

// bf16 operands (f32 values rounded to nearest even once, as they are fetched), mma.m16n8k16.
struct Bf16Math {
    typedef unsigned short Elem;
    static const int K_TILE = 32;
    static const int LD = K_TILE + 8;
    // f32 rounded to nearest even; bf16 storage taken as it is (no widening and rounding back).
    static __device__ __forceinline__ Elem from(float v) { return bf16_bits(v); }
    static __device__ __forceinline__ Elem from(unsigned short bits) { return bits; }
    static __device__ __forceinline__ Elem zero() { return 0; }
    template <int RUN> static __device__ __forceinline__ void store(Elem* tile, int row, int part,
                                                                    const Elem* v) {
        uint4* dst = (uint4*)(tile + row * LD + part * RUN);
#pragma unroll
        for (int i = 0; i < RUN / 8; ++i)
            dst[i] = make_uint4(pair(v[8 * i], v[8 * i + 1]), pair(v[8 * i + 2], v[8 * i + 3]),
                                pair(v[8 * i + 4], v[8 * i + 5]), pair(v[8 * i + 6], v[8 * i + 7]));
    }
    static __device__ __forceinline__ unsigned pair(Elem lo, Elem hi) {
        return (unsigned)lo | ((unsigned)hi << 16);
    }
    // A fragment: rows g, g+8 x columns 2t, 2t+1 (and +8); B: columns (k) 2t, 2t+1 (and +8)
    // of row (n) g: pairs along k, one 32-bit load each.
    static __device__ __forceinline__ void multiply(const Elem* a_tile, const Elem* b_tile, int wm, int wn,
                                                    int g, int t, float acc[2][8][4]) {
#pragma unroll
        for (int kk = 0; kk < K_TILE; kk += 16) {
            unsigned a[2][4], b[8][2];
#pragma unroll
            for (int mi = 0; mi < 2; ++mi) {
                const Elem* p = a_tile + (wm + mi * 16 + g) * LD + kk + 2 * t;
                a[mi][0] = shared_pair(p);
                a[mi][1] = shared_pair(p + 8 * LD);
                a[mi][2] = shared_pair(p + 8);
                a[mi][3] = shared_pair(p + 8 * LD + 8);
            }
#pragma unroll
            for (int ni = 0; ni < 8; ++ni) {
                const Elem* q = b_tile + (wn + ni * 8 + g) * LD + kk + 2 * t;
                b[ni][0] = shared_pair(q);
                b[ni][1] = shared_pair(q + 8);
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 8; ++ni) mma_bf16_16816(acc[mi][ni], a[mi], b[ni]);
        }
    }
};

CONV_MMA_FWD(conv2d_mma_fwd_f32_to_f32, Bf16Math, 64, float, float)
CONV_MMA_FWD(conv2d_mma_fwd_f32_to_bf16, Bf16Math, 64, float, unsigned short)
CONV_MMA_FWD(conv2d_mma_fwd_bf16_to_f32, Bf16Math, 64, unsigned short, float)
CONV_MMA_FWD(conv2d_mma_fwd_bf16_to_bf16, Bf16Math, 64, unsigned short, unsigned short)
CONV_MMA_BWD_INPUT(conv2d_mma_bwd_input_f32, Bf16Math, 64)
CONV_MMA_BWD_WEIGHT(conv2d_mma_bwd_weight_f32, Bf16Math, 64, float)
CONV_MMA_BWD_WEIGHT(conv2d_mma_bwd_weight_bf16, Bf16Math, 64, unsigned short)
// Taller tiles for layers with more than 64 rows: the gathered B operand (input windows, output
// gradients) serves twice the rows. In bf16 mode only the bf16-storage forms (what training
// runs); the others fall back to 64 rows.
CONV_MMA_FWD(conv2d_mma_m128_fwd_bf16_to_bf16, Bf16Math, 128, unsigned short, unsigned short)
CONV_MMA_BWD_INPUT(conv2d_mma_m128_bwd_input_f32, Bf16Math, 128)
CONV_MMA_BWD_WEIGHT(conv2d_mma_m128_bwd_weight_bf16, Bf16Math, 128, unsigned short)

// Tap-major forms (C, or K for the input gradient, a multiple of 32: conv2d_mma.cuh), the
// training's bf16-storage forward and the input gradient, on weights packed as bf16.
CONV_MMA_PACK(conv2d_mma, Bf16Math)
// Two 128-row blocks per multiprocessor fit 128 registers without spills; 64-row ones would
// spill at four.
CONV_MMA_TAP_FWD(conv2d_mma_tap_fwd_bf16_to_bf16, Bf16Math, 64, 1, unsigned short, unsigned short)
CONV_MMA_TAP_FWD(conv2d_mma_tap_fwd_bf16_to_f32, Bf16Math, 64, 1, unsigned short, float)
CONV_MMA_TAP_FWD(conv2d_mma_m128_tap_fwd_bf16_to_bf16, Bf16Math, 128, 2, unsigned short, unsigned short)
CONV_MMA_TAP_BWD_INPUT(conv2d_mma_tap_bwd_input_f32, Bf16Math, 64, 1)
CONV_MMA_TAP_BWD_INPUT(conv2d_mma_m128_tap_bwd_input_f32, Bf16Math, 128, 2)

CONV_MMA_SUM_SPLITS(conv2d_mma_sum_splits)
