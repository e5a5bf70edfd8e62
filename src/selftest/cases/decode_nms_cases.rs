//! Parity cases: YOLOX inference decode and NMS (class-agnostic and class-aware).

use super::*;
use crate::backend::cuda::detect;
use crate::detect::{batched_nms, decode_batch_f32, nms};

/// `(gx, gy, stride)` per anchor of a 160×96 input at strides 8, 16, 32 (315 anchors).
fn anchor_grid() -> Vec<(f32, f32, f32)> {
    let mut g = Vec::new();
    for s in [8usize, 16, 32] {
        for gy in 0..96 / s {
            for gx in 0..160 / s {
                g.push((gx as f32, gy as f32, s as f32));
            }
        }
    }
    g
}

pub(super) fn decode_case() -> Case {
    let grid = anchor_grid();
    let (b, a, c) = (2usize, grid.len(), 3usize);
    let row = 5 + c;
    Case {
        name: "decode_outputs (YOLOX)",
        kernels: &["decode_outputs_f32"],
        shape: format!("[{b}, {a}, {row}] (160x96, s8/16/32)"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| {
            let mut raw = uniform(rng, b * a * row, -3.0, 3.0);
            // Extreme logits: the sigmoid must saturate without NaN on either side.
            for (i, v) in raw.iter_mut().skip(4).step_by(row).take(6).enumerate() {
                *v = if i % 2 == 0 { 90.0 } else { -90.0 };
            }
            vec![raw]
        }),
        cpu: Box::new({
            let grid = grid.clone();
            move |inp| {
                let (d, ms) = timed_cpu(|| {
                    decode_batch_f32(&Tensor::from_vec(inp[0].clone(), [b, a, row])?, &grid)
                })?;
                let boxes = d.iter().flat_map(|i| i.boxes_cxcywh.concat()).collect();
                let obj = d.iter().flat_map(|i| i.obj.clone()).collect();
                let cls = d.iter().flat_map(|i| i.cls.clone()).collect();
                Ok(out(vec![("boxes", boxes), ("obj", obj), ("cls", cls)], ms))
            }
        }),
        gpu: Box::new(move |dev, inp| {
            let (raw, g) = (dev.upload(&inp[0])?, detect::upload_grid(dev, &grid)?);
            let (y, ms) = timed(dev, || detect::decode_outputs(dev, &raw, &g, b, a, c))?;
            let y = dev.download(&y)?;
            let rows = || y.chunks_exact(row);
            Ok(out(
                vec![
                    ("boxes", rows().flat_map(|r| r[..4].to_vec()).collect()),
                    ("obj", rows().map(|r| r[4]).collect()),
                    ("cls", rows().flat_map(|r| r[5..].to_vec()).collect()),
                ],
                ms,
            ))
        }),
    }
}

/// `n` xyxy boxes around 23 cluster centres (many overlaps on both sides of the threshold),
/// scores with ties and one NaN, classes 0..3, two degenerate boxes (zero width: their IoU with
/// an equal box is NaN, which suppresses nothing). Inputs: boxes, scores, classes.
fn nms_inputs(rng: &mut ChaCha8Rng, n: usize) -> Inputs {
    let centres: Vec<(f32, f32, f32, f32)> = (0..23)
        .map(|_| {
            (
                rng.random_range(20.0..300.0f32),
                rng.random_range(20.0..200.0f32),
                rng.random_range(8.0..60.0f32),
                rng.random_range(8.0..60.0f32),
            )
        })
        .collect();
    let (mut boxes, mut scores, mut classes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (cx, cy, w, h) = centres[rng.random_range(0..centres.len())];
        let j = |rng: &mut ChaCha8Rng, s: f32| rng.random_range(-0.25..0.25f32) * s;
        let (x, y) = (cx + j(rng, w), cy + j(rng, h));
        let (bw, bh) = (
            w * rng.random_range(0.7..1.3f32),
            h * rng.random_range(0.7..1.3f32),
        );
        boxes.extend_from_slice(&[x - bw / 2.0, y - bh / 2.0, x + bw / 2.0, y + bh / 2.0]);
        // Scores on a coarse grid: ties are common (kept in input order by both sides).
        scores.push((rng.random_range(0..40) as f32) / 40.0);
        classes.push((i % 3) as f32);
    }
    scores[n / 2] = f32::NAN;
    for k in [7usize, 8] {
        boxes[4 * k..4 * k + 4].copy_from_slice(&[50.0, 50.0, 50.0, 80.0]);
        scores[k] = 0.5;
    }
    vec![boxes, scores, classes]
}

pub(super) fn nms_case(name: &'static str, class_aware: bool, thr: f32) -> Case {
    let n = 301usize;
    Case {
        name,
        kernels: &["nms_mask_f32"],
        shape: format!("{n} boxes, 3 classes, iou > {thr}"),
        tol: 1e-4,
        measure: Measure::PerElement,
        make: Box::new(move |rng| nms_inputs(rng, n)),
        cpu: Box::new(move |inp| {
            let boxes: Vec<[f32; 4]> = inp[0]
                .chunks_exact(4)
                .map(|b| [b[0], b[1], b[2], b[3]])
                .collect();
            let classes: Vec<usize> = inp[2].iter().map(|&c| c as usize).collect();
            let (keep, ms) = timed_cpu(|| {
                if class_aware {
                    batched_nms(&boxes, &inp[1], &classes, thr)
                } else {
                    nms(&boxes, &inp[1], thr)
                }
            })?;
            let count = vec![keep.len() as f32];
            Ok(out(
                vec![
                    ("keep", keep.into_iter().map(|i| i as f32).collect()),
                    ("count", count),
                ],
                ms,
            ))
        }),
        gpu: Box::new(move |dev, inp| {
            let boxes: Vec<[f32; 4]> = inp[0]
                .chunks_exact(4)
                .map(|b| [b[0], b[1], b[2], b[3]])
                .collect();
            let classes: Vec<usize> = inp[2].iter().map(|&c| c as usize).collect();
            let cls = class_aware.then_some(classes.as_slice());
            let (keep, ms) = timed(dev, || detect::nms_by_score(dev, &boxes, &inp[1], cls, thr))?;
            let count = vec![keep.len() as f32];
            Ok(out(
                vec![
                    ("keep", keep.into_iter().map(|i| i as f32).collect()),
                    ("count", count),
                ],
                ms,
            ))
        }),
    }
}
