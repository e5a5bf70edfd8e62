// conv2d_mma.cu: 2-D convolution (forward, input gradient, weight gradient) as implicit GEMMs on
// the tensor cores, f32 accumulation, no column matrix.
//
// Contract (geometry as Conv2dGeometry in src/backend/cpu/conv2d.rs with groups == 1; grouped
// and depthwise convs stay on conv2d.cu): NCHW; weights w [K,C,kh,kw] f32 (the master weights);
// x f32 or bf16 bits (bf16 storage); dy f32. Three arithmetics (the Math policies below), each
// kernel name's prefix: conv2d_mma_* bf16 operands (mma.sync m16n8k16), each rounded to bf16
// once as it is fetched (the rounding of the im2col + cuBLAS bf16 path; bf16 storage taken as
// it is), products exact in f32; conv2d_tf32_* TF32 operands (m16n8k8, cvt.rna); and
// conv2d_tf32x3_* three TF32 products per product (x = hi + lo), about f32's accuracy. Sums run
// in f32, in another order than cuBLAS's. `_m128` marks the 128-row tile form.
//   <prefix>_fwd_<x>_to_<y>(x, w, y, G)  y[n,k,p] = sum_(c,u,v) w[k,c,u,v] x[n,c,oh*s-pad+u,
//     ow*s-pad+v]: M = K, N = batch*Ho*Wo, R = C*kh*kw. x and y each f32 or bf16 bits (bf16
//     storage forms in the bf16 arithmetic only; the TF32 ones are <prefix>_fwd_f32).
//   <prefix>_bwd_input_f32(dy, w, dx, G)  dx[n,c,ih,iw] = sum_(k,u,v) w[k,c,u,v] dy[n,k,oh,ow]
//     with oh*s = ih+pad-u, ow*s = iw+pad-v inside the output, for the input positions of stride
//     phase (G.phase_h, G.phase_w) only ((ih+pad) % s, (iw+pad) % s; see StridePhase): M = C,
//     N = batch * the phase's positions, R = K * the phase's taps. One launch per phase with
//     taps and positions; dx must be zero where a phase has no taps (1x1 stride 2).
//   <prefix>_bwd_weight_<x>(dy, x, part, G)  part[z,k,(c,u,v)] = the sum of dy[n,k,p] x[...]
//     over split z's output positions r in [z*split_len, (z+1)*split_len): M = K, N = C*kh*kw,
//     R = batch*Ho*Wo. With one split part is dw itself.
//   conv2d_mma_sum_splits(part, dw, len, splits)  dw[i] = sum_z part[z*len+i], z in order.
// Checked against: backend::cpu::conv2d::{fwd, bwd_input, bwd_weight} (selftest rows
//   `conv2d mma *`, `conv2d tf32 *`, `conv2d tf32x3 *`), and in the host emulation with the PTX
//   fragment layouts of mma.sync (kernels/emu/emu.h runs a block's threads as OS threads, warps
//   exchange registers), element by element against numpy on the same rounded operands.
// Launch geometry: blockDim.x == 2 * TM: TM x 128 block tiles, TM = 64 (four warps, 2 x 2) or
//   128 for the `_m128` kernels (eight warps, 4 x 2); 1-D grid of tiles_n * tiles_m * splits
//   blocks, tile_n fastest (blocks that share a weight tile run together). Offsets are int: the
//   launcher keeps every tensor under 2^31 elements and the partial sums under 2^26.
//   conv2d_mma_sum_splits: any 1-D grid-stride launch.
// Check: cargo test --release --test cuda_kernels_compile (compiles for sm_90 too, which
//   assembles the mma); CI=1 cargo test --release --test cuda_kernels_emulated;
//   ssod selftest --device cuda; ssod bench conv --device cuda --precision bf16 --conv both.

#include "bf16.cuh"

// Block tiles: TM (64 or 128) rows by TILE_N columns, warps of 32 x 64 each, TM / 32 of them
// along the rows and 2 along the columns: 2 * TM threads.
#define TILE_N 128
template <int TM> struct Block {
    static const int SIZE = 2 * TM;
    static const int WARPS_M = TM / 32;
};

