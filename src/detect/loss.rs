//! YOLOX's total loss (yolo_head.get_losses): SimOTA assignment per image (on the host or the
//! GPU), then objectness BCE over every anchor, and for the positives the box loss
//! (`box_loss.rs`), class BCE against IoU-scaled one-hot targets and, in the last epochs, L1.

pub use super::box_loss::{box_loss, boxes_cxcywh_to_xyxy, BoxLossKind};

use super::simota::{
    simota_assign_with_zero_size, Assignment, SimOtaConfig, SimOtaInput, SimOtaMode,
};
use super::simota_stats::AssignmentStats;
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Knobs of the YOLOX loss.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct YoloxLossConfig {
    pub box_loss: BoxLossKind,
    /// L1 on raw outputs (YOLOX turns it on when mosaic closes).
    pub use_l1: bool,
    /// YOLOX's reg_weight 5.0.
    pub reg_weight: f32,
    pub simota: SimOtaConfig,
}

impl Default for YoloxLossConfig {
    fn default() -> Self {
        YoloxLossConfig {
            box_loss: BoxLossKind::Iou,
            use_l1: false,
            reg_weight: 5.0,
            simota: SimOtaConfig::default(),
        }
    }
}

/// One image's ground truth: class ids and cxcywh boxes in input pixels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageTargets {
    pub classes: Vec<usize>,
    pub boxes_cxcywh: Vec<[f32; 4]>,
}

/// The loss and its parts (already divided by num_fg), for logging.
pub struct YoloxLoss {
    pub total: Tensor,
    pub iou: f32,
    pub obj: f32,
    pub cls: f32,
    pub l1: f32,
    pub num_fg: usize,
    pub num_gt: usize,
    /// What the assignment did per object size (`docs/simota-diagnostics.md`).
    pub assignment_stats: AssignmentStats,
}

/// SimOTA of every image on the host (the predictions are read once).
fn simota_assign_host(
    raw: &Tensor,
    decoded_cxcywh: &Tensor,
    grids: &[(f32, f32)],
    strides: &[f32],
    targets: &[ImageTargets],
    cfg: &SimOtaConfig,
) -> Result<Vec<Assignment>> {
    let (a, ch) = (raw.dims()[1], raw.dims()[2]);
    let raw_v = raw.to_vec();
    let dec_v = decoded_cxcywh.to_vec();
    targets
        .iter()
        .enumerate()
        .map(|(img, t)| {
            let rows = &raw_v[img * a * ch..(img + 1) * a * ch];
            let pred_boxes: Vec<[f32; 4]> = dec_v[img * a * 4..(img + 1) * a * 4]
                .chunks(4)
                .map(|q| [q[0], q[1], q[2], q[3]])
                .collect();
            let cls_logits: Vec<f32> = rows
                .chunks(ch)
                .flat_map(|r| r[5..].iter().copied())
                .collect();
            let obj_logits: Vec<f32> = rows.chunks(ch).map(|r| r[4]).collect();
            simota_assign_with_zero_size(
                &SimOtaInput {
                    pred_boxes_cxcywh: &pred_boxes,
                    cls_logits: &cls_logits,
                    obj_logits: &obj_logits,
                    grids,
                    strides,
                    gt_boxes_cxcywh: &t.boxes_cxcywh,
                    gt_classes: &t.classes,
                    num_classes: ch - 5,
                },
                cfg,
            )
            .map_err(|e| Error::op("yolox_loss", format!("image {img}: {e}")))
        })
        .collect()
}

