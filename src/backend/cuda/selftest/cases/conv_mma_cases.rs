//! Parity cases: the implicit-GEMM tensor-core convs (`kernels/conv2d_mma.cu`) against the CPU,
//! in bf16 product mode (compared by norm at 1e-2, as the other bf16 rows). The shapes cross
//! the kernels' tile edges: more than one 64-row and 128-column tile, reductions that are not a
//! multiple of 32, and weight gradients split over several blocks.

use super::*;

const FWD_F32: &str = "conv2d_mma_fwd_f32_to_f32";
const DX: &str = "conv2d_mma_bwd_input_f32";
const DW_F32: &str = "conv2d_mma_bwd_weight_f32";
const DW_BF16: &str = "conv2d_mma_bwd_weight_bf16";
const SUM: &str = "conv2d_mma_sum_splits";

fn mma_case(
    name: &'static str,
    kernels: &'static [&'static str],
    (x_bf16, y_bf16): (bool, bool),
    g: Conv2dGeometry,
) -> Case {
    in_bf16(
        name,
        kernels,
        conv_case("", &[], ConvPath::Implicit { x_bf16, y_bf16 }, g),
    )
}

pub(super) fn conv_mma_cases() -> Vec<Case> {
    vec![
        // 70 output channels: two row tiles; 2·11·13 = 286 positions: three column tiles;
        // R = 45 (fwd) and 630 (dx); the weight gradient in 2 splits of 160 positions.
        mma_case(
            "conv2d mma 3x3 s1 p1 (f32 in, f32 out)",
            &[FWD_F32, DX, DW_F32, SUM],
            (false, false),
            geo(2, 5, 11, 13, 70, 3, 1, 1, 1),
        ),
        mma_case(
            "conv2d mma 3x3 s2 p1 (bf16 in, bf16 out)",
            &[
                "f32_to_bf16",
                "bf16_to_f32",
                "conv2d_mma_fwd_bf16_to_bf16",
                DX,
                DW_BF16,
            ],
            (true, true),
            geo(3, 6, 13, 11, 9, 3, 2, 1, 1),
        ),
        mma_case(
            "conv2d mma 1x1 (bf16 in, f32 out)",
            &["conv2d_mma_fwd_bf16_to_f32", DX, DW_BF16],
            (true, false),
            geo(2, 12, 9, 7, 10, 1, 1, 0, 1),
        ),
        // dx: 2·40·36 = 2,880 input positions (23 column tiles); dw: 720 positions in 3 splits.
        mma_case(
            "conv2d mma 5x5 s2 p2 (f32 in, bf16 out)",
            &["conv2d_mma_fwd_f32_to_bf16", DX, DW_F32, SUM],
            (false, true),
            geo(2, 3, 40, 36, 6, 5, 2, 2, 1),
        ),
    ]
}