// Layout mirrored by `MmaConvGeom` in src/backend/cuda/conv2d/implicit_gemm.rs (all i32).
struct MmaConvGeom {
    int n, c, h, w, k, kh, kw, stride, pad, ho, wo, split_len, phase_h, phase_w;
};

// The input gradient one stride phase at a time: input rows ih with (ih + pad) % s == phase_h
// receive only the taps u = phase_h + s*a (from output row oh = i + base - a, where
// ih = first + s*i), so each phase is a dense product over its own taps, with none of the
// s*s - 1 of every s*s taps a strided gather would skip. Stride 1 is the one phase (0, 0).
struct StridePhase {
    int first, count, taps, base;  // first row, rows, taps, oh of (i = 0, a = 0)
    __device__ StridePhase(int phase, int size, int kernel, int stride, int pad) {
        first = ((phase - pad) % stride + stride) % stride;
        count = first < size ? (size - first + stride - 1) / stride : 0;
        taps = phase < kernel ? (kernel - phase + stride - 1) / stride : 0;
        base = (first + pad - phase) / stride;  // exact: first + pad = phase (mod stride), >= 0
    }
};

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

// ---- Operand gathers: element (row, r) of a tile's operand, zero past the matrix or r >= R.
// Two shapes, chosen by where the tensor is contiguous, so a warp's loads coalesce:
//   row-major (R_MAJOR false): the tensor runs along the rows (output or input positions).
//     Each thread owns one row for the whole kernel (constructed with it: its decomposition
//     happens once) and fetch<Math, RUN>(r0, v) reads r0..r0+RUN-1 with counters; consecutive
//     threads hold consecutive rows.
//   r-major (R_MAJOR true): the tensor runs along r (weights along C*kh*kw, gradients and
//     inputs along the output positions). Constructed with the block's first row;
//     fetch_rows<Math, COUNT>(r, row0, step, v) reads rows row0 + i*step (tile-relative) at one r;
//     consecutive threads hold consecutive r.
// Values arrive in the arithmetic's element type (Math::from: bf16 bits as they are stored, f32
// rounded once). prepare() runs once per block before the first fetch (a __syncthreads follows
// it). ----

// fwd A: w[m, r] (rows of the weight matrix [K, C*kh*kw]).
struct WeightRows {
    static const bool R_MAJOR = true;
    const float* w;
    int m0, m_len, r_len;
    __device__ WeightRows(const float* w_, int m0_, int m_len_, int r_len_)
        : w(w_), m0(m0_), m_len(m_len_), r_len(r_len_) {}
    __device__ void prepare() const {}
    template <class Math, int COUNT>
    __device__ void fetch_rows(int r, int row0, int step, typename Math::Elem* v) const {
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            int m = m0 + row0 + i * step;
            v[i] = Math::from((m < m_len && r < r_len) ? w[m * r_len + r] : 0.0f);
        }
    }
};

// bwd_input A (one stride phase): w[k, c, phase_h + s*a, phase_w + s*b] as row c, column
// r = (k, a, b).
struct WeightColumns {
    static const bool R_MAJOR = false;
    const float* w;
    int taps_h, taps_w, taps, per_k, step_h, step_w, r_len;  // per_k = C*kh*kw
    bool live;
    __device__ WeightColumns(const float* w_, int c, const MmaConvGeom& g) {
        StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad);
        live = c < g.c;
        w = w_ + (live ? c : 0) * g.kh * g.kw + g.phase_h * g.kw + g.phase_w;
        taps_h = ph.taps;
        taps_w = pw.taps;
        taps = ph.taps * pw.taps;
        per_k = g.c * g.kh * g.kw;
        step_h = g.stride * g.kw;
        step_w = g.stride;
        r_len = g.k * taps;
    }
    __device__ void prepare() const {}
    template <class Math, int RUN> __device__ void fetch(int r0, typename Math::Elem* v) const {
        int k = r0 / taps, ab = r0 - k * taps, a = ab / taps_w, b = ab - a * taps_w;
#pragma unroll
        for (int i = 0; i < RUN; ++i) {
            v[i] = Math::from((live && r0 + i < r_len) ? w[k * per_k + a * step_h + b * step_w] : 0.0f);
            if (++b == taps_w) { b = 0; if (++a == taps_h) { a = 0; ++k; } }
        }
    }
};

