//! `ssod bench simota`: SimOTA for a batch of images (cost matrix, dynamic k, conflicts), the
//! CPU assigner (`detect::simota`) against the CUDA kernels (`backend::cuda::simota`) on the same
//! random predictions, with the number of foreground anchors on which the two agree.

use std::time::Instant;

use clap::Args;

use super::bench::median;
use rand::Rng;
use ssod::backend::cuda::{self, simota as cuda_simota};
use ssod::detect::simota::{simota_assign, Assignment, SimOtaConfig, SimOtaInput};
use ssod::detect::simota_stats::AssignmentStats;
use ssod::models::YoloX;
use ssod::rng::rng_for;

#[derive(Args)]
pub struct BenchSimotaArgs {
    /// Images per batch
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Square input size (640: 8400 anchors)
    #[arg(long, default_value_t = 640)]
    pub size: usize,
    /// Ground-truth boxes per image
    #[arg(long, default_value_t = 30)]
    pub gts: usize,
    #[arg(long, default_value_t = 1)]
    pub classes: usize,
    /// Timed repetitions (the median is reported)
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
}

/// One image's random predictions and targets.
struct Image {
    boxes: Vec<[f32; 4]>,
    cls: Vec<f32>,
    obj: Vec<f32>,
    gt_boxes: Vec<[f32; 4]>,
    gt_classes: Vec<usize>,
}

fn random_image(a: &BenchSimotaArgs, grid: &[(f32, f32, f32)], i: usize) -> Image {
    let mut rng = rng_for(i as u64, "bench/simota");
    let s = a.size as f32;
    let boxes = grid
        .iter()
        .map(|&(gx, gy, st)| {
            let w = st * rng.random_range(0.5..6.0);
            let h = st * rng.random_range(0.5..6.0);
            [
                (gx + rng.random_range(0.0..1.0)) * st,
                (gy + rng.random_range(0.0..1.0)) * st,
                w,
                h,
            ]
        })
        .collect();
    let cls = (0..grid.len() * a.classes)
        .map(|_| rng.random_range(-6.0..2.0))
        .collect();
    let obj = (0..grid.len())
        .map(|_| rng.random_range(-6.0..2.0))
        .collect();
    let mut gt_boxes = Vec::new();
    for _ in 0..a.gts {
        // Sides from 8 px to a quarter of the image (at least 16 px: never an empty range).
        let max_side = (s / 4.0).max(16.0);
        let (w, h) = (
            rng.random_range(8.0..max_side),
            rng.random_range(8.0..max_side),
        );
        let cx = rng.random_range(w / 2.0..s - w / 2.0);
        let cy = rng.random_range(h / 2.0..s - h / 2.0);
        gt_boxes.push([cx, cy, w, h]);
    }
    let gt_classes = (0..a.gts).map(|_| rng.random_range(0..a.classes)).collect();
    Image {
        boxes,
        cls,
        obj,
        gt_boxes,
        gt_classes,
    }
}

/// `(fg mask, matched GT per fg anchor, IoU per fg anchor)` as `download_assignment` gives it.
type HostAssignment = (Vec<bool>, Vec<usize>, Vec<f32>);

/// The training diagnostics read the assignments (downloaded on the GPU path for the loss
/// anyway): their whole cost is this host pass, timed and printed.
fn print_diagnostics_cost(
    images: &[Image],
    assignments: &[ssod::detect::simota::Assignment],
    reps: usize,
) {
    let mut stats_ms = Vec::new();
    let mut stats = AssignmentStats::default();
    for _ in 0..reps {
        let t = Instant::now();
        stats = AssignmentStats::from_assignments(
            images
                .iter()
                .map(|img| img.gt_boxes.as_slice())
                .zip(assignments),
        );
        stats_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "diagnostics {:.4} ms per batch (per-size counts of the {} positives; median of {})",
        median(stats_ms),
        stats.total().positives,
        reps
    );
}

pub fn bench_simota(a: BenchSimotaArgs) -> anyhow::Result<()> {
    if a.size == 0 || !a.size.is_multiple_of(32) || a.batch == 0 || a.classes == 0 || a.reps == 0 {
        anyhow::bail!(
            "--size must be a positive multiple of 32; --batch, --classes and --reps must be >= 1"
        );
    }
    let grid = YoloX::anchor_grid(a.size, a.size);
    let images: Vec<Image> = (0..a.batch).map(|i| random_image(&a, &grid, i)).collect();
    let anchors = Anchors {
        count: grid.len(),
        grids: grid.iter().map(|&(x, y, _)| (x, y)).collect(),
        strides: grid.iter().map(|&(_, _, s)| s).collect(),
    };
    let cfg = SimOtaConfig::default();
    let (cpu_ms, cpu_result) = time_cpu(&a, &images, &anchors, &cfg)?;
    println!(
        "SimOTA, {} images x {} anchors x {} GTs, {} classes (release prior, radius {})",
        a.batch,
        grid.len(),
        a.gts,
        a.classes,
        cfg.center_radius
    );
    println!(
        "cpu   {:.2} ms per batch (median of {}, one thread per image in turn)",
        median(cpu_ms),
        a.reps
    );
    print_diagnostics_cost(&images, &cpu_result, a.reps);
    let dev = match cuda::CudaAvailability::probe() {
        Ok(d) => d,
        Err(reason) => {
            println!("cuda  skipped: {reason}");
            return Ok(());
        }
    };
    let (gpu_ms, gpu_dl_ms, gpu_result) = time_gpu(&dev, &a, &images, &anchors, &cfg)?;
    let (agree, total_fg) = agreement(&cpu_result, &gpu_result);
    println!(
        "cuda  {:.2} ms per batch on {} (kernels), {:.2} ms with the assignments copied back",
        median(gpu_ms),
        dev.name(),
        median(gpu_dl_ms)
    );
    println!("agreement: {agree} of {total_fg} CPU foreground (anchor, GT) pairs also assigned on the GPU");
    Ok(())
}

