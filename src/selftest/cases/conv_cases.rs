//! Parity cases: conv2d through the device's paths (im2col + cuBLAS, the same with a bf16
//! input, depthwise) and the direct kernels.

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

pub(super) fn conv_cases() -> Vec<Case> {
    const FAST: &[&str] = &["conv2d_im2col_f32", "conv2d_col2im_f32"];
    vec![
        conv_case(
            "conv2d im2col+sgemm 3x3 s1 p1",
            FAST,
            ConvPath::Fast,
            Conv2dGeometry::square([3, 5, 11, 9], 7, (3, 1, 1, 1)),
        ),
        conv_case(
            "conv2d im2col+sgemm 3x3 s2 p1",
            FAST,
            ConvPath::Fast,
            Conv2dGeometry::square([1, 3, 13, 10], 4, (3, 2, 1, 1)),
        ),
        conv_case(
            "conv2d im2col+sgemm 3x3 s1 g2",
            FAST,
            ConvPath::Fast,
            Conv2dGeometry::square([3, 4, 7, 9], 6, (3, 1, 1, 2)),
        ),
        // 1×1, stride 1: cuBLAS alone (no custom kernel).
        conv_case(
            "conv2d 1x1 sgemm only",
            &[],
            ConvPath::Fast,
            Conv2dGeometry::square([2, 6, 7, 9], 5, (1, 1, 0, 1)),
        ),
        // Over 2,048 output positions: the weight gradient's reduction split in slices
        // (47² = 2,209 = 1,105 + 1,104, and 48² = 2,304 = 2·1,152).
        conv_case(
            "conv2d 3x3 sliced weight gradient",
            FAST,
            ConvPath::Fast,
            Conv2dGeometry::square([2, 3, 47, 47], 8, (3, 1, 1, 1)),
        ),
        conv_case(
            "conv2d 1x1 sliced weight gradient",
            &[],
            ConvPath::Fast,
            Conv2dGeometry::square([2, 6, 48, 48], 5, (1, 1, 0, 1)),
        ),
        conv_case(
            "conv2d depthwise 3x3 s2 p1",
            &[
                "conv2d_dw_fwd_f32",
                "conv2d_dw_bwd_input_f32",
                "conv2d_dw_bwd_weight_f32",
            ],
            ConvPath::Fast,
            Conv2dGeometry::square([3, 6, 9, 11], 6, (3, 2, 1, 6)),
        ),
        conv_case(
            "conv2d direct 3x3 s2 p1 g2",
            &[
                "conv2d_fwd_f32",
                "conv2d_bwd_input_f32",
                "conv2d_bwd_weight_f32",
            ],
            ConvPath::Direct,
            Conv2dGeometry::square([3, 4, 9, 7], 6, (3, 2, 1, 2)),
        ),
        conv_case(
            "conv2d direct 5x5 s1 p2",
            &[
                "conv2d_fwd_f32",
                "conv2d_bwd_input_f32",
                "conv2d_bwd_weight_f32",
            ],
            ConvPath::Direct,
            Conv2dGeometry::square([1, 3, 8, 11], 5, (5, 1, 2, 1)),
        ),
    ]
}
