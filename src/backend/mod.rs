//! Compute backends. The CPU backend works on plain slices (`&[f32]` in, `Vec<f32>` out) so that
//! each kernel can be tested and benchmarked on its own; `ops` adapts tensors to them.

pub mod conv_geometry;
pub mod cpu;
pub mod cuda;
