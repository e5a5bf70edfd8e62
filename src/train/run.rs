//! A training run (YOLOX trainer.py `train`): the epoch loop around [`DetectorTrainer::step`],
//! evaluation, and the run folder's files, top to bottom per epoch:
//! batches → steps → (on evaluation epochs) `evaluate` on the EMA model → `metrics.csv` row →
//! model weights (`last`, `best`, `epoch_N`) → the training state (the point a resume starts
//! from, written last so that every file it implies exists).
//!
//! The run folder ([`RunFiles`]):
//! - `last.ckpt.safetensors`: the training state (`model.*`, `ema.*`, `optim.*`, progress and
//!   recipe; `checkpoint.rs`), what `resume` reads;
//! - `last.safetensors`, `best.safetensors` (highest AP 0.5:0.95 on the validation set, YOLOX's
//!   rule), `epoch_N.safetensors` (every evaluation epoch, with `save_history_ckpt`): model-only,
//!   official names, the evaluated weights (EMA when on), for `load`, `load_backbone`,
//!   `ssod detect --weights` and PyTorch YOLOX;
//! - `metrics.csv`: one row per epoch (metric columns filled on evaluation epochs);
//!   `results.png`, every curve of it; `pr_curve.png`, the final evaluation's PR curves;
//! - `simota.csv`: what the label assignment did per object size, one row per epoch and size
//!   bucket (`eval::simota_csv`, `docs/simota-diagnostics.md`); `simota.png`, its shares.
//!
//! Every file is written to a temporary name and renamed, so a killed process leaves the
//! previous version loadable; a resumed run drops the `metrics.csv` rows written after its
//! checkpoint and ends with the same files, bit for bit, as a run that was never interrupted
//! (docs/faults.md). An unreadable training image stops the run with an error naming it, or
//! is skipped and counted with `skip_bad_images`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::checkpoint::BestEval;
use super::config::TrainConfig;
use super::evaluate::evaluate_detector;
use super::resume::{resume_source, resume_trainer};
use super::trainer::{loader_config, DetectorTrainer, LOSS_NAMES};
use crate::data::dataset::CocoDataset;
use crate::data::loader::Loader;
use crate::detect::simota_stats::AssignmentStats;
use crate::eval::coco::{MaxDets, Metrics};
use crate::eval::metrics_csv::{read_metrics_csv, MetricsCsv, MetricsRow};
use crate::eval::plots::{plot_pr_curves, plot_training_curves};
use crate::eval::simota_csv::{read_simota_csv, simota_table_text, SimotaCsv, SimotaRow};
use crate::eval::simota_plot::plot_simota_run;
use crate::models::YoloX;
use crate::progress::Progress;
use crate::tensor::Device;
use crate::{Error, Result};

/// Where a run continues from.
#[derive(Clone, Debug, PartialEq)]
pub enum Resume {
    /// The run folder's own training state (`out/last.ckpt.safetensors`); an error if absent.
    RunFolder,
    /// The run folder's training state when there is one, else a fresh start (an ablation
    /// point that an interrupted process left half done).
    RunFolderIfPresent,
    /// A training state elsewhere (its metrics.csv rows are not carried over).
    From(PathBuf),
}

/// Options of a training run that are not part of the recipe.
#[derive(Clone, Debug)]
pub struct TrainRunOptions {
    /// Folder for `metrics.csv`, checkpoints and plots (must exist or be creatable).
    pub out_dir: PathBuf,
    pub workers: usize,
    pub cache: bool,
    /// Continue an earlier run; without it, a folder that already holds a run is an error.
    pub resume: Option<Resume>,
    /// Recipe keys allowed to differ from the checkpoint's when resuming (the run's values
    /// win). `max_epoch` may always be raised, to extend a run.
    pub resume_override: Vec<String>,
    /// Show per-iteration progress (a bar on a terminal, a line every `print_interval`
    /// iterations otherwise) and one line per epoch.
    pub verbose: bool,
    /// Where the model trains (it stays there afterwards; evaluation follows it).
    pub device: Device,
}

