//! Launchers of `kernels/similarity.cu`: cosine similarity along the middle axis of
//! `[outer, len, inner]` and its fused backward. CPU twin: `src/backend/cpu/similarity.rs`.

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::context::{cuda_err, grid_1d, CudaDevice};
use super::{check_len, to_i64, KernelFile};
use crate::Result;

/// `y [outer, inner] = cos(a, b)` along the middle axis.
pub fn cosine_similarity_fwd(
    dev: &CudaDevice,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
) -> Result<CudaSlice<f32>> {
    let sym = "cosine_similarity_fwd_f32";
    check_len(sym, "a [outer, len, inner]", a, outer * len * inner)?;
    check_len(sym, "b (same shape as a)", b, outer * len * inner)?;
    let (o, l, i) = (to_i64(sym, outer)?, to_i64(sym, len)?, to_i64(sym, inner)?);
    let mut y = dev.zeros(outer * inner)?;
    let f = dev.function(KernelFile::Similarity, sym)?;
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(a).arg(b).arg(&mut y).arg(&o).arg(&l).arg(&i);
    // SAFETY: a, b hold outer·len·inner, y outer·inner.
    unsafe { lb.launch(grid_1d(outer * inner)) }.map_err(|e| cuda_err(sym, e))?;
    Ok(y)
}

/// `(da, db)` from the upstream gradient `g [outer, inner]` (norms recomputed).
pub fn cosine_similarity_bwd(
    dev: &CudaDevice,
    g: &CudaSlice<f32>,
    a: &CudaSlice<f32>,
    b: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let sym = "cosine_similarity_bwd_f32";
    check_len(sym, "g [outer, inner]", g, outer * inner)?;
    check_len(sym, "a [outer, len, inner]", a, outer * len * inner)?;
    check_len(sym, "b (same shape as a)", b, outer * len * inner)?;
    let (o, l, i) = (to_i64(sym, outer)?, to_i64(sym, len)?, to_i64(sym, inner)?);
    let (mut da, mut db) = (dev.zeros(a.len())?, dev.zeros(a.len())?);
    let f = dev.function(KernelFile::Similarity, sym)?;
    let mut lb = dev.stream().launch_builder(&f);
    lb.arg(g)
        .arg(a)
        .arg(b)
        .arg(&mut da)
        .arg(&mut db)
        .arg(&o)
        .arg(&l)
        .arg(&i);
    // SAFETY: lengths checked above.
    unsafe { lb.launch(grid_1d(outer * inner)) }.map_err(|e| cuda_err(sym, e))?;
    Ok((da, db))
}
