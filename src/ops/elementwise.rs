//! Elementwise unary ops and the scalar forms of arithmetic.
//!
//! Each op gives its derivative as a function of the value it saves: the input (`*_from_input`)
//! or the output (`*_from_output`, e.g. sigmoid' = y(1-y)), whichever is cheaper.

use super::{map_values, zip_values};
use crate::autograd::record;
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

/// The CUDA arm shared by every elementwise op with a kernel.
fn unary_cuda(op: &'static str, x: &Tensor, how: OnCuda) -> Result<Tensor> {
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
    record(op, out, &[x], move |g| {
        let shape = g.shape().clone();
        let dx = g.with_cuda(|dev, gs| match how {
            OnCuda::Kernel(u) => saved.with_cuda(|_, sv| cuda_ew::unary_bwd(dev, u, gs, sv)),
            OnCuda::Affine(a, _) => cuda_ew::scale_shift(dev, gs, a, 0.0),
            OnCuda::Host => unreachable!("the host path does not come here"),
        })?;
        Ok(vec![Some(Tensor::from_cuda(dx, shape)?)])
    })
}

fn unary_from_input(
    op: &'static str,
    x: &Tensor,
    on_cuda: OnCuda,
    f: impl Fn(f32) -> f32 + Sync,
    dfdx: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Result<Tensor> {
    if x.device() == Device::Cuda && !matches!(on_cuda, OnCuda::Host) {
        return unary_cuda(op, x, on_cuda);
    }
    let y = map_values(x, f)?;
    let saved = x.detach();
    record(op, y, &[x], move |g| {
        Ok(vec![Some(zip_values(op, g, &saved, |g, x| g * dfdx(x))?)])
    })
}

fn unary_from_output(
    op: &'static str,
    x: &Tensor,
    on_cuda: OnCuda,
    f: impl Fn(f32) -> f32 + Sync,
    dfdy: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Result<Tensor> {
    if x.device() == Device::Cuda && !matches!(on_cuda, OnCuda::Host) {
        return unary_cuda(op, x, on_cuda);
    }
    let y = map_values(x, f)?;
    let saved = y.detach();
    record(op, y, &[x], move |g| {
        Ok(vec![Some(zip_values(op, g, &saved, |g, y| g * dfdy(y))?)])
    })
}

/// `e^x` for f32 without a libm call, so loops over activations vectorise: `2^k · p(r)` with
/// `x = k·ln2 + r`, |r| ≤ ln2/2, p a degree-6 Taylor polynomial (relative error < 2e-7 over the
/// whole range, i.e. ~1-2 ulp). Saturates to 0 below −87.3 and to f32::MAX-ish above 88.7.
///
/// Float-only arithmetic: on the baseline x86-64 target `f32::round` is a `roundf` call and
/// `as i32` a saturating scalar conversion, either of which keeps callers' loops scalar. `k` is
/// rounded half away from zero (as `round`) by the 1.5·2²³ trick (nearest-even) corrected on
/// exact ties, and `2^k` is built from the bits of `k + 127 + 1.5·2²³`.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.3, 88.7);
    let t = x * std::f32::consts::LOG2_E;
    // |t| < 129: rounding with MAGIC and `t - rn` are exact.
    let rn = (t + MAGIC) - MAGIC;
    let d = t - rn;
    let up = if d == 0.5 && t > 0.0 { 1.0 } else { 0.0 };
    let down = if d == -0.5 && t < 0.0 { 1.0 } else { 0.0 };
    let k = rn + up - down;
    // Cody-Waite split of ln 2 keeps r exact enough for f32.
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // k + 127 in [1, 255] sits in the low mantissa bits; the shift drops MAGIC's bits.
    let scale = f32::from_bits((k + 127.0 + MAGIC).to_bits() << 23);
    p * scale
}

/// Logistic sigmoid of one value, branch-free (vectorises) and saturating cleanly at ±∞
/// (logits near ±300 give exactly 0 or 1, never NaN).
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_fast(-x))
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

#[cfg(test)]
mod tests {
    use super::exp_fast;

    /// The same function written with `round` and an integer exponent (the form it replaced).
    fn exp_fast_reference(x: f32) -> f32 {
        let x = x.clamp(-87.3, 88.7);
        let k = (x * std::f32::consts::LOG2_E).round();
        let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
        let p = 1.0
            + r * (1.0
                + r * (0.5
                    + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
        p * f32::from_bits(((k as i32 + 127) as u32) << 23)
    }

    /// Bit for bit, rounding ties (`x·log2(e)` at k + 0.5) and the clamp edges included.
    #[test]
    fn exp_fast_matches_the_rounding_form_bit_for_bit() {
        let mut xs: Vec<f32> = (-200_000..=200_000).map(|i| i as f32 * 1e-3).collect();
        for k in -130..130 {
            let t = (k as f32 + 0.5) / std::f32::consts::LOG2_E;
            xs.extend([
                t,
                -t,
                t.next_up(),
                t.next_down(),
                -t.next_up(),
                -t.next_down(),
            ]);
        }
        xs.extend([0.0, -0.0, 87.3, -87.3, 88.7, -88.7, 1e30, -1e30]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::MIN_POSITIVE, 1e-40]);
        for x in xs {
            assert_eq!(
                exp_fast(x).to_bits(),
                exp_fast_reference(x).to_bits(),
                "x = {x}"
            );
        }
        assert!(exp_fast(f32::NAN).is_nan());
    }
}
