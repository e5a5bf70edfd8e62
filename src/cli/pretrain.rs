//! `ssod pretrain center|ssl|simsiam|dense|temporal|masked|probe|knn|health --config cfg.json
//! --data DIR`: backbone pretraining, probes and the embedding health from the command line (the
//! same library functions as the Rhai API).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::ssl::{pretrain_simsiam, SimSiamConfig};
use ssod::pretrain::temporal::{pretrain_temporal, TemporalConfig, TimedFrames};
use ssod::pretrain::{embedding_health, knn_probe, HealthConfig, KnnConfig};
use ssod::pretrain::{
    linear_probe, load_backbone, parse_config, pretrain_center_loss, pretrain_patch_ssl,
    CenterLossConfig, CropSet, FrameSet, PatchSslConfig, PretrainReport, ProbeConfig,
};
use ssod::tensor::Device;
use ssod::train::config::Precision;

#[derive(Subcommand)]
pub enum PretrainCommand {
    /// Pretrain a detector backbone (center loss, patch SSL, SimSiam, dense, temporal, masked), probe it (linear, k-NN) or check its embedding health
    #[command(subcommand)]
    Pretrain(PretrainKind),
}

#[derive(Subcommand)]
pub enum PretrainKind {
    /// Center-loss fg/bg pretraining on `ssod crop` output (docs/the-study.md)
    Center(PretrainArgs),
    /// Patch-contrastive self-supervision on unlabeled frames (docs/the-study.md)
    Ssl(PretrainArgs),
    /// Frozen backbone + logistic regression on fg/bg crops: accuracy in seconds
    Probe(PretrainArgs),
    /// Dense contrast (DenseCL) on any image folder; `neck: true` pretrains the PAFPN too
    Dense(PretrainArgs),
    /// SimSiam (two views, predictor, stop-gradient) on frames or any image folder
    Simsiam(PretrainArgs),
    /// Temporal contrast: nearby frames of a video are positives (`ssod frames` output)
    Temporal(PretrainArgs),
    /// Frozen backbone + cosine k-NN on fg/bg crops
    Knn(PretrainArgs),
    /// Embedding health (std, effective rank, alignment, uniformity) on an image folder
    Health(PretrainArgs),
    /// SparK-style masked autoencoding on any image folder (docs/pretraining.md)
    Masked(PretrainArgs),
}

#[derive(Args)]
pub struct PretrainArgs {
    /// JSON config; keys are the config fields (unknown keys are an error)
    #[arg(long)]
    pub config: PathBuf,
    /// Model whose backbone is trained: yolox-nano, yolox-tiny, yolox-s, ...
    #[arg(long, default_value = "yolox-s")]
    pub model: String,
    /// Crops folder (center, probe), frames folder (ssl) or images folder (masked)
    #[arg(long)]
    pub data: PathBuf,
    /// Output folder (checkpoint, report.json); default runs/pretrain-<kind>/<unix seconds>
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start from this backbone checkpoint (safetensors, `backbone.backbone.*`)
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Continue the run whose per-epoch state is in --out (center, ssl)
    #[arg(long, requires = "out")]
    pub resume: bool,
    /// cpu, cuda or auto (overrides the config's `device`; cuda fails at once without a GPU)
    #[arg(long)]
    pub device: Option<String>,
    /// f32, tf32 or bf16 matrix products on the GPU (overrides the config's `precision`)
    #[arg(long)]
    pub precision: Option<String>,
}

impl PretrainArgs {
    /// The config's device keys with the command line's overrides, checked before any work.
    fn device_overrides(
        &self,
        device: &mut String,
        precision: &mut Precision,
    ) -> anyhow::Result<()> {
        if let Some(d) = &self.device {
            *device = d.clone();
        }
        if let Some(p) = &self.precision {
            *precision = Precision::from_name(p)?;
        }
        // A GPU that is not there is an error now, not after the data is listed.
        Device::resolve(device)?;
        Ok(())
    }
}

fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    Ok(parse_config(&text, &path.display().to_string())?)
}