// fwd B: the input window of output position j = (n, oh, ow), column r = (c, u, v).
template <class X> struct InputWindow {
    static const bool R_MAJOR = false;
    const X* x;
    int ih0, iw0, h, w, kh, kw, plane, r_len;
    bool live, pointwise;
    __device__ InputWindow(const X* x_, int j, const MmaConvGeom& g)
        : h(g.h), w(g.w), kh(g.kh), kw(g.kw), plane(g.h * g.w), r_len(g.c * g.kh * g.kw) {
        int per_image = g.ho * g.wo;
        live = j < g.n * per_image;
        int jj = live ? j : 0;
        int img = jj / per_image, p = jj - img * per_image;
        int oh = p / g.wo, ow = p - oh * g.wo;
        ih0 = oh * g.stride - g.pad;
        iw0 = ow * g.stride - g.pad;
        x = x_ + img * g.c * plane;
        pointwise = g.kh == 1 && g.kw == 1 && g.stride == 1 && g.pad == 0;
    }
    __device__ void prepare() const {}
    template <class Math, int RUN> __device__ void fetch(int r0, typename Math::Elem* v) const {
        if (pointwise) {
            // 1x1, stride 1, no padding (most of YOLOX's convs): the window is the position
            // itself, always inside, and r is the channel.
            const X* at = x + ih0 * w + iw0;
#pragma unroll
            for (int i = 0; i < RUN; ++i)
                v[i] = (live && r0 + i < r_len) ? Math::from(at[(r0 + i) * plane]) : Math::zero();
            return;
        }
        int taps = kh * kw;
        int c = r0 / taps, uv = r0 - c * taps, u = uv / kw, t = uv - u * kw;
#pragma unroll
        for (int i = 0; i < RUN; ++i) {
            int ih = ih0 + u, iw = iw0 + t;
            bool in = live && r0 + i < r_len && (unsigned)ih < (unsigned)h && (unsigned)iw < (unsigned)w;
            v[i] = in ? Math::from(x[c * plane + ih * w + iw]) : Math::zero();
            if (++t == kw) { t = 0; if (++u == kh) { u = 0; ++c; } }
        }
    }
};

// bwd_input B (one stride phase): for the phase's input position j = (n, i, jw), i.e.
// (ih, iw) = (first_h + s*i, first_w + s*jw), column r = (k, a, b): dy[n, k, oh, ow] with
// oh = i + base_h - a, ow = jw + base_w - b when inside the output.
struct GradWindow {
    static const bool R_MAJOR = false;
    const float* dy;
    int oh0, ow0, taps_h, taps_w, taps, ho, wo, plane, r_len;
    bool live;
    __device__ GradWindow(const float* dy_, int j, const MmaConvGeom& g) {
        StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad);
        int per_image = ph.count * pw.count;
        live = j < g.n * per_image;
        int jj = live ? j : 0;
        int img = jj / per_image, q = jj - img * per_image;
        int i = q / pw.count, jw = q - i * pw.count;
        oh0 = i + ph.base;
        ow0 = jw + pw.base;
        taps_h = ph.taps;
        taps_w = pw.taps;
        taps = ph.taps * pw.taps;
        ho = g.ho;
        wo = g.wo;
        plane = g.ho * g.wo;
        r_len = g.k * taps;
        dy = dy_ + img * g.k * plane;
    }
    __device__ void prepare() const {}
    template <class Math, int RUN> __device__ void fetch(int r0, typename Math::Elem* v) const {
        int k = r0 / taps, ab = r0 - k * taps, a = ab / taps_w, b = ab - a * taps_w;
#pragma unroll
        for (int i = 0; i < RUN; ++i) {
            int oh = oh0 - a, ow = ow0 - b;
            bool in = live && r0 + i < r_len && (unsigned)oh < (unsigned)ho && (unsigned)ow < (unsigned)wo;
            v[i] = Math::from(in ? dy[k * plane + oh * wo + ow] : 0.0f);
            if (++b == taps_w) { b = 0; if (++a == taps_h) { a = 0; ++k; } }
        }
    }
};

