//! Launchers of `kernels/reduce.cu`: deterministic sums (fixed grid, fixed tree, no atomics).
//! CPU twin: `src/backend/cpu/reduce.rs`.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::context::{grid_per_item, CudaDevice, BLOCK};
use super::launch::Kernel;
use super::structs::cuda_struct;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// Blocks of the first pass of `sum_all` (fixed, so results are bit-identical run to run).
const SUM_BLOCKS: usize = 1024;

/// Sum of every element, as a one-element buffer.
pub fn sum_all(dev: &CudaDevice, x: &CudaSlice<f32>) -> Result<CudaSlice<f32>> {
    let sym = "sum_partial_f32";
    let n = x.len();
    let blocks = n.div_ceil(BLOCK as usize).clamp(1, SUM_BLOCKS);
    let mut partial = dev.zeros(blocks)?;
    let mut total = dev.zeros(1)?;
    let n64 = to_i64(sym, n)?;
    let cfg = LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    };
    // One partial sum per block.
    Kernel::new(dev, KernelFile::Reduce, sym)
        .reads("x", x, n)
        .writes("partial sums", &mut partial, blocks)
        .value(&n64)
        .launch(cfg)?;
    let nb = blocks as i64;
    let one = LaunchConfig {
        grid_dim: (1, 1, 1),
        ..cfg
    };
    Kernel::new(dev, KernelFile::Reduce, sym)
        .reads("partial sums", &partial, blocks)
        .writes("total", &mut total, 1)
        .value(&nb)
        .launch(one)?;
    Ok(total)
}

/// Most dims `sum_keepdim` takes.
pub const MAX_RANK: usize = 6;

/// Mirrors `struct Reduce` of reduce.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReduceGeom {
    rank: i32,
    pad_: i32,
    dims: [i64; MAX_RANK],
    kept: [i64; MAX_RANK],
}
cuda_struct!(ReduceGeom mirrors "Reduce" in KernelFile::Reduce, size 104, align 8, {
    rank @ 0, pad_ @ 4, dims @ 8, kept @ 56,
});

/// `x` (contiguous `dims`) summed down to `kept` (same rank; each axis either kept whole or 1).
/// The output is contiguous over `kept` (the keepdim form; drop the 1s for keepdim = false).
pub fn sum_keepdim(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    dims: &[usize],
    kept: &[usize],
) -> Result<CudaSlice<f32>> {
    let sym = "sum_keepdim_f32";
    if dims.len() != kept.len()
        || dims.len() > MAX_RANK
        || dims.iter().zip(kept).any(|(&d, &k)| k != d && k != 1)
    {
        return Err(Error::shape(
            "sum (cuda)",
            format!(
                "kept dims of rank {} <= {MAX_RANK}, each the dim or 1",
                dims.len()
            ),
            (dims, kept),
        ));
    }
    let total: usize = dims.iter().product();
    check_len(sym, "x", x, total)?;
    let outputs: usize = kept.iter().product();
    let mut y = dev.zeros(outputs)?;
    if outputs == 0 {
        return Ok(y);
    }
    let reduced = total / outputs;
    let mut g = ReduceGeom {
        rank: dims.len() as i32,
        ..Default::default()
    };
    for i in 0..dims.len() {
        g.dims[i] = to_i64(sym, dims[i])?;
        g.kept[i] = to_i64(sym, kept[i])?;
    }
    let (o64, r64) = (to_i64(sym, outputs)?, to_i64(sym, reduced)?);
    // Each output reads only inputs of its own slab of x.
    Kernel::new(dev, KernelFile::Reduce, sym)
        .reads("x", x, total)
        .writes("y", &mut y, outputs)
        .value(&o64)
        .value(&r64)
        .value(&g)
        .launch(grid_per_item(outputs))?;
    Ok(y)
}
