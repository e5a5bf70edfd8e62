//! Binary arithmetic with NumPy broadcasting. Backward reduces each gradient back to its input's
//! shape (`sum_to_shape`).
//!
//! The four arithmetic ops share one dispatched forward (`arithmetic_fwd`: the CUDA kernels of
//! `backend::cuda::elementwise`, else the host map of `backend::cpu::elementwise`) and one
//! backward (`arithmetic_bwd`), written with device ops, so it runs where the gradient is.
//! maximum and minimum run on the host (`select_fwd`, `select_bwd`).

use super::{reduce::sum_to_shape, zip_values};
use crate::autograd::record;
use crate::backend::cpu::elementwise as cpu_ew;
use crate::backend::cuda::bf16::{self as cuda_bf16, CudaValues};
use crate::backend::cuda::elementwise::{self as cuda_ew, Binary, MAX_RANK};
use crate::tensor::{compute_device, Device, Shape, Tensor};
use crate::Result;

/// What an arithmetic backward reads: the shapes (add, sub) or the operands (mul, div).
enum Saved {
    Shapes(Shape, Shape),
    Operands(Tensor, Tensor),
}

/// `a ∘ b` with its one recorded backward.
fn arithmetic(
    op: &'static str,
    kind: Binary,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    let out = arithmetic_fwd(op, kind, a, b, f)?;
    let saved = match kind {
        Binary::Add | Binary::Sub => Saved::Shapes(a.shape().clone(), b.shape().clone()),
        _ => Saved::Operands(a.detach(), b.detach()),
    };
    record(op, out, &[a, b], move |g| {
        let (ga, gb) = arithmetic_bwd(kind, &saved, g)?;
        Ok(vec![Some(ga), Some(gb)])
    })
}

/// `(ga, gb)`, each summed back to its operand's shape; device ops on g's device (backward runs
/// without recording, so these only compute).
fn arithmetic_bwd(kind: Binary, saved: &Saved, g: &Tensor) -> Result<(Tensor, Tensor)> {
    match (kind, saved) {
        (Binary::Add, Saved::Shapes(sa, sb)) => Ok((sum_to_shape(g, sa)?, sum_to_shape(g, sb)?)),
        (Binary::Sub, Saved::Shapes(sa, sb)) => {
            let gb = super::neg(&sum_to_shape(g, sb)?)?;
            Ok((sum_to_shape(g, sa)?, gb))
        }
        (Binary::Mul, Saved::Operands(a2, b2)) => {
            let ga = sum_to_shape(&mul(g, b2)?, a2.shape())?;
            let gb = sum_to_shape(&mul(g, a2)?, b2.shape())?;
            Ok((ga, gb))
        }
        (Binary::Div, Saved::Operands(a2, b2)) => {
            let ga = sum_to_shape(&div(g, b2)?, a2.shape())?;
            // d(a/b)/db = -a / b²
            let a_over_b2 = div(a2, &mul(b2, b2)?)?;
            let gb = sum_to_shape(&super::neg(&mul(g, &a_over_b2)?)?, b2.shape())?;
            Ok((ga, gb))
        }
        _ => unreachable!("arithmetic saves shapes for add and sub, operands for mul and div"),
    }
}

/// `a ∘ b` for the four arithmetic ops, on CUDA when an operand is there (broadcasts of rank
/// above the kernel's 6 take the host path), else on the CPU.
fn arithmetic_fwd(
    op: &'static str,
    kind: Binary,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    let out_shape = Shape::broadcast(op, a.shape(), b.shape())?;
    if compute_device(&[a, b]) == Device::Cuda {
        if let Some(y) = cuda_arithmetic_fwd(kind, a, b, &out_shape)? {
            return Ok(y);
        }
    }
    broadcast_values(op, a, b, f)
}

