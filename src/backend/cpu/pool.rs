//! Pooling over `[planes, H, W]` on the CPU (slices in, `Vec` out): max (padding acts as −∞),
//! average (padding counts as zeros in the divisor k²) and ×2 nearest upsampling, planes in
//! parallel. The geometry is the CUDA launcher's ([`PoolGeometry`]); `ops::pool` validates,
//! dispatches and records.

use rayon::prelude::*;

pub use crate::backend::cuda::pool::PoolGeometry;

/// Max pooling: the outputs and, per output, the index in its plane of the first maximal
/// element of the window (where the backward sends the gradient).
///
/// Separable: a row pass (max over kx of each input row) then a column pass (max over ky of
/// the row results), k + k taps per output instead of k² (SPP's k = 13: 26 vs 169). Same
/// winner as scanning the window in row-major order taking the first value that is greater
/// (or the first NaN): the row pass picks each row's first max / first NaN, the column pass
/// the first row whose pick is greatest / NaN, i.e. the window's first in row-major order.
pub fn max_fwd(xv: &[f32], g: &PoolGeometry) -> (Vec<f32>, Vec<u32>) {
    let (h, w, ho, wo) = (g.h, g.w, g.out_h(), g.out_w());
    let (k, s, pad) = (g.kernel, g.stride, g.padding);
    // In-bounds tap range of output o along an axis of length n (never empty: pad < k).
    let range = move |o: usize, n: usize| {
        let start = (o * s) as isize - pad as isize;
        (
            start.max(0) as usize,
            ((start + k as isize) as usize).min(n),
        )
    };
    let better = |v: f32, best: f32| v > best || v.is_nan() && !best.is_nan();
    let mut y = vec![0f32; g.planes * ho * wo];
    let mut arg = vec![0u32; g.planes * ho * wo];
    y.par_chunks_mut((ho * wo).max(1))
        .zip(arg.par_chunks_mut((ho * wo).max(1)))
        .enumerate()
        .for_each_init(
            || (Vec::new(), Vec::new()),
            |(rv, ri), (pl, (yp, ap))| {
                let xp = &xv[pl * h * w..(pl + 1) * h * w];
                rv.clear();
                ri.clear();
                for iy in 0..h {
                    let row = &xp[iy * w..(iy + 1) * w];
                    for ox in 0..wo {
                        let (lo, hi) = range(ox, w);
                        let (mut best, mut bi) = (row[lo], lo);
                        for (ix, &v) in row.iter().enumerate().take(hi).skip(lo + 1) {
                            if better(v, best) {
                                best = v;
                                bi = ix;
                            }
                        }
                        rv.push(best);
                        ri.push((iy * w + bi) as u32);
                    }
                }
                for oy in 0..ho {
                    let (lo, hi) = range(oy, h);
                    for ox in 0..wo {
                        let (mut best, mut bi) = (rv[lo * wo + ox], ri[lo * wo + ox]);
                        for iy in lo + 1..hi {
                            let v = rv[iy * wo + ox];
                            if better(v, best) {
                                best = v;
                                bi = ri[iy * wo + ox];
                            }
                        }
                        yp[oy * wo + ox] = best;
                        ap[oy * wo + ox] = bi;
                    }
                }
            },
        );
    (y, arg)
}

/// Max pooling backward: each output's gradient added at its window's argmax.
pub fn max_bwd(dyv: &[f32], arg: &[u32], g: &PoolGeometry) -> Vec<f32> {
    let (h, w, ho, wo) = (g.h, g.w, g.out_h(), g.out_w());
    let mut dx = vec![0f32; g.x_len()];
    dx.par_chunks_mut((h * w).max(1))
        .enumerate()
        .for_each(|(pl, dxp)| {
            for j in 0..ho * wo {
                let o = pl * ho * wo + j;
                dxp[arg[o] as usize] += dyv[o];
            }
        });
    dx
}

/// Visit the in-bounds taps of output (oy, ox) (plane indices).
fn avg_taps(g: &PoolGeometry, oy: usize, ox: usize, f: &mut dyn FnMut(usize)) {
    let (h, w) = (g.h, g.w);
    for ky in 0..g.kernel {
        let iy = (oy * g.stride + ky) as isize - g.padding as isize;
        if iy < 0 || iy >= h as isize {
            continue;
        }
        for kx in 0..g.kernel {
            let ix = (ox * g.stride + kx) as isize - g.padding as isize;
            if ix >= 0 && ix < w as isize {
                f(iy as usize * w + ix as usize);
            }
        }
    }
}

/// Average pooling: the window's in-bounds sum (in f32, row-major) times 1/k².
pub fn avg_fwd(xv: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let (h, w, ho, wo) = (g.h, g.w, g.out_h(), g.out_w());
    let inv = 1.0 / (g.kernel * g.kernel) as f32;
    let mut y = vec![0f32; g.planes * ho * wo];
    y.par_chunks_mut((ho * wo).max(1))
        .enumerate()
        .for_each(|(pl, yp)| {
            let xp = &xv[pl * h * w..(pl + 1) * h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0f32;
                    avg_taps(g, oy, ox, &mut |i| s += xp[i]);
                    yp[oy * wo + ox] = s * inv;
                }
            }
        });
    y
}

/// Average pooling backward: `dy/k²` added to every in-bounds tap.
pub fn avg_bwd(dyv: &[f32], g: &PoolGeometry) -> Vec<f32> {
    let (h, w, ho, wo) = (g.h, g.w, g.out_h(), g.out_w());
    let inv = 1.0 / (g.kernel * g.kernel) as f32;
    let mut dx = vec![0f32; g.x_len()];
    dx.par_chunks_mut((h * w).max(1))
        .enumerate()
        .for_each(|(pl, dxp)| {
            for oy in 0..ho {
                for ox in 0..wo {
                    let d = dyv[pl * ho * wo + oy * wo + ox] * inv;
                    avg_taps(g, oy, ox, &mut |i| dxp[i] += d);
                }
            }
        });
    dx
}

/// ×2 nearest upsampling of `planes` planes of `h × w`.
pub fn upsample2x_fwd(xv: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut y = vec![0f32; planes * 4 * h * w];
    y.par_chunks_mut((4 * h * w).max(1))
        .enumerate()
        .for_each(|(pl, yp)| {
            let xp = &xv[pl * h * w..(pl + 1) * h * w];
            for oy in 0..2 * h {
                for ox in 0..2 * w {
                    yp[oy * 2 * w + ox] = xp[(oy / 2) * w + ox / 2];
                }
            }
        });
    y
}

/// ×2 nearest upsampling backward: each input takes the sum of its four outputs' gradients.
pub fn upsample2x_bwd(dyv: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let mut dx = vec![0f32; planes * h * w];
    dx.par_chunks_mut((h * w).max(1))
        .enumerate()
        .for_each(|(pl, dxp)| {
            let dp = &dyv[pl * 4 * h * w..(pl + 1) * 4 * h * w];
            for oy in 0..2 * h {
                for ox in 0..2 * w {
                    dxp[(oy / 2) * w + ox / 2] += dp[oy * 2 * w + ox];
                }
            }
        });
    dx
}
