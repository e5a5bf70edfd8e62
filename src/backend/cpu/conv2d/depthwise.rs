//! Depthwise convs (groups = C = K, weight `[C,1,kh,kw]`) as direct loops: a gemm per channel would
//! have one row, and the work is memory-bound anyway (9 MACs per loaded element for 3×3).
//!
//! Every loop runs over one output row against one input row for a fixed tap, so the inner loop is a
//! contiguous axpy/dot for stride 1 that the compiler vectorises. Forward and bwd_input parallelise
//! over (item, channel) planes, bwd_weight over channels with the batch summed inside in index
//! order, so no result depends on the thread count.

use super::im2col::valid_range;
use super::Conv2dGeometry;
use rayon::prelude::*;

pub fn fwd(x: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    let mut y = vec![0f32; g.y_len()];
    if out_plane == 0 || in_plane == 0 {
        return y;
    }
    y.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(plane, y_plane)| {
            let c = plane % g.in_channels;
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            fwd_plane(x_plane, &w[c * taps..(c + 1) * taps], g, y_plane);
        });
    y
}

fn fwd_plane(x_plane: &[f32], w_c: &[f32], g: &Conv2dGeometry, y_plane: &mut [f32]) {
    let (ho, wo, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding as isize);
    for oy in 0..ho {
        let y_row = &mut y_plane[oy * wo..(oy + 1) * wo];
        for ky in 0..g.kernel_h {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            let x_row = &x_plane[iy as usize * g.in_w..][..g.in_w];
            for kx in 0..g.kernel_w {
                let weight = w_c[ky * g.kernel_w + kx];
                let x_off = kx as isize - p;
                let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * s as isize + x_off) as usize;
                if s == 1 {
                    for (o, v) in y_row[lo..hi]
                        .iter_mut()
                        .zip(&x_row[start..start + (hi - lo)])
                    {
                        *o += weight * *v;
                    }
                } else {
                    for (o, v) in y_row[lo..hi]
                        .iter_mut()
                        .zip(x_row[start..].iter().step_by(s))
                    {
                        *o += weight * *v;
                    }
                }
            }
        }
    }
}

pub fn bwd_input(dy: &[f32], w: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    let mut dx = vec![0f32; g.x_len()];
    if out_plane == 0 || in_plane == 0 {
        return dx;
    }
    dx.par_chunks_mut(in_plane)
        .enumerate()
        .for_each(|(plane, dx_plane)| {
            let c = plane % g.in_channels;
            let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
            bwd_input_plane(dy_plane, &w[c * taps..(c + 1) * taps], g, dx_plane);
        });
    dx
}

fn bwd_input_plane(dy_plane: &[f32], w_c: &[f32], g: &Conv2dGeometry, dx_plane: &mut [f32]) {
    let (ho, wo, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding as isize);
    for oy in 0..ho {
        let dy_row = &dy_plane[oy * wo..(oy + 1) * wo];
        for ky in 0..g.kernel_h {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            let dx_row = &mut dx_plane[iy as usize * g.in_w..][..g.in_w];
            for kx in 0..g.kernel_w {
                let weight = w_c[ky * g.kernel_w + kx];
                let x_off = kx as isize - p;
                let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * s as isize + x_off) as usize;
                if s == 1 {
                    for (d, v) in dx_row[start..start + (hi - lo)]
                        .iter_mut()
                        .zip(&dy_row[lo..hi])
                    {
                        *d += weight * *v;
                    }
                } else {
                    for (d, v) in dx_row[start..].iter_mut().step_by(s).zip(&dy_row[lo..hi]) {
                        *d += weight * *v;
                    }
                }
            }
        }
    }
}

pub fn bwd_weight(dy: &[f32], x: &[f32], g: &Conv2dGeometry) -> Vec<f32> {
    let (in_plane, out_plane, taps) = (
        g.in_h * g.in_w,
        g.out_h() * g.out_w(),
        g.kernel_h * g.kernel_w,
    );
    let mut dw = vec![0f32; g.w_len()];
    if out_plane == 0 || in_plane == 0 || taps == 0 {
        return dw;
    }
    dw.par_chunks_mut(taps).enumerate().for_each(|(c, dw_c)| {
        for n in 0..g.batch {
            let plane = n * g.in_channels + c;
            let dy_plane = &dy[plane * out_plane..(plane + 1) * out_plane];
            let x_plane = &x[plane * in_plane..(plane + 1) * in_plane];
            bwd_weight_plane(dy_plane, x_plane, g, dw_c);
        }
    });
    dw
}

/// Adds one plane's contribution to the channel's `kh·kw` weight gradient.
fn bwd_weight_plane(dy_plane: &[f32], x_plane: &[f32], g: &Conv2dGeometry, dw_c: &mut [f32]) {
    let (ho, wo, s, p) = (g.out_h(), g.out_w(), g.stride, g.padding as isize);
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let x_off = kx as isize - p;
            let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
            if lo >= hi {
                continue;
            }
            let start = (lo as isize * s as isize + x_off) as usize;
            let mut acc = Lanes::default();
            for oy in 0..ho {
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= g.in_h as isize {
                    continue;
                }
                let dy_row = &dy_plane[oy * wo + lo..oy * wo + hi];
                let x_row = &x_plane[iy as usize * g.in_w..][..g.in_w];
                if s == 1 {
                    acc.add_dot(dy_row, &x_row[start..start + (hi - lo)]);
                } else {
                    acc.add_dot_strided(dy_row, &x_row[start..], s);
                }
            }
            dw_c[ky * g.kernel_w + kx] += acc.sum();
        }
    }
}

const LANES: usize = 8;

/// Eight independent partial sums: lets the compiler vectorise a dot product (a single running
/// sum would force sequential adds) while keeping a fixed, thread-independent order.
#[derive(Default)]
struct Lanes([f32; LANES]);

impl Lanes {
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
    /// `Σ a[i]·b[i·stride]`.
    fn add_dot_strided(&mut self, a: &[f32], b: &[f32], stride: usize) {
        for (i, (va, vb)) in a.iter().zip(b.iter().step_by(stride)).enumerate() {
            self.0[i % LANES] += va * vb;
        }
    }
    fn sum(&self) -> f32 {
        let l = &self.0;
        ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]))
    }
}
