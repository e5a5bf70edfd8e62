//! Ops: one file per family. Each op validates its arguments (errors name the op and the shapes),
//! computes its forward on the tensor's device, and records its backward rule with
//! [`crate::autograd::record`]. Backward rules return fresh gradients; the tape accumulates.
//!
//! The layout (DEVELOPERS.md, "How an op is laid out"): the public op validates, builds its
//! parameter struct, calls its file's `fwd` and records one closure calling `bwd`; `fwd` and
//! `bwd` hold the one device dispatch (a `match` on the device or on the saved state) whose arms
//! (`cpu_*`, `cuda_*`) lend tensor values to `backend::cpu::<op>` and `backend::cuda::<op>`.
//! No kernel loops here. `tests/architecture.rs` lists the files that follow it.
//!
//! Loss ops return per-element values (cross_entropy: one per row); callers reduce.

mod batch_norm;
mod binary;
mod conv2d;
mod crop;
mod elementwise;
mod index;
mod loss;
mod matmul;
mod pool;
mod reduce;
mod shape;
mod similarity;
mod softmax;

pub use batch_norm::{batch_norm2d, batch_norm_silu2d, BatchNormParams};
pub use binary::{add, div, maximum, minimum, mul, sub};
pub use conv2d::{conv2d, trace_geometries, Conv2dParams, TracedConv};
pub use crop::{crop_patches, PatchBox};
pub use elementwise::{
    abs, add_scalar, atan, clamp, div_scalar, exp, exp_fast, log, mul_scalar, neg, pow_scalar,
    rdiv_scalar, relu, rsub_scalar, sigmoid, sigmoid_f32 as sigmoid_scalar, silu, sqrt, sub_scalar,
    tanh,
};
pub use index::{gather, index_select};
pub use loss::{bce_with_logits, cross_entropy, l1_loss, smooth_l1_loss};
pub use matmul::{linear, matmul};
pub use pool::{avg_pool2d, global_avg_pool2d, max_pool2d, upsample_nearest2x, Pool2dParams};
pub use reduce::{max_axis, mean, mean_all, sum, sum_all, sum_to_shape};
pub use shape::{
    broadcast_to, cat, contiguous, flatten, infer_shape, narrow, permute, reshape, slice_step,
    split, squeeze, transpose, unsqueeze,
};
pub use similarity::cosine_similarity;
pub use softmax::{log_softmax, softmax};

use crate::backend::cpu::elementwise as cpu_ew;
use crate::tensor::Tensor;
use crate::Result;

/// A fresh contiguous tensor with `f` applied to every value of `x` (on the host).
pub(crate) fn map_values(x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Result<Tensor> {
    let out = x.with_values(|v| cpu_ew::map(v, f))?;
    Tensor::from_vec(out, x.shape().clone())
}

/// A fresh contiguous tensor with `f(a, b)` over two tensors of the same shape (on the host).
pub(crate) fn zip_values(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    if a.shape() != b.shape() {
        return Err(crate::Error::shape(op, a.shape(), b.shape()));
    }
    let out = a.with_values(|va| b.with_values(|vb| cpu_ew::zip(va, vb, f)))??;
    Ok(Tensor::from_vec(out, a.shape().clone()).expect("same length"))
}

/// `(outer, len, inner)` of a contiguous shape split at `axis`: element `(o, i, j)` sits at
/// `(o * len + i) * inner + j`.
pub(crate) fn split_at_axis(dims: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = dims[..axis].iter().product();
    let inner = dims[axis + 1..].iter().product();
    (outer, dims[axis], inner)
}

/// Methods for the most used ops, so code reads `x.add(&y)?.sum_all()?`.
impl Tensor {
    pub fn add(&self, o: &Tensor) -> Result<Tensor> {
        add(self, o)
    }
    pub fn sub(&self, o: &Tensor) -> Result<Tensor> {
        sub(self, o)
    }
    pub fn mul(&self, o: &Tensor) -> Result<Tensor> {
        mul(self, o)
    }
    pub fn div(&self, o: &Tensor) -> Result<Tensor> {
        div(self, o)
    }
    pub fn sum_all(&self) -> Result<Tensor> {
        sum_all(self)
    }
    pub fn mean_all(&self) -> Result<Tensor> {
        mean_all(self)
    }
    pub fn reshape(&self, shape: impl Into<crate::tensor::Shape>) -> Result<Tensor> {
        reshape(self, shape)
    }
    pub fn permute(&self, axes: &[usize]) -> Result<Tensor> {
        permute(self, axes)
    }
    pub fn contiguous(&self) -> Result<Tensor> {
        contiguous(self)
    }
}
