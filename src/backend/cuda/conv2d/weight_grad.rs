//! The weight gradient on the GPU, `dw_g = Σ_n dy_g[n] · cols[n]ᵀ`: per-item (and, on large
//! maps, per-slice) products into partial sums, then one product with a ones vector for the sum.

use cudarc::driver::CudaSlice;

use super::{
    algorithm_for, f32_input, is_depthwise, is_pointwise, launch_direct, product, readable,
    Columns, ConvAlgorithm, ConvPass, CudaBuffer, CudaDevice, CudaValues, Dims, Operand, Strided,
};
use super::{check_geometry, check_len};
use crate::backend::conv_geometry::Conv2dGeometry;
use crate::backend::cuda::gemm::sum_rows;
use crate::Result;

/// Gradient with respect to the weight, summed over the batch.
pub fn bwd_weight(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    x: CudaValues,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    check_geometry(g)?;
    check_len("conv2d_bwd_weight", "dy", dy, g.y_len())?;
    let mut wide = None;
    let x = readable(dev, "conv2d_bwd_weight", x, g, &mut wide)?;
    let run = |a| bwd_weight_by(dev, a, dy, x, g);
    let f32_out = |a| run(a).map(CudaBuffer::F32);
    run(algorithm_for(
        dev,
        g,
        ConvPass::WeightGrad,
        (x, false),
        f32_out,
    )?)
}

/// [`bwd_weight`] by the given algorithm (on checked arguments).
fn bwd_weight_by(
    dev: &CudaDevice,
    algorithm: ConvAlgorithm,
    dy: &CudaSlice<f32>,
    x: CudaValues,
    g: &Conv2dGeometry,
) -> Result<CudaSlice<f32>> {
    if algorithm == ConvAlgorithm::Implicit {
        return super::implicit_gemm::bwd_weight(dev, dy, x, g);
    }
    let mut dw = dev.alloc(g.w_len())?;
    if is_depthwise(g) {
        let xs = f32_input("conv2d_bwd_weight", x)?;
        launch_direct(dev, "conv2d_dw_bwd_weight_f32", dy, xs, &mut dw, g, true)?;
        return Ok(dw);
    }
    let d = Dims::of(g);
    let k = KSlices::of(&d, g.batch);
    // Per-item (and per-slice) products land in `partial [N, S, kg·ckk]` (items and slices must
    // not share an output), then one reduction over N·S gives dw_g.
    let rows = g.batch * k.count;
    let mut partial = dev.alloc(rows * d.kg * d.ckk)?;
    let ones = crate::backend::cuda::elementwise::fill(dev, rows, 1.0)?;
    let w_g_len = d.kg * d.ckk;
    for grp in 0..g.groups {
        for (n0, items) in d.chunks(g) {
            // x itself (pointwise) or the chunk's column matrices: item i's `[ckk, HWo]` at
            // `b_off + i·b_item`.
            let built;
            let (b, b_off, b_item) = if is_pointwise(g) {
                let off = (n0 * g.in_channels + grp * d.cg) * d.hw_in;
                (Operand::of_input(x, 0), off, g.in_channels * d.hw_in)
            } else {
                built = Columns::build(dev, x, g, &d, (n0, items, grp))?;
                (built.operand(0), 0, d.ckk * d.hw_out)
            };
            let dy_off = |n: usize| (n * g.out_channels + grp * d.kg) * d.hw_out;
            if k.count == 1 {
                // partial[n] [kg × ckk] = dy_n [kg × HWo] · colᵀ [HWo × ckk], one call per chunk.
                let dy_items = Strided {
                    ld: d.hw_out,
                    stride: g.out_channels * d.hw_out,
                };
                let b_items = Strided {
                    ld: d.hw_out,
                    stride: b_item,
                };
                let part_items = Strided {
                    ld: d.ckk,
                    stride: w_g_len,
                };
                product(
                    dev,
                    true,
                    (d.kg, d.ckk, d.hw_out),
                    &dy.slice(dy_off(n0)..),
                    dy_items,
                    &slice_operand(&b, b_off),
                    b_items,
                    &mut partial.slice_mut(n0 * w_g_len..),
                    part_items,
                    items,
                )?;
                continue;
            }
            // Large maps: each item's reduction over HWo split into k.count slices, one product
            // per slice in one call per item, so the GPU sees items·slices·tiles blocks of work
            // rather than a handful of long ones.
            for i in 0..items {
                let n = n0 + i;
                let slices = |len| Strided {
                    ld: d.hw_out,
                    stride: len,
                };
                let part_slices = Strided {
                    ld: d.ckk,
                    stride: w_g_len,
                };
                let (dy_n, b_n, part_n) = (dy_off(n), b_off + i * b_item, n * k.count * w_g_len);
                product(
                    dev,
                    true,
                    (d.kg, d.ckk, k.len),
                    &dy.slice(dy_n..),
                    slices(k.len),
                    &slice_operand(&b, b_n),
                    slices(k.len),
                    &mut partial.slice_mut(part_n..),
                    part_slices,
                    k.full,
                )?;
                if k.rest > 0 {
                    let at = k.full * k.len;
                    product(
                        dev,
                        true,
                        (d.kg, d.ckk, k.rest),
                        &dy.slice(dy_n + at..),
                        slices(k.rest),
                        &slice_operand(&b, b_n + at),
                        slices(k.rest),
                        &mut partial.slice_mut(part_n + k.full * w_g_len..),
                        part_slices,
                        1,
                    )?;
                }
            }
        }
        // dw_g [1 × kg·ckk] = ones [1 × N·S] · partial [N·S × kg·ckk]: the sum over items and
        // slices as one product (a reduction kernel with a block per weight would idle most of
        // its threads), in f32 operands in every mode.
        let off = grp * w_g_len;
        let mut dw_g = dw.slice_mut(off..off + w_g_len);
        sum_rows(dev, (rows, w_g_len), &partial, &ones, &mut dw_g)?;
    }
    Ok(dw)
}

