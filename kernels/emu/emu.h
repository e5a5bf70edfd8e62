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
static inline void __syncthreads() {}
using std::isnan;
