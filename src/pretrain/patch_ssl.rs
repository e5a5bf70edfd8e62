//! Patch-contrastive self-supervision on unlabeled frames (study strategy 3, seed-notes 7).
//!
//! Geometry (defaults = the study, `sample/ssl.jpg`): frames resized to 1280×720; a 3×3 grid of
//! s = 224 px cells at origin `px ~ randint(0, 200)`, `py ~ randint(0, h − 3s − 1)`; the centre
//! cell is the anchor; its four edge neighbours (left, up, down, right) are the positives; four
//! negatives at `x ~ randint(w − 2s, w − s − 1)`, `y ~ randint(0, h − s − 1)` (the far right
//! strip, `"far_strip"`), or anywhere at least `negative_min_distance` px from the anchor
//! (`"distance"`, seed-notes 11: the strip is a fixed spatial prior).
//!
//! Loss `"cosine"` (the study): `mean cos(a, n) − mean cos(a, p)`; `"info_nce"`: per positive,
//! cross-entropy of `[cos(a,p), cos(a,n_1..K)] / τ` with the positive as the target.
//! Augmentation: ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8 and RandomGrayscale(0.2), once per
//! frame (study) or per patch. BN: anchor / positive / negative groups as separate forward passes
//! (study, a known shortcut) or one joint batch. All patches of a step come out of one
//! [`crate::ops::crop_patches`] call.