// bwd_weight A: dy[n, k, p] as row k, column r = (n, p).
struct GradRows {
    static const bool R_MAJOR = true;
    const float* dy;
    int k0, k_len, plane, r_len;  // plane = Ho*Wo
    __device__ GradRows(const float* dy_, int k0_, const MmaConvGeom& g)
        : dy(dy_), k0(k0_), k_len(g.k), plane(g.ho * g.wo), r_len(g.n * g.ho * g.wo) {}
    __device__ void prepare() const {}
    template <class Math, int COUNT>
    __device__ void fetch_rows(int r, int row0, int step, typename Math::Elem* v) const {
        bool live = r < r_len;
        int rr = live ? r : 0, img = rr / plane, p = rr - img * plane;
        const float* at = dy + img * k_len * plane + p;
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            int k = k0 + row0 + i * step;
            v[i] = Math::from((live && k < k_len) ? at[k * plane] : 0.0f);
        }
    }
};

// bwd_weight B: tap j = (c, u, v) of the weights, column r = (n, oh, ow): x[n, c, oh*s-pad+u,
// ow*s-pad+v]. The block's TILE_N taps are decomposed once into a shared table (a tap past
// C*kh*kw gets an offset no row reaches, so its bounds test fails).
template <class X> struct InputTaps {
    static const bool R_MAJOR = true;
    const X* x;
    int j0, taps, kh, kw, pad, h, w, stride, ho, wo, image, plane_in, r_len;
    int* tap_dh;  // u - pad
    int* tap_dw;  // v - pad
    int* tap_c;   // c*H*W
    __device__ InputTaps(const X* x_, int j0_, const MmaConvGeom& g)
        : x(x_), j0(j0_), taps(g.c * g.kh * g.kw), kh(g.kh), kw(g.kw), pad(g.pad), h(g.h), w(g.w),
          stride(g.stride), ho(g.ho), wo(g.wo), image(g.c * g.h * g.w), plane_in(g.h * g.w),
          r_len(g.n * g.ho * g.wo) {
        __shared__ int dh[TILE_N], dw[TILE_N], c_off[TILE_N];
        tap_dh = dh;
        tap_dw = dw;
        tap_c = c_off;
    }
    __device__ void prepare() const {
        int per_c = kh * kw;
        for (int j = threadIdx.x; j < TILE_N; j += blockDim.x) {
            int jj = j0 + j;
            if (jj < taps) {
                int c = jj / per_c, uv = jj - c * per_c, u = uv / kw;
                tap_dh[j] = u - pad;
                tap_dw[j] = uv - u * kw - pad;
                tap_c[j] = c * plane_in;
            } else {
                tap_dh[j] = -(1 << 29);
                tap_dw[j] = 0;
                tap_c[j] = 0;
            }
        }
    }
    template <class Math, int COUNT>
    __device__ void fetch_rows(int r, int row0, int step, typename Math::Elem* v) const {
        bool live = r < r_len;
        int plane = ho * wo, rr = live ? r : 0;
        int img = rr / plane, p = rr - img * plane, oh = p / wo, ow = p - oh * wo;
        const X* at = x + img * image;
        int ih0 = oh * stride, iw0 = ow * stride;
#pragma unroll
        for (int i = 0; i < COUNT; ++i) {
            int j = row0 + i * step, ih = ih0 + tap_dh[j], iw = iw0 + tap_dw[j];
            bool in = live && (unsigned)ih < (unsigned)h && (unsigned)iw < (unsigned)w;
            v[i] = in ? Math::from(at[tap_c[j] + ih * w + iw]) : Math::zero();
        }
    }
};

