//! The detector training step (YOLOX trainer.py), top to bottom:
//! `model.forward` → `decode` → `simota + loss` → `backward` → `optimizer.step` → `ema.update`.
//! The epoch loop around it, with evaluation and the run folder's files, is `run.rs`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::{
    load_checkpoint, save_checkpoint, BestEval, CheckpointMeta, TrainProgress,
};
use super::config::TrainConfig;
use super::device_batch::DeviceBatch;
use super::ema::ModelEma;
use super::optim::{build_optimizer, Optimizer};
use super::schedule::LrSchedule;
use crate::data::augment::{AffineParams, AugmentConfig};
use crate::data::loader::{Batch, LoaderConfig};
use crate::detect::decode_boxes;
use crate::detect::loss::{yolox_loss, YoloxLossConfig};
use crate::detect::simota::SimOtaConfig;
use crate::detect::simota_stats::AssignmentStats;
use crate::models::YoloX;
use crate::tensor::Device;
use crate::{Error, Result};

/// Seconds spent in each stage of one step (the `ssod bench train` breakdown). On the GPU a stage's
/// time is its own only with [`DetectorTrainer::set_stage_times`] on (a wait for the GPU after
/// each stage); off, as in training, it is the host's time to queue the stage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StageTimes {
    /// Batch to tensors (and to the device) in [`DetectorTrainer::step`], forward and decode.
    /// Under [`DetectorTrainer::step_uploaded`] the batch came with the previous step, and the
    /// next batch's upload runs beside the backward (its host part hidden, its copy in
    /// `backward`).
    pub forward: f64,
    pub assign_and_loss: f64,
    pub backward: f64,
    pub optimizer: f64,
    pub ema: f64,
}

impl StageTimes {
    pub fn total(&self) -> f64 {
        self.forward + self.assign_and_loss + self.backward + self.optimizer + self.ema
    }
    pub fn add(&mut self, o: &StageTimes) {
        self.forward += o.forward;
        self.assign_and_loss += o.assign_and_loss;
        self.backward += o.backward;
        self.optimizer += o.optimizer;
        self.ema += o.ema;
    }
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepStats {
    pub loss: f32,
    pub iou: f32,
    pub obj: f32,
    pub cls: f32,
    pub l1: f32,
    pub num_fg: usize,
    pub num_gt: usize,
    /// What SimOTA did per object size in this step (`docs/simota-diagnostics.md`).
    pub assignment: AssignmentStats,
    pub lr: f64,
    pub images: usize,
    pub times: StageTimes,
}

/// The names of the loss parts in `metrics.csv`.
pub const LOSS_NAMES: [&str; 5] = ["total", "iou", "obj", "cls", "l1"];

/// A detector, its EMA copy, optimiser and schedule.
pub struct DetectorTrainer {
    pub config: TrainConfig,
    pub model: Arc<YoloX>,
    /// The EMA model (evaluated and checkpointed, as YOLOX) and its updater.
    pub ema: Option<(Arc<YoloX>, ModelEma)>,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
    pub loss: YoloxLossConfig,
    /// Optimiser steps taken.
    pub iteration: u64,
    /// Epochs completed.
    pub epoch: usize,
    /// The best evaluation so far (what `best.safetensors` holds).
    pub best: Option<BestEval>,
    /// Where the model, its EMA copy and each batch live ([`DetectorTrainer::to_device`]).
    device: Device,
    /// Wait for the GPU at the end of each stage ([`Self::set_stage_times`]).
    stage_times: bool,
}

impl DetectorTrainer {
    pub fn new(model: Arc<YoloX>, config: TrainConfig, iters_per_epoch: u64) -> Result<Self> {
        config.validate()?;
        let ema = if config.ema {
            let ema_model = Arc::new(YoloX::new(model.config.clone())?);
            let updater = ModelEma::new(
                &model.store,
                ema_model.store.clone(),
                config.ema_decay,
                config.ema_tau,
            )?;
            Some((ema_model, updater))
        } else {
            None
        };
        let optimizer = build_optimizer(&config, &model.store);
        let schedule = LrSchedule::from_config(&config, iters_per_epoch.max(1))?;
        let loss = YoloxLossConfig {
            box_loss: config.box_loss,
            use_l1: false,
            reg_weight: 5.0,
            simota: SimOtaConfig {
                mode: config.simota_mode,
                center_radius: config.center_radius as f32,
            },
        };
        Ok(DetectorTrainer {
            config,
            model,
            ema,
            optimizer,
            schedule,
            loss,
            iteration: 0,
            epoch: 0,
            best: None,
            device: Device::Cpu,
            stage_times: false,
        })
    }

