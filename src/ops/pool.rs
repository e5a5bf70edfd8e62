//! Pooling over `[N, C, H, W]`: max (padding acts as −∞, as PyTorch), average (padding counts as
//! zeros in the divisor: PyTorch's default `count_include_pad=True`), global average, and ×2
//! nearest upsampling (YOLOX's PAFPN). Kernels: `backend::cpu::pool` and `backend::cuda::pool`
//! (`kernels/pool.cu`); this file validates, dispatches (`*_fwd`, `*_bwd`) and records.
//! Average pooling has no CUDA kernel here: with non-overlapping windows it is composed of
//! device ops on CUDA (which record themselves), otherwise it takes the host path.

use crate::autograd::record;
use crate::backend::cpu::pool::{self as cpu_pool, PoolGeometry};
use crate::backend::cuda::bf16::{CudaBuffer, CudaValues};
use crate::backend::cuda::{pool as cuda_pool, CudaSlice};
use crate::tensor::{Device, Shape, Tensor};
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dParams {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

fn geometry(op: &str, x: &Tensor, p: &Pool2dParams) -> Result<PoolGeometry> {
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
    Ok(PoolGeometry {
        planes: x.dims()[0] * x.dims()[1],
        h,
        w,
        kernel: p.kernel,
        stride: p.stride,
        padding: p.padding,
    })
}

/// `[N, C, ho, wo]` of a pooled `x`.
fn out_dims(x: &Tensor, ho: usize, wo: usize) -> [usize; 4] {
    [x.dims()[0], x.dims()[1], ho, wo]
}

/// Where the max-pool forward left each window's argmax for the backward.
enum Argmax {
    Cpu(Vec<u32>),
    Cuda(CudaSlice<i32>),
}

/// Max pooling; the gradient goes to the first maximal element of each window.
pub fn max_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let g = geometry("max_pool2d", x, &p)?;
    let (out, arg) = max_pool_fwd(x, &g)?;
    let in_shape = x.shape().clone();
    record("max_pool2d", out, &[x], move |dy| {
        Ok(vec![Some(max_pool_bwd(&arg, dy, &g, &in_shape)?)])
    })
}

fn max_pool_fwd(x: &Tensor, g: &PoolGeometry) -> Result<(Tensor, Argmax)> {
    match x.device() {
        Device::Cpu => cpu_max_pool_fwd(x, g),
        Device::Cuda => cuda_max_pool_fwd(x, g),
    }
}

fn max_pool_bwd(arg: &Argmax, dy: &Tensor, g: &PoolGeometry, in_shape: &Shape) -> Result<Tensor> {
    match arg {
        Argmax::Cpu(arg) => {
            let dx = dy.with_values(|dyv| cpu_pool::max_bwd(dyv, arg, g))?;
            Tensor::from_vec(dx, in_shape.clone())
        }
        Argmax::Cuda(arg) => cuda_max_pool_bwd(arg, dy, g, in_shape),
    }
}

fn cpu_max_pool_fwd(x: &Tensor, g: &PoolGeometry) -> Result<(Tensor, Argmax)> {
    let (y, arg) = x.with_values(|xv| cpu_pool::max_fwd(xv, g))?;
    let out = Tensor::from_vec(y, out_dims(x, g.out_h(), g.out_w()))?;
    Ok((out, Argmax::Cpu(arg)))
}

fn cuda_max_pool_fwd(x: &Tensor, g: &PoolGeometry) -> Result<(Tensor, Argmax)> {
    // A bf16 activation (bf16 storage mode) is pooled as bf16.
    let (y, arg) = x.with_cuda_values(|dev, xv| match xv {
        CudaValues::F32(xs) => {
            cuda_pool::max_pool2d_fwd(dev, xs, g).map(|(y, arg)| (CudaBuffer::F32(y), arg))
        }
        CudaValues::Bf16(bits) => {
            cuda_pool::max_pool2d_fwd(dev, bits, g).map(|(y, arg)| (CudaBuffer::Bf16(y), arg))
        }
    })?;
    let out = Tensor::from_cuda_buffer(y, out_dims(x, g.out_h(), g.out_w()))?;
    Ok((out, Argmax::Cuda(arg)))
}

fn cuda_max_pool_bwd(
    arg: &CudaSlice<i32>,
    dy: &Tensor,
    g: &PoolGeometry,
    in_shape: &Shape,
) -> Result<Tensor> {
    let dx = dy.with_cuda(|dev, dys| cuda_pool::max_pool2d_bwd(dev, dys, arg, g))?;
    Tensor::from_cuda(dx, in_shape.clone())
}

