//! Where `ssod bench train` gets its batches: random images and boxes made before the clock
//! starts (the step alone), or the real loader over a data set (`--data`: decode, mosaic, affine,
//! mixup, HSV and flips in the loader's workers beside the steps, as an epoch of training runs).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use rand::Rng;
use ssod::data::convert::ConvertOptions;
use ssod::data::dataset::CocoDataset;
use ssod::data::loader::{Batch, EpochIter, Loader};
use ssod::data::voc::{read_flow_split, read_labels};
use ssod::rng::rng_for;
use ssod::train::trainer::loader_config;
use ssod::train::TrainConfig;

/// A batch of uniform-noise images with `gts` random boxes each, or 1-5 when `None` (seeded).
pub(super) fn random_batch(
    batch: usize,
    size: usize,
    classes: usize,
    gts: Option<usize>,
    step: usize,
) -> Batch {
    let mut rng = rng_for(step as u64, "bench/train");
    let images: Vec<f32> = (0..batch * 3 * size * size)
        .map(|_| rng.random_range(0.0..255.0))
        .collect();
    let max_labels = gts.unwrap_or(5).max(1);
    let mut labels = vec![0f32; batch * max_labels * 5];
    let mut num_labels = Vec::with_capacity(batch);
    for b in 0..batch {
        let n = gts.unwrap_or_else(|| rng.random_range(1..=5));
        for l in 0..n {
            let w = rng.random_range(8.0..size as f32 / 3.0);
            let h = rng.random_range(8.0..size as f32 / 3.0);
            let cx = rng.random_range(w / 2.0..size as f32 - w / 2.0);
            let cy = rng.random_range(h / 2.0..size as f32 - h / 2.0);
            let c = rng.random_range(0..classes) as f32;
            labels[(b * max_labels + l) * 5..(b * max_labels + l + 1) * 5]
                .copy_from_slice(&[c, cx, cy, w, h]);
        }
        num_labels.push(n);
    }
    Batch {
        images,
        batch,
        height: size,
        width: size,
        labels,
        max_labels,
        num_labels,
        image_ids: (0..batch as u64).collect(),
    }
}

/// A FloW/VOC folder (its `training/` split) or a COCO json.
fn read_set(data: &Path) -> anyhow::Result<CocoDataset> {
    let set = if data.is_dir() {
        let labels = read_labels(&data.join("labels.txt"))
            .with_context(|| format!("--data {}: needs labels.txt", data.display()))?;
        read_flow_split(data, "training", &labels, &ConvertOptions::default())
            .with_context(|| format!("--data {}: the training/ split", data.display()))?
            .0
    } else {
        CocoDataset::read(data).with_context(|| format!("--data {}", data.display()))?
    };
    if set.images.is_empty() {
        anyhow::bail!("--data {}: no images", data.display());
    }
    Ok(set)
}

/// The batches a benchmark steps through.
pub(super) enum BatchSource {
    /// Made in advance and cycled (the first is the warm-up batch).
    Random { batches: Vec<Batch>, next: usize },
    /// The training loader, epoch after epoch.
    Loader {
        loader: Box<Loader>,
        epoch: usize,
        iter: Option<EpochIter>,
    },
}

impl BatchSource {
    /// Random batches for `steps` steps (at most 4 distinct ones, plus the warm-up batch).
    pub fn random(cfg: &TrainConfig, classes: usize, gts: Option<usize>, steps: usize) -> Self {
        let size = cfg.input_size.0;
        let batches = (0..=steps.min(4))
            .map(|s| random_batch(cfg.batch_size, size, classes, gts, s))
            .collect();
        BatchSource::Random { batches, next: 0 }
    }

    /// The loader of `cfg`'s recipe over `data` with `workers` threads.
    pub fn loader(
        data: &Path,
        cfg: &TrainConfig,
        workers: usize,
        cache: bool,
    ) -> anyhow::Result<Self> {
        let set = read_set(data)?;
        let loader = Loader::new(&set, loader_config(cfg, false, workers, cache))?;
        Ok(BatchSource::Loader {
            loader: Box::new(loader),
            epoch: 0,
            iter: None,
        })
    }

    pub fn next_batch(&mut self) -> anyhow::Result<Batch> {
        match self {
            BatchSource::Random { batches, next } => {
                // The warm-up batch once, then the others in turn.
                let i = if *next == 0 {
                    0
                } else {
                    1 + (*next - 1) % (batches.len() - 1).max(1)
                };
                *next += 1;
                Ok(batches[i.min(batches.len() - 1)].clone())
            }
            BatchSource::Loader {
                loader,
                epoch,
                iter,
            } => loop {
                if let Some(b) = iter.get_or_insert_with(|| loader.epoch(*epoch)).next() {
                    return Ok(b?);
                }
                let finished = iter.take().map(|it| it.summary());
                if finished.is_some_and(|s| s.batches == 0) {
                    anyhow::bail!("--data: an epoch of the loader produced no batch");
                }
                *epoch += 1;
            },
        }
    }

    /// Images per second of the loader alone over `batches` batches (None for random batches).
    pub fn loader_alone(&self, batches: usize) -> Option<f64> {
        let BatchSource::Loader { loader, .. } = self else {
            return None;
        };
        let t = Instant::now();
        // Measured before the steps run (with `--cache`, this pass fills the RAM cache).
        let images: usize = loader
            .epoch(1000)
            .take(batches)
            .map(|b| b.map_or(0, |b| b.batch))
            .sum();
        Some(images as f64 / t.elapsed().as_secs_f64())
    }
}
