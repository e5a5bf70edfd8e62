//! Depthwise convs (groups = C = K, weight `[C,1,kh,kw]`) as direct loops: a gemm per channel would
//! have one row, and the work is memory-bound anyway (9 MACs per loaded element for 3×3).
//!
//! Every loop runs over one output row against one input row for a fixed tap, so the inner loop is a
//! contiguous axpy/dot that the compiler vectorises; for stride > 1 the input row is first split
//! into its `stride` phases ([`Phases`]), which turns every tap into a contiguous slice again.
//! 3×3 stride-1 convs (YOLOX-nano's bottlenecks and head) compute each output row of the forward
//! and the input gradient in one pass over all nine taps instead (same sums in the same order;
//! ~2× the GB/s, BENCHMARKS.md "Run-time SIMD"). Forward and bwd_input parallelise
//! over (item, channel) planes, bwd_weight over channels with the batch summed inside in index
//! order, so no result depends on the thread count.

use super::im2col::{valid_range, Phases};
use super::Conv2dGeometry;
use crate::backend::cpu::simd::simd_fn;
use crate::backend::cpu::uninit::zero_fill;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Writes every element of `y` (which may be uninitialised).
pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry, y: &mut [MaybeUninit<f32>]) {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    if out_plane == 0 || in_plane == 0 {
        zero_fill(y);
        return;
    }
    y.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(plane, y_plane)| {
            let c = plane % g.in_channels;
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            let w_c = &w[c * taps..(c + 1) * taps];
            if is_3x3_same(g) {
                fwd_plane_3x3(x_plane, w_c, g.in_w, y_plane);
            } else {
                fwd_plane(x_plane, w_c, g, zero_fill(y_plane));
            }
        });
}

simd_fn! {
fn fwd_plane(x_plane: &[f32], w_c: &[f32], g: &Conv2dGeometry, y_plane: &mut [f32]) {
    let (ho, wo, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding as isize);
    let mut phases = Phases::new(g.in_w, s);
    for oy in 0..ho {
        let y_row = &mut y_plane[oy * wo..(oy + 1) * wo];
        for ky in 0..g.kernel_h {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            let x_row = &x_plane[iy as usize * g.in_w..][..g.in_w];
            if s > 1 {
                phases.split(x_row);
            }
            for kx in 0..g.kernel_w {
                let weight = w_c[ky * g.kernel_w + kx];
                let x_off = kx as isize - p;
                let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * s as isize + x_off) as usize;
                let src = if s == 1 {
                    &x_row[start..start + (hi - lo)]
                } else {
                    phases.slice(start, hi - lo)
                };
                for (o, v) in y_row[lo..hi].iter_mut().zip(src) {
                    *o += weight * *v;
                }
            }
        }
    }
}
}

/// Writes every element of `dx` (which may be uninitialised).
pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry, dx: &mut [MaybeUninit<f32>]) {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    if out_plane == 0 || in_plane == 0 {
        zero_fill(dx);
        return;
    }
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.in_channels;
            let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
            let w_c = &w[c * taps..(c + 1) * taps];
            if is_3x3_same(g) {
                bwd_input_plane_3x3(dy_plane, w_c, g.in_w, dx_plane);
            } else {
                bwd_input_plane(dy_plane, w_c, g, zero_fill(dx_plane));
            }
        });
}

/// 3×3, stride 1, padding 1 (every stride-1 depthwise conv of YOLOX-nano): output rows are
/// computed in one pass each ([`row_taps`]) instead of nine axpy passes over the row.
fn is_3x3_same(g: &Conv2dGeometry) -> bool {
    g.kernel_h == 3 && g.kernel_w == 3 && g.stride == 1 && g.padding == 1
}

simd_fn! {
/// [`fwd_plane`] for [`is_3x3_same`] geometries (output plane = input plane, `width` wide),
/// writing every element of `y_plane`: the same sums in the same order (taps by row then
/// column, invalid taps skipped), so the same bits.
fn fwd_plane_3x3(x_plane: &[f32], w_c: &[f32], width: usize, y_plane: &mut [MaybeUninit<f32>]) {
    let height = x_plane.len() / width;
    let row = |i: usize| &x_plane[i * width..(i + 1) * width];
    let w = |ky: usize| [w_c[3 * ky], w_c[3 * ky + 1], w_c[3 * ky + 2]];
    for (oy, y_row) in y_plane.chunks_exact_mut(width).enumerate() {
        // Input rows oy − 1, oy, oy + 1 (taps ky = 0, 1, 2), those inside the plane.
        match (oy > 0, oy + 1 < height) {
            (true, true) => row_taps::<3, false>(
                y_row,
                [row(oy - 1), row(oy), row(oy + 1)],
                [w(0), w(1), w(2)],
            ),
            (false, true) => row_taps::<2, false>(y_row, [row(oy), row(oy + 1)], [w(1), w(2)]),
            (true, false) => row_taps::<2, false>(y_row, [row(oy - 1), row(oy)], [w(0), w(1)]),
            (false, false) => row_taps::<1, false>(y_row, [row(oy)], [w(1)]),
        }
    }
}
}

