//! Launchers of `kernels/detect.cu`: YOLOX inference decode and greedy NMS (the pairwise
//! suppression masks on the GPU, the greedy pass over them on the host). CPU twins:
//! `src/detect/decode.rs` (`decode_batch_f32`) and `src/detect/nms.rs` (`nms`, `batched_nms`).

use cudarc::driver::CudaSlice;

use super::context::{cuda_err, grid_1d, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// The anchor grid as the decode kernel reads it: `[A, 3]` = `(gx, gy, stride)` per anchor, as
/// `YoloX::anchor_grid` returns it. Upload once per input size.
pub fn upload_grid(dev: &CudaDevice, grid: &[(f32, f32, f32)]) -> Result<CudaSlice<f32>> {
    let flat: Vec<f32> = grid.iter().flat_map(|&(x, y, s)| [x, y, s]).collect();
    dev.upload(&flat)
}

/// Raw outputs `[B, A, 5 + C]` → `[B, A, 5 + C]` rows `(cx, cy, w, h, σ(obj), σ(cls_1..C))`,
/// boxes in input pixels. `grid` is [`upload_grid`]'s `[A, 3]`.
pub fn decode_outputs(
    dev: &CudaDevice,
    raw: &CudaSlice<f32>,
    grid: &CudaSlice<f32>,
    batch: usize,
    anchors: usize,
    num_classes: usize,
) -> Result<CudaSlice<f32>> {
    let sym = "decode_outputs_f32";
    let row = num_classes
        .checked_add(5)
        .ok_or_else(|| Error::op(sym, "too many classes"))?;
    let rows = batch
        .checked_mul(anchors)
        .ok_or_else(|| Error::op(sym, "sizes overflow"))?;
    let n = rows
        .checked_mul(row)
        .ok_or_else(|| Error::op(sym, "sizes overflow"))?;
    check_len(sym, "raw [B, A, 5 + C]", raw, n)?;
    check_len(sym, "grid [A, 3]", grid, anchors.saturating_mul(3))?;
    let (b, a, r) = (
        to_i64(sym, batch)?,
        to_i64(sym, anchors)?,
        to_i64(sym, row)?,
    );
    let mut out = dev.zeros(n)?;
    if n == 0 {
        return Ok(out);
    }
    Kernel::new(dev, KernelFile::Detect, sym)
        .reads("raw [B, A, 5 + C]", raw, n)
        .reads("grid [A, 3]", grid, 3 * anchors)
        .writes("out [B, A, 5 + C]", &mut out, n)
        .value(&b)
        .value(&a)
        .value(&r)
        .launch(grid_1d(rows))?;
    Ok(out)
}

/// The suppression masks `[N, ceil(N/64)]` of boxes sorted by score (row i, bit j: box i
/// suppresses box j > i when kept). `classes`: same-class pairs only.
fn nms_mask(
    dev: &CudaDevice,
    boxes: &CudaSlice<f32>,
    classes: Option<&CudaSlice<i32>>,
    iou_thr: f32,
) -> Result<(Vec<u64>, usize, usize)> {
    let sym = "nms_mask_f32";
    if !boxes.len().is_multiple_of(4) {
        return Err(Error::ShapeMismatch {
            op: sym.into(),
            expected: "boxes [N, 4] xyxy".into(),
            got: format!("{} values", boxes.len()),
        });
    }
    let n = boxes.len() / 4;
    if let Some(c) = classes {
        check_len(sym, "classes [N]", c, n)?;
    }
    let words = n.div_ceil(64);
    if n == 0 {
        return Ok((Vec::new(), 0, 0));
    }
    let cells = n
        .checked_mul(words)
        .ok_or_else(|| Error::op(sym, format!("{n} boxes: mask size overflows")))?;
    let mut mask = dev
        .stream()
        .alloc_zeros::<u64>(cells)
        .map_err(|e| cuda_err(&format!("alloc of {n}x{words} NMS mask words"), e))?;
    // The kernel needs a class buffer even without classes; it is not read then.
    let none;
    let cls = match classes {
        Some(c) => c,
        None => {
            none = dev.zeros_i32(1)?;
            &none
        }
    };
    let (nn, ww, has) = (
        to_i64(sym, n)?,
        to_i64(sym, words)?,
        classes.is_some() as i32,
    );
    Kernel::new(dev, KernelFile::Detect, sym)
        .reads("boxes [N, 4] (xyxy)", boxes, 4 * n)
        .reads("classes [N]", cls, if classes.is_some() { n } else { 0 })
        .writes("mask [N, words]", &mut mask, cells)
        .value(&nn)
        .value(&ww)
        .value(&iou_thr)
        .value(&has)
        .launch(grid_1d(cells))?;
    Ok((dev.download(&mask)?, n, words))
}

/// The greedy pass: walk the boxes in order, keep one that no kept box suppressed, and add its
/// row of the mask to the suppressed set.
fn greedy(mask: &[u64], n: usize, words: usize) -> Vec<usize> {
    let mut removed = vec![0u64; words];
    let mut keep = Vec::new();
    for i in 0..n {
        if removed[i / 64] >> (i % 64) & 1 == 1 {
            continue;
        }
        keep.push(i);
        let row = &mask[i * words..(i + 1) * words];
        for (r, m) in removed.iter_mut().zip(row).skip(i / 64) {
            *r |= m;
        }
    }
    keep
}

/// Greedy NMS over `boxes_xyxy_sorted [N, 4]`, already sorted by score descending: the kept
/// positions (into the sorted order), ascending. A box drops every later box whose IoU with it
/// is strictly greater than `iou_thr` (torchvision's rule, as `detect::nms::nms`).
pub fn nms(
    dev: &CudaDevice,
    boxes_xyxy_sorted: &CudaSlice<f32>,
    iou_thr: f32,
) -> Result<Vec<usize>> {
    let (mask, n, words) = nms_mask(dev, boxes_xyxy_sorted, None, iou_thr)?;
    Ok(greedy(&mask, n, words))
}

/// Class-aware greedy NMS (`detect::nms::batched_nms`): as [`nms`], a box only suppresses boxes
/// of its own class; `classes_sorted [N]` in the boxes' sorted order.
pub fn batched_nms(
    dev: &CudaDevice,
    boxes_xyxy_sorted: &CudaSlice<f32>,
    classes_sorted: &CudaSlice<i32>,
    iou_thr: f32,
) -> Result<Vec<usize>> {
    let (mask, n, words) = nms_mask(dev, boxes_xyxy_sorted, Some(classes_sorted), iou_thr)?;
    Ok(greedy(&mask, n, words))
}

/// Host boxes and scores in any order → the kept indices (into the inputs) by score descending,
/// the same result as `detect::nms::nms` / `batched_nms`: the same stable sort (ties in input
/// order, NaN scores last), then [`nms`] / [`batched_nms`] on the sorted boxes.
pub fn nms_by_score(
    dev: &CudaDevice,
    boxes_xyxy: &[[f32; 4]],
    scores: &[f32],
    classes: Option<&[usize]>,
    iou_thr: f32,
) -> Result<Vec<usize>> {
    let n = boxes_xyxy.len();
    if scores.len() != n || classes.is_some_and(|c| c.len() != n) {
        return Err(Error::shape(
            "nms_by_score",
            format!("{n} scores and classes for {n} boxes"),
            format!(
                "{} scores, {} classes",
                scores.len(),
                classes.map_or(n, <[usize]>::len)
            ),
        ));
    }
    // detect::nms's order: score descending, NaN as -inf, stable.
    let key = |i: usize| {
        if scores[i].is_nan() {
            f32::NEG_INFINITY
        } else {
            scores[i]
        }
    };
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| key(j).total_cmp(&key(i)));
    let sorted: Vec<f32> = order.iter().flat_map(|&i| boxes_xyxy[i]).collect();
    let boxes = dev.upload(&sorted)?;
    let kept = match classes {
        None => nms(dev, &boxes, iou_thr)?,
        Some(c) => {
            let cls = order
                .iter()
                .map(|&i| {
                    i32::try_from(c[i]).map_err(|_| {
                        Error::op("nms_by_score", format!("class {} too large for i32", c[i]))
                    })
                })
                .collect::<Result<Vec<i32>>>()?;
            batched_nms(dev, &boxes, &dev.upload(&cls)?, iou_thr)?
        }
    };
    Ok(kept.into_iter().map(|p| order[p]).collect())
}

#[cfg(test)]
mod tests {
    use super::greedy;

    #[test]
    fn greedy_pass_ignores_the_rows_of_suppressed_boxes() {
        // 0 suppresses 1, 1 would suppress 2: 1 is gone, so 2 stays (torchvision's rule).
        assert_eq!(greedy(&[0b010, 0b100, 0], 3, 1), vec![0, 2]);
        // Across words: 70 boxes (2 words per row), box 0 suppresses box 65, box 64 box 69.
        let mut mask = vec![0u64; 70 * 2];
        mask[1] = 1 << 1;
        mask[64 * 2 + 1] = 1 << 5;
        let keep = greedy(&mask, 70, 2);
        assert_eq!(keep.len(), 68);
        assert!(!keep.contains(&65) && !keep.contains(&69) && keep.contains(&64));
    }
}
