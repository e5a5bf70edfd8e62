//! Temporal contrast: two frames of the same video a few frames apart are a positive pair;
//! frames of other videos, or of the same video farther apart than `far_gap`, are negatives.
//! Each step takes `batch_size` anchor frames, draws for each a positive frame `gap[0]..=gap[1]`
//! frames away in its video, augments both (`views.rs`), embeds them with backbone → projector
//! (SimCLR's 2-layer MLP, Chen et al. 2020) and minimises InfoNCE (Oord et al. 2018) with
//! temperature τ over the batch: anchor i's logits are `cos(a_i, p_j)/τ` for every j, the
//! target is j = i, and a `p_j` of the same video within `far_gap` of anchor i is masked out
//! (it is neither positive nor a fair negative). Time as a free label follows Time-Contrastive
//! Networks (Sermanet et al. 2018) and VINCE (Gordon et al. 2020, τ = 0.1); docs/pretraining.md.
//!
//! Frames come with their video and frame number ([`TimedFrames`], from the names
//! `ssod frames` writes). An anchor needs a frame of its video within the gap range; frames
//! without one are not anchors (they still serve as positives of others).

use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::config::{MethodKeys, SslConfig};
use super::mlp::{backbone_gap, Bn, LayerSpec, Mlp};
use super::runner::{run_ssl, BatchBuilder, SslMethod};
use super::timed_frames::TimedFrames;
use super::views::ViewAugment;
use crate::models::YoloX;
use crate::nn::ParamStore;
use crate::ops;
use crate::pretrain::data::{ImageSource, InputNorm};
use crate::pretrain::heads::c5_channels;
use crate::pretrain::state::config_json;
use crate::pretrain::PretrainReport;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The temporal method's own keys (the common ones are in [`super::SslCommon`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemporalKeys {
    /// `[min, max]` frames between an anchor and its positive (inclusive).
    pub gap: [i64; 2],
    /// A frame of the anchor's video farther than this is a negative; nearer ones are masked.
    pub far_gap: i64,
    pub temperature: f64,
    /// Projector hidden width; None: C5's channels.
    pub proj_hidden: Option<usize>,
    /// Embedding size of the projector (SimCLR: 128).
    pub proj_dim: usize,
    pub views: ViewAugment,
    pub input_norm: InputNorm,
}

impl Default for TemporalKeys {
    fn default() -> Self {
        TemporalKeys {
            gap: [1, 10],
            far_gap: 60,
            temperature: 0.1,
            proj_hidden: None,
            proj_dim: 128,
            views: ViewAugment::default(),
            input_norm: InputNorm::Bgr255,
        }
    }
}

impl MethodKeys for TemporalKeys {
    fn validate(&self) -> Result<()> {
        let [lo, hi] = self.gap;
        if !(1 <= lo && lo <= hi) {
            return Err(Error::InvalidArgument(format!(
                "`gap` must be [min, max] with 1 <= min <= max, got [{lo}, {hi}]"
            )));
        }
        if self.far_gap < hi {
            return Err(Error::InvalidArgument(format!(
                "`far_gap` ({}) must be >= the largest positive gap ({hi})",
                self.far_gap
            )));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "`temperature` must be > 0, got {}",
                self.temperature
            )));
        }
        if self.proj_dim == 0 || self.proj_hidden == Some(0) {
            return Err(Error::InvalidArgument(
                "`proj_dim` and `proj_hidden` must be >= 1".into(),
            ));
        }
        self.views.validate("views")
    }
}

/// `pretrain_temporal`'s config: the common keys and [`TemporalKeys`] in one map.
pub type TemporalConfig = SslConfig<TemporalKeys>;

/// A frame's (video, frame number).
pub type FrameTime = (usize, i64);

/// One step's input: anchors' views then positives' views `[2B, 3, h, w]`, and the (video,
/// time) of each anchor and positive.
pub struct TemporalBatch {
    pub values: Vec<f32>,
    pub size: [usize; 2],
    pub anchors: Vec<(usize, i64)>,
    pub positives: Vec<(usize, i64)>,
}

/// For every frame, the frames of its video within the positive gap range.
fn positive_candidates(frames: &TimedFrames, [lo, hi]: [i64; 2]) -> Vec<Vec<usize>> {
    let mut by_video: Vec<Vec<usize>> = vec![Vec::new(); frames.videos.len()];
    for (i, f) in frames.frames.iter().enumerate() {
        by_video[f.video].push(i);
    }
    frames
        .frames
        .iter()
        .map(|f| {
            by_video[f.video]
                .iter()
                .copied()
                .filter(|&j| (lo..=hi).contains(&(frames.frames[j].time - f.time).abs()))
                .collect()
        })
        .collect()
}

