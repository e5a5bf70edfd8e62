//! YOLOX's training augmentation, deterministic under a seeded generator.
//!
//! Per sample (YOLOX `MosaicDetection.__getitem__` + `TrainTransform`):
//! 1. with `mosaic_prob`: a mosaic of the image and 3 random others on a 2H×2W canvas (114),
//!    then `random_affine` to H×W; with `mixup_prob` (and labels present) a MixUp with another
//!    labelled image; otherwise the plain image;
//! 2. HSV with `hsv_prob`, horizontal flip with `flip_prob`, letterbox (top-left, 114);
//! 3. boxes with `min(w, h) <= 1` px dropped; if none survive (and there were some), the
//!    un-augmented original letterboxed is used instead, with every one of its boxes, zero-size
//!    ones included (see [`train_transform`]).
//!
//! Boxes are `xyxy` in pixels throughout and become `cxcywh` in input pixels at the end.
//! Multiscale (a new input size every 10 iterations, the batch resized) is the loader's job.

mod color;
mod geometry;

use image::RgbImage;
use rand::Rng;

pub use color::{augment_hsv, hsv8_to_rgb, hsv_shift, rgb_to_hsv8};
pub use geometry::{
    affine_boxes_xyxy, clip_box_xyxy, filter_min_side, hflip, letterbox, random_affine_matrix,
    resize_bilinear, scale_boxes_xyxy, warp_affine, xyxy_to_cxcywh, Affine, AffineParams,
    PAD_VALUE,
};

use crate::Result;

/// An image with its boxes (`xyxy`, image pixels) and 0-based class indices.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub image: RgbImage,
    pub boxes_xyxy: Vec<[f32; 4]>,
    pub classes: Vec<u32>,
}

/// What the pipeline hands to the batcher: an `input_w × input_h` RGB image and its boxes as
/// `cxcywh` in input pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Augmented {
    pub image: RgbImage,
    pub boxes_cxcywh: Vec<[f32; 4]>,
    pub classes: Vec<u32>,
    /// Every augmented box vanished and the un-augmented original was used (YOLOX fallback).
    pub fell_back: bool,
}

/// Where the pipeline draws images from (the loader implements it over a dataset and a cache).
pub trait SampleSource {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Number of boxes of image `index`, known without decoding (MixUp picks labelled partners).
    fn num_boxes(&self, index: usize) -> usize;
    fn load(&self, index: usize) -> Result<Sample>;
}

/// The augmentation recipe. [`AugmentConfig::yolox_s`] is YOLOX-S's; `no_aug` is the last-epochs
/// setting (mosaic and mixup off, HSV and flip on).
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentConfig {
    pub input_w: u32,
    pub input_h: u32,
    pub mosaic_prob: f32,
    pub mixup_prob: f32,
    pub hsv_prob: f32,
    pub flip_prob: f32,
    pub affine: AffineParams,
    pub mixup_scale: (f32, f32),
    /// HSV gains (H, S, V) in OpenCV 8-bit units.
    pub hsv_gains: [f32; 3],
    /// Boxes whose smaller side is not above this are dropped (px).
    pub min_box_side: f32,
}

impl AugmentConfig {
    /// YOLOX-S: mosaic 1.0, mixup 1.0, HSV 1.0, flip 0.5, degrees 10, translate 0.1,
    /// mosaic_scale (0.1, 2), shear 2, mixup_scale (0.5, 1.5), gains (5, 30, 30).
    pub fn yolox_s(input_w: u32, input_h: u32) -> Self {
        AugmentConfig {
            input_w,
            input_h,
            mosaic_prob: 1.0,
            mixup_prob: 1.0,
            hsv_prob: 1.0,
            flip_prob: 0.5,
            affine: AffineParams {
                degrees: 10.0,
                translate: 0.1,
                scale: (0.1, 2.0),
                shear: 2.0,
            },
            mixup_scale: (0.5, 1.5),
            hsv_gains: [5.0, 30.0, 30.0],
            min_box_side: 1.0,
        }
    }

