//! `ssod bench train`: throughput and peak memory of a full YOLOX training step on random data
//! (and the `bench` subcommands: `simota` and `conv` live in their own files).

use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Subcommand};
use ssod::autograd::{profile_restart, profile_table, set_profiling};
use ssod::backend::cuda::conv2d::algorithm::ConvChoiceSummary;
use ssod::backend::cuda::ConvAlgorithm;
use ssod::models::{YoloX, YoloXConfig};
use ssod::tensor::{cuda_memory_in_use, host_round_trips, Device};
use ssod::train::config::Precision;
use ssod::train::trainer::{DetectorTrainer, StageTimes};
use ssod::train::TrainConfig;

use super::bench_batches::BatchSource;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Benchmarks: `bench train` times full training steps, `bench simota` the assigner,
    /// `bench conv` each conv layer, `bench pretrain` backbone pretraining
    #[command(subcommand)]
    Bench(BenchKind),
}

#[derive(Subcommand)]
pub enum BenchKind {
    /// Full training step (forward, SimOTA, loss, backward, SGD, EMA) on random images and boxes
    Train(BenchTrainArgs),
    /// SimOTA assignment of a batch, CPU against the CUDA kernels
    Simota(super::bench_simota::BenchSimotaArgs),
    /// Every distinct conv layer of a YOLOX model: forward and both gradients timed on their own
    Conv(super::bench_conv::BenchConvArgs),
    /// Backbone pretraining (center loss or patch SSL): training and loader throughput
    Pretrain(super::bench_pretrain::BenchPretrainArgs),
}

#[derive(Args)]
pub struct BenchTrainArgs {
    /// yolox-nano, yolox-tiny, yolox-s, ...
    #[arg(long, default_value = "yolox-nano")]
    pub model: String,
    /// Square input size (multiple of 32)
    #[arg(long, default_value_t = 320)]
    pub size: usize,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Timed steps after one warm-up step
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
    #[arg(long, default_value_t = 1)]
    pub classes: usize,
    /// Ground-truth boxes per image (default: 1 to 5 at random; benches/torch_yolox.py uses 30)
    #[arg(long)]
    pub gts: Option<usize>,
    /// cpu, cuda or auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Matrix products on the GPU: f32, tf32 or bf16 (bf16 operands, f32 accumulation; bf16
    /// activations between convs); the CPU always computes in f32
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// GPU convs with one group: im2col (im2col + cuBLAS), implicit (implicit-GEMM tensor-core
    /// kernels) or auto (per conv the faster, measured in the untimed warm-up step); default:
    /// SSOD_CUDA_CONV, else auto
    #[arg(long)]
    pub conv: Option<String>,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Also run the steps once more with a per-op time profile (waits for the GPU after every
    /// op) and print the ops that took the most time
    #[arg(long)]
    pub profile_ops: bool,
    /// Run the steps as training does, without a wait for the GPU after each stage: images/s
    /// without those waits; the per-stage line is then the host's time to queue each stage
    #[arg(long)]
    pub no_stage_times: bool,
    /// Feed the steps from the training loader over this FloW folder (its training/ split) or
    /// COCO json, with the recipe's augmentation: images/s of training end to end, and the
    /// loader's rate alone (default: random batches made before the clock starts)
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// Loader threads with --data (default: the number of cores)
    #[arg(long)]
    pub workers: Option<usize>,
    /// Keep decoded images in RAM with --data (YOLOX's `cache`)
    #[arg(long)]
    pub cache: bool,
}

impl BenchCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            BenchCommand::Bench(BenchKind::Train(a)) => bench_train(a),
            BenchCommand::Bench(BenchKind::Simota(a)) => super::bench_simota::bench_simota(a),
            BenchCommand::Bench(BenchKind::Conv(a)) => super::bench_conv::bench_conv(a),
            BenchCommand::Bench(BenchKind::Pretrain(a)) => super::bench_pretrain::bench_pretrain(a),
        }
    }
}