    /// Move the model and its EMA copy to `device`; batches follow in [`Self::step`].
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if device == Device::Cuda {
            self.config
                .precision
                .configure_cuda(self.config.conv_algorithm)?;
        }
        self.model.store.to_device(device)?;
        if let Some((m, _)) = &self.ema {
            m.store.to_device(device)?;
        }
        self.device = device;
        Ok(())
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The learning rate of the next step (the one a `metrics.csv` row reports).
    pub fn lr_at_iteration(&self) -> f64 {
        self.schedule.lr_at(self.iteration)
    }

    /// The model evaluation and checkpoints use (the EMA one when EMA is on).
    pub fn eval_model(&self) -> &Arc<YoloX> {
        self.ema.as_ref().map(|(m, _)| m).unwrap_or(&self.model)
    }

    /// Copy the evaluated (EMA) weights into the trained model, as YOLOX hands its EMA model
    /// to evaluation and to every saved checkpoint: afterwards the model the user holds is the
    /// one whose metrics were measured. Nothing to do without EMA.
    pub fn adopt_eval_weights(&self) -> Result<()> {
        let Some((ema_model, _)) = &self.ema else {
            return Ok(());
        };
        for (to, from) in self
            .model
            .store
            .entries()
            .iter()
            .zip(ema_model.store.entries())
        {
            debug_assert_eq!(to.name, from.name);
            to.tensor.copy_values_from(&from.tensor.to_vec())?;
        }
        Ok(())
    }

    /// One optimiser step on one batch.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats> {
        // The upload counts as forward here (nothing runs beside it).
        let t = Instant::now();
        let batch = self.upload(batch)?;
        let upload = t.elapsed().as_secs_f64();
        let (mut stats, _) = self.step_uploaded(batch, None)?;
        stats.times.forward += upload;
        Ok(stats)
    }

    /// `batch` on this trainer's device, for [`Self::step_uploaded`].
    pub fn upload(&self, batch: &Batch) -> Result<DeviceBatch> {
        DeviceBatch::new(batch, self.device)
    }

    /// Whether each step waits for the GPU at the end of every stage, so that [`StageTimes`]
    /// times the stages' kernels (`ssod bench train`). Off by default: training then lets the
    /// host queue the next stage while the GPU runs this one (kernels run asynchronously), and
    /// the step waits only where it reads a result (the loss's assignments, the loss value).
    pub fn set_stage_times(&mut self, on: bool) {
        self.stage_times = on;
    }

    /// The end of a stage: a wait for the GPU when stages are timed.
    fn end_stage(&self) -> Result<()> {
        match (self.stage_times, self.device) {
            (true, Device::Cuda) => crate::backend::cuda::device()?.synchronize(),
            _ => Ok(()),
        }
    }

    /// One step on a batch already uploaded, and `next` uploaded while the GPU runs this
    /// step's backward (returned for the next call): the host's share of an upload (filling
    /// the pinned staging buffer) then no longer leaves the GPU idle at the start of a step,
    /// as YOLOX's data prefetcher arranges for PyTorch. The same arithmetic as [`Self::step`].
    pub fn step_uploaded(
        &mut self,
        batch: DeviceBatch,
        next: Option<&Batch>,
    ) -> Result<(StepStats, Option<DeviceBatch>)> {
        let (n, h, w) = (batch.images.dims()[0], batch.height, batch.width);
        let precision = self.config.precision;
        self.step_uploaded_inner(batch, next).map_err(|e| {
            e.with_gpu_memory_context(|| {
                format!("training step (batch {n}, input {h}x{w}, precision {precision:?})")
            })
        })
    }

