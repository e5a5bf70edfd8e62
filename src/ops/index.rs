//! Indexing along an axis. Indices arrive as f32 tensors holding whole numbers (the engine
//! computes in f32); each is checked to be an integer in range. Backward scatters-adds.
//! Kernels: `backend::cpu::index` and `backend::cuda::index` (`kernels/index.cu`); this file
//! validates, dispatches (`*_fwd`, `*_bwd`) and records.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cpu::index::{self as cpu_index, AxisSplit};
use crate::backend::cuda::index::{self as cuda_index, DeviceIndices};
use crate::tensor::{Device, Shape, Tensor};
use crate::{Error, Result};

fn to_indices(op: &str, idx: &Tensor, bound: usize) -> Result<Vec<usize>> {
    idx.with_values(|v| {
        v.iter()
            .enumerate()
            .map(|(k, &f)| {
                if f.fract() != 0.0 || f < 0.0 || f >= bound as f32 || !f.is_finite() {
                    Err(Error::op(
                        op,
                        format!("index {f} at position {k} is not an integer in 0..{bound}"),
                    ))
                } else {
                    Ok(f as usize)
                }
            })
            .collect()
    })?
}

/// The indices the backward reads, where the forward left them.
enum Indices {
    Cpu(Vec<usize>),
    Cuda(DeviceIndices),
}

/// Rows of `x` along `axis` picked by the 1-D `indices` (repeats allowed).
pub fn index_select(x: &Tensor, axis: isize, indices: &Tensor) -> Result<Tensor> {
    let a = x.shape().axis("index_select", axis)?;
    if indices.rank() != 1 {
        return Err(Error::shape("index_select", "1-D indices", indices.shape()));
    }
    let split = split_at_axis(x.dims(), a);
    let idx = to_indices("index_select", indices, split.1)?;
    let mut dims = x.dims().to_vec();
    dims[a] = idx.len();
    let (out, saved) = index_select_fwd(x, idx, split, dims)?;
    let in_shape = x.shape().clone();
    record("index_select", out, &[x], move |g| {
        Ok(vec![Some(index_select_bwd(&saved, g, split, &in_shape)?)])
    })
}

fn index_select_fwd(
    x: &Tensor,
    idx: Vec<usize>,
    split: AxisSplit,
    dims: Vec<usize>,
) -> Result<(Tensor, Indices)> {
    match x.device() {
        Device::Cpu => {
            let y = x.with_values(|v| cpu_index::index_select_fwd(v, &idx, split))?;
            Ok((Tensor::from_vec(y, dims)?, Indices::Cpu(idx)))
        }
        Device::Cuda => cuda_index_select_fwd(x, &idx, split, dims),
    }
}

fn index_select_bwd(
    saved: &Indices,
    g: &Tensor,
    (outer, len, inner): AxisSplit,
    in_shape: &Shape,
) -> Result<Tensor> {
    match saved {
        Indices::Cpu(idx) => {
            let gx =
                g.with_values(|gv| cpu_index::index_select_bwd(gv, idx, (outer, len, inner)))?;
            Tensor::from_vec(gx, in_shape.clone())
        }
        Indices::Cuda(di) => {
            let gx = g.with_cuda(|dev, gs| {
                cuda_index::index_select_bwd(dev, gs, outer, len, inner, di)
            })?;
            Tensor::from_cuda(gx, in_shape.clone())
        }
    }
}

fn cuda_index_select_fwd(
    x: &Tensor,
    idx: &[usize],
    (outer, len, inner): AxisSplit,
    dims: Vec<usize>,
) -> Result<(Tensor, Indices)> {
    let dev = crate::backend::cuda::device()?;
    let di = DeviceIndices::from_host(&dev, "index_select", idx, len)?;
    let y = x.with_cuda(|dev, xs| cuda_index::index_select_fwd(dev, xs, outer, len, inner, &di))?;
    Ok((Tensor::from_cuda(y, dims)?, Indices::Cuda(di)))
}

/// `out[.., j, ..] = x[.., index[.., j, ..], ..]` along `axis` (torch.gather): `index` has the
/// rank of `x`, the same sizes on every other axis, any size along `axis`.
pub fn gather(x: &Tensor, axis: isize, index: &Tensor) -> Result<Tensor> {
    let a = x.shape().axis("gather", axis)?;
    let same_rank = index.rank() == x.rank();
    if !same_rank
        || index
            .dims()
            .iter()
            .zip(x.dims())
            .enumerate()
            .any(|(i, (p, q))| i != a && p != q)
    {
        return Err(Error::ShapeMismatch {
            op: "gather".into(),
            expected: format!("an index shaped like {} except along axis {a}", x.shape()),
            got: format!("{}", index.shape()),
        });
    }
    let split = split_at_axis(x.dims(), a);
    let k = index.dims()[a];
    let (out, saved) = gather_fwd(x, index, split, k)?;
    let in_shape = x.shape().clone();
    record("gather", out, &[x], move |g| {
        Ok(vec![Some(gather_bwd(&saved, g, split, k, &in_shape)?)])
    })
}

fn gather_fwd(x: &Tensor, index: &Tensor, split: AxisSplit, k: usize) -> Result<(Tensor, Indices)> {
    match x.device() {
        Device::Cpu => {
            let idx = to_indices("gather", index, split.1)?;
            let y = x.with_values(|v| cpu_index::gather_fwd(v, &idx, split, k))?;
            Ok((
                Tensor::from_vec(y, index.dims().to_vec())?,
                Indices::Cpu(idx),
            ))
        }
        Device::Cuda => cuda_gather_fwd(x, index, split, k),
    }
}

fn gather_bwd(
    saved: &Indices,
    g: &Tensor,
    (outer, len, inner): AxisSplit,
    k: usize,
    in_shape: &Shape,
) -> Result<Tensor> {
    match saved {
        Indices::Cpu(idx) => {
            let gx = g.with_values(|gv| cpu_index::gather_bwd(gv, idx, (outer, len, inner), k))?;
            Tensor::from_vec(gx, in_shape.clone())
        }
        Indices::Cuda(di) => {
            let gx =
                g.with_cuda(|dev, gs| cuda_index::gather_bwd(dev, gs, outer, len, inner, k, di))?;
            Tensor::from_cuda(gx, in_shape.clone())
        }
    }
}

/// Indices checked where they live (on the device by `index_check_f32`, or on the host and
/// uploaded), then one kernel each way.
fn cuda_gather_fwd(
    x: &Tensor,
    index: &Tensor,
    (outer, len, inner): AxisSplit,
    k: usize,
) -> Result<(Tensor, Indices)> {
    let dev = crate::backend::cuda::device()?;
    let di = if index.is_cuda() {
        index.with_cuda(|dev, is| DeviceIndices::from_f32(dev, "gather", is, len))?
    } else {
        DeviceIndices::from_host(&dev, "gather", &to_indices("gather", index, len)?, len)?
    };
    let y = x.with_cuda(|dev, xs| cuda_index::gather_fwd(dev, xs, outer, len, inner, k, &di))?;
    Ok((
        Tensor::from_cuda(y, index.dims().to_vec())?,
        Indices::Cuda(di),
    ))
}