/// How [`bwd_weight`] splits each item's reduction over the output positions: `full` slices of
/// `len` positions and, when `rest > 0`, one more of `rest`; `count` slices in all.
struct KSlices {
    len: usize,
    full: usize,
    rest: usize,
    count: usize,
}

/// Output positions per slice of the weight gradient's reduction the split aims at.
const WEIGHT_GRAD_SLICE: usize = 2048;

/// [`WEIGHT_GRAD_SLICE`], or the environment variable `SSOD_CUDA_WGRAD_SLICE` (positions per
/// slice; 0 turns the split off; read once) for A/B benchmarks of the split.
fn slice_positions() -> Option<usize> {
    static SLICE: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    *SLICE.get_or_init(|| {
        match std::env::var("SSOD_CUDA_WGRAD_SLICE").map(|v| v.trim().parse::<usize>()) {
            Ok(Ok(0)) => None,
            Ok(Ok(n)) => Some(n),
            _ => Some(WEIGHT_GRAD_SLICE),
        }
    })
}

/// At most this many slices per item, and at most [`PARTIAL_BUDGET`] floats of partial sums.
const MAX_SLICES: usize = 64;
const PARTIAL_BUDGET: usize = 1 << 25;

impl KSlices {
    fn of(d: &Dims, batch: usize) -> KSlices {
        let by_budget = PARTIAL_BUDGET / (batch * d.kg * d.ckk).max(1);
        let want = slice_positions().map_or(1, |n| d.hw_out.div_ceil(n));
        let count = want.min(MAX_SLICES).min(by_budget).max(1);
        let len = d.hw_out.div_ceil(count).max(1);
        let full = d.hw_out / len;
        let rest = d.hw_out - full * len;
        KSlices {
            len,
            full,
            rest,
            count: full + usize::from(rest > 0),
        }
    }
}

/// `b` from element `off` on.
fn slice_operand<'a>(b: &'a Operand<'a>, off: usize) -> Operand<'a> {
    match b {
        Operand::F32(v) => Operand::F32(v.slice(off..)),
        Operand::Bf16(v) => Operand::Bf16(v.slice(off..)),
    }
}
