//! Launchers of `kernels/similarity.cu`: cosine similarity along the middle axis of
//! `[outer, len, inner]` and its fused backward. CPU twin: `src/backend/cpu/similarity.rs`.

use cudarc::driver::CudaSlice;

use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
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
    Kernel::new(dev, KernelFile::Similarity, sym)
        .reads("a [outer, len, inner]", a, outer * len * inner)
        .reads("b [outer, len, inner]", b, outer * len * inner)
        .writes("y [outer, inner]", &mut y, outer * inner)
        .value(&o)
        .value(&l)
        .value(&i)
        .launch(grid_1d(outer * inner))?;
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
    let n = outer * len * inner;
    Kernel::new(dev, KernelFile::Similarity, sym)
        .reads("g [outer, inner]", g, outer * inner)
        .reads("a [outer, len, inner]", a, n)
        .reads("b [outer, len, inner]", b, n)
        .writes("da [outer, len, inner]", &mut da, n)
        .writes("db [outer, len, inner]", &mut db, n)
        .value(&o)
        .value(&l)
        .value(&i)
        .launch(grid_1d(outer * inner))?;
    Ok((da, db))
}
