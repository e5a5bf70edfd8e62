//! Parity cases: batch norm (with and without the fused SiLU, f32 and bf16 storage) and
//! pooling.

use super::*;
use crate::backend::cuda::bf16::{self, CudaValues};
use crate::backend::Activation;

// ---- batch norm ----

/// Storage formats of a BN row's input and output.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum BnFormat {
    F32,
    /// f32 input, bf16 output (a BN after a conv whose output is f32, in bf16 mode).
    F32ToBf16,
    /// bf16 input (values a bf16 can hold, on both sides) and output: bf16 storage.
    Bf16,
}

pub(super) fn bn_case(
    name: &'static str,
    kernels: &'static [&'static str],
    silu: bool,
    training: bool,
    format: BnFormat,
    dims: [usize; 4],
) -> Case {
    let out_bf16 = format != BnFormat::F32;
    let s = bn::BnShape {
        n: dims[0],
        c: dims[1],
        plane: dims[2] * dims[3],
    };
    let (momentum, eps) = (0.03f32, 1e-3f32);
    Case {
        name,
        kernels,
        shape: dims_str(&dims),
        // bf16 output: y rounded to bf16 (8 significant bits: relative error <= 2^-8); the rest is f32.
        tol: if out_bf16 { 1e-2 } else { 1e-4 },
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut x = uniform(rng, s.len(), -2.0, 3.0);
            if format == BnFormat::Bf16 {
                x.iter_mut()
                    .for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
            }
            vec![
                x,
                uniform(rng, s.c, 0.5, 1.5),
                uniform(rng, s.c, -0.5, 0.5),
                uniform(rng, s.c, -0.2, 0.2),
                uniform(rng, s.c, 0.5, 2.0),
                uniform(rng, s.len(), -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let rm = Tensor::from_vec(inp[3].clone(), [s.c])?;
            let rv = Tensor::from_vec(inp[4].clone(), [s.c])?;
            let p = ops::BatchNormParams {
                training,
                momentum,
                eps,
            };
            let ((y, g), ms) = timed_cpu(|| {
                let ts = [
                    tensor(&inp[0], &dims)?,
                    tensor(&inp[1], &[s.c])?,
                    tensor(&inp[2], &[s.c])?,
                ];
                with_grads(&ts, &inp[5], |t| {
                    let y = ops::batch_norm2d(&t[0], &t[1], &t[2], &rm, &rv, p)?;
                    if silu {
                        ops::silu(&y)
                    } else {
                        Ok(y)
                    }
                })
            })?;
            if !training {
                return Ok(out(vec![("y", y)], ms));
            }
            Ok(out(
                vec![
                    ("y", y),
                    ("run_mean", rm.to_vec()),
                    ("run_var", rv.to_vec()),
                    ("dx", g[0].clone()),
                    ("dgamma", g[1].clone()),
                    ("dbeta", g[2].clone()),
                ],
                ms,
            ))
        }),
        gpu: Box::new(move |dev, inp| {
            let up = |i: usize| dev.upload(&inp[i]);
            let (x, gamma, beta, mut rm, mut rv, dy) =
                (up(0)?, up(1)?, up(2)?, up(3)?, up(4)?, up(5)?);
            let x16 = bf16::to_bf16(dev, &x, x.len())?;
            let x = match format {
                BnFormat::Bf16 => CudaValues::Bf16(&x16),
                _ => CudaValues::F32(&x),
            };
            let activation = if silu {
                Activation::Silu
            } else {
                Activation::Identity
            };
            let output = if out_bf16 {
                bn::OutputFormat::Bf16
            } else {
                bn::OutputFormat::F32
            };
            let mode = bn::BnMode { activation, output };
            let launch = bn::BnLaunch {
                gamma: &gamma,
                beta: &beta,
                shape: s,
                eps,
                mode,
            };
            if !training {
                let (y, ms) = timed(dev, || bn::fwd_eval(dev, x, &launch, (&rm, &rv)))?;
                return Ok(out(vec![("y", dev.download(&y.into_f32(dev)?)?)], ms));
            }
            let ((y, dx, dgamma, dbeta), ms) = timed(dev, || {
                let (y, saved) = bn::fwd_train(dev, x, &launch, (&mut rm, &mut rv), momentum)?;
                let (dx, dg, db) = bn::bwd_train(dev, &dy, x, &launch, &saved)?;
                Ok((y, dx, dg, db))
            })?;
            Ok(out(
                vec![
                    ("y", dev.download(&y.into_f32(dev)?)?),
                    ("run_mean", dev.download(&rm)?),
                    ("run_var", dev.download(&rv)?),
                    ("dx", dev.download(&dx)?),
                    ("dgamma", dev.download(&dgamma)?),
                    ("dbeta", dev.download(&dbeta)?),
                ],
                ms,
            ))
        }),
    }
}

