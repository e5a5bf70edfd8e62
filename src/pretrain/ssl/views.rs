//! Augmented views of an image for the image-level self-supervised methods and the health
//! check's alignment: RandomResizedCrop → horizontal flip → RandomApply(ColorJitter) →
//! RandomGrayscale, as the SimSiam / MoCo v2 recipe (Chen & He 2021, Appendix A; docs/pretraining.md).
//! The recipe's Gaussian blur is left out (at the 64-224 px inputs used here it mostly erases
//! the small objects the detector is for). `pair_region_scale` optionally cuts both views of a
//! pair from one shared region ([`ViewAugment::push_view_pair`]).

use image::RgbImage;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::augment::resize_bilinear;
use crate::pretrain::color_jitter::ColorAugment;
use crate::pretrain::data::push_rgb_planes;
use crate::{Error, Result};

/// One view's random transform (the defaults are SimSiam's).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ViewAugment {
    /// RandomResizedCrop's area fraction range (SimSiam: 0.2..1).
    pub crop_scale: [f64; 2],
    /// RandomResizedCrop's aspect-ratio range (torchvision: 3/4..4/3).
    pub crop_ratio: [f64; 2],
    pub flip_prob: f64,
    pub color_jitter_prob: f64,
    /// ColorJitter(brightness, contrast, saturation, hue) (SimSiam: 0.4, 0.4, 0.4, 0.1).
    pub color_jitter: [f64; 4],
    pub grayscale_prob: f64,
    /// When set, the two views of a pair are cut from one region of this area fraction range
    /// (same place in both images of a pair), so that they overlap. On scene frames with small
    /// objects two independent crops share the water far more often than one object; two
    /// crops of one object-sized region share what is in it (the scene-image argument of ORL,
    /// Xie et al. 2021; docs/pretraining.md, "Scene frames"). None: independent crops, as
    /// SimSiam's recipe on object-centric ImageNet.
    pub pair_region_scale: Option<[f64; 2]>,
}

impl Default for ViewAugment {
    fn default() -> Self {
        ViewAugment {
            crop_scale: [0.2, 1.0],
            crop_ratio: [3.0 / 4.0, 4.0 / 3.0],
            flip_prob: 0.5,
            color_jitter_prob: 0.8,
            color_jitter: [0.4, 0.4, 0.4, 0.1],
            grayscale_prob: 0.2,
            pair_region_scale: None,
        }
    }
}

/// A crop rectangle `(x, y, w, h)` in pixels.
pub type CropRect = (u32, u32, u32, u32);

