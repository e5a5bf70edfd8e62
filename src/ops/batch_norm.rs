//! Batch normalisation over `[N, C, H, W]` (per channel), PyTorch semantics: training normalises
//! with the batch's biased variance and updates the running stats with the unbiased one,
//! `running = (1 - momentum)·running + momentum·batch`; eval uses the running stats.
//! YOLOX: eps 1e-3, momentum 0.03.
//!
//! `batch_norm_silu2d` fuses YOLOX's BaseConv tail (BN → SiLU) into one op: one pass over the
//! data forward and backward instead of four, and no intermediate tensor for the BN output.

use rayon::prelude::*;

use super::elementwise::sigmoid_f32;
use crate::autograd::{is_grad_enabled, record};
use crate::backend::cuda::batch_norm as cuda_bn;
use crate::tensor::{compute_device, Device, Tensor};
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

/// What the forward keeps for the backward.
struct BnSaved {
    n: usize,
    c: usize,
    plane: usize,
    /// Per channel `(mean, 1/sqrt(var + eps))` used for normalising.
    stats: Vec<(f32, f32)>,
    /// `(x − mean)·inv_std`, same layout as x.
    xhat: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    training: bool,
}

/// Shapes and options of a BN call: `(n, c, plane)` or an error naming the op and the tensor.
fn bn_check(
    op: &str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
) -> Result<(usize, usize, usize)> {
    if x.rank() != 4 {
        return Err(Error::shape(op, "x [N, C, H, W]", x.shape()));
    }
    let (n, c, plane) = (x.dims()[0], x.dims()[1], x.dims()[2] * x.dims()[3]);
    for (name, t) in [
        ("gamma", gamma),
        ("beta", beta),
        ("running_mean", running_mean),
        ("running_var", running_var),
    ] {
        if t.dims() != [c] {
            return Err(Error::shape(format!("{op} ({name})"), [c], t.shape()));
        }
    }
    // NaN eps fails too (it is neither > 0 nor <= 0).
    if p.eps.is_nan() || p.eps <= 0.0 || !(0.0..=1.0).contains(&p.momentum) {
        return Err(Error::op(
            op,
            format!("bad eps {} or momentum {}", p.eps, p.momentum),
        ));
    }
    let count = n * plane;
    if p.training && count <= 1 {
        return Err(Error::op(
            op,
            format!(
                "training mode needs more than one value per channel, got x {}",
                x.shape()
            ),
        ));
    }
    Ok((n, c, plane))
}

/// Check shapes and normalise: returns `xhat` and the per-channel stats, updating the running
/// stats in training mode.
fn bn_normalise(
    op: &str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
) -> Result<BnSaved> {
    let (n, c, plane) = bn_check(op, x, gamma, beta, running_mean, running_var, p)?;
    let count = n * plane;
    let mut xhat = x.to_vec();
    let stats: Vec<(f32, f32)> = if p.training {
        // One pass: Σx and Σx² per channel in f64 (fixed order: deterministic).
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut s1, mut s2) = (0f64, 0f64);
                for i in 0..n {
                    for &v in &xhat[(i * c + ch) * plane..(i * c + ch + 1) * plane] {
                        let v = v as f64;
                        s1 += v;
                        s2 += v * v;
                    }
                }
                (s1, s2)
            })
            .collect();
        let cnt = count as f64;
        let moments: Vec<(f64, f64)> = sums
            .iter()
            .map(|&(s1, s2)| (s1 / cnt, (s2 / cnt - (s1 / cnt).powi(2)).max(0.0)))
            .collect();
        let unbias = cnt / (cnt - 1.0);
        running_mean.update_values(|rm| {
            rm.iter_mut()
                .zip(&moments)
                .for_each(|(r, m)| *r = (1.0 - p.momentum) * *r + p.momentum * m.0 as f32)
        })?;
        running_var.update_values(|rv| {
            rv.iter_mut().zip(&moments).for_each(|(r, m)| {
                *r = (1.0 - p.momentum) * *r + p.momentum * (m.1 * unbias) as f32
            })
        })?;
        moments
            .iter()
            .map(|&(m, v)| (m as f32, (1.0 / (v + p.eps as f64).sqrt()) as f32))
            .collect()
    } else {
        let (rm, rv) = (running_mean.to_vec(), running_var.to_vec());
        rm.iter()
            .zip(&rv)
            .map(|(&m, &v)| (m, 1.0 / (v + p.eps).sqrt()))
            .collect()
    };
    xhat.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, xh)| {
            let (mean, inv) = stats[i % c];
            xh.iter_mut().for_each(|v| *v = (*v - mean) * inv);
        });
    Ok(BnSaved {
        n,
        c,
        plane,
        stats,
        xhat,
        gamma: gamma.to_vec(),
        beta: beta.to_vec(),
        training: p.training,
    })
}