/// The InfoNCE mask of a batch: `mask[i·B + j]` = 0 where `p_j` may be a negative (or is the
/// positive, j = i) of anchor i, −1e4 where it is a near frame of the anchor's video.
pub fn near_frame_mask(
    anchors: &[(usize, i64)],
    positives: &[(usize, i64)],
    far_gap: i64,
) -> Vec<f32> {
    let b = anchors.len();
    let mut mask = vec![0f32; b * b];
    for (i, &(va, ta)) in anchors.iter().enumerate() {
        for (j, &(vp, tp)) in positives.iter().enumerate() {
            if j != i && va == vp && (ta - tp).abs() <= far_gap {
                mask[i * b + j] = -1e4;
            }
        }
    }
    mask
}

/// InfoNCE of anchors `a [B, D]` against positives `p [B, D]` (row i's positive is p_i), with
/// `mask [B, B]` added to the logits `cos(a_i, p_j) / τ`.
pub fn temporal_info_nce(
    a: &Tensor,
    p: &Tensor,
    mask: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let (b, d) = (a.dims()[0], a.dims()[1]);
    let a3 = ops::reshape(a, [b, 1, d])?;
    let p3 = ops::reshape(p, [1, b, d])?;
    let cos = ops::cosine_similarity(&a3, &p3, 2)?; // [B, B]
    let logits = ops::add(&ops::div_scalar(&cos, temperature as f32)?, mask)?;
    // Class ids are read on the host (`cross_entropy`): kept there, no device round trip.
    let targets = Tensor::from_vec((0..b).map(|i| i as f32).collect(), [b])?;
    ops::mean_all(&ops::cross_entropy(&logits, &targets)?)
}

/// The projector (SimCLR's: Linear → BN → ReLU → Linear) in a store of its own.
pub struct TemporalHead {
    pub store: ParamStore,
    projector: Mlp,
}

impl TemporalHead {
    pub fn new(c5: usize, keys: &TemporalKeys, seed: u64) -> Result<TemporalHead> {
        let hidden = keys.proj_hidden.unwrap_or(c5);
        let store = ParamStore::new(seed);
        let projector = Mlp::new(
            &store.builder().sub("pretrain_head").sub("projector"),
            &[
                LayerSpec::new(c5, hidden, Bn::Affine, true),
                LayerSpec::new(hidden, keys.proj_dim, Bn::Off, false),
            ],
        )?;
        Ok(TemporalHead { store, projector })
    }
}

/// One step's forward and backward on `x [2B, 3, h, w]` (anchors, then positives) with the
/// frames' (video, time): the loss.
pub fn temporal_step(
    model: &YoloX,
    head: &TemporalHead,
    x: &Tensor,
    (anchors, positives): (&[FrameTime], &[FrameTime]),
    keys: &TemporalKeys,
) -> Result<Tensor> {
    let b = anchors.len();
    let mask = near_frame_mask(anchors, positives, keys.far_gap);
    let mask = Tensor::from_vec_on(mask, [b, b], x.device())?;
    let z = head
        .projector
        .forward(&backbone_gap(model, x)?, head.store.is_training())?;
    let loss = temporal_info_nce(
        &ops::narrow(&z, 0, 0, b)?,
        &ops::narrow(&z, 0, b, b)?,
        &mask,
        keys.temperature,
    )?;
    loss.backward()?;
    Ok(loss)
}

struct Temporal<'a> {
    cfg: &'a TemporalConfig,
    head: TemporalHead,
    frames: Arc<TimedFrames>,
    candidates: Arc<Vec<Vec<usize>>>,
    /// Frames that have a positive within the gap range.
    anchors: Arc<Vec<usize>>,
    sources: Arc<Vec<ImageSource>>,
}

impl SslMethod for Temporal<'_> {
    type Batch = TemporalBatch;

    fn name(&self) -> &'static str {
        "temporal"
    }

    fn head_store(&self) -> &ParamStore {
        &self.head.store
    }

    fn items(&self) -> usize {
        self.anchors.len()
    }

    fn images_per_item(&self) -> usize {
        2
    }

    fn health_images(&self) -> Arc<Vec<ImageSource>> {
        self.sources.clone()
    }

    fn input_norm(&self) -> InputNorm {
        self.cfg.method.input_norm
    }

    fn batch_builder(&self, epoch_seed: u64) -> BatchBuilder<TemporalBatch> {
        let (frames, candidates, anchors) = (
            self.frames.clone(),
            self.candidates.clone(),
            self.anchors.clone(),
        );
        let (views, size, norm) = (
            self.cfg.method.views,
            self.cfg.common.image_size,
            self.cfg.method.input_norm,
        );
        Arc::new(move |first: usize, items: &[usize]| {
            let [w, h] = size;
            let (mut a, mut p) = (Vec::new(), Vec::new());
            let mut batch = TemporalBatch {
                values: Vec::new(),
                size,
                anchors: Vec::new(),
                positives: Vec::new(),
            };
            for (k, &item) in items.iter().enumerate() {
                let i = anchors[item];
                let mut rng = rng_for(epoch_seed, &format!("temporal/{}", first + k));
                let options = &candidates[i];
                let j = options[rng.random_range(0..options.len())];
                let (fa, fp) = (&frames.frames[i], &frames.frames[j]);
                let (img_a, img_p) = (fa.image.load()?, fp.image.load()?);
                views.push_view_pair((&img_a, &img_p), size, &mut rng, (&mut a, &mut p));
                batch.anchors.push((fa.video, fa.time));
                batch.positives.push((fp.video, fp.time));
            }
            a.extend_from_slice(&p);
            norm.apply_to_rgb_planes(&mut a, w * h);
            batch.values = a;
            Ok(batch)
        })
    }

    fn step(&mut self, model: &YoloX, batch: TemporalBatch, device: Device) -> Result<Tensor> {
        let b = batch.anchors.len();
        let [w, h] = batch.size;
        let x = Tensor::from_vec_on(batch.values, [2 * b, 3, h, w], device)?;
        let pairs = (batch.anchors.as_slice(), batch.positives.as_slice());
        temporal_step(model, &self.head, &x, pairs, &self.cfg.method)
    }
}

