// bf16.cuh: bf16 bits <-> f32 for the kernels that read or write bf16 (products' operands, bf16
// storage). NVRTC compiles each kernels/*.cu on its own; modules.rs puts this text in place of
// the line `#include "bf16.cuh"` (the emulation's g++ reads the file itself).
//   bf16_bits(x): round to nearest even; NaN stays a quiet NaN with its sign; overflow goes to
//     inf (as __float2bfloat16_rn), with bit operations so no cuda_bf16.h is needed.
//   bf16_value(bits): exact (the bits in an f32's top half).
__device__ __forceinline__ unsigned short bf16_bits(float x) {
    unsigned int b = __float_as_uint(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((b >> 16) | 0x0040u);
    return (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float bf16_value(unsigned short bits) {
    return __uint_as_float((unsigned int)bits << 16);
}