/// The files of a run folder.
#[derive(Clone, Debug)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn new(dir: &Path) -> Self {
        RunFiles {
            dir: dir.to_path_buf(),
        }
    }
    /// The training state a resume reads.
    pub fn training_state(&self) -> PathBuf {
        self.dir.join("last.ckpt.safetensors")
    }
    pub fn last_weights(&self) -> PathBuf {
        self.dir.join("last.safetensors")
    }
    pub fn best_weights(&self) -> PathBuf {
        self.dir.join("best.safetensors")
    }
    /// The weights after `epoch` epochs (1-based, as YOLOX's `epoch_N_ckpt.pth`).
    pub fn epoch_weights(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch_{epoch}.safetensors"))
    }
    pub fn metrics_csv(&self) -> PathBuf {
        self.dir.join("metrics.csv")
    }
    /// Every curve of `metrics.csv` against epoch.
    pub fn results_png(&self) -> PathBuf {
        self.dir.join("results.png")
    }
    /// Precision-recall curves of the final evaluation.
    pub fn pr_curve_png(&self) -> PathBuf {
        self.dir.join("pr_curve.png")
    }
    /// The label assignment per object size and epoch.
    pub fn simota_csv(&self) -> PathBuf {
        self.dir.join("simota.csv")
    }
    /// The shares of `simota.csv` against epoch.
    pub fn simota_png(&self) -> PathBuf {
        self.dir.join("simota.png")
    }
}

/// One epoch of a run.
#[derive(Clone, Debug)]
pub struct EpochRecord {
    pub epoch: usize,
    pub iteration: u64,
    pub mean_loss: f64,
    /// The evaluation of this epoch, if it was one.
    pub metrics: Option<Metrics>,
    pub images_per_s: f64,
    /// What the label assignment did per object size over the epoch's steps.
    pub assignment: AssignmentStats,
    /// Samples skipped because their image could not be read (`skip_bad_images`).
    pub skipped_images: usize,
}

/// What `train_detector` returns.
pub struct TrainReport {
    pub history: Vec<EpochRecord>,
    /// Metrics of the last evaluation (EMA model when on): what `evaluate` gives on the model
    /// afterwards, with the same size, confidence and NMS thresholds.
    pub final_metrics: Option<Metrics>,
    /// The best evaluation of the whole run (resumed parts included).
    pub best: Option<BestEval>,
    pub metrics_csv: PathBuf,
    /// `simota.csv`, and its rows (every epoch of the run folder, resumed parts included).
    pub simota_csv: PathBuf,
    pub simota: Vec<SimotaRow>,
    /// The training state (`last.ckpt.safetensors`).
    pub last_checkpoint: PathBuf,
    /// Model-only weights: the last epoch's, and the best evaluation's (None before any).
    pub last_weights: PathBuf,
    pub best_weights: Option<PathBuf>,
}

/// Sums of one epoch's steps.
struct EpochSums {
    losses: [f64; 5],
    assignment: AssignmentStats,
    steps: usize,
    images: usize,
    seconds: f64,
    /// Samples skipped for an unreadable image (`skip_bad_images`).
    skipped_images: usize,
}

/// Train one epoch on `loader`; interrupted (Ctrl-C) between steps with an error naming the
/// checkpoint to resume from.
fn run_epoch(
    trainer: &mut DetectorTrainer,
    loader: &Loader,
    opts: &TrainRunOptions,
    files: &RunFiles,
) -> Result<EpochSums> {
    let epoch = trainer.epoch;
    let config = &trainer.config;
    let t0 = Instant::now();
    let mut sums = EpochSums {
        losses: [0.0; 5],
        assignment: AssignmentStats::default(),
        steps: 0,
        images: 0,
        seconds: 0.0,
        skipped_images: 0,
    };
    // A bar with ETA on a terminal; off a terminal a line every print_interval steps when set
    // (YOLOX's print_interval), else only the epoch's line.
    let mut progress = opts.verbose.then(|| {
        Progress::new(
            loader.batches_per_epoch() as u64,
            &format!("epoch {}/{}", epoch + 1, config.max_epoch),
        )
        .with_line_every(config.print_interval.map(|n| n as u64))
    });
    // Each batch uploaded during the previous step (step_uploaded).
    let mut epoch_iter = loader.epoch(epoch);
    let mut batches = epoch_iter
        .by_ref()
        .filter(|b| !b.as_ref().is_ok_and(|b| b.batch == 0))
        .map(|b| b.map_err(|e| unreadable_batch(e, epoch, files)));
    let first = batches.next().transpose()?;
    let mut current = first.map(|b| trainer.upload(&b)).transpose()?;
    while let Some(batch) = current.take() {
        if crate::progress::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Msg(format!(
                "training interrupted at epoch {}, iteration {}; resume from {}",
                epoch + 1,
                trainer.iteration,
                files.training_state().display()
            )));
        }
        let next = batches.next().transpose()?;
        let (s, uploaded) = trainer.step_uploaded(batch, next.as_ref())?;
        current = uploaded;
        if let Some(p) = progress.as_mut() {
            let secs = s.times.total().max(1e-9);
            p.tick(1, Some(s.loss as f64), Some(s.images as f64 / secs));
        }
        for (acc, v) in sums
            .losses
            .iter_mut()
            .zip([s.loss, s.iou, s.obj, s.cls, s.l1])
        {
            *acc += v as f64;
        }
        sums.assignment.add(&s.assignment);
        sums.steps += 1;
        sums.images += s.images;
    }
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    drop(batches);
    sums.skipped_images = epoch_iter.summary().skipped_samples;
    sums.seconds = t0.elapsed().as_secs_f64();
    Ok(sums)
}

