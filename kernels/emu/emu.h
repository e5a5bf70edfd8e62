#include <cmath>
#include <cstring>
#include <cstdint>
struct emu_dim3 { unsigned x, y, z; };
static emu_dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1}, threadIdx = {0, 0, 0};
#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
static inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
static inline void __syncthreads() {}
// run.py walks a grid block by block: it sets the block's index and the grid's size before
// each call of a kernel whose blocks split the work (the others run as one block).
extern "C" void emu_set_block(unsigned block, unsigned grid) { blockIdx.x = block; gridDim.x = grid; }
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
