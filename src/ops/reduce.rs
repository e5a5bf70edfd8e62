//! Reductions: sums and means over axes or everything, max over one axis.
//! Sums accumulate in f64 in a fixed order, so results do not depend on the thread count.
//! Kernels: `backend::cpu::reduce` and `backend::cuda::reduce` (`kernels/reduce.cu`); this file
//! validates, dispatches (`*_fwd`, `*_bwd`) and records. max_axis runs on the host.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cpu::reduce as cpu_reduce;
use crate::backend::cuda::{reduce as cuda_reduce, CudaSlice};
use crate::tensor::{Device, Shape, Tensor};
use crate::{Error, Result};

fn resolve_axes(op: &str, shape: &Shape, axes: &[isize]) -> Result<Vec<bool>> {
    let mut reduce = vec![false; shape.rank()];
    for &a in axes {
        let a = shape.axis(op, a)?;
        if reduce[a] {
            return Err(Error::op(op, format!("axis {a} given twice")));
        }
        reduce[a] = true;
    }
    Ok(reduce)
}

/// Sum over `axes` (all axes when empty is NOT implied: use `sum_all`). `keepdim` keeps the
/// reduced axes with size 1.
pub fn sum(x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Tensor> {
    let reduce = resolve_axes("sum", x.shape(), axes)?;
    let kept: Vec<usize> = x
        .dims()
        .iter()
        .zip(&reduce)
        .map(|(&d, &r)| if r { 1 } else { d })
        .collect();
    let out_dims: Vec<usize> = if keepdim {
        kept.clone()
    } else {
        x.dims()
            .iter()
            .zip(&reduce)
            .filter(|(_, &r)| !r)
            .map(|(&d, _)| d)
            .collect()
    };
    let out = sum_fwd(x, &kept, out_dims)?;
    let in_shape = x.shape().clone();
    record("sum", out, &[x], move |g| {
        Ok(vec![Some(sum_bwd(g, &kept, &in_shape)?)])
    })
}

/// `x` summed down to `kept` (same rank, 1 where reduced), shaped `out_dims`.
fn sum_fwd(x: &Tensor, kept: &[usize], out_dims: impl Into<Shape>) -> Result<Tensor> {
    match x.device() {
        Device::Cpu => cpu_sum_fwd(x, kept, out_dims),
        Device::Cuda => Tensor::from_cuda(cuda_sum_keepdim(x, kept)?, out_dims),
    }
}

/// The sum's gradient: `g` broadcast back over the reduced axes (device ops).
fn sum_bwd(g: &Tensor, kept: &[usize], in_shape: &Shape) -> Result<Tensor> {
    let g = g.reshape(kept.to_vec())?;
    super::broadcast_to(&g, in_shape)?.contiguous()
}

/// The CUDA arm of the keepdim sums: `x` summed down to `kept` (same rank, 1 where reduced),
/// contiguous over `kept`. Neighbouring axes that are both kept or both reduced are merged first
/// (the kernel takes rank <= 6; merging keeps the summation's meaning).
fn cuda_sum_keepdim(x: &Tensor, kept: &[usize]) -> Result<CudaSlice<f32>> {
    let (mut dims, mut keep): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut last_reduced: Option<bool> = None;
    for (&d, &k) in x.dims().iter().zip(kept) {
        if d == 1 {
            continue;
        }
        let reduced = k == 1;
        if last_reduced == Some(reduced) {
            let i = dims.len() - 1;
            dims[i] *= d;
            keep[i] *= k;
        } else {
            dims.push(d);
            keep.push(k);
        }
        last_reduced = Some(reduced);
    }
    if dims.is_empty() {
        dims.push(1);
        keep.push(1);
    }
    x.with_cuda(|dev, xs| cuda_reduce::sum_keepdim(dev, xs, &dims, &keep))
}

/// Sum of `x` reduced to `kept` (same rank, 1 where reduced), in f64, in logical order.
fn cpu_sum_fwd(x: &Tensor, kept: &[usize], out_dims: impl Into<Shape>) -> Result<Tensor> {
    let sums = x.with_values(|v| cpu_reduce::sum_keepdim(v, x.dims(), kept))?;
    Tensor::from_vec(sums, out_dims)
}

pub fn mean(x: &Tensor, axes: &[isize], keepdim: bool) -> Result<Tensor> {
    let reduce = resolve_axes("mean", x.shape(), axes)?;
    let count: usize = x
        .dims()
        .iter()
        .zip(&reduce)
        .filter(|(_, &r)| r)
        .map(|(&d, _)| d)
        .product();
    let s = sum(x, axes, keepdim)?;
    super::div_scalar(&s, count.max(1) as f32)
}

/// Sum of every element, as a one-element tensor of shape `[]`.
pub fn sum_all(x: &Tensor) -> Result<Tensor> {
    let in_shape = x.shape().clone();
    let device = x.device();
    let out = sum_all_fwd(device, x)?;
    record("sum", out, &[x], move |g| {
        Ok(vec![Some(sum_all_bwd(device, g, &in_shape)?)])
    })
}

fn sum_all_fwd(device: Device, x: &Tensor) -> Result<Tensor> {
    match device {
        Device::Cpu => Ok(Tensor::scalar(x.with_values(cpu_reduce::sum_all)?)),
        Device::Cuda => Tensor::from_cuda(x.with_cuda(cuda_reduce::sum_all)?, Vec::<usize>::new()),
    }
}

/// `g` (shape `[]`) spread over the input's shape.
fn sum_all_bwd(device: Device, g: &Tensor, in_shape: &Shape) -> Result<Tensor> {
    match device {
        Device::Cpu => Ok(Tensor::full(in_shape.clone(), g.item()?)),
        Device::Cuda => super::broadcast_to(g, in_shape)?.contiguous(),
    }
}

pub fn mean_all(x: &Tensor) -> Result<Tensor> {
    let n = x.numel();
    if n == 0 {
        return Err(Error::op("mean", "mean of an empty tensor"));
    }
    super::div_scalar(&sum_all(x)?, n as f32)
}

/// Max over one axis (values). The gradient goes to the first maximal element, as PyTorch.
pub fn max_axis(x: &Tensor, axis: isize, keepdim: bool) -> Result<Tensor> {
    let a = x.shape().axis("max", axis)?;
    let (outer, len, inner) = split_at_axis(x.dims(), a);
    if len == 0 {
        return Err(Error::op(
            "max",
            format!("max over an empty axis of shape {}", x.shape()),
        ));
    }
    let mut out_dims = x.dims().to_vec();
    if keepdim {
        out_dims[a] = 1;
    } else {
        out_dims.remove(a);
    }
    let split = (outer, len, inner);
    let (out, argmax) = max_fwd(x, split, out_dims)?;
    let in_shape = x.shape().clone();
    record("max", out, &[x], move |g| {
        Ok(vec![Some(max_bwd(g, &argmax, split, &in_shape)?)])
    })
}

/// The host path (no CUDA kernel: a CUDA tensor makes the round trip).
fn max_fwd(
    x: &Tensor,
    split: cpu_reduce::AxisSplit,
    out_dims: Vec<usize>,
) -> Result<(Tensor, Vec<usize>)> {
    let (values, argmax) = x.with_values(|v| cpu_reduce::max_fwd(v, split))?;
    Ok((Tensor::from_vec(values, out_dims)?, argmax))
}

fn max_bwd(
    g: &Tensor,
    argmax: &[usize],
    split: cpu_reduce::AxisSplit,
    in_shape: &Shape,
) -> Result<Tensor> {
    let gx = cpu_reduce::max_bwd(&g.to_vec(), argmax, split);
    Tensor::from_vec(gx, in_shape.clone())
}

/// Sum `g` down to `target` (the inverse of broadcasting `target` up to `g`'s shape).
pub fn sum_to_shape(g: &Tensor, target: &Shape) -> Result<Tensor> {
    if g.shape() == target {
        return Ok(g.clone());
    }
    let rank = g.rank();
    if target.rank() > rank {
        return Err(Error::shape("sum_to_shape", target, g.shape()));
    }
    let off = rank - target.rank();
    let mut kept = vec![1usize; rank];
    for (i, k) in kept.iter_mut().enumerate().skip(off) {
        let t = target.dims()[i - off];
        if t == g.dims()[i] {
            *k = t;
        } else if t != 1 {
            return Err(Error::shape("sum_to_shape", target, g.shape()));
        }
    }
    let out = sum_fwd(g, &kept, target.clone())?;
    let g_shape = g.shape().clone();
    record("sum_to_shape", out, &[g], move |gg| {
        Ok(vec![Some(super::broadcast_to(gg, &g_shape)?.contiguous()?)])
    })
}
