//! Binary arithmetic with NumPy broadcasting. Backward reduces each gradient back to its input's
//! shape (`sum_to_shape`).

use super::{reduce::sum_to_shape, zip_values};
use crate::autograd::record;
use crate::backend::cuda::bf16::{self as cuda_bf16, CudaValues};
use crate::backend::cuda::elementwise::{self as cuda_ew, Binary, MAX_RANK};
use crate::tensor::{compute_device, Device, Shape, StridedIter, Tensor};
use crate::Result;

/// `a ∘ b` for the four arithmetic ops, on CUDA when an operand is there (broadcasts of rank
/// above the kernel's 6 take the host path), else on the CPU.
fn arithmetic(
    op: &'static str,
    kind: Binary,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<Tensor> {
    let out_shape = Shape::broadcast(op, a.shape(), b.shape())?;
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
            return Tensor::from_cuda_bf16(y, out_shape);
        }
    }
    if compute_device(&[a, b]) == Device::Cuda && out_shape.rank() <= MAX_RANK {
        let y = a.with_cuda(|dev, av| {
            b.with_cuda(|_, bv| {
                if a.shape() == b.shape() {
                    cuda_ew::binary(dev, kind, av, bv)
                } else {
                    Ok(cuda_ew::binary_bcast(dev, kind, av, a.dims(), bv, b.dims())?.0)
                }
            })
        })?;
        return Tensor::from_cuda(y, out_shape);
    }
    broadcast_values(op, a, b, f)
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
            if vb.len() == 1 {
                let s = vb[0];
                return va.iter().map(|&x| f(x, s)).collect::<Vec<f32>>();
            }
            if va.len() == 1 && out_shape == *b.shape() {
                let s = va[0];
                return vb.iter().map(|&y| f(s, y)).collect();
            }
            let sa = a
                .shape()
                .broadcast_strides(&a.shape().contiguous_strides(), &out_shape);
            let sb = b
                .shape()
                .broadcast_strides(&b.shape().contiguous_strides(), &out_shape);
            StridedIter::with(out_shape.dims(), &sa, 0)
                .zip(StridedIter::with(out_shape.dims(), &sb, 0))
                .map(|(i, j)| f(va[i], vb[j]))
                .collect()
        })
    })??;
    Tensor::from_vec(values, out_shape)
}

pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = arithmetic("add", Binary::Add, a, b, |x, y| x + y)?;
    let (sa, sb) = (a.shape().clone(), b.shape().clone());
    record("add", out, &[a, b], move |g| {
        Ok(vec![
            Some(sum_to_shape(g, &sa)?),
            Some(sum_to_shape(g, &sb)?),
        ])
    })
}

pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = arithmetic("sub", Binary::Sub, a, b, |x, y| x - y)?;
    let (sa, sb) = (a.shape().clone(), b.shape().clone());
    record("sub", out, &[a, b], move |g| {
        let gb = super::neg(&sum_to_shape(g, &sb)?)?;
        Ok(vec![Some(sum_to_shape(g, &sa)?), Some(gb)])
    })
}

pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = arithmetic("mul", Binary::Mul, a, b, |x, y| x * y)?;
    let (a2, b2) = (a.detach(), b.detach());
    record("mul", out, &[a, b], move |g| {
        let ga = sum_to_shape(&mul(g, &b2)?, a2.shape())?;
        let gb = sum_to_shape(&mul(g, &a2)?, b2.shape())?;
        Ok(vec![Some(ga), Some(gb)])
    })
}

pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let out = arithmetic("div", Binary::Div, a, b, |x, y| x / y)?;
    let (a2, b2) = (a.detach(), b.detach());
    record("div", out, &[a, b], move |g| {
        // Backward runs without recording, so these ops only compute (on g's device).
        let ga = sum_to_shape(&div(g, &b2)?, a2.shape())?;
        // d(a/b)/db = -a / b²
        let a_over_b2 = div(&a2, &mul(&b2, &b2)?)?;
        let gb = sum_to_shape(&super::neg(&mul(g, &a_over_b2)?)?, b2.shape())?;
        Ok(vec![Some(ga), Some(gb)])
    })
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
    let out = broadcast_values(op, a, b, move |x, y| if take_a(x, y) { x } else { y })?;
    let (a2, b2) = (a.detach(), b.detach());
    record(op, out, &[a, b], move |g| {
        let mask_a = broadcast_values(
            op,
            &a2,
            &b2,
            move |x, y| if take_a(x, y) { 1.0 } else { 0.0 },
        )?;
        let ga = zip_values(op, g, &mask_a, |g, m| g * m)?;
        let gb = zip_values(op, g, &mask_a, |g, m| g * (1.0 - m))?;
        Ok(vec![
            Some(sum_to_shape(&ga, a2.shape())?),
            Some(sum_to_shape(&gb, b2.shape())?),
        ])
    })
}