simd_fn! {
/// [`bwd_input_plane`] for [`is_3x3_same`] geometries, writing every element of `dx_plane`:
/// input row `iy`
/// receives from output rows iy − 1, iy, iy + 1 through taps ky = 2, 1, 0, in that order, each
/// through taps kx = 0, 1, 2 reading dy columns x + 1, x, x − 1 (the order of the general
/// kernel's scatter, so the same bits).
fn bwd_input_plane_3x3(
    dy_plane: &[f32],
    w_c: &[f32],
    width: usize,
    dx_plane: &mut [MaybeUninit<f32>],
) {
    let height = dy_plane.len() / width;
    let row = |i: usize| &dy_plane[i * width..(i + 1) * width];
    let w = |ky: usize| [w_c[3 * ky], w_c[3 * ky + 1], w_c[3 * ky + 2]];
    for (iy, dx_row) in dx_plane.chunks_exact_mut(width).enumerate() {
        match (iy > 0, iy + 1 < height) {
            (true, true) => row_taps::<3, true>(
                dx_row,
                [row(iy - 1), row(iy), row(iy + 1)],
                [w(2), w(1), w(0)],
            ),
            (false, true) => row_taps::<2, true>(dx_row, [row(iy), row(iy + 1)], [w(1), w(0)]),
            (true, false) => row_taps::<2, true>(dx_row, [row(iy - 1), row(iy)], [w(2), w(1)]),
            (false, false) => row_taps::<1, true>(dx_row, [row(iy)], [w(1)]),
        }
    }
}
}

/// Writes `out[x] = Σ_r Σ_k w[r][k] · rows[r][col_k(x)]` for every `x`, summed from 0 in order
/// r, then k, skipping columns outside the row; `col_k(x) = x + k − 1`, or `x − k + 1` when `REVERSED` (the input
/// gradient). Interior columns (all three taps inside) run as one vectorised loop, the two
/// edge columns with the checks.
#[inline(always)]
fn row_taps<const R: usize, const REVERSED: bool>(
    out: &mut [MaybeUninit<f32>],
    rows: [&[f32]; R],
    w: [[f32; 3]; R],
) {
    let n = out.len();
    let col = |x: usize, k: usize| -> Option<usize> {
        let (x, k) = (x as isize, k as isize);
        let c = if REVERSED { x + 1 - k } else { x + k - 1 };
        (0..n as isize).contains(&c).then_some(c as usize)
    };
    let edge = |x: usize| {
        let mut acc = 0f32;
        for (w_r, row) in w.iter().zip(rows) {
            for (k, &w_k) in w_r.iter().enumerate() {
                if let Some(c) = col(x, k) {
                    acc += w_k * row[c];
                }
            }
        }
        acc
    };
    if n >= 3 {
        let m = n - 2;
        let left: [&[f32]; R] = std::array::from_fn(|r| &rows[r][..m]);
        let mid: [&[f32]; R] = std::array::from_fn(|r| &rows[r][1..m + 1]);
        let right: [&[f32]; R] = std::array::from_fn(|r| &rows[r][2..m + 2]);
        // Tap k reads column x − 1 + k (forward) or x + 1 − k (reversed).
        let (first, last) = if REVERSED {
            (right, left)
        } else {
            (left, right)
        };
        for (i, o) in out[1..m + 1].iter_mut().enumerate() {
            let mut acc = 0f32;
            for r in 0..R {
                acc += w[r][0] * first[r][i];
                acc += w[r][1] * mid[r][i];
                acc += w[r][2] * last[r][i];
            }
            o.write(acc);
        }
    }
    if n >= 1 {
        out[0].write(edge(0));
    }
    if n >= 2 {
        out[n - 1].write(edge(n - 1));
    }
}

simd_fn! {
fn bwd_input_plane(dy_plane: &[f32], w_c: &[f32], g: &Conv2dGeometry, dx_plane: &mut [f32]) {
    let (ho, wo, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding as isize);
    let mut phases = Phases::new(g.in_w, s);
    for oy in 0..ho {
        let dy_row = &dy_plane[oy * wo..(oy + 1) * wo];
        for ky in 0..g.kernel_h {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            let dx_row = &mut dx_plane[iy as usize * g.in_w..][..g.in_w];
            if s > 1 {
                phases.clear();
            }
            for kx in 0..g.kernel_w {
                let weight = w_c[ky * g.kernel_w + kx];
                let x_off = kx as isize - p;
                let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * s as isize + x_off) as usize;
                let dst = if s == 1 {
                    &mut dx_row[start..start + (hi - lo)]
                } else {
                    phases.slice_mut(start, hi - lo)
                };
                for (d, v) in dst.iter_mut().zip(&dy_row[lo..hi]) {
                    *d += weight * *v;
                }
            }
            if s > 1 {
                phases.merge_add(dx_row);
            }
        }
    }
}
}

