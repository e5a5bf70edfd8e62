//! Parity cases: matrix products on cuBLAS, in f32 and in the reduced product modes (bf16,
//! TF32) that conv and matmul rows run in.

use super::*;

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
            conv_case(
                "",
                &[],
                ConvPath::Fast,
                Conv2dGeometry::square([3, 6, 13, 11], 9, (3, 2, 1, 1)),
            ),
        ),
        in_bf16(
            "conv2d bf16 1x1 (pointwise gemm)",
            &["f32_to_bf16"],
            conv_case(
                "",
                &[],
                ConvPath::Fast,
                Conv2dGeometry::square([2, 12, 9, 7], 10, (1, 1, 0, 1)),
            ),
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
                Conv2dGeometry::square([3, 6, 13, 11], 9, (3, 2, 1, 1)),
            ),
        ),
        in_bf16(
            "conv2d bf16-stored input 1x1",
            &["f32_to_bf16"],
            conv_case(
                "",
                &[],
                ConvPath::Bf16Input,
                Conv2dGeometry::square([2, 12, 9, 7], 10, (1, 1, 0, 1)),
            ),
        ),
        in_bf16(
            "conv2d bf16-stored input depthwise 3x3",
            &["f32_to_bf16", "bf16_to_f32", "conv2d_dw_fwd_f32"],
            conv_case(
                "",
                &[],
                ConvPath::Bf16Input,
                Conv2dGeometry::square([2, 8, 11, 9], 8, (3, 1, 1, 8)),
            ),
        ),
        in_bf16(
            "conv2d bf16 3x3 sliced weight gradient",
            &["f32_to_bf16", "conv2d_im2col_bf16", "conv2d_col2im_f32"],
            conv_case(
                "",
                &[],
                ConvPath::Fast,
                Conv2dGeometry::square([2, 3, 47, 47], 8, (3, 1, 1, 1)),
            ),
        ),
    ]
}
