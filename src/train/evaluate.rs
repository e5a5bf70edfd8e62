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
    recalibrate_batch_norm_with(model, batches.iter().map(|x| Ok(x.clone())))
}

/// `measure` with every BN layer's running statistics replaced by their precise-BN average over
/// `batches` ([`recalibrate_batch_norm_with`]), then the model's own statistics put back bit for
/// bit, on errors too: what `measure` reads fits the current weights, and the model (a training
/// run's included) is left as it was.
pub fn with_precise_bn<T>(
    model: &YoloX,
    batches: impl IntoIterator<Item = Result<Tensor>>,
    measure: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let saved = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.kind == crate::nn::TensorKind::Buffer)
        .map(|e| {
            let t = &e.tensor;
            let copy = Tensor::from_vec_on(t.to_vec(), t.dims(), t.device())?;
            Ok((e.tensor, copy))
        })
        .collect::<Result<Vec<_>>>()?;
    let result = recalibrate_batch_norm_with(model, batches).and_then(|()| measure());
    for (live, copy) in &saved {
        live.assign(copy)?;
    }
    result
}

/// [`recalibrate_batch_norm`] over batches made one at a time (so they need not all be in
/// memory at once). The model's training mode and BN momentum setting are restored after.
pub fn recalibrate_batch_norm_with(
    model: &YoloX,
    batches: impl IntoIterator<Item = Result<Tensor>>,
) -> Result<()> {
    let was_training = model.store.is_training();
    let momentum = model.store.bn_momentum();
    model.set_training(true);
    let result = (|| {
        for (k, x) in batches.into_iter().enumerate() {
            let x = x?;
            model.store.set_bn_momentum(Some(1.0 / (k as f32 + 1.0)));
            crate::autograd::no_grad(|| model.forward(&x))?;
        }
        Ok(())
    })();
    model.store.set_bn_momentum(momentum);
    model.set_training(was_training);
    result
}
