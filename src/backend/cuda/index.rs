//! Launchers of `kernels/index.cu`: `index_select` and `gather` along an axis viewed as
//! `[outer, len, inner]`, with their scatter-add backwards. CPU twin: `src/backend/cpu/index.rs`.
//!
//! Indices reach the kernels only as [`DeviceIndices`], which can only be built by checking
//! them (on the device for f32 indices already there, on the host for host indices), so a launch
//! never sees an index outside `0..len`: a bad one is an error naming its position and value,
//! as `ops::index` reports it, before any gather or scatter runs.

use cudarc::driver::CudaSlice;

use super::context::{cuda_err, grid_1d, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// Indices checked to lie in `0..bound`, on the device as `i32`.
pub struct DeviceIndices {
    idx: CudaSlice<i32>,
    bound: usize,
}

fn check_bound(op: &str, bound: usize) -> Result<i64> {
    if bound > i32::MAX as usize {
        return Err(Error::op(
            op,
            format!("axis of {bound} elements too long for i32 indices"),
        ));
    }
    to_i64(op, bound)
}

impl DeviceIndices {
    /// Check f32 indices already on the device (the engine's index tensors): each must be a
    /// whole number in `0..bound` (`index_check_f32`). Waits for the stream to read the verdict.
    pub fn from_f32(
        dev: &CudaDevice,
        op: &str,
        idx: &CudaSlice<f32>,
        bound: usize,
    ) -> Result<DeviceIndices> {
        let sym = "index_check_f32";
        let b = check_bound(op, bound)?;
        let n = idx.len();
        let n32 = i32::try_from(n)
            .map_err(|_| Error::op(op, format!("{n} indices do not fit in i32 positions")))?;
        let mut out = dev.zeros_i32(n)?;
        if n == 0 {
            return Ok(DeviceIndices { idx: out, bound });
        }
        let mut bad = dev.upload(&[n32])?;
        let nn = to_i64(sym, n)?;
        Kernel::new(dev, KernelFile::Index, sym)
            .reads("indices (f32)", idx, n)
            .writes("indices (i32)", &mut out, n)
            .writes("first bad position", &mut bad, 1)
            .value(&nn)
            .value(&b)
            .launch(grid_1d(n))?;
        let first_bad = dev.download(&bad)?.first().copied().unwrap_or(n32);
        if first_bad < n32 {
            let k = first_bad.max(0) as usize;
            let v = dev
                .stream()
                .clone_dtoh(&idx.slice(k..k + 1))
                .map_err(|e| cuda_err("device to host copy", e))?;
            return Err(Error::op(
                op,
                format!(
                    "index {} at position {k} is not an integer in 0..{bound}",
                    v.first().copied().unwrap_or(f32::NAN)
                ),
            ));
        }
        Ok(DeviceIndices { idx: out, bound })
    }

    /// Check host indices ([`check_host_indices`]) and upload them.
    pub fn from_host(
        dev: &CudaDevice,
        op: &str,
        idx: &[usize],
        bound: usize,
    ) -> Result<DeviceIndices> {
        let v = check_host_indices(op, idx, bound)?;
        Ok(DeviceIndices {
            idx: dev.upload(&v)?,
            bound,
        })
    }

    pub fn len(&self) -> usize {
        self.idx.len()
    }
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }
    /// The length of the axis the indices were checked against.
    pub fn bound(&self) -> usize {
        self.bound
    }
    pub fn as_slice(&self) -> &CudaSlice<i32> {
        &self.idx
    }
}

/// Host indices as the kernels' `i32`, each checked to lie in `0..bound` (the error names the
/// first bad one, as `ops::index` does).
pub fn check_host_indices(op: &str, idx: &[usize], bound: usize) -> Result<Vec<i32>> {
    check_bound(op, bound)?;
    if let Some((k, &i)) = idx.iter().enumerate().find(|(_, &i)| i >= bound) {
        return Err(Error::op(
            op,
            format!("index {i} at position {k} is not an integer in 0..{bound}"),
        ));
    }
    // Every index is < bound <= i32::MAX.
    Ok(idx.iter().map(|&i| i as i32).collect())
}

/// The checks every launcher shares: indices checked against this axis, `n_idx` of them, the
/// sizes' products fit. Returns `(outer·len·inner, outer·k·inner)`.
fn check_geometry(
    op: &str,
    idx: &DeviceIndices,
    n_idx: usize,
    outer: usize,
    len: usize,
    inner: usize,
    k: usize,
) -> Result<(usize, usize)> {
    if idx.bound != len {
        return Err(Error::op(
            op,
            format!(
                "indices were checked against an axis of {} elements, the axis has {len}",
                idx.bound
            ),
        ));
    }
    if idx.len() != n_idx {
        return Err(Error::ShapeMismatch {
            op: op.to_string(),
            expected: format!("{n_idx} indices"),
            got: format!("{}", idx.len()),
        });
    }
    let prod = |a: usize, b: usize, c: usize| a.checked_mul(b).and_then(|v| v.checked_mul(c));
    match (prod(outer, len, inner), prod(outer, k, inner)) {
        (Some(x), Some(y)) => Ok((x, y)),
        _ => Err(Error::op(
            op,
            format!("sizes [{outer}, {len}|{k}, {inner}] overflow"),
        )),
    }
}