/// SimOTA of every image with the CUDA kernels (`backend::cuda::simota`, the same assignment
/// as [`simota_assign`](super::simota::simota_assign): the parity table compares cost,
/// candidates, matches and IoUs).
fn simota_assign_cuda(
    raw: &Tensor,
    decoded_cxcywh: &Tensor,
    grids: &[(f32, f32)],
    strides: &[f32],
    targets: &[ImageTargets],
    cfg: &SimOtaConfig,
) -> Result<Vec<Assignment>> {
    use crate::backend::cuda::simota as cuda_simota;
    let dev = crate::backend::cuda::device()?;
    let (a, ch) = (raw.dims()[1], raw.dims()[2]);
    let c = ch - 5;
    let grids_flat: Vec<f32> = grids.iter().flat_map(|&(x, y)| [x, y]).collect();
    let (grids_dev, strides_dev) = (dev.upload(&grids_flat)?, dev.upload(strides)?);
    let prior = match cfg.mode {
        SimOtaMode::Release => cuda_simota::SimOtaPrior::Release,
        SimOtaMode::Centre2023 => cuda_simota::SimOtaPrior::Centre2023,
    };
    let (raw, decoded) = (raw.detach(), decoded_cxcywh.detach());
    // Every image's kernels are queued first and the assignments read back after, so the GPU
    // runs them back to back instead of waiting for the host between images.
    let mut queued = Vec::with_capacity(targets.len());
    for (img, t) in targets.iter().enumerate() {
        if t.classes.is_empty() {
            queued.push(None);
            continue;
        }
        let rows = ops::narrow(&raw, 0, img, 1)?;
        let boxes = ops::narrow(&decoded, 0, img, 1)?.cuda_owned()?;
        let cls = ops::narrow(&rows, 2, 5, c)?.cuda_owned()?;
        let obj = ops::narrow(&rows, 2, 4, 1)?.cuda_owned()?;
        let inp = cuda_simota::SimOtaDeviceInput {
            pred_boxes: &boxes,
            cls_logits: &cls,
            obj_logits: &obj,
            grids: &grids_dev,
            strides: &strides_dev,
            num_anchors: a,
            num_classes: c,
        };
        let on_device = cuda_simota::assign(
            &dev,
            &inp,
            &t.boxes_cxcywh,
            &t.classes,
            prior,
            cfg.center_radius,
        )
        .map_err(|e| Error::op("yolox_loss", format!("image {img}: {e}")))?;
        queued.push(Some(on_device));
    }
    let mut out = Vec::with_capacity(targets.len());
    for on_device in queued {
        out.push(match on_device {
            None => Assignment {
                fg_mask: vec![false; a],
                ..Default::default()
            },
            Some(on_device) => {
                let (fg_mask, matched_gt, pred_ious) =
                    cuda_simota::download_assignment(&dev, &on_device)?;
                Assignment {
                    num_fg: matched_gt.len(),
                    fg_mask,
                    matched_gt,
                    pred_ious,
                }
            }
        });
    }
    Ok(out)
}

/// The summed box loss of the foreground anchors (`fg_boxes [F, 4]` cxcywh, targets xyxy).
/// Zero-size targets (a mosaic fallback's boxes, `augment::yolox_label_rows`) always take the
/// IoU loss, whatever `kind`: 1 at IoU 0, with no gradient, which is what YOLOX's `IOUloss`
/// gives them, where the other kinds' aspect terms would divide by their zero height.
fn fg_box_loss(fg_boxes: &Tensor, targets_xyxy: Vec<f32>, kind: BoxLossKind) -> Result<Tensor> {
    let nf = fg_boxes.dims()[0];
    let (sized, degenerate): (Vec<usize>, Vec<usize>) = (0..nf).partition(|&i| {
        let t = &targets_xyxy[i * 4..i * 4 + 4];
        t[2] > t[0] && t[3] > t[1]
    });
    if degenerate.is_empty() || kind == BoxLossKind::Iou {
        return ops::sum_all(&box_loss(
            &boxes_cxcywh_to_xyxy(fg_boxes)?,
            &Tensor::from_vec(targets_xyxy, [nf, 4])?,
            kind,
        )?);
    }
    let part = |rows: &[usize], kind: BoxLossKind| -> Result<Tensor> {
        let index: Vec<f32> = rows.iter().map(|&i| i as f32).collect();
        let targets: Vec<f32> = rows
            .iter()
            .flat_map(|&i| targets_xyxy[i * 4..i * 4 + 4].iter().copied())
            .collect();
        let boxes = ops::index_select(fg_boxes, 0, &Tensor::from_vec(index, [rows.len()])?)?;
        ops::sum_all(&box_loss(
            &boxes_cxcywh_to_xyxy(&boxes)?,
            &Tensor::from_vec(targets, [rows.len(), 4])?,
            kind,
        )?)
    };
    let zero_size = part(&degenerate, BoxLossKind::Iou)?;
    if sized.is_empty() {
        return Ok(zero_size);
    }
    ops::add(&part(&sized, kind)?, &zero_size)
}

