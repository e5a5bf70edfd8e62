//! The loader of dense contrast: per image two views (random resized crop, flip, colour
//! augmentation, each view on its own), decoded, cut and augmented by worker threads
//! ([`crate::data::prefetch`]) a window ahead of the step, with the crop boxes the step matches
//! cells by. Every random draw of the image at position `p` of an epoch comes from
//! `rng_for(epoch_seed, "dense/<p>")`, so the batches are the same for any number of workers.

use std::ops::Range;
use std::sync::Arc;

use super::geometry::{ViewBox, ViewDraw};
use crate::data::augment::resize_bilinear;
use crate::data::prefetch::Prefetch;
use crate::pretrain::color_jitter::ColorAugment;
use crate::pretrain::data::{push_rgb_planes, ImageSource, InputNorm};
use crate::rng::rng_for;
use crate::Result;

/// One step's input: `values [2B, 3, vh, vw]` (every image's first view, then every second
/// view), in the input convention, and each image's `(view 1, view 2)` boxes.
pub struct ViewPairs {
    pub values: Vec<f32>,
    pub boxes: Vec<(ViewBox, ViewBox)>,
    /// Seed of the step's own draws (which matched cells it keeps).
    pub seed: u64,
}

impl ViewPairs {
    /// Images in the batch.
    pub fn images(&self) -> usize {
        self.boxes.len()
    }
}

/// How images become view pairs.
#[derive(Clone, Copy, Debug)]
pub struct ViewSampling {
    /// `[w, h]` images are resized to before views are cut.
    pub image_size: [usize; 2],
    /// `[w, h]` of each view.
    pub view_size: [usize; 2],
    pub draw: ViewDraw,
    pub augment: ColorAugment,
    pub norm: InputNorm,
    pub epoch_seed: u64,
}

/// The images `order[..]` in batches of `batch_size` (the last may be short), at most
/// `max_batches`.
pub fn view_pair_batches(
    images: &Arc<Vec<ImageSource>>,
    order: Vec<usize>,
    batch_size: usize,
    max_batches: Option<usize>,
    sampling: ViewSampling,
    workers: usize,
) -> Prefetch<Result<ViewPairs>> {
    let bs = batch_size.max(1);
    let all = order.len().div_ceil(bs);
    let ranges: Vec<Range<usize>> = (0..max_batches.map_or(all, |m| m.min(all)))
        .map(|b| b * bs..((b + 1) * bs).min(order.len()))
        .filter(|r| !r.is_empty())
        .collect();
    let images = images.clone();
    Prefetch::start(ranges.len(), workers, workers + 1, move |b| {
        build_view_pairs(&images, &order, ranges[b].clone(), &sampling)
    })
}

/// One view of `img` as RGB 0..255 planes `[3, vh, vw]`, augmented.
fn render_view(
    img: &image::RgbImage,
    view: &ViewBox,
    s: &ViewSampling,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Vec<f32> {
    let [vw, vh] = s.view_size;
    let cut = image::imageops::crop_imm(
        img,
        view.x as u32,
        view.y as u32,
        view.w as u32,
        view.h as u32,
    )
    .to_image();
    let resized = resize_bilinear(&cut, vw as u32, vh as u32);
    let mut planes = Vec::with_capacity(3 * vw * vh);
    push_rgb_planes(&resized, view.flipped, &mut planes);
    s.augment.apply(&mut planes, rng);
    planes
}

/// The view pairs of the images at `positions` of `order`.
pub fn build_view_pairs(
    images: &[ImageSource],
    order: &[usize],
    positions: Range<usize>,
    s: &ViewSampling,
) -> Result<ViewPairs> {
    let [w, h] = s.image_size;
    let [vw, vh] = s.view_size;
    let plane = vw * vh;
    let mut first = Vec::with_capacity(positions.len() * 3 * plane);
    let mut second = Vec::with_capacity(positions.len() * 3 * plane);
    let mut boxes = Vec::with_capacity(positions.len());
    for pos in positions.clone() {
        let img = images[order[pos]].load_resized(w as u32, h as u32)?;
        let mut rng = rng_for(s.epoch_seed, &format!("dense/{pos}"));
        let v1 = s.draw.sample([w, h], &mut rng);
        let v2 = s.draw.sample([w, h], &mut rng);
        first.extend(render_view(&img, &v1, s, &mut rng));
        second.extend(render_view(&img, &v2, s, &mut rng));
        boxes.push((v1, v2));
    }
    first.extend(second);
    s.norm.apply_to_rgb_planes(&mut first, plane);
    let seed = rand::Rng::random(&mut rng_for(
        s.epoch_seed,
        &format!("dense/step/{}", positions.start),
    ));
    Ok(ViewPairs {
        values: first,
        boxes,
        seed,
    })
}
