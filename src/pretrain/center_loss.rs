//! Center-loss foreground/background pretraining (study strategy 1, docs/the-study.md).
//!
//! Network: CSPDarknet C5 → a [`PretrainHead`] (`study`: 3 × [conv3×3, BN, ReLU], 2×2 avg pool,
//! flatten, linear → 2 logits; or `gap`). Loss: `CE(z, y) + λ · L_c`, with
//! `L_c = (1/B) Σ_i ‖f_i − c_{y_i}‖²` ([`center_loss`]) on
//! - the 2-d logits with centres learned by SGD at lr 0.5 (the study: `feat_dim = 2`,
//!   `SGD(center_loss.parameters(), lr=0.5)`, λ = 1 implicit), or
//! - the embedding with Wen et al.'s update `c_j ← c_j − α·Σ_{y_i=j}(c_j − f_i)/(1 + n_j)`.
//!
//! λ = 0 is the cross-entropy-only ablation. Adam lr 1e-3, wd 5e-4, batch 128, 100 epochs; the
//! study's scheduler was never stepped (constant lr), `schedule: "cos"` steps a cosine. Inputs are
//! crops resized to `input_size` with random horizontal flips, BGR 0..255 by default
//! (`input_norm: "imagenet_rgb"` is the study's). Held-out accuracy on a seeded split every
//! `eval_every` epochs (the study: every 10th epoch, on an unseeded split); the best epoch's
//! weights are restored into the model and written to `out/center_loss_best.safetensors`.
//! With `out`, the run's state is kept after every epoch and `resume: true` continues it
//! (`state.rs`). Crops are decoded, resized and flipped by the loader's workers (`loader.rs`);
//! with `device: "cuda"` the step, the centres and their update stay on the GPU (`device.rs`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::centers::{center_loss, update_centers};
use super::data::{seeded_split, Crop, CropSet, InputNorm};
use super::device::{DeviceConfig, DeviceScope, EpochMeans};
use super::heads::{HeadKind, PretrainHead};
use super::health::{HealthConfig, HealthWatch};
use super::loader::{crop_batches, CropSampling};
use super::state::{config_json, state_to_resume, BestSnapshot, RunState};
use super::transfer::{restore, save_backbone_checkpoint, snapshot};
use super::{adam_pair, check_positive, step_pair, EpochStats, PretrainReport, PretrainSchedule};
use crate::autograd::no_grad;
use crate::models::YoloX;
use crate::ops;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::train::config::Precision;
use crate::train::optim::Adam;
use crate::train::schedule::LrSchedule;
use crate::{Error, Result};

/// Which features the center loss pulls together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CenterFeature {
    /// The study: the 2-d logits (docs/the-study.md, defect 6).
    #[default]
    Logits,
    /// The head's embedding (Wen et al.'s setting).
    Embedding,
}

/// How the centres learn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CenterUpdate {
    /// The study: centres are parameters, SGD at `center_lr` (0.5) on the loss gradient.
    #[default]
    Sgd,
    /// Wen et al. 2016: `c_j ← c_j − α·Δc_j`, `Δc_j = Σ_{y_i=j}(c_j − f_i)/(1 + n_j)`.
    Alpha,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CenterLossConfig {
    pub seed: u64,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: PretrainSchedule,
    /// Square input side (a multiple of 32; the study: 224).
    pub input_size: usize,
    pub input_norm: InputNorm,
    pub hflip_prob: f64,
    pub head: HeadKind,
    /// λ; 0 is the cross-entropy-only ablation.
    pub center_weight: f64,
    pub center_feature: CenterFeature,
    pub center_update: CenterUpdate,
    pub center_lr: f64,
    pub center_alpha: f64,
    pub val_fraction: f64,
    pub eval_every: usize,
    /// Override the backbone's BN momentum while pretraining (None: YOLOX's 0.03). Short runs
    /// need a larger one, or eval-mode accuracy uses running statistics far from the batch's.
    pub bn_momentum: Option<f32>,
    /// Stop an epoch after this many steps (benchmarks, smoke tests); None: the whole epoch.
    pub max_steps_per_epoch: Option<usize>,
    /// Folder for `center_loss_best.safetensors` and the per-epoch state
    /// (`pretrain_state.safetensors`); None writes nothing.
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

impl Default for CenterLossConfig {
    fn default() -> Self {
        CenterLossConfig {
            seed: 0,
            epochs: 100,
            batch_size: 128,
            lr: 1e-3,
            weight_decay: 5e-4,
            schedule: PretrainSchedule::Constant,
            input_size: 224,
            input_norm: InputNorm::Bgr255,
            hflip_prob: 0.5,
            head: HeadKind::Study,
            center_weight: 1.0,
            center_feature: CenterFeature::Logits,
            center_update: CenterUpdate::Sgd,
            center_lr: 0.5,
            center_alpha: 0.5,
            val_fraction: 0.2,
            eval_every: 1,
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

impl CenterLossConfig {
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
        check_positive("eval_every", self.eval_every)?;
        if self.input_size == 0 || !self.input_size.is_multiple_of(32) {
            return Err(Error::InvalidArgument(format!(
                "`input_size` must be a positive multiple of 32, got {}",
                self.input_size
            )));
        }
        if self.head == HeadKind::Mlp {
            return Err(Error::InvalidArgument(
                "`head` for center loss is \"study\" or \"gap\"".into(),
            ));
        }
        for (key, v) in [
            ("lr", self.lr),
            ("weight_decay", self.weight_decay),
            ("center_weight", self.center_weight),
            ("center_lr", self.center_lr),
            ("center_alpha", self.center_alpha),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::InvalidArgument(format!(
                    "`{key}` must be a finite number >= 0, got {v}"
                )));
            }
        }
        for (key, v) in [
            ("hflip_prob", self.hflip_prob),
            ("val_fraction", self.val_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "`{key}` must be in [0, 1], got {v}"
                )));
            }
        }
        Ok(())
    }
}

