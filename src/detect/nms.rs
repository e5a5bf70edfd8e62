//! Greedy non-maximum suppression on xyxy boxes, with torchvision's semantics
//! (torchvision/csrc/ops/cpu/nms_kernel.cpp, used by yolox/utils/boxes.py `postprocess`):
//! sort by score descending, keep the best remaining box, drop every later box whose IoU with it
//! is **strictly greater** than the threshold, repeat. Boxes with equal scores keep their input
//! order (the sort is stable), so results do not depend on the sort algorithm.
//!
//! IoU follows torchvision's `box_iou`: areas `(x2-x1)·(y2-y1)` with no +1, intersection clamped at
//! 0. Degenerate pairs (union 0) give NaN, which is never `> thr`, so neither suppresses the other.

use crate::{Error, Result};

/// Area of an xyxy box (may be negative for a malformed box, as in torchvision).
pub fn area_xyxy(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// IoU of two xyxy boxes.
pub fn iou_xyxy(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    inter / (area_xyxy(a) + area_xyxy(b) - inter)
}

/// Indices sorted by score descending, ties in input order; NaN scores sort last.
fn order_by_score(scores: &[f32]) -> Vec<usize> {
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // `sort_by` is stable; total_cmp is a total order, so the sort cannot panic.
    order.sort_by(|&i, &j| key(j).total_cmp(&key(i)));
    order
}

fn greedy(
    op: &str,
    boxes_xyxy: &[[f32; 4]],
    scores: &[f32],
    classes: Option<&[usize]>,
    thr: f32,
) -> Result<Vec<usize>> {
    let n = boxes_xyxy.len();
    if scores.len() != n || classes.is_some_and(|c| c.len() != n) {
        return Err(Error::shape(
            op,
            format!("{n} scores and classes for {n} boxes"),
            format!(
                "{} scores, {} classes",
                scores.len(),
                classes.map_or(n, <[usize]>::len)
            ),
        ));
    }
    let order = order_by_score(scores);
    let mut suppressed = vec![false; boxes_xyxy.len()];
    let mut keep = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        for &j in &order[pos + 1..] {
            if suppressed[j] || classes.is_some_and(|c| c[i] != c[j]) {
                continue;
            }
            if iou_xyxy(&boxes_xyxy[i], &boxes_xyxy[j]) > thr {
                suppressed[j] = true;
            }
        }
    }
    Ok(keep)
}

/// Class-agnostic NMS (`torchvision.ops.nms`): the indices of the kept boxes, by score
/// descending. `boxes_xyxy` and `scores` must have the same length.
pub fn nms(boxes_xyxy: &[[f32; 4]], scores: &[f32], iou_thr: f32) -> Result<Vec<usize>> {
    greedy("nms", boxes_xyxy, scores, None, iou_thr)
}

/// Class-aware NMS (`torchvision.ops.batched_nms`): a box only suppresses boxes of its own class.
/// Returns the kept indices by score descending.
pub fn batched_nms(
    boxes_xyxy: &[[f32; 4]],
    scores: &[f32],
    classes: &[usize],
    iou_thr: f32,
) -> Result<Vec<usize>> {
    greedy("batched_nms", boxes_xyxy, scores, Some(classes), iou_thr)
}
