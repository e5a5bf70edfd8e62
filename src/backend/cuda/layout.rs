//! Launcher of `kernels/layout.cu`: copies between strided layouts (the device side of
//! `contiguous()`, `cat`, and the backward of `narrow`/`slice_step`). CPU twin:
//! `crate::tensor::StridedIter`.

use cudarc::driver::CudaSlice;

use super::bf16::StoredElement;
use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
use super::structs::cuda_struct;
use super::{to_i64, KernelFile};
use crate::{Error, Result};

/// Most dims the kernel takes after [`coalesce`].
pub const MAX_RANK: usize = 6;

/// Mirrors `struct Strided` of layout.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Strided {
    rank: i32,
    pad_: i32,
    src_offset: i64,
    dst_offset: i64,
    dims: [i64; MAX_RANK],
    ss: [i64; MAX_RANK],
    ds: [i64; MAX_RANK],
}
cuda_struct!(Strided mirrors "Strided" in KernelFile::Layout, size 168, align 8, {
    rank @ 0, pad_ @ 4, src_offset @ 8, dst_offset @ 16, dims @ 24, ss @ 72, ds @ 120,
});

/// One side of a copy: strides (elements) and offset into a buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StridedSide<'a> {
    pub strides: &'a [usize],
    pub offset: usize,
}

/// Drop size-1 axes and merge neighbours that are contiguous in both layouts, so most views
/// reach the kernel with rank <= 2. Returns `(dims, src strides, dst strides)`.
pub fn coalesce(
    dims: &[usize],
    ss: &[usize],
    ds: &[usize],
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut d, mut s, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..dims.len() {
        if dims[i] == 1 {
            continue;
        }
        if let (Some(&ld), Some(&ls), Some(&lt)) = (d.last(), s.last(), t.last()) {
            // The previous axis steps over exactly one run of this one in both layouts.
            if ls == ss[i] * dims[i] && lt == ds[i] * dims[i] {
                let k = d.len() - 1;
                d[k] = ld * dims[i];
                s[k] = ss[i];
                t[k] = ds[i];
                continue;
            }
        }
        d.push(dims[i]);
        s.push(ss[i]);
        t.push(ds[i]);
    }
    (d, s, t)
}

/// Largest index a side touches (for the bounds check), or `None` when the view is empty.
fn last_index(dims: &[usize], side: &StridedSide) -> Option<usize> {
    if dims.contains(&0) {
        return None;
    }
    Some(
        side.offset
            + dims
                .iter()
                .zip(side.strides)
                .map(|(&d, &s)| (d - 1) * s)
                .sum::<usize>(),
    )
}

/// The strided-copy kernel for elements `T`.
pub(crate) fn strided_copy_sym<T: StoredElement>() -> String {
    format!("strided_copy_{}", T::SUFFIX)
}

/// Copy the `dims` view `src_side` of `src` into the view `dst_side` of `dst`.
pub fn strided_copy<T: StoredElement>(
    dev: &CudaDevice,
    dims: &[usize],
    src: &CudaSlice<T>,
    src_side: StridedSide,
    dst: &mut CudaSlice<T>,
    dst_side: StridedSide,
) -> Result<()> {
    let sym = &strided_copy_sym::<T>();
    if src_side.strides.len() != dims.len() || dst_side.strides.len() != dims.len() {
        return Err(Error::op(
            sym,
            format!(
                "{} dims but {} source and {} destination strides",
                dims.len(),
                src_side.strides.len(),
                dst_side.strides.len()
            ),
        ));
    }
    let Some(src_last) = last_index(dims, &src_side) else {
        return Ok(());
    };
    let dst_last = last_index(dims, &dst_side).unwrap_or(0);
    if src_last >= src.len() || dst_last >= dst.len() {
        return Err(Error::op(
            sym,
            format!(
                "view {dims:?} reaches element {src_last} of a {}-element source / {dst_last} of a {}-element destination",
                src.len(),
                dst.len()
            ),
        ));
    }
    let (cd, cs, ct) = coalesce(dims, src_side.strides, dst_side.strides);
    if cd.len() > MAX_RANK {
        return Err(Error::op(
            sym,
            format!(
                "a view of rank {} after merging axes (most: {MAX_RANK})",
                cd.len()
            ),
        ));
    }
    let n: usize = cd.iter().product();
    let mut g = Strided {
        rank: cd.len() as i32,
        src_offset: to_i64(sym, src_side.offset)?,
        dst_offset: to_i64(sym, dst_side.offset)?,
        ..Default::default()
    };
    for i in 0..cd.len() {
        g.dims[i] = to_i64(sym, cd[i])?;
        g.ss[i] = to_i64(sym, cs[i])?;
        g.ds[i] = to_i64(sym, ct[i])?;
    }
    let n64 = to_i64(sym, n)?;
    // Strides are non-negative, so every index of the walk lies in [offset, last].
    Kernel::new(dev, KernelFile::Layout, sym)
        .reads("source", src, src_last + 1)
        .writes("destination", dst, dst_last + 1)
        .value(&n64)
        .value(&g)
        .launch(grid_1d(n))
}

/// A fresh contiguous buffer holding the `dims` view (`strides`, `offset`) of `src`.
pub fn contiguous<T: StoredElement>(
    dev: &CudaDevice,
    dims: &[usize],
    src: &CudaSlice<T>,
    strides: &[usize],
    offset: usize,
) -> Result<CudaSlice<T>> {
    let n: usize = dims.iter().product();
    let mut out = T::alloc(dev, n)?;
    // Row-major strides of `dims` (what `Shape::contiguous_strides` gives, one layer up).
    let mut dst_strides = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        dst_strides[i] = dst_strides[i + 1] * dims[i + 1];
    }
    strided_copy(
        dev,
        dims,
        src,
        StridedSide { strides, offset },
        &mut out,
        StridedSide {
            strides: &dst_strides,
            offset: 0,
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::coalesce;

    #[test]
    fn coalesce_merges_contiguous_axes_and_drops_ones() {
        // A contiguous [2,3,4] copy is one run of 24.
        assert_eq!(
            coalesce(&[2, 3, 4], &[12, 4, 1], &[12, 4, 1]),
            (vec![24], vec![1], vec![1])
        );
        // A permuted source keeps its axes apart.
        assert_eq!(
            coalesce(&[3, 2], &[1, 3], &[2, 1]),
            (vec![3, 2], vec![1, 3], vec![2, 1])
        );
        // Narrow along the middle axis of [2,5,4] to [2,2,4] at offset 4: rows of 8 stay apart
        // in the source.
        assert_eq!(
            coalesce(&[2, 1, 2, 4], &[20, 20, 4, 1], &[8, 8, 4, 1]),
            (vec![2, 8], vec![20, 1], vec![8, 1])
        );
    }
}
