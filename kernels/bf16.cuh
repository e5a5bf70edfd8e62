// bf16.cuh: bf16 bits <-> f32 for the kernels that read or write bf16 (products' operands, bf16
// storage). NVRTC compiles each kernels/*.cu on its own; modules.rs puts this text in place of
// the line `#include "bf16.cuh"` (the emulation's g++ reads the file itself).
//   bf16_bits(x): round to nearest even; NaN stays a quiet NaN with its sign; overflow goes to
//     inf (as __float2bfloat16_rn), with bit operations so no cuda_bf16.h is needed.
//   bf16_value(bits): exact (the bits in an f32's top half).
//   load_f32(p, i) / store_f32(p, i, v): element i of an f32 or bf16-bits buffer read as f32 /
//     written from f32, so one templated kernel body serves both storage formats.
__device__ __forceinline__ unsigned short bf16_bits(float x) {
    unsigned int b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x0040u);
    return (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float bf16_value(unsigned short bits) {
    return __uint_as_float((unsigned int)bits << 16);
}

__device__ __forceinline__ float load_f32(const float* p, long long i) { return p[i]; }
__device__ __forceinline__ float load_f32(const unsigned short* p, long long i) {
    return bf16_value(p[i]);
}
__device__ __forceinline__ void store_f32(float* p, long long i, float v) { p[i] = v; }
__device__ __forceinline__ void store_f32(unsigned short* p, long long i, float v) {
    p[i] = bf16_bits(v);
}
