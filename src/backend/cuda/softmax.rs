//! Launchers of `kernels/softmax.cu`: softmax / log_softmax along the middle axis of
//! `[outer, len, inner]`. CPU twin: `src/backend/cpu/softmax.rs`.

use cudarc::driver::CudaSlice;

use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::Result;

fn args(sym: &str, outer: usize, len: usize, inner: usize) -> Result<(i64, i64, i64)> {
    Ok((to_i64(sym, outer)?, to_i64(sym, len)?, to_i64(sym, inner)?))
}

/// `y = softmax(x)` (or log_softmax when `log`).
pub fn fwd(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    log: bool,
) -> Result<CudaSlice<f32>> {
    let sym = if log {
        "log_softmax_fwd_f32"
    } else {
        "softmax_fwd_f32"
    };
    check_len(sym, "x [outer, len, inner]", x, outer * len * inner)?;
    let (o, l, i) = args(sym, outer, len, inner)?;
    let mut y = dev.zeros(x.len())?;
    let n = outer * len * inner;
    Kernel::new(dev, KernelFile::Softmax, sym)
        .reads("x [outer, len, inner]", x, n)
        .writes("y [outer, len, inner]", &mut y, n)
        .value(&o)
        .value(&l)
        .value(&i)
        .launch(grid_1d(outer * inner))?;
    Ok(y)
}

/// `dx` from `dy` and the forward output `y`.
pub fn bwd(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    y: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    log: bool,
) -> Result<CudaSlice<f32>> {
    let sym = if log {
        "log_softmax_bwd_f32"
    } else {
        "softmax_bwd_f32"
    };
    check_len(sym, "dy", dy, outer * len * inner)?;
    check_len(sym, "y", y, outer * len * inner)?;
    let (o, l, i) = args(sym, outer, len, inner)?;
    let mut dx = dev.zeros(dy.len())?;
    let n = outer * len * inner;
    Kernel::new(dev, KernelFile::Softmax, sym)
        .reads("dy [outer, len, inner]", dy, n)
        .reads("y [outer, len, inner]", y, n)
        .writes("dx [outer, len, inner]", &mut dx, n)
        .value(&o)
        .value(&l)
        .value(&i)
        .launch(grid_1d(outer * inner))?;
    Ok(dx)
}
