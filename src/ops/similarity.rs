//! Cosine similarity along an axis (PyTorch's `F.cosine_similarity`, eps 1e-8):
//! `a·b / (max(‖a‖, eps) · max(‖b‖, eps))`. Inputs broadcast against each other.
//! Kernels: `backend::cpu::similarity` and `backend::cuda::similarity`
//! (`kernels/similarity.cu`); this file validates, dispatches (`fwd`, `bwd`) and records.

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cpu::similarity::{self as cpu_similarity, AxisSplit, Norms};
use crate::backend::cuda::{similarity as cuda_similarity, CudaSlice};
use crate::tensor::{compute_device, Device, Shape, Tensor};
use crate::Result;

/// What the backward reads: the broadcast operands (and on the CPU their norms; the CUDA kernel
/// recomputes them).
enum Saved {
    Cpu {
        a: Vec<f32>,
        b: Vec<f32>,
        norms: Vec<Norms>,
    },
    Cuda {
        a: CudaSlice<f32>,
        b: CudaSlice<f32>,
    },
}

pub fn cosine_similarity(a: &Tensor, b: &Tensor, axis: isize) -> Result<Tensor> {
    let shape = Shape::broadcast("cosine_similarity", a.shape(), b.shape())?;
    let ax = shape.axis("cosine_similarity", axis)?;
    let ab = super::broadcast_to(a, &shape)?;
    let bb = super::broadcast_to(b, &shape)?;
    let split = split_at_axis(shape.dims(), ax);
    let mut out_dims = shape.dims().to_vec();
    out_dims.remove(ax);
    let (out, saved) = fwd(compute_device(&[a, b]), [&ab, &bb], out_dims, split)?;
    record("cosine_similarity", out, &[&ab, &bb], move |g| {
        let (da, db) = bwd(&saved, g, &shape, split)?;
        Ok(vec![Some(da), Some(db)])
    })
}

/// The forward on `device` from the broadcast operands.
fn fwd(
    device: Device,
    ab: [&Tensor; 2],
    out_dims: Vec<usize>,
    split: AxisSplit,
) -> Result<(Tensor, Saved)> {
    match device {
        Device::Cpu => cpu_fwd(ab, out_dims, split),
        Device::Cuda => cuda_fwd(ab, out_dims, split),
    }
}

/// `(da, db)` of the broadcast shape, on the device the forward ran on.
fn bwd(saved: &Saved, g: &Tensor, shape: &Shape, split: AxisSplit) -> Result<(Tensor, Tensor)> {
    match saved {
        Saved::Cpu { a, b, norms } => cpu_bwd([a, b], norms, g, shape, split),
        Saved::Cuda { a, b } => cuda_bwd([a, b], g, shape, split),
    }
}

fn cpu_fwd(
    [a, b]: [&Tensor; 2],
    out_dims: Vec<usize>,
    split: AxisSplit,
) -> Result<(Tensor, Saved)> {
    let (a, b) = (a.to_vec(), b.to_vec());
    let (values, norms) = cpu_similarity::fwd(&a, &b, split);
    Ok((
        Tensor::from_vec(values, out_dims)?,
        Saved::Cpu { a, b, norms },
    ))
}

fn cpu_bwd(
    [a, b]: [&[f32]; 2],
    norms: &[Norms],
    g: &Tensor,
    shape: &Shape,
    split: AxisSplit,
) -> Result<(Tensor, Tensor)> {
    let (ga, gb) = cpu_similarity::bwd(&g.to_vec(), a, b, norms, split);
    Ok((
        Tensor::from_vec(ga, shape.clone())?,
        Tensor::from_vec(gb, shape.clone())?,
    ))
}

/// The fused kernels of `kernels/similarity.cu` (norms recomputed in the backward).
fn cuda_fwd(
    [a, b]: [&Tensor; 2],
    out_dims: Vec<usize>,
    (outer, len, inner): AxisSplit,
) -> Result<(Tensor, Saved)> {
    let (a, b) = (a.cuda_owned()?, b.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let y = cuda_similarity::cosine_similarity_fwd(&dev, &a, &b, outer, len, inner)?;
    Ok((Tensor::from_cuda(y, out_dims)?, Saved::Cuda { a, b }))
}

fn cuda_bwd(
    [a, b]: [&CudaSlice<f32>; 2],
    g: &Tensor,
    shape: &Shape,
    (outer, len, inner): AxisSplit,
) -> Result<(Tensor, Tensor)> {
    let (da, db) = g.with_cuda(|dev, gs| {
        cuda_similarity::cosine_similarity_bwd(dev, gs, a, b, outer, len, inner)
    })?;
    Ok((
        Tensor::from_cuda(da, shape.clone())?,
        Tensor::from_cuda(db, shape.clone())?,
    ))
}
