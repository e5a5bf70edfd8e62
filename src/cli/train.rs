//! `ssod train --data ROOT --model yolox-s`: detector training from the command line, for those
//! who do not write scripts. The same recipe (YOLOX's, per variant) and the same run folder as
//! the notebooks' `train_detector` (`src/train/run.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use ssod::data::convert::ConvertOptions;
use ssod::data::dataset::CocoDataset;
use ssod::data::voc::{read_flow_split, read_labels};
use ssod::models::{WeightsSource, YoloX, YoloXConfig};
use ssod::tensor::Device;
use ssod::train::run::{train_detector, Resume, TrainRunOptions};
use ssod::train::TrainConfig;

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Train a detector with YOLOX's recipe (the notebooks' train_detector)
    Train(TrainArgs),
}

#[derive(Args)]
pub struct TrainArgs {
    /// Training data: a FloW-layout VOC folder (training/ and test/, each with images/ and
    /// annotations/, and labels.txt, as `ssod synth` writes) or a COCO json (images next to
    /// it, or in --images)
    #[arg(long)]
    pub data: PathBuf,
    /// Image folder of a COCO json --data (default: the json's folder)
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Validation set: a COCO json (images next to it). Default: a FloW folder's test/ split;
    /// none for a COCO json
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// yolox-nano, yolox-tiny, yolox-s, yolox-m, yolox-l, yolox-x
    #[arg(long, default_value = "yolox-s")]
    pub model: String,
    /// Number of classes (default: the training set's categories)
    #[arg(long)]
    pub classes: Option<usize>,
    /// Start from these weights (model-only safetensors, or a training state's EMA weights)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Epochs (the recipe's max_epoch; YOLOX: 300)
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per step (YOLOX: 64)
    #[arg(long)]
    pub batch: Option<usize>,
    /// Training and test input size (a multiple of 32)
    #[arg(long)]
    pub size: Option<usize>,
    /// More recipe keys: a JSON object file of TrainConfig keys (e.g. {"box_loss": "ciou"})
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// cpu, cuda or auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Run folder (default runs/train/<date-time>)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its training state
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// Data loader worker threads
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Skip training images that cannot be read (warned, counted per epoch) instead of stopping
    /// with an error naming the file (recipe key `skip_bad_images`)
    #[arg(long)]
    pub skip_bad_images: bool,
}

impl TrainCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let TrainCommand::Train(args) = self;
        run(args)
    }
}

/// The training and validation sets from `--data`, `--images` and `--val`.
fn datasets(args: &TrainArgs) -> anyhow::Result<(CocoDataset, Option<CocoDataset>)> {
    let read_coco = |path: &Path| -> anyhow::Result<CocoDataset> {
        CocoDataset::read(path).with_context(|| format!("--data/--val {}", path.display()))
    };
    let (train, flow_val) = if args.data.is_dir() {
        let labels_file = args.data.join("labels.txt");
        let labels = read_labels(&labels_file).with_context(|| {
            format!(
                "--data {}: a FloW/VOC folder needs labels.txt (one class name per line)",
                args.data.display()
            )
        })?;
        let options = ConvertOptions::default();
        let (train, _) = read_flow_split(&args.data, "training", &labels, &options)
            .with_context(|| format!("--data {}: the training/ split", args.data.display()))?;
        let val = args
            .data
            .join("test")
            .is_dir()
            .then(|| read_flow_split(&args.data, "test", &labels, &options))
            .transpose()
            .with_context(|| format!("--data {}: the test/ split", args.data.display()))?
            .map(|(ds, _)| ds);
        (train, val)
    } else {
        let mut train = read_coco(&args.data)?;
        if let Some(dir) = &args.images {
            train.image_dir = dir.clone();
        }
        (train, None)
    };
    let val = match &args.val {
        Some(path) => Some(read_coco(path)?),
        None => flow_val,
    };
    if train.images.is_empty() {
        bail!("--data {}: no training images", args.data.display());
    }
    Ok((train, val))
}

