//! Loss ops. Each returns per-element values (cross_entropy: one per row), no reduction.
//! Kernels: `backend::cpu::loss` and `backend::cuda::loss` (`kernels/loss.cu`); this file
//! validates, dispatches (`*_fwd`, `*_bwd`) and records. cross_entropy on CUDA is composed of
//! device ops (which record themselves); smooth L1 runs on the host.

use super::zip_values;
use crate::autograd::record;
use crate::backend::cpu::loss as cpu_loss;
use crate::backend::cuda::{loss as cuda_loss, CudaSlice};
use crate::tensor::{compute_device, Device, Shape, Tensor};
use crate::{Error, Result};

/// What the BCE backward reads.
enum BceSaved {
    /// The inputs and, with a weight, the unweighted loss (its gradient).
    Cpu {
        x: Tensor,
        t: Tensor,
        w: Option<Tensor>,
        raw: Tensor,
    },
    /// Device copies of the inputs (one kernel gives all three gradients).
    Cuda {
        x: CudaSlice<f32>,
        t: CudaSlice<f32>,
        w: Option<CudaSlice<f32>>,
    },
}

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
    let (out, saved) = bce_fwd(compute_device(&inputs), logits, target, weight)?;
    let shape = logits.shape().clone();
    record("bce_with_logits", out, &inputs, move |g| {
        bce_bwd(&saved, g, &shape)
    })
}

fn bce_fwd(
    device: Device,
    logits: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, BceSaved)> {
    match device {
        Device::Cpu => cpu_bce_fwd(logits, target, weight),
        Device::Cuda => cuda_bce_fwd(logits, target, weight),
    }
}

/// `[dx, dt]`, and `dw` with a weight.
fn bce_bwd(saved: &BceSaved, g: &Tensor, shape: &Shape) -> Result<Vec<Option<Tensor>>> {
    match saved {
        BceSaved::Cpu { x, t, w, raw } => cpu_bce_bwd([x, t], w.as_ref(), raw, g),
        BceSaved::Cuda { x, t, w } => cuda_bce_bwd([x, t], w.as_ref(), g, shape),
    }
}

fn cpu_bce_fwd(
    logits: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, BceSaved)> {
    let raw = zip_values("bce_with_logits", logits, target, cpu_loss::bce_with_logits)?;
    let out = match weight {
        Some(w) => zip_values("bce_with_logits", &raw, w, |l, w| l * w)?,
        None => raw.clone(),
    };
    // `raw` may be `out` itself (no weight): keep a detached handle, never the output, or the
    // node would own its own output (an Arc cycle that leaks the graph).
    let saved = BceSaved::Cpu {
        x: logits.detach(),
        t: target.detach(),
        w: weight.map(Tensor::detach),
        raw: raw.detach(),
    };
    Ok((out, saved))
}

fn cpu_bce_bwd(
    [x, t]: [&Tensor; 2],
    w: Option<&Tensor>,
    raw: &Tensor,
    g: &Tensor,
) -> Result<Vec<Option<Tensor>>> {
    let gw = match w {
        Some(w) => zip_values("bce_with_logits", g, w, |g, w| g * w)?,
        None => g.clone(),
    };
    let dx = {
        let d = zip_values("bce_with_logits", x, t, cpu_loss::bce_with_logits_dx)?;
        zip_values("bce_with_logits", &gw, &d, |g, d| g * d)?
    };
    let dt = zip_values("bce_with_logits", &gw, x, |g, x| -g * x)?;
    let mut grads = vec![Some(dx), Some(dt)];
    if w.is_some() {
        grads.push(Some(zip_values("bce_with_logits", g, raw, |g, l| g * l)?));
    }
    Ok(grads)
}

