//! The weight gradient of the gemm-path convs, `dw_g = Σ_n dy_g[n] · cols[n]ᵀ`, in two
//! schedules: one product per batch item and a sum of per-item gradients in item order
//! (`bwd_weight_item`, with `pointwise_weight_grad` for pointwise convs with few channels), or, for
//! small maps with many channels (`packed_weight_grad`), every item packed into one product over
//! all positions (`bwd_weight_packed`).
//! Both give results that do not depend on the thread count (tests/cpu_conv2d.rs).

use super::{im2col, inner_threads, with_cols, Conv2dGeometry, GroupDims};
use crate::backend::cpu::conv2d::pointwise_weight_grad as direct;
use crate::backend::cpu::gemm::{sgemm, MatRef};
use crate::backend::cpu::simd::simd_fn;
use rayon::prelude::*;
use std::ops::Range;

/// Whether a pointwise conv's weight gradient runs on `pointwise_weight_grad` (its AVX-512
/// kernel or the portable twin, the same bits) instead of gemms. The shapes alone decide, so
/// the schedule (and the bits) do not depend on the SIMD level.
fn direct_pointwise_weight_grad(d: &GroupDims) -> bool {
    d.pointwise && d.cin_g <= direct::MAX_CHANNELS && d.cout_g <= direct::MAX_CHANNELS
}

/// Overwrites `dw`.
pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry, dw: &mut [f32]) {
    let d = GroupDims::new(g);
    let w_len = g.w_len();
    let (x_item, y_item) = (g.in_channels * d.in_plane, g.out_channels * d.out_plane);
    if g.batch == 0 || x_item == 0 || y_item == 0 {
        dw.fill(0.0);
        return;
    }
    if packed_weight_grad(&d) {
        bwd_weight_packed(dy, x, g, &d, dw);
        return;
    }
    let threads = inner_threads(g.batch);
    // Each item's gradient is computed on its own (same gemm shapes in both schedules) and the
    // items are summed left to right in index order: dw = ((p0 + p1) + p2) + ...
    let item = |n: usize, partial: &mut [f32], threads: usize| {
        let dy_n = &dy[n * y_item..(n + 1) * y_item];
        let x_n = &x[n * x_item..(n + 1) * x_item];
        bwd_weight_item(dy_n, x_n, g, &d, partial, threads);
    };
    if threads == 1 {
        // One partial per item: batch × w_len floats (a few MB per item for YOLOX-S).
        let partials: Vec<Vec<f32>> = (0..g.batch)
            .into_par_iter()
            .map(|n| {
                let mut partial = vec![0f32; w_len];
                item(n, &mut partial, 1);
                partial
            })
            .collect();
        let mut parts = partials.iter();
        match parts.next() {
            Some(first) => dw.copy_from_slice(first),
            None => dw.fill(0.0),
        }
        for partial in parts {
            add_assign(dw, partial);
        }
    } else {
        item(0, dw, threads);
        let mut partial = vec![0f32; if g.batch > 1 { w_len } else { 0 }];
        for n in 1..g.batch {
            item(n, &mut partial, threads);
            add_assign(dw, &partial);
        }
    }
}

/// [`bwd_weight`] packs the items of a batch into one product over all their positions
/// (`dw_g = dy_all · cols_allᵀ`) instead of one product per item and a sum of per-item
/// gradients when the per-item form's overhead (a transposed `[taps, cout_g]` partial per item,
/// scattered into place and summed) outweighs the packing's (a transposed copy of each item's
/// `[taps, P]` columns and `[cout_g, P]` gradient): when `taps·cout_g ≥ 1.1·P·(taps + cout_g)`.
/// Measured on every YOLOX-S layer at 128, 256, 448, 512 and 640 px, batch 8 (BENCHMARKS.md,
/// "Weight gradients on small maps"): packing won at ratios `taps·cout_g / (P·(taps + cout_g))` of 1.18 and more
/// (up to 2×: 1024→512 1×1 @14×14 20.8 → 12.8 ms), drew between 0.85 and 1.05 and lost below
/// (up to 2× slower: 128→128 3×3 @40×40 20.9 → 42.7 ms). Small maps with many channels (deep
/// layers at small input sizes) are the packed ones: at 64 px, batch 16, YOLOX-S's weight
/// gradients took 224-238 ms per step one item at a time, 46-52 packed.
fn packed_weight_grad(d: &GroupDims) -> bool {
    let (taps, cout, p) = (d.taps as u128, d.cout_g as u128, d.out_plane as u128);
    let per_item_overhead_larger = 10 * taps * cout >= 11 * p * (taps + cout);
    (p <= TINY_PLANE || per_item_overhead_larger) && !direct_pointwise_weight_grad(d)
}