// ---- The tensor-core arithmetic, one policy per precision. Each keeps a K_TILE-wide slice of
// the A and B tiles in shared memory, rows of K_TILE values plus 16 bytes of padding (20 words
// a row: the eight rows a fragment load touches, and the eight 16-byte stores of a quarter
// warp, fall on distinct banks), and multiplies the warp's 32 x 64 part of it into acc. ----

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

// f32 operands kept as f32 in shared memory, multiplied on the TF32 path (mma.m16n8k8):
// PASSES = 1 rounds each operand to TF32 (cvt.rna, 11 significant bits: precision "tf32");
// PASSES = 3 also splits off each operand's remainder, x = hi + lo with both TF32, and adds
// lo·hi + hi·lo before hi·hi (the lo·lo term, ~2^-22 relative, is dropped): products good to
// about f32 rounding, so the f32 rows hold their 1e-4 bound (precision "f32").
template <int PASSES> struct Tf32Math {
    typedef float Elem;
    static const int K_TILE = 16;
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
            unsigned a_hi[2][4], a_lo[2][4], b_hi[8][2], b_lo[8][2];
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
                const Elem* q = b_tile + (wn + ni * 8 + g) * LD + kk + t;
                split(q[0], b_hi[ni][0], b_lo[ni][0]);
                split(q[4], b_hi[ni][1], b_lo[ni][1]);
            }
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int ni = 0; ni < 8; ++ni) {
                    if (PASSES == 3) {
                        mma_tf32_1688(acc[mi][ni], a_lo[mi], b_hi[ni]);
                        mma_tf32_1688(acc[mi][ni], a_hi[mi], b_lo[ni]);
                    }
                    mma_tf32_1688(acc[mi][ni], a_hi[mi], b_hi[ni]);
                }
        }
    }
};

// ---- Moving one operand's ROWS x K_TILE slice from global to shared memory through
// registers (fetch: the loads, in the arithmetic's element type; store: into the tile), in the
// gather's shape. ----

// Row-major gathers: thread tid owns row tid % ROWS and the (tid / ROWS)-th run of RUN k.
template <class Math, class G, int ROWS, int SIZE, bool R_MAJOR = G::R_MAJOR> struct TileLoad {
    static const int PARTS = SIZE / ROWS, RUN = Math::K_TILE / PARTS;
    typename Math::Elem v[RUN];
    __device__ __forceinline__ void fetch(const G& g, int r0) {
        g.template fetch<Math, RUN>(r0 + (threadIdx.x / ROWS) * RUN, v);
    }
    __device__ __forceinline__ void store(typename Math::Elem* tile) const {
        Math::template store<RUN>(tile, threadIdx.x % ROWS, threadIdx.x / ROWS, v);
    }
};

// r-major gathers: thread tid owns column k = tid % K_TILE and rows tid / K_TILE + i * STEP.
template <class Math, class G, int ROWS, int SIZE> struct TileLoad<Math, G, ROWS, SIZE, true> {
    static const int STEP = SIZE / Math::K_TILE, COUNT = ROWS / STEP;
    typename Math::Elem v[COUNT];
    __device__ __forceinline__ void fetch(const G& g, int r0) {
        g.template fetch_rows<Math, COUNT>(r0 + threadIdx.x % Math::K_TILE, threadIdx.x / Math::K_TILE, STEP,
                                           v);
    }
    __device__ __forceinline__ void store(typename Math::Elem* tile) const {
        int k = threadIdx.x % Math::K_TILE, row = threadIdx.x / Math::K_TILE;
#pragma unroll
        for (int i = 0; i < COUNT; ++i) tile[(row + i * STEP) * Math::LD + k] = v[i];
    }
};

// ---- The block's product: acc (the warp's 32 x 64 part of the TM x TILE_N tile) += A
// rows m0.. times B rows n0.. over r in [r_begin, r_end), Math::K_TILE at a time (r_begin and
// the split length are multiples of it). ----