/// A batch the loader could not build (an unreadable image, named in `e`), with where the run
/// stopped and how to go on: the run folder holds the last complete epoch.
fn unreadable_batch(e: Error, epoch: usize, files: &RunFiles) -> Error {
    let state = files.training_state();
    let resume = if epoch > 0 && state.is_file() {
        format!(
            "; the run folder holds epoch {epoch} complete ({}): resume from it",
            state.display()
        )
    } else {
        String::new()
    };
    Error::Msg(format!(
        "training stopped in epoch {}: {e}{resume}",
        epoch + 1
    ))
}

/// The epoch's model-only weights, then (last) the training state.
fn save_epoch_files(
    trainer: &mut DetectorTrainer,
    files: &RunFiles,
    evaluated: bool,
    metrics: Option<&Metrics>,
) -> Result<()> {
    let model = trainer.eval_model().clone();
    model.save(&files.last_weights())?;
    if evaluated && trainer.config.save_history_ckpt {
        model.save(&files.epoch_weights(trainer.epoch))?;
    }
    if let Some(m) = metrics {
        // YOLOX: best when AP 0.5:0.95 beats every earlier evaluation. The first evaluation
        // is always kept (YOLOX starts from best_ap = 0 and keeps no best for a run at AP 0).
        if trainer.best.is_none_or(|b| m.ap() > b.ap) {
            trainer.best = Some(BestEval {
                ap: m.ap(),
                epoch: trainer.epoch,
            });
            model.save(&files.best_weights())?;
        }
    }
    trainer.save_checkpoint(&files.training_state())
}

/// `results.png` (every curve of metrics.csv), `pr_curve.png` (the final evaluation's
/// precision-recall curves) and `simota.png` (the shares of simota.csv) in the run folder. A
/// plot that fails is a warning, not a failed run.
fn plot_run(files: &RunFiles, final_metrics: Option<&Metrics>, simota: &[SimotaRow]) {
    let curves = read_metrics_csv(&files.metrics_csv())
        .and_then(|table| plot_training_curves(&table, &files.results_png()));
    let pr = final_metrics.map(|m| plot_pr_curves(m, None, &files.pr_curve_png()));
    // A run whose images held no ground truth has no shares to plot.
    let has_gts = simota.iter().any(|r| r.gts > 0);
    let assignment = has_gts.then(|| plot_simota_run(simota, &files.simota_png()));
    for e in [Some(curves), pr, assignment]
        .into_iter()
        .flatten()
        .filter_map(|r| r.err())
    {
        eprintln!("warning: {}: plot not written: {e}", files.dir.display());
    }
}

/// The line a run prints after each epoch: loss parts, lr, throughput, AP when evaluated.
fn epoch_line(
    row: &MetricsRow,
    max_epoch: usize,
    metrics: Option<&Metrics>,
    skipped_images: usize,
) -> String {
    let parts: Vec<String> = row
        .losses
        .iter()
        .skip(1)
        .map(|(n, v)| format!("{n} {v:.3}"))
        .collect();
    let total = row.losses.first().map_or(f64::NAN, |(_, v)| *v);
    let ap = metrics
        .map(|m| format!(", AP {:.4} AP50 {:.4}", m.ap(), m.ap50()))
        .unwrap_or_default();
    let skipped = if skipped_images > 0 {
        format!(", {skipped_images} sample(s) skipped (unreadable image)")
    } else {
        String::new()
    };
    format!(
        "epoch {}/{max_epoch}: loss {total:.3} ({}), lr {:.3e}, {:.1} images/s, {:.1} s{ap}{skipped}",
        row.epoch,
        parts.join(", "),
        row.lr,
        row.images_per_s,
        row.seconds
    )
}