/// BN backward from the gradient of the BN output: `(dx, dgamma, dbeta)`.
fn bn_backward(s: &BnSaved, dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, c, plane) = (s.n, s.c, s.plane);
    // Per channel: Σdy and Σ(dy·xhat), in f64, fixed order.
    let sums: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut s1, mut s2) = (0f64, 0f64);
            for i in 0..n {
                let r = (i * c + ch) * plane..(i * c + ch + 1) * plane;
                for (d, xh) in dy[r.clone()].iter().zip(&s.xhat[r]) {
                    s1 += *d as f64;
                    s2 += (*d * *xh) as f64;
                }
            }
            (s1, s2)
        })
        .collect();
    let mut dx = vec![0f32; dy.len()];
    let m = (n * plane) as f32;
    dx.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, dxc)| {
            let ch = i % c;
            let inv = s.stats[ch].1;
            let r = i * plane..(i + 1) * plane;
            if s.training {
                // dx = gamma·inv/M · (M·dy − Σdy − xhat·Σ(dy·xhat))
                let (s1, s2) = (sums[ch].0 as f32, sums[ch].1 as f32);
                let scale = s.gamma[ch] * inv / m;
                for ((o, d), xh) in dxc.iter_mut().zip(&dy[r.clone()]).zip(&s.xhat[r]) {
                    *o = scale * (m * d - s1 - xh * s2);
                }
            } else {
                let scale = s.gamma[ch] * inv;
                dxc.iter_mut().zip(&dy[r]).for_each(|(o, d)| *o = scale * d);
            }
        });
    let dgamma = sums.iter().map(|v| v.1 as f32).collect();
    let dbeta = sums.iter().map(|v| v.0 as f32).collect();
    (dx, dgamma, dbeta)
}

fn grads(
    s: &BnSaved,
    x_shape: &crate::tensor::Shape,
    d: (Vec<f32>, Vec<f32>, Vec<f32>),
) -> Result<Vec<Option<Tensor>>> {
    Ok(vec![
        Some(Tensor::from_vec(d.0, x_shape.clone())?),
        Some(Tensor::from_vec(d.1, [s.c])?),
        Some(Tensor::from_vec(d.2, [s.c])?),
    ])
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
    if compute_device(&[x]) == Device::Cuda {
        if let Some(y) = batch_norm_cuda(
            "batch_norm",
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            p,
            false,
        )? {
            return Ok(y);
        }
    }
    let s = bn_normalise("batch_norm", x, gamma, beta, running_mean, running_var, p)?;
    let mut y = vec![0f32; s.xhat.len()];
    y.par_chunks_mut(s.plane.max(1))
        .zip(s.xhat.par_chunks(s.plane.max(1)))
        .enumerate()
        .for_each(|(i, (yy, xh))| {
            let ch = i % s.c;
            let (g, b) = (s.gamma[ch], s.beta[ch]);
            yy.iter_mut().zip(xh).for_each(|(o, v)| *o = v * g + b);
        });
    let out = Tensor::from_vec(y, x.shape().clone())?;
    let x_shape = x.shape().clone();
    record("batch_norm", out, &[x, gamma, beta], move |dy| {
        let d = dy.with_values(|dyv| bn_backward(&s, dyv));
        grads(&s, &x_shape, d)
    })
}

