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

use super::data::{seeded_split, Crop, CropSet, InputNorm};
use super::device::{DeviceConfig, DeviceScope, EpochMeans};
use super::heads::{HeadKind, PretrainHead};
use super::loader::{crop_batches, CropSampling};
use super::state::{config_json, state_to_resume, BestSnapshot, RunState, STATE_FILE};
use super::transfer::{restore, save_backbone_checkpoint, snapshot};
use super::{adam_pair, check_positive, step_pair, EpochStats, PretrainReport, PretrainSchedule};
use crate::autograd::no_grad;
use crate::models::YoloX;
use crate::ops;
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::train::config::Precision;
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

/// `L_c = (1/B) Σ_i ‖f_i − c_{y_i}‖²` for `features [B, D]`, class ids `labels`, `centers [C, D]`.
/// Differentiable in both features and centres. (The study computed it as a clamped distance
/// matrix masked to the own class; the (C−1) masked entries each add 1e-12, ignored here.)
pub fn center_loss(features: &Tensor, labels: &[usize], centers: &Tensor) -> Result<Tensor> {
    if features.rank() != 2
        || centers.rank() != 2
        || features.dims()[1] != centers.dims()[1]
        || labels.len() != features.dims()[0]
        || labels.is_empty()
    {
        return Err(Error::shape(
            "center_loss",
            "features [B, D], B labels, centers [C, D]",
            (features.shape(), labels.len(), centers.shape()),
        ));
    }
    let ids = Tensor::from_vec(labels.iter().map(|&l| l as f32).collect(), [labels.len()])?;
    let picked = ops::index_select(centers, 0, &ids)?; // [B, D]
    let diff = ops::sub(features, &picked)?;
    let sq = ops::mul(&diff, &diff)?;
    ops::div_scalar(&ops::sum_all(&sq)?, labels.len() as f32)
}

/// Wen et al.'s centre update in place: `c_j −= α · Σ_{y_i=j}(c_j − f_i) / (1 + n_j)`.
/// Centres on CUDA are updated there, with ops ([`wen_center_update_with_ops`]).
pub fn wen_center_update(
    centers: &Tensor,
    features: &Tensor,
    labels: &[usize],
    alpha: f32,
) -> Result<()> {
    if centers.is_cuda() {
        return wen_center_update_with_ops(centers, features, labels, alpha);
    }
    let d = centers.dims()[1];
    let f = features.to_vec();
    let c = centers.to_vec();
    let classes = centers.dims()[0];
    let mut delta = vec![0f32; classes * d];
    let mut count = vec![0usize; classes];
    for (i, &y) in labels.iter().enumerate() {
        count[y] += 1;
        for k in 0..d {
            delta[y * d + k] += c[y * d + k] - f[i * d + k];
        }
    }
    centers.update_values(|v| {
        for j in 0..classes {
            for k in 0..d {
                v[j * d + k] -= alpha * delta[j * d + k] / (1 + count[j]) as f32;
            }
        }
    })
}