/// `metrics.csv` and `simota.csv` for the run: a resumed run drops the rows after its
/// checkpoint (a process killed between a row and the state), which the epochs write again; a
/// fresh run finds only files a run stopped in its first epoch left (`resume_source`).
fn open_run_csvs(
    trainer: &mut DetectorTrainer,
    files: &RunFiles,
    resume_from: Option<&Path>,
    config: &TrainConfig,
    opts: &TrainRunOptions,
) -> Result<(MetricsCsv, SimotaCsv)> {
    let done = match resume_from {
        Some(path) => resume_trainer(trainer, path, config, opts)?,
        None => 0,
    };
    Ok((
        MetricsCsv::open_resumed(&files.metrics_csv(), &LOSS_NAMES, MaxDets::STUDY, done)?,
        SimotaCsv::open_resumed(&files.simota_csv(), done)?,
    ))
}

/// The evaluated (EMA) model on the validation set, at the recipe's test size and thresholds.
fn evaluate_epoch(
    trainer: &DetectorTrainer,
    val: &CocoDataset,
    config: &TrainConfig,
) -> Result<Metrics> {
    evaluate_detector(
        trainer.eval_model(),
        val,
        config.test_size,
        config.test_conf as f32,
        config.nms_threshold as f32,
        8,
    )
}

/// The epoch's record (returned to the caller) and its `metrics.csv` row.
fn epoch_record(
    trainer: &DetectorTrainer,
    sums: &EpochSums,
    metrics: Option<&Metrics>,
) -> (EpochRecord, MetricsRow) {
    let steps = sums.steps.max(1) as f64;
    let record = EpochRecord {
        epoch: trainer.epoch,
        iteration: trainer.iteration,
        mean_loss: sums.losses[0] / steps,
        images_per_s: sums.images as f64 / sums.seconds.max(1e-9),
        metrics: metrics.cloned(),
        assignment: sums.assignment.clone(),
        skipped_images: sums.skipped_images,
    };
    let losses: Vec<(String, f64)> = LOSS_NAMES
        .iter()
        .zip(sums.losses)
        .map(|(n, s)| (n.to_string(), s / steps))
        .collect();
    let row = MetricsRow::new(
        trainer.epoch,
        trainer.iteration,
        trainer.lr_at_iteration(),
        losses,
        metrics,
        record.images_per_s,
        sums.seconds,
    );
    (record, row)
}

/// Train a detector with YOLOX's recipe; evaluate on `val` every `eval_interval` epochs (every
/// epoch in the no-aug phase) and at the end, and keep the run folder's files (module docs).
/// `on_epoch` is called after each epoch with its record; returning `false` stops training.
///
/// Afterwards `model` holds the evaluated weights (the EMA copy when EMA is on, as YOLOX
/// saves and evaluates), so `evaluate` on it reproduces the run's final metrics.
pub fn train_detector(
    model: Arc<YoloX>,
    train: &CocoDataset,
    val: Option<&CocoDataset>,
    config: &TrainConfig,
    opts: &TrainRunOptions,
    mut on_epoch: impl FnMut(&EpochRecord) -> Result<bool>,
) -> Result<TrainReport> {
    let files = RunFiles::new(&opts.out_dir);
    let resume_from = resume_source(&files, opts.resume.as_ref())?;
    std::fs::create_dir_all(&files.dir).map_err(|e| Error::io(&files.dir, e))?;
    let mut loaders = EpochLoaders::new(train, config, opts)?;
    let mut trainer = DetectorTrainer::new(model, config.clone(), loaders.iters_per_epoch)?;
    let (mut csv, mut simota_csv) =
        open_run_csvs(&mut trainer, &files, resume_from.as_deref(), config, opts)?;
    trainer.to_device(opts.device)?;
    let no_aug_start = config.no_aug_start_epoch();
    let mut history = Vec::new();
    let mut final_metrics = None;

    while trainer.epoch < config.max_epoch {
        let no_aug = trainer.epoch >= no_aug_start;
        let loader = loaders.for_epoch(no_aug)?;
        begin_epoch(&mut trainer, config, no_aug);
        let sums = run_epoch(&mut trainer, loader, opts, &files)?;
        trainer.epoch += 1;
        let evaluates = evaluates_after(trainer.epoch, no_aug, config);
        let metrics = match val {
            Some(v) if evaluates => Some(evaluate_epoch(&trainer, v, config)?),
            _ => None,
        };
        let (record, row) = epoch_record(&trainer, &sums, metrics.as_ref());
        csv.append(&row)?;
        simota_csv.append_epoch(trainer.epoch, &record.assignment)?;
        if let Some(m) = &metrics {
            final_metrics = Some(m.clone());
        }
        if opts.verbose {
            let line = epoch_line(
                &row,
                config.max_epoch,
                metrics.as_ref(),
                sums.skipped_images,
            );
            println!("{line}");
        }
        save_epoch_files(&mut trainer, &files, evaluates, metrics.as_ref())?;
        history.push(record);
        if !on_epoch(history.last().expect("just pushed"))? {
            break;
        }
    }
    finish_run(trainer, &files, history, final_metrics, opts.verbose)
}

