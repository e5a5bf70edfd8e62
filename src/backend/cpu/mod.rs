//! CPU kernels: `gemm` crate for matrix products, rayon across batch items, plain loops elsewhere.
//! One file per op family; each exports `fwd` / `bwd_*` functions on slices.

pub mod conv2d;
pub mod gemm;
pub mod simd;
