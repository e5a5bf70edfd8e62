//! The pretraining loaders: batches of crops (center loss, the probe) and of frames with their
//! patch plans (patch SSL), decoded, resized and augmented by worker threads
//! ([`crate::data::prefetch`]) a window ahead of the step. A set on disk is never decoded into RAM
//! as a whole: memory holds the batches in the window, whatever the number of frames.
//!
//! Determinism: every random draw for the sample at position `p` of an epoch's order comes from
//! `rng_for(epoch_seed, "<what>/<p>")`, with `epoch_seed` drawn from the run's own stream when
//! the epoch starts (so a resumed run draws what the uninterrupted one would). The batches are
//! the same for any number of workers.

use std::ops::Range;
use std::sync::Arc;

use rand::Rng;

use super::color_jitter::ColorAugment;
use super::data::{push_rgb_planes, Crop, ImageSource, InputNorm};
use super::patch_geometry::{PatchGeometry, PatchPlan};
use crate::data::prefetch::Prefetch;
use crate::ops::{self, PatchBox};
use crate::rng::rng_for;
use crate::tensor::Tensor;
use crate::Result;

/// Crops as network input: `input [B, 3, size, size]` in the run's input convention.
pub struct CropBatch {
    pub input: Vec<f32>,
    pub labels: Vec<usize>,
    pub size: usize,
}

impl CropBatch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn shape(&self) -> [usize; 4] {
        [self.len(), 3, self.size, self.size]
    }
}

/// How crops become input.
#[derive(Clone, Copy, Debug)]
pub struct CropSampling {
    pub size: usize,
    pub norm: InputNorm,
    /// Random horizontal flips: `(epoch_seed, probability)`; None: no flips (evaluation).
    pub flip: Option<(u64, f64)>,
}

/// Position ranges of `batches` batches of `batch_size` over `n` samples (the last may be short).
fn batch_positions(n: usize, batch_size: usize, batches: usize) -> Vec<Range<usize>> {
    (0..batches)
        .map(|b| b * batch_size..((b + 1) * batch_size).min(n))
        .filter(|r| !r.is_empty())
        .collect()
}

/// The crops `order[..]` in batches of `batch_size`, at most `max_batches`.
pub fn crop_batches(
    crops: &Arc<Vec<Crop>>,
    order: Vec<usize>,
    batch_size: usize,
    max_batches: Option<usize>,
    sampling: CropSampling,
    workers: usize,
) -> Prefetch<Result<CropBatch>> {
    let batches = order.len().div_ceil(batch_size.max(1));
    let ranges = batch_positions(
        order.len(),
        batch_size.max(1),
        max_batches.map_or(batches, |m| m.min(batches)),
    );
    let crops = crops.clone();
    Prefetch::start(ranges.len(), workers, workers + 1, move |b| {
        build_crop_batch(&crops, &order, ranges[b].clone(), sampling)
    })
}

fn build_crop_batch(
    crops: &[Crop],
    order: &[usize],
    positions: Range<usize>,
    s: CropSampling,
) -> Result<CropBatch> {
    let side = s.size as u32;
    let mut input = Vec::with_capacity(positions.len() * 3 * s.size * s.size);
    let mut labels = Vec::with_capacity(positions.len());
    for pos in positions {
        let crop = &crops[order[pos]];
        let img = crop.image.load_resized(side, side)?;
        let flip = s
            .flip
            .is_some_and(|(seed, p)| rng_for(seed, &format!("flip/{pos}")).random::<f64>() < p);
        push_rgb_planes(&img, flip, &mut input);
        labels.push(crop.label as usize);
    }
    s.norm.apply_to_rgb_planes(&mut input, s.size * s.size);
    Ok(CropBatch {
        input,
        labels,
        size: s.size,
    })
}

/// One patch-SSL step's input.
pub enum PatchInput {
    /// Frames `[frames, 3, H, W]` in the input convention and the boxes to cut on the step's
    /// device (anchors, then positives k-major, then negatives k-major).
    Frames {
        values: Vec<f32>,
        frames: usize,
        boxes: Vec<PatchBox>,
    },
    /// Patches `[count, 3, s, s]` already cut, augmented each on its own and in the input
    /// convention (`augment_per: "patch"`), same order.
    Patches { values: Vec<f32>, count: usize },
}

