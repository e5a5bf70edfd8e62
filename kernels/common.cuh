// common.cuh: what most kernel files share. modules.rs puts this text in place of the line
// `#include "common.cuh"` (NVRTC compiles each kernels/*.cu on its own, from embedded text); the
// emulation's g++ reads the file itself.
//   GRID_STRIDE(i, n): a 1-D grid-stride loop over i in [0, n) (long long indices).
//   sigmoid_stable(x): 1/(1+e^-x) without overflow for large |x|.
//   block_sum(v, sh): the sum of v over a block of THREADS threads (a fixed shared-memory tree:
//     deterministic); only where the including file defines THREADS before the include, and
//     blockDim.x must equal it.

#define GRID_STRIDE(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

__device__ __forceinline__ float sigmoid_stable(float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}

#ifdef THREADS
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
#endif
