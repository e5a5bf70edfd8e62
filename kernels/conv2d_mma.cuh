// conv2d_mma.cuh: the implicit-GEMM convolution shared by conv2d_mma.cu (bf16 arithmetic) and
// conv2d_tf32.cu (TF32, and f32 as three TF32 products): block shapes, the geometry and its
// stride phases, the operand gathers, the tile loop over an arithmetic policy, the epilogues
// and the entry-point macros. modules.rs puts this text in place of the line
// `#include "conv2d_mma.cuh"` (NVRTC sees no file system; the emulation's g++ reads the file).
// Needs bf16.cuh first (store_f32 for bf16 outputs).

// Block tiles: TM (64 or 128) rows by TILE_N columns, warps of 32 x 64 each, TM / 32 of them
// along the rows and 2 along the columns: 2 * TM threads.
#define TILE_N 128
template <int TM> struct Block {
    static const int SIZE = 2 * TM;
    static const int WARPS_M = TM / 32;
};

// Layout mirrored by `MmaConvGeom` in src/backend/cuda/conv2d/implicit_gemm/mod.rs (all i32).
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

// Column j = (n, oh, ow) of the forward: its image and its window's corner (oh*s - pad,
// ow*s - pad); past the batch, live is false and the rest is column 0's.
struct WindowCorner {
    bool live;
    int img, ih0, iw0;
    __device__ WindowCorner(int j, const MmaConvGeom& g) {
        int per_image = g.ho * g.wo;
        live = j < g.n * per_image;
        int jj = live ? j : 0;
        img = jj / per_image;
        int p = jj - img * per_image, oh = p / g.wo, ow = p - oh * g.wo;
        ih0 = oh * g.stride - g.pad;
        iw0 = ow * g.stride - g.pad;
    }
};

