//! Launchers of `kernels/crop.cu`: batched square crops out of `[N, C, H, W]` images and the
//! scatter-add backward. CPU twin: `src/backend/cpu/crop.rs` (`ops::crop_patches`).
//!
//! The boxes are host data (the patch sampler draws them); [`CropBoxes::new`] checks them exactly
//! as the op does and uploads them once, for the forward and the backward.

use cudarc::driver::CudaSlice;

use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// Patch corners `(image, x, y)` of side `size` on the device, checked to lie inside images of
/// `dims = [N, C, H, W]`.
pub struct CropBoxes {
    boxes: CudaSlice<i32>,
    count: usize,
    dims: [usize; 4],
    size: usize,
    patches_len: usize,
}

impl CropBoxes {
    /// Check each box (`image < N`, `x + size <= W`, `y + size <= H`, `size >= 1`) with the
    /// op's messages, then upload them as `i32 [P, 3]`.
    pub fn new(
        dev: &CudaDevice,
        dims: [usize; 4],
        corners: &[(usize, usize, usize)],
        size: usize,
    ) -> Result<CropBoxes> {
        let (flat, patches_len) = check_corners(dims, corners, size)?;
        Ok(CropBoxes {
            boxes: dev.upload(&flat)?,
            count: corners.len(),
            dims,
            size,
            patches_len,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn images_len(&self) -> usize {
        self.dims.iter().product()
    }
    /// `P · C · size · size`.
    pub fn patches_len(&self) -> usize {
        self.patches_len
    }
    fn args(&self, op: &str) -> Result<[i64; 6]> {
        let [n, c, h, w] = self.dims;
        Ok([
            to_i64(op, n)?,
            to_i64(op, self.count)?,
            to_i64(op, c)?,
            to_i64(op, h)?,
            to_i64(op, w)?,
            to_i64(op, self.size)?,
        ])
    }
}

/// Check patch corners against images `dims = [N, C, H, W]` as `ops::crop_patches` does:
/// `(i32 [P, 3], P·C·size²)`.
pub fn check_corners(
    dims: [usize; 4],
    corners: &[(usize, usize, usize)],
    size: usize,
) -> Result<(Vec<i32>, usize)> {
    let op = "crop_patches";
    let [n, c, h, w] = dims;
    if size == 0 {
        return Err(Error::op(op, "patch size must be >= 1"));
    }
    if [n, c, h, w].iter().any(|&d| d > i32::MAX as usize)
        || n.checked_mul(c)
            .and_then(|v| v.checked_mul(h))
            .and_then(|v| v.checked_mul(w))
            .is_none()
    {
        return Err(Error::op(op, format!("images {dims:?} too large")));
    }
    for (k, &(image, x, y)) in corners.iter().enumerate() {
        let inside = image < n
            && x.checked_add(size).is_some_and(|e| e <= w)
            && y.checked_add(size).is_some_and(|e| e <= h);
        if !inside {
            return Err(Error::op(
                op,
                format!(
                    "box {k} (image {image}, x {x}, y {y}, side {size}) is not inside images \
                     {dims:?}"
                ),
            ));
        }
    }
    let patches_len = corners
        .len()
        .checked_mul(c)
        .and_then(|v| v.checked_mul(size))
        .and_then(|v| v.checked_mul(size))
        .ok_or_else(|| Error::op(op, format!("{} patches too large", corners.len())))?;
    // Inside the images: every value is < N, W or H, all <= i32::MAX.
    let flat: Vec<i32> = corners
        .iter()
        .flat_map(|&(i, x, y)| [i as i32, x as i32, y as i32])
        .collect();
    Ok((flat, patches_len))
}

fn launch(
    dev: &CudaDevice,
    sym: &str,
    (src, src_len): (&CudaSlice<f32>, usize),
    boxes: &CropBoxes,
    out_len: usize,
) -> Result<CudaSlice<f32>> {
    let a = boxes.args(sym)?;
    let mut out = dev.zeros(out_len)?;
    let threads = boxes.patches_len();
    if threads == 0 || out.is_empty() {
        return Ok(out);
    }
    // Every box lies inside the images (CropBoxes::new) and the kernels skip any other.
    Kernel::new(dev, KernelFile::Crop, sym)
        .reads("source", src, src_len)
        .reads("boxes [P, 3]", &boxes.boxes, 3 * boxes.count)
        .writes("out", &mut out, out_len)
        .values(&a)
        .launch(grid_1d(threads))?;
    Ok(out)
}

/// `images [N, C, H, W]` → `patches [P, C, size, size]`.
pub fn crop_patches_fwd(
    dev: &CudaDevice,
    images: &CudaSlice<f32>,
    boxes: &CropBoxes,
) -> Result<CudaSlice<f32>> {
    let sym = "crop_patches_fwd_f32";
    check_len(sym, "images [N, C, H, W]", images, boxes.images_len())?;
    launch(
        dev,
        sym,
        (images, boxes.images_len()),
        boxes,
        boxes.patches_len(),
    )
}

/// `dpatches [P, C, size, size]` → `dimages [N, C, H, W]`, each patch's gradient added into its
/// window (overlapping windows sum).
pub fn crop_patches_bwd(
    dev: &CudaDevice,
    dpatches: &CudaSlice<f32>,
    boxes: &CropBoxes,
) -> Result<CudaSlice<f32>> {
    let sym = "crop_patches_bwd_f32";
    check_len(
        sym,
        "dpatches [P, C, size, size]",
        dpatches,
        boxes.patches_len(),
    )?;
    launch(
        dev,
        sym,
        (dpatches, boxes.patches_len()),
        boxes,
        boxes.images_len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_outside_their_image_are_refused_on_the_host() {
        let dims = [2, 3, 10, 8];
        let (flat, len) = check_corners(dims, &[(0, 0, 0), (1, 4, 6)], 4).unwrap();
        assert_eq!((flat, len), (vec![0, 0, 0, 1, 4, 6], 2 * 3 * 16));
        for bad in [(2, 0, 0), (0, 5, 0), (0, 0, 7), (0, usize::MAX, 0)] {
            let e = check_corners(dims, &[(0, 0, 0), bad], 4)
                .unwrap_err()
                .to_string();
            assert!(e.contains("box 1"), "{bad:?}: {e}");
        }
        assert!(check_corners(dims, &[], 0).is_err());
    }
}
