//! The run loop every self-supervised method shares: a method says what a batch is and what one
//! step computes ([`SslMethod`]); [`run_ssl`] does the rest the same way for all of them:
//!
//! - the device scope (the model's and the method's stores moved to `device` and back),
//! - Adam on the model and Adam on the method's head (the weight decay on weights only),
//! - the learning-rate schedule over all steps,
//! - the epoch order (a shuffle from the run's stream) and the streaming loader: batches built
//!   by `workers` threads a window ahead ([`crate::data::prefetch`]), every random draw of the
//!   batch at position `p` keyed by `(epoch_seed, p)`, so any number of workers gives the same
//!   batches,
//! - after every epoch: the embedding health (`health.rs`, its own random draws), the state for
//!   resume (`state.rs`), `epochs.csv` and `loss.png` (`run_files.rs`),
//! - at the end: `<method>_last.safetensors` (backbone + the method's extra tensors) and the
//!   [`PretrainReport`].

use std::sync::Arc;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::Rng;

use super::config::SslCommon;
use crate::data::prefetch::Prefetch;
use crate::models::YoloX;
use crate::nn::ParamStore;
use crate::pretrain::data::{ImageSource, InputNorm};
use crate::pretrain::device::{DeviceScope, EpochMeans};
use crate::pretrain::health::HealthWatch;
use crate::pretrain::state::{state_to_resume, RunState};
use crate::pretrain::transfer::save_backbone_checkpoint;
use crate::pretrain::{step_pair, EpochStats, PretrainReport};
use crate::rng::rng_for;
use crate::tensor::{Device, Tensor};
use crate::train::optim::Adam;
use crate::{Error, Result};

/// Builds the batch of the epoch positions `first..first + items.len()` (the items at those
/// positions of the epoch's order) on a loader thread. Every random draw must come from
/// `rng_for(epoch_seed, "<what>/<position>")` so the batch does not depend on the thread.
pub type BatchBuilder<B> = Arc<dyn Fn(usize, &[usize]) -> Result<B> + Send + Sync>;

/// What one self-supervised method adds to the shared run loop ([`run_ssl`]).
///
/// An implementation holds its head (projector, predictor, ...) in one [`ParamStore`] and its
/// training data (behind `Arc`s, as the loader threads share it). The loop calls, per run:
/// [`SslMethod::head_store`] (moved to the device, optimised, saved), [`SslMethod::items`]
/// (what an epoch shuffles); per epoch: [`SslMethod::batch_builder`]; per step:
/// [`SslMethod::step`]. It never calls backward itself: `step` does.
pub trait SslMethod {
    /// The input of one step, built on a loader thread.
    type Batch: Send + 'static;

    /// `simsiam`, `temporal`, ...: the state's method (a state resumes only its own method),
    /// the checkpoint's name `<name>_last.safetensors` and the progress line.
    fn name(&self) -> &'static str;

    /// The method's trainable tensors besides the model (projector, predictor, ...), in one
    /// store: moved to the run's device, optimised by their own Adam, kept in the state.
    fn head_store(&self) -> &ParamStore;

    /// How many items an epoch shuffles and cuts into batches (images, anchor frames).
    fn items(&self) -> usize;

    /// Images one item puts through the network (2 for two views), for `images_seen`.
    fn images_per_item(&self) -> usize {
        1
    }

    /// The images the health check samples (the training images).
    fn health_images(&self) -> Arc<Vec<ImageSource>>;

    /// The input convention of the batches (the health check feeds the backbone the same).
    fn input_norm(&self) -> InputNorm {
        InputNorm::Bgr255
    }

    /// The batch builder of an epoch whose draws are keyed by `epoch_seed` (see
    /// [`BatchBuilder`]).
    fn batch_builder(&self, epoch_seed: u64) -> BatchBuilder<Self::Batch>;

    /// One step's forward and backward on `batch` (upload it to `device`; the stores are
    /// there): returns the loss, a one-element tensor on `device`. The loop then steps both
    /// optimisers and zeroes the gradients. The model and the head are in training mode.
    fn step(&mut self, model: &YoloX, batch: Self::Batch, device: Device) -> Result<Tensor>;

    /// Tensors written into the checkpoint besides the backbone (default: the head's, under
    /// their names); a method that pretrains the neck adds its tensors here.
    fn checkpoint_extra(&self, _model: &YoloX) -> Vec<(String, Tensor)> {
        store_entries(self.head_store())
    }
}

/// A store's tensors under their names (checkpoints, states).
pub fn store_entries(store: &ParamStore) -> Vec<(String, Tensor)> {
    store
        .entries()
        .into_iter()
        .map(|e| (e.name, e.tensor))
        .collect()
}

/// What the loop keeps between epochs.
struct Loop<'a> {
    model: &'a YoloX,
    common: &'a SslCommon,
    device: Device,
    schedule: crate::train::schedule::LrSchedule,
    steps_per_epoch: usize,
}