/// One kernel forward (weight applied inside), one backward for all three gradients.
fn cuda_bce_fwd(
    logits: &Tensor,
    target: &Tensor,
    weight: Option<&Tensor>,
) -> Result<(Tensor, BceSaved)> {
    let (x, t) = (logits.cuda_owned()?, target.cuda_owned()?);
    let w = weight.map(Tensor::cuda_owned).transpose()?;
    let dev = crate::backend::cuda::device()?;
    let y = cuda_loss::bce_with_logits_fwd(&dev, &x, &t, w.as_ref())?;
    let out = Tensor::from_cuda(y, logits.shape().clone())?;
    Ok((out, BceSaved::Cuda { x, t, w }))
}

fn cuda_bce_bwd(
    [x, t]: [&CudaSlice<f32>; 2],
    w: Option<&CudaSlice<f32>>,
    g: &Tensor,
    shape: &Shape,
) -> Result<Vec<Option<Tensor>>> {
    let (dx, dt, dw) = g.with_cuda(|dev, gs| cuda_loss::bce_with_logits_bwd(dev, gs, x, t, w))?;
    let mut grads = vec![
        Some(Tensor::from_cuda(dx, shape.clone())?),
        Some(Tensor::from_cuda(dt, shape.clone())?),
    ];
    if let Some(dw) = dw {
        grads.push(Some(Tensor::from_cuda(dw, shape.clone())?));
    }
    Ok(grads)
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
    // Composed of recorded device ops: the op records nothing of its own on that path.
    if let Some(y) = cuda_cross_entropy_composed(logits, &classes)? {
        return Ok(y);
    }
    let (out, logp) = cross_entropy_fwd(logits, &classes)?;
    record("cross_entropy", out, &[logits], move |g| {
        Ok(vec![Some(cross_entropy_bwd(g, &logp, &classes, [n, c])?)])
    })
}

/// The host path: the losses and the log-probabilities.
fn cross_entropy_fwd(logits: &Tensor, classes: &[usize]) -> Result<(Tensor, Vec<f32>)> {
    let (n, c) = (logits.dims()[0], logits.dims()[1]);
    let (losses, logp) = logits.with_values(|v| cpu_loss::cross_entropy_fwd(v, classes, c))?;
    Ok((Tensor::from_vec(losses, [n])?, logp))
}

fn cross_entropy_bwd(
    g: &Tensor,
    logp: &[f32],
    classes: &[usize],
    [n, c]: [usize; 2],
) -> Result<Tensor> {
    let dx = cpu_loss::cross_entropy_bwd(&g.to_vec(), logp, classes, c);
    Tensor::from_vec(dx, [n, c])
}

/// The CUDA arm of [`cross_entropy`] (`None` on the CPU): [`cross_entropy_composed`].
fn cuda_cross_entropy_composed(logits: &Tensor, classes: &[usize]) -> Result<Option<Tensor>> {
    if !logits.is_cuda() {
        return Ok(None);
    }
    cross_entropy_composed(logits, classes).map(Some)
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
    let out = smooth_l1_fwd(a, b, beta)?;
    let (a2, b2) = (a.detach(), b.detach());
    record("smooth_l1", out, &[a, b], move |g| {
        let (ga, gb) = smooth_l1_bwd(&a2, &b2, g, beta)?;
        Ok(vec![Some(ga), Some(gb)])
    })
}

/// The host path (no CUDA kernel: a CUDA tensor makes the round trip).
fn smooth_l1_fwd(a: &Tensor, b: &Tensor, beta: f32) -> Result<Tensor> {
    zip_values("smooth_l1", a, b, move |x, y| {
        cpu_loss::smooth_l1(x, y, beta)
    })
}

fn smooth_l1_bwd(a: &Tensor, b: &Tensor, g: &Tensor, beta: f32) -> Result<(Tensor, Tensor)> {
    let slope = zip_values("smooth_l1", a, b, move |x, y| {
        cpu_loss::smooth_l1_slope(x, y, beta)
    })?;
    let ga = zip_values("smooth_l1", g, &slope, |g, s| g * s)?;
    let gb = zip_values("smooth_l1", g, &slope, |g, s| -g * s)?;
    Ok((ga, gb))
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
