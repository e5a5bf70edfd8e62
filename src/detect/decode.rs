//! Decoding YOLOX's raw head outputs (docs/yolox.md §2).
//!
//! Per anchor `(gx, gy, s)` from [`crate::models::YoloX::anchor_grid`] and raw outputs
//! `(tx, ty, tw, th, o, c_1..c_C)`:
//! `cx = (tx + gx)·s, cy = (ty + gy)·s, w = exp(tw)·s, h = exp(th)·s` (no +0.5 offset, no clamp
//! of exp, yolox/models/yolo_head.py `decode_outputs` and `get_output_and_grid`),
//! `obj = σ(o)`, `cls_j = σ(c_j)` (inference only: training keeps the logits).
//!
//! Two forms: [`decode_boxes`] builds the boxes from engine ops so gradients flow through them
//! (the loss needs it); [`decode_image_f32`] / [`decode_batch_f32`] is the plain inference path.

use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Raw outputs `[B, A, 5 + C]` → boxes cxcywh in input pixels `[B, A, 4]`, differentiable with
/// respect to `raw` (the grid and strides are constants).
///
/// `grid` is one `(gx, gy, stride)` per anchor, as `YoloX::anchor_grid` returns it.
pub fn decode_boxes(raw: &Tensor, grid: &[(f32, f32, f32)]) -> Result<Tensor> {
    check_raw("decode_boxes", raw, grid)?;
    let a = grid.len();
    let offsets: Vec<f32> = grid.iter().flat_map(|&(gx, gy, _)| [gx, gy]).collect();
    let offsets = Tensor::from_vec(offsets, vec![1, a, 2])?; // [1, A, 2]
    let strides = Tensor::from_vec(grid.iter().map(|g| g.2).collect(), vec![1, a, 1])?; // [1, A, 1]
    let txy = ops::narrow(raw, 2, 0, 2)?; // [B, A, 2]
    let twh = ops::narrow(raw, 2, 2, 2)?; // [B, A, 2]
    let cxcy = ops::mul(&ops::add(&txy, &offsets)?, &strides)?; // (t + g)·s
    let wh = ops::mul(&ops::exp(&twh)?, &strides)?; // exp(t)·s
    ops::cat(&[cxcy, wh], 2) // [B, A, 4] cxcywh
}

fn check_raw(op: &str, raw: &Tensor, grid: &[(f32, f32, f32)]) -> Result<()> {
    let d = raw.dims();
    if raw.rank() != 3 || d[2] < 5 || d[1] != grid.len() {
        return Err(Error::shape(
            op,
            format!("raw [B, {}, 5 + C] (C >= 0)", grid.len()),
            raw.shape(),
        ));
    }
    Ok(())
}

/// One image's decoded outputs, in input (letterboxed) pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedImage {
    /// `[A]` boxes, cxcywh.
    pub boxes_cxcywh: Vec<[f32; 4]>,
    /// `[A]` objectness probabilities σ(o).
    pub obj: Vec<f32>,
    /// `[A · C]` class probabilities σ(c), row-major (anchor outer).
    pub cls: Vec<f32>,
    pub num_classes: usize,
}

impl DecodedImage {
    /// From decoded rows `(cx, cy, w, h, obj, cls_1..C)`, one per anchor (the layout of the CUDA
    /// decode kernel's output).
    fn from_rows(rows: &[f32], num_classes: usize) -> DecodedImage {
        let row = 5 + num_classes;
        let mut out = DecodedImage {
            boxes_cxcywh: Vec::with_capacity(rows.len() / row),
            obj: Vec::with_capacity(rows.len() / row),
            cls: Vec::with_capacity(rows.len() / row * num_classes),
            num_classes,
        };
        for r in rows.chunks_exact(row) {
            out.boxes_cxcywh.push([r[0], r[1], r[2], r[3]]);
            out.obj.push(r[4]);
            out.cls.extend_from_slice(&r[5..]);
        }
        out
    }
    pub fn num_anchors(&self) -> usize {
        self.boxes_cxcywh.len()
    }
    /// Class probabilities of anchor `a`.
    pub fn cls_of(&self, a: usize) -> &[f32] {
        &self.cls[a * self.num_classes..(a + 1) * self.num_classes]
    }
}

/// The engine's sigmoid (one definition for training and inference).
pub use crate::ops::sigmoid_scalar as sigmoid_f32;

/// One image's raw outputs (`A · (5 + C)` values, anchor outer) → boxes, obj and cls
/// probabilities (plain f32, no autograd).
pub fn decode_image_f32(
    raw: &[f32],
    grid: &[(f32, f32, f32)],
    num_classes: usize,
) -> Result<DecodedImage> {
    let row = 5 + num_classes;
    if raw.len() != grid.len() * row {
        return Err(Error::shape(
            "decode_image_f32",
            format!("{} anchors x {row} values", grid.len()),
            format!("{} values", raw.len()),
        ));
    }
    let a = grid.len();
    let mut out = DecodedImage {
        boxes_cxcywh: Vec::with_capacity(a),
        obj: Vec::with_capacity(a),
        cls: Vec::with_capacity(a * num_classes),
        num_classes,
    };
    for (r, &(gx, gy, s)) in raw.chunks_exact(row).zip(grid) {
        out.boxes_cxcywh.push([
            (r[0] + gx) * s,
            (r[1] + gy) * s,
            r[2].exp() * s,
            r[3].exp() * s,
        ]);
        out.obj.push(sigmoid_f32(r[4]));
        out.cls.extend(r[5..].iter().map(|&c| sigmoid_f32(c)));
    }
    Ok(out)
}

/// Raw outputs `[B, A, 5 + C]` → one [`DecodedImage`] per image. Outputs on the GPU are
/// decoded there (`decode_outputs_f32`, kernels/detect.cu) and downloaded once, decoded.
pub fn decode_batch_f32(raw: &Tensor, grid: &[(f32, f32, f32)]) -> Result<Vec<DecodedImage>> {
    check_raw("decode_batch_f32", raw, grid)?;
    let (b, row) = (raw.dims()[0], raw.dims()[2]);
    let per_image = grid.len() * row;
    if raw.is_cuda() {
        use crate::backend::cuda::detect as cuda_detect;
        let rows = raw.with_cuda(|dev, r| {
            let g = cuda_detect::upload_grid(dev, grid)?;
            dev.download(&cuda_detect::decode_outputs(
                dev,
                r,
                &g,
                b,
                grid.len(),
                row - 5,
            )?)
        })?;
        return Ok(rows
            .chunks_exact(per_image.max(1))
            .take(b)
            .map(|img| DecodedImage::from_rows(img, row - 5))
            .collect());
    }
    raw.with_values(|v| {
        (0..b)
            .map(|i| decode_image_f32(&v[i * per_image..(i + 1) * per_image], grid, row - 5))
            .collect()
    })?
}
