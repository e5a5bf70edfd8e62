//! Loss ops. Each returns per-element values (cross_entropy: one per row), no reduction.

use super::elementwise::sigmoid_f32;
use super::{softmax::log_softmax_values, zip_values};
use crate::autograd::record;
use crate::backend::cuda::loss as cuda_loss;
use crate::tensor::{compute_device, Device, Tensor};
use crate::{Error, Result};

/// Binary cross-entropy on logits, `max(x,0) − x·t + log(1 + e^{−|x|})` (stable for |x| ~ 300),
/// times `weight` when given. Gradients: x → (σ(x) − t)·w, t → −x·w, w → the unweighted loss.
pub fn bce_with_logits(
    logits: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
) -> Result<Tensor> {
    if logits.shape() != target.shape() {
        return Err(Error::shape(
            "bce_with_logits (target)",
            logits.shape(),
            target.shape(),
        ));
    }
    if let Some(w) = weight {
        if w.shape() != logits.shape() {
            return Err(Error::shape(
                "bce_with_logits (weight)",
                logits.shape(),
                w.shape(),
            ));
        }
    }
    let mut inputs = vec![logits, target];
    if let Some(wt) = weight {
        inputs.push(wt);
    }
    if compute_device(&inputs) == Device::Cuda {
        return bce_with_logits_cuda(logits, target, weight, &inputs);
    }
    let raw = zip_values("bce_with_logits", logits, target, |x, t| {
        x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
    })?;
    let out = match weight {
        Some(w) => zip_values("bce_with_logits", &raw, w, |l, w| l * w)?,
        None => raw.clone(),
    };
    // `raw` may be `out` itself (no weight): keep a detached handle, never the output, or the
    // node would own its own output (an Arc cycle that leaks the graph).
    let raw = raw.detach();
    let (x, t) = (logits.detach(), target.detach());
    let w = weight.map(Tensor::detach);
    record("bce_with_logits", out, &inputs, move |g| {
        let gw = match &w {
            Some(w) => zip_values("bce_with_logits", g, w, |g, w| g * w)?,
            None => g.clone(),
        };
        let dx = {
            let d = zip_values("bce_with_logits", &x, &t, |x, t| sigmoid_f32(x) - t)?;
            zip_values("bce_with_logits", &gw, &d, |g, d| g * d)?
        };
        let dt = zip_values("bce_with_logits", &gw, &x, |g, x| -g * x)?;
        let mut grads = vec![Some(dx), Some(dt)];
        if w.is_some() {
            grads.push(Some(zip_values("bce_with_logits", g, &raw, |g, l| g * l)?));
        }
        Ok(grads)
    })
}

/// The CUDA arm of `bce_with_logits`: one kernel forward (weight applied inside), one backward
/// for all three gradients.
fn bce_with_logits_cuda(
    logits: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
    inputs: &[&Tensor],
) -> Result<Tensor> {
    let shape = logits.shape().clone();
    let (x, t) = (logits.cuda_owned()?, target.cuda_owned()?);
    let w = weight.map(Tensor::cuda_owned).transpose()?;
    let dev = crate::backend::cuda::device()?;
    let y = cuda_loss::bce_with_logits_fwd(&dev, &x, &t, w.as_ref())?;
    let out = Tensor::from_cuda(y, shape.clone())?;
    record("bce_with_logits", out, inputs, move |g| {
        let (dx, dt, dw) =
            g.with_cuda(|dev, gs| cuda_loss::bce_with_logits_bwd(dev, gs, &x, &t, w.as_ref()))?;
        let mut grads = vec![
            Some(Tensor::from_cuda(dx, shape.clone())?),
            Some(Tensor::from_cuda(dt, shape.clone())?),
        ];
        if let Some(dw) = dw {
            grads.push(Some(Tensor::from_cuda(dw, shape.clone())?));
        }
        Ok(grads)
    })
}

