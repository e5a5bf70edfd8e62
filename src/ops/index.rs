//! Indexing along an axis. Indices arrive as f32 tensors holding whole numbers (the engine
//! computes in f32); each is checked to be an integer in range. Backward scatters-adds.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cuda::index::{self as cuda_index, DeviceIndices};
use crate::tensor::{Device, Tensor};
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

/// Rows of `x` along `axis` picked by the 1-D `indices` (repeats allowed).
pub fn index_select(x: &Tensor, axis: isize, indices: &Tensor) -> Result<Tensor> {
    let a = x.shape().axis("index_select", axis)?;
    if indices.rank() != 1 {
        return Err(Error::shape("index_select", "1-D indices", indices.shape()));
    }
    let (outer, len, inner) = split_at_axis(x.dims(), a);
    let idx = to_indices("index_select", indices, len)?;
    let k = idx.len();
    if x.device() == Device::Cuda {
        let dev = crate::backend::cuda::device()?;
        let di = DeviceIndices::from_host(&dev, "index_select", &idx, len)?;
        let y =
            x.with_cuda(|dev, xs| cuda_index::index_select_fwd(dev, xs, outer, len, inner, &di))?;
        let mut dims = x.dims().to_vec();
        dims[a] = k;
        let out = Tensor::from_cuda(y, dims)?;
        let in_shape = x.shape().clone();
        return record("index_select", out, &[x], move |g| {
            let gx = g.with_cuda(|dev, gs| {
                cuda_index::index_select_bwd(dev, gs, outer, len, inner, &di)
            })?;
            Ok(vec![Some(Tensor::from_cuda(gx, in_shape.clone())?)])
        });
    }
    let mut out = vec![0f32; outer * k * inner];
    x.with_values(|v| {
        for o in 0..outer {
            for (j, &i) in idx.iter().enumerate() {
                let src = (o * len + i) * inner;
                let dst = (o * k + j) * inner;
                out[dst..dst + inner].copy_from_slice(&v[src..src + inner]);
            }
        }
    })?;
    let mut dims = x.dims().to_vec();
    dims[a] = k;
    let out = Tensor::from_vec(out, dims)?;
    let in_shape = x.shape().clone();
    record("index_select", out, &[x], move |g| {
        let mut gx = vec![0f32; in_shape.numel()];
        g.with_values(|gv| {
            for o in 0..outer {
                for (j, &i) in idx.iter().enumerate() {
                    let dst = (o * len + i) * inner;
                    let src = (o * k + j) * inner;
                    for t in 0..inner {
                        gx[dst + t] += gv[src + t];
                    }
                }
            }
        })?;
        Ok(vec![Some(Tensor::from_vec(gx, in_shape.clone())?)])
    })
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
    let (outer, len, inner) = split_at_axis(x.dims(), a);
    let k = index.dims()[a];
    if x.device() == Device::Cuda {
        return gather_cuda(x, index, (outer, len, inner, k));
    }
    let idx = to_indices("gather", index, len)?;
    let mut out = vec![0f32; idx.len()];
    x.with_values(|v| {
        for o in 0..outer {
            for j in 0..k {
                for t in 0..inner {
                    let p = (o * k + j) * inner + t;
                    out[p] = v[(o * len + idx[p]) * inner + t];
                }
            }
        }
    })?;
    let out = Tensor::from_vec(out, index.dims().to_vec())?;
    let in_shape = x.shape().clone();
    record("gather", out, &[x], move |g| {
        let mut gx = vec![0f32; in_shape.numel()];
        g.with_values(|gv| {
            for o in 0..outer {
                for j in 0..k {
                    for t in 0..inner {
                        let p = (o * k + j) * inner + t;
                        gx[(o * len + idx[p]) * inner + t] += gv[p];
                    }
                }
            }
        })?;
        Ok(vec![Some(Tensor::from_vec(gx, in_shape.clone())?)])
    })
}

/// The CUDA arm of `gather`: indices checked where they live (on the device by
/// `index_check_f32`, or on the host and uploaded), then one kernel each way.
fn gather_cuda(
    x: &Tensor,
    index: &Tensor,
    (outer, len, inner, k): (usize, usize, usize, usize),
) -> Result<Tensor> {
    let dev = crate::backend::cuda::device()?;
    let di = if index.device() == Device::Cuda {
        index.with_cuda(|dev, is| DeviceIndices::from_f32(dev, "gather", is, len))?
    } else {
        DeviceIndices::from_host(&dev, "gather", &to_indices("gather", index, len)?, len)?
    };
    let y = x.with_cuda(|dev, xs| cuda_index::gather_fwd(dev, xs, outer, len, inner, k, &di))?;
    let out = Tensor::from_cuda(y, index.dims().to_vec())?;
    let in_shape = x.shape().clone();
    record("gather", out, &[x], move |g| {
        let gx =
            g.with_cuda(|dev, gs| cuda_index::gather_bwd(dev, gs, outer, len, inner, k, &di))?;
        Ok(vec![Some(Tensor::from_cuda(gx, in_shape.clone())?)])
    })
}