/// One step's forward and backward (no optimiser step) on `input [B, 3, S, S]` (on the step's
/// device) with class ids `labels`: the loss and the feature the centres follow (detached).
pub fn center_loss_step(
    model: &YoloX,
    head: &PretrainHead,
    centers: &Tensor,
    input: &Tensor,
    labels: &[usize],
    cfg: &CenterLossConfig,
) -> Result<(Tensor, Tensor)> {
    let label_t = Tensor::from_vec(labels.iter().map(|&l| l as f32).collect(), [labels.len()])?;
    let (_, _, c5) = model.backbone.backbone.forward(input)?; // [B, 16b, S/32, S/32]
    let embedding = head.embed(&c5)?; // [B, D]
    let logits = head.classify(&embedding)?; // [B, 2]
    let ce = ops::mean_all(&ops::cross_entropy(&logits, &label_t)?)?;
    let feature = match cfg.center_feature {
        CenterFeature::Logits => logits,
        CenterFeature::Embedding => embedding,
    };
    let loss = if cfg.center_weight > 0.0 {
        let lc = center_loss(&feature, labels, centers)?;
        ops::add(&ce, &ops::mul_scalar(&lc, cfg.center_weight as f32)?)?
    } else {
        ce
    };
    loss.backward()?;
    Ok((loss.detach(), feature.detach()))
}

/// Held-out accuracy in eval mode (running BN statistics), without recording.
fn accuracy(
    model: &YoloX,
    head: &PretrainHead,
    crops: &Arc<Vec<Crop>>,
    idx: &[usize],
    cfg: &CenterLossConfig,
    device: Device,
) -> Result<f64> {
    if idx.is_empty() {
        return Ok(f64::NAN);
    }
    model.set_training(false);
    head.store.set_training(false);
    let sampling = CropSampling {
        size: cfg.input_size,
        norm: cfg.input_norm,
        flip: None,
    };
    let mut correct = 0usize;
    no_grad(|| -> Result<()> {
        for batch in crop_batches(
            crops,
            idx.to_vec(),
            cfg.batch_size,
            None,
            sampling,
            cfg.workers,
        ) {
            let batch = batch?;
            let shape = batch.shape();
            let x = Tensor::from_vec_on(batch.input, shape, device)?;
            let (_, _, c5) = model.backbone.backbone.forward(&x)?;
            // argmax on the device: one value per crop comes back.
            let logits = head.classify(&head.embed(&c5)?)?;
            let pred_fg = ops::sub(
                &ops::narrow(&logits, 1, 1, 1)?,
                &ops::narrow(&logits, 1, 0, 1)?,
            )?;
            for (margin, &label) in pred_fg.to_vec().iter().zip(&batch.labels) {
                correct += usize::from(usize::from(*margin > 0.0) == label);
            }
        }
        Ok(())
    })?;
    Ok(correct as f64 / idx.len() as f64)
}

