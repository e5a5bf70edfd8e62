//! Parity cases: SGD-Nesterov, Adam/AdamW, EMA against the PyTorch formulas.

use super::*;
use crate::selftest::MakeFn;
use cudarc::driver::CudaSlice;

// ---- optimizers ----

#[derive(Clone, Copy, PartialEq)]
pub(super) enum OptKind {
    Sgd,
    Adam,
    AdamW,
    Ema,
}

pub(super) const STEPS: u32 = 3;

/// The PyTorch update rules, plain loops (independent of src/train/optim/).
fn optim_cpu(
    kind: OptKind,
    p: &mut [f32],
    grads: &[&[f32]],
    s1: &mut [f32],
    s2: &mut [f32],
    wd: f32,
) {
    let (lr, mom) = (0.01f32, 0.9f32);
    let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
    for step in 1..=STEPS {
        let g = &grads[(step - 1) as usize];
        match kind {
            OptKind::Sgd => {
                for i in 0..p.len() {
                    let d = g[i] + wd * p[i];
                    s1[i] = mom * s1[i] + d;
                    p[i] -= lr * (d + mom * s1[i]);
                }
            }
            OptKind::Adam | OptKind::AdamW => {
                let (bc1, bc2) = (1.0 - b1.powi(step as i32), 1.0 - b2.powi(step as i32));
                for i in 0..p.len() {
                    let mut d = g[i];
                    if kind == OptKind::AdamW {
                        p[i] *= 1.0 - lr * wd;
                    } else {
                        d += wd * p[i];
                    }
                    s1[i] = b1 * s1[i] + (1.0 - b1) * d;
                    s2[i] = b2 * s2[i] + (1.0 - b2) * d * d;
                    p[i] -= (lr / bc1) * s1[i] / (s2[i].sqrt() / bc2.sqrt() + eps);
                }
            }
            OptKind::Ema => {
                let decay = 0.9998 * (1.0 - (-(step as f32) / 2000.0).exp());
                for i in 0..p.len() {
                    s1[i] = decay * s1[i] + (1.0 - decay) * g[i];
                }
            }
        }
    }
}

/// A case's inputs: parameters, the EMA's starting copy, then one gradient per step, `n` values
/// each.
fn optim_inputs(n: usize) -> MakeFn {
    Box::new(move |rng| {
        let mut v = vec![uniform(rng, n, -1.0, 1.0), uniform(rng, n, -1.0, 1.0)];
        for _ in 0..STEPS {
            v.push(uniform(rng, n, -1.0, 1.0));
        }
        v
    })
}

/// [`optim_cpu`] over each `(range, weight decay)` segment of the inputs: the parameters and
/// first state after the steps, or the EMA (which starts as the EMA copy; the other states start
/// at zero).
fn optim_reference(
    kind: OptKind,
    inp: &Inputs,
    segments: &[(std::ops::Range<usize>, f32)],
) -> Result<Outputs> {
    let n = inp[0].len();
    let mut p = inp[0].clone();
    let mut s1 = if kind == OptKind::Ema {
        inp[1].clone()
    } else {
        vec![0.0; n]
    };
    let mut s2 = vec![0.0; n];
    let (_, ms) = timed_cpu(|| {
        for (r, wd) in segments {
            let grads: Vec<&[f32]> = inp[2..].iter().map(|g| &g[r.clone()]).collect();
            let (pp, ss1, ss2) = (&mut p[r.clone()], &mut s1[r.clone()], &mut s2[r.clone()]);
            optim_cpu(kind, pp, &grads, ss1, ss2, *wd);
        }
        Ok(())
    })?;
    Ok(match kind {
        OptKind::Ema => out(vec![("ema", s1)], ms),
        _ => out(vec![("p", p), ("state1", s1)], ms),
    })
}