/// Run `sym` over `threads` positions of `[outer, len | k, inner]` (`dims`) from `src` (of
/// `src_len` elements) into a fresh output of `out_len`.
fn launch(
    dev: &CudaDevice,
    sym: &str,
    (src, src_len): (&CudaSlice<f32>, usize),
    idx: &DeviceIndices,
    (out_len, threads): (usize, usize),
    [outer, len, inner, k]: [usize; 4],
) -> Result<CudaSlice<f32>> {
    let mut out = dev.zeros(out_len)?;
    if threads == 0 || out_len == 0 {
        return Ok(out);
    }
    let a = [
        to_i64(sym, outer)?,
        to_i64(sym, len)?,
        to_i64(sym, inner)?,
        to_i64(sym, k)?,
    ];
    // Every index lies in 0..len (DeviceIndices), and the kernels skip any other; the callers
    // checked the index count against the geometry.
    Kernel::new(dev, KernelFile::Index, sym)
        .reads("source", src, src_len)
        .reads("indices", idx.as_slice(), idx.len())
        .writes("out", &mut out, out_len)
        .values(&a)
        .launch(grid_1d(threads))?;
    Ok(out)
}

/// `x [outer, len, inner]` → `y [outer, k, inner]`, `y[o, j, t] = x[o, idx[j], t]` (`k` =
/// `idx.len()`).
pub fn index_select_fwd(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    idx: &DeviceIndices,
) -> Result<CudaSlice<f32>> {
    let sym = "index_select_fwd_f32";
    let k = idx.len();
    let (x_len, y_len) = check_geometry(sym, idx, k, outer, len, inner, k)?;
    check_len(sym, "x [outer, len, inner]", x, x_len)?;
    let dims = [outer, len, inner, k];
    launch(dev, sym, (x, x_len), idx, (y_len, y_len), dims)
}

/// `dy [outer, k, inner]` → `dx [outer, len, inner]`, scatter-added at the indices.
pub fn index_select_bwd(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    idx: &DeviceIndices,
) -> Result<CudaSlice<f32>> {
    let sym = "index_select_bwd_f32";
    let k = idx.len();
    let (x_len, y_len) = check_geometry(sym, idx, k, outer, len, inner, k)?;
    check_len(sym, "dy [outer, k, inner]", dy, y_len)?;
    let dims = [outer, len, inner, k];
    launch(dev, sym, (dy, y_len), idx, (x_len, y_len), dims)
}

/// `x [outer, len, inner]`, `idx [outer, k, inner]` → `y [outer, k, inner]`,
/// `y[o, j, t] = x[o, idx[o, j, t], t]` (torch.gather).
pub fn gather_fwd(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    k: usize,
    idx: &DeviceIndices,
) -> Result<CudaSlice<f32>> {
    let sym = "gather_fwd_f32";
    let n_idx = outer.saturating_mul(k).saturating_mul(inner);
    let (x_len, y_len) = check_geometry(sym, idx, n_idx, outer, len, inner, k)?;
    check_len(sym, "x [outer, len, inner]", x, x_len)?;
    let dims = [outer, len, inner, k];
    launch(dev, sym, (x, x_len), idx, (y_len, y_len), dims)
}

/// `dy [outer, k, inner]` → `dx [outer, len, inner]`, scatter-added at the indices.
pub fn gather_bwd(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    outer: usize,
    len: usize,
    inner: usize,
    k: usize,
    idx: &DeviceIndices,
) -> Result<CudaSlice<f32>> {
    let sym = "gather_bwd_f32";
    let n_idx = outer.saturating_mul(k).saturating_mul(inner);
    let (x_len, y_len) = check_geometry(sym, idx, n_idx, outer, len, inner, k)?;
    check_len(sym, "dy [outer, k, inner]", dy, y_len)?;
    let dims = [outer, len, inner, k];
    launch(dev, sym, (dy, y_len), idx, (x_len, y_len), dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::CudaAvailability;

    #[test]
    fn host_indices_out_of_range_are_refused_before_upload() {
        assert_eq!(
            check_host_indices("t", &[0, 4, 2], 5).unwrap(),
            vec![0, 4, 2]
        );
        let e = check_host_indices("t", &[0, 5, 9], 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("index 5 at position 1"), "{e}");
        assert!(check_host_indices("t", &[0], i32::MAX as usize + 1).is_err());
    }

    /// On a GPU: f32 indices that are not whole numbers in range are refused with the first bad
    /// position, and a launch with indices checked against another axis is refused.
    #[test]
    fn device_indices_are_checked_on_the_gpu() {
        let dev = match CudaAvailability::probe() {
            Ok(d) => d,
            Err(reason) => {
                eprintln!("skipped (no GPU): {reason}");
                return;
            }
        };
        for (bad, pos) in [
            (2.5f32, 1),
            (-1.0, 1),
            (5.0, 1),
            (f32::NAN, 1),
            (f32::INFINITY, 1),
        ] {
            let idx = dev.upload(&[0.0f32, bad, 7.5, 1.0]).unwrap();
            let e = DeviceIndices::from_f32(&dev, "t", &idx, 5)
                .err()
                .expect("refused")
                .to_string();
            assert!(e.contains(&format!("at position {pos}")), "{bad}: {e}");
        }
        let idx = dev.upload(&[0.0f32, 4.0, 2.0]).unwrap();
        let ok = DeviceIndices::from_f32(&dev, "t", &idx, 5).unwrap();
        assert_eq!(dev.download(ok.as_slice()).unwrap(), vec![0, 4, 2]);
        let x = dev.zeros(2 * 6 * 3).unwrap();
        assert!(index_select_fwd(&dev, &x, 2, 6, 3, &ok).is_err()); // checked against 5, not 6
        let x = dev.zeros(2 * 5 * 3 + 1).unwrap();
        assert!(index_select_fwd(&dev, &x, 2, 5, 3, &ok).is_err()); // wrong length
        assert!(gather_fwd(&dev, &x, 2, 5, 3, 1, &ok).is_err()); // 3 indices for a [2, 1, 3] index
    }
}
