//! Pooling over `[N, C, H, W]`: max (padding acts as −∞, as PyTorch), average (padding counts as
//! zeros in the divisor: PyTorch's default `count_include_pad=True`), global average, and ×2
//! nearest upsampling (YOLOX's PAFPN).

use rayon::prelude::*;

use crate::autograd::record;
use crate::backend::cuda::bf16::{CudaBuffer, CudaValues};
use crate::backend::cuda::pool::{self as cuda_pool, PoolGeometry};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

struct PoolGeom {
    planes: usize,
    h: usize,
    w: usize,
    ho: usize,
    wo: usize,
}

fn geom(op: &str, x: &Tensor, p: &Pool2dParams) -> Result<PoolGeom> {
    if x.rank() != 4 {
        return Err(Error::shape(op, "x [N, C, H, W]", x.shape()));
    }
    if p.kernel == 0 || p.stride == 0 || p.padding * 2 > p.kernel {
        return Err(Error::op(
            op,
            format!("bad parameters {p:?} (need kernel, stride >= 1 and padding <= kernel/2)"),
        ));
    }
    let (h, w) = (x.dims()[2], x.dims()[3]);
    if h + 2 * p.padding < p.kernel || w + 2 * p.padding < p.kernel {
        return Err(Error::op(
            op,
            format!(
                "kernel {} larger than padded input of x {}",
                p.kernel,
                x.shape()
            ),
        ));
    }
    Ok(PoolGeom {
        planes: x.dims()[0] * x.dims()[1],
        h,
        w,
        ho: (h + 2 * p.padding - p.kernel) / p.stride + 1,
        wo: (w + 2 * p.padding - p.kernel) / p.stride + 1,
    })
}

/// Max pooling; the gradient goes to the first maximal element of each window.
pub fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let g = geom("max_pool2d", x, &p)?;
    let (h, w, ho, wo) = (g.h, g.w, g.ho, g.wo);
    if x.device() == Device::Cuda {
        let cg = PoolGeometry {
            planes: g.planes,
            h,
            w,
            kernel: p.kernel,
            stride: p.stride,
            padding: p.padding,
        };
        // A bf16 activation (bf16 storage mode) is pooled as bf16.
        let (y, arg) =
            x.with_cuda_values(|dev, xv| match xv {
                CudaValues::F32(xs) => cuda_pool::max_pool2d_fwd(dev, xs, &cg)
                    .map(|(y, arg)| (CudaBuffer::F32(y), arg)),
                CudaValues::Bf16(bits) => cuda_pool::max_pool2d_fwd(dev, bits, &cg)
                    .map(|(y, arg)| (CudaBuffer::Bf16(y), arg)),
            })?;
        let out = Tensor::from_cuda_buffer(y, [x.dims()[0], x.dims()[1], ho, wo])?;
        let in_shape = x.shape().clone();
        return record("max_pool2d", out, &[x], move |dy| {
            let dx = dy.with_cuda(|dev, dys| cuda_pool::max_pool2d_bwd(dev, dys, &arg, &cg))?;
            Ok(vec![Some(Tensor::from_cuda(dx, in_shape.clone())?)])
        });
    }
    // Separable: a row pass (max over kx of each input row) then a column pass (max over ky of
    // the row results), k + k taps per output instead of k² (SPP's k = 13: 26 vs 169). Same
    // winner as scanning the window in row-major order taking the first value that is greater
    // (or the first NaN): the row pass picks each row's first max / first NaN, the column pass
    // the first row whose pick is greatest / NaN, i.e. the window's first in row-major order.
    let (k, s, pad) = (p.kernel, p.stride, p.padding);
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
    x.with_values(|xv| {
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
            )
    })?;
    let out = Tensor::from_vec(y, [x.dims()[0], x.dims()[1], ho, wo])?;
    let in_shape = x.shape().clone();
    record("max_pool2d", out, &[x], move |dy| {
        let dyv = dy.to_vec();
        let mut dx = vec![0f32; in_shape.numel()];
        dx.par_chunks_mut((h * w).max(1))
            .enumerate()
            .for_each(|(pl, dxp)| {
                for j in 0..ho * wo {
                    let o = pl * ho * wo + j;
                    dxp[arg[o] as usize] += dyv[o];
                }
            });
        Ok(vec![Some(Tensor::from_vec(dx, in_shape.clone())?)])
    })
}

