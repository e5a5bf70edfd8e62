//! The batches of dense contrast: per image two views (random resized crop of the image as it
//! is, flip, colour augmentation, each view on its own: [`ViewAugment`]), built on the run
//! loop's loader threads, with the crop boxes the step matches cells by. Every random draw of
//! the image at position `p` of an epoch comes from `rng_for(epoch_seed, "dense/<p>")`, so the
//! batches are the same for any number of workers.

use super::geometry::{draw_view, ViewBox};
use crate::data::augment::resize_bilinear;
use crate::pretrain::color_jitter::ColorAugment;
use crate::pretrain::data::{push_rgb_planes, ImageSource, InputNorm};
use crate::pretrain::ssl::ViewAugment;
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
    /// `[w, h]` of each view (the run's `image_size`).
    pub view_size: [usize; 2],
    pub augment: ViewAugment,
    pub norm: InputNorm,
    pub epoch_seed: u64,
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
    let a = &s.augment;
    ColorAugment {
        jitter_prob: a.color_jitter_prob,
        jitter: a.color_jitter,
        grayscale_prob: a.grayscale_prob,
    }
    .apply(&mut planes, rng);
    planes
}

/// Two views, of `first` and of `second`, as RGB 0..255 planes `[3, vh, vw]` each, and their
/// boxes. The two are one image, or two frames of one fixed camera (temporal contrast), so both
/// boxes are drawn in the pixel frame of `first`; `second` must be as large.
pub fn view_pair(
    first: &image::RgbImage,
    second: &image::RgbImage,
    s: &ViewSampling,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> ((ViewBox, ViewBox), [Vec<f32>; 2]) {
    let size = [first.width() as usize, first.height() as usize];
    debug_assert_eq!(first.dimensions(), second.dimensions());
    let v1 = draw_view(&s.augment, size, rng);
    let v2 = draw_view(&s.augment, size, rng);
    let p1 = render_view(first, &v1, s, rng);
    let p2 = render_view(second, &v2, s, rng);
    ((v1, v2), [p1, p2])
}

/// The view pairs of `items` (image indices), the images at epoch positions `first..`.
pub fn build_view_pairs(
    images: &[ImageSource],
    first: usize,
    items: &[usize],
    s: &ViewSampling,
) -> Result<ViewPairs> {
    let [vw, vh] = s.view_size;
    let plane = vw * vh;
    let mut views = Vec::with_capacity(items.len() * 3 * plane);
    let mut second = Vec::with_capacity(items.len() * 3 * plane);
    let mut boxes = Vec::with_capacity(items.len());
    for (k, &item) in items.iter().enumerate() {
        let img = images[item].load()?;
        let mut rng = rng_for(s.epoch_seed, &format!("dense/{}", first + k));
        let (pair, [p1, p2]) = view_pair(&img, &img, s, &mut rng);
        views.extend(p1);
        second.extend(p2);
        boxes.push(pair);
    }
    views.extend(second);
    s.norm.apply_to_rgb_planes(&mut views, plane);
    let seed = rand::Rng::random(&mut rng_for(s.epoch_seed, &format!("dense/step/{first}")));
    Ok(ViewPairs {
        values: views,
        boxes,
        seed,
    })
}