/// Overwrites `dw`.
pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry, dw: &mut [f32]) {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    if out_plane == 0 || in_plane == 0 || taps == 0 {
        dw.fill(0.0);
        return;
    }
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, dw_c)| {
        dw_c.fill(0.0);
        for n in 0..g.batch {
            let plane = n * g.in_channels + c;
            let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            bwd_weight_plane(dy_plane, x_plane, g, dw_c);
        }
    });
}

simd_fn! {
/// Adds one plane's contribution to the channel's `kh·kw` weight gradient.
fn bwd_weight_plane(dy_plane: &[f32], x_plane: &[f32], g: &Conv2dGeometry, dw_c: &mut [f32]) {
    let (ho, wo, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding as isize);
    let taps = g.kernel_h * g.kernel_w;
    let mut acc: Vec<Lanes> = (0..taps).map(|_| Lanes::default()).collect();
    let mut phases = Phases::new(g.in_w, s);
    for oy in 0..ho {
        let dy_row = &dy_plane[oy * wo..(oy + 1) * wo];
        for ky in 0..g.kernel_h {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            let x_row = &x_plane[iy as usize * g.in_w..][..g.in_w];
            if s > 1 {
                phases.split(x_row);
            }
            for kx in 0..g.kernel_w {
                let x_off = kx as isize - p;
                let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * s as isize + x_off) as usize;
                let src = if s == 1 {
                    &x_row[start..start + (hi - lo)]
                } else {
                    phases.slice(start, hi - lo)
                };
                acc[ky * g.kernel_w + kx].add_dot(&dy_row[lo..hi], src);
            }
        }
    }
    for (d, a) in dw_c.iter_mut().zip(&acc) {
        *d += a.sum();
    }
}
}

const LANES: usize = 8;

/// Eight independent partial sums: lets the compiler vectorise a dot product (a single running
/// sum would force sequential adds) while keeping a fixed, thread-independent order.
#[derive(Default)]
struct Lanes([f32; LANES]);

impl Lanes {
    #[inline(always)]
    fn add_dot(&mut self, a: &[f32], b: &[f32]) {
        debug_assert_eq!(a.len(), b.len());
        let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
        for (ca, cb) in a_chunks.zip(b_chunks) {
            for i in 0..LANES {
                self.0[i] += ca[i] * cb[i];
            }
        }
        for (i, (va, vb)) in a_tail.iter().zip(b_tail).enumerate() {
            self.0[i] += va * vb;
        }
    }
    #[inline(always)]
    fn sum(&self) -> f32 {
        let l = &self.0;
        ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::uninit::as_uninit;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / 16_777_216.0
                    - 0.5
            })
            .collect()
    }

    /// The one-pass 3×3 kernels give the general kernels' bits on every plane shape class:
    /// one row or column, two, and larger odd sizes.
    #[test]
    fn same_bits_as_the_general_kernels() {
        for (h, w) in [
            (1, 1),
            (1, 5),
            (5, 1),
            (2, 2),
            (2, 7),
            (7, 3),
            (9, 13),
            (16, 16),
        ] {
            let g = Conv2dGeometry {
                batch: 1,
                in_channels: 1,
                in_h: h,
                in_w: w,
                out_channels: 1,
                kernel_h: 3,
                kernel_w: 3,
                stride: 1,
                padding: 1,
                groups: 1,
            };
            assert!(is_3x3_same(&g));
            let (x, wt, dy) = (values(h * w, 1), values(9, 2), values(h * w, 3));
            let (mut general, mut fast) = (vec![0f32; h * w], vec![f32::NAN; h * w]);
            fwd_plane(&x, &wt, &g, &mut general);
            // SAFETY (both calls): the kernels write only floats.
            fwd_plane_3x3(&x, &wt, w, unsafe { as_uninit(&mut fast) });
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&general), bits(&fast), "fwd {h}x{w}");
            let (mut general, mut fast) = (vec![0f32; h * w], vec![f32::NAN; h * w]);
            bwd_input_plane(&dy, &wt, &g, &mut general);
            bwd_input_plane_3x3(&dy, &wt, w, unsafe { as_uninit(&mut fast) });
            assert_eq!(bits(&general), bits(&fast), "bwd_input {h}x{w}");
        }
    }
}