/// The training set's loaders: with the recipe's augmentation, and from the first no-aug epoch
/// on the one without mosaic (made then).
struct EpochLoaders<'a> {
    train: &'a CocoDataset,
    config: &'a TrainConfig,
    opts: &'a TrainRunOptions,
    augmented: Loader,
    no_aug: Option<Loader>,
    iters_per_epoch: u64,
}

impl<'a> EpochLoaders<'a> {
    fn new(
        train: &'a CocoDataset,
        config: &'a TrainConfig,
        opts: &'a TrainRunOptions,
    ) -> Result<EpochLoaders<'a>> {
        let augmented = Loader::new(
            train,
            loader_config(config, false, opts.workers, opts.cache),
        )?;
        let iters_per_epoch = augmented.batches_per_epoch() as u64;
        if iters_per_epoch == 0 {
            return Err(Error::InvalidArgument(
                "train_detector: the training set has no images".into(),
            ));
        }
        Ok(EpochLoaders {
            train,
            config,
            opts,
            augmented,
            no_aug: None,
            iters_per_epoch,
        })
    }

    /// The loader of an epoch (`no_aug`: of the no-aug phase).
    fn for_epoch(&mut self, no_aug: bool) -> Result<&Loader> {
        if no_aug && self.no_aug.is_none() {
            // trainer.py before_epoch: close mosaic (the L1 loss starts in `begin_epoch`).
            let cfg = loader_config(self.config, true, self.opts.workers, self.opts.cache);
            self.no_aug = Some(Loader::new(self.train, cfg)?);
        }
        Ok(self.no_aug.as_ref().unwrap_or(&self.augmented))
    }
}

/// The epoch's switches: the L1 loss in the no-aug phase, and a frozen backbone for the
/// recipe's first epochs (transfer experiments may keep the pretrained backbone fixed).
fn begin_epoch(trainer: &mut DetectorTrainer, config: &TrainConfig, no_aug: bool) {
    trainer.loss.use_l1 = no_aug;
    let epoch = trainer.epoch;
    trainer
        .model
        .freeze_backbone(epoch < config.freeze_backbone_epochs);
}

/// Whether the epoch that just ended (`epochs_done` of them) is evaluated: every
/// `eval_interval` epochs, every epoch of the no-aug phase, and the last.
fn evaluates_after(epochs_done: usize, no_aug: bool, config: &TrainConfig) -> bool {
    let interval = if no_aug {
        1
    } else {
        config.eval_interval.max(1)
    };
    epochs_done.is_multiple_of(interval) || epochs_done == config.max_epoch
}

/// After the last epoch: adopt the evaluated weights, plot the run, and report it.
fn finish_run(
    trainer: DetectorTrainer,
    files: &RunFiles,
    history: Vec<EpochRecord>,
    final_metrics: Option<Metrics>,
    verbose: bool,
) -> Result<TrainReport> {
    trainer.adopt_eval_weights()?;
    let simota = read_simota_csv(&files.simota_csv())?;
    plot_run(files, final_metrics.as_ref(), &simota);
    if let (true, Some(last)) = (verbose, history.last()) {
        println!("{}", simota_table_text(last.epoch, &last.assignment));
    }
    Ok(TrainReport {
        history,
        final_metrics,
        best: trainer.best,
        metrics_csv: files.metrics_csv(),
        simota_csv: files.simota_csv(),
        simota,
        last_checkpoint: files.training_state(),
        last_weights: files.last_weights(),
        best_weights: trainer.best.map(|_| files.best_weights()),
    })
}