/// Average pooling (zeros in the padding count in the divisor k², as PyTorch's default).
pub fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let g = geom("avg_pool2d", x, &p)?;
    let (h, w, ho, wo) = (g.h, g.w, g.ho, g.wo);
    if x.device() == Device::Cuda && p.kernel == p.stride && p.padding == 0 {
        return tiled_avg_pool_composed(x, p.kernel, ho, wo);
    }
    let inv = 1.0 / (p.kernel * p.kernel) as f32;
    // Visit the in-bounds taps of output (oy, ox).
    let taps = move |oy: usize, ox: usize, f: &mut dyn FnMut(usize)| {
        for ky in 0..p.kernel {
            let iy = (oy * p.stride + ky) as isize - p.padding as isize;
            if iy < 0 || iy >= h as isize {
                continue;
            }
            for kx in 0..p.kernel {
                let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                if ix >= 0 && ix < w as isize {
                    f(iy as usize * w + ix as usize);
                }
            }
        }
    };
    let xv = x.to_vec();
    let mut y = vec![0f32; g.planes * ho * wo];
    y.par_chunks_mut((ho * wo).max(1))
        .enumerate()
        .for_each(|(pl, yp)| {
            let xp = &xv[pl * h * w..(pl + 1) * h * w];
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0f32;
                    taps(oy, ox, &mut |i| s += xp[i]);
                    yp[oy * wo + ox] = s * inv;
                }
            }
        });
    let out = Tensor::from_vec(y, [x.dims()[0], x.dims()[1], ho, wo])?;
    let in_shape = x.shape().clone();
    record("avg_pool2d", out, &[x], move |dy| {
        let dyv = dy.to_vec();
        let mut dx = vec![0f32; in_shape.numel()];
        dx.par_chunks_mut((h * w).max(1))
            .enumerate()
            .for_each(|(pl, dxp)| {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let d = dyv[pl * ho * wo + oy * wo + ox] * inv;
                        taps(oy, ox, &mut |i| dxp[i] += d);
                    }
                }
            });
        Ok(vec![Some(Tensor::from_vec(dx, in_shape.clone())?)])
    })
}

/// The CUDA arm of [`avg_pool2d`] with non-overlapping windows (kernel = stride, no padding,
/// the pretraining heads' 2×2 pool): the covered `[N, C, ho·k, wo·k]` corner viewed as
/// `[N·C·ho, k, wo, k]` and averaged over the two window axes with the reduction kernels,
/// forward and backward on the device. Device-generic ops: the CPU test checks the composition.
pub(crate) fn tiled_avg_pool_composed(
    x: &Tensor,
    k: usize,
    ho: usize,
    wo: usize,
) -> Result<Tensor> {
    let (n, c) = (x.dims()[0], x.dims()[1]);
    let covered = super::narrow(&super::narrow(x, 2, 0, ho * k)?, 3, 0, wo * k)?;
    let windows = super::reshape(&super::contiguous(&covered)?, [n * c * ho, k, wo, k])?;
    let pooled = super::mean(&windows, &[1, 3], false)?; // [N·C·ho, wo]
    super::reshape(&pooled, [n, c, ho, wo])
}

/// Mean over H and W: `[N, C, H, W] -> [N, C, 1, 1]`.
pub fn global_avg_pool2d(x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::shape(
            "global_avg_pool2d",
            "x [N, C, H, W]",
            x.shape(),
        ));
    }
    super::mean(x, &[2, 3], true)
}

