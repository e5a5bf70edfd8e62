//! Launchers of `kernels/pool.cu`: max / average pooling and nearest ×2 upsampling over
//! `[planes = N·C, H, W]`. CPU twin: `src/backend/cpu/pool.rs`.

use cudarc::driver::CudaSlice;

use super::bf16::StoredElement;
use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// Square-window pooling geometry (as `ops::Pool2dParams` on `[N, C, H, W]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeometry {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolGeometry {
    /// The same checks as `ops::pool` (kernel, stride >= 1, padding <= kernel/2, window fits).
    pub fn check(&self, op: &str) -> Result<()> {
        if self.kernel == 0 || self.stride == 0 || self.padding * 2 > self.kernel {
            return Err(Error::op(op, format!("bad parameters {self:?}")));
        }
        if self.h + 2 * self.padding < self.kernel || self.w + 2 * self.padding < self.kernel {
            return Err(Error::op(
                op,
                format!("kernel larger than padded input in {self:?}"),
            ));
        }
        Ok(())
    }
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.padding - self.kernel) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.padding - self.kernel) / self.stride + 1
    }
    pub fn x_len(&self) -> usize {
        self.planes * self.h * self.w
    }
    pub fn y_len(&self) -> usize {
        self.planes * self.out_h() * self.out_w()
    }
    fn args(&self, op: &str) -> Result<[i64; 8]> {
        let v = [
            self.planes,
            self.h,
            self.w,
            self.out_h(),
            self.out_w(),
            self.kernel,
            self.stride,
            self.padding,
        ];
        let mut out = [0i64; 8];
        for (o, x) in out.iter_mut().zip(v) {
            *o = to_i64(op, x)?;
        }
        Ok(out)
    }
}

/// Max pooling: `(y, argmax)`, argmax being the index inside the plane (`iy·W + ix`).
/// The max-pooling forward kernel for elements `T`.
fn max_pool_fwd_sym<T: StoredElement>() -> String {
    format!("max_pool2d_fwd_{}", T::SUFFIX)
}

/// The upsampling forward kernel for elements `T`.
fn upsample_fwd_sym<T: StoredElement>() -> String {
    format!("upsample2x_fwd_{}", T::SUFFIX)
}

/// Max pooling forward: the window maxima and each one's index in its plane (for backward).
/// `T` is f32, or bf16 bits for bf16 storage (compared as f32, written back unchanged).
pub fn max_pool2d_fwd<T: StoredElement>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    g: &PoolGeometry,
) -> Result<(CudaSlice<T>, CudaSlice<i32>)> {
    let sym = &max_pool_fwd_sym::<T>();
    g.check(sym)?;
    check_len(sym, "x", x, g.x_len())?;
    if g.h * g.w > i32::MAX as usize {
        return Err(Error::op(sym, "plane too large for i32 argmax"));
    }
    let a = g.args(sym)?;
    // Every output and index is written.
    let (mut y, mut arg) = (T::alloc(dev, g.y_len())?, dev.zeros_i32(g.y_len())?);
    Kernel::new(dev, KernelFile::Pool, sym)
        .reads("x", x, g.x_len())
        .writes("y", &mut y, g.y_len())
        .writes("argmax", &mut arg, g.y_len())
        .values(&a)
        .launch(grid_1d(g.y_len()))?;
    Ok((y, arg))
}

pub fn max_pool2d_bwd(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    arg: &CudaSlice<i32>,
    g: &PoolGeometry,
) -> Result<CudaSlice<f32>> {
    let sym = "max_pool2d_bwd_f32";
    g.check(sym)?;
    check_len(sym, "dy", dy, g.y_len())?;
    check_len(sym, "argmax", arg, g.y_len())?;
    let a = g.args(sym)?;
    let mut dx = dev.zeros(g.x_len())?;
    // argmax is only compared, never used as an address.
    Kernel::new(dev, KernelFile::Pool, sym)
        .reads("dy", dy, g.y_len())
        .reads("argmax", arg, g.y_len())
        .writes("dx", &mut dx, g.x_len())
        .values(&a)
        .launch(grid_1d(g.x_len()))?;
    Ok(dx)
}

