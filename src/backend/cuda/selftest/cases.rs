//! The parity cases. Each case: seeded inputs (odd sizes), the CPU reference, the GPU launcher.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{timed, timed_cpu, Case, Inputs, Outputs};
use crate::backend::cpu::conv2d::{self as cpu_conv, Conv2dGeometry};
use crate::backend::cuda::{
    batch_norm as bn, conv2d, elementwise as ew, gemm, loss, optim, pool, reduce, similarity,
    simota, softmax,
};
use crate::detect::loss::{box_loss, BoxLossKind};
use crate::detect::simota::{iou_cxcywh, simota_assign, SimOtaConfig, SimOtaInput, SimOtaMode};
use crate::ops;
use crate::tensor::Tensor;
use crate::Result;

// ---- helpers ----

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Values in ±[lo, hi) with random signs (away from zero: divisors, kinks).
fn signed_away(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.random_range(lo..hi);
            if rng.random::<bool>() {
                v
            } else {
                -v
            }
        })
        .collect()
}

fn tensor(v: &[f32], dims: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), dims.to_vec())?.with_requires_grad(true))
}

/// Forward through `f`, then the gradients of `Σ g·f(inputs)` with respect to every input.
fn with_grads(
    inputs: &[Tensor],
    g: &[f32],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let y = f(inputs)?;
    let gt = Tensor::from_vec(g.to_vec(), y.shape().clone())?;
    ops::mul(&y, &gt)?.sum_all()?.backward()?;
    let grads = inputs
        .iter()
        .map(|t| {
            t.grad()
                .map(|g| g.to_vec())
                .unwrap_or_else(|| vec![0.0; t.numel()])
        })
        .collect();
    Ok((y.to_vec(), grads))
}