/// Planes up to 4×4 are always packed: there the per-item products themselves (a reduction of
/// at most 16 positions each) are the waste, whatever the channels (YOLOX-S at 64 px, batch 16:
/// weight gradients 57-60 ms per step by the ratio alone, 53-55 packing these too).
const TINY_PLANE: u128 = 16;

/// Positions per packed product: larger batches are packed in chunks of
/// `PACKED_CHUNK_POSITIONS / P` items (a bound on the scratch, `(taps + cout_g)` floats per
/// position), multiplied in parallel and summed in chunk order.
const PACKED_CHUNK_POSITIONS: usize = 2048;

/// [`bwd_weight`] for small maps with many channels: the items' column matrices transposed into one positions-major
/// matrix (`cols_allᵀ [n·P, taps]`, item `n` in rows `n·P..(n+1)·P`) and `dy` likewise
/// (`dy_allᵀ [n·P, cout_g]`), then one product reducing over all those positions. One chunk (the
/// usual case) is packed item by item in parallel and multiplied on the whole pool (the `gemm`
/// crate splits the output, not the reduction); several chunks are each packed and multiplied
/// on one thread, in parallel. Chunks depend on the shapes only and their gradients are summed
/// in order, so the result does not depend on the thread count.
fn bwd_weight_packed(dy: &[f32], x: &[f32], g: &Conv2dGeometry, d: &GroupDims, dw: &mut [f32]) {
    let p = d.out_plane;
    let (x_item, y_item) = (g.in_channels * d.in_plane, g.out_channels * d.out_plane);
    let chunk_items = (PACKED_CHUNK_POSITIONS / p.max(1)).clamp(1, g.batch);
    let chunks: Vec<Range<usize>> = (0..g.batch)
        .step_by(chunk_items)
        .map(|n0| n0..(n0 + chunk_items).min(g.batch))
        .collect();
    // Items `items` of group `grp` into `cols_t [len·P, taps]` and `dy_t [len·P, cout_g]`.
    let pack =
        |grp: usize, items: Range<usize>, cols_t: &mut [f32], dy_t: &mut [f32], par: bool| {
            let one = |(i, (cols_n, dy_n)): (usize, (&mut [f32], &mut [f32]))| {
                let n = items.start + i;
                let x_g = &x[n * x_item + grp * d.cin_g * d.in_plane..][..d.cin_g * d.in_plane];
                // The item's columns [taps, P]: its input plane when pointwise, else im2col.
                if d.pointwise {
                    transpose_tile(x_g, p, d.taps, p, cols_n);
                } else {
                    with_cols(d.taps * p, |cols| {
                        im2col(x_g, g, 0..g.out_h(), cols, false);
                        transpose_tile(cols, p, d.taps, p, cols_n);
                    });
                }
                let dy_g = &dy[n * y_item + grp * d.cout_g * p..][..d.cout_g * p];
                transpose_tile(dy_g, p, d.cout_g, p, dy_n);
            };
            if par {
                cols_t
                    .par_chunks_mut(p * d.taps)
                    .zip(dy_t.par_chunks_mut(p * d.cout_g))
                    .enumerate()
                    .for_each(one);
            } else {
                cols_t
                    .chunks_mut(p * d.taps)
                    .zip(dy_t.chunks_mut(p * d.cout_g))
                    .enumerate()
                    .for_each(one);
            }
        };
    // dw_g [cout_g, taps] = dy_all [cout_g, n·P] · cols_allᵀ [n·P, taps] over a chunk's items,
    // written in place: both packed operands are positions-major, so unlike the per-item form
    // the product needs no transposed result (whose column-by-column scatter cost YOLOX-S's
    // 1024→512 1×1 at 4×4 three times its product: 4.1 ms against 0.9 for its forward).
    let product = |cols_t: &[f32], dy_t: &[f32], dw_g: &mut [f32], threads: usize| {
        sgemm(
            d.cout_g,
            d.taps,
            dy_t.len() / d.cout_g,
            MatRef::transposed(dy_t, d.cout_g),
            MatRef::row_major(cols_t, d.taps),
            dw_g,
            d.taps,
            false,
            threads,
        )
    };
    for grp in 0..g.groups {
        let dw_g = &mut dw[grp * d.cout_g * d.taps..][..d.cout_g * d.taps];
        if chunks.len() == 1 {
            let np = g.batch * p;
            let (mut cols_t, mut dy_t) = (vec![0f32; np * d.taps], vec![0f32; np * d.cout_g]);
            pack(grp, 0..g.batch, &mut cols_t, &mut dy_t, true);
            product(&cols_t, &dy_t, dw_g, rayon::current_num_threads());
            continue;
        }
        // Several chunks: each packed and multiplied on one thread, the chunks in parallel, their
        // gradients summed in chunk order (the chunking depends on the shapes only).
        let partials: Vec<Vec<f32>> = chunks
            .par_iter()
            .map(|items| {
                let np = items.len() * p;
                let (mut cols_t, mut dy_t) = (vec![0f32; np * d.taps], vec![0f32; np * d.cout_g]);
                pack(grp, items.clone(), &mut cols_t, &mut dy_t, false);
                let mut dw_chunk = vec![0f32; d.taps * d.cout_g];
                product(&cols_t, &dy_t, &mut dw_chunk, 1);
                dw_chunk
            })
            .collect();
        dw_g.copy_from_slice(&partials[0]);
        for partial in &partials[1..] {
            add_assign(dw_g, partial);
        }
    }
}