    fn step_uploaded_inner(
        &mut self,
        batch: DeviceBatch,
        next: Option<&Batch>,
    ) -> Result<(StepStats, Option<DeviceBatch>)> {
        let mut times = StageTimes::default();
        let t = Instant::now();
        let DeviceBatch {
            images,
            targets,
            height,
            width,
        } = batch;
        let count = targets.len();
        let grid = YoloX::anchor_grid(height, width);
        self.model.set_training(true);

        let raw = self.model.forward(&images)?; // [B, A, 5 + C]
        let decoded = decode_boxes(&raw, &grid)?; // [B, A, 4] cxcywh
        self.end_stage()?;
        times.forward = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let loss = yolox_loss(&raw, &decoded, &grid, &targets, &self.loss)?;
        self.end_stage()?;
        times.assign_and_loss = t.elapsed().as_secs_f64();

        let t = Instant::now();
        self.optimizer.zero_grad();
        loss.total.backward()?;
        // The backward's kernels are queued: the next batch's upload goes beside them.
        let next = next.map(|b| self.upload(b)).transpose()?;
        self.end_stage()?;
        times.backward = t.elapsed().as_secs_f64();

        // YOLOX sets the lr for step i + 1 after step i: the first step runs at warmup_lr.
        let lr = self.schedule.lr_at(self.iteration);
        let t = Instant::now();
        self.optimizer.step(lr as f32)?;
        self.end_stage()?;
        times.optimizer = t.elapsed().as_secs_f64();

        let t = Instant::now();
        if let Some((_, ema)) = &mut self.ema {
            ema.update(&self.model.store)?;
        }
        self.end_stage()?;
        times.ema = t.elapsed().as_secs_f64();
        self.iteration += 1;

        let total = loss.total.item()?;
        if !total.is_finite() {
            return Err(Error::Msg(format!(
                "training diverged at iteration {}: loss is {total} (iou {}, obj {}, cls {}); lower the learning rate",
                self.iteration, loss.iou, loss.obj, loss.cls
            )));
        }
        let stats = StepStats {
            loss: total,
            iou: loss.iou,
            obj: loss.obj,
            cls: loss.cls,
            l1: loss.l1,
            num_fg: loss.num_fg,
            num_gt: loss.num_gt,
            assignment: loss.assignment_stats,
            lr,
            images: count,
            times,
        };
        Ok((stats, next))
    }

    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        save_checkpoint(
            path,
            &self.model.store,
            self.ema.as_ref().map(|(_, e)| e),
            self.optimizer.as_ref(),
            TrainProgress {
                epoch: self.epoch,
                iteration: self.iteration,
                best: self.best,
            },
            &self.config,
        )
    }

    /// Restore weights, EMA, optimiser state and progress from a checkpoint.
    pub fn resume(&mut self, path: &Path) -> Result<CheckpointMeta> {
        let meta = load_checkpoint(
            path,
            &self.model.store,
            self.ema.as_mut().map(|(_, e)| e),
            self.optimizer.as_mut(),
        )?;
        self.epoch = meta.progress.epoch;
        self.iteration = meta.progress.iteration;
        self.best = meta.progress.best;
        Ok(meta)
    }
}

/// The loader's augmentation from a training config (yolox_base.py transform config).
pub fn augment_config(cfg: &TrainConfig, no_aug: bool) -> AugmentConfig {
    let (h, w) = cfg.input_size;
    let aug = AugmentConfig {
        input_w: w as u32,
        input_h: h as u32,
        mosaic_prob: cfg.mosaic_prob as f32,
        mixup_prob: if cfg.enable_mixup {
            cfg.mixup_prob as f32
        } else {
            0.0
        },
        hsv_prob: cfg.hsv_prob as f32,
        flip_prob: cfg.flip_prob as f32,
        affine: AffineParams {
            degrees: cfg.degrees as f32,
            translate: cfg.translate as f32,
            scale: (cfg.mosaic_scale.0 as f32, cfg.mosaic_scale.1 as f32),
            shear: cfg.shear as f32,
        },
        mixup_scale: (cfg.mixup_scale.0 as f32, cfg.mixup_scale.1 as f32),
        hsv_gains: [5.0, 30.0, 30.0],
        min_box_side: 1.0,
    };
    if no_aug {
        aug.no_mosaic()
    } else {
        aug
    }
}

/// Loader settings from a training config.
pub fn loader_config(cfg: &TrainConfig, no_aug: bool, workers: usize, cache: bool) -> LoaderConfig {
    let mut lc = LoaderConfig::new(cfg.batch_size, augment_config(cfg, no_aug));
    lc.seed = cfg.seed;
    lc.workers = workers.max(1);
    lc.cache = cache;
    lc.skip_bad_images = cfg.skip_bad_images;
    // Multiscale unless the draw range is just the input size (YOLOX: 32·randint(lo, hi)).
    let (lo, hi) = (cfg.multiscale_units().0.max(1), cfg.multiscale_units().1);
    let fixed = cfg.input_size.0 / 32;
    lc.multiscale = (!(lo == fixed && hi <= fixed)).then(|| (lo as u32, hi.max(lo) as u32));
    lc.multiscale_every = cfg.multiscale_interval.max(1);
    lc
}
