//! im2col / col2im for one group of one batch item.
//!
//! Column matrix layout: `cols [cin_g·kh·kw, Ho·Wo]`, row `(c·kh + ky)·kw + kx`, column `oy·Wo + ox`,
//! i.e. row-major with the same row order as the flattened weight `w [K, cin_g, kh, kw]`, so that
//! `y_g = w_g · cols` is a plain row-major gemm. A tile covers the output rows `rows` only: its
//! columns are `(oy - rows.start)·Wo + ox`, so the buffer holds `cin_g·kh·kw × rows.len()·Wo`.

use super::Conv2dGeometry;
use crate::backend::cpu::simd::simd_fn;
use rayon::prelude::*;
use std::ops::Range;

/// Output positions `o` with `o·stride + offset` inside `[0, len_in)`, as `lo..hi` clipped to
/// `[0, len_out)`. `offset = k - padding` is the tap's shift.
#[inline(always)]
pub(super) fn valid_range(
    len_in: usize,
    len_out: usize,
    offset: isize,
    stride: usize,
) -> (usize, usize) {
    let lo = if offset >= 0 {
        0
    } else {
        ((-offset) as usize).div_ceil(stride)
    };
    let last_in = len_in as isize - 1 - offset;
    let hi = if last_in < 0 {
        0
    } else {
        (last_in as usize / stride + 1).min(len_out)
    };
    (lo.min(hi), hi)
}

/// Fills `cols` (`[cin_g·kh·kw, Ho·Wo]`) from `x_g` (`[cin_g, H, W]`), zeros where the kernel
/// reads padding. Every element of `cols` is written, so the buffer need not be cleared.
/// `parallel` splits the channels over the rayon pool (used when the batch alone cannot fill it).
pub(super) fn im2col(
    x_g: &[f32],
    g: &Conv2dGeometry,
    rows: Range<usize>,
    cols: &mut [f32],
    parallel: bool,
) {
    let plane = g.in_h * g.in_w;
    let per_channel = g.kernel_h * g.kernel_w * rows.len() * g.out_w();
    debug_assert_eq!(x_g.len() % plane, 0);
    debug_assert_eq!(cols.len(), x_g.len() / plane * per_channel);
    let fill = |(c, cols_c): (usize, &mut [f32])| {
        im2col_channel(&x_g[c * plane..(c + 1) * plane], g, rows.clone(), cols_c)
    };
    if parallel {
        cols.par_chunks_mut(per_channel).enumerate().for_each(fill);
    } else {
        cols.chunks_mut(per_channel).enumerate().for_each(fill);
    }
}

simd_fn! {
fn im2col_channel(x_plane: &[f32], g: &Conv2dGeometry, rows: Range<usize>, cols_c: &mut [f32]) {
    let (ho, wo, s) = (rows.len(), g.out_w(), g.stride);
    let p = g.padding as isize;
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let row = &mut cols_c[(ky * g.kernel_w + kx) * ho * wo..][..ho * wo];
            let x_off = kx as isize - p;
            let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
            for (t, oy) in rows.clone().enumerate() {
                let out = &mut row[t * wo..(t + 1) * wo];
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= g.in_h as isize {
                    out.fill(0.0);
                    continue;
                }
                let src = &x_plane[iy as usize * g.in_w..][..g.in_w];
                out[..lo].fill(0.0);
                out[hi..].fill(0.0);
                if lo < hi {
                    // ix = ox·s + x_off is inside the row for every ox in lo..hi.
                    let start = (lo as isize * s as isize + x_off) as usize;
                    if s == 1 {
                        out[lo..hi].copy_from_slice(&src[start..start + (hi - lo)]);
                    } else {
                        gather_strided(&mut out[lo..hi], &src[start..], s);
                    }
                }
            }
        }
    }
}
}

