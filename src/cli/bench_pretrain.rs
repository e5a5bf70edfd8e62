//! `ssod bench pretrain`: throughput of backbone pretraining, end to end (the loader's workers
//! decoding, resizing and augmenting beside the steps) and of the loader alone, so a figure says
//! which of the two limits it. `benches/torch_pretrain.py` times the same step in PyTorch eager.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use image::RgbImage;
use rand::Rng;
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::loader::{crop_batches, patch_batches, CropSampling};
use ssod::pretrain::{
    pretrain_center_loss, pretrain_patch_ssl, CenterLossConfig, CropSet, FrameSet, PatchLossKind,
    PatchSslConfig, PretrainReport,
};
use ssod::rng::rng_for;
use ssod::tensor::{cuda_memory_in_use, host_round_trips, Device};
use ssod::train::config::Precision;

#[derive(Args)]
pub struct BenchPretrainArgs {
    /// center (fg/bg crops, center loss) or ssl (frames, patch contrast)
    #[arg(long, default_value = "center")]
    pub method: String,
    /// yolox-nano, yolox-tiny, yolox-s, ...
    #[arg(long, default_value = "yolox-s")]
    pub model: String,
    /// Crops per step (center; the study: 128) or frames per step (ssl; the study: 16)
    #[arg(long)]
    pub batch: Option<usize>,
    /// Crop side (center, the study: 224) or patch side (ssl, the study: 224)
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Frame size WxH the frames are resized to (ssl; the study: 1280x720)
    #[arg(long, default_value = "1280x720")]
    pub frame: String,
    /// ssl loss: cosine (the study) or info_nce
    #[arg(long, default_value = "cosine")]
    pub loss: String,
    /// Timed steps (after an untimed warm-up epoch of the same length)
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// cpu, cuda or auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, tf32 or bf16 matrix products on the GPU
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Loader threads (default: the number of cores)
    #[arg(long)]
    pub workers: Option<usize>,
    /// Real crops/frames folder (decoded from disk each batch); default: random images in memory
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// Random RGB images (seeded), as stand-ins for crops or frames.
fn noise_images(n: usize, w: u32, h: u32, seed: u64) -> Vec<RgbImage> {
    let mut rng = rng_for(seed, "bench/pretrain");
    (0..n)
        .map(|_| {
            let raw: Vec<u8> = (0..w * h * 3).map(|_| rng.random()).collect();
            RgbImage::from_raw(w, h, raw).expect("w·h·3 bytes")
        })
        .collect()
}

fn parse_frame(s: &str) -> anyhow::Result<[usize; 2]> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| anyhow::anyhow!("--frame {s:?}: expected WxH, e.g. 1280x720"))?;
    Ok([w.trim().parse()?, h.trim().parse()?])
}

/// What one method's run measured.
struct Measured {
    unit: &'static str,
    per_step: usize,
    loader_per_s: f64,
    train_per_s: f64,
    report: PretrainReport,
}

fn run_center(a: &BenchPretrainArgs, model: &YoloX, workers: usize) -> anyhow::Result<Measured> {
    let batch = a.batch.unwrap_or(128);
    let crops = match &a.data {
        Some(dir) => CropSet::load(dir)?,
        None => {
            let imgs = noise_images(batch * a.steps, a.size as u32, a.size as u32, 1);
            CropSet::from_images(
                imgs.into_iter()
                    .enumerate()
                    .map(|(i, m)| (m, (i % 2) as u8))
                    .collect(),
            )
        }
    };
    let sampling = CropSampling {
        size: a.size,
        norm: Default::default(),
        flip: Some((7, 0.5)),
    };
    let order: Vec<usize> = (0..crops.len()).collect();
    let t = std::time::Instant::now();
    let mut loaded = 0;
    for b in crop_batches(
        &Arc::new(crops.crops.clone()),
        order,
        batch,
        Some(a.steps),
        sampling,
        workers,
    ) {
        loaded += b?.len();
    }
    let loader_per_s = loaded as f64 / t.elapsed().as_secs_f64();
    let cfg = CenterLossConfig {
        epochs: 2,
        batch_size: batch,
        input_size: a.size,
        val_fraction: 0.0,
        max_steps_per_epoch: Some(a.steps),
        device: a.device.clone(),
        precision: Precision::from_name(&a.precision)?,
        workers,
        // The benchmark times the steps; the health check between epochs is not part of them.
        health: None,
        ..Default::default()
    };
    let report = pretrain_center_loss(model, &crops, &cfg)?;
    let last = report.epochs.last().expect("two epochs ran");
    let per_step = batch.min(crops.len());
    Ok(Measured {
        unit: "crops",
        per_step,
        loader_per_s,
        train_per_s: (per_step * a.steps) as f64 / last.seconds.max(1e-9),
        report,
    })
}