/// The recipe: YOLOX's for the variant, then --config, then the flags.
fn recipe(args: &TrainArgs) -> anyhow::Result<TrainConfig> {
    let mut config =
        TrainConfig::for_variant(&args.model).with_context(|| format!("--model {}", args.model))?;
    let mut given = serde_json::Map::new();
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--config {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("--config {}: not valid JSON", path.display()))?;
        config = config
            .with_overrides(&value)
            .with_context(|| format!("--config {}", path.display()))?;
        given = value.as_object().cloned().unwrap_or_default();
    }
    let mut flags = serde_json::Map::new();
    if let Some(e) = args.epochs {
        flags.insert("max_epoch".into(), e.into());
        // YOLOX's 5 warm-up and 15 no-aug epochs belong to its 300: a shorter run gets the
        // same shares (at least one no-aug epoch), unless --config sets them.
        let (warmup, no_aug) = (config.warmup_epochs, config.no_aug_epochs);
        let set = |k: &str| given.contains_key(k);
        if warmup + no_aug >= e && !(set("warmup_epochs") && set("no_aug_epochs")) {
            let share = |n: usize| (n * e).div_ceil(config.max_epoch.max(1));
            let w = if set("warmup_epochs") {
                warmup
            } else {
                share(warmup)
            };
            let n = if set("no_aug_epochs") {
                no_aug
            } else {
                share(no_aug).max(1).min(e.saturating_sub(w + 1))
            };
            eprintln!(
                "--epochs {e}: warm-up {warmup} -> {w} and no-aug {no_aug} -> {n} epochs \
                 (YOLOX's shares of {} epochs); set them in --config to choose",
                config.max_epoch
            );
            flags.insert("warmup_epochs".into(), w.into());
            flags.insert("no_aug_epochs".into(), n.into());
        }
    }
    if let Some(b) = args.batch {
        flags.insert("batch_size".into(), b.into());
    }
    if let Some(s) = args.size {
        flags.insert("input_size".into(), serde_json::json!([s, s]));
        flags.insert("test_size".into(), serde_json::json!([s, s]));
    }
    if args.skip_bad_images {
        flags.insert("skip_bad_images".into(), true.into());
    }
    Ok(config.with_overrides(&serde_json::Value::Object(flags))?)
}

fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = recipe(&args)?;
    let (train, val) = datasets(&args)?;
    let classes = args.classes.unwrap_or(train.categories.len());
    if classes == 0 {
        bail!("--classes: the training set names no categories; give --classes N");
    }
    if classes < train.categories.len() {
        bail!(
            "--classes {classes}: the training set has {} categories",
            train.categories.len()
        );
    }
    let (device, note) = Device::resolve(&args.device)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    let model = YoloX::new(
        YoloXConfig::variant(&args.model, classes)
            .with_context(|| format!("--model {}", args.model))?,
    )?;
    if let Some(weights) = &args.weights {
        let loaded = model
            .load(weights)
            .with_context(|| format!("--weights {}", weights.display()))?;
        if loaded.source != WeightsSource::Model {
            eprintln!(
                "--weights {}: using {}",
                weights.display(),
                loaded.source.describe()
            );
        }
    }
    let out = args.out.clone().unwrap_or_else(default_out);
    let opts = TrainRunOptions {
        out_dir: out.clone(),
        workers: args.workers.max(1),
        cache: true,
        resume: args.resume.then_some(Resume::RunFolder),
        resume_override: Vec::new(),
        verbose: true,
        device,
    };
    println!(
        "training {} ({classes} classes) on {} images{}; run folder {}",
        args.model,
        train.images.len(),
        val.as_ref()
            .map(|v| format!(", validating on {}", v.images.len()))
            .unwrap_or_default(),
        out.display()
    );
    let report = train_detector(
        Arc::new(model),
        &train,
        val.as_ref(),
        &config,
        &opts,
        |_| Ok(true),
    )?;
    if let Some(m) = &report.final_metrics {
        print!("{}", m.summary());
    }
    println!("weights: {}", report.last_weights.display());
    println!(
        "assignment per object size: {}",
        report.simota_csv.display()
    );
    if let Some(best) = &report.best_weights {
        println!("best: {}", best.display());
    }
    Ok(())
}

/// `runs/train/<unix seconds>`.
fn default_out() -> PathBuf {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from(format!("runs/train/{stamp}"))
}