/// The CUDA kernels; `None` for a broadcast of rank above the kernel's 6 (the host path).
fn cuda_arithmetic_fwd(
    kind: Binary,
    a: &Tensor,
    b: &Tensor,
    out_shape: &Shape,
) -> Result<Option<Tensor>> {
    if kind == Binary::Add && a.shape() == b.shape() && a.is_bf16() && b.is_bf16() {
        // Two bf16 activations (a residual add in bf16 storage mode) stay bf16 (with_cuda_values
        // gives bf16 bits for every bf16 tensor; anything else takes the f32 path below).
        let y = a.with_cuda_values(|dev, av| {
            b.with_cuda_values(|_, bv| match (av, bv) {
                (CudaValues::Bf16(x), CudaValues::Bf16(y)) => cuda_bf16::add(dev, x, y).map(Some),
                _ => Ok(None),
            })
        })?;
        if let Some(y) = y {
            return Tensor::from_cuda_bf16(y, out_shape.clone()).map(Some);
        }
    }
    if out_shape.rank() > MAX_RANK {
        return Ok(None);
    }
    let y = a.with_cuda(|dev, av| {
        b.with_cuda(|_, bv| {
            if a.shape() == b.shape() {
                cuda_ew::binary(dev, kind, av, bv)
            } else {
                Ok(cuda_ew::binary_bcast(dev, kind, av, a.dims(), bv, b.dims())?.0)
            }
        })
    })?;
    Tensor::from_cuda(y, out_shape.clone()).map(Some)
}

/// `f(a, b)` over the broadcast of the two shapes.
fn broadcast_values(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    if a.shape() == b.shape() {
        return zip_values(op, a, b, f);
    }
    let out_shape = Shape::broadcast(op, a.shape(), b.shape())?;
    let values = a.with_values(|va| {
        b.with_values(|vb| {
            cpu_ew::broadcast_zip((va, a.dims()), (vb, b.dims()), out_shape.dims(), f)
        })
    })??;
    Tensor::from_vec(values, out_shape)
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("add", Binary::Add, a, b, |x, y| x + y)
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("sub", Binary::Sub, a, b, |x, y| x - y)
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("mul", Binary::Mul, a, b, |x, y| x * y)
}

pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    arithmetic("div", Binary::Div, a, b, |x, y| x / y)
}

/// Elementwise max; on ties the gradient goes to `a` (as `torch.max(a, b)` picks one side).
pub fn maximum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    select_binary("maximum", a, b, |x, y| x >= y)
}

/// Elementwise min; on ties the gradient goes to `a`.
pub fn minimum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    select_binary("minimum", a, b, |x, y| x <= y)
}

fn select_binary(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    take_a: fn(f32, f32) -> bool,
) -> Result<Tensor> {
    let out = select_fwd(op, a, b, take_a)?;
    let (a2, b2) = (a.detach(), b.detach());
    record(op, out, &[a, b], move |g| {
        let (ga, gb) = select_bwd(op, [&a2, &b2], g, take_a)?;
        Ok(vec![Some(ga), Some(gb)])
    })
}

/// The host path (no CUDA kernel: CUDA tensors make the round trip).
fn select_fwd(op: &str, a: &Tensor, b: &Tensor, take_a: fn(f32, f32) -> bool) -> Result<Tensor> {
    broadcast_values(op, a, b, move |x, y| if take_a(x, y) { x } else { y })
}

fn select_bwd(
    op: &str,
    [a2, b2]: [&Tensor; 2],
    g: &Tensor,
    take_a: fn(f32, f32) -> bool,
) -> Result<(Tensor, Tensor)> {
    let mask_a = broadcast_values(op, a2, b2, move |x, y| if take_a(x, y) { 1.0 } else { 0.0 })?;
    let ga = zip_values(op, g, &mask_a, |g, m| g * m)?;
    let gb = zip_values(op, g, &mask_a, |g, m| g * (1.0 - m))?;
    Ok((
        sum_to_shape(&ga, a2.shape())?,
        sum_to_shape(&gb, b2.shape())?,
    ))
}
