//! Parity cases: conv2d (im2col + cuBLAS, depthwise, direct), matmul, batch norm, pooling.

use super::*;
use crate::backend::cuda::bf16::{self, CudaValues};

// ---- conv2d ----

#[derive(Clone, Copy, PartialEq)]
pub(super) enum ConvPath {
    Fast,
    /// The fast path with x in bf16 storage (rounded to bf16 bits before the call).
    Bf16Input,
    Direct,
    /// The implicit-GEMM tensor-core kernels (conv2d_mma.cu, conv2d_tf32.cu) called directly, x in bf16
    /// storage or f32, y written as bf16 bits or f32.
    Implicit {
        x_bf16: bool,
        y_bf16: bool,
    },
}

#[allow(clippy::too_many_arguments)]
pub(super) fn conv_case(
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
        measure: Measure::PerElement,
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
            let x16 = bf16::to_bf16(dev, &x, x.len())?;
            let ((y, dx, dw), ms) = timed(dev, || match path {
                ConvPath::Bf16Input => Ok((
                    // bf16 storage end to end: the output as bf16 bits too, widened here.
                    conv2d::fwd(dev, CudaValues::Bf16(&x16), &w, &g, true)?.into_f32(dev)?,
                    conv2d::bwd_input(dev, &dy, &w, &g)?,
                    conv2d::bwd_weight(dev, &dy, CudaValues::Bf16(&x16), &g)?,
                )),
                ConvPath::Fast => Ok((
                    conv2d::fwd(dev, CudaValues::F32(&x), &w, &g, false)?.into_f32(dev)?,
                    conv2d::bwd_input(dev, &dy, &w, &g)?,
                    conv2d::bwd_weight(dev, &dy, CudaValues::F32(&x), &g)?,
                )),
                ConvPath::Implicit { x_bf16, y_bf16 } => {
                    use conv2d::implicit_gemm;
                    let xv = if x_bf16 {
                        CudaValues::Bf16(&x16)
                    } else {
                        CudaValues::F32(&x)
                    };
                    Ok((
                        implicit_gemm::fwd(dev, xv, &w, &g, y_bf16)?.into_f32(dev)?,
                        implicit_gemm::bwd_input(dev, &dy, &w, &g)?,
                        implicit_gemm::bwd_weight(dev, &dy, xv, &g)?,
                    ))
                }
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
pub(super) fn geo(
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

pub(super) fn conv_cases() -> Vec<Case> {
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
        // Over 2,048 output positions: the weight gradient's reduction split in slices
        // (47² = 2,209 = 1,105 + 1,104, and 48² = 2,304 = 2·1,152).
        conv_case(
            "conv2d 3x3 sliced weight gradient",
            FAST,
            ConvPath::Fast,
            geo(2, 3, 47, 47, 8, 3, 1, 1, 1),
        ),
        conv_case(
            "conv2d 1x1 sliced weight gradient",
            &[],
            ConvPath::Fast,
            geo(2, 6, 48, 48, 5, 1, 1, 0, 1),
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

pub(super) fn gemm_case(name: &'static str, sh: gemm::GemmShape) -> Case {
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
        measure: Measure::PerElement,
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

/// The odd-sized batched product the gemm cases vary (3 × [37×29]·[29×41], shared rhs).
fn gemm_base() -> gemm::GemmShape {
    gemm::GemmShape {
        batch: 3,
        m: 37,
        n: 41,
        k: 29,
        trans_a: false,
        trans_b: false,
        a_batched: true,
        b_batched: false,
    }
}

pub(super) fn gemm_cases() -> Vec<Case> {
    let base = gemm_base();
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

// ---- bf16 products (MatrixPrecision::Bf16) ----

/// `case` with its GPU side run in bf16 product mode (restored to f32 afterwards, also on
/// error), compared by norm at 1e-2: bf16 operands carry 8-bit mantissas, so single elements
/// near zero after cancellation differ by more than any per-element bound worth having, while
/// the norm error is ~3e-3 for these sizes.
pub(super) fn in_bf16(name: &'static str, kernels: &'static [&'static str], case: Case) -> Case {
    in_precision(MatrixPrecision::Bf16, 1e-2, (name, kernels), case)
}

/// `case` with its GPU side in product mode `p` (restored to f32 afterwards, also on error),
/// compared by norm at `tol`.
pub(super) fn in_precision(
    p: MatrixPrecision,
    tol: f64,
    (name, kernels): (&'static str, &'static [&'static str]),
    case: Case,
) -> Case {
    let gpu = case.gpu;
    Case {
        name,
        kernels,
        tol,
        measure: Measure::RelativeNorm,
        gpu: Box::new(move |dev, inp| {
            dev.set_matrix_precision(p)?;
            let result = gpu(dev, inp);
            dev.set_matrix_precision(MatrixPrecision::F32)?;
            result
        }),
        ..case
    }
}

pub(super) fn bf16_cases() -> Vec<Case> {
    let base = gemm_base();
    vec![
        in_bf16(
            "matmul bf16 aᵀ·b batched both",
            &["f32_to_bf16"],
            gemm_case(
                "",
                gemm::GemmShape {
                    trans_a: true,
                    b_batched: true,
                    ..base
                },
            ),
        ),
        in_bf16(
            "conv2d bf16 im2col+gemm 3x3 s2 p1",
            &["f32_to_bf16", "conv2d_im2col_bf16", "conv2d_col2im_f32"],
            conv_case("", &[], ConvPath::Fast, geo(3, 6, 13, 11, 9, 3, 2, 1, 1)),
        ),
        in_bf16(
            "conv2d bf16 1x1 (pointwise gemm)",
            &["f32_to_bf16"],
            conv_case("", &[], ConvPath::Fast, geo(2, 12, 9, 7, 10, 1, 1, 0, 1)),
        ),
        // bf16 storage: the input as bf16 bits, read as they are (columns copied bit for bit,
        // the pointwise product taking x itself); the depthwise kernels get it widened.
        in_bf16(
            "conv2d bf16-stored input 3x3 s2 p1",
            &[
                "f32_to_bf16",
                "conv2d_im2col_bf16_of_bf16",
                "conv2d_col2im_f32",
            ],
            conv_case(
                "",
                &[],
                ConvPath::Bf16Input,
                geo(3, 6, 13, 11, 9, 3, 2, 1, 1),
            ),
        ),
        in_bf16(
            "conv2d bf16-stored input 1x1",
            &["f32_to_bf16"],
            conv_case(
                "",
                &[],
                ConvPath::Bf16Input,
                geo(2, 12, 9, 7, 10, 1, 1, 0, 1),
            ),
        ),
        in_bf16(
            "conv2d bf16-stored input depthwise 3x3",
            &["f32_to_bf16", "bf16_to_f32", "conv2d_dw_fwd_f32"],
            conv_case(
                "",
                &[],
                ConvPath::Bf16Input,
                geo(2, 8, 11, 9, 8, 3, 1, 1, 8),
            ),
        ),
        in_bf16(
            "conv2d bf16 3x3 sliced weight gradient",
            &["f32_to_bf16", "conv2d_im2col_bf16", "conv2d_col2im_f32"],
            conv_case("", &[], ConvPath::Fast, geo(2, 3, 47, 47, 8, 3, 1, 1, 1)),
        ),
    ]
}

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
            if !training {
                let (y, ms) = timed(dev, || {
                    bn::fwd_eval(dev, x, &gamma, &beta, &rm, &rv, s, eps, (silu, out_bf16))
                })?;
                return Ok(out(vec![("y", dev.download(&y.into_f32(dev)?)?)], ms));
            }
            let ((y, dx, dgamma, dbeta), ms) = timed(dev, || {
                let (y, saved) = bn::fwd_train(
                    dev,
                    x,
                    &gamma,
                    &beta,
                    &mut rm,
                    &mut rv,
                    s,
                    momentum,
                    eps,
                    (silu, out_bf16),
                )?;
                let (dx, dg, db) = bn::bwd_train(dev, &dy, x, &gamma, &beta, &saved, s, silu)?;
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
