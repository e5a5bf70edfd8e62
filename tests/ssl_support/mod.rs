//! Generated videos for the self-supervised pretraining tests: water-like frames (a per-video
//! tint, ripples, noise) with two bright "bottles" drifting a pixel or two per frame, their
//! boxes known, and fg/bg crops cut from such frames at the boxes (fg) or away from them (bg).
#![allow(dead_code)]

use image::{Rgb, RgbImage};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::{linear_probe, CropSet, KnnConfig, ProbeConfig};

/// SplitMix64: the same values on every machine.
pub struct Mix(pub u64);

impl Mix {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo) as u64) as i64
    }
}

pub const W: u32 = 96;
pub const H: u32 = 64;

/// A frame with its object boxes `[x, y, w, h]`.
pub struct Frame {
    pub image: RgbImage,
    pub video: usize,
    pub time: i64,
    pub boxes_xywh: Vec<[u32; 4]>,
}

/// `videos` videos of `per_video` consecutive frames.
pub fn videos(videos: usize, per_video: usize, seed: u64) -> Vec<Frame> {
    let mut out = Vec::new();
    for v in 0..videos {
        let mut r = Mix(seed * 1000 + v as u64);
        let base = [r.range(10, 90), r.range(50, 140), r.range(30, 110)];
        let objects: Vec<[i64; 7]> = (0..2)
            .map(|_| {
                [
                    r.range(4, 70),    // x
                    r.range(4, 44),    // y
                    r.range(-2, 3),    // vx
                    r.range(-1, 2),    // vy
                    r.range(8, 16),    // w
                    r.range(5, 10),    // h
                    r.range(170, 255), // brightness
                ]
            })
            .collect();
        for t in 0..per_video {
            let mut img = RgbImage::new(W, H);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let ripple =
                    (((y as f32) * 0.5 + t as f32 * 0.3 + x as f32 * 0.05).sin() * 12.0) as i64;
                let px: Vec<u8> = (0..3)
                    .map(|c| (base[c] + ripple + r.range(-10, 10)).clamp(0, 255) as u8)
                    .collect();
                *p = Rgb([px[0], px[1], px[2]]);
            }
            let mut boxes = Vec::new();
            for o in &objects {
                let x = (o[0] + o[2] * t as i64).rem_euclid((W as i64) - o[4]) as u32;
                let y = (o[1] + o[3] * t as i64).rem_euclid((H as i64) - o[5]) as u32;
                let (w, h) = (o[4] as u32, o[5] as u32);
                let b = o[6] as u8;
                for yy in y..y + h {
                    for xx in x..x + w {
                        img.put_pixel(xx, yy, Rgb([b, b.saturating_sub(40), b.saturating_sub(70)]));
                    }
                }
                boxes.push([x, y, w, h]);
            }
            // Glints: thin bright streaks on the waves, as bright as the bottles.
            for g in 0..2u32 {
                let gx = (t as u32 * 3 + g * 41 + v as u32 * 17) % (W - 26);
                let gy = (g * 29 + v as u32 * 11 + t as u32) % (H - 3);
                for yy in gy..gy + 2 {
                    for xx in gx..gx + 24 {
                        if boxes
                            .iter()
                            .all(|b: &[u32; 4]| !overlaps([xx, yy, 1, 1], *b))
                        {
                            img.put_pixel(xx, yy, Rgb([235, 205, 175]));
                        }
                    }
                }
            }
            out.push(Frame {
                image: img,
                video: v,
                time: t as i64,
                boxes_xywh: boxes,
            });
        }
    }
    out
}

fn overlaps(a: [u32; 4], b: [u32; 4]) -> bool {
    a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3]
}

fn shift_brightness(img: &mut RgbImage, by: i64) {
    for p in img.pixels_mut() {
        for c in 0..3 {
            p[c] = (p[c] as i64 + by).clamp(0, 255) as u8;
        }
    }
}

/// 32×32 crops: per frame one centred on its first box (fg) and one that touches no box but
/// holds a glint as bright as a bottle (bg), each shifted in brightness by up to ±60, so
/// brightness alone does not tell them apart.
pub fn crops(frames: &[Frame], seed: u64) -> CropSet {
    let s = 32u32;
    let mut r = Mix(seed);
    let mut items = Vec::new();
    for f in frames {
        let b = f.boxes_xywh[0];
        let cx = (b[0] + b[2] / 2).saturating_sub(s / 2).min(W - s);
        let cy = (b[1] + b[3] / 2).saturating_sub(s / 2).min(H - s);
        let mut fg = image::imageops::crop_imm(&f.image, cx, cy, s, s).to_image();
        shift_brightness(&mut fg, r.range(-60, 60));
        items.push((fg, 1));
        for _ in 0..50 {
            let (x, y) = (
                r.range(0, (W - s) as i64) as u32,
                r.range(0, (H - s) as i64) as u32,
            );
            if f.boxes_xywh.iter().all(|&b| !overlaps([x, y, s, s], b)) {
                let mut bg = image::imageops::crop_imm(&f.image, x, y, s, s).to_image();
                let (gx, gy) = (r.range(0, 8) as u32, r.range(4, 28) as u32);
                for xx in gx..gx + 24 {
                    for yy in gy..gy + 2 {
                        bg.put_pixel(xx, yy, Rgb([235, 205, 175]));
                    }
                }
                shift_brightness(&mut bg, r.range(-60, 60));
                items.push((bg, 0));
                break;
            }
        }
    }
    CropSet::from_images(items)
}

/// A YOLOX of width 0.125 (C5 = 128 channels) initialised from `seed`.
pub fn tiny_model(seed: u64) -> YoloX {
    let mut cfg = YoloXConfig::custom(0.33, 0.125, false, 1);
    cfg.seed = seed;
    YoloX::new(cfg).unwrap()
}

pub fn knn_cfg() -> KnnConfig {
    KnnConfig {
        k: 5,
        input_size: 64,
        val_fraction: 0.3,
        workers: 1,
        ..KnnConfig::default()
    }
}

/// Held-out accuracy of the linear probe on the crops resized to 64 px (the training scale) (the same split as [`knn_cfg`]).
pub fn linear_probe_accuracy(model: &YoloX, crops: &CropSet) -> f64 {
    let cfg = ProbeConfig {
        input_size: 64,
        val_fraction: 0.3,
        workers: 1,
        ..ProbeConfig::default()
    };
    linear_probe(model, crops, &cfg).unwrap().val_accuracy
}