// Column j = (n, i, jw) of one stride phase of the input gradient: its image and the output
// position (i + base_h, jw + base_w) its tap (0, 0) reads; past the batch as WindowCorner.
struct PhaseCorner {
    bool live;
    int img, oh0, ow0;
    __device__ PhaseCorner(int j, const MmaConvGeom& g) {
        StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad);
        int per_image = ph.count * pw.count;
        live = j < g.n * per_image;
        int jj = live ? j : 0;
        img = jj / per_image;
        int q = jj - img * per_image, i = q / pw.count, jw = q - i * pw.count;
        oh0 = i + ph.base;
        ow0 = jw + pw.base;
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
        WindowCorner at(j, g);
        live = at.live;
        ih0 = at.ih0;
        iw0 = at.iw0;
        x = x_ + at.img * g.c * plane;
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
        PhaseCorner at(j, g);
        live = at.live;
        oh0 = at.oh0;
        ow0 = at.ow0;
        taps_h = ph.taps;
        taps_w = pw.taps;
        taps = ph.taps * pw.taps;
        ho = g.ho;
        wo = g.wo;
        plane = g.ho * g.wo;
        r_len = g.k * taps;
        dy = dy_ + at.img * g.k * plane;
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

// ---- Tap-major gathers (the `_tap_` kernels): the reduction runs over r = (tap, channel)
// instead of (channel, tap), so a run of RUN consecutive r shares one kernel tap when the
// channel count is a multiple of RUN (the launcher asks for a multiple of 32, every RUN here):
// one bounds test and one address per run, then RUN loads a plane apart, where the channel-major
// gathers above decompose and test every element (about 20 instructions each; the forward's
// SASS spent some 600 per thread per 32-deep slice on them for 32 tensor-core instructions).
// The weights come packed in the same order by CONV_MMA_PACK's kernels, so their runs are
// contiguous: whole 16-byte loads. ----

// A, packed: row m of wp [M, R] (R = taps * inner channels, a multiple of 32), runs of RUN
// elements loaded 16 bytes at a time (rows and runs 16-byte aligned: R and r0 multiples of 8).
template <class E> struct PackedRows {
    static const bool R_MAJOR = false;
    const E* row;  // null past the matrix
    int r_len;
    __device__ PackedRows(const E* wp, int m, int m_len, int r_len_)
        : row(m < m_len ? wp + m * r_len_ : 0), r_len(r_len_) {}
    __device__ void prepare() const {}
    template <class Math, int RUN> __device__ void fetch(int r0, typename Math::Elem* v) const {
        const int VECS = RUN * (int)sizeof(E) / 16;
        if (row && r0 < r_len) {  // R % RUN == 0: a run is wholly inside or wholly past
            uint4 q[VECS];
            const uint4* src = (const uint4*)(row + r0);
#pragma unroll
            for (int i = 0; i < VECS; ++i) q[i] = src[i];
            const E* e = (const E*)q;
#pragma unroll
            for (int i = 0; i < RUN; ++i) v[i] = Math::from(e[i]);
        } else {
#pragma unroll
            for (int i = 0; i < RUN; ++i) v[i] = Math::zero();
        }
    }
};

// fwd B, tap-major: the input window of output position j, column r = (u*kw + v) * C + c:
// x[n, c, oh*s-pad+u, ow*s-pad+v].
template <class X> struct InputWindowTaps {
    static const bool R_MAJOR = false;
    const X* x;
    int ih0, iw0, h, w, kw, c_len, plane, r_len;
    bool live;
    __device__ InputWindowTaps(const X* x_, int j, const MmaConvGeom& g)
        : h(g.h), w(g.w), kw(g.kw), c_len(g.c), plane(g.h * g.w), r_len(g.c * g.kh * g.kw) {
        WindowCorner at(j, g);
        live = at.live;
        ih0 = at.ih0;
        iw0 = at.iw0;
        x = x_ + at.img * g.c * plane;
    }
    __device__ void prepare() const {}
    template <class Math, int RUN> __device__ void fetch(int r0, typename Math::Elem* v) const {
        int tap = r0 / c_len, c = r0 - tap * c_len, u = tap / kw;
        int ih = ih0 + u, iw = iw0 + tap - u * kw;
        if (live && r0 < r_len && (unsigned)ih < (unsigned)h && (unsigned)iw < (unsigned)w) {
            const X* at = x + c * plane + ih * w + iw;
#pragma unroll
            for (int i = 0; i < RUN; ++i) v[i] = Math::from(at[i * plane]);
        } else {
#pragma unroll
            for (int i = 0; i < RUN; ++i) v[i] = Math::zero();
        }
    }
};

// bwd_input B, tap-major (one stride phase): for the phase's input position j = (n, i, jw),
// column r = (a * taps_w + b) * K + k: dy[n, k, i + base_h - a, jw + base_w - b] when inside.
struct GradWindowTaps {
    static const bool R_MAJOR = false;
    const float* dy;
    int oh0, ow0, taps_w, k_len, ho, wo, plane, r_len;
    bool live;
    __device__ GradWindowTaps(const float* dy_, int j, const MmaConvGeom& g) {
        StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad);
        PhaseCorner at(j, g);
        live = at.live;
        oh0 = at.oh0;
        ow0 = at.ow0;
        taps_w = pw.taps;
        k_len = g.k;
        ho = g.ho;
        wo = g.wo;
        plane = g.ho * g.wo;
        r_len = g.k * ph.taps * pw.taps;
        dy = dy_ + at.img * g.k * plane;
    }
    __device__ void prepare() const {}
    template <class Math, int RUN> __device__ void fetch(int r0, typename Math::Elem* v) const {
        int tap = r0 / k_len, k = r0 - tap * k_len, a = tap / taps_w;
        int oh = oh0 - a, ow = ow0 - (tap - a * taps_w);
        if (live && r0 < r_len && (unsigned)oh < (unsigned)ho && (unsigned)ow < (unsigned)wo) {
            const float* at = dy + k * plane + oh * wo + ow;
#pragma unroll
            for (int i = 0; i < RUN; ++i) v[i] = Math::from(at[i * plane]);
        } else {
#pragma unroll
            for (int i = 0; i < RUN; ++i) v[i] = Math::zero();
        }
    }
};

