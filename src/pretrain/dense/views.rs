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
        let size = [img.width() as usize, img.height() as usize];
        let mut rng = rng_for(s.epoch_seed, &format!("dense/{}", first + k));
        let v1 = draw_view(&s.augment, size, &mut rng);
        let v2 = draw_view(&s.augment, size, &mut rng);
        views.extend(render_view(&img, &v1, s, &mut rng));
        second.extend(render_view(&img, &v2, s, &mut rng));
        boxes.push((v1, v2));
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