/// The middle value (the upper one of an even count) of timings; `v` must not be empty.
pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Peak resident memory of this process (Linux `VmHWM`), in MB.
pub(super) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn bench_train(a: BenchTrainArgs) -> anyhow::Result<()> {
    let (device, note) = Device::resolve(&a.device)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    check_train_args(&a)?;
    let (model, mut trainer) = bench_trainer(&a, device)?;
    // The algorithm the trainer set (the recipe's, else the process's default).
    let conv = match device {
        Device::Cuda => Some(ssod::backend::cuda::device()?.conv_algorithm().name()),
        Device::Cpu => None,
    };
    // Random batches are made before the clock starts: drawing 20M random pixels takes longer
    // than a GPU step (a loader prepares them in parallel with training). With --data the real
    // loader runs beside the steps, as in an epoch of training.
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut source = match &a.data {
        Some(dir) => BatchSource::loader(dir, &trainer.config, workers, a.cache)?,
        None => BatchSource::random(&trainer.config, a.classes, a.gts, a.steps),
    };
    let loader_alone = source.loader_alone(a.steps.max(4));
    let run = time_steps(&mut trainer, &mut source, a.steps, device)?;
    let figures = TrainFigures::gather(run, device, conv, (workers, loader_alone))?;
    if a.json {
        print_train_json(&a, model.num_params(), &figures)
    } else {
        print_train_text(&a, device, &figures, &mut trainer, &mut source)
    }
}

/// Sizes the bench can train at (batch norm in training mode needs two values per channel).
fn check_train_args(a: &BenchTrainArgs) -> anyhow::Result<()> {
    if a.size == 0 || !a.size.is_multiple_of(32) || a.batch == 0 || a.steps == 0 || a.classes == 0 {
        anyhow::bail!(
            "--size must be a positive multiple of 32; --batch, --steps and --classes must be >= 1"
        );
    }
    // Training-mode batch norm needs two values per channel; the stride-32 maps have
    // batch · (size/32)² of them.
    if a.batch * (a.size / 32).pow(2) < 2 {
        anyhow::bail!(
            "--batch {} at --size {} leaves one value per channel for batch norm at stride 32: \
             use --batch 2 or more, or --size 64 or more",
            a.batch,
            a.size
        );
    }
    Ok(())
}

/// The model and its trainer at the bench's size, batch, precision and conv algorithm, on
/// `device`.
fn bench_trainer(
    a: &BenchTrainArgs,
    device: Device,
) -> anyhow::Result<(Arc<YoloX>, DetectorTrainer)> {
    let model = Arc::new(YoloX::new(YoloXConfig::variant(&a.model, a.classes)?)?);
    let mut cfg = TrainConfig::for_variant(&a.model)?;
    cfg.batch_size = a.batch;
    cfg.input_size = (a.size, a.size);
    cfg.test_size = (a.size, a.size);
    cfg.multiscale_range = 0;
    cfg.random_size = None;
    cfg.max_epoch = 300;
    cfg.precision = Precision::from_name(&a.precision).map_err(|e| anyhow::anyhow!("--{e}"))?;
    if device == Device::Cpu && cfg.precision != Precision::F32 {
        eprintln!(
            "note: --precision {} applies to GPU products; the CPU computes in f32",
            a.precision
        );
    }
    cfg.conv_algorithm = match (device, a.conv.as_deref()) {
        (Device::Cpu, Some(_)) => anyhow::bail!("--conv chooses among GPU conv algorithms"),
        (_, None) => None,
        (Device::Cuda, Some(name)) => {
            Some(ConvAlgorithm::from_name(name).map_err(|e| anyhow::anyhow!("--conv: {e}"))?)
        }
    };
    let mut trainer = DetectorTrainer::new(model.clone(), cfg, 1000)?;
    trainer.to_device(device)?;
    trainer.set_stage_times(!a.no_stage_times);
    Ok((model, trainer))
}

/// What the timed steps measured.
struct TrainRun {
    warmup_s: f64,
    times: StageTimes,
    images: usize,
    wall: f64,
    round_trips: f64,
}