/// Adds `cols` (`[cin_g·kh·kw, Ho·Wo]`) back into `dx_g` (`[cin_g, H, W]`): the adjoint of
/// [`im2col`]. Each input channel only receives from its own rows, so channels run in parallel
/// without changing the summation order.
pub(super) fn col2im_add(
    cols: &[f32],
    g: &Conv2dGeometry,
    rows: Range<usize>,
    dx_g: &mut [f32],
    parallel: bool,
) {
    let plane = g.in_h * g.in_w;
    let per_channel = g.kernel_h * g.kernel_w * rows.len() * g.out_w();
    debug_assert_eq!(dx_g.len() % plane, 0);
    debug_assert_eq!(cols.len(), dx_g.len() / plane * per_channel);
    let add = |(c, dx_plane): (usize, &mut [f32])| {
        col2im_channel(
            &cols[c * per_channel..(c + 1) * per_channel],
            g,
            rows.clone(),
            dx_plane,
        )
    };
    if parallel {
        dx_g.par_chunks_mut(plane).enumerate().for_each(add);
    } else {
        dx_g.chunks_mut(plane).enumerate().for_each(add);
    }
}

simd_fn! {
fn col2im_channel(cols_c: &[f32], g: &Conv2dGeometry, rows: Range<usize>, dx_plane: &mut [f32]) {
    if g.stride > 1 {
        col2im_channel_strided(cols_c, g, rows, dx_plane);
        return;
    }
    let (ho, wo, s) = (rows.len(), g.out_w(), g.stride);
    let p = g.padding as isize;
    for ky in 0..g.kernel_h {
        for kx in 0..g.kernel_w {
            let row = &cols_c[(ky * g.kernel_w + kx) * ho * wo..][..ho * wo];
            let x_off = kx as isize - p;
            let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
            if lo >= hi {
                continue;
            }
            let start = (lo as isize * s as isize + x_off) as usize;
            for (t, oy) in rows.clone().enumerate() {
                let iy = (oy * s + ky) as isize - p;
                if iy < 0 || iy >= g.in_h as isize {
                    continue;
                }
                let src = &row[t * wo + lo..t * wo + hi];
                let dst = &mut dx_plane[iy as usize * g.in_w..][..g.in_w];
                if s == 1 {
                    for (d, v) in dst[start..start + (hi - lo)].iter_mut().zip(src) {
                        *d += *v;
                    }
                } else {
                    scatter_add_strided(&mut dst[start..], src, s);
                }
            }
        }
    }
}
}

simd_fn! {
/// [`col2im_channel`] for stride > 1: the taps of one (ky, output row) are summed into the row's
/// stride phases with contiguous adds, then merged into the input row once, instead of
/// `kw` strided scatters.
fn col2im_channel_strided(
    cols_c: &[f32],
    g: &Conv2dGeometry,
    rows: Range<usize>,
    dx_plane: &mut [f32],
) {
    let (ho, wo, s) = (rows.len(), g.out_w(), g.stride);
    let p = g.padding as isize;
    let mut phases = Phases::new(g.in_w, s);
    for ky in 0..g.kernel_h {
        for (t, oy) in rows.clone().enumerate() {
            let iy = (oy * s + ky) as isize - p;
            if iy < 0 || iy >= g.in_h as isize {
                continue;
            }
            phases.clear();
            for kx in 0..g.kernel_w {
                let x_off = kx as isize - p;
                let (lo, hi) = valid_range(g.in_w, wo, x_off, s);
                if lo >= hi {
                    continue;
                }
                let start = (lo as isize * s as isize + x_off) as usize;
                let src = &cols_c[((ky * g.kernel_w + kx) * ho + t) * wo..][lo..hi];
                for (d, v) in phases.slice_mut(start, hi - lo).iter_mut().zip(src) {
                    *d += *v;
                }
            }
            phases.merge_add(&mut dx_plane[iy as usize * g.in_w..][..g.in_w]);
        }
    }
}
}

