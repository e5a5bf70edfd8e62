//! Elementwise unary ops and the scalar forms of arithmetic.
//!
//! Each op gives its derivative as a function of the value it saves: the input (`*_from_input`)
//! or the output (`*_from_output`, e.g. sigmoid' = y(1-y)), whichever is cheaper. All of them go
//! through `unary`: `unary_fwd` / `unary_bwd` dispatch to the host maps
//! (`backend::cpu::elementwise`) or the kernels of `backend::cuda::elementwise`
//! (`kernels/elementwise.cu`); ops without a kernel (`OnCuda::Host`) take the host path.

use super::{map_values, zip_values};
use crate::autograd::record;
pub use crate::backend::cpu::math::{exp_fast, sigmoid_f32};
use crate::backend::cuda::elementwise::{self as cuda_ew, Unary};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// How an elementwise op runs on a CUDA tensor.
#[derive(Clone, Copy, Debug)]
enum OnCuda {
    /// Its own forward/backward kernel pair.
    Kernel(Unary),
    /// `a·x + b` (`scale_shift_f32`), backward `g·a`.
    Affine(f32, f32),
    /// No kernel: the host path (a device round trip).
    Host,
}

/// Which value an op's derivative reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Saves {
    /// The input (`dfdx(x)`).
    Input,
    /// The output (`dfdy(y)`, e.g. sigmoid' = y(1-y)).
    Output,
}

/// The value the backward reads, and where the forward ran.
enum Saved {
    Host(Tensor),
    Cuda(Tensor),
}