/// One warm-up step, then `steps` timed ones; as in the training loop, each step uploads the
/// next batch beside its backward.
fn time_steps(
    trainer: &mut DetectorTrainer,
    source: &mut BatchSource,
    steps: usize,
    device: Device,
) -> anyhow::Result<TrainRun> {
    // The warm-up step (first-touch allocations, thread pools, kernel compilation, `--conv
    // auto`'s measurements) is not in the figures; its time is reported on its own.
    let warmup_batch = source.next_batch()?;
    let first = source.next_batch()?;
    let warmup = Instant::now();
    let (_, mut uploaded) = trainer.step_uploaded(trainer.upload(&warmup_batch)?, Some(&first))?;
    let warmup_s = warmup.elapsed().as_secs_f64();
    if device == Device::Cuda {
        ssod::backend::cuda::device()?.reset_pool_peak()?;
    }
    let mut times = StageTimes::default();
    let mut images = 0usize;
    let round_trips_before = host_round_trips();
    let t0 = Instant::now();
    for s in 0..steps {
        let current = uploaded
            .take()
            .ok_or_else(|| anyhow::anyhow!("bench train: step {s} found no uploaded batch"))?;
        let next = source.next_batch()?;
        let (stats, next) = trainer.step_uploaded(current, Some(&next))?;
        uploaded = next;
        times.add(&stats.times);
        images += stats.images;
    }
    let wall = t0.elapsed().as_secs_f64();
    let round_trips = (host_round_trips() - round_trips_before) as f64 / steps as f64;
    Ok(TrainRun {
        warmup_s,
        times,
        images,
        wall,
        round_trips,
    })
}

/// Everything a train bench reports besides its arguments.
struct TrainFigures {
    run: TrainRun,
    conv: Option<&'static str>,
    /// What `auto` chose (in the warm-up step: the timed steps reuse its choices).
    auto_choices: Option<ConvChoiceSummary>,
    gpu_mem_mb: Option<f64>,
    gpu_peak_mb: Option<f64>,
    images_per_s: f64,
    peak: Option<f64>,
    threads: usize,
    workers: usize,
    loader_alone: Option<f64>,
}

impl TrainFigures {
    fn gather(
        run: TrainRun,
        device: Device,
        conv: Option<&'static str>,
        (workers, loader_alone): (usize, Option<f64>),
    ) -> anyhow::Result<TrainFigures> {
        let auto_choices = match conv {
            Some("auto") => Some(ssod::backend::cuda::device()?.conv_choices().summary()),
            _ => None,
        };
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let (gpu_mem_mb, gpu_peak_mb) = match device {
            Device::Cuda => {
                let pool = ssod::backend::cuda::device()?.pool_memory()?;
                (
                    Some(mib(cuda_memory_in_use()? as u64)),
                    pool.map(|(peak, _)| mib(peak)),
                )
            }
            Device::Cpu => (None, None),
        };
        Ok(TrainFigures {
            images_per_s: run.images as f64 / run.wall,
            run,
            conv,
            auto_choices,
            gpu_mem_mb,
            gpu_peak_mb,
            peak: peak_rss_mb(),
            threads: rayon::current_num_threads(),
            workers,
            loader_alone,
        })
    }

    /// Milliseconds per timed step of `x` seconds in all.
    fn per_step(&self, x: f64, steps: usize) -> f64 {
        1000.0 * x / steps as f64
    }
}

fn print_train_json(a: &BenchTrainArgs, params: usize, f: &TrainFigures) -> anyhow::Result<()> {
    let per_step = |x: f64| f.per_step(x, a.steps);
    let (times, workers) = (&f.run.times, f.workers);
    let obj = serde_json::json!({
        "model": a.model, "size": a.size, "batch": a.batch, "steps": a.steps, "device": a.device, "precision": a.precision, "conv": f.conv,
        "threads": f.threads, "params": params,
        "images_per_s": f.images_per_s, "peak_mem_mb": f.peak, "gpu_mem_in_use_mb": f.gpu_mem_mb, "gpu_pool_peak_mb": f.gpu_peak_mb,
        "host_round_trips_per_step": f.run.round_trips, "warmup_step_s": f.run.warmup_s, "stage_times": !a.no_stage_times,
        "data": a.data.as_ref().map(|d| d.display().to_string()), "workers": a.data.as_ref().map(|_| workers), "loader_images_per_s": f.loader_alone,
        "conv_auto": f.auto_choices.map(|s| serde_json::json!({ "im2col": s.im2col, "implicit": s.implicit, "refused": s.refused })),
        "ms_per_step": { "forward": per_step(times.forward), "assign_and_loss": per_step(times.assign_and_loss),
            "backward": per_step(times.backward), "optimizer": per_step(times.optimizer), "ema": per_step(times.ema),
            "total": per_step(f.run.wall) },
    });
    println!("{}", serde_json::to_string(&obj)?);
    Ok(())
}

