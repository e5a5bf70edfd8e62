//! Reductions: sums and means over axes or everything, max over one axis.
//! Sums accumulate in f64 in a fixed order, so results do not depend on the thread count.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cuda::{reduce as cuda_reduce, CudaSlice};
use crate::tensor::{Device, Shape, StridedIter, Tensor};
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
    let out = if x.device() == Device::Cuda {
        Tensor::from_cuda(sum_keepdim_cuda(x, &kept)?, out_dims)?
    } else {
        Tensor::from_vec(sum_values_keepdim(x, &kept)?, out_dims)?
    };
    let in_shape = x.shape().clone();
    record("sum", out, &[x], move |g| {
        let g = g.reshape(kept.clone())?;
        Ok(vec![Some(
            super::broadcast_to(&g, &in_shape)?.contiguous()?,
        )])
    })
}

/// The CUDA arm of the keepdim sums: `x` summed down to `kept` (same rank, 1 where reduced),
/// contiguous over `kept`. Neighbouring axes that are both kept or both reduced are merged first
/// (the kernel takes rank <= 6; merging keeps the summation's meaning).
fn sum_keepdim_cuda(x: &Tensor, kept: &[usize]) -> Result<CudaSlice<f32>> {
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
fn sum_values_keepdim(x: &Tensor, kept: &[usize]) -> Result<Vec<f32>> {
    let kept_shape = Shape(kept.to_vec());
    let out_strides = kept_shape.broadcast_strides(&kept_shape.contiguous_strides(), x.shape());
    let mut acc = vec![0f64; kept_shape.numel()];
    x.with_values(|v| {
        for (&val, o) in v.iter().zip(StridedIter::with(x.dims(), &out_strides, 0)) {
            acc[o] += val as f64;
        }
    })?;
    Ok(acc.into_iter().map(|a| a as f32).collect())
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
    if x.device() == Device::Cuda {
        let total = x.with_cuda(cuda_reduce::sum_all)?;
        let out = Tensor::from_cuda(total, Vec::<usize>::new())?;
        return record("sum", out, &[x], move |g| {
            Ok(vec![Some(super::broadcast_to(g, &in_shape)?.contiguous()?)])
        });
    }
    let total = x.with_values(|v| v.iter().map(|&a| a as f64).sum::<f64>())? as f32;
    let out = Tensor::scalar(total);
    record("sum", out, &[x], move |g| {
        let gv = g.item()?;
        Ok(vec![Some(Tensor::full(in_shape.clone(), gv))])
    })
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
    let mut values = vec![0f32; outer * inner];
    let mut argmax = vec![0usize; outer * inner];
    x.with_values(|v| {
        for o in 0..outer {
            for j in 0..inner {
                let mut best = v[o * len * inner + j];
                let mut bi = 0;
                for i in 1..len {
                    let c = v[(o * len + i) * inner + j];
                    // NaN propagates, as torch.max.
                    if c > best || (c.is_nan() && !best.is_nan()) {
                        best = c;
                        bi = i;
                    }
                }
                values[o * inner + j] = best;
                argmax[o * inner + j] = bi;
            }
        }
    })?;
    let mut out_dims = x.dims().to_vec();
    if keepdim {
        out_dims[a] = 1;
    } else {
        out_dims.remove(a);
    }
    let out = Tensor::from_vec(values, out_dims)?;
    let in_shape = x.shape().clone();
    record("max", out, &[x], move |g| {
        let gv = g.to_vec();
        let mut gx = vec![0f32; in_shape.numel()];
        for o in 0..outer {
            for j in 0..inner {
                gx[(o * len + argmax[o * inner + j]) * inner + j] = gv[o * inner + j];
            }
        }
        Ok(vec![Some(Tensor::from_vec(gx, in_shape.clone())?)])
    })
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
    let out = if g.device() == Device::Cuda {
        Tensor::from_cuda(sum_keepdim_cuda(g, &kept)?, target.clone())?
    } else {
        Tensor::from_vec(sum_values_keepdim(g, &kept)?, target.clone())?
    };
    let g_shape = g.shape().clone();
    record("sum_to_shape", out, &[g], move |gg| {
        Ok(vec![Some(super::broadcast_to(gg, &g_shape)?.contiguous()?)])
    })
}
