//! YOLOX post-processing (yolox/utils/boxes.py `postprocess`, docs/yolox.md §2): cxcywh → xyxy,
//! one label per anchor (max class probability), score = obj · class_conf, threshold, NMS,
//! then boxes back to the original image by the letterbox ratio.

use super::decode::DecodedImage;
use super::nms::{batched_nms, nms};
use crate::data::dataset::Detection;
use crate::tensor::Device;
use crate::{Error, Result};

/// Thresholds of the post-processing. `Default` is YOLOX's exp defaults (`test_conf` 0.01,
/// `nmsthre` 0.65, class-aware, no cap).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    /// Keep anchors with `obj · class_conf >= conf_thre`.
    pub conf_thre: f32,
    /// NMS suppresses IoU strictly above this.
    pub nms_thre: f32,
    /// Plain NMS across classes instead of per-class NMS (the YOLOX demo uses this).
    pub class_agnostic: bool,
    /// Keep at most this many detections per image, the best by score, after NMS
    /// (YOLOX has no cap; COCOeval applies maxDets=100 itself).
    pub max_dets: Option<usize>,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        PostprocessConfig {
            conf_thre: 0.01,
            nms_thre: 0.65,
            class_agnostic: false,
            max_dets: None,
        }
    }
}

impl PostprocessConfig {
    /// Thresholds must be finite and in [0, 1].
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("conf_thre", self.conf_thre), ("nms_thre", self.nms_thre)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "postprocess: {name} must be in [0, 1], got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// One detection: a box (xyxy), its score `obj · class_conf` and its class index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Det {
    pub box_xyxy: [f32; 4],
    /// `obj · class_conf`, the score NMS and COCO use.
    pub score: f32,
    pub obj: f32,
    pub class_conf: f32,
    /// 0-based class index (the model's output channel).
    pub class: usize,
}

/// `(cx, cy, w, h)` → `(x1, y1, x2, y2)`.
pub fn cxcywh_to_xyxy(b: [f32; 4]) -> [f32; 4] {
    [
        b[0] - b[2] / 2.0,
        b[1] - b[3] / 2.0,
        b[0] + b[2] / 2.0,
        b[1] + b[3] / 2.0,
    ]
}

/// YOLOX `postprocess` for one image, boxes in input (letterboxed) pixels, sorted by score
/// descending.
pub fn postprocess_image(decoded: &DecodedImage, cfg: &PostprocessConfig) -> Result<Vec<Det>> {
    postprocess_image_on(decoded, cfg, Device::Cpu)
}

/// Candidates from which [`postprocess_image_on`] runs NMS on the GPU: greedy NMS compares every
/// pair, and evaluation thresholds (conf 0.001-0.01) leave thousands of candidates per image
/// (8,400 anchors at 640), where the host pass costs tens of ms; below this it costs less than
/// the uploads.
const GPU_NMS_MIN_CANDIDATES: usize = 512;