/// Wen et al.'s update with ops, where the tensors live: with the one-hot `M [C, B]` of the
/// labels, `Δc = n ⊙ c − M·f` and `c ← c − α·Δc / (1 + n)`.
pub fn wen_center_update_with_ops(
    centers: &Tensor,
    features: &Tensor,
    labels: &[usize],
    alpha: f32,
) -> Result<()> {
    let (classes, b) = (centers.dims()[0], labels.len());
    let mut one_hot = vec![0f32; classes * b];
    let mut count = vec![0f32; classes];
    for (i, &y) in labels.iter().enumerate() {
        one_hot[y * b + i] = 1.0;
        count[y] += 1.0;
    }
    let step: Vec<f32> = count.iter().map(|n| alpha / (1.0 + n)).collect();
    let updated = no_grad(|| -> Result<Tensor> {
        let c = centers.detach();
        let m = Tensor::from_vec(one_hot, [classes, b])?;
        let n = Tensor::from_vec(count, [classes, 1])?;
        let delta = ops::sub(&ops::mul(&c, &n)?, &ops::matmul(&m, &features.detach())?)?;
        let scale = Tensor::from_vec(step, [classes, 1])?;
        ops::sub(&c, &ops::mul(&delta, &scale)?)
    })?;
    centers.assign(&updated)
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

/// The centres' step after [`center_loss_step`]: SGD on their gradient (the study) or Wen et
/// al.'s rule on the step's features, where the centres live.
pub fn update_centers(
    centers: &Tensor,
    feature: &Tensor,
    labels: &[usize],
    cfg: &CenterLossConfig,
) -> Result<()> {
    if cfg.center_weight <= 0.0 {
        return Ok(());
    }
    match cfg.center_update {
        CenterUpdate::Sgd => {
            // The study: SGD(center_loss.parameters(), lr=0.5), no momentum: c ← c − lr·g.
            if let Some(g) = centers.grad() {
                let lr = cfg.center_lr as f32;
                let updated = no_grad(|| ops::sub(&centers.detach(), &ops::mul_scalar(&g, lr)?))?;
                centers.assign(&updated)?;
            }
            centers.zero_grad();
            Ok(())
        }
        CenterUpdate::Alpha => wen_center_update(centers, feature, labels, cfg.center_alpha as f32),
    }
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
            let x = Tensor::from_vec_on(batch.input.clone(), batch.shape(), device)?;
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
    let center_dim = match cfg.center_feature {
        CenterFeature::Logits => 2,
        CenterFeature::Embedding => head.embedding_dim,
    };
    // The study: `nn.Parameter(randn(2, 2))`; Wen et al. start from zeros.
    let centers = match cfg.center_update {
        CenterUpdate::Sgd => Tensor::randn([2, center_dim], cfg.seed ^ 0xC3_u64),
        CenterUpdate::Alpha => Tensor::zeros([2, center_dim]),
    }
    .with_requires_grad(cfg.center_update == CenterUpdate::Sgd && cfg.center_weight > 0.0);
    let scope = DeviceScope::enter(&cfg.device_config(), &[&model.store, &head.store])?;
    let device = scope.device;
    centers.move_storage_to(device)?;
    let (mut opt_model, mut opt_head) = adam_pair(model, &head, cfg.weight_decay);
    let steps_per_epoch = train_idx.len().div_ceil(cfg.batch_size);
    let steps_per_epoch = cfg
        .max_steps_per_epoch
        .map_or(steps_per_epoch, |m| m.min(steps_per_epoch));
    let schedule = cfg
        .schedule
        .build(cfg.lr, (steps_per_epoch * cfg.epochs) as u64);
    let mut rng = rng_for(cfg.seed, "pretrain/center_loss");
    let state = RunState {
        method: "center_loss",
        config: config_json(cfg)?,
        model,
        head: head
            .store
            .entries()
            .into_iter()
            .map(|e| (e.name, e.tensor))
            .chain(std::iter::once((CENTERS_NAME.to_string(), centers.clone())))
            .collect(),
    };
    let head_tensors: Vec<Tensor> = state.head.iter().map(|(_, t)| t.clone()).collect();
    // Restored on every exit, errors and interruptions included.
    let _momentum = model.store.bn_momentum_scope(cfg.bn_momentum);
    let mut report = PretrainReport::default();
    let mut best: Option<BestSnapshot> = None;
    let mut first_epoch = 0;
    if let Some(path) = &resume_from {
        let resumed = state.resume(
            path,
            [("model", &mut opt_model), ("head", &mut opt_head)],
            &mut rng,
        )?;
        println!(
            "resuming center-loss pretraining {} after epoch {}",
            path.display(),
            resumed.epochs_done
        );
        (first_epoch, report, best) = (resumed.epochs_done, resumed.report, resumed.best);
    }
    let mut seen = 0usize;
    let mut train_time = 0.0f64;
    for epoch in first_epoch..cfg.epochs {
        model.set_training(true);
        head.store.set_training(true);
        let mut order = train_idx.clone();
        order.shuffle(&mut rng);
        let sampling = CropSampling {
            size: cfg.input_size,
            norm: cfg.input_norm,
            flip: Some((rng.random(), cfg.hflip_prob)),
        };
        let batches = crop_batches(
            &data,
            order,
            cfg.batch_size,
            Some(steps_per_epoch),
            sampling,
            cfg.workers,
        );
        let mut means = EpochMeans::new(1, device);
        let mut progress = crate::progress::Progress::new(
            steps_per_epoch as u64,
            &format!(
                "center-loss pretraining, epoch {}/{}",
                epoch + 1,
                cfg.epochs
            ),
        );
        let started = Instant::now();
        for batch in batches {
            let batch = batch?;
            let x = Tensor::from_vec_on(
                batch.input,
                [batch.labels.len(), 3, batch.size, batch.size],
                device,
            )?;
            let (loss, feature) = center_loss_step(model, &head, &centers, &x, &batch.labels, cfg)
                .map_err(|e| {
                    e.with_gpu_memory_context(|| {
                        format!(
                            "center-loss step (batch {}, input {}, precision {:?})",
                            cfg.batch_size, cfg.input_size, cfg.precision
                        )
                    })
                })?;
            let lr = schedule.lr_at(report.steps) as f32;
            step_pair(&mut opt_model, &mut opt_head, lr)?;
            update_centers(&centers, &feature, &batch.labels, cfg)?;
            means.push(&[&loss])?;
            report.steps += 1;
            progress.tick(1, means.progress_value()?, None);
            if progress.interrupted() {
                return Err(crate::Error::Msg(format!(
                    "center-loss pretraining interrupted at epoch {}",
                    epoch + 1
                )));
            }
            seen += batch.labels.len();
        }
        let loss = means.means()?[0];
        progress.finish();
        let seconds = started.elapsed().as_secs_f64();
        train_time += seconds;
        let mut stats = EpochStats {
            epoch,
            loss,
            seconds,
            ..Default::default()
        };
        let last = epoch + 1 == cfg.epochs;
        if !val_idx.is_empty() && ((epoch + 1) % cfg.eval_every == 0 || last) {
            let acc = accuracy(model, &head, &data, &val_idx, cfg, device)?;
            stats.accuracy = Some(acc);
            if best.as_ref().is_none_or(|(b, _, _)| acc > *b) {
                best = Some((acc, epoch, snapshot(model, &head_tensors)));
            }
        }
        report.epochs.push(stats);
        if let Some(dir) = &cfg.out {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            state.save(
                &dir.join(STATE_FILE),
                [("model", &opt_model), ("head", &opt_head)],
                &report,
                &rng,
                best.as_ref(),
            )?;
        }
    }
    if let Some((acc, epoch, values)) = best {
        restore(model, &head_tensors, &values)?;
        report.best_accuracy = Some(acc);
        report.best_epoch = Some(epoch);
    }
    model.set_training(true);
    report.samples_per_s = seen as f64 / train_time.max(1e-9);
    if let Some(dir) = &cfg.out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join("center_loss_best.safetensors");
        let mut extra: Vec<(String, Tensor)> = head
            .store
            .entries()
            .into_iter()
            .map(|e| (e.name, e.tensor))
            .collect();
        extra.push((CENTERS_NAME.into(), centers.detach()));
        save_backbone_checkpoint(model, &extra, &path)?;
        report.checkpoint = Some(path);
    }
    scope.leave()?;
    Ok(report)
}
