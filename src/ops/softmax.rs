//! softmax and log_softmax along an axis (max-subtracted, so large logits do not overflow).

use super::split_at_axis;
use crate::autograd::record;
use crate::backend::cuda::softmax as cuda_softmax;
use crate::tensor::{Device, Tensor};
use crate::Result;

/// `log_softmax` values of a contiguous `[outer, len, inner]` block.
pub(crate) fn log_softmax_values(v: &[f32], outer: usize, len: usize, inner: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for o in 0..outer {
        for j in 0..inner {
            let at = |i: usize| (o * len + i) * inner + j;
            let m = (0..len).map(|i| v[at(i)]).fold(f32::NEG_INFINITY, f32::max);
            // (x − m) − ln Σ e^(x−m): subtracting the max first keeps full precision for
            // large logits (m + ln Σ rounded in f32 would lose ~1e-4 at |x| ~ 1000).
            let log_sum = (0..len)
                .map(|i| ((v[at(i)] - m) as f64).exp())
                .sum::<f64>()
                .ln();
            for i in 0..len {
                out[at(i)] = ((v[at(i)] - m) as f64 - log_sum) as f32;
            }
        }
    }
    out
}

pub fn log_softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let a = x.shape().axis("log_softmax", axis)?;
    let (outer, len, inner) = split_at_axis(x.dims(), a);
    if x.device() == Device::Cuda {
        return softmax_cuda("log_softmax", x, (outer, len, inner), true);
    }
    let y = x.with_values(|v| log_softmax_values(v, outer, len, inner))?;
    let out = Tensor::from_vec(y, x.shape().clone())?;
    let saved = out.detach();
    record("log_softmax", out, &[x], move |g| {
        // dx = g − softmax · Σ g
        let (gv, yv) = (g.to_vec(), saved.to_vec());
        let mut dx = vec![0f32; gv.len()];
        for o in 0..outer {
            for j in 0..inner {
                let at = |i: usize| (o * len + i) * inner + j;
                // In f64: dx cancels where g ≈ softmax·Σg (the CUDA kernel sums in double too).
                let s = (0..len).map(|i| gv[at(i)] as f64).sum::<f64>() as f32;
                for i in 0..len {
                    dx[at(i)] = gv[at(i)] - yv[at(i)].exp() * s;
                }
            }
        }
        Ok(vec![Some(Tensor::from_vec(dx, saved.shape().clone())?)])
    })
}

pub fn softmax(x: &Tensor, axis: isize) -> Result<Tensor> {
    let a = x.shape().axis("softmax", axis)?;
    let (outer, len, inner) = split_at_axis(x.dims(), a);
    if x.device() == Device::Cuda {
        return softmax_cuda("softmax", x, (outer, len, inner), false);
    }
    let y: Vec<f32> = x
        .with_values(|v| log_softmax_values(v, outer, len, inner))?
        .into_iter()
        .map(f32::exp)
        .collect();
    let out = Tensor::from_vec(y, x.shape().clone())?;
    let saved = out.detach();
    record("softmax", out, &[x], move |g| {
        // dx = y · (g − Σ g·y)
        let (gv, yv) = (g.to_vec(), saved.to_vec());
        let mut dx = vec![0f32; gv.len()];
        for o in 0..outer {
            for j in 0..inner {
                let at = |i: usize| (o * len + i) * inner + j;
                // In f64: dx = y·(g − s) cancels where g ≈ s (the CUDA kernel sums in double).
                let s = (0..len)
                    .map(|i| gv[at(i)] as f64 * yv[at(i)] as f64)
                    .sum::<f64>() as f32;
                for i in 0..len {
                    dx[at(i)] = yv[at(i)] * (gv[at(i)] - s);
                }
            }
        }
        Ok(vec![Some(Tensor::from_vec(dx, saved.shape().clone())?)])
    })
}

/// The CUDA arm of `softmax` (`log: false`) and `log_softmax` (`log: true`): one kernel each
/// way (`kernels/softmax.cu`), the backward from the saved output as on the CPU.
fn softmax_cuda(
    op: &'static str,
    x: &Tensor,
    (outer, len, inner): (usize, usize, usize),
    log: bool,
) -> Result<Tensor> {
    let y = x.with_cuda(|dev, xs| cuda_softmax::fwd(dev, xs, outer, len, inner, log))?;
    let out = Tensor::from_cuda(y, x.shape().clone())?;
    let saved = out.detach();
    record(op, out, &[x], move |g| {
        let dx = g.with_cuda(|dev, gs| {
            saved.with_cuda(|_, ys| cuda_softmax::bwd(dev, gs, ys, outer, len, inner, log))
        })?;
        Ok(vec![Some(Tensor::from_cuda(dx, saved.shape().clone())?)])
    })
}
