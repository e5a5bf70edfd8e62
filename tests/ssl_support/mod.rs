//! Generated videos for the self-supervised pretraining tests: water-like frames (ripples,
//! noise) with bright "bottles" drifting a pixel or two per frame, their boxes known; fg/bg crops
//! cut from such frames at the boxes (fg) or away from them (bg); and the comparison "a probe
//! beats the same backbone at random initialisation" every method's test makes.
#![allow(dead_code)]

use image::{Rgb, RgbImage};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::data::images_to_input;
use ssod::pretrain::{
    knn_probe, linear_probe, CropSet, InputNorm, KnnConfig, PretrainReport, ProbeConfig,
};
use ssod::train::evaluate::recalibrate_batch_norm;

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

/// `videos` videos of `per_video` consecutive frames, all filmed on one lake: every video has
/// the same water (colour, noise, ripples of one frequency; only the ripple phase differs) and
/// its own 2 to 4 bottles (size, colour, drift), plus two thin glints as bright as a bottle.
/// Per-video water tints would let a backbone tell videos apart by their water; here the
/// bottles tell them apart, but so do the glints' path and the ripple phase, which follow the
/// video (docs/ssl-methods.md, "How far the SimSiam result carries").
pub fn videos(videos: usize, per_video: usize, seed: u64) -> Vec<Frame> {
    let base = [40i64, 100, 90];
    let mut out = Vec::new();
    for v in 0..videos {
        let mut r = Mix(seed * 1000 + v as u64);
        let count = 2 + (r.next() % 3) as usize;
        let objects: Vec<[i64; 9]> = (0..count)
            .map(|_| {
                [
                    r.range(4, 70),    // x
                    r.range(4, 44),    // y
                    r.range(-2, 3),    // vx
                    r.range(-1, 2),    // vy
                    r.range(8, 16),    // w
                    r.range(5, 10),    // h
                    r.range(140, 255), // red
                    r.range(0, 120),   // green below red
                    r.range(0, 120),   // blue below red
                ]
            })
            .collect();
        let phase = r.range(0, 100) as f32 * 0.06;
        for t in 0..per_video {
            let mut img = RgbImage::new(W, H);
            for (x, y, p) in img.enumerate_pixels_mut() {
                let ripple = (((y as f32) * 0.5 + t as f32 * 0.3 + x as f32 * 0.05 + phase).sin()
                    * 12.0) as i64;
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
                let red = o[6] as u8;
                let colour = Rgb([
                    red,
                    red.saturating_sub(o[7] as u8),
                    red.saturating_sub(o[8] as u8),
                ]);
                for yy in y..y + h {
                    for xx in x..x + w {
                        img.put_pixel(xx, yy, colour);
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

/// Precise BN: `model`'s BN running statistics replaced by their average over `frames`
/// (batches of 16 whole frames).
pub fn calibrate_bn(model: &YoloX, frames: &[Frame]) {
    let batches: Vec<_> = frames
        .chunks(16)
        .map(|chunk| {
            let images: Vec<&RgbImage> = chunk.iter().map(|f| &f.image).collect();
            images_to_input(&images, &vec![false; images.len()], InputNorm::Bgr255).unwrap()
        })
        .collect();
    recalibrate_batch_norm(model, &batches).unwrap();
}

/// k-NN (k 5) and linear-probe accuracy on `crops` at 64 px, each averaged over five seeded
/// splits with half the crops held out, so that one split's luck does not decide.
pub fn probe_scores(model: &YoloX, crops: &CropSet) -> [f64; 2] {
    let splits = 0..5u64;
    let n = splits.clone().count() as f64;
    let mut knn = 0.0;
    let mut linear = 0.0;
    for seed in splits {
        let k = KnnConfig {
            val_fraction: 0.5,
            seed,
            ..knn_cfg()
        };
        knn += knn_probe(model, crops, &k).unwrap().accuracy / n;
        let p = ProbeConfig {
            input_size: 64,
            val_fraction: 0.5,
            seed,
            workers: 1,
            ..ProbeConfig::default()
        };
        linear += linear_probe(model, crops, &p).unwrap().val_accuracy / n;
    }
    [knn, linear]
}

/// The initialisation seeds of the probe comparison: four, because two were not enough to tell
/// a method that learns from one that was lucky (docs/ssl-methods.md, "Does each method learn?").
pub const PROBE_SEEDS: [u64; 4] = [1, 2, 3, 4];

/// "A probe beats the same backbone at random initialisation" (docs/ssl-methods.md, "Does each
/// method learn?"). For each of [`PROBE_SEEDS`]: `pretrain(model, seed)` trains a fresh tiny
/// backbone on `frames` and returns its report; the control is the same backbone
/// untrained. Both get their BN statistics from `frames` by precise BN, so they differ only in
/// the learned weights: an untrained backbone probed with BN's initial statistics (mean 0,
/// variance 1) is a different network, not the one the detector would start from. The
/// criterion is the k-NN probe (the linear probe is printed): trained above control on every
/// seed, and the loss falling.
pub fn assert_beats_random_init(
    method: &str,
    frames: &[Frame],
    crops: &CropSet,
    pretrain: impl Fn(&YoloX, u64) -> PretrainReport,
) {
    let mut failures = Vec::new();
    for seed in PROBE_SEEDS {
        let control = tiny_model(seed);
        calibrate_bn(&control, frames);
        let [knn_control, linear_control] = probe_scores(&control, crops);
        let trained = tiny_model(seed);
        let losses: Vec<f64> = pretrain(&trained, seed)
            .epochs
            .iter()
            .map(|e| e.loss)
            .collect();
        calibrate_bn(&trained, frames);
        let [knn_trained, linear_trained] = probe_scores(&trained, crops);
        println!(
            "{method} seed {seed}: k-NN {knn_control:.3} untrained -> {knn_trained:.3} trained, \
             linear {linear_control:.3} -> {linear_trained:.3}; losses {losses:.3?}"
        );
        let (first, last) = (losses[0], losses[losses.len() - 1]);
        if last.is_nan() || last >= first {
            failures.push(format!("seed {seed}: the loss did not fall: {losses:?}"));
        }
        if knn_trained <= knn_control {
            failures.push(format!(
                "seed {seed}: k-NN {knn_trained:.3} after pretraining, {knn_control:.3} untrained"
            ));
        }
    }
    assert!(failures.is_empty(), "{method}: {failures:#?}");
}

/// The frames a method's probe test pretrains on (`videos` videos of 8 frames) and the crops it
/// probes with (cut from 40 other videos: 400 crops, half fg).
pub fn probe_data(videos_to_train_on: usize) -> (Vec<Frame>, CropSet) {
    (
        videos(videos_to_train_on, 8, 1),
        crops(&videos(40, 10, 77), 5),
    )
}
