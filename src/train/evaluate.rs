//! Evaluating a detector on a COCO dataset: letterbox → forward (eval mode, no grad) → YOLOX
//! postprocess → COCO detections in original pixels → pycocotools-identical metrics.

use crate::data::dataset::{CocoDataset, Detection};
use crate::data::image_io::read_rgb;
use crate::detect::{detect_images, to_coco, PostprocessConfig};
use crate::eval::coco::{evaluate, MaxDets, Metrics};
use crate::models::YoloX;
use crate::tensor::Tensor;
use crate::Result;

/// The detections of `model` on every image of `ds` (unreadable images are skipped with a
/// warning naming them).
pub fn detect_dataset(
    model: &YoloX,
    ds: &CocoDataset,
    input_hw: (usize, usize),
    post: &PostprocessConfig,
    batch_size: usize,
) -> Result<Vec<Detection>> {
    let category_ids: Vec<u64> = ds.categories.iter().map(|c| c.id).collect();
    let mut out = Vec::new();
    // A bar on a terminal; nothing in logs (the epoch's line reports the result).
    let mut progress =
        crate::progress::Progress::new(ds.images.len() as u64, "evaluation").with_line_every(None);
    for chunk in ds.images.chunks(batch_size.max(1)) {
        if progress.interrupted() {
            return Err(crate::Error::Msg("evaluation interrupted".into()));
        }
        progress.tick(chunk.len() as u64, None, None);
        let mut images = Vec::with_capacity(chunk.len());
        let mut ids = Vec::with_capacity(chunk.len());
        for info in chunk {
            let path = ds.image_path(info);
            match read_rgb(&path) {
                Ok(img) => {
                    images.push(img);
                    ids.push(info.id);
                }
                Err(e) => eprintln!("warning: skipping {}: {e}", path.display()),
            }
        }
        let dets = detect_images(model, &images, input_hw, post)?;
        for (image_dets, id) in dets.iter().zip(ids) {
            out.extend(to_coco(image_dets, id, &category_ids)?);
        }
    }
    progress.finish();
    Ok(out)
}

/// COCO metrics (max dets 100/300/1000, as the study reports) of `model` on `ds`.
pub fn evaluate_detector(
    model: &YoloX,
    ds: &CocoDataset,
    input_hw: (usize, usize),
    conf: f32,
    nms: f32,
    batch_size: usize,
) -> Result<Metrics> {
    let post = PostprocessConfig {
        conf_thre: conf,
        nms_thre: nms,
        ..PostprocessConfig::default()
    };
    let dets = detect_dataset(model, ds, input_hw, &post, batch_size)?;
    evaluate(ds, &dets, MaxDets::STUDY)
}

/// "Precise BN": replace every BN layer's running statistics by their average over `batches`
/// (batch statistics in training mode, no gradients, cumulative average: momentum 1/(k+1)).
///
/// YOLOX's BN momentum of 0.03 needs a few hundred steps before the running statistics match
/// the weights; short runs (tests, quick ablations) evaluate reliably only after this.
pub fn recalibrate_batch_norm(model: &YoloX, batches: &[Tensor]) -> Result<()> {
    let was_training = model.store.is_training();
    model.set_training(true);
    let result = (|| {
        for (k, x) in batches.iter().enumerate() {
            model.store.set_bn_momentum(Some(1.0 / (k as f32 + 1.0)));
            crate::autograd::no_grad(|| model.forward(x))?;
        }
        Ok(())
    })();
    model.store.set_bn_momentum(None);
    model.set_training(was_training);
    result
}
