//! Dense and grouped convs as gemms: per batch item and group, `y_g = w_g · cols`,
//! `dcols = w_gᵀ · dy_g` then col2im, `dw_gᵀ = cols · dy_gᵀ`. 1×1 stride-1 unpadded convs use the
//! input plane itself as `cols`.
//!
//! The column matrix is built one tile of output rows at a time (about [`TILE_FLOATS`] floats,
//! at least [`MIN_TILE_COLS`] columns so the gemms stay efficient), which keeps it in the
//! core's cache and caps the scratch memory at one tile per worker thread (at most
//! `taps · max(TILE_FLOATS/taps, MIN_TILE_COLS)` floats: 3.7 MB for YOLOX-S's 256-channel 3×3).
//!
//! Threading: with at least as many batch items as rayon threads, items run in parallel and each
//! gemm is single-threaded (less synchronisation, better on these shapes); otherwise items run one
//! after another and the gemm (and im2col/col2im over channels) use the whole pool. Both schedules
//! perform the same gemm calls with the same shapes, and every output element is reduced in the
//! same order, so results do not depend on the thread count (tests/cpu_conv2d.rs checks this).
//!
//! The weight gradient and its schedules are in `gemm_path/weight_grad.rs`.

use super::im2col::{col2im_add, im2col};
use super::Conv2dGeometry;
use crate::backend::cpu::gemm::{sgemm, sgemm_overwrite_uninit, MatRef};
use crate::backend::cpu::uninit::zero_fill;
use rayon::prelude::*;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;

mod weight_grad;
pub use weight_grad::bwd_weight;

/// Per-group sizes of the gemms.
#[derive(Clone, Copy)]
struct GroupDims {
    /// Input channels per group.
    cin_g: usize,
    /// Output channels per group.
    cout_g: usize,
    /// Reduction length of the forward gemm: `cin_g·kh·kw` (a column-matrix row count).
    taps: usize,
    /// Output positions per item: `Ho·Wo`.
    out_plane: usize,
    /// Input positions per item: `H·W`.
    in_plane: usize,
    /// Output width `Wo`.
    out_w: usize,
    /// Output rows per im2col tile.
    tile_rows: usize,
    /// The input is already the column matrix (1×1, stride 1, no padding).
    pointwise: bool,
}

/// Target size of one im2col tile: 1 MiB, the L2 of the machines we measured on.
const TILE_FLOATS: usize = 1 << 18;
/// Lower bound on a tile's column count so a tile's gemm still amortises its packing.
const MIN_TILE_COLS: usize = 1024;

impl GroupDims {
    fn new(g: &Conv2dGeometry) -> Self {
        let cin_g = g.in_channels / g.groups;
        let taps = cin_g * g.kernel_h * g.kernel_w;
        let out_w = g.out_w().max(1);
        let tile_cols = (TILE_FLOATS / taps.max(1)).max(MIN_TILE_COLS);
        GroupDims {
            cin_g,
            cout_g: g.out_channels / g.groups,
            taps,
            out_plane: g.out_h() * g.out_w(),
            in_plane: g.in_h * g.in_w,
            out_w,
            tile_rows: (tile_cols / out_w).clamp(1, g.out_h().max(1)),
            pointwise: super::is_pointwise(g),
        }
    }
    fn cols_len(&self) -> usize {
        if self.pointwise {
            0
        } else {
            self.taps * self.tile_rows * self.out_w
        }
    }
    /// The output-row tiles, in order; one tile covering everything for pointwise convs.
    fn tiles(&self, g: &Conv2dGeometry) -> impl Iterator<Item = Range<usize>> {
        let (ho, step) = (
            g.out_h(),
            if self.pointwise {
                g.out_h().max(1)
            } else {
                self.tile_rows
            },
        );
        (0..ho)
            .step_by(step)
            .map(move |start| start..(start + step).min(ho))
    }
}

thread_local! {
    /// The im2col tile of the batch item this thread is working on, kept between calls (it stays
    /// allocated at the largest tile size seen, a few MB) so tiles are not reallocated per item.
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with a column buffer of exactly `len` elements (contents unspecified). The buffer is
/// taken out of the thread-local slot for the duration, so a nested call on the same thread
/// (rayon work stealing inside a threaded gemm) gets its own buffer instead of a borrow panic.
fn with_cols<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = COLS.with(Cell::take);
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let result = f(&mut buf[..len]);
    COLS.with(|slot| {
        let other = slot.take();
        // Keep the larger of the two buffers if a nested call left one behind.
        slot.set(if other.len() > buf.len() { other } else { buf });
    });
    result
}

/// Threads for the gemms of one item: 1 when the batch is spread over the pool instead.
fn inner_threads(batch: usize) -> usize {
    let pool = rayon::current_num_threads();
    if batch >= pool {
        1
    } else {
        pool
    }
}

