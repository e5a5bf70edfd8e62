//! Loss kernels on the CPU (values in, `Vec` or per-value formulas out): binary cross-entropy on
//! logits, cross-entropy over class rows and smooth L1. `ops::loss` validates, dispatches and
//! records; the CUDA twin is `backend::cuda::loss`.

use super::math::sigmoid_f32;
use super::softmax::log_softmax;

/// `max(x,0) − x·t + log(1 + e^{−|x|})`: BCE on a logit, stable for |x| ~ 300.
#[inline(always)]
pub fn bce_with_logits(x: f32, t: f32) -> f32 {
    x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
}

/// `∂ bce / ∂x = σ(x) − t`.
#[inline(always)]
pub fn bce_with_logits_dx(x: f32, t: f32) -> f32 {
    sigmoid_f32(x) - t
}

/// Cross-entropy of `[n, c]` logits rows against class ids: the per-row losses and the
/// log-probabilities (the backward's input).
pub fn cross_entropy_fwd(logits: &[f32], classes: &[usize], c: usize) -> (Vec<f32>, Vec<f32>) {
    let n = classes.len();
    let logp = log_softmax(logits, (n, c, 1));
    let losses = classes
        .iter()
        .enumerate()
        .map(|(i, &k)| -logp[i * c + k])
        .collect();
    (losses, logp)
}

/// `d/dlogits = g_row · (softmax − onehot)` from the forward's log-probabilities.
pub fn cross_entropy_bwd(gv: &[f32], logp: &[f32], classes: &[usize], c: usize) -> Vec<f32> {
    let mut dx: Vec<f32> = logp.iter().map(|l| l.exp()).collect();
    for (i, &k) in classes.iter().enumerate() {
        dx[i * c + k] -= 1.0;
        dx[i * c..(i + 1) * c].iter_mut().for_each(|d| *d *= gv[i]);
    }
    dx
}

/// Smooth L1 (PyTorch): `0.5·d²/β` when |d| < β, else `|d| − 0.5·β`, `d = x − y`.
#[inline(always)]
pub fn smooth_l1(x: f32, y: f32, beta: f32) -> f32 {
    let d = (x - y).abs();
    if d < beta {
        0.5 * d * d / beta
    } else {
        d - 0.5 * beta
    }
}

/// `∂ smooth_l1 / ∂x`: `d/β` inside β, else sign(d) (0 at d = 0).
#[inline(always)]
pub fn smooth_l1_slope(x: f32, y: f32, beta: f32) -> f32 {
    let d = x - y;
    if d.abs() < beta {
        d / beta
    } else {
        d.signum() * (d != 0.0) as u8 as f32
    }
}