/// The centres at the start: the study's `nn.Parameter(randn(2, 2))` (learned by SGD; docs/the-study.md, "Center-loss pretraining"), or
/// zeros for Wen et al.'s rule; on the feature the config pulls together.
fn initial_centers(cfg: &CenterLossConfig, head: &PretrainHead) -> Tensor {
    let dim = match cfg.center_feature {
        CenterFeature::Logits => 2,
        CenterFeature::Embedding => head.embedding_dim,
    };
    match cfg.center_update {
        CenterUpdate::Sgd => Tensor::randn([2, dim], cfg.seed ^ 0xC3_u64),
        CenterUpdate::Alpha => Tensor::zeros([2, dim]),
    }
    .with_requires_grad(cfg.center_update == CenterUpdate::Sgd && cfg.center_weight > 0.0)
}

/// What one epoch of a center-loss run works on.
struct EpochRun<'a> {
    model: &'a YoloX,
    head: &'a PretrainHead,
    centers: &'a Tensor,
    cfg: &'a CenterLossConfig,
    device: Device,
    schedule: &'a LrSchedule,
}

impl EpochRun<'_> {
    /// One epoch's steps over `order` (at most `steps` batches): the mean loss, the crops seen
    /// and the seconds it took (loader waits included).
    fn train(
        &self,
        data: &Arc<Vec<Crop>>,
        order: Vec<usize>,
        flip_seed: u64,
        (epoch, steps): (usize, usize),
        (opt_model, opt_head): (&mut Adam, &mut Adam),
        step_count: &mut u64,
    ) -> Result<(f64, usize, f64)> {
        let cfg = self.cfg;
        self.model.set_training(true);
        self.head.store.set_training(true);
        let sampling = CropSampling {
            size: cfg.input_size,
            norm: cfg.input_norm,
            flip: Some((flip_seed, cfg.hflip_prob)),
        };
        let batches = crop_batches(
            data,
            order,
            cfg.batch_size,
            Some(steps),
            sampling,
            cfg.workers,
        );
        let mut means = EpochMeans::new(1, self.device);
        let title = format!(
            "center-loss pretraining, epoch {}/{}",
            epoch + 1,
            cfg.epochs
        );
        let mut progress = crate::progress::Progress::new(steps as u64, &title);
        let (started, mut seen) = (Instant::now(), 0usize);
        for batch in batches {
            let batch = batch?;
            let shape = batch.shape();
            let x = Tensor::from_vec_on(batch.input, shape, self.device)?;
            let (loss, feature) =
                center_loss_step(self.model, self.head, self.centers, &x, &batch.labels, cfg)
                    .map_err(|e| {
                        e.with_gpu_memory_context(|| {
                            format!(
                                "center-loss step (batch {}, input {}, precision {:?})",
                                cfg.batch_size, cfg.input_size, cfg.precision
                            )
                        })
                    })?;
            step_pair(opt_model, opt_head, self.schedule.lr_at(*step_count) as f32)?;
            update_centers(self.centers, &feature, &batch.labels, cfg)?;
            means.push(&[&loss])?;
            *step_count += 1;
            progress.tick(1, means.progress_value()?, None);
            if progress.interrupted() {
                return Err(Error::Msg(format!(
                    "center-loss pretraining interrupted at epoch {}",
                    epoch + 1
                )));
            }
            seen += batch.labels.len();
        }
        let loss = means.means()?[0];
        progress.finish();
        Ok((loss, seen, started.elapsed().as_secs_f64()))
    }
}

/// The head's tensors and the centres, under the names checkpoints and states use.
fn head_and_centers(head: &PretrainHead, centers: &Tensor) -> Vec<(String, Tensor)> {
    head.store
        .entries()
        .into_iter()
        .map(|e| (e.name, e.tensor))
        .chain(std::iter::once((
            CENTERS_NAME.to_string(),
            centers.detach(),
        )))
        .collect()
}

/// Write the kept backbone with `extra` (head and centres) to `dir/center_loss_best.safetensors`.
fn write_checkpoint(
    model: &YoloX,
    extra: &[(String, Tensor)],
    out: Option<&std::path::Path>,
) -> Result<Option<PathBuf>> {
    let Some(dir) = out else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join("center_loss_best.safetensors");
    save_backbone_checkpoint(model, extra, &path)?;
    Ok(Some(path))
}

/// The centres' name in checkpoints and states.
const CENTERS_NAME: &str = "pretrain_head.centers";