fn print_train_text(
    a: &BenchTrainArgs,
    device: Device,
    f: &TrainFigures,
    trainer: &mut DetectorTrainer,
    source: &mut BatchSource,
) -> anyhow::Result<()> {
    let (images_per_s, workers, threads) = (f.images_per_s, f.workers, f.threads);
    let conv_line = match (f.conv, f.auto_choices) {
        (Some(c), Some(s)) => format!(", convs {c} ({s})"),
        (Some(c), None) => format!(", convs {c}"),
        (None, _) => String::new(),
    };
    println!(
        "{} at {}x{}, batch {}, {} steps, {} CPU threads, device {device}, precision {}{}",
        a.model, a.size, a.size, a.batch, a.steps, threads, a.precision, conv_line
    );
    match (&a.data, f.loader_alone) {
        (Some(dir), Some(rate)) => {
            println!(
                "images/s      {images_per_s:.2} (end to end: the loader over {} with {workers} workers beside the steps)",
                dir.display()
            );
            println!(
                "loader alone  {rate:.2} images/s ({})",
                if rate < images_per_s * 1.1 {
                    "the loader limits training"
                } else {
                    "the steps limit training"
                }
            );
        }
        _ => println!("images/s      {images_per_s:.2}"),
    }
    let warmup_work = match (device, f.auto_choices) {
        (Device::Cpu, _) => "first-touch allocations",
        (Device::Cuda, None) => "kernel loading, first allocations",
        (Device::Cuda, Some(_)) => "kernel loading, auto's measurement of each conv pass",
    };
    println!(
        "warm-up step  {:.2} s (not timed: {warmup_work})",
        f.run.warmup_s
    );
    println!(
        "peak memory   {} MB (host RSS)",
        f.peak
            .map(|p| format!("{p:.0}"))
            .unwrap_or_else(|| "n/a".into())
    );
    if let Some(p) = f.gpu_peak_mb {
        println!(
            "GPU peak      {p:.0} MiB allocated (memory-pool high-water mark over the timed steps)"
        );
    }
    if let Some(m) = f.gpu_mem_mb {
        println!(
            "GPU memory    {m:.0} MiB in use after the run (total - free, whole device; the \
             memory pool keeps what it freed, like PyTorch's reserved memory)"
        );
        println!("host round trips per step {:.0} (CUDA tensors read on the host: ops without a CUDA arm)", f.run.round_trips);
    }
    if a.profile_ops {
        print_op_profile(trainer, source, a.steps)?;
    }
    let whose = if a.no_stage_times && device == Device::Cuda {
        " (host time to queue each stage: no GPU waits between stages)"
    } else {
        ""
    };
    let per_step = |x: f64| f.per_step(x, a.steps);
    let times = &f.run.times;
    println!("per step (ms) forward {:.1} | SimOTA+loss {:.1} | backward {:.1} | optimizer {:.1} | EMA {:.1} | total {:.1}{whose}",
        per_step(times.forward), per_step(times.assign_and_loss), per_step(times.backward), per_step(times.optimizer), per_step(times.ema), per_step(f.run.wall));
    Ok(())
}

/// Run `steps` more steps with the per-op profile on and print the top of the table.
fn print_op_profile(
    trainer: &mut DetectorTrainer,
    source: &mut BatchSource,
    steps: usize,
) -> anyhow::Result<()> {
    set_profiling(true);
    let t = Instant::now();
    profile_restart();
    for _ in 0..steps {
        trainer.step(&source.next_batch()?)?;
    }
    let wall = t.elapsed().as_secs_f64();
    let rows = profile_table();
    set_profiling(false);
    let total: f64 = rows.iter().map(|r| r.2).sum();
    println!(
        "op profile over {steps} steps ({:.1} ms per step with a GPU wait after every op; {:.0}% of it charged to ops)",
        1e3 * wall / steps as f64,
        100.0 * total / wall.max(1e-12)
    );
    println!("{:<36} {:>8} {:>10} {:>6}", "op", "calls", "ms/step", "%");
    for (name, calls, secs) in rows.iter().take(25) {
        println!(
            "{:<36} {:>8} {:>10.2} {:>5.1}%",
            name,
            calls / steps as u64,
            1e3 * secs / steps as f64,
            100.0 * secs / total.max(1e-12)
        );
    }
    Ok(())
}
