//! Temporal contrast: two frames of the same video a few frames apart are a positive pair;
//! frames of other videos, or of the same video farther apart than `far_gap`, are negatives.
//! Each step takes `batch_size` anchor frames, draws for each a positive frame `gap[0]..=gap[1]`
//! frames away in its video and cuts a view of each (`views`). Two objectives
//! (docs/pretraining.md, "Temporal contrast"):
//! - `dense` (the default): dense contrast ([`crate::pretrain::dense`], DenseCL's loss and heads)
//!   between the two frames' views. Both crop boxes are drawn in the frames' common pixel frame,
//!   so with a fixed camera the geometric rule pairs the cells that see the same place of the
//!   scene a few frames apart (objects moved a little); `matching: "feature"` pairs the most
//!   similar cell instead. Negatives are the cells of the other pairs' frames, minus those of the
//!   anchor's video within `far_gap`.
//! - `global`: the frames embedded whole and contrasted by InfoNCE ([`global`], VINCE-style).
//!
//! Frames come with their video and frame number ([`TimedFrames`], from the names
//! `ssod frames` writes). An anchor needs a frame of its video within the gap range; frames
//! without one are not anchors (they still serve as positives of others).

pub mod global;
pub mod timed_frames;

use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::models::YoloX;
use crate::nn::ParamStore;
use crate::pretrain::data::{ImageSource, InputNorm};
use crate::pretrain::dense::geometry::EXCLUDED;
use crate::pretrain::dense::run::checkpoint_extra;
use crate::pretrain::dense::views::{view_pair, ViewSampling};
use crate::pretrain::dense::{dense_step, DenseContrast, DenseHeads, ViewBox};
use crate::pretrain::heads::c5_channels;
use crate::pretrain::ssl::{run_ssl, store_entries, BatchBuilder, MethodKeys, SslConfig};
use crate::pretrain::ssl::{SslMethod, ViewAugment};
use crate::pretrain::state::config_json;
use crate::pretrain::PretrainReport;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

pub use global::{temporal_step, TemporalHead};
pub use timed_frames::TimedFrames;

/// What the positive frame pairs are contrasted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemporalObjective {
    /// Dense contrast between the two frames' views (the `dense` keys).
    #[default]
    Dense,
    /// InfoNCE of whole-view embeddings (`temperature`, `proj_hidden`, `proj_dim`).
    Global,
}

/// The temporal method's own keys (the common ones are in [`crate::pretrain::ssl::SslCommon`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemporalKeys {
    /// `[min, max]` frames between an anchor and its positive (inclusive).
    pub gap: [i64; 2],
    /// A frame of the anchor's video farther than this is a negative; nearer ones are masked.
    pub far_gap: i64,
    pub objective: TemporalObjective,
    /// The dense objective's loss keys ([`DenseContrast`], DenseCL's defaults).
    pub dense: DenseContrast,
    /// The global objective's InfoNCE temperature (VINCE: 0.1).
    pub temperature: f64,
    /// The global objective's projector hidden width; None: C5's channels.
    pub proj_hidden: Option<usize>,
    /// The global objective's embedding size (SimCLR: 128).
    pub proj_dim: usize,
    pub views: ViewAugment,
    pub input_norm: InputNorm,
}

