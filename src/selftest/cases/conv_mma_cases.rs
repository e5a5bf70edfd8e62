//! Parity cases: the implicit-GEMM tensor-core convs (`kernels/conv2d_mma.cu`,
//! `kernels/conv2d_tf32.cu`) against the CPU:
//! bf16 arithmetic in bf16 product mode (by norm at 1e-2, as the other bf16 rows), TF32 in TF32
//! mode (by norm at 2e-3: 11 significant bits), and the three-pass TF32 split in f32 mode
//! element by element at the f32 bound 1e-4. The shapes cross the kernels' tile edges: more
//! than one 64-row and 128-column tile, reductions that are not a multiple of the K tile, and
//! weight gradients split over several blocks; layers over 64 rows take 128-row tiles.

use super::*;

const FWD_F32: &str = "conv2d_mma_fwd_f32_to_f32";
const DX: &str = "conv2d_mma_bwd_input_f32";
const DW_F32: &str = "conv2d_mma_bwd_weight_f32";
const DW_BF16: &str = "conv2d_mma_bwd_weight_bf16";
const SUM: &str = "conv2d_mma_sum_splits";
const TF32_SUM: &str = "conv2d_tf32_sum_splits";

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

/// `case` in TF32 product mode, by norm at 2e-3 (11 significant bits).
fn in_tf32(name: &'static str, kernels: &'static [&'static str], case: Case) -> Case {
    in_precision(MatrixPrecision::Tf32, 2e-3, (name, kernels), case)
}

const TF32: &[&str] = &[
    "conv2d_tf32_fwd_f32",
    "conv2d_tf32_bwd_input_f32",
    "conv2d_tf32_bwd_weight_f32",
    TF32_SUM,
];
const TF32X3: &[&str] = &[
    "conv2d_tf32x3_fwd_f32",
    "conv2d_tf32x3_bwd_input_f32",
    "conv2d_tf32x3_bwd_weight_f32",
    TF32_SUM,
];
/// 70 output channels: the forward and weight gradient take 128-row tiles, the input gradient
/// (5 input channels) 64.
const TF32_K70: &[&str] = &[
    "conv2d_tf32_m128_fwd_f32",
    "conv2d_tf32_bwd_input_f32",
    "conv2d_tf32_m128_bwd_weight_f32",
    TF32_SUM,
];
const TF32X3_K70: &[&str] = &[
    "conv2d_tf32x3_m128_fwd_f32",
    "conv2d_tf32x3_bwd_input_f32",
    "conv2d_tf32x3_m128_bwd_weight_f32",
    TF32_SUM,
];
/// Tap-major shapes (C and K multiples of 32): 3×3 stride 1 with 64-row tiles, 198 positions
/// (two column tiles); 3×3 stride 2 with 128-row tiles and four input-gradient phases of 4, 2, 2
/// and 1 taps; 1×1 stride 2, one input-gradient phase with its tap and three left at zero.
fn taps_3x3() -> Conv2dGeometry {
    Conv2dGeometry::square([2, 32, 9, 11], 64, (3, 1, 1, 1))
}
fn taps_3x3_s2_tall() -> Conv2dGeometry {
    Conv2dGeometry::square([2, 160, 7, 6], 96, (3, 2, 1, 1))
}
fn taps_1x1_s2() -> Conv2dGeometry {
    Conv2dGeometry::square([2, 64, 9, 8], 32, (1, 2, 0, 1))
}
/// 66 input and 68 output channels: every pass on 128-row tiles, one split.
fn wide() -> Conv2dGeometry {
    Conv2dGeometry::square([2, 66, 5, 7], 68, (3, 1, 1, 1))
}
/// 140 input and 130 output channels, 3×3 stride 2: every pass on two 128-row tiles (the
/// second nearly empty), reductions of 1,260 (forward) and 130–520 (input gradient phases).
fn two_tall_tiles() -> Conv2dGeometry {
    Conv2dGeometry::square([2, 140, 5, 4], 130, (3, 2, 1, 1))
}
const BF16_M128: &[&str] = &[
    "conv2d_mma_m128_fwd_bf16_to_bf16",
    "conv2d_mma_m128_bwd_input_f32",
    "conv2d_mma_m128_bwd_weight_bf16",
];
const PACK_FWD: &str = "conv2d_mma_pack_fwd";
const PACK_DX: &str = "conv2d_mma_pack_bwd_input";
const TF32_PACK_FWD: &str = "conv2d_tf32_pack_fwd";
const TF32_PACK_DX: &str = "conv2d_tf32_pack_bwd_input";
const F32_IN_OUT: ConvPath = ConvPath::Implicit {
    x_bf16: false,
    y_bf16: false,
};

pub(super) fn conv_mma_cases() -> Vec<Case> {
    vec![
        // 70 output channels: two row tiles; 2·11·13 = 286 positions: three column tiles;
        // R = 45 (fwd) and 630 (dx); the weight gradient in 2 splits of 160 positions.
        mma_case(
            "conv2d mma 3x3 s1 p1 (f32 in, f32 out)",
            &[FWD_F32, DX, DW_F32, SUM],
            (false, false),
            Conv2dGeometry::square([2, 5, 11, 13], 70, (3, 1, 1, 1)),
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
            Conv2dGeometry::square([3, 6, 13, 11], 9, (3, 2, 1, 1)),
        ),
        mma_case(
            "conv2d mma 1x1 (bf16 in, f32 out)",
            &["conv2d_mma_fwd_bf16_to_f32", DX, DW_BF16],
            (true, false),
            Conv2dGeometry::square([2, 12, 9, 7], 10, (1, 1, 0, 1)),
        ),
        // dx: 2·40·36 = 2,880 input positions (23 column tiles); dw: 720 positions in 3 splits.
        mma_case(
            "conv2d mma 5x5 s2 p2 (f32 in, bf16 out)",
            &["conv2d_mma_fwd_f32_to_bf16", DX, DW_F32, SUM],
            (false, true),
            Conv2dGeometry::square([2, 3, 40, 36], 6, (5, 2, 2, 1)),
        ),
        mma_case(
            "conv2d mma 128-row tiles (bf16 in, bf16 out)",
            &[
                "conv2d_mma_m128_fwd_bf16_to_bf16",
                "conv2d_mma_m128_bwd_input_f32",
                "conv2d_mma_m128_bwd_weight_bf16",
            ],
            (true, true),
            wide(),
        ),
        mma_case(
            "conv2d mma two 128-row tiles, 3x3 s2 (bf16 in, bf16 out)",
            BF16_M128,
            (true, true),
            two_tall_tiles(),
        ),
        // YOLOX's most common conv: 1×1 (the forward's pointwise gather) with over 128 channels.
        mma_case(
            "conv2d mma 1x1 two 128-row tiles (bf16 in, bf16 out)",
            BF16_M128,
            (true, true),
            Conv2dGeometry::square([2, 136, 6, 5], 132, (1, 1, 0, 1)),
        ),
        // Tap-major forms (implicit_gemm/tap_major.rs TAP_MAJOR_CHANNELS): C (forward) and K (input
        // gradient) multiples of 32; R = 288 (forward) and 576.
        mma_case(
            "conv2d mma tap-major 3x3 s1 (bf16 in, bf16 out)",
            &[
                PACK_FWD,
                "conv2d_mma_tap_fwd_bf16_to_bf16",
                PACK_DX,
                "conv2d_mma_tap_bwd_input_f32",
                DW_BF16,
            ],
            (true, true),
            taps_3x3(),
        ),
        // R = 1,440 (forward), 384, 192, 192 and 96 (input-gradient phases).
        mma_case(
            "conv2d mma tap-major 128-row tiles, 3x3 s2 (bf16 in, bf16 out)",
            &[
                PACK_FWD,
                "conv2d_mma_m128_tap_fwd_bf16_to_bf16",
                PACK_DX,
                "conv2d_mma_m128_tap_bwd_input_f32",
                "conv2d_mma_m128_bwd_weight_bf16",
            ],
            (true, true),
            taps_3x3_s2_tall(),
        ),
        mma_case(
            "conv2d mma tap-major 1x1 s2 (bf16 in, f32 out)",
            &[
                PACK_FWD,
                "conv2d_mma_tap_fwd_bf16_to_f32",
                PACK_DX,
                "conv2d_mma_tap_bwd_input_f32",
                DW_BF16,
            ],
            (true, false),
            taps_1x1_s2(),
        ),
        in_tf32(
            "conv2d tf32 tap-major 3x3 s1",
            &[
                TF32_PACK_FWD,
                "conv2d_tf32_tap_fwd_f32",
                TF32_PACK_DX,
                "conv2d_tf32_tap_bwd_input_f32",
                "conv2d_tf32_bwd_weight_f32",
            ],
            conv_case("", &[], F32_IN_OUT, taps_3x3()),
        ),
        in_tf32(
            "conv2d tf32 tap-major 128-row tiles, 3x3 s2",
            &[
                TF32_PACK_FWD,
                "conv2d_tf32_m128_tap_fwd_f32",
                TF32_PACK_DX,
                "conv2d_tf32_m128_tap_bwd_input_f32",
                "conv2d_tf32_m128_bwd_weight_f32",
            ],
            conv_case("", &[], F32_IN_OUT, taps_3x3_s2_tall()),
        ),
        conv_case(
            "conv2d tf32x3 tap-major 3x3 s1 (f32 mode)",
            &[
                TF32_PACK_FWD,
                "conv2d_tf32x3_tap_fwd_f32",
                TF32_PACK_DX,
                "conv2d_tf32x3_tap_bwd_input_f32",
                "conv2d_tf32x3_bwd_weight_f32",
            ],
            F32_IN_OUT,
            taps_3x3(),
        ),
        conv_case(
            "conv2d tf32x3 tap-major 128-row tiles, 3x3 s2 (f32 mode)",
            &[
                TF32_PACK_FWD,
                "conv2d_tf32x3_m128_tap_fwd_f32",
                TF32_PACK_DX,
                "conv2d_tf32x3_m128_tap_bwd_input_f32",
                "conv2d_tf32x3_m128_bwd_weight_f32",
            ],
            F32_IN_OUT,
            taps_3x3_s2_tall(),
        ),
        conv_case(
            "conv2d tf32x3 tap-major 1x1 s2 (f32 mode)",
            &[
                TF32_PACK_FWD,
                "conv2d_tf32x3_tap_fwd_f32",
                TF32_PACK_DX,
                "conv2d_tf32x3_tap_bwd_input_f32",
            ],
            F32_IN_OUT,
            taps_1x1_s2(),
        ),
        in_tf32(
            "conv2d tf32 3x3 s1 p1",
            TF32_K70,
            conv_case(
                "",
                &[],
                F32_IN_OUT,
                Conv2dGeometry::square([2, 5, 11, 13], 70, (3, 1, 1, 1)),
            ),
        ),
        in_tf32(
            "conv2d tf32 5x5 s2 p2",
            TF32,
            conv_case(
                "",
                &[],
                F32_IN_OUT,
                Conv2dGeometry::square([2, 3, 40, 36], 6, (5, 2, 2, 1)),
            ),
        ),
        in_tf32(
            "conv2d tf32 128-row tiles",
            &[
                "conv2d_tf32_m128_fwd_f32",
                "conv2d_tf32_m128_bwd_input_f32",
                "conv2d_tf32_m128_bwd_weight_f32",
            ],
            conv_case("", &[], F32_IN_OUT, wide()),
        ),
        // f32 mode: the split keeps the f32 bound, element by element.
        conv_case(
            "conv2d tf32x3 3x3 s1 p1 (f32 mode)",
            TF32X3_K70,
            F32_IN_OUT,
            Conv2dGeometry::square([2, 5, 11, 13], 70, (3, 1, 1, 1)),
        ),
        conv_case(
            "conv2d tf32x3 1x1 (f32 mode)",
            &TF32X3[..3],
            F32_IN_OUT,
            Conv2dGeometry::square([2, 12, 9, 7], 10, (1, 1, 0, 1)),
        ),
        conv_case(
            "conv2d tf32x3 5x5 s2 p2 (f32 mode)",
            TF32X3,
            F32_IN_OUT,
            Conv2dGeometry::square([2, 3, 40, 36], 6, (5, 2, 2, 1)),
        ),
        // 1×1 stride 2: three of the four stride phases of the input gradient get no tap
        // (zeros), the fourth one.
        conv_case(
            "conv2d tf32x3 1x1 s2 (f32 mode)",
            &TF32X3[..3],
            F32_IN_OUT,
            Conv2dGeometry::square([2, 5, 9, 8], 6, (1, 2, 0, 1)),
        ),
        conv_case(
            "conv2d tf32x3 128-row tiles (f32 mode)",
            &[
                "conv2d_tf32x3_m128_fwd_f32",
                "conv2d_tf32x3_m128_bwd_input_f32",
                "conv2d_tf32x3_m128_bwd_weight_f32",
            ],
            F32_IN_OUT,
            wide(),
        ),
        // The f32 bound over a 1,260-long reduction.
        conv_case(
            "conv2d tf32x3 two 128-row tiles, 3x3 s2 (f32 mode)",
            &[
                "conv2d_tf32x3_m128_fwd_f32",
                "conv2d_tf32x3_m128_bwd_input_f32",
                "conv2d_tf32x3_m128_bwd_weight_f32",
            ],
            F32_IN_OUT,
            two_tall_tiles(),
        ),
    ]
}