    /// YOLOX-tiny/nano: mosaic_scale (0.5, 1.5), no mixup.
    pub fn yolox_tiny(input_w: u32, input_h: u32) -> Self {
        let mut c = Self::yolox_s(input_w, input_h);
        c.mixup_prob = 0.0;
        c.affine.scale = (0.5, 1.5);
        c
    }

    /// The no-aug phase: mosaic (and with it mixup) closed; HSV and flip stay on.
    pub fn no_mosaic(&self) -> Self {
        AugmentConfig {
            mosaic_prob: 0.0,
            mixup_prob: 0.0,
            ..self.clone()
        }
    }

    /// Letterbox only (evaluation, previews of the raw data).
    pub fn none(input_w: u32, input_h: u32) -> Self {
        AugmentConfig {
            mosaic_prob: 0.0,
            mixup_prob: 0.0,
            hsv_prob: 0.0,
            flip_prob: 0.0,
            ..Self::yolox_s(input_w, input_h)
        }
    }
}

/// YOLOX `get_mosaic_coordinate`: where piece `k` (0 TL, 1 TR, 2 BL, 3 BR) of size `w × h` goes on
/// the 2W×2H canvas around centre (xc, yc), and which part of the piece is visible.
/// Returns (canvas xyxy, piece xyxy).
fn mosaic_coordinates(
    k: usize,
    xc: i64,
    yc: i64,
    w: i64,
    h: i64,
    input_w: i64,
    input_h: i64,
) -> ([i64; 4], [i64; 4]) {
    match k {
        0 => {
            let l = [(xc - w).max(0), (yc - h).max(0), xc, yc];
            (l, [w - (l[2] - l[0]), h - (l[3] - l[1]), w, h])
        }
        1 => {
            let l = [xc, (yc - h).max(0), (xc + w).min(input_w * 2), yc];
            (l, [0, h - (l[3] - l[1]), w.min(l[2] - l[0]), h])
        }
        2 => {
            let l = [(xc - w).max(0), yc, xc, (input_h * 2).min(yc + h)];
            (l, [w - (l[2] - l[0]), 0, w, (l[3] - l[1]).min(h)])
        }
        _ => {
            let l = [xc, yc, (xc + w).min(input_w * 2), (input_h * 2).min(yc + h)];
            (l, [0, 0, w.min(l[2] - l[0]), (l[3] - l[1]).min(h)])
        }
    }
}

/// YOLOX mosaic: the four pieces letterbox-scaled to the input size and placed around a random
/// centre `xc ~ U(0.5W, 1.5W)`, `yc ~ U(0.5H, 1.5H)` on a 2H×2W canvas of 114, boxes clipped to
/// the canvas; then `random_affine` down to W×H.
pub fn mosaic(pieces: &[Sample; 4], cfg: &AugmentConfig, rng: &mut impl Rng) -> Sample {
    let (iw, ih) = (cfg.input_w as i64, cfg.input_h as i64);
    let xc = rng.random_range(0.5 * iw as f32..1.5 * iw as f32) as i64;
    let yc = rng.random_range(0.5 * ih as f32..1.5 * ih as f32) as i64;
    let mut canvas =
        RgbImage::from_pixel((2 * iw) as u32, (2 * ih) as u32, image::Rgb([PAD_VALUE; 3]));
    let mut boxes = Vec::new();
    let mut classes = Vec::new();
    for (k, piece) in pieces.iter().enumerate() {
        let (h0, w0) = (piece.image.height() as f32, piece.image.width() as f32);
        let scale = (ih as f32 / h0).min(iw as f32 / w0);
        let (w, h) = (((w0 * scale) as i64).max(1), ((h0 * scale) as i64).max(1));
        let resized = resize_bilinear(&piece.image, w as u32, h as u32);
        let (l, s) = mosaic_coordinates(k, xc, yc, w, h, iw, ih);
        let (cw, ch) = (l[2] - l[0], l[3] - l[1]);
        if cw > 0 && ch > 0 {
            let view =
                image::imageops::crop_imm(&resized, s[0] as u32, s[1] as u32, cw as u32, ch as u32)
                    .to_image();
            image::imageops::replace(&mut canvas, &view, l[0], l[1]);
        }
        let (padw, padh) = ((l[0] - s[0]) as f32, (l[1] - s[1]) as f32);
        for (b, &c) in piece.boxes_xyxy.iter().zip(&piece.classes) {
            let moved = [
                b[0] * scale + padw,
                b[1] * scale + padh,
                b[2] * scale + padw,
                b[3] * scale + padh,
            ];
            boxes.push(clip_box_xyxy(moved, (2 * iw) as f32, (2 * ih) as f32));
            classes.push(c);
        }
    }
    let m = random_affine_matrix(rng, &cfg.affine, cfg.input_w, cfg.input_h);
    Sample {
        image: warp_affine(&canvas, &m, cfg.input_w, cfg.input_h),
        boxes_xyxy: affine_boxes_xyxy(&boxes, &m, cfg.input_w, cfg.input_h),
        classes,
    }
}

