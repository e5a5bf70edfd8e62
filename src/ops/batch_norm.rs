//! Batch normalisation over `[N, C, H, W]` (per channel), PyTorch semantics: training normalises
//! with the batch's biased variance and updates the running stats with the unbiased one,
//! `running = (1 - momentum)·running + momentum·batch`; eval uses the running stats.
//! YOLOX: eps 1e-3, momentum 0.03.
//!
//! `batch_norm_silu2d` fuses YOLOX's BaseConv tail (BN → SiLU) into one op, with no intermediate
//! tensor for the BN output. Kernels: `backend::cpu::batch_norm` and `backend::cuda::batch_norm`
//! (`kernels/batch_norm.cu`); this file validates, dispatches (`fwd`, `bwd`) and records.

use crate::autograd::{is_grad_enabled, record};
use crate::backend::cpu::batch_norm::{self as cpu_bn, Activation, BnCall, Normalizer};
use crate::backend::cuda::batch_norm as cuda_bn;
use crate::backend::cuda::{CudaDevice, CudaSlice};
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

/// The tensors of one BN call.
struct BnArgs<'a> {
    x: &'a Tensor,
    gamma: &'a Tensor,
    beta: &'a Tensor,
    running_mean: &'a Tensor,
    running_var: &'a Tensor,
    p: BatchNormParams,
}

/// What the forward keeps for the backward: the input itself (alive upstream anyway) and the
/// per-channel stats; `xhat` (and σ for the fused op) are recomputed in the backward instead of
/// being stored, which halves the bytes the forward writes.
enum Saved {
    Cpu {
        x: Tensor,
        norm: Normalizer,
    },
    Cuda {
        x: Tensor,
        gamma: Tensor,
        beta: Tensor,
        stats: cuda_bn::BnSaved,
    },
    /// An eval-mode CUDA forward, taken only when no input needs a gradient.
    CudaEval,
}

/// Shapes and options of a BN call: `(n, c, plane)` or an error naming the op and the tensor.
fn bn_check(op: &str, a: &BnArgs) -> Result<(usize, usize, usize)> {
    let (x, p) = (a.x, a.p);
    if x.rank() != 4 {
        return Err(Error::shape(op, "x [N, C, H, W]", x.shape()));
    }
    let (n, c, plane) = (x.dims()[0], x.dims()[1], x.dims()[2] * x.dims()[3]);
    for (name, t) in [
        ("gamma", a.gamma),
        ("beta", a.beta),
        ("running_mean", a.running_mean),
        ("running_var", a.running_var),
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
    let args = BnArgs {
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    };
    bn_op("batch_norm", &args, Activation::Identity)
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
    let args = BnArgs {
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        p,
    };
    bn_op("batch_norm_silu", &args, Activation::Silu)
}

/// Both BN ops: validate, the dispatched forward, one recorded backward.
fn bn_op(op: &'static str, a: &BnArgs, activation: Activation) -> Result<Tensor> {
    let (n, c, plane) = bn_check(op, a)?;
    let call = BnCall {
        n,
        c,
        plane,
        activation,
        training: a.p.training,
    };
    let (out, saved) = fwd(a, &call)?;
    record(op, out, &[a.x, a.gamma, a.beta], move |dy| {
        let (dx, dgamma, dbeta) = bwd(&saved, &call, dy)?;
        Ok(vec![Some(dx), Some(dgamma), Some(dbeta)])
    })
}

/// The forward on the inputs' device. The CUDA arm hands the call to the host when its kernels
/// do not apply: running stats that are not CUDA buffers, or an eval-mode call that needs a
/// gradient (the kernels' backward is the training one).
fn fwd(a: &BnArgs, call: &BnCall) -> Result<(Tensor, Saved)> {
    match compute_device(&[a.x]) {
        Device::Cuda => match cuda_fwd(a, call)? {
            Some(done) => Ok(done),
            None => cpu_fwd(a, call),
        },
        Device::Cpu => cpu_fwd(a, call),
    }
}

/// `(dx, dgamma, dbeta)` on the device the forward ran on.
fn bwd(saved: &Saved, call: &BnCall, dy: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    match saved {
        Saved::Cpu { x, norm } => cpu_bwd(x, norm, call, dy),
        Saved::Cuda {
            x,
            gamma,
            beta,
            stats,
        } => cuda_bwd([x, gamma, beta], stats, call, dy),
        Saved::CudaEval => Err(Error::Autograd(
            "eval-mode batch norm recorded without a backward".into(),
        )),
    }
}

fn cpu_fwd(a: &BnArgs, call: &BnCall) -> Result<(Tensor, Saved)> {
    let p = a.p;
    let (gamma, beta) = (a.gamma.to_vec(), a.beta.to_vec());
    let (y, norm) = a.x.with_values(|xv| -> Result<(Vec<f32>, Normalizer)> {
        let stats = if p.training {
            let moments = cpu_bn::batch_moments(xv, call);
            let count = call.n * call.plane;
            a.running_mean
                .update_values(|rm| cpu_bn::update_running_mean(rm, &moments, p.momentum))?;
            a.running_var
                .update_values(|rv| cpu_bn::update_running_var(rv, &moments, p.momentum, count))?;
            cpu_bn::batch_stats(&moments, p.eps)
        } else {
            let (rm, rv) = (a.running_mean.to_vec(), a.running_var.to_vec());
            cpu_bn::running_stats(&rm, &rv, p.eps)
        };
        let norm = Normalizer { stats, gamma, beta };
        Ok((cpu_bn::fwd(xv, call, &norm), norm))
    })??;
    let out = Tensor::from_vec(y, a.x.shape().clone())?;
    Ok((
        out,
        Saved::Cpu {
            x: a.x.detach(),
            norm,
        },
    ))
}

fn cpu_bwd(
    x: &Tensor,
    norm: &Normalizer,
    call: &BnCall,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (dx, dgamma, dbeta) =
        dy.with_values(|dyv| x.with_values(|xv| cpu_bn::bwd(dyv, xv, call, norm)))??;
    Ok((
        Tensor::from_vec(dx, x.shape().clone())?,
        Tensor::from_vec(dgamma, [call.c])?,
        Tensor::from_vec(dbeta, [call.c])?,
    ))
}

/// The CUDA launchers' arguments for `call` on `dev`: its activation, bf16 output in bf16
/// storage mode.
fn cuda_launch<'a>(
    call: &BnCall,
    dev: &CudaDevice,
    (gamma, beta): (&'a CudaSlice<f32>, &'a CudaSlice<f32>),
    shape: cuda_bn::BnShape,
    eps: f32,
) -> cuda_bn::BnLaunch<'a> {
    let mode = cuda_bn::BnMode {
        activation: call.activation,
        output: cuda_bn::OutputFormat::for_device(dev),
    };
    cuda_bn::BnLaunch {
        gamma,
        beta,
        shape,
        eps,
        mode,
    }
}