/// `out[t] = src[t·stride]`. Walking `src` in fixed-size chunks (rather than `step_by`) lets the
/// compiler use shuffles; `src` may end before the last full chunk.
#[inline(always)]
fn gather_strided(out: &mut [f32], src: &[f32], stride: usize) {
    let full = (src.len() / stride).min(out.len());
    for (o, chunk) in out[..full].iter_mut().zip(src.chunks_exact(stride)) {
        *o = chunk[0];
    }
    for (t, o) in out.iter_mut().enumerate().skip(full) {
        *o = src[t * stride];
    }
}

/// `dst[t·stride] += src[t]`, the adjoint of [`gather_strided`].
#[inline(always)]
fn scatter_add_strided(dst: &mut [f32], src: &[f32], stride: usize) {
    let full = (dst.len() / stride).min(src.len());
    for (chunk, v) in dst.chunks_exact_mut(stride).zip(&src[..full]) {
        chunk[0] += *v;
    }
    for (t, v) in src.iter().enumerate().skip(full) {
        dst[t * stride] += *v;
    }
}

/// One input row split by position modulo the stride: phase `r` holds `row[r], row[r+s], ...`,
/// so the strided taps `row[start + t·s]` become the contiguous `phase[start % s][start / s + t]`.
pub(super) struct Phases {
    data: Vec<f32>,
    stride: usize,
    /// Elements per phase: `ceil(W / stride)`.
    len: usize,
}

impl Phases {
    pub(super) fn new(width: usize, stride: usize) -> Self {
        let stride = stride.max(1);
        let len = width.div_ceil(stride);
        let size = if stride > 1 { stride * len } else { 0 };
        Phases {
            data: vec![0.0; size],
            stride,
            len,
        }
    }
    #[inline(always)]
    pub(super) fn split(&mut self, row: &[f32]) {
        debug_assert!(row.len() <= self.stride * self.len);
        if self.stride == 2 {
            // The common case, written so that it compiles to shuffles rather than scalar moves.
            let (even, odd) = self.data.split_at_mut(self.len);
            let pairs = row.chunks_exact(2);
            if let [last] = pairs.remainder() {
                even[self.len - 1] = *last;
            }
            for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs) {
                *e = pair[0];
                *o = pair[1];
            }
            return;
        }
        for (j, chunk) in row.chunks(self.stride).enumerate() {
            for (r, v) in chunk.iter().enumerate() {
                self.data[r * self.len + j] = *v;
            }
        }
    }
    #[inline(always)]
    pub(super) fn clear(&mut self) {
        self.data.fill(0.0);
    }
    /// `row[i] += phase[i % s][i / s]` for every `i`: the inverse of [`Phases::split`], adding.
    #[inline(always)]
    pub(super) fn merge_add(&self, row: &mut [f32]) {
        debug_assert!(row.len() <= self.stride * self.len);
        if self.stride == 2 {
            let (even, odd) = self.data.split_at(self.len);
            let mut pairs = row.chunks_exact_mut(2);
            for ((e, o), pair) in even.iter().zip(odd).zip(&mut pairs) {
                pair[0] += *e;
                pair[1] += *o;
            }
            if let [last] = pairs.into_remainder() {
                *last += even[self.len - 1];
            }
            return;
        }
        for (j, chunk) in row.chunks_mut(self.stride).enumerate() {
            for (r, v) in chunk.iter_mut().enumerate() {
                *v += self.data[r * self.len + j];
            }
        }
    }
    #[inline(always)]
    pub(super) fn slice(&self, start: usize, n: usize) -> &[f32] {
        &self.data[(start % self.stride) * self.len + start / self.stride..][..n]
    }
    #[inline(always)]
    pub(super) fn slice_mut(&mut self, start: usize, n: usize) -> &mut [f32] {
        &mut self.data[(start % self.stride) * self.len + start / self.stride..][..n]
    }
}