/// `dst[k·rows + t] = src[t·cols + k]`: a row-major `[rows, cols]` into its transpose. (The
/// blocked [`transpose_tile`] here was measured faster on YOLOX-S's deep 1×1 layers and slower
/// on its deep 3×3 ones, 3 % slower over a step: BENCHMARKS.md,
/// "Weight gradients on small maps".)
fn transpose_into(src: &[f32], cols: usize, dst: &mut [f32]) {
    let rows = src.len() / cols.max(1);
    for (t, row) in src.chunks_exact(cols).enumerate() {
        for (k, v) in row.iter().enumerate() {
            dst[k * rows + t] = *v;
        }
    }
}

simd_fn! {
fn add_assign(acc: &mut [f32], v: &[f32]) {
    debug_assert_eq!(acc.len(), v.len());
    for (a, b) in acc.iter_mut().zip(v) {
        *a += *b;
    }
}
}

/// Positions per gemm in a pointwise `bwd_weight` that transposes `dy` (its tiles need not be
/// whole output rows); without the transpose the whole plane is one gemm.
const POINTWISE_WEIGHT_TILE: usize = 2048;
/// `bwd_weight` copies `dy` tiles transposed when a group has at most this many output channels.
const TRANSPOSE_DY_MAX_COUT: usize = 32;