/// How frames become patches.
#[derive(Clone, Debug)]
pub struct PatchSampling {
    pub geometry: PatchGeometry,
    pub augment: ColorAugment,
    /// Augment every patch on its own (else every frame).
    pub per_patch: bool,
    pub norm: InputNorm,
    pub epoch_seed: u64,
}

/// The frames `order[..]` in batches of `batch_size`, at most `max_batches`.
pub fn patch_batches(
    frames: &Arc<Vec<ImageSource>>,
    order: Vec<usize>,
    batch_size: usize,
    max_batches: Option<usize>,
    sampling: PatchSampling,
    workers: usize,
) -> Prefetch<Result<(PatchInput, usize)>> {
    let batches = order.len().div_ceil(batch_size.max(1));
    let ranges = batch_positions(
        order.len(),
        batch_size.max(1),
        max_batches.map_or(batches, |m| m.min(batches)),
    );
    let frames = frames.clone();
    Prefetch::start(ranges.len(), workers, workers + 1, move |b| {
        let n = ranges[b].len();
        build_patch_batch(&frames, &order, ranges[b].clone(), &sampling).map(|p| (p, n))
    })
}

/// The boxes of `plans` in step order: every anchor, then positive k of every frame for each
/// k, then the negatives likewise (the rows `cosine_patch_loss` expects).
pub fn plan_boxes(plans: &[PatchPlan]) -> Vec<PatchBox> {
    let corner = |image: usize, (x, y): (usize, usize)| PatchBox { image, x, y };
    let mut boxes: Vec<PatchBox> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| corner(i, p.anchor))
        .collect();
    let kp = plans.first().map_or(0, |p| p.positives.len());
    let kn = plans.first().map_or(0, |p| p.negatives.len());
    for k in 0..kp {
        boxes.extend(
            plans
                .iter()
                .enumerate()
                .map(|(i, p)| corner(i, p.positives[k])),
        );
    }
    for k in 0..kn {
        boxes.extend(
            plans
                .iter()
                .enumerate()
                .map(|(i, p)| corner(i, p.negatives[k])),
        );
    }
    boxes
}

fn build_patch_batch(
    frames: &[ImageSource],
    order: &[usize],
    positions: Range<usize>,
    s: &PatchSampling,
) -> Result<PatchInput> {
    let [w, h] = s.geometry.frame_size;
    let count = positions.len();
    let mut values = Vec::with_capacity(count * 3 * w * h);
    let mut plans = Vec::with_capacity(count);
    for pos in positions.clone() {
        let img = frames[order[pos]].load_resized(w as u32, h as u32)?;
        let start = values.len();
        push_rgb_planes(&img, false, &mut values);
        let mut rng = rng_for(s.epoch_seed, &format!("frame/{pos}"));
        if !s.per_patch {
            s.augment.apply(&mut values[start..], &mut rng);
        }
        plans.push(s.geometry.plan(&mut rng)?);
    }
    let boxes = plan_boxes(&plans);
    if !s.per_patch {
        // Per-channel and per-pixel, so normalising the frames equals normalising their patches.
        s.norm.apply_to_rgb_planes(&mut values, w * h);
        return Ok(PatchInput::Frames {
            values,
            frames: count,
            boxes,
        });
    }
    let side = s.geometry.patch_size;
    let images = Tensor::from_vec(values, [count, 3, h, w])?;
    let mut patches =
        crate::autograd::no_grad(|| ops::crop_patches(&images, &boxes, side))?.to_vec();
    let plane = side * side;
    for (j, patch) in patches.chunks_mut(3 * plane).enumerate() {
        // Box j is patch j / count of frame j % count (k-major rows).
        let pos = positions.start + j % count;
        let mut rng = rng_for(s.epoch_seed, &format!("patch/{pos}/{}", j / count));
        s.augment.apply(patch, &mut rng);
    }
    s.norm.apply_to_rgb_planes(&mut patches, plane);
    Ok(PatchInput::Patches {
        values: patches,
        count: boxes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_positions_cover_the_order_once() {
        assert_eq!(batch_positions(10, 4, 3), vec![0..4, 4..8, 8..10]);
        assert_eq!(batch_positions(10, 4, 2), vec![0..4, 4..8]);
        assert_eq!(batch_positions(8, 4, 5), vec![0..4, 4..8]);
    }
}