/// Average pooling (zeros in the padding count in the divisor k², as PyTorch's default).
pub fn avg_pool2d(x: &Tensor, p: Pool2dParams) -> Result<Tensor> {
    let g = geometry("avg_pool2d", x, &p)?;
    // Composed of recorded device ops: the op records nothing of its own on that path.
    if let Some(y) = cuda_avg_pool_composed(x, &g)? {
        return Ok(y);
    }
    let out = avg_pool_fwd(x, &g)?;
    let in_shape = x.shape().clone();
    record("avg_pool2d", out, &[x], move |dy| {
        Ok(vec![Some(avg_pool_bwd(dy, &g, &in_shape)?)])
    })
}

/// The host path (any device: a CUDA tensor makes the round trip).
fn avg_pool_fwd(x: &Tensor, g: &PoolGeometry) -> Result<Tensor> {
    let y = x.with_values(|xv| cpu_pool::avg_fwd(xv, g))?;
    Tensor::from_vec(y, out_dims(x, g.out_h(), g.out_w()))
}

fn avg_pool_bwd(dy: &Tensor, g: &PoolGeometry, in_shape: &Shape) -> Result<Tensor> {
    let dx = dy.with_values(|dyv| cpu_pool::avg_bwd(dyv, g))?;
    Tensor::from_vec(dx, in_shape.clone())
}

/// The CUDA arm of [`avg_pool2d`] where windows do not overlap (kernel = stride, no padding),
/// `None` elsewhere (and on the CPU).
fn cuda_avg_pool_composed(x: &Tensor, g: &PoolGeometry) -> Result<Option<Tensor>> {
    if x.device() == Device::Cuda && g.kernel == g.stride && g.padding == 0 {
        return tiled_avg_pool_composed(x, g.kernel, g.out_h(), g.out_w()).map(Some);
    }
    Ok(None)
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
    let device = x.device();
    let out = upsample_fwd(device, x, (planes, h, w))?;
    let in_shape = x.shape().clone();
    record("upsample2x", out, &[x], move |dy| {
        Ok(vec![Some(upsample_bwd(
            device,
            dy,
            (planes, h, w),
            &in_shape,
        )?)])
    })
}

/// `(planes, h, w)` of an upsampled input.
type Planes = (usize, usize, usize);

fn upsample_fwd(device: Device, x: &Tensor, planes: Planes) -> Result<Tensor> {
    match device {
        Device::Cpu => cpu_upsample_fwd(x, planes),
        Device::Cuda => cuda_upsample_fwd(x, planes),
    }
}

fn upsample_bwd(device: Device, dy: &Tensor, planes: Planes, in_shape: &Shape) -> Result<Tensor> {
    match device {
        Device::Cpu => cpu_upsample_bwd(dy, planes, in_shape),
        Device::Cuda => cuda_upsample_bwd(dy, planes, in_shape),
    }
}

fn cpu_upsample_fwd(x: &Tensor, (planes, h, w): Planes) -> Result<Tensor> {
    let y = x.with_values(|xv| cpu_pool::upsample2x_fwd(xv, planes, h, w))?;
    Tensor::from_vec(y, out_dims(x, 2 * h, 2 * w))
}

fn cpu_upsample_bwd(dy: &Tensor, (planes, h, w): Planes, in_shape: &Shape) -> Result<Tensor> {
    let dx = dy.with_values(|dyv| cpu_pool::upsample2x_bwd(dyv, planes, h, w))?;
    Tensor::from_vec(dx, in_shape.clone())
}

fn cuda_upsample_fwd(x: &Tensor, (planes, h, w): Planes) -> Result<Tensor> {
    // A bf16 activation (bf16 storage mode) is upsampled as bf16.
    let y = x.with_cuda_values(|dev, xv| match xv {
        CudaValues::F32(xs) => {
            cuda_pool::upsample2x_fwd(dev, xs, planes, h, w).map(CudaBuffer::F32)
        }
        CudaValues::Bf16(bits) => {
            cuda_pool::upsample2x_fwd(dev, bits, planes, h, w).map(CudaBuffer::Bf16)
        }
    })?;
    Tensor::from_cuda_buffer(y, out_dims(x, 2 * h, 2 * w))
}

fn cuda_upsample_bwd(dy: &Tensor, (planes, h, w): Planes, in_shape: &Shape) -> Result<Tensor> {
    let dx = dy.with_cuda(|dev, dys| cuda_pool::upsample2x_bwd(dev, dys, planes, h, w))?;
    Tensor::from_cuda(dx, in_shape.clone())
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