/// Pretrain `model`'s backbone on fg/bg crops (see the module docs).
pub fn pretrain_center_loss(
    model: &YoloX,
    crops: &CropSet,
    cfg: &CenterLossConfig,
) -> Result<PretrainReport> {
    cfg.validate()?;
    let resume_from = state_to_resume(cfg.out.as_deref(), cfg.resume)?;
    if crops.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "center loss pretraining needs at least 2 crops, got {}",
            crops.len()
        )));
    }
    let data = Arc::new(crops.crops.clone());
    let (train_idx, val_idx) = seeded_split(data.len(), cfg.val_fraction, cfg.seed);
    let head = PretrainHead::new(
        cfg.head,
        model.config.width,
        cfg.input_size,
        (0, 0),
        Some(2),
        cfg.seed,
    )?;
    let centers = initial_centers(cfg, &head);
    let scope = DeviceScope::enter(&cfg.device_config(), &[&model.store, &head.store])?;
    let device = scope.device;
    centers.move_storage_to(device)?;
    let (mut opt_model, mut opt_head) = adam_pair(model, &head, cfg.weight_decay);
    let steps_per_epoch =
        super::steps_per_epoch(train_idx.len(), cfg.batch_size, cfg.max_steps_per_epoch);
    let schedule = cfg
        .schedule
        .build(cfg.lr, (steps_per_epoch * cfg.epochs) as u64);
    let mut rng = rng_for(cfg.seed, "pretrain/center_loss");
    let state = RunState {
        method: "center_loss",
        config: config_json(cfg)?,
        model,
        head: head_and_centers(&head, &centers),
    };
    let head_tensors: Vec<Tensor> = state.head.iter().map(|(_, t)| t.clone()).collect();
    // Restored on every exit, errors and interruptions included.
    let _momentum = model.store.bn_momentum_scope(cfg.bn_momentum);
    let mut report = PretrainReport::default();
    let mut best: Option<BestSnapshot> = None;
    let mut first_epoch = 0;
    if let Some(resumed) = state.resume_if(
        resume_from.as_deref(),
        [("model", &mut opt_model), ("head", &mut opt_head)],
        &mut rng,
    )? {
        (first_epoch, report, best) = (resumed.epochs_done, resumed.report, resumed.best);
    }
    let (mut seen, mut train_time) = (0usize, 0.0f64);
    let health_sources: Vec<_> = train_idx.iter().map(|&i| data[i].image.clone()).collect();
    let health = HealthWatch::start(
        model,
        cfg.health.as_ref(),
        &health_sources,
        ([cfg.input_size; 2], cfg.input_norm),
        device,
        "center loss",
    )?;
    for epoch in first_epoch..cfg.epochs {
        let mut order = train_idx.clone();
        order.shuffle(&mut rng);
        let run = EpochRun {
            model,
            head: &head,
            centers: &centers,
            cfg,
            device,
            schedule: &schedule,
        };
        let (loss, crops_seen, seconds) = run.train(
            &data,
            order,
            rng.random(),
            (epoch, steps_per_epoch),
            (&mut opt_model, &mut opt_head),
            &mut report.steps,
        )?;
        seen += crops_seen;
        train_time += seconds;
        let mut stats = EpochStats {
            epoch,
            loss,
            seconds,
            ..Default::default()
        };
        if !val_idx.is_empty() && ((epoch + 1) % cfg.eval_every == 0 || epoch + 1 == cfg.epochs) {
            let acc = accuracy(model, &head, &data, &val_idx, cfg, device)?;
            stats.accuracy = Some(acc);
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                best = Some((acc, epoch, snapshot(model, &head_tensors)));
            }
        }
        stats.images_seen = crops_seen;
        stats.health = health.after_epoch(model, epoch, &mut report)?;
        report.epochs.push(stats);
        state.save_epoch(
            cfg.out.as_deref(),
            [("model", &opt_model), ("head", &opt_head)],
            &report,
            &rng,
            best.as_ref(),
        )?;
    }
    if let Some((acc, epoch, values)) = best {
        restore(model, &head_tensors, &values)?;
        (report.best_accuracy, report.best_epoch) = (Some(acc), Some(epoch));
    }
    model.set_training(true);
    report.conclude(seen, train_time);
    let extra = head_and_centers(&head, &centers);
    report.checkpoint = write_checkpoint(model, &extra, cfg.out.as_deref())?;
    scope.leave()?;
    Ok(report)
}