/// Nearest-neighbour ×2 upsampling: `[N, C, H, W] -> [N, C, 2H, 2W]`.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    if x.rank() != 4 {
        return Err(Error::shape("upsample2x", "x [N, C, H, W]", x.shape()));
    }
    let (planes, h, w) = (x.dims()[0] * x.dims()[1], x.dims()[2], x.dims()[3]);
    if x.device() == Device::Cuda {
        // A bf16 activation (bf16 storage mode) is upsampled as bf16.
        let y = x.with_cuda_values(|dev, xv| match xv {
            CudaValues::F32(xs) => {
                cuda_pool::upsample2x_fwd(dev, xs, planes, h, w).map(CudaBuffer::F32)
            }
            CudaValues::Bf16(bits) => {
                cuda_pool::upsample2x_fwd(dev, bits, planes, h, w).map(CudaBuffer::Bf16)
            }
        })?;
        let out = Tensor::from_cuda_buffer(y, [x.dims()[0], x.dims()[1], 2 * h, 2 * w])?;
        let in_shape = x.shape().clone();
        return record("upsample2x", out, &[x], move |dy| {
            let dx = dy.with_cuda(|dev, dys| cuda_pool::upsample2x_bwd(dev, dys, planes, h, w))?;
            Ok(vec![Some(Tensor::from_cuda(dx, in_shape.clone())?)])
        });
    }
    let xv = x.to_vec();
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
    let out = Tensor::from_vec(y, [x.dims()[0], x.dims()[1], 2 * h, 2 * w])?;
    let in_shape = x.shape().clone();
    record("upsample2x", out, &[x], move |dy| {
        let dyv = dy.to_vec();
        let mut dx = vec![0f32; in_shape.numel()];
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
        Ok(vec![Some(Tensor::from_vec(dx, in_shape.clone())?)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The brute-force window scan the separable max pool replaced (row-major, first greater
    /// value or first NaN wins): values and argmax indices must agree exactly.
    fn max_pool_ref(xp: &[f32], h: usize, w: usize, p: Pool2dParams) -> (Vec<f32>, Vec<u32>) {
        let ho = (h + 2 * p.padding - p.kernel) / p.stride + 1;
        let wo = (w + 2 * p.padding - p.kernel) / p.stride + 1;
        let (mut y, mut a) = (vec![0f32; ho * wo], vec![0u32; ho * wo]);
        for oy in 0..ho {
            for ox in 0..wo {
                let (mut best, mut bi) = (f32::NEG_INFINITY, u32::MAX);
                for ky in 0..p.kernel {
                    let iy = (oy * p.stride + ky) as isize - p.padding as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for kx in 0..p.kernel {
                        let ix = (ox * p.stride + kx) as isize - p.padding as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let i = iy as usize * w + ix as usize;
                        if bi == u32::MAX || xp[i] > best || xp[i].is_nan() && !best.is_nan() {
                            best = xp[i];
                            bi = i as u32;
                        }
                    }
                }
                y[oy * wo + ox] = best;
                a[oy * wo + ox] = bi;
            }
        }
        (y, a)
    }

    #[test]
    fn separable_max_pool_matches_window_scan() {
        let mut seed = 12345u64;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for &(h, w) in &[(1, 1), (5, 7), (10, 10), (13, 9), (4, 16)] {
            for k in 1..=13 {
                for s in 1..=3 {
                    for pad in 0..=k / 2 {
                        if h + 2 * pad < k || w + 2 * pad < k {
                            continue;
                        }
                        let p = Pool2dParams {
                            kernel: k,
                            stride: s,
                            padding: pad,
                        };
                        // Few distinct values (ties), ±0, −∞ and NaN.
                        let xv: Vec<f32> = (0..2 * h * w)
                            .map(|_| match next() % 16 {
                                0 => f32::NAN,
                                1 => f32::NEG_INFINITY,
                                2 => -0.0,
                                3 => 0.0,
                                r => (r % 5) as f32 - 2.0,
                            })
                            .collect();
                        let x = Tensor::from_vec(xv.clone(), [1, 2, h, w]).unwrap();
                        let yt = max_pool2d(&x, p).unwrap();
                        let (ho, wo) = (yt.dims()[2], yt.dims()[3]);
                        let yv = yt.to_vec();
                        for pl in 0..2 {
                            let (yr, _) = max_pool_ref(&xv[pl * h * w..(pl + 1) * h * w], h, w, p);
                            let got = &yv[pl * ho * wo..(pl + 1) * ho * wo];
                            for (a, b) in got.iter().zip(&yr) {
                                assert_eq!(a.to_bits(), b.to_bits(), "{h}x{w} {p:?}");
                            }
                        }
                        // Argmax through the backward: dy = 1 + output index routes to arg.
                        let xg = Tensor::from_vec(xv.clone(), [1, 2, h, w])
                            .unwrap()
                            .with_requires_grad(true);
                        let yg = max_pool2d(&xg, p).unwrap();
                        let dyv: Vec<f32> = (0..2 * ho * wo).map(|i| (i + 1) as f32).collect();
                        let mut dx_ref = vec![0f32; 2 * h * w];
                        for pl in 0..2 {
                            let (_, ar) = max_pool_ref(&xv[pl * h * w..(pl + 1) * h * w], h, w, p);
                            for (j, &a) in ar.iter().enumerate() {
                                dx_ref[pl * h * w + a as usize] += dyv[pl * ho * wo + j];
                            }
                        }
                        let dy = Tensor::from_vec(dyv, [1, 2, ho, wo]).unwrap();
                        let loss = crate::ops::sum_all(&crate::ops::mul(&yg, &dy).unwrap());
                        loss.unwrap().backward().unwrap();
                        assert_eq!(xg.grad().unwrap().to_vec(), dx_ref, "{h}x{w} {p:?}");
                    }
                }
            }
        }
    }

    /// The composition the CUDA arm runs equals the CPU kernel on odd sizes (the uncovered last
    /// row and column dropped), forward and backward, up to the order of a window's sum.
    #[test]
    fn composed_tiled_avg_pool_matches_the_kernel() {
        let dims = [2, 3, 7, 5];
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|i| ((i * 13 % 17) as f32) - 8.0).collect();
        let p = Pool2dParams {
            kernel: 2,
            stride: 2,
            padding: 0,
        };
        let run = |composed: bool| {
            let x = Tensor::from_vec(values.clone(), dims)
                .unwrap()
                .with_requires_grad(true);
            let y = if composed {
                tiled_avg_pool_composed(&x, 2, 3, 2).unwrap()
            } else {
                avg_pool2d(&x, p).unwrap()
            };
            let w = Tensor::from_vec(
                (0..y.numel()).map(|i| i as f32).collect(),
                y.dims().to_vec(),
            )
            .unwrap();
            crate::ops::mul(&y, &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (y.dims().to_vec(), y.to_vec(), x.grad().unwrap().to_vec())
        };
        let (dims_k, y_k, g_k) = run(false);
        let (dims_c, y_c, g_c) = run(true);
        assert_eq!(dims_k, dims_c);
        for (a, b) in y_k.iter().zip(&y_c).chain(g_k.iter().zip(&g_c)) {
            assert!((a - b).abs() <= 1e-6 * (1.0 + a.abs()), "{a} vs {b}");
        }
    }
}
