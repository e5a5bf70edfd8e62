//! Augmented views of an image for the image-level self-supervised methods and the health
//! check's alignment: RandomResizedCrop → horizontal flip → RandomApply(ColorJitter) →
//! RandomGrayscale, as the SimSiam / MoCo v2 recipe (Chen & He 2021, Appendix A; docs/pretraining.md).
//! The recipe's Gaussian blur is left out (at the 64-224 px inputs used here it mostly erases
//! the small objects the detector is for).

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

    /// torchvision's RandomResizedCrop rectangle: ten tries at a random area and log-uniform
    /// aspect ratio, then the centre crop at the clamped ratio.
    pub fn crop_rect(&self, w: u32, h: u32, rng: &mut impl Rng) -> CropRect {
        let area = (w as f64) * (h as f64);
        let (lr0, lr1) = (self.crop_ratio[0].ln(), self.crop_ratio[1].ln());
        for _ in 0..10 {
            let target = area * rng.random_range(self.crop_scale[0]..=self.crop_scale[1]);
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