pub(super) fn optim_case(
    name: &'static str,
    kernels: &'static [&'static str],
    kind: OptKind,
) -> Case {
    let n = 1001usize;
    Case {
        name,
        kernels,
        shape: format!("[{n}] x {STEPS} steps"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: optim_inputs(n),
        cpu: Box::new(move |inp| optim_reference(kind, inp, &[(0..n, 5e-4)])),
        gpu: Box::new(move |dev, inp| {
            let mut p = dev.upload(&inp[0])?;
            let mut s1 = if kind == OptKind::Ema {
                dev.upload(&inp[1])?
            } else {
                dev.zeros(n)?
            };
            let mut s2 = dev.zeros(n)?;
            let grads = inp[2..]
                .iter()
                .map(|g| dev.upload(g))
                .collect::<Result<Vec<_>>>()?;
            let (_, ms) = timed(dev, || {
                for (i, g) in grads.iter().enumerate() {
                    let step = i as u32 + 1;
                    match kind {
                        OptKind::Sgd => {
                            optim::sgd_nesterov(dev, &mut p, g, &mut s1, 0.01, 0.9, 5e-4)?
                        }
                        OptKind::Adam | OptKind::AdamW => {
                            let h = optim::AdamParams {
                                lr: 0.01,
                                beta1: 0.9,
                                beta2: 0.999,
                                eps: 1e-8,
                                weight_decay: 5e-4,
                                decoupled: kind == OptKind::AdamW,
                                step,
                            };
                            optim::adam(dev, &mut p, g, &mut s1, &mut s2, &h)?
                        }
                        OptKind::Ema => {
                            let decay = 0.9998 * (1.0 - (-(step as f32) / 2000.0).exp());
                            optim::ema(dev, &mut s1, g, decay)?
                        }
                    }
                }
                Ok(())
            })?;
            Ok(match kind {
                OptKind::Ema => out(vec![("ema", dev.download(&s1)?)], ms),
                _ => out(
                    vec![("p", dev.download(&p)?), ("state1", dev.download(&s1)?)],
                    ms,
                ),
            })
        }),
    }
}

// ---- multi-tensor forms ----

/// Tensor sizes of the multi-tensor rows: one element, a few, exactly one chunk (4,096), one
/// past it, and several chunks with a partial last one.
const MULTI_SIZES: [usize; 5] = [1, 37, 4096, 4097, 9001];
/// Weight decay per tensor (SGD): YOLOX's groups, with and without.
const MULTI_WD: [f32; 5] = [5e-4, 0.0, 5e-4, 0.0, 5e-4];

/// `sgd_nesterov_multi` / `ema_multi` over the tensors of [`MULTI_SIZES`] (inputs concatenated),
/// `STEPS` launches, against the one-tensor formulas per segment.
pub(super) fn optim_multi_case(
    name: &'static str,
    kernels: &'static [&'static str],
    kind: OptKind,
) -> Case {
    let n: usize = MULTI_SIZES.iter().sum();
    let segments = || {
        MULTI_SIZES.iter().scan(0usize, |at, &len| {
            let r = *at..*at + len;
            *at += len;
            Some(r)
        })
    };
    Case {
        name,
        kernels,
        shape: format!("{MULTI_SIZES:?} x {STEPS} steps"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: optim_inputs(n),
        cpu: Box::new(move |inp| {
            let segments: Vec<_> = segments().zip(MULTI_WD).collect();
            optim_reference(kind, inp, &segments)
        }),
        gpu: Box::new(move |dev, inp| {
            let split = |v: &[f32]| -> Result<Vec<CudaSlice<f32>>> {
                segments().map(|r| dev.upload(&v[r])).collect()
            };
            let mut p = split(&inp[0])?;
            let mut s1 = if kind == OptKind::Ema {
                split(&inp[1])?
            } else {
                split(&vec![0.0; n])?
            };
            let mut s2 = split(&vec![0.0; n])?;
            let grads = inp[2..]
                .iter()
                .map(|g| split(g))
                .collect::<Result<Vec<_>>>()?;
            let (_, ms) = timed(dev, || {
                for (i, g) in grads.iter().enumerate() {
                    let step = i as u32 + 1;
                    match kind {
                        OptKind::Ema => {
                            let decay = 0.9998 * (1.0 - (-(step as f32) / 2000.0).exp());
                            let mut ts: Vec<optim::EmaTensor> = s1
                                .iter_mut()
                                .zip(g)
                                .map(|(ema, src)| optim::EmaTensor { ema, src })
                                .collect();
                            optim::ema_multi(dev, &mut ts, decay)?;
                        }
                        OptKind::Adam | OptKind::AdamW => {
                            let mut ts: Vec<optim::AdamTensor> = p
                                .iter_mut()
                                .zip(g)
                                .zip(s1.iter_mut().zip(s2.iter_mut()))
                                .zip(MULTI_WD)
                                .map(|(((p, g), (m, v)), weight_decay)| optim::AdamTensor {
                                    p,
                                    g,
                                    m,
                                    v,
                                    weight_decay,
                                    step,
                                })
                                .collect();
                            let h = optim::AdamParams {
                                lr: 0.01,
                                beta1: 0.9,
                                beta2: 0.999,
                                eps: 1e-8,
                                weight_decay: 0.0,
                                decoupled: kind == OptKind::AdamW,
                                step,
                            };
                            optim::adam_multi(dev, &mut ts, &h)?;
                        }
                        OptKind::Sgd => {
                            let mut ts: Vec<optim::SgdTensor> = p
                                .iter_mut()
                                .zip(g)
                                .zip(s1.iter_mut())
                                .zip(MULTI_WD)
                                .map(|(((p, g), buf), weight_decay)| optim::SgdTensor {
                                    p,
                                    g,
                                    buf,
                                    weight_decay,
                                })
                                .collect();
                            optim::sgd_nesterov_multi(dev, &mut ts, 0.01, 0.9)?;
                        }
                    }
                }
                Ok(())
            })?;
            let join = |v: &[CudaSlice<f32>]| -> Result<Vec<f32>> {
                let mut all = Vec::with_capacity(n);
                for s in v {
                    all.extend(dev.download(s)?);
                }
                Ok(all)
            };
            Ok(match kind {
                OptKind::Ema => out(vec![("ema", join(&s1)?)], ms),
                _ => out(vec![("p", join(&p)?), ("state1", join(&s1)?)], ms),
            })
        }),
    }
}