template <class Math, int TM, class GA, class GB>
__device__ void tile_product(const GA& ga, const GB& gb, int r_begin, int r_end, float acc[2][8][4]) {
    typedef typename Math::Elem Elem;
    __shared__ __align__(16) Elem a_tile[TM * Math::LD];
    __shared__ __align__(16) Elem b_tile[TILE_N * Math::LD];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int wm = (warp % Block<TM>::WARPS_M) * 32, wn = (warp / Block<TM>::WARPS_M) * 64;
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < 8; ++ni)
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.0f;
    TileLoad<Math, GA, TM, Block<TM>::SIZE> la;
    TileLoad<Math, GB, TILE_N, Block<TM>::SIZE> lb;
    ga.prepare();
    gb.prepare();
    __syncthreads();
    la.fetch(ga, r_begin);
    lb.fetch(gb, r_begin);
    for (int r0 = r_begin; r0 < r_end; r0 += Math::K_TILE) {
        __syncthreads();  // the previous tile's fragments are read
        la.store(a_tile);
        lb.store(b_tile);
        __syncthreads();
        // The next tile's loads are in flight while the tensor cores work on this one.
        int next = r0 + Math::K_TILE;
        if (next < r_end) {
            la.fetch(ga, next);
            lb.fetch(gb, next);
        }
        // mma.sync.aligned wants the whole warp converged; the gathers' per-lane predicates
        // should leave it so, and this makes sure.
        __syncwarp();
        Math::multiply(a_tile, b_tile, wm, wn, g, t, acc);
    }
}

// The block's tile: (tile_m, tile_n, split) from blockIdx.x, tile_n fastest.
struct BlockTile {
    int m0, n0, z;
    __device__ BlockTile(int m_len, int n_len, int tm) {
        int tiles_n = (n_len + TILE_N - 1) / TILE_N, tiles_m = (m_len + tm - 1) / tm;
        int b = blockIdx.x;
        n0 = (b % tiles_n) * TILE_N;
        b /= tiles_n;
        m0 = (b % tiles_m) * tm;
        z = b / tiles_m;
    }
};

// Calls out(m, n, value) for each accumulator of the thread inside the M x N matrix, in the
// mma's C layout (rows g and g+8, columns 2t and 2t+1 of each 16 x 8 piece).
template <int TM, class Out>
__device__ void store_tile(const float acc[2][8][4], int m0, int n0, int m_len, int n_len, Out out) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int wm = m0 + (warp % Block<TM>::WARPS_M) * 32, wn = n0 + (warp / Block<TM>::WARPS_M) * 64;
#pragma unroll
    for (int ni = 0; ni < 8; ++ni)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            int n = wn + ni * 8 + 2 * t + half;
            if (n >= n_len) continue;
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int lower = 0; lower < 2; ++lower) {
                    int m = wm + mi * 16 + g + 8 * lower;
                    if (m < m_len) out(m, n, acc[mi][ni][2 * lower + half]);
                }
        }
}

// y[n, k, p] from (m = k, column j = (n, p)).
template <class Y> struct NchwOut {
    Y* y;
    int channels, plane;
    __device__ void operator()(int m, int j, float v) const {
        int img = j / plane, p = j - img * plane;
        store_f32(y, (img * channels + m) * plane + p, v);
    }
};

// dx[n, c, first_h + s*i, first_w + s*jw] from (m = c, column j = (n, i, jw)) of one phase.
struct PhaseOut {
    float* dx;
    int channels, h, w, rows, cols, first_h, first_w, stride;
    __device__ void operator()(int m, int j, float v) const {
        int per_image = rows * cols, img = j / per_image, q = j - img * per_image;
        int i = q / cols, jw = q - i * cols;
        dx[((img * channels + m) * h + first_h + stride * i) * w + first_w + stride * jw] = v;
    }
};

struct RowMajorOut {
    float* c;
    int n_len;
    __device__ void operator()(int m, int n, float v) const { c[m * n_len + n] = v; }
};