/// Overwrites `dw` with this item's weight gradient (tiles accumulated in order).
///
/// Computed transposed, `dw_gᵀ [taps, cout_g] = cols · dy_gᵀ`, into a small scratch and then
/// transposed into place: with the taps as the gemm's row dimension the `gemm` crate runs this
/// long-k, small-output product 1.5-3× faster than `dy_g · colsᵀ` (measured on the YOLOX shapes).
/// With few output channels (`cout_g <= TRANSPOSE_DY_MAX_COUT`) the `dy_gᵀ` operand is first
/// copied, per tile, into a row-major `[n, cout_g]` scratch: read in place it is column-major
/// with a column stride of a whole plane, which the crate packs slowly (warm single-thread sgemm
/// at m=64, n=32, k=2048: 46 GFLOP/s strided vs 94 row-major). Measured on the YOLOX-S layers
/// (CPU time, batch 8), the copy raised bwd_weight at 32 output channels (stem 105→116, dark2
/// 1×1 87→103, dark2 bottleneck 138→145 GFLOP/s) but lowered it at 64 and more (dark3 1×1
/// 159→135, dark3 bottleneck 169→147, dark5 1×1 143→130), hence the threshold.
fn bwd_weight_item(
    dy_n: &[f32],
    x_n: &[f32],
    g: &Conv2dGeometry,
    d: &GroupDims,
    dw: &mut [f32],
    threads: usize,
) {
    if direct_pointwise_weight_grad(d) {
        for grp in 0..g.groups {
            let dy_g = &dy_n[grp * d.cout_g * d.out_plane..][..d.cout_g * d.out_plane];
            let x_g = &x_n[grp * d.cin_g * d.in_plane..][..d.cin_g * d.in_plane];
            let dw_g = &mut dw[grp * d.cout_g * d.taps..][..d.cout_g * d.taps];
            direct::weight_grad(dy_g, x_g, d.cout_g, d.cin_g, d.out_plane, dw_g);
        }
        return;
    }
    let mut dw_t = vec![0f32; d.taps * d.cout_g];
    let transpose_dy = d.cout_g <= TRANSPOSE_DY_MAX_COUT;
    // Tiles as (first position, positions): output-row tiles, or fixed chunks when pointwise.
    let tiles: Vec<(usize, usize)> = if d.pointwise {
        let chunk = if transpose_dy {
            POINTWISE_WEIGHT_TILE
        } else {
            d.out_plane
        };
        (0..d.out_plane)
            .step_by(chunk)
            .map(|p| (p, chunk.min(d.out_plane - p)))
            .collect()
    } else {
        d.tiles(g)
            .map(|rows| (rows.start * d.out_w, rows.len() * d.out_w))
            .collect()
    };
    let max_n = if transpose_dy {
        tiles.iter().map(|t| t.1).max().unwrap_or(0)
    } else {
        0
    };
    let cols_len = d.cols_len();
    with_cols(cols_len + max_n * d.cout_g, |scratch| {
        let (cols, dy_t) = scratch.split_at_mut(cols_len);
        for grp in 0..g.groups {
            let dy_g = &dy_n[grp * d.cout_g * d.out_plane..][..d.cout_g * d.out_plane];
            let x_g = &x_n[grp * d.cin_g * d.in_plane..][..d.cin_g * d.in_plane];
            for (i, &(first, n)) in tiles.iter().enumerate() {
                // dy_g[:, tile]ᵀ as an [n, cout_g] matrix.
                let b = if transpose_dy {
                    let dy_t = &mut dy_t[..n * d.cout_g];
                    transpose_tile(&dy_g[first..], d.out_plane, d.cout_g, n, dy_t);
                    MatRef::row_major(dy_t, d.cout_g)
                } else {
                    MatRef {
                        data: &dy_g[first..],
                        row_stride: 1,
                        col_stride: d.out_plane,
                    }
                };
                let a = if d.pointwise {
                    MatRef {
                        data: &x_g[first..],
                        row_stride: d.in_plane,
                        col_stride: 1,
                    }
                } else {
                    // An output-row tile: positions first..first + n are rows `rows`.
                    let rows = first / d.out_w..(first + n) / d.out_w;
                    let cols = &mut cols[..d.taps * n];
                    im2col(x_g, g, rows, cols, threads > 1);
                    MatRef::row_major(cols, n)
                };
                // dw_gᵀ (+)= cols [taps, n] · dy_g[:, tile]ᵀ [n, cout_g]
                sgemm(
                    d.taps,
                    d.cout_g,
                    n,
                    a,
                    b,
                    &mut dw_t,
                    d.cout_g,
                    i > 0,
                    threads,
                );
            }
            transpose_into(
                &dw_t,
                d.cout_g,
                &mut dw[grp * d.cout_g * d.taps..][..d.cout_g * d.taps],
            );
        }
    });
}

simd_fn! {
/// `out[p·rows + r] = src[r·stride + p]` for `r < rows`, `p < n`: a `[rows, n]` block with row
/// stride `stride` into a row-major `[n, rows]`. Blocks of 16 positions keep the written lines
/// in L1 while each source row is read sequentially.
fn transpose_tile(src: &[f32], stride: usize, rows: usize, n: usize, out: &mut [f32]) {
    const BLOCK: usize = 16;
    for p0 in (0..n).step_by(BLOCK) {
        let len = BLOCK.min(n - p0);
        for r in 0..rows {
            let s = &src[r * stride + p0..][..len];
            for (j, v) in s.iter().enumerate() {
                out[(p0 + j) * rows + r] = *v;
            }
        }
    }
}
}
