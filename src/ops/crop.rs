//! Batched square crops: `images [N, C, H, W]` and P boxes `(image, x, y)` of side `s`
//! → `patches [P, C, s, s]`, patch `p` = `images[image_p, :, y_p..y_p+s, x_p..x_p+s]`.
//!
//! One op for every patch of a step (patch-contrastive SSL, docs/the-study.md: one anchor, four
//! positives and four negatives per frame), instead of a script loop of `narrow` calls. Boxes must lie inside
//! their image (the sampler guarantees it; a box that does not is an error naming it).
//! Backward scatter-adds each patch's gradient into its image window (windows may overlap:
//! the study's negatives can overlap each other and the right positive).

use rayon::prelude::*;

use crate::autograd::record;
use crate::backend::cuda::crop::{crop_patches_bwd, crop_patches_fwd, CropBoxes};
use crate::tensor::Tensor;
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
    if images.is_cuda() {
        return crop_patches_cuda(images, boxes, size);
    }
    let patch_len = c * size * size;
    let mut out = vec![0f32; boxes.len() * patch_len];
    images.with_values(|v| {
        out.par_chunks_mut(patch_len.max(1))
            .zip(boxes.par_iter())
            .for_each(|(dst, b)| {
                for ch in 0..c {
                    for r in 0..size {
                        let src = ((b.image * c + ch) * h + b.y + r) * w + b.x;
                        let d = (ch * size + r) * size;
                        dst[d..d + size].copy_from_slice(&v[src..src + size]);
                    }
                }
            });
    })?;
    let out = Tensor::from_vec(out, [boxes.len(), c, size, size])?;
    let boxes = boxes.to_vec();
    let in_shape = images.shape().clone();
    record("crop_patches", out, &[images], move |g| {
        // Scatter-add per image (patches of one image may overlap), images in parallel.
        let mut gx = vec![0f32; in_shape.numel()];
        let image_len = c * h * w;
        g.with_values(|gv| {
            gx.par_chunks_mut(image_len.max(1))
                .enumerate()
                .for_each(|(img, gimg)| {
                    for (p, b) in boxes.iter().enumerate().filter(|(_, b)| b.image == img) {
                        for ch in 0..c {
                            for r in 0..size {
                                let dst = (ch * h + b.y + r) * w + b.x;
                                let src = ((p * c + ch) * size + r) * size;
                                for t in 0..size {
                                    gimg[dst + t] += gv[src + t];
                                }
                            }
                        }
                    }
                });
        })?;
        Ok(vec![Some(Tensor::from_vec(gx, in_shape.clone())?)])
    })
}

/// The CUDA arm (`kernels/crop.cu`): the boxes (checked above) are uploaded once and serve the
/// forward gather and the backward scatter-add.
fn crop_patches_cuda(images: &Tensor, boxes: &[PatchBox], size: usize) -> Result<Tensor> {
    let d = images.dims();
    let dims = [d[0], d[1], d[2], d[3]];
    let corners: Vec<(usize, usize, usize)> = boxes.iter().map(|b| (b.image, b.x, b.y)).collect();
    let dev = crate::backend::cuda::device()?;
    let device_boxes = CropBoxes::new(&dev, dims, &corners, size)?;
    let y = images.with_cuda(|dev, xs| crop_patches_fwd(dev, xs, &device_boxes))?;
    let out = Tensor::from_cuda(y, [boxes.len(), dims[1], size, size])?;
    let in_shape = images.shape().clone();
    record("crop_patches", out, &[images], move |g| {
        let gx = g.with_cuda(|dev, gs| crop_patches_bwd(dev, gs, &device_boxes))?;
        Ok(vec![Some(Tensor::from_cuda(gx, in_shape.clone())?)])
    })
}
