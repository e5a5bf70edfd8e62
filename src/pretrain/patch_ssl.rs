//! Patch-contrastive self-supervision on unlabeled frames (study strategy 3, docs/the-study.md).
//!
//! Geometry: `patch_geometry.rs` (defaults = the study: 1280×720 frames, a 3×3 grid of 224 px
//! cells, the centre the anchor, its edge neighbours the positives, negatives in the far right
//! strip or at a distance). Loss `"cosine"` (the study): `mean cos(a, n) − mean cos(a, p)`; `"info_nce"`: per positive,
//! cross-entropy of `[cos(a,p), cos(a,n_1..K)] / τ` with the positive as the target.
//! Augmentation: ColorJitter(0.8, 0.8, 0.8, 0.2) with p 0.8 and RandomGrayscale(0.2), once per
//! frame (study) or per patch. BN: anchor / positive / negative groups as separate forward passes
//! (study, a known shortcut) or one joint batch. All patches of a step come out of one
//! [`crate::ops::crop_patches`] call on the step's device; frames are decoded, resized and
//! augmented by the loader's workers (`loader.rs`), and on CUDA nothing of a step comes back to
//! the host (`device.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::color_jitter::ColorAugment;
use super::data::{FrameSet, InputNorm};
use super::device::{DeviceConfig, DeviceScope, EpochMeans};
use super::heads::{HeadKind, PretrainHead};
use super::health::{HealthConfig, HealthWatch};
use super::loader::{patch_batches, PatchInput, PatchSampling};
use super::state::{config_json, state_to_resume, RunState};
use super::transfer::save_backbone_checkpoint;
use super::{adam_pair, check_positive, step_pair, EpochStats, PretrainReport, PretrainSchedule};
use crate::models::YoloX;
use crate::ops;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::train::config::Precision;
use crate::{Error, Result};

pub use super::patch_geometry::{patch_gap, NegativeSampler, PatchGeometry, PatchPlan};
pub use super::patch_loss::{
    cosine_patch_loss, info_nce_patch_loss, repeat_anchors, PatchLoss, PatchLossKind,
};

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
    /// `cpu`, `cuda` or `auto` (the Rhai functions default to the notebook's `--device`).
    pub device: String,
    /// Matrix products on the GPU: `f32`, `tf32` or `bf16` (as the detector recipe's key).
    pub precision: Precision,
    /// Threads that decode, resize and augment batches ahead of the step.
    pub workers: usize,
    /// The embedding health after every epoch (`health.rs`): a map of its keys, `true` (the
    /// defaults) or `false` (skip). It reads the model and changes nothing.
    #[serde(
        deserialize_with = "super::ssl::config::health_setting",
        serialize_with = "super::ssl::config::health_json"
    )]
    pub health: Option<HealthConfig>,
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
            device: "cpu".into(),
            precision: Precision::F32,
            workers: 2,
            health: Some(HealthConfig::default()),
        }
    }
}

impl PatchSslConfig {
    /// The augmentation part of the config.
    pub fn color_augment(&self) -> ColorAugment {
        ColorAugment {
            jitter_prob: self.color_jitter_prob,
            jitter: self.color_jitter,
            grayscale_prob: self.grayscale_prob,
        }
    }

    /// How the loader turns frames into one epoch's patches, its draws keyed by `epoch_seed`.
    pub fn sampling(&self, epoch_seed: u64) -> PatchSampling {
        PatchSampling {
            geometry: self.geometry(),
            augment: self.color_augment(),
            per_patch: self.augment_per == AugmentScope::Patch,
            norm: self.input_norm,
            epoch_seed,
        }
    }

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