/// Writes every element of `y` (which may be uninitialised).
pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry, y: &mut [MaybeUninit<f32>]) {
    let d = GroupDims::new(g);
    let (x_item, y_item) = (g.in_channels * d.in_plane, g.out_channels * d.out_plane);
    if x_item == 0 || y_item == 0 {
        zero_fill(y);
        return;
    }
    let threads = inner_threads(g.batch);
    if threads == 1 {
        y.par_chunks_mut(y_item)
            .zip(x.par_chunks(x_item))
            .for_each(|(y_n, x_n)| fwd_item(x_n, w, g, &d, y_n, 1));
    } else {
        for (y_n, x_n) in y.chunks_mut(y_item).zip(x.chunks(x_item)) {
            fwd_item(x_n, w, g, &d, y_n, threads);
        }
    }
}

fn fwd_item(
    x_n: &[f32],
    w: &[f32],
    g: &Conv2dGeometry,
    d: &GroupDims,
    y_n: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    with_cols(d.cols_len(), |cols| {
        for grp in 0..g.groups {
            let x_g = &x_n[grp * d.cin_g * d.in_plane..][..d.cin_g * d.in_plane];
            let w_g = MatRef::row_major(&w[grp * d.cout_g * d.taps..][..d.cout_g * d.taps], d.taps);
            let y_g = &mut y_n[grp * d.cout_g * d.out_plane..][..d.cout_g * d.out_plane];
            for rows in d.tiles(g) {
                let (first, n) = (rows.start * d.out_w, rows.len() * d.out_w);
                let b = if d.pointwise {
                    MatRef::row_major(x_g, d.out_plane)
                } else {
                    let cols = &mut cols[..d.taps * n];
                    im2col(x_g, g, rows, cols, threads > 1);
                    MatRef::row_major(cols, n)
                };
                // y_g[:, tile] = w_g [cout_g, taps] · cols [taps, n]; the tiles cover the plane.
                sgemm_overwrite_uninit(
                    d.cout_g,
                    n,
                    d.taps,
                    w_g,
                    b,
                    &mut y_g[first..],
                    d.out_plane,
                    threads,
                );
            }
        }
    });
}

/// Writes every element of `dx` (which may be uninitialised).
pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry, dx: &mut [MaybeUninit<f32>]) {
    let d = GroupDims::new(g);
    let (x_item, y_item) = (g.in_channels * d.in_plane, g.out_channels * d.out_plane);
    if x_item == 0 || y_item == 0 {
        zero_fill(dx);
        return;
    }
    let threads = inner_threads(g.batch);
    if threads == 1 {
        dx.par_chunks_mut(x_item)
            .zip(dy.par_chunks(y_item))
            .for_each(|(dx_n, dy_n)| bwd_input_item(dy_n, w, g, &d, dx_n, 1));
    } else {
        for (dx_n, dy_n) in dx.chunks_mut(x_item).zip(dy.chunks(y_item)) {
            bwd_input_item(dy_n, w, g, &d, dx_n, threads);
        }
    }
}

/// Writes every element of `dx_n`.
fn bwd_input_item(
    dy_n: &[f32],
    w: &[f32],
    g: &Conv2dGeometry,
    d: &GroupDims,
    dx_n: &mut [MaybeUninit<f32>],
    threads: usize,
) {
    let dy_g = |grp: usize| &dy_n[grp * d.cout_g * d.out_plane..][..d.cout_g * d.out_plane];
    let w_g_t =
        |grp: usize| MatRef::transposed(&w[grp * d.cout_g * d.taps..][..d.cout_g * d.taps], d.taps);
    let dx_len = d.cin_g * d.in_plane;
    if d.pointwise {
        // dx_g = w_gᵀ [cin_g, cout_g] · dy_g [cout_g, plane], written straight into dx.
        for (grp, dx_g) in dx_n.chunks_exact_mut(dx_len).enumerate() {
            let dy_g = MatRef::row_major(dy_g(grp), d.out_plane);
            sgemm_overwrite_uninit(
                d.taps,
                d.out_plane,
                d.cout_g,
                w_g_t(grp),
                dy_g,
                dx_g,
                d.in_plane,
                threads,
            );
        }
        return;
    }
    // col2im adds into it; zeroed here, on the thread that writes it next.
    let dx_n = zero_fill(dx_n);
    with_cols(d.cols_len(), |cols| {
        for (grp, dx_g) in dx_n.chunks_exact_mut(dx_len).enumerate() {
            for rows in d.tiles(g) {
                let (first, n) = (rows.start * d.out_w, rows.len() * d.out_w);
                let dy_tile = MatRef {
                    data: &dy_g(grp)[first..],
                    row_stride: d.out_plane,
                    col_stride: 1,
                };
                // cols = w_gᵀ [taps, cout_g] · dy_g[:, tile] [cout_g, n], then scattered.
                let cols = &mut cols[..d.taps * n];
                sgemm(
                    d.taps,
                    n,
                    d.cout_g,
                    w_g_t(grp),
                    dy_tile,
                    cols,
                    n,
                    false,
                    threads,
                );
                col2im_add(cols, g, rows, dx_g, threads > 1);
            }
        }
    });
}
