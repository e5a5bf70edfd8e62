//! Batch normalisation over `[N, C, H, W]` (per channel), PyTorch semantics: training normalises
//! with the batch's biased variance and updates the running stats with the unbiased one,
//! `running = (1 - momentum)·running + momentum·batch`; eval uses the running stats.
//! YOLOX: eps 1e-3, momentum 0.03.
//!
//! `batch_norm_silu2d` fuses YOLOX's BaseConv tail (BN → SiLU) into one op, with no intermediate
//! tensor for the BN output. CPU: the forward reads x twice (stats, output) and writes only y; the
//! backward recomputes xhat and σ from the saved x (two passes) instead of storing them. Sums are
//! per (image, channel) plane with 8 f64 lanes, combined per channel in image order: deterministic
//! whatever the thread count.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::elementwise::sigmoid_f32;
use crate::autograd::{is_grad_enabled, record};
use crate::backend::cpu::simd::simd_fn;
use crate::backend::cpu::uninit::filled_vec;
use crate::backend::cuda::batch_norm as cuda_bn;
use crate::backend::cuda::bf16 as cuda_bf16;
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
        // YOLOX's values (docs/yolox.md §1.6), not PyTorch's 0.1 / 1e-5.
        BatchNormParams {
            training: true,
            momentum: 0.03,
            eps: 1e-3,
        }
    }
}

/// Per channel `(mean, 1/sqrt(var + eps))`.
type Stat = (f32, f32);

