//! Batch normalisation over `[N, C, H, W]` (per channel), PyTorch semantics: training normalises
//! with the batch's biased variance and updates the running stats with the unbiased one,
//! `running = (1 - momentum)·running + momentum·batch`; eval uses the running stats.
//! YOLOX: eps 1e-3, momentum 0.03.

use rayon::prelude::*;

use crate::autograd::record;
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNormParams {
    pub training: bool,
    pub momentum: f32,
    pub eps: f32,
}

impl Default for BatchNormParams {
    fn default() -> Self {
        // YOLOX's values (yolox-notes 1.6), not PyTorch's 0.1 / 1e-5.
        BatchNormParams {
            training: true,
            momentum: 0.03,
            eps: 1e-3,
        }
    }
}

/// Per-channel `(mean, 1/sqrt(var + eps), var)` of `x` in `[N, C, plane]` layout.
fn channel_stats(xv: &[f32], n: usize, c: usize, plane: usize, eps: f32) -> Vec<(f32, f32, f64)> {
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let count = (n * plane) as f64;
            let mut sum = 0f64;
            for i in 0..n {
                sum += xv[(i * c + ch) * plane..(i * c + ch + 1) * plane]
                    .iter()
                    .map(|&v| v as f64)
                    .sum::<f64>();
            }
            let mean = sum / count;
            let mut sq = 0f64;
            for i in 0..n {
                sq += xv[(i * c + ch) * plane..(i * c + ch + 1) * plane]
                    .iter()
                    .map(|&v| (v as f64 - mean).powi(2))
                    .sum::<f64>();
            }
            let var = sq / count;
            (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32, var)
        })
        .collect()
}

/// `y = (x - mean) / sqrt(var + eps) · gamma + beta`. In training mode `running_mean` and
/// `running_var` are updated in place.
pub fn batch_norm2d(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::shape("batch_norm", "x [N, C, H, W]", x.shape()));
    }
    let (n, c, plane) = (x.dims()[0], x.dims()[1], x.dims()[2] * x.dims()[3]);
    for (name, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ] {
        if t.dims() != [c] {
            return Err(Error::shape(format!("batch_norm ({name})"), [c], t.shape()));
        }
    }
    if !(p.eps > 0.0) || !(0.0..=1.0).contains(&p.momentum) {
        return Err(Error::op(
            "batch_norm",
            format!("bad eps {} or momentum {}", p.eps, p.momentum),
        ));
    }
    let count = n * plane;
    if p.training && count <= 1 {
        return Err(Error::op(
            "batch_norm",
            format!(
                "training mode needs more than one value per channel, got x {}",
                x.shape()
            ),
        ));
    }
    let xv = x.to_vec();
    let stats: Vec<(f32, f32)> = if p.training {
        let s = channel_stats(&xv, n, c, plane, p.eps);
        let unbias = count as f64 / (count - 1) as f64;
        running_mean.update_values(|rm| {
            rm.iter_mut()
                .zip(&s)
                .for_each(|(r, st)| *r = (1.0 - p.momentum) * *r + p.momentum * st.0)
        })?;
        running_var.update_values(|rv| {
            rv.iter_mut().zip(&s).for_each(|(r, st)| {
                *r = (1.0 - p.momentum) * *r + p.momentum * (st.2 * unbias) as f32
            })
        })?;
        s.into_iter().map(|(m, inv, _)| (m, inv)).collect()
    } else {
        let rm = running_mean.to_vec();
        let rv = running_var.to_vec();
        rm.iter()
            .zip(&rv)
            .map(|(&m, &v)| (m, 1.0 / (v + p.eps).sqrt()))
            .collect()
    };
    let (gv, bv) = (gamma.to_vec(), beta.to_vec());
    // xhat is what backward needs; y = xhat·gamma + beta.
    let mut xhat = xv;
    let mut y = vec![0f32; xhat.len()];
    xhat.par_chunks_mut(plane.max(1))
        .zip(y.par_chunks_mut(plane.max(1)))
        .enumerate()
        .for_each(|(i, (xh, yy))| {
            let ch = i % c;
            let (mean, inv) = stats[ch];
            for (a, b) in xh.iter_mut().zip(yy.iter_mut()) {
                *a = (*a - mean) * inv;
                *b = *a * gv[ch] + bv[ch];
            }
        });
    let out = Tensor::from_vec(y, x.shape().clone())?;
    let x_shape = x.shape().clone();
    let training = p.training;
    record("batch_norm", out, &[x, gamma, beta], move |dy| {
        let dyv = dy.to_vec();
        // Per channel: sum(dy) and sum(dy·xhat), in f64, fixed order.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut s1, mut s2) = (0f64, 0f64);
                for i in 0..n {
                    let r = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                    for (d, xh) in dyv[r.clone()].iter().zip(&xhat[r]) {
                        s1 += *d as f64;
                        s2 += (*d * *xh) as f64;
                    }
                }
                (s1, s2)
            })
            .collect();
        let mut dx = vec![0f32; dyv.len()];
        dx.par_chunks_mut(plane.max(1))
            .enumerate()
            .for_each(|(i, dxc)| {
                let ch = i % c;
                let inv = stats[ch].1;
                let r = i * plane..(i + 1) * plane;
                if training {
                    // dx = gamma·inv/M · (M·dy − Σdy − xhat·Σ(dy·xhat))
                    let m = count as f32;
                    let (s1, s2) = (sums[ch].0 as f32, sums[ch].1 as f32);
                    let scale = gv[ch] * inv / m;
                    for ((o, d), xh) in dxc.iter_mut().zip(&dyv[r.clone()]).zip(&xhat[r]) {
                        *o = scale * (m * d - s1 - xh * s2);
                    }
                } else {
                    let scale = gv[ch] * inv;
                    for (o, d) in dxc.iter_mut().zip(&dyv[r]) {
                        *o = scale * d;
                    }
                }
            });
        let dgamma: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();
        let dbeta: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        Ok(vec![
            Some(Tensor::from_vec(dx, x_shape.clone())?),
            Some(Tensor::from_vec(dgamma, [c])?),
            Some(Tensor::from_vec(dbeta, [c])?),
        ])
    })
}