/// The anchor grid as SimOTA takes it: cells `(gx, gy)` and strides.
struct Anchors {
    count: usize,
    grids: Vec<(f32, f32)>,
    strides: Vec<f32>,
}

/// The CPU assignment of every image, `reps` times: the time of each rep (ms) and the last
/// rep's assignments.
fn time_cpu(
    a: &BenchSimotaArgs,
    images: &[Image],
    anchors: &Anchors,
    cfg: &SimOtaConfig,
) -> anyhow::Result<(Vec<f64>, Vec<Assignment>)> {
    let assign_cpu = |img: &Image| {
        simota_assign(
            &SimOtaInput {
                pred_boxes_cxcywh: &img.boxes,
                cls_logits: &img.cls,
                obj_logits: &img.obj,
                grids: &anchors.grids,
                strides: &anchors.strides,
                gt_boxes_cxcywh: &img.gt_boxes,
                gt_classes: &img.gt_classes,
                num_classes: a.classes,
            },
            cfg,
        )
    };
    let mut cpu_ms = Vec::new();
    let mut cpu_result = Vec::new();
    for _ in 0..a.reps {
        let t = Instant::now();
        cpu_result = images
            .iter()
            .map(assign_cpu)
            .collect::<Result<Vec<_>, _>>()?;
        cpu_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((cpu_ms, cpu_result))
}

/// The GPU assignment of every image after one warm-up run, `reps` times without and with the
/// download of the assignments: both times per rep (ms) and the last downloaded assignments.
#[allow(clippy::type_complexity)]
fn time_gpu(
    dev: &cuda::CudaDevice,
    a: &BenchSimotaArgs,
    images: &[Image],
    anchors: &Anchors,
    cfg: &SimOtaConfig,
) -> anyhow::Result<(Vec<f64>, Vec<f64>, Vec<HostAssignment>)> {
    let flat = |v: &[[f32; 4]]| v.iter().flatten().copied().collect::<Vec<f32>>();
    let grids_flat: Vec<f32> = anchors.grids.iter().flat_map(|&(x, y)| [x, y]).collect();
    let (g_dev, s_dev) = (dev.upload(&grids_flat)?, dev.upload(&anchors.strides)?);
    let uploaded = images
        .iter()
        .map(|img| {
            Ok((
                dev.upload(&flat(&img.boxes))?,
                dev.upload(&img.cls)?,
                dev.upload(&img.obj)?,
            ))
        })
        .collect::<ssod::Result<Vec<_>>>()?;
    let prior = cuda_simota::SimOtaPrior::Release;
    let run = |download: bool| -> anyhow::Result<(f64, Vec<HostAssignment>)> {
        dev.synchronize()?;
        let t = Instant::now();
        let mut out = Vec::new();
        let mut device_results = Vec::new();
        for (img, (b, c, o)) in images.iter().zip(&uploaded) {
            let inp = cuda_simota::SimOtaDeviceInput {
                pred_boxes: b,
                cls_logits: c,
                obj_logits: o,
                grids: &g_dev,
                strides: &s_dev,
                num_anchors: anchors.count,
                num_classes: a.classes,
            };
            device_results.push(cuda_simota::assign(
                dev,
                &inp,
                &img.gt_boxes,
                &img.gt_classes,
                prior,
                cfg.center_radius,
            )?);
        }
        if download {
            for r in &device_results {
                out.push(cuda_simota::download_assignment(dev, r)?);
            }
        }
        dev.synchronize()?;
        Ok((t.elapsed().as_secs_f64() * 1e3, out))
    };
    run(true)?; // warm-up: compiles and loads the module
    let mut gpu_ms = Vec::new();
    let mut gpu_dl_ms = Vec::new();
    let mut gpu_result = Vec::new();
    for _ in 0..a.reps {
        gpu_ms.push(run(false)?.0);
        let (ms, r) = run(true)?;
        gpu_dl_ms.push(ms);
        gpu_result = r;
    }
    Ok((gpu_ms, gpu_dl_ms, gpu_result))
}

/// `(pairs, total)`: how many of the CPU's foreground (anchor, GT) pairs the GPU assigned too,
/// of all the CPU's foreground anchors.
fn agreement(cpu_result: &[Assignment], gpu_result: &[HostAssignment]) -> (usize, usize) {
    let (mut agree, mut total_fg) = (0usize, 0usize);
    for (c, (fg, gts, _)) in cpu_result.iter().zip(gpu_result) {
        total_fg += c.num_fg;
        let cpu_pairs: Vec<(usize, usize)> = c
            .fg_indices()
            .into_iter()
            .zip(c.matched_gt.iter().copied())
            .collect();
        let gpu_fg: Vec<usize> = fg
            .iter()
            .enumerate()
            .filter(|(_, &f)| f)
            .map(|(i, _)| i)
            .collect();
        let gpu_pairs: std::collections::HashSet<(usize, usize)> =
            gpu_fg.into_iter().zip(gts.iter().copied()).collect();
        agree += cpu_pairs.iter().filter(|p| gpu_pairs.contains(p)).count();
    }
    (agree, total_fg)
}