/// The loss's targets from the assignments: per positive its global row `b·A + a`, its
/// ground truth as xyxy, its one-hot class scaled by the prediction's IoU (YOLOX's soft
/// target) and its L1 target; the objectness target of every anchor; the ground-truth count.
struct LossTargets {
    fg_rows: Vec<f32>,
    reg_targets_xyxy: Vec<f32>,
    cls_targets: Vec<f32>,
    l1_targets: Vec<f32>,
    obj_target: Vec<f32>,
    num_gt: usize,
}

fn loss_targets(
    targets: &[ImageTargets],
    assignments: &[Assignment],
    grid: &[(f32, f32, f32)],
    (b, a, c): (usize, usize, usize),
) -> LossTargets {
    let mut fg_rows = Vec::new(); // global row b·A + a
    let mut reg_targets_xyxy = Vec::new();
    let mut cls_targets = Vec::new();
    let mut l1_targets = Vec::new();
    let mut obj_target = vec![0f32; b * a];
    let mut num_gt = 0;
    for (img, (t, assignment)) in targets.iter().zip(assignments).enumerate() {
        num_gt += t.classes.len();
        for ((anchor, &g), &iou) in assignment
            .fg_indices()
            .into_iter()
            .zip(&assignment.matched_gt)
            .zip(&assignment.pred_ious)
        {
            fg_rows.push((img * a + anchor) as f32);
            obj_target[img * a + anchor] = 1.0;
            let gb = t.boxes_cxcywh[g];
            reg_targets_xyxy.extend([
                gb[0] - gb[2] / 2.0,
                gb[1] - gb[3] / 2.0,
                gb[0] + gb[2] / 2.0,
                gb[1] + gb[3] / 2.0,
            ]);
            let mut onehot = vec![0f32; c];
            onehot[t.classes[g]] = iou;
            cls_targets.extend(onehot);
            // yolo_head.get_l1_target: (cx/s − gx, cy/s − gy, log(w/s + 1e-8), log(h/s + 1e-8)).
            let (gx, gy, s) = grid[anchor];
            l1_targets.extend([
                gb[0] / s - gx,
                gb[1] / s - gy,
                (gb[2] / s + 1e-8).ln(),
                (gb[3] / s + 1e-8).ln(),
            ]);
        }
    }
    LossTargets {
        fg_rows,
        reg_targets_xyxy,
        cls_targets,
        l1_targets,
        obj_target,
        num_gt,
    }
}