/// [`postprocess_image`] with NMS on `device` for large candidate sets (the same kept boxes: the
/// CUDA NMS sorts and breaks ties as `detect::nms` does, and the selftest compares them).
pub fn postprocess_image_on(
    decoded: &DecodedImage,
    cfg: &PostprocessConfig,
    device: Device,
) -> Result<Vec<Det>> {
    cfg.validate()?;
    if decoded.num_classes == 0 {
        return Ok(Vec::new());
    }
    let mut cands = Vec::new();
    for a in 0..decoded.num_anchors() {
        // boxes.py: class_conf, class_pred = torch.max(image_pred[:, 5: 5 + num_classes], 1)
        // (the first maximum wins a tie, as torch.max returns on CPU).
        let (class, class_conf) = decoded.cls_of(a).iter().copied().enumerate().fold(
            (0, f32::NEG_INFINITY),
            |best, (j, p)| if p > best.1 { (j, p) } else { best },
        );
        let obj = decoded.obj[a];
        let score = obj * class_conf;
        // conf_mask = (image_pred[:, 4] * class_conf.squeeze() >= conf_thre); NaN never passes.
        if score >= cfg.conf_thre {
            cands.push(Det {
                box_xyxy: cxcywh_to_xyxy(decoded.boxes_cxcywh[a]),
                score,
                obj,
                class_conf,
                class,
            });
        }
    }
    let boxes: Vec<[f32; 4]> = cands.iter().map(|d| d.box_xyxy).collect();
    let scores: Vec<f32> = cands.iter().map(|d| d.score).collect();
    let keep = if device == Device::Cuda && cands.len() >= GPU_NMS_MIN_CANDIDATES {
        let classes: Option<Vec<usize>> =
            (!cfg.class_agnostic).then(|| cands.iter().map(|d| d.class).collect());
        crate::backend::cuda::detect::nms_by_score(
            &crate::backend::cuda::device()?,
            &boxes,
            &scores,
            classes.as_deref(),
            cfg.nms_thre,
        )?
    } else if cfg.class_agnostic {
        nms(&boxes, &scores, cfg.nms_thre)?
    } else {
        let classes: Vec<usize> = cands.iter().map(|d| d.class).collect();
        batched_nms(&boxes, &scores, &classes, cfg.nms_thre)?
    };
    // `keep` is sorted by score descending, so the cap keeps the best.
    let cap = cfg.max_dets.unwrap_or(usize::MAX);
    Ok(keep.into_iter().take(cap).map(|i| cands[i]).collect())
}

/// Boxes from input pixels back to the original image: divided by the letterbox ratio (YOLOX
/// `bboxes /= ratio`, the image sits at the top-left so there is no offset), then clipped to
/// `[0, width] × [0, height]`.
pub fn to_original(dets: &mut [Det], ratio: f32, width: u32, height: u32) -> Result<()> {
    if !(ratio.is_finite() && ratio > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "to_original: letterbox ratio must be positive, got {ratio}"
        )));
    }
    let (w, h) = (width as f32, height as f32);
    for d in dets {
        let b = &mut d.box_xyxy;
        b[0] = (b[0] / ratio).clamp(0.0, w);
        b[1] = (b[1] / ratio).clamp(0.0, h);
        b[2] = (b[2] / ratio).clamp(0.0, w);
        b[3] = (b[3] / ratio).clamp(0.0, h);
    }
    Ok(())
}

/// Detections of one image → COCO results (`bbox` xywh). `category_ids[class]` is the COCO
/// category id of each class index (e.g. `[1]` for one class, or a dataset's categories in order,
/// as `CocoDataset::class_index` numbers them).
pub fn to_coco(dets: &[Det], image_id: u64, category_ids: &[u64]) -> Result<Vec<Detection>> {
    dets.iter()
        .map(|d| {
            let category_id = *category_ids.get(d.class).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "to_coco: class index {} has no category id ({} known)",
                    d.class,
                    category_ids.len()
                ))
            })?;
            let [x1, y1, x2, y2] = d.box_xyxy.map(f64::from);
            Ok(Detection {
                image_id,
                category_id,
                bbox_xywh: [x1, y1, x2 - x1, y2 - y1],
                score: d.score as f64,
            })
        })
        .collect()
}

/// Decode and post-process a batch of raw outputs `[B, A, 5 + C]` (the evaluation loop's path):
/// one list per image, boxes xyxy in **input** pixels (use [`to_original`] with each image's
/// letterbox ratio to go back to the original image). Outputs on the GPU are decoded there, and
/// large candidate sets go through the GPU's NMS.
pub fn postprocess_raw(
    raw: &crate::tensor::Tensor,
    grid: &[(f32, f32, f32)],
    cfg: &PostprocessConfig,
) -> Result<Vec<Vec<Det>>> {
    super::decode::decode_batch_f32(raw, grid)?
        .iter()
        .map(|d| postprocess_image_on(d, cfg, raw.device()))
        .collect()
}