/// The CUDA forward, `None` where it hands the call to the host (see [`fwd`]).
fn cuda_fwd(a: &BnArgs, call: &BnCall) -> Result<Option<(Tensor, Saved)>> {
    if !(a.running_mean.is_cuda() && a.running_var.is_cuda()) {
        return Ok(None);
    }
    let shape = cuda_bn::BnShape {
        n: call.n,
        c: call.c,
        plane: call.plane,
    };
    let p = a.p;
    let (x, gamma, beta) = (a.x, a.gamma, a.beta);
    if !p.training {
        if is_grad_enabled() && [x, gamma, beta].iter().any(|t| t.requires_grad()) {
            return Ok(None);
        }
        let y = x.with_cuda_values(|dev, xs| {
            gamma.with_cuda(|_, gs| {
                beta.with_cuda(|_, bs| {
                    a.running_mean.with_cuda(|_, rm| {
                        a.running_var.with_cuda(|_, rv| {
                            let launch = cuda_launch(call, dev, (gs, bs), shape, p.eps);
                            cuda_bn::fwd_eval(dev, xs, &launch, (rm, rv))
                        })
                    })
                })
            })
        })?;
        let out = Tensor::from_cuda_buffer(y, x.shape().clone())?;
        return Ok(Some((out, Saved::CudaEval)));
    }
    // x may be a bf16 conv output (bf16 storage mode): read as stored, here and in backward.
    let res = x.with_cuda_values(|dev, xs| {
        gamma.with_cuda(|_, gs| {
            beta.with_cuda(|_, bs| {
                a.running_mean.with_cuda_mut(|_, rm| {
                    a.running_var.with_cuda_mut(|_, rv| {
                        let launch = cuda_launch(call, dev, (gs, bs), shape, p.eps);
                        cuda_bn::fwd_train(dev, xs, &launch, (rm, rv), p.momentum)
                    })
                })
            })
        })
    })?;
    let Some(Some((y, stats))) = res else {
        return Ok(None);
    };
    // In bf16 storage mode y is bf16 (the next conv reads it as is); backward never reads it.
    let out = Tensor::from_cuda_buffer(y, x.shape().clone())?;
    let saved = Saved::Cuda {
        x: x.detach(),
        gamma: gamma.detach(),
        beta: beta.detach(),
        stats,
    };
    Ok(Some((out, saved)))
}

fn cuda_bwd(
    [x, gamma, beta]: [&Tensor; 3],
    stats: &cuda_bn::BnSaved,
    call: &BnCall,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let shape = cuda_bn::BnShape {
        n: call.n,
        c: call.c,
        plane: call.plane,
    };
    let (dx, dgamma, dbeta) = dy.with_cuda(|dev, dys| {
        x.with_cuda_values(|_, xv| {
            gamma.with_cuda(|_, gv| {
                beta.with_cuda(|_, bv| {
                    // eps is unused by the backward (the saved inverse std holds it).
                    let launch = cuda_launch(call, dev, (gv, bv), shape, 0.0);
                    cuda_bn::bwd_train(dev, dys, xv, &launch, stats)
                })
            })
        })
    })?;
    Ok((
        Tensor::from_cuda(dx, x.shape().clone())?,
        Tensor::from_cuda(dgamma, [call.c])?,
        Tensor::from_cuda(dbeta, [call.c])?,
    ))
}