// The packing of the weights w [K, C, kh, kw] for the tap-major products, in the arithmetic's
// element type (Math::from: the rounding the channel-major gathers apply as they fetch): the forward's A is wp[k, u*kw + v, c]; the input gradient's, for
// stride phase (phase_h, phase_w), wp[c, a*taps_w + b, k] = w[k, c, phase_h + s*a, phase_w + s*b].
template <class Math>
__device__ void pack_weights(const float* w, typename Math::Elem* wp, int rows, int taps_h, int taps_w, int inner,
                             const MmaConvGeom& g, bool fwd) {
    int taps = taps_h * taps_w, per_row = taps * inner, len = rows * per_row;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < len; i += blockDim.x * gridDim.x) {
        int row = i / per_row, rem = i - row * per_row, tap = rem / inner, in = rem - tap * inner;
        int a = tap / taps_w, b = tap - a * taps_w;
        int k = fwd ? row : in, c = fwd ? in : row;
        int u = fwd ? a : g.phase_h + g.stride * a, v = fwd ? b : g.phase_w + g.stride * b;
        wp[i] = Math::from(w[((k * g.c + c) * g.kh + u) * g.kw + v]);
    }
}

// ---- An arithmetic policy (Math: Bf16Math in conv2d_mma.cu, Tf32Math in conv2d_tf32.cu) gives
// its shared element type Elem, K_TILE (the k extent of a tile slice) and LD (elements per
// shared row: K_TILE plus 16 bytes of padding, 20 or 12 words, so the eight rows a fragment load
// touches and the eight 16-byte stores of a quarter warp fall on distinct banks); from(f32 or
// bf16 bits) and zero() for the gathers; store<RUN>(tile, row, part, v) for a run of values;
// and multiply(a_tile, b_tile, wm, wn, g, t, acc), the warp's 32 x 64 part of one slice. ----

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

// Calls out(m, out.column(n), value) for each accumulator of the thread inside the M x N
// matrix, in the mma's C layout (rows g and g+8, columns 2t and 2t+1 of each 16 x 8 piece).
// column(n) places column n once for its four rows: it divides by the plane, some 40
// instructions that per element made a third of the 3x3 forward's SASS.
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
            int column = out.column(n);
#pragma unroll
            for (int mi = 0; mi < 2; ++mi)
#pragma unroll
                for (int lower = 0; lower < 2; ++lower) {
                    int m = wm + mi * 16 + g + 8 * lower;
                    if (m < m_len) out(m, column, acc[mi][ni][2 * lower + half]);
                }
        }
}

// y[n, k, p] from (m = k, column j = (n, p)): column(j) is the offset of (n, 0, p).
template <class Y> struct NchwOut {
    Y* y;
    int channels, plane;
    __device__ int column(int j) const {
        int img = j / plane;
        return img * channels * plane + j - img * plane;
    }
    __device__ void operator()(int m, int column, float v) const { store_f32(y, column + m * plane, v); }
};

// dx[n, c, first_h + s*i, first_w + s*jw] from (m = c, column j = (n, i, jw)) of one phase.
// column(j) is the offset of (n, 0, ih, iw).
struct PhaseOut {
    float* dx;
    int channels, h, w, rows, cols, first_h, first_w, stride;
    __device__ int column(int j) const {
        int per_image = rows * cols, img = j / per_image, q = j - img * per_image;
        int i = q / cols, jw = q - i * cols;
        return (img * channels * h + first_h + stride * i) * w + first_w + stride * jw;
    }
    __device__ void operator()(int m, int column, float v) const { dx[column + m * h * w] = v; }
};