/// What the forward keeps for the backward: the input itself (alive upstream anyway) and the
/// per-channel stats; `xhat` (and σ for the fused op) are recomputed in the backward instead of
/// being stored, which halves the bytes the forward writes.
struct BnSaved {
    n: usize,
    c: usize,
    plane: usize,
    /// Per channel `(mean, 1/sqrt(var + eps))` used for normalising.
    stats: Vec<(f32, f32)>,
    x: Tensor,
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

/// Lanes of independent f64 accumulators in the per-plane sums: the loop vectorises and is not
/// bound by the latency of one add chain. The order is fixed (lane k takes elements k, k+8, …,
/// then the lanes are added in order), so results do not depend on the thread count.
const LANES: usize = 8;

/// Elements per block of the per-plane sums: each block is summed once per sum, so the loop
/// keeps one accumulator array (LLVM vectorises that at full width; two sums in one loop were
/// compiled to 2-lane f64 vectors) while the block stays in L1.
const SUM_BLOCK: usize = 512;

/// `acc[i % 8] += v[i]` in f64 over the first `v.len() / 8 · 8` elements of `v`.
#[inline(always)]
fn add_to_lanes(acc: &mut [f64; LANES], v: &[f32]) {
    for ch in v.chunks_exact(LANES) {
        for k in 0..LANES {
            acc[k] += ch[k] as f64;
        }
    }
}

/// `acc[i % 8] += v[i]²` in f64 (squared in f64), like [`add_to_lanes`].
#[inline(always)]
fn add_squares_to_lanes(acc: &mut [f64; LANES], v: &[f32]) {
    for ch in v.chunks_exact(LANES) {
        for k in 0..LANES {
            let x = ch[k] as f64;
            acc[k] += x * x;
        }
    }
}

/// `(Σd, Σ(d·xhat))` over one plane in f64, `xhat = (x − mean)·inv` recomputed from x; the
/// product `d·xhat` is f32. Lane k takes elements k, k+8, …; the lanes are then added in order
/// and the last `len % 8` elements after them.
#[inline(always)]
fn plane_grad_sums(d: &[f32], x: &[f32], mean: f32, inv: f32) -> (f64, f64) {
    let (mut a1, mut a2) = ([0f64; LANES], [0f64; LANES]);
    let mut prod = [0f32; SUM_BLOCK];
    for (db, xb) in d.chunks(SUM_BLOCK).zip(x.chunks(SUM_BLOCK)) {
        add_to_lanes(&mut a1, db);
        let prod = &mut prod[..db.len()];
        for ((p, &dv), &xv) in prod.iter_mut().zip(db).zip(xb) {
            *p = dv * ((xv - mean) * inv);
        }
        add_to_lanes(&mut a2, prod);
    }
    let (mut s1, mut s2) = (a1.iter().sum::<f64>(), a2.iter().sum::<f64>());
    let tail = d.len() / LANES * LANES;
    for (&dv, &xv) in d[tail..].iter().zip(&x[tail..]) {
        s1 += dv as f64;
        s2 += (dv * ((xv - mean) * inv)) as f64;
    }
    (s1, s2)
}

simd_fn! {
/// `(Σx, Σx²)` over one plane, in f64 (x² in f64 too); lanes and order as in
/// [`plane_grad_sums`].
fn plane_moments(xs: &[f32]) -> (f64, f64) {
    let (mut a1, mut a2) = ([0f64; LANES], [0f64; LANES]);
    for b in xs.chunks(SUM_BLOCK) {
        add_to_lanes(&mut a1, b);
        add_squares_to_lanes(&mut a2, b);
    }
    let (mut s1, mut s2) = (a1.iter().sum::<f64>(), a2.iter().sum::<f64>());
    for &v in &xs[xs.len() / LANES * LANES..] {
        let v = v as f64;
        s1 += v;
        s2 += v * v;
    }
    (s1, s2)
}
}

simd_fn! {
/// One plane of the forward output from its input: `bn = (x − mean)·inv·g + b`, then SiLU.
/// Writes every element of `y` (`y.len() == x.len()`, asserted): `y` may be uninitialised.
fn plane_forward(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    mean: f32,
    inv: f32,
    g: f32,
    b: f32,
    silu: bool,
) {
    assert_eq!(y.len(), x.len(), "batch_norm: plane lengths");
    if silu {
        for (o, &v) in y.iter_mut().zip(x) {
            let bn = (v - mean) * inv * g + b;
            o.write(bn * sigmoid_f32(bn));
        }
    } else {
        for (o, &v) in y.iter_mut().zip(x) {
            o.write((v - mean) * inv * g + b);
        }
    }
}
}

simd_fn! {
/// Backward pass 1 over one plane: the gradient at the BN output `d_bn` (into `d`, which may be
/// uninitialised: every element is written; with `silu` through SiLU's derivative, bn and σ
/// recomputed from x) and its sums `(Σd_bn, Σ(d_bn·xhat))`.
#[allow(clippy::too_many_arguments)]
fn plane_grad_at_bn(
    d: &mut [MaybeUninit<f32>],
    dy: &[f32],
    x: &[f32],
    mean: f32,
    inv: f32,
    g: f32,
    b: f32,
    silu: bool,
) -> (f64, f64) {
    assert!(d.len() == dy.len() && d.len() == x.len(), "batch_norm: plane lengths");
    if silu {
        for ((o, &dv), &v) in d.iter_mut().zip(dy).zip(x) {
            let bn = (v - mean) * inv * g + b;
            let sv = sigmoid_f32(bn);
            o.write(dv * (sv * (1.0 + bn * (1.0 - sv))));
        }
    } else {
        for (o, &dv) in d.iter_mut().zip(dy) {
            o.write(dv);
        }
    }
    // SAFETY: the loop above wrote every element (equal lengths, asserted).
    let d = unsafe { &*(d as *const [MaybeUninit<f32>] as *const [f32]) };
    plane_grad_sums(d, x, mean, inv)
}
}

simd_fn! {
/// Backward pass 2 over one plane, in place (training mode):
/// `dx = scale·(m·d_bn − s1 − xhat·s2)` with `scale = gamma·inv/m`.
#[allow(clippy::too_many_arguments)]
fn plane_grad_input(d: &mut [f32], x: &[f32], mean: f32, inv: f32, scale: f32, m: f32, s1: f32, s2: f32) {
    for (o, &v) in d.iter_mut().zip(x) {
        let xh = (v - mean) * inv;
        *o = scale * (m * *o - s1 - xh * s2);
    }
}
}

/// Per-plane sums (plane i = image i / c, channel i % c) combined per channel in image order.
fn per_channel(c: usize, per_plane: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out = vec![(0f64, 0f64); c];
    for (i, &(a, b)) in per_plane.iter().enumerate() {
        let o = &mut out[i % c];
        o.0 += a;
        o.1 += b;
    }
    out
}

/// Check shapes, compute the per-channel stats (updating the running stats in training mode)
/// and write the output, `gamma·xhat + beta`, through SiLU when `silu`.
#[allow(clippy::too_many_arguments)]
fn bn_forward(
    op: &str,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
    silu: bool,
) -> Result<(Vec<f32>, BnSaved)> {
    let (n, c, plane) = bn_check(op, x, gamma, beta, running_mean, running_var, p)?;
    let count = n * plane;
    let (gv, bv) = (gamma.to_vec(), beta.to_vec());
    let (y, stats) = x.with_values(|xv| -> Result<(Vec<f32>, Vec<Stat>)> {
        let stats: Vec<(f32, f32)> = if p.training {
            let per_plane: Vec<(f64, f64)> =
                xv.par_chunks(plane.max(1)).map(plane_moments).collect();
            let sums = per_channel(c, &per_plane);
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
        // One pass: xhat, the BN output and (fused) SiLU, straight from x.
        // Written plane by plane without zeroing first (a memset of every BN output was ~3 %
        // of a YOLOX-nano step).
        let write_planes = |y: &mut [MaybeUninit<f32>]| {
            y.par_chunks_mut(plane.max(1))
                .zip(xv.par_chunks(plane.max(1)))
                .enumerate()
                .for_each(|(i, (yy, xx))| {
                    let ch = i % c;
                    let (mean, inv) = stats[ch];
                    plane_forward(yy, xx, mean, inv, gv[ch], bv[ch], silu);
                })
        };
        // SAFETY: the planes tile all xv.len() elements and plane_forward writes each.
        let (y, ()) = unsafe { filled_vec(xv.len(), write_planes) };
        Ok((y, stats))
    })??;
    Ok((
        y,
        BnSaved {
            n,
            c,
            plane,
            stats,
            x: x.detach(),
            gamma: gv,
            beta: bv,
            training: p.training,
        },
    ))
}

/// BN backward from the gradient of the op's output: `(dx, dgamma, dbeta)`. With `silu` the
/// SiLU backward is fused in: `d_bn = dy·σ·(1 + bn·(1 − σ))`, bn and σ recomputed from x.
fn bn_backward(s: &BnSaved, dy: &[f32], silu: bool) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let (c, plane) = (s.c, s.plane);
    let pl = plane.max(1);
    s.x.with_values(|xv| {
        // Pass 1, per plane: d_bn (into dx) and (Σd_bn, Σ(d_bn·xhat)) in f64.
        let write_planes = |dx: &mut [MaybeUninit<f32>]| -> Vec<(f64, f64)> {
            dx.par_chunks_mut(pl)
                .zip(dy.par_chunks(pl))
                .zip(xv.par_chunks(pl))
                .enumerate()
                .map(|(i, ((dd, dyp), xp))| {
                    let ch = i % c;
                    let (mean, inv) = s.stats[ch];
                    plane_grad_at_bn(dd, dyp, xp, mean, inv, s.gamma[ch], s.beta[ch], silu)
                })
                .collect()
        };
        // SAFETY: the planes tile all dy.len() elements and plane_grad_at_bn writes each.
        let (mut dx, per_plane) = unsafe { filled_vec(dy.len(), write_planes) };
        let sums = per_channel(c, &per_plane);
        // Pass 2, in place: dx = gamma·inv/M · (M·d_bn − Σd_bn − xhat·Σ(d_bn·xhat)).
        let m = (s.n * plane) as f32;
        dx.par_chunks_mut(pl)
            .zip(xv.par_chunks(pl))
            .enumerate()
            .for_each(|(i, (dd, xp))| {
                let ch = i % c;
                let (mean, inv) = s.stats[ch];
                if s.training {
                    let (s1, s2) = (sums[ch].0 as f32, sums[ch].1 as f32);
                    plane_grad_input(dd, xp, mean, inv, s.gamma[ch] * inv / m, m, s1, s2);
                } else {
                    let scale = s.gamma[ch] * inv;
                    dd.iter_mut().for_each(|o| *o *= scale);
                }
            });
        let dgamma = sums.iter().map(|v| v.1 as f32).collect();
        let dbeta = sums.iter().map(|v| v.0 as f32).collect();
        (dx, dgamma, dbeta)
    })
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
    bn_op(
        "batch_norm",
        false,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    )
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
    bn_op(
        "batch_norm_silu",
        true,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    )
}

/// Both BN ops: the CUDA arm when it applies, else the CPU path (`silu` fuses the activation).
#[allow(clippy::too_many_arguments)]
fn bn_op(
    op: &'static str,
    silu: bool,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    p: BatchNormParams,
) -> Result<Tensor> {
    if compute_device(&[x]) == Device::Cuda {
        if let Some(y) = batch_norm_cuda(op, x, gamma, beta, running_mean, running_var, p, silu)? {
            return Ok(y);
        }
    }
    let (y, s) = bn_forward(op, x, gamma, beta, running_mean, running_var, p, silu)?;
    let out = Tensor::from_vec(y, x.shape().clone())?;
    let x_shape = x.shape().clone();
    record(op, out, &[x, gamma, beta], move |dy| {
        let d = dy.with_values(|dyv| bn_backward(&s, dyv, silu))??;
        grads(&s, &x_shape, d)
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
        let y = x.with_cuda_values(|dev, xs| {
            gamma.with_cuda(|_, gs| {
                beta.with_cuda(|_, bs| {
                    running_mean.with_cuda(|_, rm| {
                        running_var.with_cuda(|_, rv| {
                            let out = (silu, cuda_bf16::stores_bf16(dev));
                            cuda_bn::fwd_eval(dev, xs, gs, bs, rm, rv, shape, p.eps, out)
                        })
                    })
                })
            })
        })?;
        return record(
            op,
            Tensor::from_cuda_buffer(y, x.shape().clone())?,
            &inputs,
            |_| {
                Err(crate::Error::Autograd(
                    "eval-mode batch norm recorded without a backward".into(),
                ))
            },
        )
        .map(Some);
    }
    // x may be a bf16 conv output (bf16 storage mode): read as stored, here and in backward.
    let res = x.with_cuda_values(|dev, xs| {
        gamma.with_cuda(|_, gs| {
            beta.with_cuda(|_, bs| {
                running_mean.with_cuda_mut(|_, rm| {
                    running_var.with_cuda_mut(|_, rv| {
                        let out = (silu, cuda_bf16::stores_bf16(dev));
                        cuda_bn::fwd_train(dev, xs, gs, bs, rm, rv, shape, p.momentum, p.eps, out)
                    })
                })
            })
        })
    })?;
    let Some(Some((y, saved))) = res else {
        return Ok(None);
    };
    // In bf16 storage mode y is bf16 (the next conv reads it as is); backward never reads it.
    let out = Tensor::from_cuda_buffer(y, x.shape().clone())?;
    let (xs, gs, bs) = (x.detach(), gamma.detach(), beta.detach());
    let x_shape = x.shape().clone();
    record(op, out, &inputs, move |dy| {
        let (dx, dgamma, dbeta) = dy.with_cuda(|dev, dys| {
            xs.with_cuda_values(|_, xv| {
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