    /// The `device`, `precision` and `workers` keys.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            device: self.device.clone(),
            precision: self.precision,
            workers: self.workers,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.device_config().validate()?;
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

/// `input` as patches `[P, 3, s, s]` on `device`: frames go up and are cut there, or patches
/// cut (and augmented) by the loader go up as they are.
pub fn upload_patches(input: PatchInput, cfg: &PatchSslConfig, device: Device) -> Result<Tensor> {
    let [w, h] = cfg.frame_size;
    let s = cfg.patch_size;
    match input {
        PatchInput::Frames {
            values,
            frames,
            boxes,
        } => {
            let images = Tensor::from_vec_on(values, [frames, 3, h, w], device)?;
            ops::crop_patches(&images, &boxes, s)
        }
        PatchInput::Patches { values, count } => {
            Tensor::from_vec_on(values, [count, 3, s, s], device)
        }
    }
}

/// Anchor, positive and negative embeddings of `frames` frames' patches (rows k-major):
/// `(anchors [B, D], positives [Kp·B, D], negatives [Kn·B, D])`.
pub fn embed_patches(
    model: &YoloX,
    head: &PretrainHead,
    patches: &Tensor,
    frames: usize,
    cfg: &PatchSslConfig,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (b, kp, kn) = (
        frames,
        cfg.num_positives * frames,
        cfg.num_negatives * frames,
    );
    let embed = |x: &Tensor| -> Result<Tensor> {
        let (_, _, c5) = model.backbone.backbone.forward(x)?;
        head.embed(&c5)
    };
    match cfg.bn_mode {
        BnMode::Separate => Ok((
            embed(&ops::narrow(patches, 0, 0, b)?)?,
            embed(&ops::narrow(patches, 0, b, kp)?)?,
            embed(&ops::narrow(patches, 0, b + kp, kn)?)?,
        )),
        BnMode::Joint => {
            let z = embed(patches)?;
            Ok((
                ops::narrow(&z, 0, 0, b)?,
                ops::narrow(&z, 0, b, kp)?,
                ops::narrow(&z, 0, b + kp, kn)?,
            ))
        }
    }
}

/// A patch loss written by the user: `(anchors [B, D], positives [Kp·B, D], negatives [Kn·B, D])`
/// (rows k-major, as [`cosine_patch_loss`] documents) → a one-element loss tensor.
pub type CustomPatchLoss<'a> = &'a mut dyn FnMut(&Tensor, &Tensor, &Tensor) -> Result<Tensor>;

/// One step's forward and backward (no optimiser step) on patches `[P, 3, s, s]` of `frames`
/// frames: the loss and the mean cosines, on the patches' device.
pub fn patch_ssl_step(
    model: &YoloX,
    head: &PretrainHead,
    patches: &Tensor,
    frames: usize,
    cfg: &PatchSslConfig,
    custom: Option<&mut CustomPatchLoss>,
) -> Result<PatchLoss> {
    let (a, p, n) = embed_patches(model, head, patches, frames, cfg)?;
    let out = match custom {
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
            PatchLoss { loss, ..stats }
        }
        None => match cfg.loss {
            PatchLossKind::Cosine => cosine_patch_loss(&a, &p, &n)?,
            PatchLossKind::InfoNce => info_nce_patch_loss(&a, &p, &n, cfg.temperature)?,
        },
    };
    out.loss.backward()?;
    Ok(out)
}

/// The head's tensors under the names checkpoints and states use.
/// `patch_ssl_last.safetensors` in `out` (backbone and head), when the run has an `out`.
fn write_last(
    model: &YoloX,
    head: &PretrainHead,
    out: Option<&std::path::Path>,
) -> Result<Option<std::path::PathBuf>> {
    let Some(dir) = out else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("patch_ssl_last.safetensors");
    save_backbone_checkpoint(model, &head_entries(head), &path)?;
    Ok(Some(path))
}

fn head_entries(head: &PretrainHead) -> Vec<(String, Tensor)> {
    head.store
        .entries()
        .into_iter()
        .map(|e| (e.name, e.tensor))
        .collect()
}

/// What one epoch of a patch-SSL run works on.
struct EpochRun<'a> {
    model: &'a YoloX,
    head: &'a PretrainHead,
    cfg: &'a PatchSslConfig,
    device: Device,
    schedule: &'a crate::train::schedule::LrSchedule,
}