/// YOLOX MixUp: `other` letterboxed, scaled by a jitter `U(mixup_scale)`, flipped with p 0.5,
/// randomly cropped to the origin's size (zero padding where it is smaller), averaged 50/50 with
/// the origin; its boxes (scaled, flipped, shifted, clipped) are appended.
pub fn mixup(origin: Sample, other: &Sample, cfg: &AugmentConfig, rng: &mut impl Rng) -> Sample {
    let jit = rng.random_range(cfg.mixup_scale.0..=cfg.mixup_scale.1.max(cfg.mixup_scale.0));
    let flip = rng.random::<f32>() > 0.5;
    let (lb, r) = letterbox(&other.image, cfg.input_w, cfg.input_h);
    let (jw, jh) = (
        ((lb.width() as f32 * jit) as u32).max(1),
        ((lb.height() as f32 * jit) as u32).max(1),
    );
    let mut cp = resize_bilinear(&lb, jw, jh);
    let cp_scale = r * jit;
    if flip {
        image::imageops::flip_horizontal_in_place(&mut cp);
    }
    let (tw, th) = (origin.image.width(), origin.image.height());
    let (pw, ph) = (jw.max(tw), jh.max(th));
    // numpy randint(0, n - 1) draws from 0..n-1 (exclusive); keep at 0 when there is no room.
    let y_off = if ph > th + 1 {
        rng.random_range(0..ph - th - 1)
    } else {
        0
    };
    let x_off = if pw > tw + 1 {
        rng.random_range(0..pw - tw - 1)
    } else {
        0
    };
    let mut image = origin.image;
    for y in 0..th {
        for x in 0..tw {
            let (sx, sy) = (x + x_off, y + y_off);
            let src = if sx < jw && sy < jh {
                cp.get_pixel(sx, sy).0
            } else {
                [0, 0, 0]
            };
            let px = image.get_pixel_mut(x, y);
            // YOLOX: 0.5·img + 0.5·other in float, stored back as uint8 (truncation).
            for (o, s) in px.0.iter_mut().zip(src) {
                *o = (0.5 * *o as f32 + 0.5 * s as f32) as u8;
            }
        }
    }
    let mut boxes_xyxy = origin.boxes_xyxy;
    let mut classes = origin.classes;
    for (b, &c) in other.boxes_xyxy.iter().zip(&other.classes) {
        // adjust_box_anns: scale, clip to the jittered image.
        let mut s = [
            b[0] * cp_scale,
            b[1] * cp_scale,
            b[2] * cp_scale,
            b[3] * cp_scale,
        ];
        s = clip_box_xyxy(s, jw as f32, jh as f32);
        if flip {
            s = [jw as f32 - s[2], s[1], jw as f32 - s[0], s[3]];
        }
        let moved = [
            s[0] - x_off as f32,
            s[1] - y_off as f32,
            s[2] - x_off as f32,
            s[3] - y_off as f32,
        ];
        boxes_xyxy.push(clip_box_xyxy(moved, tw as f32, th as f32));
        classes.push(c);
    }
    Sample {
        image,
        boxes_xyxy,
        classes,
    }
}

