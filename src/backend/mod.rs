//! Compute backends. The CPU backend works on plain slices (`&[f32]` in, `Vec<f32>` out) so that
//! each kernel can be tested and benchmarked on its own; `ops` adapts tensors to them.
//!
//! Both sides use the op's stem: `cpu/<op>.rs` (kernel), `cuda/<op>.rs` (launcher of
//! `kernels/<op>.cu`). Neither knows about tensors or autograd: the one dispatch between them is
//! the `fwd`/`bwd` pair in `src/ops/<op>.rs` (DEVELOPERS.md, "How an op is laid out").

pub mod conv_geometry;
pub mod cpu;
pub mod cuda;

/// What follows a batch norm in the same pass (the BN kernels of both backends take it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Plain BatchNorm2d.
    Identity,
    /// `silu(bn(x))` (YOLOX BaseConv's BN → SiLU) with no intermediate tensor.
    Silu,
}