pub(super) fn bn_cases() -> Vec<Case> {
    const TRAIN: &[&str] = &[
        "batch_norm_stats_partial_f32",
        "batch_norm_stats_finalize_f32",
        "batch_norm_update_running_f32",
        "batch_norm_fwd_f32",
        "batch_norm_bwd_partial_f32",
        "batch_norm_sums_finalize_f32",
        "batch_norm_bwd_f32",
    ];
    const SILU_TRAIN: &[&str] = &[
        "batch_norm_stats_partial_f32",
        "batch_norm_stats_finalize_f32",
        "bn_silu_fwd_f32",
        "bn_silu_bwd_partial_f32",
        "batch_norm_sums_finalize_f32",
        "bn_silu_bwd_f32",
    ];
    // Planes below and above the 256-thread block (the kernels walk a channel differently in the
    // two cases), and 20,435 values per channel: three reduction chunks of 8,192, their edges
    // inside images of 4,087.
    let (small, large, chunked) = ([3, 5, 7, 9], [2, 3, 17, 19], [5, 3, 61, 67]);
    vec![
        bn_case(
            "batch_norm train fwd+bwd",
            TRAIN,
            false,
            true,
            BnFormat::F32,
            small,
        ),
        bn_case(
            "batch_norm train, plane > 256",
            TRAIN,
            false,
            true,
            BnFormat::F32,
            large,
        ),
        bn_case(
            "batch_norm train, several chunks",
            TRAIN,
            false,
            true,
            BnFormat::F32,
            chunked,
        ),
        bn_case(
            "bn+silu train, several chunks",
            SILU_TRAIN,
            true,
            true,
            BnFormat::F32,
            chunked,
        ),
        bn_case(
            "batch_norm eval fwd",
            &["batch_norm_fwd_f32"],
            false,
            false,
            BnFormat::F32,
            small,
        ),
        bn_case(
            "bn+silu fused train fwd+bwd",
            SILU_TRAIN,
            true,
            true,
            BnFormat::F32,
            small,
        ),
        bn_case(
            "bn+silu train, plane > 256",
            SILU_TRAIN,
            true,
            true,
            BnFormat::F32,
            large,
        ),
        bn_case(
            "bn+silu fused eval fwd",
            &["bn_silu_fwd_f32"],
            true,
            false,
            BnFormat::F32,
            small,
        ),
        // bf16 storage: the forwards writing y as bf16 bits, from f32 or bf16 inputs, and the
        // statistics and backward reading bf16 inputs.
        bn_case(
            "bn+silu train, bf16 output",
            &["bn_silu_fwd_f32_to_bf16"],
            true,
            true,
            BnFormat::F32ToBf16,
            large,
        ),
        bn_case(
            "bn+silu train, bf16 input and output",
            &[
                "batch_norm_stats_partial_bf16",
                "bn_silu_fwd_bf16",
                "bn_silu_bwd_partial_bf16",
                "bn_silu_bwd_bf16",
            ],
            true,
            true,
            BnFormat::Bf16,
            chunked,
        ),
        bn_case(
            "batch_norm train, bf16 input and output",
            &[
                "batch_norm_stats_partial_bf16",
                "batch_norm_fwd_bf16",
                "batch_norm_bwd_partial_bf16",
                "batch_norm_bwd_bf16",
            ],
            false,
            true,
            BnFormat::Bf16,
            small,
        ),
        bn_case(
            "batch_norm eval, bf16 output",
            &["batch_norm_fwd_f32_to_bf16"],
            false,
            false,
            BnFormat::F32ToBf16,
            small,
        ),
    ]
}

// ---- pooling ----

#[derive(Clone, Copy, PartialEq)]
pub(super) enum PoolKind {
    Max,
    Avg,
    Up,
}