/// `silu(batch_norm2d(x, ...))` in one op (YOLOX BaseConv's BN → SiLU).
pub fn batch_norm_silu2d(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
) -> Result<Tensor> {
    if compute_device(&[x]) == Device::Cuda {
        if let Some(y) = batch_norm_cuda(
            "batch_norm_silu",
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            p,
            true,
        )? {
            return Ok(y);
        }
    }
    let s = bn_normalise(
        "batch_norm_silu",
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    )?;
    let mut y = vec![0f32; s.xhat.len()];
    // Keep σ(bn) for the backward: SiLU' = σ·(1 + bn·(1 − σ)), bn recomputed from xhat.
    let mut sig = vec![0f32; s.xhat.len()];
    y.par_chunks_mut(s.plane.max(1))
        .zip(sig.par_chunks_mut(s.plane.max(1)))
        .zip(s.xhat.par_chunks(s.plane.max(1)))
        .enumerate()
        .for_each(|(i, ((yy, ss), xh))| {
            let ch = i % s.c;
            let (g, b) = (s.gamma[ch], s.beta[ch]);
            for ((o, sg), v) in yy.iter_mut().zip(ss.iter_mut()).zip(xh) {
                let bn = v * g + b;
                let sv = sigmoid_f32(bn);
                *sg = sv;
                *o = bn * sv;
            }
        });
    let out = Tensor::from_vec(y, x.shape().clone())?;
    let x_shape = x.shape().clone();
    record("batch_norm_silu", out, &[x, gamma, beta], move |dy| {
        let mut d_bn = dy.to_vec();
        d_bn.par_chunks_mut(s.plane.max(1))
            .zip(sig.par_chunks(s.plane.max(1)))
            .zip(s.xhat.par_chunks(s.plane.max(1)))
            .enumerate()
            .for_each(|(i, ((dd, ss), xh))| {
                let ch = i % s.c;
                let (g, b) = (s.gamma[ch], s.beta[ch]);
                for ((d, &sv), v) in dd.iter_mut().zip(ss).zip(xh) {
                    let bn = v * g + b;
                    *d *= sv * (1.0 + bn * (1.0 - sv));
                }
            });
        grads(&s, &x_shape, bn_backward(&s, &d_bn))
    })
}

/// The CUDA arm of both BN ops (`silu` fuses the activation). `Ok(None)` sends the call to the
/// host path: running stats that are not CUDA buffers, or an eval-mode call that needs a
/// gradient (the kernels' backward is the training one).
#[allow(clippy::too_many_arguments)]
fn batch_norm_cuda(
    op: &'static str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
    silu: bool,
) -> Result<Option<Tensor>> {
    let (n, c, plane) = bn_check(op, x, gamma, beta, running_mean, running_var, p)?;
    let shape = cuda_bn::BnShape { n, c, plane };
    if !(running_mean.is_cuda() && running_var.is_cuda()) {
        return Ok(None);
    }
    let inputs = [x, gamma, beta];
    if !p.training {
        if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
            return Ok(None);
        }
        let y = x.with_cuda(|dev, xs| {
            gamma.with_cuda(|_, gs| {
                beta.with_cuda(|_, bs| {
                    running_mean.with_cuda(|_, rm| {
                        running_var.with_cuda(|_, rv| {
                            cuda_bn::fwd_eval(dev, xs, gs, bs, rm, rv, shape, p.eps, silu)
                        })
                    })
                })
            })
        })?;
        return record(
            op,
            Tensor::from_cuda(y, x.shape().clone())?,
            &inputs,
            |_| {
                Err(crate::Error::Autograd(
                    "eval-mode batch norm recorded without a backward".into(),
                ))
            },
        )
        .map(Some);
    }
    let res = x.with_cuda(|dev, xs| {
        gamma.with_cuda(|_, gs| {
            beta.with_cuda(|_, bs| {
                running_mean.with_cuda_mut(|_, rm| {
                    running_var.with_cuda_mut(|_, rv| {
                        cuda_bn::fwd_train(dev, xs, gs, bs, rm, rv, shape, p.momentum, p.eps, silu)
                    })
                })
            })
        })
    })?;
    let Some(Some((y, saved))) = res else {
        return Ok(None);
    };
    let out = Tensor::from_cuda(y, x.shape().clone())?;
    let (xs, gs, bs) = (x.detach(), gamma.detach(), beta.detach());
    let x_shape = x.shape().clone();
    record(op, out, &inputs, move |dy| {
        let (dx, dgamma, dbeta) = dy.with_cuda(|dev, dys| {
            xs.with_cuda(|_, xv| {
                gs.with_cuda(|_, gv| {
                    bs.with_cuda(|_, bv| {
                        cuda_bn::bwd_train(dev, dys, xv, gv, bv, &saved, shape, silu)
                    })
                })
            })
        })?;
        Ok(vec![
            Some(Tensor::from_cuda(dx, x_shape.clone())?),
            Some(Tensor::from_cuda(dgamma, [c])?),
            Some(Tensor::from_cuda(dbeta, [c])?),
        ])
    })
    .map(Some)
}