pub fn avg_pool2d_fwd(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    g: &PoolGeometry,
) -> Result<CudaSlice<f32>> {
    let sym = "avg_pool2d_fwd_f32";
    g.check(sym)?;
    check_len(sym, "x", x, g.x_len())?;
    let a = g.args(sym)?;
    let mut y = dev.zeros(g.y_len())?;
    Kernel::new(dev, KernelFile::Pool, sym)
        .reads("x", x, g.x_len())
        .writes("y", &mut y, g.y_len())
        .values(&a)
        .launch(grid_1d(g.y_len()))?;
    Ok(y)
}

pub fn avg_pool2d_bwd(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    g: &PoolGeometry,
) -> Result<CudaSlice<f32>> {
    let sym = "avg_pool2d_bwd_f32";
    g.check(sym)?;
    check_len(sym, "dy", dy, g.y_len())?;
    let a = g.args(sym)?;
    let mut dx = dev.zeros(g.x_len())?;
    Kernel::new(dev, KernelFile::Pool, sym)
        .reads("dy", dy, g.y_len())
        .writes("dx", &mut dx, g.x_len())
        .values(&a)
        .launch(grid_1d(g.x_len()))?;
    Ok(dx)
}

/// `[planes, H, W] -> [planes, 2H, 2W]`.
/// Nearest ×2 upsampling of `planes` planes of `h × w`; `T` is f32, or bf16 bits for bf16
/// storage (copied as they are).
pub fn upsample2x_fwd<T: StoredElement>(
    dev: &CudaDevice,
    x: &CudaSlice<T>,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<CudaSlice<T>> {
    let sym = &upsample_fwd_sym::<T>();
    check_len(sym, "x", x, planes * h * w)?;
    let (p, hh, ww) = (to_i64(sym, planes)?, to_i64(sym, h)?, to_i64(sym, w)?);
    // Every output is written.
    let mut y = T::alloc(dev, 4 * planes * h * w)?;
    if y.is_empty() {
        return Ok(y);
    }
    let cfg = grid_1d(y.len());
    Kernel::new(dev, KernelFile::Pool, sym)
        .reads("x [planes, H, W]", x, planes * h * w)
        .writes("y [planes, 2H, 2W]", &mut y, 4 * planes * h * w)
        .value(&p)
        .value(&hh)
        .value(&ww)
        .launch(cfg)?;
    Ok(y)
}

pub fn upsample2x_bwd(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    planes: usize,
    h: usize,
    w: usize,
) -> Result<CudaSlice<f32>> {
    let sym = "upsample2x_bwd_f32";
    check_len(sym, "dy", dy, 4 * planes * h * w)?;
    let (p, hh, ww) = (to_i64(sym, planes)?, to_i64(sym, h)?, to_i64(sym, w)?);
    let mut dx = dev.zeros(planes * h * w)?;
    if dx.is_empty() {
        return Ok(dx);
    }
    let cfg = grid_1d(dx.len());
    Kernel::new(dev, KernelFile::Pool, sym)
        .reads("dy [planes, 2H, 2W]", dy, 4 * planes * h * w)
        .writes("dx [planes, H, W]", &mut dx, planes * h * w)
        .value(&p)
        .value(&hh)
        .value(&ww)
        .launch(cfg)?;
    Ok(dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel names the generic launchers build exist, for both storage formats (pooling
    /// here, the strided copy in layout.cu).
    #[test]
    fn every_launched_symbol_exists() {
        use crate::backend::cuda::layout::strided_copy_sym;
        for (file, name) in [
            (KernelFile::Pool, max_pool_fwd_sym::<f32>()),
            (KernelFile::Pool, max_pool_fwd_sym::<u16>()),
            (KernelFile::Pool, upsample_fwd_sym::<f32>()),
            (KernelFile::Pool, upsample_fwd_sym::<u16>()),
            (KernelFile::Layout, strided_copy_sym::<f32>()),
            (KernelFile::Layout, strided_copy_sym::<u16>()),
        ] {
            assert!(
                file.symbols().contains(&name.as_str()),
                "no kernel `{name}`"
            );
        }
    }
}