use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::data::{push_rgb_planes, FrameSet, InputNorm};
use super::heads::{HeadKind, PretrainHead};
use super::state::{config_json, state_to_resume, RunState, STATE_FILE};
use super::transfer::save_backbone_checkpoint;
use super::{adam_pair, check_positive, step_pair, EpochStats, PretrainReport, PretrainSchedule};
use crate::data::augment::resize_bilinear;
use crate::models::YoloX;
use crate::ops::{self, PatchBox};
use crate::rng::rng_for;
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativeSampler {
    #[default]
    FarStrip,
    Distance,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchLossKind {
    #[default]
    Cosine,
    InfoNce,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AugmentScope {
    #[default]
    Frame,
    Patch,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BnMode {
    #[default]
    Separate,
    Joint,
}

/// Where patches are cut (all in frame pixels, after the resize).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchGeometry {
    /// `[width, height]` frames are resized to.
    pub frame_size: [usize; 2],
    pub patch_size: usize,
    pub num_positives: usize,
    pub num_negatives: usize,
    /// Grid origin x is drawn in `0..=min(origin_x_max, w − 3s)` (the study: 200).
    pub origin_x_max: usize,
    pub negative_sampler: NegativeSampler,
    /// `"distance"`: the gap between anchor and negative, `max(|dx|, |dy|) − s`, is at least this.
    pub negative_min_distance: usize,
}

impl Default for PatchGeometry {
    fn default() -> Self {
        PatchGeometry {
            frame_size: [1280, 720],
            patch_size: 224,
            num_positives: 4,
            num_negatives: 4,
            origin_x_max: 200,
            negative_sampler: NegativeSampler::FarStrip,
            negative_min_distance: 224,
        }
    }
}

/// The top-left corners of one frame's patches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatchPlan {
    pub anchor: (usize, usize),
    pub positives: Vec<(usize, usize)>,
    pub negatives: Vec<(usize, usize)>,
}

/// Gap between two s×s squares at corners `a` and `b`: `max(|dx|, |dy|) − s` (negative when they
/// overlap, 0 when they touch).
pub fn patch_gap(a: (usize, usize), b: (usize, usize), s: usize) -> i64 {
    let dx = (a.0 as i64 - b.0 as i64).abs();
    let dy = (a.1 as i64 - b.1 as i64).abs();
    dx.max(dy) - s as i64
}

impl PatchGeometry {
    pub fn validate(&self) -> Result<()> {
        let [w, h] = self.frame_size;
        let s = self.patch_size;
        check_positive("patch_size", s)?;
        if !(1..=4).contains(&self.num_positives) {
            return Err(Error::InvalidArgument(format!(
                "`num_positives` must be 1..=4 (the anchor's edge neighbours), got {}",
                self.num_positives
            )));
        }
        check_positive("num_negatives", self.num_negatives)?;
        if w < 3 * s || h < 3 * s {
            return Err(Error::InvalidArgument(format!(
                "`frame_size` {w}x{h} cannot hold a 3x3 grid of `patch_size` {s} cells"
            )));
        }
        if self.negative_sampler == NegativeSampler::FarStrip && (w < 2 * s + 1 || h < s + 1) {
            return Err(Error::InvalidArgument(format!(
                "`negative_sampler` \"far_strip\" needs frame width > 2·patch_size and height > patch_size, got {w}x{h}"
            )));
        }
        Ok(())
    }

    /// Draw one frame's patches (seed-notes 7; randint bounds inclusive as Python's).
    pub fn plan(&self, rng: &mut impl Rng) -> Result<PatchPlan> {
        let [w, h] = self.frame_size;
        let s = self.patch_size;
        let px = rng.random_range(0..=self.origin_x_max.min(w - 3 * s));
        let py = rng.random_range(0..=(h - 3 * s).saturating_sub(1));
        let anchor = (px + s, py + s);
        // Grid (gx, gy) ∈ {(0,1), (1,0), (1,2), (2,1)}: left, up, down, right.
        let mut positives = vec![
            (px, py + s),
            (px + s, py),
            (px + s, py + 2 * s),
            (px + 2 * s, py + s),
        ];
        positives.shuffle(rng);
        positives.truncate(self.num_positives);
        let mut negatives = Vec::with_capacity(self.num_negatives);
        for _ in 0..self.num_negatives {
            let n = match self.negative_sampler {
                NegativeSampler::FarStrip => (
                    rng.random_range(w - 2 * s..=w - s - 1),
                    rng.random_range(0..=h - s - 1),
                ),
                NegativeSampler::Distance => {
                    let mut found = None;
                    for _ in 0..10_000 {
                        let c = (rng.random_range(0..=w - s), rng.random_range(0..=h - s));
                        if patch_gap(anchor, c, s) >= self.negative_min_distance as i64 {
                            found = Some(c);
                            break;
                        }
                    }
                    found.ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "`negative_min_distance` {} leaves no room for a negative in a {w}x{h} frame",
                            self.negative_min_distance
                        ))
                    })?
                }
            };
            negatives.push(n);
        }
        Ok(PatchPlan {
            anchor,
            positives,
            negatives,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchSslConfig {
    pub seed: u64,
    pub epochs: usize,
    /// Anchors (frames) per step.
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: PretrainSchedule,
    /// `[width, height]` frames are resized to (the study: 1280×720).
    pub frame_size: [usize; 2],
    pub patch_size: usize,
    pub num_positives: usize,
    pub num_negatives: usize,
    pub origin_x_max: usize,
    pub negative_sampler: NegativeSampler,
    pub negative_min_distance: usize,
    pub loss: PatchLossKind,
    pub temperature: f64,
    /// `"study"` (ReLU'd conv head, flatten), `"gap"`, or `"mlp"` (projection MLP).
    pub head: HeadKind,
    pub mlp_hidden: usize,
    pub mlp_dim: usize,
    pub input_norm: InputNorm,
    pub color_jitter_prob: f64,
    /// ColorJitter(brightness, contrast, saturation, hue).
    pub color_jitter: [f64; 4],
    pub grayscale_prob: f64,
    pub augment_per: AugmentScope,
    pub bn_mode: BnMode,
    pub bn_momentum: Option<f32>,
    pub max_steps_per_epoch: Option<usize>,
    /// Folder for `patch_ssl_last.safetensors` and the per-epoch state
    /// (`pretrain_state.safetensors`, `state.rs`); None writes nothing.
    pub out: Option<PathBuf>,
    /// Continue the run whose state is in `out` (`epochs` may be raised).
    pub resume: bool,
}

impl Default for PatchSslConfig {
    fn default() -> Self {
        let geometry = PatchGeometry::default();
        PatchSslConfig {
            seed: 0,
            epochs: 10,
            batch_size: 16,
            lr: 1e-3,
            weight_decay: 5e-4,
            schedule: PretrainSchedule::Constant,
            frame_size: geometry.frame_size,
            patch_size: geometry.patch_size,
            num_positives: geometry.num_positives,
            num_negatives: geometry.num_negatives,
            origin_x_max: geometry.origin_x_max,
            negative_sampler: geometry.negative_sampler,
            negative_min_distance: geometry.negative_min_distance,
            loss: PatchLossKind::Cosine,
            temperature: 0.1,
            head: HeadKind::Study,
            mlp_hidden: 256,
            mlp_dim: 128,
            input_norm: InputNorm::Bgr255,
            color_jitter_prob: 0.8,
            color_jitter: [0.8, 0.8, 0.8, 0.2],
            grayscale_prob: 0.2,
            augment_per: AugmentScope::Frame,
            bn_mode: BnMode::Separate,
            bn_momentum: None,
            max_steps_per_epoch: None,
            out: None,
            resume: false,
        }
    }
}

impl PatchSslConfig {
    /// The patch geometry part of the config.
    pub fn geometry(&self) -> PatchGeometry {
        PatchGeometry {
            frame_size: self.frame_size,
            patch_size: self.patch_size,
            num_positives: self.num_positives,
            num_negatives: self.num_negatives,
            origin_x_max: self.origin_x_max,
            negative_sampler: self.negative_sampler,
            negative_min_distance: self.negative_min_distance,
        }
    }

    pub fn validate(&self) -> Result<()> {
        check_positive("epochs", self.epochs)?;
        check_positive("batch_size", self.batch_size)?;
        self.geometry().validate()?;
        if !self.patch_size.is_multiple_of(32) {
            return Err(Error::InvalidArgument(format!(
                "`patch_size` must be a multiple of 32 (the backbone's stride), got {}",
                self.patch_size
            )));
        }
        if self.loss == PatchLossKind::InfoNce
            && (self.temperature.is_nan() || self.temperature <= 0.0)
        {
            return Err(Error::InvalidArgument("`temperature` must be > 0".into()));
        }
        if self.head == HeadKind::Mlp {
            check_positive("mlp_hidden", self.mlp_hidden)?;
            check_positive("mlp_dim", self.mlp_dim)?;
        }
        for (key, v) in [
            ("color_jitter_prob", self.color_jitter_prob),
            ("grayscale_prob", self.grayscale_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "`{key}` must be in [0, 1], got {v}"
                )));
            }
        }
        if self.color_jitter.iter().any(|v| v.is_nan() || *v < 0.0) || self.color_jitter[3] > 0.5 {
            return Err(Error::InvalidArgument(
                "`color_jitter` is [brightness, contrast, saturation, hue], each >= 0, hue <= 0.5"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A patch loss and its cosine statistics.
pub struct PatchLoss {
    pub loss: Tensor,
    pub mean_pos_cos: f64,
    pub mean_neg_cos: f64,
}

/// `anchors [B, D]` repeated `k` times along rows (`y.repeat(k, 1)`: row `j·B + i` is anchor i).
pub fn repeat_anchors(anchors: &Tensor, k: usize) -> Result<Tensor> {
    let copies: Vec<Tensor> = (0..k).map(|_| anchors.clone()).collect();
    ops::cat(&copies, 0)
}

fn check_groups(a: &Tensor, p: &Tensor, n: &Tensor) -> Result<(usize, usize, usize)> {
    let b = a.dims().first().copied().unwrap_or(0);
    let ok = a.rank() == 2
        && p.rank() == 2
        && n.rank() == 2
        && b > 0
        && p.dims()[0].is_multiple_of(b)
        && n.dims()[0].is_multiple_of(b)
        && p.dims()[1] == a.dims()[1]
        && n.dims()[1] == a.dims()[1];
    if !ok {
        return Err(Error::shape(
            "patch loss",
            "anchors [B, D], positives [Kp·B, D], negatives [Kn·B, D]",
            (a.shape(), p.shape(), n.shape()),
        ));
    }
    Ok((b, p.dims()[0] / b, n.dims()[0] / b))
}

fn mean_of(t: &Tensor) -> f64 {
    let v = t.to_vec();
    v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64
}

/// The study's loss: `mean_{i,k} cos(a_i, n_ik) − mean_{i,k} cos(a_i, p_ik)` (rows k-major).
pub fn cosine_patch_loss(a: &Tensor, p: &Tensor, n: &Tensor) -> Result<PatchLoss> {
    let (_, kp, kn) = check_groups(a, p, n)?;
    let pos = ops::cosine_similarity(&repeat_anchors(a, kp)?, p, 1)?; // [Kp·B]
    let neg = ops::cosine_similarity(&repeat_anchors(a, kn)?, n, 1)?; // [Kn·B]
    let loss = ops::sub(&ops::mean_all(&neg)?, &ops::mean_all(&pos)?)?;
    Ok(PatchLoss {
        loss,
        mean_pos_cos: mean_of(&pos),
        mean_neg_cos: mean_of(&neg),
    })
}

/// InfoNCE: for anchor i and each of its positives k, logits
/// `[cos(a_i, p_ik), cos(a_i, n_i1), .., cos(a_i, n_iKn)] / τ`, cross-entropy with target 0,
/// mean over (i, k).
pub fn info_nce_patch_loss(
    a: &Tensor,
    p: &Tensor,
    n: &Tensor,
    temperature: f64,
) -> Result<PatchLoss> {
    let (b, kp, kn) = check_groups(a, p, n)?;
    let pos = ops::cosine_similarity(&repeat_anchors(a, kp)?, p, 1)?; // [Kp·B]
    let neg = ops::cosine_similarity(&repeat_anchors(a, kn)?, n, 1)?; // [Kn·B]
    let pos3 = ops::reshape(&pos, [kp, b, 1])?;
    let neg_bk = ops::contiguous(&ops::permute(&ops::reshape(&neg, [kn, b])?, &[1, 0])?)?; // [B, Kn]
    let neg3 = ops::broadcast_to(
        &ops::reshape(&neg_bk, [1, b, kn])?,
        &crate::Shape::from(vec![kp, b, kn]),
    )?;
    let logits = ops::reshape(&ops::cat(&[pos3, neg3], 2)?, [kp * b, 1 + kn])?;
    let logits = ops::div_scalar(&logits, temperature as f32)?;
    let targets = Tensor::zeros([kp * b]);
    let loss = ops::mean_all(&ops::cross_entropy(&logits, &targets)?)?;
    Ok(PatchLoss {
        loss,
        mean_pos_cos: mean_of(&pos),
        mean_neg_cos: mean_of(&neg),
    })
}

/// ColorJitter(brightness, contrast, saturation, hue) in a random order (torchvision), then
/// nothing else; `planes` holds RGB 0..255 `[3, n]`.
fn color_jitter(planes: &mut [f32], strength: [f64; 4], rng: &mut impl Rng) {
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

/// RandomApply(ColorJitter, p) then RandomGrayscale(p), on RGB 0..255 planes `[3, n]`.
fn augment_planes(planes: &mut [f32], cfg: &PatchSslConfig, rng: &mut impl Rng) {
    if rng.random::<f64>() < cfg.color_jitter_prob {
        color_jitter(planes, cfg.color_jitter, rng);
    }
    if rng.random::<f64>() < cfg.grayscale_prob {
        let n = planes.len() / 3;
        for i in 0..n {
            let g = gray(planes, n, i);
            for c in 0..3 {
                planes[c * n + i] = g;
            }
        }
    }
}

/// Anchor, positive and negative embeddings of a batch of frames (one crop op for all patches).
/// Returns (anchors [B, D], positives [Kp·B, D], negatives [Kn·B, D]), rows k-major.
fn embed_step(
    model: &YoloX,
    head: &PretrainHead,
    frames: &[&RgbImage],
    cfg: &PatchSslConfig,
    rng: &mut impl Rng,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = &cfg.geometry();
    let [w, h] = g.frame_size;
    let s = g.patch_size;
    let b = frames.len();
    let mut values = Vec::with_capacity(b * 3 * w * h);
    for f in frames {
        let start = values.len();
        push_rgb_planes(f, false, &mut values);
        if cfg.augment_per == AugmentScope::Frame {
            augment_planes(&mut values[start..], cfg, rng);
        }
    }
    let images = Tensor::from_vec(values, [b, 3, h, w])?; // [B, 3, H, W] RGB 0..255
    let plans = (0..b).map(|_| g.plan(rng)).collect::<Result<Vec<_>>>()?;
    let mut boxes = Vec::with_capacity(b * (1 + g.num_positives + g.num_negatives));
    let corner = |image: usize, (x, y): (usize, usize)| PatchBox { image, x, y };
    boxes.extend(plans.iter().enumerate().map(|(i, p)| corner(i, p.anchor)));
    for k in 0..g.num_positives {
        boxes.extend(
            plans
                .iter()
                .enumerate()
                .map(|(i, p)| corner(i, p.positives[k])),
        );
    }
    for k in 0..g.num_negatives {
        boxes.extend(
            plans
                .iter()
                .enumerate()
                .map(|(i, p)| corner(i, p.negatives[k])),
        );
    }
    let patches = ops::crop_patches(&images, &boxes, s)?; // [P, 3, s, s]
    let plane = s * s;
    patches.update_values(|v| {
        if cfg.augment_per == AugmentScope::Patch {
            for p in v.chunks_mut(3 * plane) {
                augment_planes(p, cfg, rng);
            }
        }
        cfg.input_norm.apply_to_rgb_planes(v, plane);
    })?;
    let (kp, kn) = (g.num_positives * b, g.num_negatives * b);
    let embed = |x: &Tensor| -> Result<Tensor> {
        let (_, _, c5) = model.backbone.backbone.forward(x)?;
        head.embed(&c5)
    };
    match cfg.bn_mode {
        BnMode::Separate => Ok((
            embed(&ops::narrow(&patches, 0, 0, b)?)?,
            embed(&ops::narrow(&patches, 0, b, kp)?)?,
            embed(&ops::narrow(&patches, 0, b + kp, kn)?)?,
        )),
        BnMode::Joint => {
            let z = embed(&patches)?;
            Ok((
                ops::narrow(&z, 0, 0, b)?,
                ops::narrow(&z, 0, b, kp)?,
                ops::narrow(&z, 0, b + kp, kn)?,
            ))
        }
    }
}

/// Pretrain `model`'s backbone on unlabeled frames (see the module docs). The final weights are
/// kept (the study kept the lowest *training* loss, seed-notes 10.8, which says little).
pub fn pretrain_patch_ssl(
    model: &YoloX,
    frames: &FrameSet,
    cfg: &PatchSslConfig,
) -> Result<PretrainReport> {
    pretrain_patch_ssl_with_loss(model, frames, cfg, None)
}

/// A patch loss written by the user: `(anchors [B, D], positives [Kp·B, D], negatives [Kn·B, D])`
/// (rows k-major, as [`cosine_patch_loss`] documents) → a one-element loss tensor.
pub type CustomPatchLoss<'a> = &'a mut dyn FnMut(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

/// Patch SSL with the loss replaced by `custom` when given (everything else — geometry,
/// augmentation, BN mode, optimiser — as `cfg` says). The reported cosines are the study's
/// mean positive and negative cosines, whatever the loss.
pub fn pretrain_patch_ssl_with_loss(
    model: &YoloX,
    frames: &FrameSet,
    cfg: &PatchSslConfig,
    mut custom: Option<CustomPatchLoss>,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let resume_from = state_to_resume(cfg.out.as_deref(), cfg.resume)?;
    if frames.is_empty() {
        return Err(Error::InvalidArgument(
            "patch SSL needs at least one frame".into(),
        ));
    }
    let [w, h] = cfg.frame_size;
    let resized: Vec<RgbImage> = frames
        .frames
        .iter()
        .map(|f| {
            if f.width() as usize == w && f.height() as usize == h {
                f.clone()
            } else {
                resize_bilinear(f, w as u32, h as u32)
            }
        })
        .collect();
    let head = PretrainHead::new(
        cfg.head,
        model.config.width,
        cfg.patch_size,
        (cfg.mlp_hidden, cfg.mlp_dim),
        None,
        cfg.seed,
    )?;
    let (mut opt_model, mut opt_head) = adam_pair(model, &head, cfg.weight_decay);
    let steps_per_epoch = resized.len().div_ceil(cfg.batch_size);
    let steps_per_epoch = cfg
        .max_steps_per_epoch
        .map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
    let schedule = cfg
        .schedule
        .build(cfg.lr, (steps_per_epoch * cfg.epochs) as u64);
    let previous_momentum = model.store.bn_momentum();
    if cfg.bn_momentum.is_some() {
        model.store.set_bn_momentum(cfg.bn_momentum);
    }
    model.set_training(true);
    head.store.set_training(true);
    let mut rng = rng_for(cfg.seed, "pretrain/patch_ssl");
    let mut report = PretrainReport::default();
    let (mut patches_seen, mut train_time) = (0usize, 0.0f64);
    let per_frame = 1 + cfg.num_positives + cfg.num_negatives;
    let state = RunState {
        method: if custom.is_some() {
            "patch_custom"
        } else {
            "patch_ssl"
        },
        config: config_json(cfg)?,
        model,
        head: head
            .store
            .entries()
            .into_iter()
            .map(|e| (e.name, e.tensor))
            .collect(),
    };
    let result = (|| -> Result<()> {
        let mut first_epoch = 0;
        if let Some(path) = &resume_from {
            let resumed = state.resume(
                path,
                [("model", &mut opt_model), ("head", &mut opt_head)],
                &mut rng,
            )?;
            println!(
                "resuming patch SSL {} after epoch {}",
                path.display(),
                resumed.epochs_done
            );
            (first_epoch, report) = (resumed.epochs_done, resumed.report);
        }
        for epoch in first_epoch..cfg.epochs {
            let mut order: Vec<usize> = (0..resized.len()).collect();
            order.shuffle(&mut rng);
            let (mut loss_sum, mut pos_sum, mut neg_sum, mut steps) = (0.0, 0.0, 0.0, 0usize);
            let mut progress = crate::progress::Progress::new(
                steps_per_epoch as u64,
                &format!("patch SSL, epoch {}/{}", epoch + 1, cfg.epochs),
            );
            let started = Instant::now();
            for chunk in order.chunks(cfg.batch_size).take(steps_per_epoch) {
                let batch: Vec<&RgbImage> = chunk.iter().map(|&i| &resized[i]).collect();
                let (a, p, n) = embed_step(model, &head, &batch, cfg, &mut rng)?;
                let out = match custom.as_mut() {
                    Some(loss_fn) => {
                        let loss = loss_fn(&a, &p, &n)?;
                        if loss.numel() != 1 {
                            return Err(Error::op(
                                "pretrain_custom",
                                format!(
                                    "the loss function returned shape {}, expected one value",
                                    loss.shape()
                                ),
                            ));
                        }
                        let stats = crate::autograd::no_grad(|| cosine_patch_loss(&a, &p, &n))?;
                        PatchLoss {
                            loss,
                            mean_pos_cos: stats.mean_pos_cos,
                            mean_neg_cos: stats.mean_neg_cos,
                        }
                    }
                    None => match cfg.loss {
                        PatchLossKind::Cosine => cosine_patch_loss(&a, &p, &n)?,
                        PatchLossKind::InfoNce => info_nce_patch_loss(&a, &p, &n, cfg.temperature)?,
                    },
                };
                loss_sum += out.loss.item()? as f64;
                pos_sum += out.mean_pos_cos;
                neg_sum += out.mean_neg_cos;
                out.loss.backward()?;
                let lr = schedule.lr_at(report.steps) as f32;
                step_pair(&mut opt_model, &mut opt_head, lr)?;
                report.steps += 1;
                steps += 1;
                progress.tick(1, Some(loss_sum / steps as f64), None);
                if progress.interrupted() {
                    return Err(Error::Msg(format!(
                        "patch SSL interrupted at epoch {}",
                        epoch + 1
                    )));
                }
                patches_seen += chunk.len() * per_frame;
            }
            progress.finish();
            train_time += started.elapsed().as_secs_f64();
            let k = steps.max(1) as f64;
            report.epochs.push(EpochStats {
                epoch,
                loss: loss_sum / k,
                accuracy: None,
                mean_pos_cos: Some(pos_sum / k),
                mean_neg_cos: Some(neg_sum / k),
            });
            if let Some(dir) = &cfg.out {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                state.save(
                    &dir.join(STATE_FILE),
                    [("model", &opt_model), ("head", &opt_head)],
                    &report,
                    &rng,
                    None,
                )?;
            }
        }
        Ok(())
    })();
    model.store.set_bn_momentum(previous_momentum);
    result?;
    report.best_epoch = report.epochs.last().map(|e| e.epoch);
    report.samples_per_s = patches_seen as f64 / train_time.max(1e-9);
    if let Some(dir) = &cfg.out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("patch_ssl_last.safetensors");
        let extra: Vec<(String, Tensor)> = head
            .store
            .entries()
            .into_iter()
            .map(|e| (e.name, e.tensor))
            .collect();
        save_backbone_checkpoint(model, &extra, &path)?;
        report.checkpoint = Some(path);
    }
    Ok(report)
}