impl Default for TemporalKeys {
    fn default() -> Self {
        TemporalKeys {
            gap: [1, 10],
            far_gap: 60,
            objective: TemporalObjective::Dense,
            dense: DenseContrast::default(),
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
        self.views.validate("views")?;
        self.dense
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("`dense`: {e}")))?;
        if self.objective == TemporalObjective::Dense && self.views.pair_region_scale.is_some() {
            return Err(Error::InvalidArgument(
                "`views.pair_region_scale` is for the global objective: the dense objective \
                 pairs cells through the views' overlap, drawn over the whole frame"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `pretrain_temporal`'s config: the common keys and [`TemporalKeys`] in one map.
pub type TemporalConfig = SslConfig<TemporalKeys>;

/// A frame's (video, frame number).
pub type FrameTime = (usize, i64);

/// One step's input: anchors' views then positives' views `[2B, 3, h, w]`, and the (video,
/// time) of each anchor and positive; for the dense objective also the views' boxes (in the
/// frames' pixels) and the seed of the step's own draws.
pub struct TemporalBatch {
    pub values: Vec<f32>,
    pub size: [usize; 2],
    pub anchors: Vec<FrameTime>,
    pub positives: Vec<FrameTime>,
    pub boxes: Vec<(ViewBox, ViewBox)>,
    pub seed: u64,
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
/// positive, j = i) of anchor i, [`EXCLUDED`] where it is a near frame of the anchor's video.
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
                mask[i * b + j] = EXCLUDED;
            }
        }
    }
    mask
}

/// The heads of the objective, each in a store of its own.
enum Heads {
    Dense(DenseHeads),
    Global(TemporalHead),
}

struct Temporal<'a> {
    cfg: &'a TemporalConfig,
    heads: Heads,
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
        match &self.heads {
            Heads::Dense(h) => &h.store,
            Heads::Global(h) => &h.store,
        }
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
        let keys = &self.cfg.method;
        let (objective, views, size, norm) = (
            keys.objective,
            keys.views,
            self.cfg.common.image_size,
            keys.input_norm,
        );
        let sampling = ViewSampling {
            view_size: size,
            augment: views,
            norm,
            epoch_seed,
        };
        Arc::new(move |first: usize, items: &[usize]| {
            let [w, h] = size;
            let (mut a, mut p) = (Vec::new(), Vec::new());
            let mut batch = TemporalBatch {
                values: Vec::new(),
                size,
                anchors: Vec::new(),
                positives: Vec::new(),
                boxes: Vec::new(),
                seed: rng_for(epoch_seed, &format!("temporal/step/{first}")).random(),
            };
            for (k, &item) in items.iter().enumerate() {
                let i = anchors[item];
                let mut rng = rng_for(epoch_seed, &format!("temporal/{}", first + k));
                let options = &candidates[i];
                let j = options[rng.random_range(0..options.len())];
                let (fa, fp) = (&frames.frames[i], &frames.frames[j]);
                let (img_a, img_p) = (fa.image.load()?, fp.image.load()?);
                match objective {
                    TemporalObjective::Global => {
                        views.push_view_pair((&img_a, &img_p), size, &mut rng, (&mut a, &mut p))
                    }
                    TemporalObjective::Dense => {
                        if img_a.dimensions() != img_p.dimensions() {
                            return Err(Error::InvalidArgument(format!(
                                "temporal (dense objective): frames of one video must have one \
                                 size, {} is {:?} and {} is {:?}",
                                fa.image.describe(),
                                img_a.dimensions(),
                                fp.image.describe(),
                                img_p.dimensions()
                            )));
                        }
                        let (pair, [va, vp]) = view_pair(&img_a, &img_p, &sampling, &mut rng);
                        a.extend(va);
                        p.extend(vp);
                        batch.boxes.push(pair);
                    }
                }
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
        let keys = &self.cfg.method;
        match &self.heads {
            Heads::Global(head) => temporal_step(model, head, &x, pairs, keys),
            Heads::Dense(heads) => {
                let excluded = near_frame_mask(pairs.0, pairs.1, keys.far_gap);
                let out = dense_step(
                    model,
                    heads,
                    &x,
                    &batch.boxes,
                    batch.seed,
                    &keys.dense,
                    Some(&excluded),
                )?;
                Ok(out.loss)
            }
        }
    }

    fn checkpoint_extra(&self, model: &YoloX) -> Vec<(String, Tensor)> {
        match &self.heads {
            Heads::Dense(heads) => checkpoint_extra(heads, self.cfg.method.dense.neck, model),
            Heads::Global(head) => store_entries(&head.store),
        }
    }
}

/// Temporal-contrast pretraining of `model`'s backbone (and, with the dense objective and
/// `dense.neck`, its PAFPN) on `frames` (see the module docs); writes `temporal_last.safetensors`
/// (backbone + heads) into `out`.
pub fn pretrain_temporal(
    model: &YoloX,
    frames: &TimedFrames,
    cfg: &TemporalConfig,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let keys = &cfg.method;
    let candidates = positive_candidates(frames, keys.gap);
    let anchors: Vec<usize> = (0..frames.len())
        .filter(|&i| !candidates[i].is_empty())
        .collect();
    if anchors.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "temporal: no frame has another frame of its video {}..={} frames away (`gap`); \
             {} frames in {} videos",
            keys.gap[0],
            keys.gap[1],
            frames.len(),
            frames.videos.len()
        )));
    }
    let (heads, bn_momentum) = match keys.objective {
        TemporalObjective::Dense => (
            Heads::Dense(DenseHeads::new(
                model.config.width,
                keys.dense.dim,
                keys.dense.neck,
                cfg.common.seed,
            )?),
            keys.dense.bn_momentum,
        ),
        TemporalObjective::Global => (
            Heads::Global(TemporalHead::new(
                c5_channels(model.config.width),
                keys,
                cfg.common.seed,
            )?),
            None,
        ),
    };
    let mut method = Temporal {
        cfg,
        heads,
        sources: Arc::new(frames.frames.iter().map(|f| f.image.clone()).collect()),
        frames: Arc::new(frames.clone()),
        candidates: Arc::new(candidates),
        anchors: Arc::new(anchors),
    };
    // Restored on every exit, errors included.
    let _momentum = model.store.bn_momentum_scope(bn_momentum);
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