/// How many of a fallback's boxes YOLOX trains on. `TrainTransform` keeps every box of the
/// original when none survives the min-side filter, so after a mosaic these are mostly
/// zero-size: a box outside the mosaic's view is clipped to a line on its border (on the
/// FloW-like set about 8 such boxes in each of the ~19 % of mosaics that fall back).
/// `yolo_head.get_losses` then counts the label rows whose sum (class + cx + cy + w + h) is
/// positive and takes that many rows from the top: a zero-size box of class 0 at the origin
/// is not counted (and drops the last row instead). The boxes it counts are ground truth to
/// SimOTA: one anchor each, objectness target 1, class target 0 (its IoU), box loss 1.
pub fn yolox_label_rows(boxes_xyxy: &[[f32; 4]], classes: &[u32]) -> usize {
    boxes_xyxy
        .iter()
        .zip(classes)
        .filter(|(b, &c)| {
            let [cx, cy, w, h] = xyxy_to_cxcywh(**b);
            c as f32 + cx + cy + w + h > 0.0
        })
        .count()
}

/// YOLOX `TrainTransform`: HSV, flip, letterbox, min-side filter, `cxcywh`; when every box
/// vanishes the un-augmented original (letterboxed) is used with all of its boxes
/// ([`yolox_label_rows`] of them), zero-size ones included.
pub fn train_transform(sample: Sample, cfg: &AugmentConfig, rng: &mut impl Rng) -> Augmented {
    let hsv = rng.random::<f32>() < cfg.hsv_prob;
    let flip = rng.random::<f32>() < cfg.flip_prob;
    if sample.boxes_xyxy.is_empty() {
        let (image, _) = letterbox(&sample.image, cfg.input_w, cfg.input_h);
        return Augmented {
            image,
            boxes_cxcywh: Vec::new(),
            classes: Vec::new(),
            fell_back: false,
        };
    }
    let original = sample.clone();
    let Sample {
        mut image,
        mut boxes_xyxy,
        mut classes,
    } = sample;
    if hsv {
        augment_hsv(&mut image, rng, cfg.hsv_gains);
    }
    if flip {
        hflip(&mut image, &mut boxes_xyxy);
    }
    let (image, r) = letterbox(&image, cfg.input_w, cfg.input_h);
    scale_boxes_xyxy(&mut boxes_xyxy, r);
    filter_min_side(&mut boxes_xyxy, &mut classes, cfg.min_box_side);
    if boxes_xyxy.is_empty() {
        let (image, r) = letterbox(&original.image, cfg.input_w, cfg.input_h);
        let mut boxes = original.boxes_xyxy;
        let mut classes = original.classes;
        scale_boxes_xyxy(&mut boxes, r);
        let rows = yolox_label_rows(&boxes, &classes);
        boxes.truncate(rows);
        classes.truncate(rows);
        return Augmented {
            image,
            boxes_cxcywh: boxes.into_iter().map(xyxy_to_cxcywh).collect(),
            classes,
            fell_back: true,
        };
    }
    Augmented {
        image,
        boxes_cxcywh: boxes_xyxy.into_iter().map(xyxy_to_cxcywh).collect(),
        classes,
        fell_back: false,
    }
}

/// The whole pipeline for image `index` of `source`: mosaic (+ mixup) or the plain image, then
/// [`train_transform`]. All draws come from `rng`, so a sample depends only on its generator.
pub fn augment(
    source: &dyn SampleSource,
    index: usize,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> Result<Augmented> {
    let n = source.len();
    let sample = if rng.random::<f32>() < cfg.mosaic_prob && n > 0 {
        let others: [usize; 3] = [
            rng.random_range(0..n),
            rng.random_range(0..n),
            rng.random_range(0..n),
        ];
        let pieces = [
            source.load(index)?,
            source.load(others[0])?,
            source.load(others[1])?,
            source.load(others[2])?,
        ];
        let mut m = mosaic(&pieces, cfg, rng);
        if !m.boxes_xyxy.is_empty() && rng.random::<f32>() < cfg.mixup_prob {
            // YOLOX draws partners until one has labels; bounded here so an unlabelled set ends.
            let partner = (0..100)
                .map(|_| rng.random_range(0..n))
                .find(|&i| source.num_boxes(i) > 0);
            if let Some(p) = partner {
                m = mixup(m, &source.load(p)?, cfg, rng);
            }
        }
        m
    } else {
        source.load(index)?
    };
    Ok(train_transform(sample, cfg, rng))
}
