//! `ssod bench conv`: every distinct conv layer of a YOLOX model, forward, input gradient and
//! weight gradient timed on their own on the CPU or the GPU, with the per-step total (each layer
//! times the number of times the model runs it). `--json FILE` writes the layers and times for
//! `benches/torch_conv_layers.py`, which times the same geometries with PyTorch (cuDNN) on the
//! same card: a per-layer answer to "where does the conv time go" (BENCHMARKS.md, GPU).

use std::time::Instant;

use clap::Args;

use super::bench::median;
use ssod::backend::conv_geometry::Conv2dGeometry;
use ssod::backend::cpu::conv2d as cpu_conv2d;
use ssod::backend::cuda::bf16::{self, CudaValues};
use ssod::backend::cuda::{self, conv2d as cuda_conv2d, ConvAlgorithm};
use ssod::models::{YoloX, YoloXConfig};
use ssod::ops::trace_geometries;
use ssod::tensor::{Device, Tensor};
use ssod::train::config::Precision;

#[derive(Args)]
pub struct BenchConvArgs {
    /// yolox-nano, yolox-tiny, yolox-s, ...
    #[arg(long, default_value = "yolox-s")]
    pub model: String,
    /// Square input size (multiple of 32)
    #[arg(long, default_value_t = 640)]
    pub size: usize,
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// cpu, cuda or auto
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Matrix products on the GPU: f32, tf32 or bf16
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Timed repetitions per pass after one warm-up (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Write the layers and their times as JSON to this file (refused if it exists)
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// GPU convs with one group: im2col, implicit, auto (per pass the faster, chosen in the
    /// warm-up), or both (each layer timed with im2col and implicit, side by side); default: the
    /// device's (SSOD_CUDA_CONV, else auto)
    #[arg(long)]
    pub conv: Option<String>,
}

/// One distinct conv geometry of the model and how often a training step runs its passes.
struct Layer {
    geometry: Conv2dGeometry,
    /// Calls per forward (each has a weight gradient in backward).
    count: usize,
    /// Calls whose input needs a gradient (not the stem's, which reads the images).
    input_grad_count: usize,
}

/// The model's conv layers from one forward at batch 1 on the CPU (shapes only matter; with
/// gradients on, so the trace sees which inputs need one), merged by geometry in first-call
/// order, at batch `batch`.
fn model_layers(model: &str, size: usize, batch: usize) -> anyhow::Result<Vec<Layer>> {
    let net = YoloX::new(YoloXConfig::variant(model, 1)?)?;
    // Eval-mode batch norm: one image at 32 px leaves one value per channel at stride 32.
    net.set_training(false);
    let images = Tensor::zeros([1, 3, size, size]);
    let (out, traced) = trace_geometries(|| net.forward(&images));
    out?;
    let mut layers: Vec<Layer> = Vec::new();
    for t in traced {
        let geometry = Conv2dGeometry {
            batch,
            ..t.geometry
        };
        let layer = match layers.iter_mut().position(|l| l.geometry == geometry) {
            Some(i) => &mut layers[i],
            None => {
                layers.push(Layer {
                    geometry,
                    count: 0,
                    input_grad_count: 0,
                });
                layers.last_mut().expect("just pushed")
            }
        };
        layer.count += 1;
        layer.input_grad_count += usize::from(t.input_grad);
    }
    Ok(layers)
}

fn describe(g: &Conv2dGeometry) -> String {
    let groups = if g.groups == 1 {
        String::new()
    } else if g.groups == g.in_channels {
        " dw".into()
    } else {
        format!(" g{}", g.groups)
    };
    format!(
        "{}->{} {}x{} s{}{} @{}x{}",
        g.in_channels, g.out_channels, g.kernel_h, g.kernel_w, g.stride, groups, g.in_h, g.in_w
    )
}

/// Median ms of `fwd`, `bwd_input`, `bwd_weight` for one geometry on `device`.
fn time_layer(g: &Conv2dGeometry, device: Device, reps: usize) -> anyhow::Result<[f64; 3]> {
    let values = |len: usize, seed: u64| Tensor::rand([len], seed).to_vec();
    let (x, w, dy) = (
        values(g.x_len(), 1),
        values(g.w_len(), 2),
        values(g.y_len(), 3),
    );
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    match device {
        Device::Cpu => {
            for rep in 0..=reps {
                let t = [
                    timed(|| Ok(cpu_conv2d::fwd(&x, &w, g)))?,
                    timed(|| Ok(cpu_conv2d::bwd_input(&dy, &w, g)))?,
                    timed(|| Ok(cpu_conv2d::bwd_weight(&dy, &x, g)))?,
                ];
                if rep > 0 {
                    (0..3).for_each(|i| times[i].push(t[i]));
                }
            }
        }
        Device::Cuda => {
            let dev = cuda::device()?;
            let (x, w, dy) = (dev.upload(&x)?, dev.upload(&w)?, dev.upload(&dy)?);
            // In bf16 mode the convs' inputs are bf16 activations, as in training.
            let x16 = if bf16::stores_bf16(&dev) {
                Some(bf16::to_bf16(&dev, &x, x.len())?)
            } else {
                None
            };
            let xv = match &x16 {
                Some(bits) => CudaValues::Bf16(bits),
                None => CudaValues::F32(&x),
            };
            // Each pass waits for the GPU before and after, so a time is that pass alone.
            let on_gpu = |f: &dyn Fn() -> ssod::Result<()>| -> anyhow::Result<f64> {
                dev.synchronize()?;
                timed(|| {
                    f()?;
                    dev.synchronize()
                })
            };
            for rep in 0..=reps {
                let t = [
                    on_gpu(&|| cuda_conv2d::fwd(&dev, xv, &w, g, x16.is_some()).map(drop))?,
                    on_gpu(&|| cuda_conv2d::bwd_input(&dev, &dy, &w, g).map(drop))?,
                    on_gpu(&|| cuda_conv2d::bwd_weight(&dev, &dy, xv, g).map(drop))?,
                ];
                if rep > 0 {
                    (0..3).for_each(|i| times[i].push(t[i]));
                }
            }
        }
    }
    Ok(times.map(median))
}

/// The device's matrix-product rate in GFLOP/s, the reference for the layers' rates: on the CPU
/// one single-threaded 1024³ sgemm per thread at once (as the conv kernels run), on CUDA one
/// 8192³ product in the current matrix precision; best of `reps`.
fn matrix_peak_gflops(device: Device, reps: usize) -> anyhow::Result<f64> {
    match device {
        Device::Cpu => Ok(ssod::backend::cpu::gemm::concurrent_peak_gflops(1024, reps)),
        Device::Cuda => {
            let n = 8192;
            let dev = cuda::device()?;
            let a = dev.upload(&Tensor::rand([n * n], 7).to_vec())?;
            let shape = cuda::gemm::GemmShape {
                batch: 1,
                m: n,
                n,
                k: n,
                trans_a: false,
                trans_b: false,
                a_batched: false,
                b_batched: false,
            };
            let mut best = f64::INFINITY;
            for _ in 0..=reps {
                dev.synchronize()?;
                best = best.min(timed(|| {
                    let c = cuda::gemm::matmul(&dev, &a, &a, &shape)?;
                    dev.synchronize()?;
                    Ok(c)
                })?);
            }
            Ok(2.0 * (n * n * n) as f64 / (best * 1e-3) / 1e9)
        }
    }
}

/// Milliseconds `f` takes; its result is dropped after the clock stops.
fn timed<R>(f: impl FnOnce() -> ssod::Result<R>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let result = f()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    drop(result);
    Ok(ms)
}

pub fn bench_conv(a: BenchConvArgs) -> anyhow::Result<()> {
    let (device, note) = Device::resolve(&a.device)?;
    if let Some(note) = note {
        eprintln!("{note}");
    }
    check_conv_args(&a)?;
    set_precision(&a, device)?;
    let algorithms = conv_algorithms(&a, device)?;
    let layers = model_layers(&a.model, a.size, a.batch)?;
    let peak = matrix_peak_gflops(device, a.reps)?;
    print_conv_header(&a, device, &layers, peak);
    let mut rows = Vec::new();
    let mut totals = StepTotals::new(algorithms.len().max(1));
    for (i, l) in layers.iter().enumerate() {
        rows.push(time_layer_row(
            i,
            l,
            &algorithms,
            (device, a.reps, peak),
            &mut totals,
        )?);
    }
    totals.print(&algorithms);
    if let Some(path) = &a.json {
        let obj = serde_json::json!({
            "model": a.model, "size": a.size, "batch": a.batch, "device": device.to_string(),
            "precision": a.precision, "reps": a.reps, "matrix_peak_gflops": peak, "layers": rows,
        });
        std::fs::write(path, serde_json::to_string_pretty(&obj)?)
            .map_err(|e| anyhow::anyhow!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Sizes the bench takes, and a `--json` file that does not exist yet.
fn check_conv_args(a: &BenchConvArgs) -> anyhow::Result<()> {
    if a.size == 0 || !a.size.is_multiple_of(32) || a.batch == 0 || a.reps == 0 {
        anyhow::bail!("--size must be a positive multiple of 32; --batch and --reps must be >= 1");
    }
    if let Some(path) = &a.json {
        if path.exists() {
            anyhow::bail!(
                "--json {}: the file exists; not overwriting it",
                path.display()
            );
        }
    }
    Ok(())
}

/// `--precision` on the GPU (the CPU computes in f32: a note says so).
fn set_precision(a: &BenchConvArgs, device: Device) -> anyhow::Result<()> {
    let precision = Precision::from_name(&a.precision).map_err(|e| anyhow::anyhow!("--{e}"))?;
    match device {
        Device::Cuda => cuda::device()?.set_matrix_precision(precision.matrix_precision())?,
        Device::Cpu if precision != Precision::F32 => eprintln!(
            "note: --precision {} applies to GPU products; the CPU computes in f32",
            a.precision
        ),
        Device::Cpu => {}
    }
    Ok(())
}

/// The algorithms to time each layer with, the device's own first (none on the CPU).
fn conv_algorithms(a: &BenchConvArgs, device: Device) -> anyhow::Result<Vec<ConvAlgorithm>> {
    Ok(match (device, a.conv.as_deref()) {
        (Device::Cpu, Some(_)) => anyhow::bail!("--conv chooses among GPU conv algorithms"),
        (Device::Cpu, None) => Vec::new(),
        (Device::Cuda, None) => vec![cuda::device()?.conv_algorithm()],
        (Device::Cuda, Some("both")) => vec![ConvAlgorithm::Im2col, ConvAlgorithm::Implicit],
        (Device::Cuda, Some(name)) => {
            vec![ConvAlgorithm::from_name(name).map_err(|e| anyhow::anyhow!("--conv: {e}"))?]
        }
    })
}

fn print_conv_header(a: &BenchConvArgs, device: Device, layers: &[Layer], peak: f64) {
    println!(
        "{} at {}x{}, batch {}: {} distinct conv layers ({} calls per forward), device {device}, \
         precision {}, median of {} reps",
        a.model,
        a.size,
        a.size,
        a.batch,
        layers.len(),
        layers.iter().map(|l| l.count).sum::<usize>(),
        a.precision,
        a.reps
    );
    println!(
        "matrix-product peak: {peak:.0} GFLOP/s ({})",
        match device {
            Device::Cpu => "one single-threaded 1024³ sgemm per thread at once",
            Device::Cuda => "one 8192³ product in this precision",
        }
    );
    println!("| # | layer | conv | calls | GFLOP fwd | ms fwd | ms bwd_input | ms bwd_weight | GFLOP/s fwd+bwd | % of peak | ms per step (all calls) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
}

/// Milliseconds per training step of the three passes (forward, input gradient, weight
/// gradient), every call counted: per algorithm (one entry on the CPU), and the faster of the
/// algorithms pass by pass.
struct StepTotals {
    step_ms: Vec<[f64; 3]>,
    best_ms: [f64; 3],
}

impl StepTotals {
    fn new(runs: usize) -> StepTotals {
        StepTotals {
            step_ms: vec![[0f64; 3]; runs],
            best_ms: [0f64; 3],
        }
    }

    fn print(&self, algorithms: &[ConvAlgorithm]) {
        for (run, ms) in self.step_ms.iter().enumerate() {
            println!(
                "per training step{} (every call; no input gradient for the convs on the images): \
                 forward {:.1} ms, input gradients {:.1} ms, weight gradients {:.1} ms, total {:.1} ms",
                algorithms
                    .get(run)
                    .map_or(String::new(), |a| format!(", {}", a.name())),
                ms[0],
                ms[1],
                ms[2],
                ms.iter().sum::<f64>()
            );
        }
        if self.step_ms.len() > 1 {
            let best_ms = &self.best_ms;
            println!(
                "per training step, the faster algorithm per layer and pass: forward {:.1} ms, input \
                 gradients {:.1} ms, weight gradients {:.1} ms, total {:.1} ms",
                best_ms[0],
                best_ms[1],
                best_ms[2],
                best_ms.iter().sum::<f64>()
            );
        }
    }
}

/// Time layer `i` with each algorithm (the device's own pass on the CPU), print its table row
/// per algorithm, add it to `totals`, and return its JSON row.
fn time_layer_row(
    i: usize,
    l: &Layer,
    algorithms: &[ConvAlgorithm],
    (device, reps, peak): (Device, usize, f64),
    totals: &mut StepTotals,
) -> anyhow::Result<serde_json::Value> {
    let g = &l.geometry;
    let gflop = 2.0 * g.macs() as f64 / 1e9;
    let per_step = [l.count, l.input_grad_count, l.count].map(|c| c as f64);
    let calls = if l.input_grad_count == l.count {
        l.count.to_string()
    } else {
        format!("{} ({} with dx)", l.count, l.input_grad_count)
    };
    let mut times = Vec::new();
    for (run, step) in totals.step_ms.iter_mut().enumerate() {
        let algorithm = algorithms.get(run).copied();
        if let Some(algorithm) = algorithm {
            cuda::device()?.set_conv_algorithm(algorithm);
        }
        let t = time_layer(g, device, reps)?;
        (0..3).for_each(|k| step[k] += t[k] * per_step[k]);
        let rate = 3.0 * gflop / t.iter().sum::<f64>() * 1e3;
        println!(
            "| {i} | {} | {} | {calls} | {gflop:.2} | {:.3} | {:.3} | {:.3} | {rate:.0} | {:.0} % | {:.2} |",
            describe(g),
            algorithm.map_or("-", ConvAlgorithm::name),
            t[0],
            t[1],
            t[2],
            100.0 * rate / peak,
            (0..3).map(|k| t[k] * per_step[k]).sum::<f64>()
        );
        times.push(t);
    }
    (0..3).for_each(|k| {
        totals.best_ms[k] += times.iter().map(|t| t[k]).fold(f64::INFINITY, f64::min) * per_step[k]
    });
    let t = times[0];
    let mut row = serde_json::json!({
        "layer": describe(g), "calls": l.count, "input_grad_calls": l.input_grad_count,
        "batch": g.batch, "in_channels": g.in_channels,
        "in_h": g.in_h, "in_w": g.in_w, "out_channels": g.out_channels, "kernel": g.kernel_h,
        "stride": g.stride, "padding": g.padding, "groups": g.groups, "gflop_fwd": gflop,
        "ms_fwd": t[0], "ms_bwd_input": t[1], "ms_bwd_weight": t[2],
    });
    if let Some(first) = algorithms.first() {
        row["conv"] = first.name().into();
    }
    for (algorithm, t) in algorithms.iter().zip(&times).skip(1) {
        row[algorithm.name()] = serde_json::json!({
            "ms_fwd": t[0], "ms_bwd_input": t[1], "ms_bwd_weight": t[2],
        });
    }
    Ok(row)
}