fn run_ssl(a: &BenchPretrainArgs, model: &YoloX, workers: usize) -> anyhow::Result<Measured> {
    let batch = a.batch.unwrap_or(16);
    let frame_size = parse_frame(&a.frame)?;
    let loss = match a.loss.as_str() {
        "cosine" => PatchLossKind::Cosine,
        "info_nce" => PatchLossKind::InfoNce,
        other => anyhow::bail!("--loss {other:?}: expected cosine or info_nce"),
    };
    let frames = match &a.data {
        Some(dir) => FrameSet::load(dir)?,
        None => FrameSet::from_images(noise_images(
            batch * a.steps,
            frame_size[0] as u32,
            frame_size[1] as u32,
            2,
        )),
    };
    let cfg = PatchSslConfig {
        epochs: 2,
        batch_size: batch,
        frame_size,
        patch_size: a.size,
        loss,
        max_steps_per_epoch: Some(a.steps),
        device: a.device.clone(),
        precision: Precision::from_name(&a.precision)?,
        workers,
        // The benchmark times the steps; the health check between epochs is not part of them.
        health: None,
        ..Default::default()
    };
    cfg.validate()?;
    let sampling = cfg.sampling(7);
    let order: Vec<usize> = (0..frames.len()).collect();
    let t = std::time::Instant::now();
    let mut loaded = 0;
    for b in patch_batches(
        &Arc::new(frames.frames.clone()),
        order,
        batch,
        Some(a.steps),
        sampling,
        workers,
    ) {
        loaded += b?.1;
    }
    let per_frame = 1 + cfg.num_positives + cfg.num_negatives;
    let loader_per_s = (loaded * per_frame) as f64 / t.elapsed().as_secs_f64();
    let report = pretrain_patch_ssl(model, &frames, &cfg)?;
    let last = report.epochs.last().expect("two epochs ran");
    let per_step = batch.min(frames.len()) * per_frame;
    Ok(Measured {
        unit: "patches",
        per_step,
        loader_per_s,
        train_per_s: (per_step * a.steps) as f64 / last.seconds.max(1e-9),
        report,
    })
}

pub fn bench_pretrain(a: BenchPretrainArgs) -> anyhow::Result<()> {
    let (device, note) = Device::resolve(&a.device)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    if a.steps == 0 || a.size == 0 || !a.size.is_multiple_of(32) || a.batch == Some(0) {
        anyhow::bail!("--steps and --batch must be >= 1, --size a positive multiple of 32");
    }
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let model = YoloX::new(YoloXConfig::variant(&a.model, 1)?)?;
    let trips_before = host_round_trips();
    let m = match a.method.as_str() {
        "center" => run_center(&a, &model, workers)?,
        "ssl" => run_ssl(&a, &model, workers)?,
        other => anyhow::bail!("--method {other:?}: expected center or ssl"),
    };
    // Both epochs' steps (and each epoch's one read of its means) over the steps.
    let trips = (host_round_trips() - trips_before) as f64 / m.report.steps.max(1) as f64;
    let gpu_mem_mb = match device {
        Device::Cuda => Some(cuda_memory_in_use()? as f64 / (1024.0 * 1024.0)),
        Device::Cpu => None,
    };
    let peak = super::bench::peak_rss_mb();
    let limit = if m.loader_per_s < m.train_per_s * 1.1 {
        "the loader (add workers or cores)"
    } else {
        "the step"
    };
    if a.json {
        let obj = serde_json::json!({
            "method": a.method, "model": a.model, "size": a.size, "device": a.device, "precision": a.precision,
            "workers": workers, "steps": a.steps, "unit": m.unit, "per_step": m.per_step,
            "train_per_s": m.train_per_s, "loader_per_s": m.loader_per_s,
            "host_round_trips_per_step": trips, "peak_mem_mb": peak, "gpu_mem_in_use_mb": gpu_mem_mb,
            "data": a.data.as_ref().map(|d| d.display().to_string()),
        });
        println!("{}", serde_json::to_string(&obj)?);
    } else {
        println!(
            "{} pretraining of {} ({} {} per step), device {device}, precision {}, {workers} loader workers, {}",
            a.method,
            a.model,
            m.per_step,
            m.unit,
            a.precision,
            a.data.as_ref().map_or("random images in memory".to_string(), |d| d.display().to_string())
        );
        println!(
            "training      {:.1} {}/s (loader and steps together, second epoch)",
            m.train_per_s, m.unit
        );
        println!("loader alone  {:.1} {}/s", m.loader_per_s, m.unit);
        println!("limited by    {limit}");
        println!(
            "peak memory   {} MB (host RSS)",
            peak.map_or("n/a".into(), |p| format!("{p:.0}"))
        );
        if let Some(mb) = gpu_mem_mb {
            println!("GPU memory    {mb:.0} MiB in use after the run (whole device)");
            println!("host round trips per step {trips:.2}");
        }
    }
    Ok(())
}