fn out_dir(args: &PretrainArgs, kind: &str) -> anyhow::Result<PathBuf> {
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            PathBuf::from(format!("runs/pretrain-{kind}/{stamp}"))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

fn model(args: &PretrainArgs) -> anyhow::Result<YoloX> {
    let m = YoloX::new(YoloXConfig::variant(&args.model, 1)?)?;
    if let Some(init) = &args.init {
        let r = load_backbone(&m, init)?;
        println!(
            "loaded {} backbone tensors from {}",
            r.loaded,
            init.display()
        );
    }
    Ok(m)
}

fn print_report(r: &PretrainReport) {
    println!("epoch  loss       accuracy  pos_cos  neg_cos");
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for e in &r.epochs {
        println!(
            "{:>5}  {:<9.5}  {:<8}  {:<7}  {:<7}",
            e.epoch,
            e.loss,
            opt(e.accuracy),
            opt(e.mean_pos_cos),
            opt(e.mean_neg_cos)
        );
    }
    if let Some(acc) = r.best_accuracy {
        println!(
            "best held-out accuracy {acc:.4} at epoch {:?}",
            r.best_epoch
        );
    }
    if let Some(h) = &r.health {
        println!(
            "last epoch's embedding health: std·√d {:.3}, effective rank {:.2}, alignment {:.4}, uniformity {:.4}{}",
            h.std_ratio, h.effective_rank, h.alignment, h.uniformity,
            if h.collapsed { " (collapsed)" } else { "" }
        );
    }
    println!("{:.1} samples/s over {} steps", r.samples_per_s, r.steps);
    if let Some(c) = &r.checkpoint {
        println!("checkpoint {}", c.display());
    }
}

fn write_json(dir: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let path = dir.join("report.json");
    Ok(ssod::atomic_file::write_atomic(
        &path,
        serde_json::to_string_pretty(value)?.as_bytes(),
    )?)
}

impl PretrainCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        let PretrainCommand::Pretrain(kind) = self;
        match kind {
            PretrainKind::Center(args) => {
                let mut cfg: CenterLossConfig = read_config(&args.config)?;
                args.device_overrides(&mut cfg.device, &mut cfg.precision)?;
                let dir = out_dir(&args, "center")?;
                cfg.out = Some(dir.clone());
                cfg.resume |= args.resume;
                let m = model(&args)?;
                let crops = CropSet::load(&args.data)?;
                let r = pretrain_center_loss(&m, &crops, &cfg)?;
                print_report(&r);
                write_json(&dir, &r)
            }
            PretrainKind::Ssl(args) => {
                let mut cfg: PatchSslConfig = read_config(&args.config)?;
                args.device_overrides(&mut cfg.device, &mut cfg.precision)?;
                let dir = out_dir(&args, "ssl")?;
                cfg.out = Some(dir.clone());
                cfg.resume |= args.resume;
                let m = model(&args)?;
                let frames = FrameSet::load(&args.data)?;
                let r = pretrain_patch_ssl(&m, &frames, &cfg)?;
                print_report(&r);
                write_json(&dir, &r)
            }
            PretrainKind::Probe(args) => {
                let mut cfg: ProbeConfig = read_config(&args.config)?;
                args.device_overrides(&mut cfg.device, &mut cfg.precision)?;
                let m = model(&args)?;
                let crops = CropSet::load(&args.data)?;
                let r = linear_probe(&m, &crops, &cfg)?;
                println!(
                    "linear probe: held-out accuracy {:.4} (train {:.4}), {} + {} crops, {} features, {:.1} s ({:.1} crops/s)",
                    r.val_accuracy, r.train_accuracy, r.train_size, r.val_size, r.feature_dim, r.seconds, r.crops_per_s
                );
                if let Some(out) = &args.out {
                    std::fs::create_dir_all(out)?;
                    write_json(out, &r)?;
                }
                Ok(())
            }
            other => execute_ssl(other),
        }
    }
}