/// Temporal-contrast pretraining of `model`'s backbone on `frames` (see the module docs);
/// writes `temporal_last.safetensors` (backbone + projector) into `out`.
pub fn pretrain_temporal(
    model: &YoloX,
    frames: &TimedFrames,
    cfg: &TemporalConfig,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let candidates = positive_candidates(frames, cfg.method.gap);
    let anchors: Vec<usize> = (0..frames.len())
        .filter(|&i| !candidates[i].is_empty())
        .collect();
    if anchors.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "temporal: no frame has another frame of its video {}..={} frames away (`gap`); \
             {} frames in {} videos",
            cfg.method.gap[0],
            cfg.method.gap[1],
            frames.len(),
            frames.videos.len()
        )));
    }
    let head = TemporalHead::new(
        c5_channels(model.config.width),
        &cfg.method,
        cfg.common.seed,
    )?;
    let mut method = Temporal {
        cfg,
        head,
        sources: Arc::new(frames.frames.iter().map(|f| f.image.clone()).collect()),
        frames: Arc::new(frames.clone()),
        candidates: Arc::new(candidates),
        anchors: Arc::new(anchors),
    };
    run_ssl(model, &mut method, &cfg.common, config_json(cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_frames_of_the_same_video_are_masked() {
        // Anchors (video, t): (0, 0), (0, 100), (1, 0); positives (0, 3), (0, 98), (1, 5).
        let a = [(0, 0), (0, 100), (1, 0)];
        let p = [(0, 3), (0, 98), (1, 5)];
        let m = near_frame_mask(&a, &p, 60);
        // Anchor 0 vs p1 (t 98, 98 apart): a negative; vs p2: other video. Anchor 1 vs p0
        // (97 apart): negative. Anchor 2 vs others: other video. Nothing masked.
        assert!(m.iter().all(|&v| v == 0.0));
        let m = near_frame_mask(&a, &p, 100);
        // far_gap 100: anchor 0 ↔ p1 (98) and anchor 1 ↔ p0 (97) are masked.
        assert_eq!(m, vec![0.0, -1e4, 0.0, -1e4, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn info_nce_matches_a_hand_computed_case() {
        // a = [e0, e1], p = [e0, e0]: cos row 0 = [1, 1], row 1 = [0, 0]; τ = 1.
        // Row 0: −log(e/(e+e)) = ln 2; row 1: target 1, −log(1/2) = ln 2. Mean ln 2.
        let a = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], [2, 2]).unwrap();
        let p = Tensor::from_vec(vec![2.0, 0.0, 3.0, 0.0], [2, 2]).unwrap();
        let zero = Tensor::zeros([2, 2]);
        let l = temporal_info_nce(&a, &p, &zero, 1.0)
            .unwrap()
            .item()
            .unwrap();
        assert!((l as f64 - 2f64.ln()).abs() < 1e-6, "{l}");
        // Masking p1 out of row 0: row 0 = −log(1) = 0; row 1 unchanged: mean ln 2 / 2.
        let mask = Tensor::from_vec(vec![0.0, -1e4, 0.0, 0.0], [2, 2]).unwrap();
        let l = temporal_info_nce(&a, &p, &mask, 1.0)
            .unwrap()
            .item()
            .unwrap();
        assert!((l as f64 - 2f64.ln() / 2.0).abs() < 1e-6, "{l}");
    }

    #[test]
    fn candidates_respect_the_gap_range_and_the_video() {
        let img = || RgbImage::new(1, 1);
        use image::RgbImage;
        let frames = TimedFrames::from_images(vec![
            (img(), 0, 0),
            (img(), 0, 2),
            (img(), 0, 9),
            (img(), 1, 1),
        ]);
        let c = positive_candidates(&frames, [1, 5]);
        assert_eq!(c, vec![vec![1], vec![0], vec![], vec![]]);
    }
}