/// One epoch's steps over `batches`: the means of (loss, positive cosine, negative cosine),
/// the seconds it took (loader waits included) and the frames seen.
fn train_epoch(
    run: &EpochRun,
    batches: crate::data::prefetch::Prefetch<Result<(PatchInput, usize)>>,
    (epoch, steps): (usize, usize),
    (opt_model, opt_head): (
        &mut crate::train::optim::Adam,
        &mut crate::train::optim::Adam,
    ),
    step_count: &mut u64,
    mut custom: Option<&mut CustomPatchLoss>,
) -> Result<(Vec<f64>, f64, usize)> {
    let cfg = run.cfg;
    let mut means = EpochMeans::new(3, run.device);
    let title = format!("patch SSL, epoch {}/{}", epoch + 1, cfg.epochs);
    let mut progress = crate::progress::Progress::new(steps as u64, &title);
    let (started, mut frames_seen) = (Instant::now(), 0usize);
    for batch in batches {
        let (input, frames_in_batch) = batch?;
        let patches = upload_patches(input, cfg, run.device)?;
        let out = patch_ssl_step(
            run.model,
            run.head,
            &patches,
            frames_in_batch,
            cfg,
            custom.as_deref_mut(),
        )
        .map_err(|e| {
            e.with_gpu_memory_context(|| {
                format!(
                    "patch SSL step (batch {} frames, patch {}, precision {:?})",
                    cfg.batch_size, cfg.patch_size, cfg.precision
                )
            })
        })?;
        step_pair(opt_model, opt_head, run.schedule.lr_at(*step_count) as f32)?;
        means.push(&[&out.loss, &out.pos_cos, &out.neg_cos])?;
        *step_count += 1;
        progress.tick(1, means.progress_value()?, None);
        if progress.interrupted() {
            return Err(Error::Msg(format!(
                "patch SSL interrupted at epoch {}",
                epoch + 1
            )));
        }
        frames_seen += frames_in_batch;
    }
    let m = means.means()?;
    progress.finish();
    Ok((m, started.elapsed().as_secs_f64(), frames_seen))
}

/// Pretrain `model`'s backbone on unlabeled frames (see the module docs). The final weights are
/// kept (the study kept the lowest *training* loss, docs/the-study.md defect 8, which says little).
pub fn pretrain_patch_ssl(
    model: &YoloX,
    frames: &FrameSet,
    cfg: &PatchSslConfig,
) -> Result<PretrainReport> {
    pretrain_patch_ssl_with_loss(model, frames, cfg, None)
}

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
    let sources = Arc::new(frames.frames.clone());
    let head = PretrainHead::new(
        cfg.head,
        model.config.width,
        cfg.patch_size,
        (cfg.mlp_hidden, cfg.mlp_dim),
        None,
        cfg.seed,
    )?;
    let scope = DeviceScope::enter(&cfg.device_config(), &[&model.store, &head.store])?;
    let device = scope.device;
    let (mut opt_model, mut opt_head) = adam_pair(model, &head, cfg.weight_decay);
    let steps_per_epoch =
        super::steps_per_epoch(sources.len(), cfg.batch_size, cfg.max_steps_per_epoch);
    let schedule = cfg
        .schedule
        .build(cfg.lr, (steps_per_epoch * cfg.epochs) as u64);
    // Restored on every exit, errors and interruptions included.
    let _momentum = model.store.bn_momentum_scope(cfg.bn_momentum);
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
        head: head_entries(&head),
    };
    let mut first_epoch = 0;
    if let Some(resumed) = state.resume_if(
        resume_from.as_deref(),
        [("model", &mut opt_model), ("head", &mut opt_head)],
        &mut rng,
    )? {
        (first_epoch, report) = (resumed.epochs_done, resumed.report);
    }
    let health = HealthWatch::start(
        model,
        cfg.health.as_ref(),
        &sources,
        ([cfg.patch_size; 2], cfg.input_norm),
        device,
        state.method,
    )?;
    for epoch in first_epoch..cfg.epochs {
        let mut order: Vec<usize> = (0..sources.len()).collect();
        order.shuffle(&mut rng);
        let sampling = cfg.sampling(rng.random());
        let (m, seconds, frames_seen) = train_epoch(
            &EpochRun {
                model,
                head: &head,
                cfg,
                device,
                schedule: &schedule,
            },
            patch_batches(
                &sources,
                order,
                cfg.batch_size,
                Some(steps_per_epoch),
                sampling,
                cfg.workers,
            ),
            (epoch, steps_per_epoch),
            (&mut opt_model, &mut opt_head),
            &mut report.steps,
            custom.as_mut(),
        )?;
        patches_seen += frames_seen * per_frame;
        train_time += seconds;
        let epoch_health = health.after_epoch(model, epoch, &mut report)?;
        report.epochs.push(EpochStats {
            epoch,
            loss: m[0],
            accuracy: None,
            mean_pos_cos: Some(m[1]),
            mean_neg_cos: Some(m[2]),
            seconds,
            images_seen: frames_seen,
            health: epoch_health,
        });
        state.save_epoch(
            cfg.out.as_deref(),
            [("model", &opt_model), ("head", &opt_head)],
            &report,
            &rng,
            None,
        )?;
    }
    report.best_epoch = report.epochs.last().map(|e| e.epoch);
    report.conclude(patches_seen, train_time);
    report.checkpoint = write_last(model, &head, cfg.out.as_deref())?;
    scope.leave()?;
    Ok(report)
}