/// Cross-entropy of `logits [N, C]` against integer class ids `labels [N]` (given as floats):
/// `−log_softmax(logits)[label]` per row.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.rank() != 2 || labels.dims() != [logits.dims()[0]] {
        return Err(Error::shape(
            "cross_entropy",
            "logits [N, C] and labels [N]",
            (logits.shape(), labels.shape()),
        ));
    }
    let (n, c) = (logits.dims()[0], logits.dims()[1]);
    let classes: Vec<usize> = labels.with_values(|v| {
        v.iter()
            .enumerate()
            .map(|(i, &l)| {
                if l.fract() == 0.0 && l >= 0.0 && (l as usize) < c {
                    Ok(l as usize)
                } else {
                    Err(Error::op(
                        "cross_entropy",
                        format!("label {l} at row {i} is not a class id in 0..{c}"),
                    ))
                }
            })
            .collect::<Result<_>>()
    })??;
    if logits.is_cuda() {
        return cross_entropy_composed(logits, &classes);
    }
    let logp = logits.with_values(|v| log_softmax_values(v, n, c, 1))?;
    let losses: Vec<f32> = classes
        .iter()
        .enumerate()
        .map(|(i, &k)| -logp[i * c + k])
        .collect();
    let out = Tensor::from_vec(losses, [n])?;
    record("cross_entropy", out, &[logits], move |g| {
        // d/dlogits = g_row · (softmax − onehot)
        let gv = g.to_vec();
        let mut dx: Vec<f32> = logp.iter().map(|l| l.exp()).collect();
        for (i, &k) in classes.iter().enumerate() {
            dx[i * c + k] -= 1.0;
            dx[i * c..(i + 1) * c].iter_mut().for_each(|d| *d *= gv[i]);
        }
        Ok(vec![Some(Tensor::from_vec(dx, [n, c])?)])
    })
}

/// The CUDA arm of [`cross_entropy`]: `−gather(log_softmax(logits), class)`, so the softmax and
/// gather kernels run forward and backward on the device (the class ids go up once). Written
/// with device-generic ops, so the CPU test below checks the composition against the CPU kernel.
pub(crate) fn cross_entropy_composed(logits: &Tensor, classes: &[usize]) -> Result<Tensor> {
    let n = classes.len();
    let ids = Tensor::from_vec(classes.iter().map(|&k| k as f32).collect(), [n, 1])?;
    let logp = super::log_softmax(logits, 1)?;
    let picked = super::gather(&logp, 1, &ids)?; // [N, 1]
    super::neg(&super::reshape(&picked, [n])?)
}

/// `|a − b|` per element (gradient sign(a − b), 0 at equality).
pub fn l1_loss(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let d = super::sub(a, b)?;
    super::abs(&d)
}

/// Huber-style smooth L1 (PyTorch): `0.5·d²/β` when |d| < β, else `|d| − 0.5·β`.
pub fn smooth_l1_loss(a: &Tensor, b: &Tensor, beta: f32) -> Result<Tensor> {
    if beta.is_nan() || beta <= 0.0 {
        return Err(Error::op(
            "smooth_l1",
            format!("beta must be > 0, got {beta}"),
        ));
    }
    if a.shape() != b.shape() {
        return Err(Error::shape("smooth_l1", a.shape(), b.shape()));
    }
    let out = zip_values("smooth_l1", a, b, move |x, y| {
        let d = (x - y).abs();
        if d < beta {
            0.5 * d * d / beta
        } else {
            d - 0.5 * beta
        }
    })?;
    let (a2, b2) = (a.detach(), b.detach());
    record("smooth_l1", out, &[a, b], move |g| {
        let slope = zip_values("smooth_l1", &a2, &b2, move |x, y| {
            let d = x - y;
            if d.abs() < beta {
                d / beta
            } else {
                d.signum() * (d != 0.0) as u8 as f32
            }
        })?;
        let ga = zip_values("smooth_l1", g, &slope, |g, s| g * s)?;
        let gb = zip_values("smooth_l1", g, &slope, |g, s| -g * s)?;
        Ok(vec![Some(ga), Some(gb)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The composition the CUDA arm runs equals the CPU kernel, values and gradients (both in
    /// f32 through the same log-softmax; the order of a row's sum may differ, hence 1e-6).
    #[test]
    fn composed_cross_entropy_matches_the_kernel() {
        let (n, c) = (5, 3);
        let values: Vec<f32> = (0..n * c)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.7)
            .collect();
        let classes = [2usize, 0, 1, 1, 2];
        let labels = Tensor::from_vec(classes.iter().map(|&k| k as f32).collect(), [n]).unwrap();
        let weights = Tensor::from_vec((0..n).map(|i| 1.0 + i as f32).collect(), [n]).unwrap();
        let run = |composed: bool| {
            let x = Tensor::from_vec(values.clone(), [n, c])
                .unwrap()
                .with_requires_grad(true);
            let y = if composed {
                cross_entropy_composed(&x, &classes).unwrap()
            } else {
                cross_entropy(&x, &labels).unwrap()
            };
            super::super::mul(&y, &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y.to_vec(), x.grad().unwrap().to_vec())
        };
        let (y_kernel, g_kernel) = run(false);
        let (y_composed, g_composed) = run(true);
        for (a, b) in y_kernel
            .iter()
            .zip(&y_composed)
            .chain(g_kernel.iter().zip(&g_composed))
        {
            assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