/// YOLOX's loss (yolo_head.get_losses): `(reg_weight·Σ box + Σ obj BCE over all anchors +
/// Σ cls BCE vs one-hot·IoU + Σ L1) / max(num_fg, 1)`, num_fg over the whole batch.
///
/// `raw [B, A, 5 + C]` are the head's outputs, `decoded_cxcywh [B, A, 4]` the boxes decoded from
/// them (differentiable), `grid` the anchors' `(gx, gy, stride)`.
pub fn yolox_loss(
    raw: &Tensor,
    decoded_cxcywh: &Tensor,
    grid: &[(f32, f32, f32)],
    targets: &[ImageTargets],
    cfg: &YoloxLossConfig,
) -> Result<YoloxLoss> {
    if raw.rank() != 3 || raw.dims()[2] < 6 {
        return Err(Error::shape(
            "yolox_loss",
            "raw outputs [B, A, 5 + C]",
            raw.shape(),
        ));
    }
    let (b, a, ch) = (raw.dims()[0], raw.dims()[1], raw.dims()[2]);
    let c = ch - 5;
    if decoded_cxcywh.dims() != [b, a, 4] || grid.len() != a || targets.len() != b {
        return Err(Error::ShapeMismatch {
            op: "yolox_loss".into(),
            expected: format!("decoded [{b}, {a}, 4], {a} grid anchors, {b} target lists"),
            got: format!(
                "decoded {}, {} grid anchors, {} target lists",
                decoded_cxcywh.shape(),
                grid.len(),
                targets.len()
            ),
        });
    }
    let grids: Vec<(f32, f32)> = grid.iter().map(|g| (g.0, g.1)).collect();
    let strides: Vec<f32> = grid.iter().map(|g| g.2).collect();
    // The CUDA assigner takes boxes of positive size only; a batch holding a zero-size box (a
    // mosaic fallback's) is assigned on the host.
    let zero_size = targets
        .iter()
        .any(|t| t.boxes_cxcywh.iter().any(|b| !(b[2] > 0.0 && b[3] > 0.0)));
    let assignments = if raw.is_cuda() && !zero_size {
        // The predictions stay on the GPU; only the assignments come back (bench simota:
        // 16 images × 8400 anchors × 30 GTs in 3.9 ms on an H200, 225 ms on one CPU core).
        simota_assign_cuda(raw, decoded_cxcywh, &grids, &strides, targets, &cfg.simota)?
    } else {
        simota_assign_host(raw, decoded_cxcywh, &grids, &strides, targets, &cfg.simota)?
    };
    let assignment_stats = AssignmentStats::from_assignments(
        targets
            .iter()
            .map(|t| t.boxes_cxcywh.as_slice())
            .zip(&assignments),
    );

    let LossTargets {
        fg_rows,
        reg_targets_xyxy,
        cls_targets,
        l1_targets,
        obj_target,
        num_gt,
    } = loss_targets(targets, &assignments, grid, (b, a, c));
    let nf = fg_rows.len();
    let norm = nf.max(1) as f32;
    let raw_flat = ops::reshape(raw, [b * a, ch])?;
    let obj_logits = ops::narrow(&raw_flat, 1, 4, 1)?;
    let obj_loss = ops::sum_all(&ops::bce_with_logits(
        &obj_logits,
        &Tensor::from_vec(obj_target, [b * a, 1])?,
        None,
    )?)?;
    let mut total = obj_loss.clone();
    let (mut iou_v, mut cls_v, mut l1_v) = (0.0, 0.0, 0.0);
    if nf > 0 {
        let idx = Tensor::from_vec(fg_rows, [nf])?;
        let fg_raw = ops::index_select(&raw_flat, 0, &idx)?; // [F, 5 + C]
        let fg_boxes = ops::index_select(&ops::reshape(decoded_cxcywh, [b * a, 4])?, 0, &idx)?; // [F, 4]
        let box_l = fg_box_loss(&fg_boxes, reg_targets_xyxy, cfg.box_loss)?;
        let cls_l = ops::sum_all(&ops::bce_with_logits(
            &ops::narrow(&fg_raw, 1, 5, c)?,
            &Tensor::from_vec(cls_targets, [nf, c])?,
            None,
        )?)?;
        iou_v = box_l.item()?;
        cls_v = cls_l.item()?;
        total = ops::add(
            &total,
            &ops::add(&ops::mul_scalar(&box_l, cfg.reg_weight)?, &cls_l)?,
        )?;
        if cfg.use_l1 {
            let l1_l = ops::sum_all(&ops::l1_loss(
                &ops::narrow(&fg_raw, 1, 0, 4)?,
                &Tensor::from_vec(l1_targets, [nf, 4])?,
            )?)?;
            l1_v = l1_l.item()?;
            total = ops::add(&total, &l1_l)?;
        }
    }
    Ok(YoloxLoss {
        total: ops::div_scalar(&total, norm)?,
        iou: iou_v / norm,
        obj: obj_loss.item()? / norm,
        cls: cls_v / norm,
        l1: l1_v / norm,
        num_fg: nf,
        num_gt,
        assignment_stats,
    })
}
