//! The study's patch augmentation on RGB 0..255 planes `[3, n]`: RandomApply(ColorJitter, p)
//! then RandomGrayscale(p), as torchvision computes them.

use rand::seq::SliceRandom;
use rand::Rng;

/// ColorJitter(brightness, contrast, saturation, hue) in a random order (torchvision), then
/// nothing else; `planes` holds RGB 0..255 `[3, n]`.
pub fn color_jitter(planes: &mut [f32], strength: [f64; 4], rng: &mut impl Rng) {
    let n = planes.len() / 3;
    let factor = |rng: &mut dyn rand::RngCore, s: f64| -> f32 {
        if s > 0.0 {
            rng.random_range((1.0 - s).max(0.0)..=1.0 + s) as f32
        } else {
            1.0
        }
    };
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    for op in order {
        match op {
            0 => {
                let f = factor(rng, strength[0]);
                planes
                    .iter_mut()
                    .for_each(|v| *v = (*v * f).clamp(0.0, 255.0));
            }
            1 => {
                let f = factor(rng, strength[1]);
                let mean = (0..n).map(|i| gray(planes, n, i)).sum::<f32>() / n.max(1) as f32;
                planes
                    .iter_mut()
                    .for_each(|v| *v = ((*v - mean) * f + mean).clamp(0.0, 255.0));
            }
            2 => {
                let f = factor(rng, strength[2]);
                for i in 0..n {
                    let g = gray(planes, n, i);
                    for c in 0..3 {
                        let v = &mut planes[c * n + i];
                        *v = ((*v - g) * f + g).clamp(0.0, 255.0);
                    }
                }
            }
            _ => {
                if strength[3] > 0.0 {
                    let shift = rng.random_range(-strength[3]..=strength[3]) as f32;
                    hue_shift(planes, n, shift);
                }
            }
        }
    }
}

fn gray(planes: &[f32], n: usize, i: usize) -> f32 {
    0.299 * planes[i] + 0.587 * planes[n + i] + 0.114 * planes[2 * n + i]
}

/// Rotate hue by `shift` turns (HSV, as torchvision's adjust_hue).
fn hue_shift(planes: &mut [f32], n: usize, shift: f32) {
    for i in 0..n {
        let (r, g, b) = (planes[i], planes[n + i], planes[2 * n + i]);
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let delta = max - min;
        if delta <= 0.0 {
            continue;
        }
        let mut h = if max == r {
            ((g - b) / delta).rem_euclid(6.0)
        } else if max == g {
            (b - r) / delta + 2.0
        } else {
            (r - g) / delta + 4.0
        } / 6.0;
        h = (h + shift).rem_euclid(1.0);
        let (s, v) = (delta / max, max);
        let h6 = h * 6.0;
        let k = h6.floor();
        let f = h6 - k;
        let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        let (nr, ng, nb) = match k as i32 % 6 {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        };
        planes[i] = nr;
        planes[n + i] = ng;
        planes[2 * n + i] = nb;
    }
}

/// RandomApply(ColorJitter(jitter), jitter_prob) then RandomGrayscale(grayscale_prob).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorAugment {
    pub jitter_prob: f64,
    /// ColorJitter(brightness, contrast, saturation, hue).
    pub jitter: [f64; 4],
    pub grayscale_prob: f64,
}

impl ColorAugment {
    /// Augment RGB 0..255 planes `[3, n]` in place.
    pub fn apply(&self, planes: &mut [f32], rng: &mut impl Rng) {
        if rng.random::<f64>() < self.jitter_prob {
            color_jitter(planes, self.jitter, rng);
        }
        if rng.random::<f64>() < self.grayscale_prob {
            let n = planes.len() / 3;
            for i in 0..n {
                let g = gray(planes, n, i);
                for c in 0..3 {
                    planes[c * n + i] = g;
                }
            }
        }
    }
}