/// Every elementwise op: the dispatched forward, one recorded backward `g · d(saved)`.
fn unary(
    op: &'static str,
    x: &Tensor,
    on_cuda: OnCuda,
    saves: Saves,
    f: impl Fn(f32) -> f32 + Sync,
    d: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Result<Tensor> {
    let (out, saved) = unary_fwd(x, on_cuda, saves, f)?;
    record(op, out, &[x], move |g| {
        Ok(vec![Some(unary_bwd(op, on_cuda, &saved, g, &d)?)])
    })
}

fn unary_from_input(
    op: &'static str,
    x: &Tensor,
    on_cuda: OnCuda,
    f: impl Fn(f32) -> f32 + Sync,
    dfdx: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Result<Tensor> {
    unary(op, x, on_cuda, Saves::Input, f, dfdx)
}

fn unary_from_output(
    op: &'static str,
    x: &Tensor,
    on_cuda: OnCuda,
    f: impl Fn(f32) -> f32 + Sync,
    dfdy: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Result<Tensor> {
    unary(op, x, on_cuda, Saves::Output, f, dfdy)
}

/// The forward on x's device; an op without a CUDA kernel takes the host path.
fn unary_fwd(
    x: &Tensor,
    on_cuda: OnCuda,
    saves: Saves,
    f: impl Fn(f32) -> f32 + Sync,
) -> Result<(Tensor, Saved)> {
    match (x.device(), on_cuda) {
        (Device::Cuda, OnCuda::Kernel(_) | OnCuda::Affine(..)) => cuda_unary_fwd(x, on_cuda),
        (Device::Cpu, _) | (Device::Cuda, OnCuda::Host) => {
            let y = map_values(x, f)?;
            let saved = match saves {
                Saves::Input => x.detach(),
                Saves::Output => y.detach(),
            };
            Ok((y, Saved::Host(saved)))
        }
    }
}

fn unary_bwd(
    op: &'static str,
    on_cuda: OnCuda,
    saved: &Saved,
    g: &Tensor,
    d: &(impl Fn(f32) -> f32 + Sync),
) -> Result<Tensor> {
    match saved {
        Saved::Host(s) => zip_values(op, g, s, |g, v| g * d(v)),
        Saved::Cuda(s) => cuda_unary_bwd(on_cuda, s, g),
    }
}

/// The CUDA arm shared by every elementwise op with a kernel.
fn cuda_unary_fwd(x: &Tensor, how: OnCuda) -> Result<(Tensor, Saved)> {
    let y = x.with_cuda(|dev, xs| match how {
        OnCuda::Kernel(u) => cuda_ew::unary_fwd(dev, u, xs),
        OnCuda::Affine(a, b) => cuda_ew::scale_shift(dev, xs, a, b),
        OnCuda::Host => unreachable!("the host path does not come here"),
    })?;
    let out = Tensor::from_cuda(y, x.shape().clone())?;
    let saved = match how {
        OnCuda::Kernel(u) if u.saves_output() => out.detach(),
        _ => x.detach(),
    };
    Ok((out, Saved::Cuda(saved)))
}

fn cuda_unary_bwd(how: OnCuda, saved: &Tensor, g: &Tensor) -> Result<Tensor> {
    let shape = g.shape().clone();
    let dx = g.with_cuda(|dev, gs| match how {
        OnCuda::Kernel(u) => saved.with_cuda(|_, sv| cuda_ew::unary_bwd(dev, u, gs, sv)),
        OnCuda::Affine(a, _) => cuda_ew::scale_shift(dev, gs, a, 0.0),
        OnCuda::Host => unreachable!("the host path does not come here"),
    })?;
    Tensor::from_cuda(dx, shape)
}

pub fn neg(x: &Tensor) -> Result<Tensor> {
    unary_from_input("neg", x, OnCuda::Affine(-1.0, 0.0), |v| -v, |_| -1.0)
}
pub fn exp(x: &Tensor) -> Result<Tensor> {
    unary_from_output("exp", x, OnCuda::Kernel(Unary::Exp), f32::exp, |y| y)
}
pub fn log(x: &Tensor) -> Result<Tensor> {
    unary_from_input("log", x, OnCuda::Kernel(Unary::Log), f32::ln, |x| 1.0 / x)
}
pub fn sqrt(x: &Tensor) -> Result<Tensor> {
    unary_from_output("sqrt", x, OnCuda::Kernel(Unary::Sqrt), f32::sqrt, |y| {
        0.5 / y
    })
}
/// |x|; the derivative at 0 is 0 (as PyTorch's sign(0) = 0).
pub fn abs(x: &Tensor) -> Result<Tensor> {
    unary_from_input("abs", x, OnCuda::Kernel(Unary::Abs), f32::abs, |x| {
        if x > 0.0 {
            1.0
        } else if x < 0.0 {
            -1.0
        } else {
            0.0
        }
    })
}
pub fn relu(x: &Tensor) -> Result<Tensor> {
    unary_from_input(
        "relu",
        x,
        OnCuda::Kernel(Unary::Relu),
        |v| v.max(0.0),
        |x| if x > 0.0 { 1.0 } else { 0.0 },
    )
}
pub fn sigmoid(x: &Tensor) -> Result<Tensor> {
    unary_from_output(
        "sigmoid",
        x,
        OnCuda::Kernel(Unary::Sigmoid),
        sigmoid_f32,
        |y| y * (1.0 - y),
    )
}
pub fn tanh(x: &Tensor) -> Result<Tensor> {
    unary_from_output("tanh", x, OnCuda::Host, f32::tanh, |y| 1.0 - y * y)
}
/// SiLU (swish): x·σ(x); derivative σ(x)(1 + x(1 − σ(x))).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    unary_from_input(
        "silu",
        x,
        OnCuda::Kernel(Unary::Silu),
        |v| v * sigmoid_f32(v),
        |x| {
            let s = sigmoid_f32(x);
            s * (1.0 + x * (1.0 - s))
        },
    )
}
/// Clamp into `[min, max]` (either bound may be infinite). The gradient passes where
/// `min <= x <= max`, as PyTorch's clamp.
pub fn clamp(x: &Tensor, min: f32, max: f32) -> Result<Tensor> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(Error::op(
            "clamp",
            format!("bad bounds min={min} max={max}"),
        ));
    }
    unary_from_input(
        "clamp",
        x,
        OnCuda::Kernel(Unary::Clamp { min, max }),
        move |v| v.clamp(min, max),
        move |x| if x >= min && x <= max { 1.0 } else { 0.0 },
    )
}
/// `x^p` for a scalar exponent.
pub fn pow_scalar(x: &Tensor, p: f32) -> Result<Tensor> {
    unary_from_input(
        "pow",
        x,
        OnCuda::Kernel(Unary::Pow(p)),
        move |v| if p == 2.0 { v * v } else { v.powf(p) },
        move |x| {
            if p == 0.0 {
                0.0
            } else if p == 2.0 {
                2.0 * x
            } else {
                p * x.powf(p - 1.0)
            }
        },
    )
}

pub fn add_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary_from_input("add", x, OnCuda::Affine(1.0, s), move |v| v + s, |_| 1.0)
}
/// `x - s`.
pub fn sub_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary_from_input("sub", x, OnCuda::Affine(1.0, -s), move |v| v - s, |_| 1.0)
}
/// `s - x`.
pub fn rsub_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary_from_input("sub", x, OnCuda::Affine(-1.0, s), move |v| s - v, |_| -1.0)
}
pub fn mul_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary_from_input("mul", x, OnCuda::Affine(s, 0.0), move |v| v * s, move |_| s)
}
/// `x / s`.
pub fn div_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary_from_input(
        "div",
        x,
        OnCuda::Affine(1.0 / s, 0.0),
        move |v| v / s,
        move |_| 1.0 / s,
    )
}
/// `s / x`.
pub fn rdiv_scalar(x: &Tensor, s: f32) -> Result<Tensor> {
    unary_from_input(
        "div",
        x,
        OnCuda::Host,
        move |v| s / v,
        move |x| -s / (x * x),
    )
}

/// arctan (CIoU's aspect-ratio term); derivative 1/(1 + x²).
pub fn atan(x: &Tensor) -> Result<Tensor> {
    unary_from_input("atan", x, OnCuda::Host, f32::atan, |x| 1.0 / (1.0 + x * x))
}