pub(super) fn pool_case(
    name: &'static str,
    kernels: &'static [&'static str],
    kind: PoolKind,
    (k, st, p): (usize, usize, usize),
    bf16_input: bool,
) -> Case {
    let dims = [2usize, 3, 9, 11];
    let g = pool::PoolGeometry {
        planes: 6,
        h: 9,
        w: 11,
        kernel: k,
        stride: st,
        padding: p,
    };
    let n = g.x_len();
    let ny = match kind {
        PoolKind::Up => 4 * n,
        _ => g.y_len(),
    };
    Case {
        name,
        kernels,
        shape: format!("{dims:?} k{k} s{st} p{p}"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut x = uniform(rng, n, -2.0, 2.0);
            if bf16_input {
                // Values a bf16 tensor can hold, so both sides pool the same numbers.
                x.iter_mut()
                    .for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
            }
            vec![x, uniform(rng, ny, -1.0, 1.0)]
        }),
        cpu: Box::new(move |inp| {
            let params = ops::Pool2dParams {
                kernel: k,
                stride: st,
                padding: p,
            };
            let ((y, gr), ms) = timed_cpu(|| {
                with_grads(&[tensor(&inp[0], &dims)?], &inp[1], |t| match kind {
                    PoolKind::Max => ops::max_pool2d(&t[0], params),
                    PoolKind::Avg => ops::avg_pool2d(&t[0], params),
                    PoolKind::Up => ops::upsample_nearest2x(&t[0]),
                })
            })?;
            Ok(out(vec![("y", y), ("dx", gr[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, dy) = (dev.upload(&inp[0])?, dev.upload(&inp[1])?);
            let x16 = bf16::to_bf16(dev, &x, x.len())?;
            let ((y, dx), ms) = timed(dev, || match kind {
                // bf16 storage: the forward on the bits, its output widened for the comparison.
                PoolKind::Max if bf16_input => {
                    let (y, arg) = pool::max_pool2d_fwd(dev, &x16, &g)?;
                    let y = bf16::to_f32(dev, &y, y.len())?;
                    Ok((y, pool::max_pool2d_bwd(dev, &dy, &arg, &g)?))
                }
                PoolKind::Up if bf16_input => {
                    let y = pool::upsample2x_fwd(dev, &x16, g.planes, g.h, g.w)?;
                    Ok((
                        bf16::to_f32(dev, &y, y.len())?,
                        pool::upsample2x_bwd(dev, &dy, g.planes, g.h, g.w)?,
                    ))
                }
                PoolKind::Max => {
                    let (y, arg) = pool::max_pool2d_fwd(dev, &x, &g)?;
                    Ok((y, pool::max_pool2d_bwd(dev, &dy, &arg, &g)?))
                }
                PoolKind::Avg => Ok((
                    pool::avg_pool2d_fwd(dev, &x, &g)?,
                    pool::avg_pool2d_bwd(dev, &dy, &g)?,
                )),
                PoolKind::Up => Ok((
                    pool::upsample2x_fwd(dev, &x, g.planes, g.h, g.w)?,
                    pool::upsample2x_bwd(dev, &dy, g.planes, g.h, g.w)?,
                )),
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}

pub(super) fn pool_cases() -> Vec<Case> {
    vec![
        pool_case(
            "max_pool2d k3 s2 p1",
            &["max_pool2d_fwd_f32", "max_pool2d_bwd_f32"],
            PoolKind::Max,
            (3, 2, 1),
            false,
        ),
        // YOLOX's SPP windows overlap heavily (k5 s1 p2): many outputs share an input.
        pool_case(
            "max_pool2d k5 s1 p2 (SPP)",
            &["max_pool2d_fwd_f32", "max_pool2d_bwd_f32"],
            PoolKind::Max,
            (5, 1, 2),
            false,
        ),
        pool_case(
            "avg_pool2d k3 s2 p1",
            &["avg_pool2d_fwd_f32", "avg_pool2d_bwd_f32"],
            PoolKind::Avg,
            (3, 2, 1),
            false,
        ),
        pool_case(
            "upsample nearest x2",
            &["upsample2x_fwd_f32", "upsample2x_bwd_f32"],
            PoolKind::Up,
            (1, 1, 0),
            false,
        ),
        // bf16 storage: the same on bf16 bits (inputs bf16 values on both sides: exact).
        pool_case(
            "max_pool2d k5 s1 p2, bf16 input",
            &["max_pool2d_fwd_bf16", "max_pool2d_bwd_f32"],
            PoolKind::Max,
            (5, 1, 2),
            true,
        ),
        pool_case(
            "upsample nearest x2, bf16 input",
            &["upsample2x_fwd_bf16", "upsample2x_bwd_f32"],
            PoolKind::Up,
            (1, 1, 0),
            true,
        ),
    ]
}
