//! Data benchmarks (not tests): `cargo bench --bench data`.
//! 1. `ssod synth` throughput at 1280×720 (render + JPEG + VOC + json), all cores.
//! 2. The YOLOX-S mosaic pipeline at 640 through the loader (2 workers, batch 8), with and
//!    without the RAM cache of decoded images.

use std::time::Instant;

use ssod::data::augment::AugmentConfig;
use ssod::data::loader::{Loader, LoaderConfig};
use ssod::data::synth::{generate, SynthConfig};
use ssod::data::CocoDataset;

/// CPU seconds (user + system) this process has used so far, from /proc/self/stat; None elsewhere.
/// The machine is shared, so wall-clock figures vary with the neighbours' load; CPU time per
/// image does not, and 2 / (CPU s per image) is the rate on 2 dedicated cores.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn report(what: &str, images: usize, wall: f64, cpu: Option<f64>) {
    let per_cpu = cpu.map(|c| {
        format!(
            ", {:.1} ms CPU/image = {:.1} images/s on 2 dedicated cores",
            1e3 * c / images as f64,
            2.0 * images as f64 / c
        )
    });
    println!(
        "{what}: {images} images in {wall:.2} s wall = {:.1} images/s{}",
        images as f64 / wall,
        per_cpu.unwrap_or_default()
    );
}

fn main() {
    let root = std::env::temp_dir().join(format!("ssod-bench-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let n = 96;
    let cfg = SynthConfig {
        out: root.clone(),
        train: n,
        test: 0,
        width: 1280,
        height: 720,
        videos: 0,
        frames_per_video: 0,
        seed: 1,
    };
    // Build the process-wide wave textures first (once per run, not per image).
    let _ = ssod::data::synth::render_labeled(0, "warmup", 0, 64, 36);
    let (t, c0) = (Instant::now(), cpu_seconds());
    generate(&cfg).expect("synth");
    let cpu = cpu_seconds().zip(c0).map(|(a, b)| a - b);
    report(
        &format!(
            "synth 1280x720 ({} rayon threads)",
            rayon::current_num_threads()
        ),
        n,
        t.elapsed().as_secs_f64(),
        cpu,
    );

    let mut ds = CocoDataset::read(&root.join("train.json")).expect("train.json");
    ds.image_dir = root.join("training/images");
    for cache in [false, true] {
        let mut lc = LoaderConfig::new(8, AugmentConfig::yolox_s(640, 640));
        lc.workers = 2;
        lc.cache = cache;
        let loader = Loader::new(&ds, lc).expect("loader");
        if cache {
            // Warm the cache with one epoch; time the next.
            let _ = loader.epoch(0).count();
        }
        let (t, c0) = (Instant::now(), cpu_seconds());
        let images: usize = loader.epoch(1).map(|b| b.expect("batch").batch).sum();
        let cpu = cpu_seconds().zip(c0).map(|(a, b)| a - b);
        let what = format!(
            "loader mosaic+mixup 640, batch 8, 2 workers, cache {}",
            if cache { "on " } else { "off" }
        );
        report(&what, images, t.elapsed().as_secs_f64(), cpu);
    }
    let _ = std::fs::remove_dir_all(&root);
}