fn out(values: Vec<(&'static str, Vec<f32>)>, ms: f64) -> Outputs {
    Outputs { values, ms }
}

fn dims_str(d: &[usize]) -> String {
    format!("{d:?}")
}

// ---- unary ----

fn unary_case(
    name: &'static str,
    kernels: &'static [&'static str],
    op: ew::Unary,
    lo: f32,
    hi: f32,
) -> Case {
    let dims = [3usize, 5, 7, 11];
    let n: usize = dims.iter().product();
    Case {
        name,
        kernels,
        shape: dims_str(&dims),
        tol: 1e-4,
        make: Box::new(move |rng| vec![uniform(rng, n, lo, hi), uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                with_grads(&[tensor(&inp[0], &dims)?], &inp[1], |t| match op {
                    ew::Unary::Silu => ops::silu(&t[0]),
                    ew::Unary::Sigmoid => ops::sigmoid(&t[0]),
                    ew::Unary::Relu => ops::relu(&t[0]),
                    ew::Unary::Exp => ops::exp(&t[0]),
                    ew::Unary::Log => ops::log(&t[0]),
                    ew::Unary::Sqrt => ops::sqrt(&t[0]),
                    ew::Unary::Abs => ops::abs(&t[0]),
                    ew::Unary::Clamp { min, max } => ops::clamp(&t[0], min, max),
                    ew::Unary::Pow(p) => ops::pow_scalar(&t[0], p),
                })
            })?;
            Ok(out(vec![("y", y), ("dx", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, dy) = (dev.upload(&inp[0])?, dev.upload(&inp[1])?);
            let ((y, dx), ms) = timed(dev, || {
                let y = ew::unary_fwd(dev, op, &x)?;
                let saved = if op.saves_output() { &y } else { &x };
                let dx = ew::unary_bwd(dev, op, &dy, saved)?;
                Ok((y, dx))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}

fn unary_cases() -> Vec<Case> {
    vec![
        // Logits up to ±30 (σ saturates; the stable forms must agree).
        unary_case(
            "silu",
            &["silu_fwd_f32", "silu_bwd_f32"],
            ew::Unary::Silu,
            -30.0,
            30.0,
        ),
        unary_case(
            "sigmoid",
            &["sigmoid_fwd_f32", "sigmoid_bwd_f32"],
            ew::Unary::Sigmoid,
            -30.0,
            30.0,
        ),
        unary_case(
            "relu",
            &["relu_fwd_f32", "relu_bwd_f32"],
            ew::Unary::Relu,
            -3.0,
            3.0,
        ),
        unary_case(
            "exp",
            &["exp_fwd_f32", "exp_bwd_f32"],
            ew::Unary::Exp,
            -5.0,
            5.0,
        ),
        unary_case(
            "log",
            &["log_fwd_f32", "log_bwd_f32"],
            ew::Unary::Log,
            0.01,
            10.0,
        ),
        unary_case(
            "sqrt",
            &["sqrt_fwd_f32", "sqrt_bwd_f32"],
            ew::Unary::Sqrt,
            0.01,
            10.0,
        ),
        unary_case(
            "abs",
            &["abs_fwd_f32", "abs_bwd_f32"],
            ew::Unary::Abs,
            -3.0,
            3.0,
        ),
        unary_case(
            "clamp [-0.5, 0.7]",
            &["clamp_fwd_f32", "clamp_bwd_f32"],
            ew::Unary::Clamp {
                min: -0.5,
                max: 0.7,
            },
            -2.0,
            2.0,
        ),
        unary_case(
            "pow 2.5",
            &["pow_fwd_f32", "pow_bwd_f32"],
            ew::Unary::Pow(2.5),
            0.1,
            3.0,
        ),
        unary_case(
            "pow 2",
            &["pow_fwd_f32", "pow_bwd_f32"],
            ew::Unary::Pow(2.0),
            -3.0,
            3.0,
        ),
    ]
}

// ---- binary ----

fn binary_cpu(op: ew::Binary, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match op {
        ew::Binary::Add => ops::add(a, b),
        ew::Binary::Sub => ops::sub(a, b),
        ew::Binary::Mul => ops::mul(a, b),
        ew::Binary::Div => ops::div(a, b),
    }
}

fn binary_case(
    name: &'static str,
    kernels: &'static [&'static str],
    op: ew::Binary,
    bcast: bool,
) -> Case {
    let a_dims: Vec<usize> = vec![2, 3, 5, 7];
    let b_dims: Vec<usize> = if bcast { vec![3, 1, 7] } else { a_dims.clone() };
    let (na, nb): (usize, usize) = (a_dims.iter().product(), b_dims.iter().product());
    let (ad, bd) = (a_dims.clone(), b_dims.clone());
    Case {
        name,
        kernels,
        shape: format!("{a_dims:?} ∘ {b_dims:?}"),
        tol: 1e-4,
        make: Box::new(move |rng| {
            vec![
                uniform(rng, na, -2.0, 2.0),
                signed_away(rng, nb, 0.5, 2.0),
                uniform(rng, na, -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let (a, b) = (tensor(&inp[0], &ad)?, tensor(&inp[1], &bd)?);
            if op == ew::Binary::Div && !bcast {
                let ((y, g), ms) =
                    timed_cpu(|| with_grads(&[a, b], &inp[2], |t| ops::div(&t[0], &t[1])))?;
                return Ok(out(
                    vec![("y", y), ("ga", g[0].clone()), ("gb", g[1].clone())],
                    ms,
                ));
            }
            let (y, ms) = timed_cpu(|| binary_cpu(op, &a, &b))?;
            Ok(out(vec![("y", y.to_vec())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (a, b, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            if bcast {
                let ((y, _), ms) =
                    timed(dev, || ew::binary_bcast(dev, op, &a, &a_dims, &b, &b_dims))?;
                return Ok(out(vec![("y", dev.download(&y)?)], ms));
            }
            if op == ew::Binary::Div {
                let ((y, ga, gb), ms) = timed(dev, || {
                    let y = ew::binary(dev, op, &a, &b)?;
                    let (ga, gb) = ew::div_bwd(dev, &g, &a, &b)?;
                    Ok((y, ga, gb))
                })?;
                return Ok(out(
                    vec![
                        ("y", dev.download(&y)?),
                        ("ga", dev.download(&ga)?),
                        ("gb", dev.download(&gb)?),
                    ],
                    ms,
                ));
            }
            let (y, ms) = timed(dev, || ew::binary(dev, op, &a, &b))?;
            Ok(out(vec![("y", dev.download(&y)?)], ms))
        }),
    }
}

fn binary_cases() -> Vec<Case> {
    use ew::Binary::*;
    vec![
        binary_case("add", &["add_f32"], Add, false),
        binary_case("sub", &["sub_f32"], Sub, false),
        binary_case("mul", &["mul_f32"], Mul, false),
        binary_case("div (+ backward)", &["div_f32", "div_bwd_f32"], Div, false),
        binary_case("add broadcast", &["add_bcast_f32"], Add, true),
        binary_case("sub broadcast", &["sub_bcast_f32"], Sub, true),
        binary_case("mul broadcast", &["mul_bcast_f32"], Mul, true),
        binary_case("div broadcast", &["div_bcast_f32"], Div, true),
    ]
}

// ---- reduce ----

fn reduce_cases() -> Vec<Case> {
    let n = 100_003usize;
    let dims = vec![3usize, 5, 7, 9];
    let total: usize = dims.iter().product();
    let mut v = vec![Case {
        name: "sum_all",
        kernels: &["sum_partial_f32"],
        shape: format!("[{n}]"),
        // 1e-3: 1e5 mixed-sign values; the CPU sums in f64, the GPU in an f32 tree, and the
        // result is a small difference of large partial sums.
        tol: 1e-3,
        make: Box::new(move |rng| vec![uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let (s, ms) = timed_cpu(|| ops::sum_all(&Tensor::from_vec(inp[0].clone(), [n])?))?;
            Ok(out(vec![("sum", s.to_vec())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let x = dev.upload(&inp[0])?;
            let (s, ms) = timed(dev, || reduce::sum_all(dev, &x))?;
            Ok(out(vec![("sum", dev.download(&s)?)], ms))
        }),
    }];
    for (name, axes, kept) in [
        ("sum over axes 0,2", vec![0isize, 2], vec![1usize, 5, 1, 9]),
        ("sum over axes 1,3", vec![1, 3], vec![3, 1, 7, 1]),
    ] {
        let (d1, d2) = (dims.clone(), dims.clone());
        let kept2 = kept.clone();
        v.push(Case {
            name,
            kernels: &["sum_keepdim_f32"],
            shape: format!("{dims:?} -> {kept:?}"),
            tol: 1e-4,
            make: Box::new(move |rng| vec![uniform(rng, total, -1.0, 1.0)]),
            cpu: Box::new(move |inp| {
                let (s, ms) = timed_cpu(|| {
                    ops::sum(&Tensor::from_vec(inp[0].clone(), d1.clone())?, &axes, true)
                })?;
                Ok(out(vec![("sum", s.to_vec())], ms))
            }),
            gpu: Box::new(move |dev, inp| {
                let x = dev.upload(&inp[0])?;
                let (s, ms) = timed(dev, || reduce::sum_keepdim(dev, &x, &d2, &kept2))?;
                Ok(out(vec![("sum", dev.download(&s)?)], ms))
            }),
        });
    }
    v
}

// ---- conv2d ----

#[derive(Clone, Copy, PartialEq)]
enum ConvPath {
    Fast,
    Direct,
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    name: &'static str,
    kernels: &'static [&'static str],
    path: ConvPath,
    g: Conv2dGeometry,
) -> Case {
    Case {
        name,
        kernels,
        shape: format!(
            "x[{},{},{},{}] w[{},{},{},{}] s{} p{} g{}",
            g.batch,
            g.in_channels,
            g.in_h,
            g.in_w,
            g.out_channels,
            g.in_channels / g.groups,
            g.kernel_h,
            g.kernel_w,
            g.stride,
            g.padding,
            g.groups
        ),
        tol: 1e-4,
        make: Box::new(move |rng| {
            vec![
                uniform(rng, g.x_len(), -1.0, 1.0),
                uniform(rng, g.w_len(), -1.0, 1.0),
                uniform(rng, g.y_len(), -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let ((y, dx, dw), ms) = timed_cpu(|| {
                Ok((
                    cpu_conv::fwd(&inp[0], &inp[1], &g),
                    cpu_conv::bwd_input(&inp[2], &inp[1], &g),
                    cpu_conv::bwd_weight(&inp[2], &inp[0], &g),
                ))
            })?;
            Ok(out(vec![("y", y), ("dx", dx), ("dw", dw)], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, w, dy) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((y, dx, dw), ms) = timed(dev, || match path {
                ConvPath::Fast => Ok((
                    conv2d::fwd(dev, &x, &w, &g)?,
                    conv2d::bwd_input(dev, &dy, &w, &g)?,
                    conv2d::bwd_weight(dev, &dy, &x, &g)?,
                )),
                ConvPath::Direct => Ok((
                    conv2d::direct::fwd(dev, &x, &w, &g)?,
                    conv2d::direct::bwd_input(dev, &dy, &w, &g)?,
                    conv2d::direct::bwd_weight(dev, &dy, &x, &g)?,
                )),
            })?;
            Ok(out(
                vec![
                    ("y", dev.download(&y)?),
                    ("dx", dev.download(&dx)?),
                    ("dw", dev.download(&dw)?),
                ],
                ms,
            ))
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn geo(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    ks: usize,
    s: usize,
    p: usize,
    groups: usize,
) -> Conv2dGeometry {
    Conv2dGeometry {
        batch: n,
        in_channels: c,
        in_h: h,
        in_w: w,
        out_channels: k,
        kernel_h: ks,
        kernel_w: ks,
        stride: s,
        padding: p,
        groups,
    }
}

fn conv_cases() -> Vec<Case> {
    const FAST: &[&str] = &["conv2d_im2col_f32", "conv2d_col2im_f32"];
    vec![
        conv_case(
            "conv2d im2col+sgemm 3x3 s1 p1",
            FAST,
            ConvPath::Fast,
            geo(3, 5, 11, 9, 7, 3, 1, 1, 1),
        ),
        conv_case(
            "conv2d im2col+sgemm 3x3 s2 p1",
            FAST,
            ConvPath::Fast,
            geo(1, 3, 13, 10, 4, 3, 2, 1, 1),
        ),
        conv_case(
            "conv2d im2col+sgemm 3x3 s1 g2",
            FAST,
            ConvPath::Fast,
            geo(3, 4, 7, 9, 6, 3, 1, 1, 2),
        ),
        // 1×1, stride 1: cuBLAS alone (no custom kernel).
        conv_case(
            "conv2d 1x1 sgemm only",
            &[],
            ConvPath::Fast,
            geo(2, 6, 7, 9, 5, 1, 1, 0, 1),
        ),
        conv_case(
            "conv2d depthwise 3x3 s2 p1",
            &[
                "conv2d_dw_fwd_f32",
                "conv2d_dw_bwd_input_f32",
                "conv2d_dw_bwd_weight_f32",
            ],
            ConvPath::Fast,
            geo(3, 6, 9, 11, 6, 3, 2, 1, 6),
        ),
        conv_case(
            "conv2d direct 3x3 s2 p1 g2",
            &[
                "conv2d_fwd_f32",
                "conv2d_bwd_input_f32",
                "conv2d_bwd_weight_f32",
            ],
            ConvPath::Direct,
            geo(3, 4, 9, 7, 6, 3, 2, 1, 2),
        ),
        conv_case(
            "conv2d direct 5x5 s1 p2",
            &[
                "conv2d_fwd_f32",
                "conv2d_bwd_input_f32",
                "conv2d_bwd_weight_f32",
            ],
            ConvPath::Direct,
            geo(1, 3, 8, 11, 5, 5, 1, 2, 1),
        ),
    ]
}

// ---- matrix products (cuBLAS) ----

fn gemm_case(name: &'static str, sh: gemm::GemmShape) -> Case {
    let na = if sh.a_batched { sh.batch } else { 1 } * sh.m * sh.k;
    let nb = if sh.b_batched { sh.batch } else { 1 } * sh.k * sh.n;
    Case {
        name,
        kernels: &[],
        shape: format!(
            "{}x[{}x{}]{}·[{}x{}]{}",
            sh.batch,
            sh.m,
            sh.k,
            if sh.trans_a { "ᵀ" } else { "" },
            sh.k,
            sh.n,
            if sh.trans_b { "ᵀ" } else { "" }
        ),
        tol: 1e-4,
        make: Box::new(move |rng| vec![uniform(rng, na, -1.0, 1.0), uniform(rng, nb, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            use crate::backend::cpu::gemm::{sgemm, MatRef};
            let (c, ms) = timed_cpu(|| {
                let mut c = vec![0f32; sh.batch * sh.m * sh.n];
                for i in 0..sh.batch {
                    let a = &inp[0][if sh.a_batched { i * sh.m * sh.k } else { 0 }..];
                    let b = &inp[1][if sh.b_batched { i * sh.k * sh.n } else { 0 }..];
                    let am = if sh.trans_a {
                        MatRef::transposed(a, sh.m)
                    } else {
                        MatRef::row_major(a, sh.k)
                    };
                    let bm = if sh.trans_b {
                        MatRef::transposed(b, sh.k)
                    } else {
                        MatRef::row_major(b, sh.n)
                    };
                    let ci = &mut c[i * sh.m * sh.n..(i + 1) * sh.m * sh.n];
                    sgemm(sh.m, sh.n, sh.k, am, bm, ci, sh.n, false, 1);
                }
                Ok(c)
            })?;
            Ok(out(vec![("c", c)], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (a, b) = (dev.upload(&inp[0])?, dev.upload(&inp[1])?);
            let (c, ms) = timed(dev, || gemm::matmul(dev, &a, &b, &sh))?;
            Ok(out(vec![("c", dev.download(&c)?)], ms))
        }),
    }
}

fn gemm_cases() -> Vec<Case> {
    let base = gemm::GemmShape {
        batch: 3,
        m: 37,
        n: 41,
        k: 29,
        trans_a: false,
        trans_b: false,
        a_batched: true,
        b_batched: false,
    };
    vec![
        gemm_case("matmul batched, shared rhs", base),
        // linear: x·Wᵀ
        gemm_case(
            "matmul a·bᵀ (linear)",
            gemm::GemmShape {
                batch: 1,
                trans_b: true,
                ..base
            },
        ),
        gemm_case(
            "matmul aᵀ·b batched both",
            gemm::GemmShape {
                trans_a: true,
                b_batched: true,
                ..base
            },
        ),
    ]
}

// ---- batch norm ----

fn bn_case(
    name: &'static str,
    kernels: &'static [&'static str],
    silu: bool,
    training: bool,
) -> Case {
    let dims = [3usize, 5, 7, 9];
    let s = bn::BnShape {
        n: 3,
        c: 5,
        plane: 63,
    };
    let (momentum, eps) = (0.03f32, 1e-3f32);
    Case {
        name,
        kernels,
        shape: dims_str(&dims),
        tol: 1e-4,
        make: Box::new(move |rng| {
            vec![
                uniform(rng, s.len(), -2.0, 3.0),
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
            if !training {
                let (y, ms) = timed(dev, || {
                    bn::fwd_eval(dev, &x, &gamma, &beta, &rm, &rv, s, eps, silu)
                })?;
                return Ok(out(vec![("y", dev.download(&y)?)], ms));
            }
            let ((y, dx, dgamma, dbeta), ms) = timed(dev, || {
                let (y, saved) = bn::fwd_train(
                    dev, &x, &gamma, &beta, &mut rm, &mut rv, s, momentum, eps, silu,
                )?;
                let (dx, dg, db) = bn::bwd_train(dev, &dy, &x, &gamma, &beta, &saved, s, silu)?;
                Ok((y, dx, dg, db))
            })?;
            Ok(out(
                vec![
                    ("y", dev.download(&y)?),
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

fn bn_cases() -> Vec<Case> {
    vec![
        bn_case(
            "batch_norm train fwd+bwd",
            &[
                "batch_norm_stats_f32",
                "batch_norm_update_running_f32",
                "batch_norm_fwd_f32",
                "batch_norm_bwd_reduce_f32",
                "batch_norm_bwd_f32",
            ],
            false,
            true,
        ),
        bn_case("batch_norm eval fwd", &["batch_norm_fwd_f32"], false, false),
        bn_case(
            "bn+silu fused train fwd+bwd",
            &[
                "batch_norm_stats_f32",
                "bn_silu_fwd_f32",
                "bn_silu_bwd_reduce_f32",
                "bn_silu_bwd_f32",
            ],
            true,
            true,
        ),
        bn_case("bn+silu fused eval fwd", &["bn_silu_fwd_f32"], true, false),
    ]
}

// ---- pooling ----

#[derive(Clone, Copy, PartialEq)]
enum PoolKind {
    Max,
    Avg,
    Up,
}

fn pool_case(
    name: &'static str,
    kernels: &'static [&'static str],
    kind: PoolKind,
    k: usize,
    st: usize,
    p: usize,
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
        make: Box::new(move |rng| vec![uniform(rng, n, -2.0, 2.0), uniform(rng, ny, -1.0, 1.0)]),
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
            let ((y, dx), ms) = timed(dev, || match kind {
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

fn pool_cases() -> Vec<Case> {
    vec![
        pool_case(
            "max_pool2d k3 s2 p1",
            &["max_pool2d_fwd_f32", "max_pool2d_bwd_f32"],
            PoolKind::Max,
            3,
            2,
            1,
        ),
        // YOLOX's SPP windows overlap heavily (k5 s1 p2): many outputs share an input.
        pool_case(
            "max_pool2d k5 s1 p2 (SPP)",
            &["max_pool2d_fwd_f32", "max_pool2d_bwd_f32"],
            PoolKind::Max,
            5,
            1,
            2,
        ),
        pool_case(
            "avg_pool2d k3 s2 p1",
            &["avg_pool2d_fwd_f32", "avg_pool2d_bwd_f32"],
            PoolKind::Avg,
            3,
            2,
            1,
        ),
        pool_case(
            "upsample nearest x2",
            &["upsample2x_fwd_f32", "upsample2x_bwd_f32"],
            PoolKind::Up,
            1,
            1,
            0,
        ),
    ]
}

// ---- softmax ----

fn softmax_case(name: &'static str, kernels: &'static [&'static str], log: bool) -> Case {
    let dims = [3usize, 7, 5];
    let (outer, len, inner) = (3usize, 7usize, 5usize);
    let n = outer * len * inner;
    Case {
        name,
        kernels,
        shape: format!("{dims:?} axis 1"),
        tol: 1e-4,
        make: Box::new(move |rng| vec![uniform(rng, n, -20.0, 20.0), uniform(rng, n, -1.0, 1.0)]),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                with_grads(&[tensor(&inp[0], &dims)?], &inp[1], |t| {
                    if log {
                        ops::log_softmax(&t[0], 1)
                    } else {
                        ops::softmax(&t[0], 1)
                    }
                })
            })?;
            Ok(out(vec![("y", y), ("dx", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, dy) = (dev.upload(&inp[0])?, dev.upload(&inp[1])?);
            let ((y, dx), ms) = timed(dev, || {
                let y = softmax::fwd(dev, &x, outer, len, inner, log)?;
                let dx = softmax::bwd(dev, &dy, &y, outer, len, inner, log)?;
                Ok((y, dx))
            })?;
            Ok(out(
                vec![("y", dev.download(&y)?), ("dx", dev.download(&dx)?)],
                ms,
            ))
        }),
    }
}

// ---- losses ----

fn bce_case(name: &'static str, weighted: bool) -> Case {
    let n = 1001usize;
    Case {
        name,
        kernels: &["bce_with_logits_fwd_f32", "bce_with_logits_bwd_f32"],
        shape: format!("[{n}]"),
        tol: 1e-4,
        make: Box::new(move |rng| {
            let mut x = uniform(rng, n, -8.0, 8.0);
            // Extreme logits (±300): the stable form must not overflow on either side.
            for (i, v) in x.iter_mut().enumerate().take(20) {
                *v = if i % 2 == 0 {
                    300.0 - i as f32
                } else {
                    -300.0 + i as f32
                };
            }
            vec![
                x,
                uniform(rng, n, 0.0, 1.0),
                uniform(rng, n, 0.1, 2.0),
                uniform(rng, n, -1.0, 1.0),
            ]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                let mut ts = vec![tensor(&inp[0], &[n])?, tensor(&inp[1], &[n])?];
                if weighted {
                    ts.push(tensor(&inp[2], &[n])?);
                }
                with_grads(&ts, &inp[3], |t| {
                    ops::bce_with_logits(&t[0], &t[1], t.get(2))
                })
            })?;
            let mut v = vec![("y", y), ("dx", g[0].clone()), ("dt", g[1].clone())];
            if weighted {
                v.push(("dw", g[2].clone()));
            }
            Ok(out(v, ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (x, t, w, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
                dev.upload(&inp[3])?,
            );
            let wo = weighted.then_some(&w);
            let ((y, (dx, dt, dw)), ms) = timed(dev, || {
                Ok((
                    loss::bce_with_logits_fwd(dev, &x, &t, wo)?,
                    loss::bce_with_logits_bwd(dev, &g, &x, &t, wo)?,
                ))
            })?;
            let mut v = vec![
                ("y", dev.download(&y)?),
                ("dx", dev.download(&dx)?),
                ("dt", dev.download(&dt)?),
            ];
            if let Some(dw) = dw {
                v.push(("dw", dev.download(&dw)?));
            }
            Ok(out(v, ms))
        }),
    }
}

/// Random xyxy target boxes and predictions around them: some close (IoU > 0.5, CIoU's α gate
/// open), some far (no overlap).
fn box_pairs(rng: &mut ChaCha8Rng, n: usize) -> (Vec<f32>, Vec<f32>) {
    let (mut p, mut t) = (Vec::with_capacity(4 * n), Vec::with_capacity(4 * n));
    for i in 0..n {
        let (x1, y1) = (
            rng.random_range(0.0..200.0f32),
            rng.random_range(0.0..200.0f32),
        );
        let (w, h) = (
            rng.random_range(4.0..60.0f32),
            rng.random_range(4.0..60.0f32),
        );
        t.extend_from_slice(&[x1, y1, x1 + w, y1 + h]);
        let spread = if i % 3 == 0 { 0.6 } else { 0.15 };
        let j = |rng: &mut ChaCha8Rng, s: f32| rng.random_range(-spread..spread) * s;
        let (px1, py1) = (x1 + j(rng, w), y1 + j(rng, h));
        let (pw, ph) = (
            w * rng.random_range(0.6..1.5f32),
            h * rng.random_range(0.6..1.5f32),
        );
        p.extend_from_slice(&[px1, py1, px1 + pw, py1 + ph]);
    }
    (p, t)
}

fn box_case(name: &'static str, kind: BoxLossKind, k: loss::BoxLossKernel) -> Case {
    let n = 257usize;
    Case {
        name,
        kernels: &["box_loss_fwd_bwd_f32"],
        shape: format!("[{n}, 4] xyxy"),
        tol: 1e-4,
        make: Box::new(move |rng| {
            let (p, t) = box_pairs(rng, n);
            vec![p, t, uniform(rng, n, -1.0, 1.0)]
        }),
        cpu: Box::new(move |inp| {
            let ((l, g), ms) = timed_cpu(|| {
                let target = Tensor::from_vec(inp[1].clone(), [n, 4])?;
                with_grads(&[tensor(&inp[0], &[n, 4])?], &inp[2], |t| {
                    box_loss(&t[0], &target, kind)
                })
            })?;
            Ok(out(vec![("loss", l), ("dpred", g[0].clone())], ms))
        }),
        gpu: Box::new(move |dev, inp| {
            let (p, t, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((l, d), ms) = timed(dev, || loss::box_loss_fwd_bwd(dev, &p, &t, &g, k))?;
            Ok(out(
                vec![("loss", dev.download(&l)?), ("dpred", dev.download(&d)?)],
                ms,
            ))
        }),
    }
}

// ---- SimOTA ----

/// Anchors of a 160×96 input at strides 8, 16, 32 (315 anchors), 3 classes, 5 GTs; predictions
/// are boxes near the GTs for a third of the anchors.
fn simota_inputs(rng: &mut ChaCha8Rng) -> Inputs {
    let (iw, ih) = (160usize, 96usize);
    let mut grids = Vec::new();
    let mut strides = Vec::new();
    for s in [8usize, 16, 32] {
        for gy in 0..ih / s {
            for gx in 0..iw / s {
                grids.extend_from_slice(&[gx as f32, gy as f32]);
                strides.push(s as f32);
            }
        }
    }
    let a = strides.len();
    let g = 5usize;
    let c = 3usize;
    let mut gt = Vec::new();
    let mut gt_cls = Vec::new();
    for i in 0..g {
        let (w, h) = (
            rng.random_range(10.0..50.0f32),
            rng.random_range(10.0..40.0f32),
        );
        let (cx, cy) = (
            rng.random_range(w / 2.0..iw as f32 - w / 2.0),
            rng.random_range(h / 2.0..ih as f32 - h / 2.0),
        );
        gt.extend_from_slice(&[cx, cy, w, h]);
        gt_cls.push((i % c) as f32);
    }
    let mut pred = Vec::new();
    for i in 0..a {
        let (ax, ay) = (
            (grids[2 * i] + 0.5) * strides[i],
            (grids[2 * i + 1] + 0.5) * strides[i],
        );
        if i % 3 == 0 {
            let k = rng.random_range(0..g);
            let b = &gt[4 * k..4 * k + 4];
            pred.extend_from_slice(&[
                b[0] + rng.random_range(-4.0..4.0f32),
                b[1] + rng.random_range(-4.0..4.0f32),
                b[2] * rng.random_range(0.7..1.3f32),
                b[3] * rng.random_range(0.7..1.3f32),
            ]);
        } else {
            pred.extend_from_slice(&[
                ax,
                ay,
                rng.random_range(4.0..40.0f32),
                rng.random_range(4.0..40.0f32),
            ]);
        }
    }
    vec![
        pred,
        uniform(rng, a * c, -4.0, 4.0),
        uniform(rng, a, -4.0, 4.0),
        grids,
        strides,
        gt,
        gt_cls,
        vec![c as f32],
    ]
}

fn boxes4(v: &[f32]) -> Vec<[f32; 4]> {
    v.chunks_exact(4)
        .map(|b| [b[0], b[1], b[2], b[3]])
        .collect()
}

/// The cost matrix `[G, A]` as src/detect/simota.rs computes it (+inf off the candidates).
fn simota_cost_cpu(inp: &Inputs, cfg: &SimOtaConfig) -> Vec<f32> {
    let (pred, cls, obj, grids, strides) = (boxes4(&inp[0]), &inp[1], &inp[2], &inp[3], &inp[4]);
    let gt = boxes4(&inp[5]);
    let c = inp[7][0] as usize;
    let a = strides.len();
    let sig = crate::ops::sigmoid_scalar;
    let logc = |v: f32| v.ln().max(-100.0);
    let penalty = if cfg.mode == SimOtaMode::Release {
        100_000.0f32
    } else {
        1_000_000.0
    };
    let mut cost = vec![f32::INFINITY; gt.len() * a];
    for ai in 0..a {
        let s = strides[ai];
        let (xc, yc) = ((grids[2 * ai] + 0.5) * s, (grids[2 * ai + 1] + 0.5) * s);
        let r = cfg.center_radius * s;
        let prior = |b: &[f32; 4]| -> (bool, bool) {
            match cfg.mode {
                SimOtaMode::Release => {
                    let ib = (xc - (b[0] - b[2] / 2.0))
                        .min((b[0] + b[2] / 2.0) - xc)
                        .min(yc - (b[1] - b[3] / 2.0))
                        .min((b[1] + b[3] / 2.0) - yc)
                        > 0.0;
                    let ic = (xc - (b[0] - r))
                        .min((b[0] + r) - xc)
                        .min(yc - (b[1] - r))
                        .min((b[1] + r) - yc)
                        > 0.0;
                    (ib || ic, ib && ic)
                }
                SimOtaMode::Centre2023 => {
                    let ic = (xc - b[0]).abs() < r && (yc - b[1]).abs() < r;
                    (ic, ic)
                }
            }
        };
        if !gt.iter().any(|b| prior(b).0) {
            continue;
        }
        let o = sig(obj[ai]);
        let p: Vec<f32> = (0..c).map(|k| (sig(cls[ai * c + k]) * o).sqrt()).collect();
        let neg: f32 = p.iter().map(|&pk| -logc(1.0 - pk)).sum();
        for (gi, b) in gt.iter().enumerate() {
            let k = inp[6][gi] as usize;
            let cls_cost = neg + logc(1.0 - p[k]) - logc(p[k]);
            let v = iou_cxcywh(b, &pred[ai]);
            let np = if prior(b).1 { 0.0 } else { penalty };
            cost[gi * a + ai] = cls_cost + 3.0 * -(v + 1e-8).ln() + np;
        }
    }
    cost
}

/// The cost matrix as three outputs, so that each is judged at its own scale: the costs without
/// the prior's penalty (~1..30), the penalised ones (~1e5..1e6), and the candidate pattern
/// (1 where finite). Entries outside each part are 0 on both sides.
fn split_cost(cost: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let part = |keep: &dyn Fn(f32) -> bool| -> Vec<f32> {
        cost.iter()
            .map(|&c| if keep(c) { c } else { 0.0 })
            .collect()
    };
    (
        part(&|c| c.is_finite() && c < 5e4),
        part(&|c| c.is_finite() && c >= 5e4),
        cost.iter().map(|c| c.is_finite() as u8 as f32).collect(),
    )
}

fn simota_case(name: &'static str, cfg: SimOtaConfig) -> Case {
    let prior = match cfg.mode {
        SimOtaMode::Release => simota::SimOtaPrior::Release,
        SimOtaMode::Centre2023 => simota::SimOtaPrior::Centre2023,
    };
    Case {
        name,
        kernels: &[
            "simota_cost_f32",
            "simota_dynamic_k_f32",
            "simota_resolve_f32",
        ],
        shape: "A 315 (160x96, s8/16/32), G 5, C 3".into(),
        tol: 1e-4,
        make: Box::new(simota_inputs),
        cpu: Box::new(move |inp| {
            let ((cost, asg, a), ms) = timed_cpu(|| {
                let pred = boxes4(&inp[0]);
                let grids: Vec<(f32, f32)> = inp[3].chunks_exact(2).map(|g| (g[0], g[1])).collect();
                let gt = boxes4(&inp[5]);
                let gt_classes: Vec<usize> = inp[6].iter().map(|&k| k as usize).collect();
                let si = SimOtaInput {
                    pred_boxes_cxcywh: &pred,
                    cls_logits: &inp[1],
                    obj_logits: &inp[2],
                    grids: &grids,
                    strides: &inp[4],
                    gt_boxes_cxcywh: &gt,
                    gt_classes: &gt_classes,
                    num_classes: inp[7][0] as usize,
                };
                Ok((
                    simota_cost_cpu(inp, &cfg),
                    simota_assign(&si, &cfg)?,
                    pred.len(),
                ))
            })?;
            // matched GT per anchor (−1 background) and its IoU, in the GPU's layout.
            let mut matched = vec![-1f32; a];
            let mut piou = vec![0f32; a];
            for (j, ai) in asg.fg_indices().into_iter().enumerate() {
                matched[ai] = asg.matched_gt[j] as f32;
                piou[ai] = asg.pred_ious[j];
            }
            let (plain, pen, cand) = split_cost(&cost);
            Ok(out(
                vec![
                    ("cost", plain),
                    ("cost_pen", pen),
                    ("cand", cand),
                    ("matched", matched),
                    ("pred_iou", piou),
                ],
                ms,
            ))
        }),
        gpu: Box::new(move |dev, inp| {
            let a = inp[4].len();
            let up = |i: usize| dev.upload(&inp[i]);
            let (pred, cls, obj, grids, strides) = (up(0)?, up(1)?, up(2)?, up(3)?, up(4)?);
            let gt = boxes4(&inp[5]);
            let gt_classes: Vec<usize> = inp[6].iter().map(|&k| k as usize).collect();
            let di = simota::SimOtaDeviceInput {
                pred_boxes: &pred,
                cls_logits: &cls,
                obj_logits: &obj,
                grids: &grids,
                strides: &strides,
                num_anchors: a,
                num_classes: inp[7][0] as usize,
            };
            let ((m, asg), ms) = timed(dev, || {
                let m = simota::cost(dev, &di, &gt, &gt_classes, prior, cfg.center_radius)?;
                let asg = simota::assign_from_cost(dev, &m)?;
                Ok((m, asg))
            })?;
            let matched: Vec<f32> = dev
                .download(&asg.matched)?
                .into_iter()
                .map(|m| m as f32)
                .collect();
            let (plain, pen, cand) = split_cost(&dev.download(&m.cost)?);
            Ok(out(
                vec![
                    ("cost", plain),
                    ("cost_pen", pen),
                    ("cand", cand),
                    ("matched", matched),
                    ("pred_iou", dev.download(&asg.pred_iou)?),
                ],
                ms,
            ))
        }),
    }
}

// ---- similarity ----

fn cosine_case() -> Case {
    let dims = [3usize, 16, 5];
    let (outer, len, inner) = (3usize, 16usize, 5usize);
    let n = outer * len * inner;
    Case {
        name: "cosine_similarity fwd+bwd",
        kernels: &["cosine_similarity_fwd_f32", "cosine_similarity_bwd_f32"],
        shape: format!("{dims:?} axis 1"),
        tol: 1e-4,
        make: Box::new(move |rng| {
            let mut a = uniform(rng, n, -1.0, 1.0);
            // One all-zero vector: its norm is clamped at eps (the clamped gradient rule).
            for i in 0..len {
                a[i * inner] = 0.0;
            }
            let mut g = uniform(rng, outer * inner, -1.0, 1.0);
            // Its gradient is b/(eps·|b|) ~ 1e8·g: a tiny g keeps it at the scale of the others,
            // so the error floor (1% of the largest value) stays meaningful for every element.
            g[0] = 1e-8;
            vec![a, uniform(rng, n, -1.0, 1.0), g]
        }),
        cpu: Box::new(move |inp| {
            let ((y, g), ms) = timed_cpu(|| {
                with_grads(
                    &[tensor(&inp[0], &dims)?, tensor(&inp[1], &dims)?],
                    &inp[2],
                    |t| ops::cosine_similarity(&t[0], &t[1], 1),
                )
            })?;
            Ok(out(
                vec![("y", y), ("da", g[0].clone()), ("db", g[1].clone())],
                ms,
            ))
        }),
        gpu: Box::new(move |dev, inp| {
            let (a, b, g) = (
                dev.upload(&inp[0])?,
                dev.upload(&inp[1])?,
                dev.upload(&inp[2])?,
            );
            let ((y, (da, db)), ms) = timed(dev, || {
                Ok((
                    similarity::cosine_similarity_fwd(dev, &a, &b, outer, len, inner)?,
                    similarity::cosine_similarity_bwd(dev, &g, &a, &b, outer, len, inner)?,
                ))
            })?;
            Ok(out(
                vec![
                    ("y", dev.download(&y)?),
                    ("da", dev.download(&da)?),
                    ("db", dev.download(&db)?),
                ],
                ms,
            ))
        }),
    }
}

// ---- optimizers ----

#[derive(Clone, Copy, PartialEq)]
enum OptKind {
    Sgd,
    Adam,
    AdamW,
    Ema,
}

const STEPS: u32 = 3;

/// The PyTorch update rules, plain loops (src/train/optim.rs does not exist yet).
fn optim_cpu(kind: OptKind, p: &mut [f32], grads: &[Vec<f32>], s1: &mut [f32], s2: &mut [f32]) {
    let (lr, mom, wd) = (0.01f32, 0.9f32, 5e-4f32);
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

fn optim_case(name: &'static str, kernels: &'static [&'static str], kind: OptKind) -> Case {
    let n = 1001usize;
    Case {
        name,
        kernels,
        shape: format!("[{n}] x {STEPS} steps"),
        tol: 1e-4,
        make: Box::new(move |rng| {
            let mut v = vec![uniform(rng, n, -1.0, 1.0), uniform(rng, n, -1.0, 1.0)];
            for _ in 0..STEPS {
                v.push(uniform(rng, n, -1.0, 1.0));
            }
            v
        }),
        cpu: Box::new(move |inp| {
            let mut p = inp[0].clone();
            // EMA: s1 starts as the EMA copy; the others start at zero.
            let mut s1 = if kind == OptKind::Ema {
                inp[1].clone()
            } else {
                vec![0.0; n]
            };
            let mut s2 = vec![0.0; n];
            let (_, ms) = timed_cpu(|| {
                optim_cpu(kind, &mut p, &inp[2..], &mut s1, &mut s2);
                Ok(())
            })?;
            Ok(match kind {
                OptKind::Ema => out(vec![("ema", s1)], ms),
                _ => out(vec![("p", p), ("state1", s1)], ms),
            })
        }),
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

/// The whole table, in the order it prints.
pub fn cases() -> Vec<Case> {
    let mut v = unary_cases();
    v.extend(binary_cases());
    v.extend(reduce_cases());
    v.extend(conv_cases());
    v.extend(gemm_cases());
    v.extend(bn_cases());
    v.extend(pool_cases());
    v.push(softmax_case(
        "softmax fwd+bwd",
        &["softmax_fwd_f32", "softmax_bwd_f32"],
        false,
    ));
    v.push(softmax_case(
        "log_softmax fwd+bwd",
        &["log_softmax_fwd_f32", "log_softmax_bwd_f32"],
        true,
    ));
    v.push(bce_case("bce_with_logits", false));
    v.push(bce_case("bce_with_logits weighted", true));
    v.push(box_case(
        "box loss IoU",
        BoxLossKind::Iou,
        loss::BoxLossKernel::Iou,
    ));
    v.push(box_case(
        "box loss GIoU",
        BoxLossKind::Giou,
        loss::BoxLossKernel::Giou,
    ));
    v.push(box_case(
        "box loss CIoU (mmdet)",
        BoxLossKind::Ciou,
        loss::BoxLossKernel::Ciou,
    ));
    v.push(box_case(
        "box loss CIoU (torchvision)",
        BoxLossKind::CiouTorchvision,
        loss::BoxLossKernel::CiouTorchvision,
    ));
    v.push(simota_case("simota release r2.5", SimOtaConfig::default()));
    v.push(simota_case("simota 2023 r1.5", SimOtaConfig::centre_2023()));
    v.push(cosine_case());
    v.push(optim_case(
        "sgd nesterov",
        &["sgd_nesterov_f32"],
        OptKind::Sgd,
    ));
    v.push(optim_case("adam", &["adam_f32"], OptKind::Adam));
    v.push(optim_case("adamw", &["adam_f32"], OptKind::AdamW));
    v.push(optim_case("ema", &["ema_f32"], OptKind::Ema));
    v
}
