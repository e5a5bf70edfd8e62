//! Detection-specific work: label assignment (SimOTA), losses, decoding and NMS, and YOLOX's
//! inference path (`detect_images`, this file).
//!
//! Boxes are cxcywh in input pixels out of the decoder, xyxy for NMS and in [`Det`], COCO xywh only
//! in [`postprocess::to_coco`] (docs/design.md, "Conventions").

pub mod box_loss;
pub mod decode;
pub mod loss;
pub mod nms;
pub mod postprocess;
pub mod simota;
pub mod simota_stats;

pub use decode::{decode_batch_f32, decode_boxes, decode_image_f32, DecodedImage};
pub use nms::{batched_nms, iou_xyxy, nms};
pub use postprocess::{
    postprocess_image, postprocess_image_on, postprocess_raw, to_coco, to_original, Det,
    PostprocessConfig,
};

use image::RgbImage;

use crate::data::augment::letterbox;
use crate::models::YoloX;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Letterboxed RGB images (all `W × H`) → the model's input `[B, 3, H, W]`: BGR, f32 0..255,
/// CHW, no normalisation (YOLOX `ValTransform(legacy=False)`).
pub fn images_to_bgr_tensor(images: &[RgbImage]) -> Result<Tensor> {
    let Some(first) = images.first() else {
        return Err(Error::InvalidArgument(
            "images_to_bgr_tensor: no images".into(),
        ));
    };
    let (w, h) = (first.width() as usize, first.height() as usize);
    let plane = w * h;
    let mut data = vec![0f32; images.len() * 3 * plane];
    for (i, img) in images.iter().enumerate() {
        if (img.width() as usize, img.height() as usize) != (w, h) {
            return Err(Error::shape(
                "images_to_bgr_tensor",
                format!("every image {w}x{h}"),
                format!("image {i} is {}x{}", img.width(), img.height()),
            ));
        }
        let out = &mut data[i * 3 * plane..(i + 1) * 3 * plane];
        for (p, px) in img.pixels().enumerate() {
            // channel 0 = B, 1 = G, 2 = R
            out[p] = px[2] as f32;
            out[plane + p] = px[1] as f32;
            out[2 * plane + p] = px[0] as f32;
        }
    }
    Tensor::from_vec(data, vec![images.len(), 3, h, w])
}

/// Letterbox → BGR CHW tensor → forward in eval mode without recording → decode → YOLOX
/// postprocess → boxes back in each original image's pixels. One list of detections per image,
/// by score descending. `input_hw` is the network input (height, width), multiples of 32.
///
/// The model is in eval mode during the call and its previous mode is restored afterwards.
pub fn detect_images(
    model: &YoloX,
    images: &[RgbImage],
    input_hw: (usize, usize),
    cfg: &PostprocessConfig,
) -> Result<Vec<Vec<Det>>> {
    let (ih, iw) = input_hw;
    if ih == 0 || iw == 0 || ih % 32 != 0 || iw % 32 != 0 {
        return Err(Error::InvalidArgument(format!(
            "detect_images: input size must be positive multiples of 32, got {ih}x{iw} (HxW)"
        )));
    }
    cfg.validate()?;
    if images.is_empty() {
        return Ok(Vec::new());
    }
    if let Some((i, _)) = images
        .iter()
        .enumerate()
        .find(|(_, im)| im.width() == 0 || im.height() == 0)
    {
        return Err(Error::InvalidArgument(format!(
            "detect_images: image {i} is empty"
        )));
    }
    let (boxed, ratios): (Vec<RgbImage>, Vec<f32>) = images
        .iter()
        .map(|im| letterbox(im, iw as u32, ih as u32))
        .unzip();
    let x = images_to_bgr_tensor(&boxed)?; // [B, 3, H, W]
    let was_training = model.store.is_training();
    model.set_training(false);
    let raw = crate::autograd::no_grad(|| model.forward(&x)); // [B, A, 5 + C]
    model.set_training(was_training);
    let raw = raw?;
    let grid = YoloX::anchor_grid(ih, iw);
    let decoded = decode_batch_f32(&raw, &grid)?;
    decoded
        .iter()
        .zip(images.iter().zip(&ratios))
        .map(|(d, (im, &r))| {
            let mut dets = postprocess_image_on(d, cfg, raw.device())?;
            to_original(&mut dets, r, im.width(), im.height())?;
            Ok(dets)
        })
        .collect()
}