struct RowMajorOut {
    float* c;
    int n_len;
    __device__ int column(int n) const { return n; }
    __device__ void operator()(int m, int column, float v) const { c[m * n_len + column] = v; }
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

// Tap-major forms (inner channel count a multiple of 32; weights packed by pack_weights).
template <class Math, int TM, class X, class Y>
__device__ void conv_mma_fwd_taps(const X* x, const typename Math::Elem* wp, Y* y, const MmaConvGeom& g) {
    int m_len = g.k, n_len = g.n * g.ho * g.wo, r_len = g.c * g.kh * g.kw;
    BlockTile bt(m_len, n_len, TM);
    PackedRows<typename Math::Elem> ga(wp, bt.m0 + threadIdx.x % TM, m_len, r_len);
    InputWindowTaps<X> gb(x, bt.n0 + threadIdx.x % TILE_N, g);
    float acc[2][8][4];
    tile_product<Math, TM>(ga, gb, 0, r_len, acc);
    NchwOut<Y> out = {y, g.k, g.ho * g.wo};
    store_tile<TM>(acc, bt.m0, bt.n0, m_len, n_len, out);
}

template <class Math, int TM>
__device__ void conv_mma_bwd_input_taps(const float* dy, const typename Math::Elem* wp, float* dx,
                                        const MmaConvGeom& g) {
    StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad);
    int m_len = g.c, n_len = g.n * ph.count * pw.count, r_len = g.k * ph.taps * pw.taps;
    BlockTile bt(m_len, n_len, TM);
    PackedRows<typename Math::Elem> ga(wp, bt.m0 + threadIdx.x % TM, m_len, r_len);
    GradWindowTaps gb(dy, bt.n0 + threadIdx.x % TILE_N, g);
    float acc[2][8][4];
    tile_product<Math, TM>(ga, gb, 0, r_len, acc);
    PhaseOut out = {dx, g.c, g.h, g.w, ph.count, pw.count, ph.first, pw.first, g.stride};
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

// The tap-major forms' entry points; their `wp` is the packing CONV_MMA_PACK's kernels write.
// MIN_BLOCKS resident blocks per multiprocessor (ptxas then keeps to 65536 / (2 * TM *
// MIN_BLOCKS) registers): 2 * TM * MIN_BLOCKS = 512 threads where that costs no spills
// (ptxas -v per instantiation), so a second block's loads are in flight while one waits.
#define CONV_MMA_TAP_FWD(NAME, MATH, TM, MIN_BLOCKS, X, Y)                                          \
    extern "C" __global__ void __launch_bounds__(2 * TM, MIN_BLOCKS)                                 \
        NAME(const X* __restrict__ x, const MATH::Elem* __restrict__ wp, Y* __restrict__ y,         \
             MmaConvGeom g) {                                                                       \
        conv_mma_fwd_taps<MATH, TM>(x, wp, y, g);                                                   \
    }
#define CONV_MMA_TAP_BWD_INPUT(NAME, MATH, TM, MIN_BLOCKS)                                          \
    extern "C" __global__ void __launch_bounds__(2 * TM, MIN_BLOCKS)                                 \
        NAME(const float* __restrict__ dy, const MATH::Elem* __restrict__ wp, float* __restrict__ dx, \
             MmaConvGeom g) {                                                                       \
        conv_mma_bwd_input_taps<MATH, TM>(dy, wp, dx, g);                                           \
    }
// <prefix>_pack_fwd(w, wp, g): wp [K, kh*kw, C]; <prefix>_pack_bwd_input(w, wp, g): wp [C, the
// phase's taps, K] for stride phase (g.phase_h, g.phase_w). Any 1-D grid-stride launch.
#define CONV_MMA_PACK(PREFIX, MATH)                                                                 \
    extern "C" __global__ void PREFIX##_pack_fwd(const float* __restrict__ w,                        \
                                                 MATH::Elem* __restrict__ wp, MmaConvGeom g) {       \
        pack_weights<MATH>(w, wp, g.k, g.kh, g.kw, g.c, g, true);                                   \
    }                                                                                                \
    extern "C" __global__ void PREFIX##_pack_bwd_input(const float* __restrict__ w,                  \
                                                       MATH::Elem* __restrict__ wp, MmaConvGeom g) { \
        StridePhase ph(g.phase_h, g.h, g.kh, g.stride, g.pad), pw(g.phase_w, g.w, g.kw, g.stride, g.pad); \
        pack_weights<MATH>(w, wp, g.c, ph.taps, pw.taps, g.k, g, false);                            \
    }

// dw[i] = sum_z part[z*len+i], z in order (any 1-D grid-stride launch).
#define CONV_MMA_SUM_SPLITS(NAME)                                                                   \
    extern "C" __global__ void NAME(const float* __restrict__ part, float* __restrict__ dw,        \
                                    long long len, int splits) {                                    \
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < len;              \
             i += (long long)blockDim.x * gridDim.x) {                                              \
            float s = 0.0f;                                                                         \
            for (int z = 0; z < splits; ++z) s += part[(long long)z * len + i];                     \
            dw[i] = s;                                                                              \
        }                                                                                           \
    }
