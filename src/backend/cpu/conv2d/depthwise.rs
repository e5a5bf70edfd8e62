//! Depthwise convs (groups = C = K, weight `[C,1,kh,kw]`) as direct loops: a gemm per channel would
//! have one row, and the work is memory-bound anyway (9 MACs per loaded element for 3×3).
//!
//! Every loop runs over one output row against one input row for a fixed tap, so the inner loop is a
//! contiguous axpy/dot that the compiler vectorises; for stride > 1 the input row is first split
//! into its `stride` phases ([`Phases`]), which turns every tap into a contiguous slice again. Forward and bwd_input parallelise
//! over (item, channel) planes, bwd_weight over channels with the batch summed inside in index
//! order, so no result depends on the thread count.

use super::im2col::{valid_range, Phases};
use super::Conv2dGeometry;
use crate::backend::cpu::simd::simd_fn;
use rayon::prelude::*;

/// Overwrites `y`.
pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry, y: &mut [f32]) {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    if out_plane == 0 || in_plane == 0 {
        y.fill(0.0);
        return;
    }
    y.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(plane, y_plane)| {
            let c = plane % g.in_channels;
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            y_plane.fill(0.0);
            fwd_plane(x_plane, &w[c * taps..(c + 1) * taps], g, y_plane);
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

/// Overwrites `dx`.
pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry, dx: &mut [f32]) {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    if out_plane == 0 || in_plane == 0 {
        dx.fill(0.0);
        return;
    }
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.in_channels;
            let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
            dx_plane.fill(0.0);
            bwd_input_plane(dy_plane, &w[c * taps..(c + 1) * taps], g, dx_plane);
        });
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