/// One epoch's steps: (mean loss, seconds, items consumed).
fn train_epoch<M: SslMethod>(
    lp: &Loop,
    method: &mut M,
    batches: Prefetch<Result<M::Batch>>,
    epoch: usize,
    (opt_model, opt_head): (&mut Adam, &mut Adam),
    steps: &mut u64,
) -> Result<(f64, f64, usize)> {
    let cfg = lp.common;
    let mut means = EpochMeans::new(1, lp.device);
    let title = format!("{}, epoch {}/{}", method.name(), epoch + 1, cfg.epochs);
    let mut progress = crate::progress::Progress::new(lp.steps_per_epoch as u64, &title);
    let started = Instant::now();
    let mut batches_done = 0usize;
    for batch in batches {
        let loss = method.step(lp.model, batch?, lp.device).map_err(|e| {
            e.with_gpu_memory_context(|| {
                format!(
                    "{} step (batch {}, image {:?}, precision {:?})",
                    method.name(),
                    cfg.batch_size,
                    cfg.image_size,
                    cfg.precision
                )
            })
        })?;
        if loss.numel() != 1 {
            return Err(Error::op(
                method.name(),
                format!("the step returned a loss of shape {}", loss.shape()),
            ));
        }
        step_pair(opt_model, opt_head, lp.schedule.lr_at(*steps) as f32)?;
        means.push(&[&loss])?;
        *steps += 1;
        batches_done += 1;
        progress.tick(1, means.progress_value()?, None);
        if progress.interrupted() {
            return Err(Error::Msg(format!(
                "{} interrupted at epoch {}",
                method.name(),
                epoch + 1
            )));
        }
    }
    let loss = means.means()?[0];
    progress.finish();
    if !loss.is_finite() {
        return Err(Error::Msg(format!(
            "{}: the loss of epoch {} is {loss} (lower `lr`?)",
            method.name(),
            epoch + 1
        )));
    }
    let items = (batches_done * cfg.batch_size).min(method.items());
    Ok((loss, started.elapsed().as_secs_f64(), items))
}

/// Run `method` on `model`'s backbone (see the module docs). `config` is the method's full
/// config as JSON (a resumed run must have the same, but for `epochs` and the free keys).
pub fn run_ssl<M: SslMethod>(
    model: &YoloX,
    method: &mut M,
    common: &SslCommon,
    config: serde_json::Value,
) -> Result<PretrainReport> {
    common.validate()?;
    let resume_from = state_to_resume(common.out.as_deref(), common.resume)?;
    if method.items() == 0 {
        return Err(Error::InvalidArgument(format!(
            "{} needs at least one training image",
            method.name()
        )));
    }
    let head = method.head_store().clone();
    let scope = DeviceScope::enter(&common.device_config(), &[&model.store, &head])?;
    let wd = common.weight_decay as f32;
    let mut opt_model = Adam::new(&model.store, 0.9, 0.999, 1e-8, wd);
    let mut opt_head = Adam::new(&head, 0.9, 0.999, 1e-8, wd);
    let steps_per_epoch = crate::pretrain::steps_per_epoch(
        method.items(),
        common.batch_size,
        common.max_steps_per_epoch,
    );
    let lp = Loop {
        model,
        common,
        device: scope.device,
        schedule: common
            .schedule
            .build(common.lr, (steps_per_epoch * common.epochs) as u64),
        steps_per_epoch,
    };
    model.set_training(true);
    head.set_training(true);
    let mut rng = rng_for(common.seed, &format!("pretrain/{}", method.name()));
    let state = RunState {
        method: method.name(),
        config,
        model,
        head: store_entries(&head),
    };
    let mut report = PretrainReport::default();
    let mut first_epoch = 0;
    if let Some(resumed) = state.resume_if(
        resume_from.as_deref(),
        [("model", &mut opt_model), ("head", &mut opt_head)],
        &mut rng,
    )? {
        (first_epoch, report) = (resumed.epochs_done, resumed.report);
    }
    let health_sources = method.health_images();
    let health = HealthWatch::start(
        model,
        common.health.as_ref(),
        &health_sources,
        (common.image_size, method.input_norm()),
        lp.device,
        method.name(),
    )?;
    let (mut images_seen, mut train_time) = (0usize, 0.0f64);
    for epoch in first_epoch..common.epochs {
        let mut order: Vec<usize> = (0..method.items()).collect();
        order.shuffle(&mut rng);
        let batches = epoch_batches(method.batch_builder(rng.random()), order, &lp);
        let (loss, seconds, items) = train_epoch(
            &lp,
            method,
            batches,
            epoch,
            (&mut opt_model, &mut opt_head),
            &mut report.steps,
        )?;
        let seen = items * method.images_per_item();
        (images_seen, train_time) = (images_seen + seen, train_time + seconds);
        let epoch_health = health.after_epoch(model, epoch, &mut report)?;
        model.set_training(true);
        report.epochs.push(EpochStats {
            epoch,
            loss,
            seconds,
            images_seen: seen,
            health: epoch_health,
            ..Default::default()
        });
        state.save_epoch(
            common.out.as_deref(),
            [("model", &opt_model), ("head", &opt_head)],
            &report,
            &rng,
            None,
        )?;
    }
    report.best_epoch = report.epochs.last().map(|e| e.epoch);
    report.conclude(images_seen, train_time);
    if let Some(dir) = &common.out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(format!("{}_last.safetensors", method.name()));
        save_backbone_checkpoint(model, &method.checkpoint_extra(model), &path)?;
        report.checkpoint = Some(path);
    }
    scope.leave()?;
    Ok(report)
}

/// The epoch's batches over `order`, built by the method's builder on the loader's threads.
fn epoch_batches<B: Send + 'static>(
    build: BatchBuilder<B>,
    order: Vec<usize>,
    lp: &Loop,
) -> Prefetch<Result<B>> {
    let bs = lp.common.batch_size;
    let n = lp.steps_per_epoch;
    let workers = lp.common.workers;
    Prefetch::start(n, workers, workers + 1, move |b| {
        let range = b * bs..((b + 1) * bs).min(order.len());
        build(range.start, &order[range])
    })
}