/// The self-supervised methods, the k-NN probe and the health check.
fn execute_ssl(kind: PretrainKind) -> anyhow::Result<()> {
    match kind {
        PretrainKind::Simsiam(args) => {
            let mut cfg: SimSiamConfig = read_config(&args.config)?;
            let c = &mut cfg.common;
            args.device_overrides(&mut c.device, &mut c.precision)?;
            let dir = out_dir(&args, "simsiam")?;
            (c.out, c.resume) = (Some(dir.clone()), c.resume | args.resume);
            let images = FrameSet::load(&args.data)?;
            let r = pretrain_simsiam(&model(&args)?, &images, &cfg)?;
            print_report(&r);
            write_json(&dir, &r)
        }
        PretrainKind::Temporal(args) => {
            let mut cfg: TemporalConfig = read_config(&args.config)?;
            let c = &mut cfg.common;
            args.device_overrides(&mut c.device, &mut c.precision)?;
            let dir = out_dir(&args, "temporal")?;
            (c.out, c.resume) = (Some(dir.clone()), c.resume | args.resume);
            let frames = TimedFrames::load(&args.data)?;
            let r = pretrain_temporal(&model(&args)?, &frames, &cfg)?;
            print_report(&r);
            write_json(&dir, &r)
        }
        PretrainKind::Masked(args) => {
            let mut cfg: ssod::pretrain::MaskedConfig = read_config(&args.config)?;
            let c = &mut cfg.common;
            args.device_overrides(&mut c.device, &mut c.precision)?;
            let dir = out_dir(&args, "masked")?;
            (c.out, c.resume) = (Some(dir.clone()), c.resume | args.resume);
            let images = FrameSet::load(&args.data)?;
            let r = ssod::pretrain::pretrain_masked(&model(&args)?, &images, &cfg)?;
            print_report(&r);
            write_json(&dir, &r)
        }
        PretrainKind::Knn(args) => {
            let mut cfg: KnnConfig = read_config(&args.config)?;
            args.device_overrides(&mut cfg.device, &mut cfg.precision)?;
            let crops = CropSet::load(&args.data)?;
            let r = knn_probe(&model(&args)?, &crops, &cfg)?;
            println!(
                "k-NN probe (k {}): held-out accuracy {:.4}, {} + {} crops, {} features, {:.1} s",
                r.k, r.accuracy, r.train_size, r.val_size, r.feature_dim, r.seconds
            );
            if let Some(out) = &args.out {
                std::fs::create_dir_all(out)?;
                write_json(out, &r)?;
            }
            Ok(())
        }
        PretrainKind::Health(args) => {
            let mut cfg: HealthConfig = read_config(&args.config)?;
            let mut precision = ssod::train::config::Precision::F32;
            args.device_overrides(&mut cfg.device, &mut precision)?;
            let images = FrameSet::load(&args.data)?;
            let h = embedding_health(&model(&args)?, &images, &cfg)?;
            println!(
                "embedding health: std {:.3e} (·√d {:.3}, min {:.3e}), effective rank {:.2} of {}, alignment {:.4}, uniformity {:.4}{}",
                h.std_mean, h.std_ratio, h.std_min, h.effective_rank, h.dim.min(h.samples),
                h.alignment, h.uniformity, if h.collapsed { ", COLLAPSED" } else { "" }
            );
            if let Some(out) = &args.out {
                std::fs::create_dir_all(out)?;
                write_json(out, &h)?;
            }
            Ok(())
        }
        PretrainKind::Dense(args) => {
            let mut cfg: ssod::pretrain::dense::DenseConfig = read_config(&args.config)?;
            let c = &mut cfg.common;
            args.device_overrides(&mut c.device, &mut c.precision)?;
            let dir = out_dir(&args, "dense")?;
            (c.out, c.resume) = (Some(dir.clone()), c.resume | args.resume);
            let m = model(&args)?;
            let images = FrameSet::load(&args.data)?;
            let r = ssod::pretrain::dense::pretrain_dense(&m, &images, &cfg)?;
            print_report(&r);
            write_json(&dir, &r)
        }
        PretrainKind::Center(_) | PretrainKind::Ssl(_) | PretrainKind::Probe(_) => {
            anyhow::bail!("center, ssl and probe run in PretrainCommand::execute")
        }
    }
}
