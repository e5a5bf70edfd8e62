//! A loader batch where the training step reads it: the images as a tensor on the trainer's
//! device (on the GPU straight from the loader's buffer through pinned staging) and the loss's
//! targets. Made one step ahead (`DetectorTrainer::step_uploaded`), the host's share of an
//! upload overlaps the GPU's work on the previous step.

use crate::data::loader::Batch;
use crate::detect::loss::ImageTargets;
use crate::tensor::{Device, Tensor};
use crate::Result;

/// A batch ready for a step: images `[N, 3, height, width]` on the step's device, targets per
/// image.
pub struct DeviceBatch {
    pub images: Tensor,
    pub targets: Vec<ImageTargets>,
    pub height: usize,
    pub width: usize,
}

impl DeviceBatch {
    pub fn new(batch: &Batch, device: Device) -> Result<DeviceBatch> {
        let (images, targets) = batch_tensors(batch, device)?;
        Ok(DeviceBatch {
            images,
            targets,
            height: batch.height,
            width: batch.width,
        })
    }
}

/// A loader batch as the model's input (on `device`) and the loss's targets.
pub fn batch_tensors(batch: &Batch, device: Device) -> Result<(Tensor, Vec<ImageTargets>)> {
    let shape = [batch.batch, 3, batch.height, batch.width];
    let images = match device {
        Device::Cpu => Tensor::from_vec(batch.images.clone(), shape)?,
        // Straight from the loader's buffer to the GPU (no host tensor in between); in bf16
        // storage mode as bf16 bits, half the transfer: the first conv rounds its input to bf16
        // either way (Focus only moves values), so the products see the same bits.
        Device::Cuda => {
            let dev = crate::backend::cuda::device()?;
            if crate::backend::cuda::bf16::stores_bf16(&dev) {
                Tensor::from_cuda_bf16(dev.upload_staged_bf16(&batch.images)?, shape)?
            } else {
                Tensor::from_cuda(dev.upload_staged(&batch.images)?, shape)?
            }
        }
    };
    let mut targets = Vec::with_capacity(batch.batch);
    for b in 0..batch.batch {
        let mut t = ImageTargets::default();
        for l in 0..batch.num_labels[b] {
            let row =
                &batch.labels[(b * batch.max_labels + l) * 5..(b * batch.max_labels + l + 1) * 5];
            // Zero-size boxes (a mosaic's fallback keeps them, as YOLOX's TrainTransform does)
            // are ground truths as in YOLOX's head: the loss assigns each one anchor
            // (docs/yolox-training-parity.md, difference 1). Only a malformed negative size is
            // left out.
            if !(row[3] >= 0.0 && row[4] >= 0.0) {
                continue;
            }
            t.classes.push(row[0] as usize);
            t.boxes_cxcywh.push([row[1], row[2], row[3], row[4]]);
        }
        targets.push(t);
    }
    Ok((images, targets))
}
