//! Batched square crops: `images [N, C, H, W]` and P boxes `(image, x, y)` of side `s`
//! → `patches [P, C, s, s]`, patch `p` = `images[image_p, :, y_p..y_p+s, x_p..x_p+s]`.
//!
//! One op for every patch of a step (patch-contrastive SSL, docs/the-study.md: one anchor, four
//! positives and four negatives per frame), instead of a script loop of `narrow` calls. Boxes must lie inside
//! their image (the sampler guarantees it; a box that does not is an error naming it).
//! Backward scatter-adds each patch's gradient into its image window (windows may overlap:
//! the study's negatives can overlap each other and the right positive).
//! Kernels: `backend::cpu::crop` and `backend::cuda::crop` (`kernels/crop.cu`); this file
//! validates, dispatches (`fwd`, `bwd`) and records.

use crate::autograd::record;
use crate::backend::cpu::crop::{self as cpu_crop, Corner};
use crate::backend::cuda::crop::{crop_patches_bwd, crop_patches_fwd, CropBoxes};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The top-left corner of one square patch in image `image` of the batch (pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchBox {
    pub image: usize,
    pub x: usize,
    pub y: usize,
}

/// `images [N, C, H, W]`, `boxes` (P corners), side `size` → `[P, C, size, size]`.
pub fn crop_patches(images: &Tensor, boxes: &[PatchBox], size: usize) -> Result<Tensor> {
    if images.rank() != 4 {
        return Err(Error::shape(
            "crop_patches",
            "images [N, C, H, W]",
            images.shape(),
        ));
    }
    let (n, c, h, w) = (
        images.dims()[0],
        images.dims()[1],
        images.dims()[2],
        images.dims()[3],
    );
    if size == 0 {
        return Err(Error::op("crop_patches", "patch size must be >= 1"));
    }
    for (k, b) in boxes.iter().enumerate() {
        if b.image >= n || b.x + size > w || b.y + size > h {
            return Err(Error::op(
                "crop_patches",
                format!(
                    "box {k} (image {}, x {}, y {}, side {size}) is not inside images {}",
                    b.image,
                    b.x,
                    b.y,
                    images.shape()
                ),
            ));
        }
    }
    let dims = [n, c, h, w];
    let corners: Vec<Corner> = boxes.iter().map(|b| (b.image, b.x, b.y)).collect();
    let (out, saved) = fwd(images, dims, corners, size)?;
    record("crop_patches", out, &[images], move |g| {
        Ok(vec![Some(bwd(&saved, g, dims, size)?)])
    })
}

/// The boxes as the backward needs them: host corners, or the device copy the forward uploaded.
enum Saved {
    Cpu(Vec<Corner>),
    Cuda(CropBoxes),
}

/// The forward on the images' device.
fn fwd(
    images: &Tensor,
    dims: [usize; 4],
    corners: Vec<Corner>,
    size: usize,
) -> Result<(Tensor, Saved)> {
    match images.device() {
        Device::Cpu => cpu_fwd(images, dims, corners, size),
        Device::Cuda => cuda_fwd(images, dims, corners, size),
    }
}

/// The images' gradient on the device the forward ran on.
fn bwd(saved: &Saved, g: &Tensor, dims: [usize; 4], size: usize) -> Result<Tensor> {
    match saved {
        Saved::Cpu(corners) => {
            let gx = g.with_values(|gv| cpu_crop::bwd(gv, dims, corners, size))?;
            Tensor::from_vec(gx, dims)
        }
        Saved::Cuda(device_boxes) => cuda_bwd(device_boxes, g, dims),
    }
}

fn cpu_fwd(
    images: &Tensor,
    dims: [usize; 4],
    corners: Vec<Corner>,
    size: usize,
) -> Result<(Tensor, Saved)> {
    let out = images.with_values(|v| cpu_crop::fwd(v, dims, &corners, size))?;
    let out = Tensor::from_vec(out, [corners.len(), dims[1], size, size])?;
    Ok((out, Saved::Cpu(corners)))
}

/// `kernels/crop.cu`: the boxes (checked above) are uploaded once and serve the forward gather
/// and the backward scatter-add.
fn cuda_fwd(
    images: &Tensor,
    dims: [usize; 4],
    corners: Vec<Corner>,
    size: usize,
) -> Result<(Tensor, Saved)> {
    let dev = crate::backend::cuda::device()?;
    let device_boxes = CropBoxes::new(&dev, dims, &corners, size)?;
    let y = images.with_cuda(|dev, xs| crop_patches_fwd(dev, xs, &device_boxes))?;
    let out = Tensor::from_cuda(y, [corners.len(), dims[1], size, size])?;
    Ok((out, Saved::Cuda(device_boxes)))
}

fn cuda_bwd(device_boxes: &CropBoxes, g: &Tensor, dims: [usize; 4]) -> Result<Tensor> {
    let gx = g.with_cuda(|dev, gs| crop_patches_bwd(dev, gs, device_boxes))?;
    Tensor::from_cuda(gx, dims)
}
