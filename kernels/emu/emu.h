#include <cmath>
#include <cstring>
#include <cstdint>
#include <algorithm>
#include <pthread.h>
// Compiled for the host: kernels with warp-level instructions (conv2d_mma.cu's mma and cvt)
// take their emulated arm under this macro.
#define SSOD_EMULATION 1
struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
// Each emulated thread of a block is an OS thread (run.py's call_threads); its index is its own.
static thread_local emu_dim3 threadIdx = {0, 0, 0};
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
struct uint4 { unsigned x, y, z, w; };
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct float4 { float x, y, z, w; };
static inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
using std::min;
using std::max;
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
// One thread per block unless run.py's call_threads runs the block's threads as OS threads
// (emu_set_threads): then __syncthreads is a barrier over all of them, so shared memory,
// barriers and the warp exchange below behave as on the GPU (up to the order of races).
static unsigned emu_threads = 1;
static pthread_barrier_t emu_block_barrier;
static pthread_barrier_t emu_warp_barrier[32];
static inline void __syncthreads() {
    if (emu_threads > 1) pthread_barrier_wait(&emu_block_barrier);
}
extern "C" void emu_set_threads(unsigned n) {
    if (emu_threads > 1) {
        pthread_barrier_destroy(&emu_block_barrier);
        for (unsigned w = 0; w < (emu_threads + 31) / 32; ++w) pthread_barrier_destroy(&emu_warp_barrier[w]);
    }
    emu_threads = n < 1 ? 1 : n;
    blockDim.x = emu_threads;
    if (emu_threads > 1) {
        pthread_barrier_init(&emu_block_barrier, nullptr, emu_threads);
        // Warps are whole: call_threads refuses a block size that is not a multiple of 32.
        for (unsigned w = 0; w < (emu_threads + 31) / 32; ++w) pthread_barrier_init(&emu_warp_barrier[w], nullptr, 32);
    }
}
extern "C" void emu_set_thread(unsigned t) { threadIdx.x = t; }
// A meeting of the calling thread's warp (whole warps only, as the kernels that use it launch).
static inline void __syncwarp(unsigned = 0xffffffffu) {
    if (emu_threads > 1) pthread_barrier_wait(&emu_warp_barrier[threadIdx.x >> 5]);
}
// run.py walks a grid block by block: it sets the block's index and the grid's size before
// each call of a kernel whose blocks split the work (the others run as one block).
extern "C" void emu_set_block(unsigned block, unsigned grid) { blockIdx.x = block; gridDim.x = grid; }
// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for one warp, with the PTX ISA's fragment
// layout (groupID g = lane >> 2, t = lane & 3): A (16x16, row-major) reg 0 = row g, cols 2t,2t+1;
// reg 1 = row g+8; reg 2 = row g, cols 2t+8,2t+9; reg 3 = row g+8, cols 2t+8,2t+9. B (16x8)
// reg 0 = rows (k) 2t,2t+1 of col g; reg 1 = rows 2t+8,2t+9. C/D: c0,c1 = row g, cols 2t,2t+1;
// c2,c3 = row g+8. The lower half of a register is the lower index.
static unsigned emu_mma_a[32][32][4], emu_mma_b[32][32][2];
static inline float emu_bf16_half(unsigned reg, int high) {
    unsigned bits = high ? (reg >> 16) : (reg & 0xffffu);
    unsigned u = bits << 16; float f; std::memcpy(&f, &u, 4); return f;
}
// One warp-wide mma: every lane posts its A and B registers, the warp meets, each lane sums its
// four outputs (row g or g+8, column 2t or 2t+1) over k with product(warp, row, col, k) reading
// the posted registers, and the warp meets again before the exchange is reused. The sum is
// taken as the tensor cores are measured to take it (Fasi et al., "Numerical behavior of NVIDIA
// tensor cores", 2021): the products and c added without intermediate rounding (here in
// double, exact for these operands up to far-apart magnitudes), then one rounding to f32
// toward zero, the pessimistic (biased) one, so the split's f32 bound is checked with margin.
static inline float emu_round_toward_zero(double v) {
    float f = (float)v;  // nearest
    if (std::fabs((double)f) > std::fabs(v)) f = std::nextafter(f, 0.0f);
    return f;
}
template <class Product>
static inline void emu_mma(float c[4], const unsigned a[4], const unsigned b[2], unsigned depth,
                           Product product) {
    unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int i = 0; i < 4; ++i) emu_mma_a[warp][lane][i] = a[i];
    for (int i = 0; i < 2; ++i) emu_mma_b[warp][lane][i] = b[i];
    pthread_barrier_wait(&emu_warp_barrier[warp]);
    unsigned g = lane >> 2, t = lane & 3;
    for (int i = 0; i < 4; ++i) {
        unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        double s = c[i];
        for (unsigned k = 0; k < depth; ++k) s += (double)product(warp, row, col, k);
        c[i] = emu_round_toward_zero(s);
    }
    pthread_barrier_wait(&emu_warp_barrier[warp]);
}
static inline void emu_mma_bf16_16816(float c[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma(c, a, b, 16, [](unsigned warp, unsigned row, unsigned col, unsigned k) {
        unsigned a_lane = (row % 8) * 4 + (k % 8) / 2, a_reg = (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
        unsigned b_lane = col * 4 + (k % 8) / 2, b_reg = k >= 8 ? 1 : 0;
        return emu_bf16_half(emu_mma_a[warp][a_lane][a_reg], k & 1) *
               emu_bf16_half(emu_mma_b[warp][b_lane][b_reg], k & 1);
    });
}
using std::isnan;
// One thread: atomics are plain read-modify-writes; the _rn intrinsics are the plain operators
// (g++ runs with -ffp-contract=off, so nothing is fused either way).
static inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
static inline int atomicMin(int* p, int v) { int o = *p; if (v < o) *p = v; return o; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
using std::isfinite;
// cvt.rna.tf32.f32 for finite x: the nearest value with 10 stored mantissa bits, ties away
// from zero (half an ulp added to the magnitude, the low 13 bits cleared).
static inline unsigned emu_cvt_rna_tf32(float x) {
    unsigned u; std::memcpy(&u, &x, 4);
    return (u + 0x1000u) & 0xffffe000u;
}
// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 for one warp, fragment layout as the PTX
// ISA gives it: A (16x8) a0 = (g, t), a1 = (g+8, t), a2 = (g, t+4), a3 = (g+8, t+4); B (8x8)
// b0 = (k t, col g), b1 = (k t+4, col g); C as m16n8k16. The hardware reads only the TF32 part
// of each register (the low 13 bits are cleared here as it ignores them).
static inline float emu_tf32_value(unsigned reg) {
    unsigned u = reg & 0xffffe000u; float f; std::memcpy(&f, &u, 4); return f;
}
static inline void emu_mma_tf32_1688(float c[4], const unsigned a[4], const unsigned b[2]) {
    emu_mma(c, a, b, 8, [](unsigned warp, unsigned row, unsigned col, unsigned k) {
        unsigned a_lane = (row % 8) * 4 + k % 4, a_reg = (row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0);
        unsigned b_lane = col * 4 + k % 4, b_reg = k >= 4 ? 1 : 0;
        // A product of two TF32 values (22 significant bits at most) is exact in f32.
        return (float)((double)emu_tf32_value(emu_mma_a[warp][a_lane][a_reg]) *
                       (double)emu_tf32_value(emu_mma_b[warp][b_lane][b_reg]));
    });
}