impl ViewAugment {
    pub fn validate(&self, key: &str) -> Result<()> {
        let [s0, s1] = self.crop_scale;
        let [r0, r1] = self.crop_ratio;
        let bad = |what: String| Err(Error::InvalidArgument(format!("`{key}`: {what}")));
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return bad(format!(
                "`crop_scale` must be 0 < lo <= hi <= 1, got [{s0}, {s1}]"
            ));
        }
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return bad(format!(
                "`crop_ratio` must be 0 < lo <= hi, got [{r0}, {r1}]"
            ));
        }
        for (name, p) in [
            ("flip_prob", self.flip_prob),
            ("color_jitter_prob", self.color_jitter_prob),
            ("grayscale_prob", self.grayscale_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return bad(format!("`{name}` must be in [0, 1], got {p}"));
            }
        }
        if let Some([g0, g1]) = self.pair_region_scale {
            if !(g0 > 0.0 && g0 <= g1 && g1 <= 1.0) {
                return bad(format!(
                    "`pair_region_scale` must be 0 < lo <= hi <= 1 (or null), got [{g0}, {g1}]"
                ));
            }
        }
        if self.color_jitter.iter().any(|v| v.is_nan() || *v < 0.0) || self.color_jitter[3] > 0.5 {
            return bad(
                "`color_jitter` is [brightness, contrast, saturation, hue], each >= 0, \
                        hue <= 0.5"
                    .into(),
            );
        }
        Ok(())
    }

    fn color(&self) -> ColorAugment {
        ColorAugment {
            jitter_prob: self.color_jitter_prob,
            jitter: self.color_jitter,
            grayscale_prob: self.grayscale_prob,
        }
    }

    /// torchvision's RandomResizedCrop rectangle at `crop_scale`: ten tries at a random area and
    /// log-uniform aspect ratio, then the centre crop at the clamped ratio.
    pub fn crop_rect(&self, w: u32, h: u32, rng: &mut impl Rng) -> CropRect {
        self.crop_rect_at(self.crop_scale, w, h, rng)
    }

    /// [`Self::crop_rect`] at an area fraction range `scale`.
    fn crop_rect_at(&self, scale: [f64; 2], w: u32, h: u32, rng: &mut impl Rng) -> CropRect {
        let area = (w as f64) * (h as f64);
        let (lr0, lr1) = (self.crop_ratio[0].ln(), self.crop_ratio[1].ln());
        for _ in 0..10 {
            let target = area * rng.random_range(scale[0]..=scale[1]);
            let ratio = rng.random_range(lr0..=lr1).exp();
            let cw = (target * ratio).sqrt().round() as u32;
            let ch = (target / ratio).sqrt().round() as u32;
            if cw > 0 && ch > 0 && cw <= w && ch <= h {
                let x = rng.random_range(0..=w - cw);
                let y = rng.random_range(0..=h - ch);
                return (x, y, cw, ch);
            }
        }
        let in_ratio = w as f64 / h as f64;
        let (cw, ch) = if in_ratio < self.crop_ratio[0] {
            (
                w,
                ((w as f64 / self.crop_ratio[0]).round() as u32).clamp(1, h),
            )
        } else if in_ratio > self.crop_ratio[1] {
            (
                ((h as f64 * self.crop_ratio[1]).round() as u32).clamp(1, w),
                h,
            )
        } else {
            (w, h)
        };
        ((w - cw) / 2, (h - ch) / 2, cw, ch)
    }

    /// One view of `img` as RGB 0..255 planes `[3, out_h, out_w]`, appended to `out`.
    pub fn push_view(
        &self,
        img: &RgbImage,
        [out_w, out_h]: [usize; 2],
        rng: &mut impl Rng,
        out: &mut Vec<f32>,
    ) {
        let (x, y, cw, ch) = self.crop_rect(img.width(), img.height(), rng);
        let crop = image::imageops::crop_imm(img, x, y, cw, ch).to_image();
        let resized = resize_bilinear(&crop, out_w as u32, out_h as u32);
        let flip = rng.random::<f64>() < self.flip_prob;
        let start = out.len();
        push_rgb_planes(&resized, flip, out);
        self.color().apply(&mut out[start..], rng);
    }

    /// The two views of a pair, of `first` and `second` (the same image, or two frames of one
    /// video), appended to `out_first` and `out_second`. With `pair_region_scale` both are cut
    /// from one region at the same place in both images (clipped to the smaller image).
    pub fn push_view_pair(
        &self,
        (first, second): (&RgbImage, &RgbImage),
        size: [usize; 2],
        rng: &mut impl Rng,
        (out_first, out_second): (&mut Vec<f32>, &mut Vec<f32>),
    ) {
        let Some(scale) = self.pair_region_scale else {
            self.push_view(first, size, rng, out_first);
            self.push_view(second, size, rng, out_second);
            return;
        };
        let w = first.width().min(second.width());
        let h = first.height().min(second.height());
        let (x, y, rw, rh) = self.crop_rect_at(scale, w, h, rng);
        let region = |img: &RgbImage| image::imageops::crop_imm(img, x, y, rw, rh).to_image();
        self.push_view(&region(first), size, rng, out_first);
        self.push_view(&region(second), size, rng, out_second);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::rng_for;

    #[test]
    fn crop_rects_stay_inside_and_cover_the_scale_range() {
        let aug = ViewAugment::default();
        let mut rng = rng_for(1, "t");
        let (w, h) = (120u32, 80u32);
        let mut fractions = Vec::new();
        for _ in 0..200 {
            let (x, y, cw, ch) = aug.crop_rect(w, h, &mut rng);
            assert!(cw >= 1 && ch >= 1 && x + cw <= w && y + ch <= h);
            fractions.push((cw * ch) as f64 / (w * h) as f64);
        }
        let lo = fractions.iter().cloned().fold(1.0, f64::min);
        let hi = fractions.iter().cloned().fold(0.0, f64::max);
        // Rounding moves an area by a few pixels' worth around the 0.2..1 range.
        assert!((0.18..0.3).contains(&lo), "smallest area fraction {lo}");
        assert!(hi > 0.8 && hi <= 1.0, "largest area fraction {hi}");
    }

    /// The pixel coordinates a view was cut from, `[x_min, x_max, y_min, y_max]`, read from
    /// an image whose red channel is x and green channel is y (no jitter, no flip).
    fn source_span(view: &[f32], pixels: usize) -> [f32; 4] {
        let (r, g) = (&view[..pixels], &view[pixels..2 * pixels]);
        let span = |c: &[f32]| {
            let lo = c.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = c.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            [lo, hi]
        };
        let ([x0, x1], [y0, y1]) = (span(r), span(g));
        [x0, x1, y0, y1]
    }

    #[test]
    fn paired_views_come_from_one_region() {
        let (w, h) = (120u32, 80u32);
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let plain = ViewAugment {
            flip_prob: 0.0,
            color_jitter_prob: 0.0,
            grayscale_prob: 0.0,
            ..ViewAugment::default()
        };
        let paired = ViewAugment {
            pair_region_scale: Some([0.1, 0.2]),
            ..plain
        };
        // The largest box that holds both views, as a fraction of the image.
        let joint_area = |aug: &ViewAugment, draw: u64| {
            let mut rng = rng_for(draw, "pair");
            let (mut a, mut b) = (Vec::new(), Vec::new());
            aug.push_view_pair((&img, &img), [16, 16], &mut rng, (&mut a, &mut b));
            let ([ax0, ax1, ay0, ay1], [bx0, bx1, by0, by1]) =
                (source_span(&a, 256), source_span(&b, 256));
            let bw = ax1.max(bx1) - ax0.min(bx0) + 1.0;
            let bh = ay1.max(by1) - ay0.min(by0) + 1.0;
            (bw * bh) as f64 / (w * h) as f64
        };
        // A region of at most 0.2 of the area at ratio <= 4/3 fits in a box of 0.2 (plus a
        // pixel of rounding each side); independent crops of 0.2..1 each do not.
        let slack = (2.0 * (w + h) as f64 + 4.0) / (w * h) as f64;
        let paired_max = (0..50).map(|d| joint_area(&paired, d)).fold(0.0, f64::max);
        assert!(paired_max <= 0.2 + slack, "paired views span {paired_max}");
        let plain_max = (0..50).map(|d| joint_area(&plain, d)).fold(0.0, f64::max);
        assert!(
            plain_max > 0.5,
            "independent views span at most {plain_max}"
        );
        let bad = ViewAugment {
            pair_region_scale: Some([0.5, 0.2]),
            ..plain
        };
        let err = bad.validate("views").unwrap_err().to_string();
        assert!(err.contains("pair_region_scale"), "{err}");
    }

    #[test]
    fn full_scale_crop_without_jitter_is_the_resized_image() {
        let aug = ViewAugment {
            crop_scale: [1.0, 1.0],
            crop_ratio: [1.5, 1.5],
            flip_prob: 0.0,
            color_jitter_prob: 0.0,
            grayscale_prob: 0.0,
            ..ViewAugment::default()
        };
        let img = RgbImage::from_fn(6, 4, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let mut out = Vec::new();
        aug.push_view(&img, [6, 4], &mut rng_for(0, "t"), &mut out);
        let mut expected = Vec::new();
        push_rgb_planes(&img, false, &mut expected);
        assert_eq!(out, expected);
    }
}