template <class Math, int TM, class X, class Y>
__device__ void conv_mma_fwd(const X* x, const float* w, Y* y, const MmaConvGeom& g) {
    int m_len = g.k, n_len = g.n * g.ho * g.wo, r_len = g.c * g.kh * g.kw;
    BlockTile bt(m_len, n_len, TM);
    WeightRows ga(w, bt.m0, m_len, r_len);
    InputWindow<X> gb(x, bt.n0 + threadIdx.x % TILE_N, g);
    float acc[2][8][4];
    tile_product<Math, TM>(ga, gb, 0, r_len, acc);
    NchwOut<Y> out = {y, g.k, g.ho * g.wo};
    store_tile<TM>(acc, bt.m0, bt.n0, m_len, n_len, out);
}

template <class Math, int TM>
__device__ void conv_mma_bwd_input(const float* dy, const float* w, float* dx, const MmaConvGeom& g) {
    StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad);
    int m_len = g.c, n_len = g.n * ph.count * pw.count, r_len = g.k * ph.taps * pw.taps;
    BlockTile bt(m_len, n_len, TM);
    WeightColumns ga(w, bt.m0 + threadIdx.x % TM, g);
    GradWindow gb(dy, bt.n0 + threadIdx.x % TILE_N, g);
    float acc[2][8][4];
    tile_product<Math, TM>(ga, gb, 0, r_len, acc);
    PhaseOut out = {dx, g.c, g.h, g.w, ph.count, pw.count, ph.first, pw.first, g.stride};
    store_tile<TM>(acc, bt.m0, bt.n0, m_len, n_len, out);
}

template <class Math, int TM, class X>
__device__ void conv_mma_bwd_weight(const float* dy, const X* x, float* part, const MmaConvGeom& g) {
    int m_len = g.k, n_len = g.c * g.kh * g.kw, r_len = g.n * g.ho * g.wo;
    BlockTile bt(m_len, n_len, TM);
    int r_begin = bt.z * g.split_len, r_end = min(r_len, r_begin + g.split_len);
    GradRows ga(dy, bt.m0, g);
    InputTaps<X> gb(x, bt.n0, g);
    float acc[2][8][4];
    tile_product<Math, TM>(ga, gb, r_begin, r_end, acc);
    RowMajorOut out = {part + bt.z * m_len * n_len, n_len};
    store_tile<TM>(acc, bt.m0, bt.n0, m_len, n_len, out);
}

// The entry points: <prefix>_fwd / _bwd_input / _bwd_weight per arithmetic, block height and
// storage format; `_m128` kernels have 128-row tiles (256 threads), the others 64 (128 threads).
#define CONV_MMA_FWD(NAME, MATH, TM, X, Y)                                                          \
    extern "C" __global__ void __launch_bounds__(2 * TM, 1)                                          \
        NAME(const X* __restrict__ x, const float* __restrict__ w, Y* __restrict__ y, MmaConvGeom g) { \
        conv_mma_fwd<MATH, TM>(x, w, y, g);                                                         \
    }
#define CONV_MMA_BWD_INPUT(NAME, MATH, TM)                                                          \
    extern "C" __global__ void __launch_bounds__(2 * TM, 1)                                          \
        NAME(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx,     \
             MmaConvGeom g) {                                                                       \
        conv_mma_bwd_input<MATH, TM>(dy, w, dx, g);                                                 \
    }
#define CONV_MMA_BWD_WEIGHT(NAME, MATH, TM, X)                                                      \
    extern "C" __global__ void __launch_bounds__(2 * TM, 1)                                          \
        NAME(const float* __restrict__ dy, const X* __restrict__ x, float* __restrict__ part,      \
             MmaConvGeom g) {                                                                       \
        conv_mma_bwd_weight<MATH, TM>(dy, x, part, g);                                              \
    }

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

extern "C" __global__ void conv2d_mma_sum_splits(const float* __restrict__ part, float* __restrict__ dw,
                                                 long long len, int splits) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < len;
         i += (long long)blockDim.x * gridDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += part[(long long)z * len + i];
        dw[i] = s;
    }
}
