//! The training data loader: worker threads prefetch augmented batches into a bounded window.
//!
//! Determinism: the epoch's image order comes from `rng_for(seed, "loader/shuffle/<epoch>")`, the
//! augmentation of the sample at position `p` from `rng_for(seed, "loader/augment/<epoch>/<p>")`,
//! and the multiscale size of batch group `g` from `rng_for(seed, "loader/multiscale/<epoch>/<g>")`.
//! Workers only decide *when* a batch is built, never *what* is in it, so the batches are the same
//! for any number of workers; the consumer receives them in order (`data::prefetch`).
//!
//! A corrupt, truncated or missing image is an error naming the file: the epoch's iterator
//! yields it as an `Err` in the batch's place (never a panic, never a silent gap). With
//! `skip_bad_images` the sample is skipped instead, with one warning naming the file (per
//! loader), and counted in the epoch summary; a batch that loses samples is that much smaller
//! (`Batch::batch`). A worker thread that panics ends the epoch with an `Err` as well.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::data::augment::{
    augment, resize_bilinear, AugmentConfig, Augmented, Sample, SampleSource,
};
use crate::data::dataset::CocoDataset;
use crate::data::image_io::read_rgb;
use crate::data::prefetch::Prefetch;
use crate::rng::rng_for;
use crate::{Error, Result};

/// One batch, ready for the engine: images `[B, 3, H, W]` BGR 0..255 letterboxed (YOLOX input
/// convention), labels `[B, max_labels, 5]` = (class, cx, cy, w, h) in input pixels, zero-padded.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub labels: Vec<f32>,
    pub max_labels: usize,
    pub num_labels: Vec<usize>,
    pub image_ids: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub workers: usize,
    /// How many batches may be built ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
    pub augment: AugmentConfig,
    /// Keep decoded images in RAM after their first use.
    pub cache: bool,
    pub shuffle: bool,
    pub drop_last: bool,
    /// Label slots per image (YOLOX pads to 120).
    pub max_labels: usize,
    /// Multiscale (YOLOX): batch height `32·randint(lo, hi)` (inclusive), width following the
    /// aspect of the configured input, a new size every `multiscale_every` batches; the augmented
    /// images are resized to it. None: always the configured input size.
    pub multiscale: Option<(u32, u32)>,
    pub multiscale_every: usize,
    /// Skip samples whose image cannot be read (warned and counted) instead of failing.
    pub skip_bad_images: bool,
}

impl LoaderConfig {
    pub fn new(batch_size: usize, augment: AugmentConfig) -> Self {
        LoaderConfig {
            batch_size,
            workers: 2,
            prefetch: 4,
            seed: 0,
            augment,
            cache: false,
            shuffle: true,
            drop_last: false,
            max_labels: 120,
            multiscale: None,
            multiscale_every: 10,
            skip_bad_images: false,
        }
    }
}

/// What one epoch produced and skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochSummary {
    pub epoch: usize,
    pub batches: usize,
    pub images: usize,
    /// Samples dropped because an image they needed could not be read.
    pub skipped_samples: usize,
    /// The unreadable files met so far.
    pub bad_files: Vec<PathBuf>,
    /// Samples whose augmented boxes all vanished (the original was used).
    pub fallbacks: usize,
}

impl std::fmt::Display for EpochSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "epoch {}: {} batches, {} images, {} skipped ({} unreadable file(s)), {} fallbacks to the original",
            self.epoch,
            self.batches,
            self.images,
            self.skipped_samples,
            self.bad_files.len(),
            self.fallbacks
        )
    }
}

/// A decoded image, or why it could not be read (cached too, so a bad file is read once).
type Decoded = std::result::Result<Arc<RgbImage>, String>;

/// Images and boxes of a dataset, with the optional decoded-image cache.
struct DatasetSource {
    paths: Vec<PathBuf>,
    image_ids: Vec<u64>,
    /// Per image: boxes `xyxy` and class indices.
    boxes: Vec<(Vec<[f32; 4]>, Vec<u32>)>,
    cache: Option<Vec<OnceLock<Decoded>>>,
    bad: Mutex<BTreeSet<PathBuf>>,
    skip_bad_images: bool,
}

impl DatasetSource {
    fn new(ds: &CocoDataset, cache: bool, skip_bad_images: bool) -> Self {
        let class_index = ds.class_index();
        let by_image = ds.annotations_by_image();
        let boxes = ds
            .images
            .iter()
            .map(|im| {
                let mut b = Vec::new();
                let mut c = Vec::new();
                for a in by_image.get(&im.id).map(Vec::as_slice).unwrap_or(&[]) {
                    let [x, y, w, h] = a.bbox_xywh;
                    if let (true, Some(&ci)) = (w > 0.0 && h > 0.0, class_index.get(&a.category_id))
                    {
                        b.push([x as f32, y as f32, (x + w) as f32, (y + h) as f32]);
                        c.push(ci as u32);
                    }
                }
                (b, c)
            })
            .collect();
        DatasetSource {
            paths: ds.images.iter().map(|im| ds.image_path(im)).collect(),
            image_ids: ds.images.iter().map(|im| im.id).collect(),
            boxes,
            cache: cache.then(|| (0..ds.images.len()).map(|_| OnceLock::new()).collect()),
            bad: Mutex::new(BTreeSet::new()),
            skip_bad_images,
        }
    }

    /// The image, or why it cannot be read (without the file name: the caller adds it).
    fn decode(&self, index: usize) -> Decoded {
        let path = &self.paths[index];
        read_rgb(path).map(Arc::new).map_err(|e| {
            let text = e.to_string();
            let named = format!("{}: ", path.display());
            text.strip_prefix(&named).unwrap_or(&text).to_string()
        })
    }

    fn image(&self, index: usize) -> Result<Arc<RgbImage>> {
        let got = match &self.cache {
            Some(cache) => cache[index].get_or_init(|| self.decode(index)).clone(),
            None => self.decode(index),
        };
        got.map_err(|msg| {
            let path = self.paths[index].clone();
            if !self.skip_bad_images {
                return Error::format(
                    path.display(),
                    format!(
                        "unreadable image ({msg}); fix or remove it, or set skip_bad_images: \
                         true to skip unreadable images (counted per epoch)"
                    ),
                );
            }
            let mut bad = self.bad.lock().unwrap_or_else(|e| e.into_inner());
            if bad.insert(path.clone()) {
                eprintln!(
                    "warning: skipping unreadable image {}: {msg}",
                    path.display()
                );
            }
            Error::format(path.display(), msg)
        })
    }
}

impl SampleSource for DatasetSource {
    fn len(&self) -> usize {
        self.paths.len()
    }
    fn num_boxes(&self, index: usize) -> usize {
        self.boxes[index].0.len()
    }
    fn load(&self, index: usize) -> Result<Sample> {
        let image = self.image(index)?;
        let (boxes_xyxy, classes) = self.boxes[index].clone();
        Ok(Sample {
            image: (*image).clone(),
            boxes_xyxy,
            classes,
        })
    }
}

pub struct Loader {
    source: Arc<DatasetSource>,
    cfg: LoaderConfig,
}

impl Loader {
    /// A loader over `dataset` (its `image_dir` must point at the images).
    pub fn new(dataset: &CocoDataset, cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(Error::InvalidArgument(
                "loader batch_size must be at least 1".into(),
            ));
        }
        if dataset.images.is_empty() {
            return Err(Error::InvalidArgument(
                "loader: the dataset has no images".into(),
            ));
        }
        if let Some((lo, hi)) = cfg.multiscale {
            if lo == 0 || lo > hi {
                return Err(Error::InvalidArgument(format!(
                    "loader multiscale range ({lo}, {hi}) needs 1 <= lo <= hi"
                )));
            }
        }
        Ok(Loader {
            source: Arc::new(DatasetSource::new(dataset, cfg.cache, cfg.skip_bad_images)),
            cfg,
        })
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Number of batches per epoch.
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.source.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The epoch's image order (indices into the dataset).
    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.source.len()).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut rng_for(
                self.cfg.seed,
                &format!("loader/shuffle/{epoch}"),
            ));
        }
        order
    }

    /// Start an epoch: workers begin prefetching at once; iterate to receive the batches in order.
    pub fn epoch(&self, epoch: usize) -> EpochIter {
        let order = Arc::new(self.order(epoch));
        let (source, cfg) = (self.source.clone(), self.cfg.clone());
        let prefetch = Prefetch::start(
            self.batches_per_epoch(),
            self.cfg.workers,
            self.cfg.prefetch,
            move |b| build_batch(&source, &cfg, epoch, &order, b),
        );
        EpochIter {
            prefetch,
            source: self.source.clone(),
            summary: EpochSummary {
                epoch,
                ..Default::default()
            },
            ended: false,
        }
    }

    /// Build one batch on the calling thread (what a worker does), for previews and tests.
    pub fn build_batch(&self, epoch: usize, batch_index: usize) -> Result<(Batch, BatchStats)> {
        let order = self.order(epoch);
        build_batch(&self.source, &self.cfg, epoch, &order, batch_index)
    }

    /// The augmented samples of one batch (images still `RgbImage`), for `ssod preview`.
    pub fn augmented_samples(&self, epoch: usize, batch_index: usize) -> Result<Vec<Augmented>> {
        let order = self.order(epoch);
        let (samples, _) = batch_samples(&self.source, &self.cfg, epoch, &order, batch_index)?;
        Ok(samples.into_iter().map(|(_, a)| a).collect())
    }
}

/// Per-batch counts that feed the epoch summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub skipped: usize,
    pub fallbacks: usize,
}

/// Input size (w, h) of batch `b`: the configured one, or YOLOX's multiscale draw for its group.
fn batch_size_wh(cfg: &LoaderConfig, epoch: usize, b: usize) -> (u32, u32) {
    let (w, h) = (cfg.augment.input_w, cfg.augment.input_h);
    match cfg.multiscale {
        None => (w, h),
        Some((lo, hi)) => {
            let group = b / cfg.multiscale_every.max(1);
            let mut rng = rng_for(cfg.seed, &format!("loader/multiscale/{epoch}/{group}"));
            let size = rng.random_range(lo..=hi);
            // YOLOX: (32·size, 32·int(size·W/H)).
            let aspect = w as f32 / h as f32;
            (32 * ((size as f32 * aspect) as u32).max(1), 32 * size)
        }
    }
}

type BatchSamples = (Vec<(u64, Augmented)>, BatchStats);

fn batch_samples(
    source: &DatasetSource,
    cfg: &LoaderConfig,
    epoch: usize,
    order: &[usize],
    b: usize,
) -> Result<BatchSamples> {
    let start = b * cfg.batch_size;
    let end = (start + cfg.batch_size).min(order.len());
    let mut stats = BatchStats::default();
    let mut out = Vec::new();
    for (pos, &index) in order.iter().enumerate().take(end).skip(start) {
        let mut rng = rng_for(cfg.seed, &format!("loader/augment/{epoch}/{pos}"));
        match augment(source, index, &cfg.augment, &mut rng) {
            Ok(a) => {
                stats.fallbacks += usize::from(a.fell_back);
                out.push((source.image_ids[index], a));
            }
            // The warning naming the file was printed when it failed to load.
            Err(_) if cfg.skip_bad_images => stats.skipped += 1,
            Err(e) => return Err(e),
        }
    }
    Ok((out, stats))
}

fn build_batch(
    source: &DatasetSource,
    cfg: &LoaderConfig,
    epoch: usize,
    order: &[usize],
    b: usize,
) -> Result<(Batch, BatchStats)> {
    let (samples, stats) = batch_samples(source, cfg, epoch, order, b)?;
    let (w, h) = batch_size_wh(cfg, epoch, b);
    let (wu, hu) = (w as usize, h as usize);
    let n = samples.len();
    let ml = cfg.max_labels;
    let mut batch = Batch {
        images: vec![0.0; n * 3 * hu * wu],
        batch: n,
        height: hu,
        width: wu,
        labels: vec![0.0; n * ml * 5],
        max_labels: ml,
        num_labels: Vec::with_capacity(n),
        image_ids: Vec::with_capacity(n),
    };
    let plane = hu * wu;
    for (i, (id, a)) in samples.into_iter().enumerate() {
        // YOLOX multiscale: the batch is bilinearly resized and the labels scaled with it.
        let (sx, sy) = (
            w as f32 / a.image.width() as f32,
            h as f32 / a.image.height() as f32,
        );
        let img = if (a.image.width(), a.image.height()) == (w, h) {
            a.image
        } else {
            resize_bilinear(&a.image, w, h)
        };
        let dst = &mut batch.images[i * 3 * plane..(i + 1) * 3 * plane];
        // RGB pixels -> BGR planes (YOLOX input convention).
        for (p, px) in img.as_raw().chunks_exact(3).enumerate() {
            dst[p] = px[2] as f32;
            dst[plane + p] = px[1] as f32;
            dst[2 * plane + p] = px[0] as f32;
        }
        let k = a.boxes_cxcywh.len().min(ml);
        for (j, (bx, &c)) in a.boxes_cxcywh.iter().zip(&a.classes).take(k).enumerate() {
            let o = (i * ml + j) * 5;
            batch.labels[o..o + 5].copy_from_slice(&[
                c as f32,
                bx[0] * sx,
                bx[1] * sy,
                bx[2] * sx,
                bx[3] * sy,
            ]);
        }
        batch.num_labels.push(k);
        batch.image_ids.push(id);
    }
    Ok((batch, stats))
}

/// The batches of one epoch, in order.
pub struct EpochIter {
    prefetch: Prefetch<Result<(Batch, BatchStats)>>,
    source: Arc<DatasetSource>,
    summary: EpochSummary,
    /// The stream ended (all batches, or a worker's panic reported once).
    ended: bool,
}

impl EpochIter {
    /// What the epoch has produced and skipped so far (complete once the iterator is exhausted).
    pub fn summary(&self) -> EpochSummary {
        let mut s = self.summary.clone();
        s.bad_files = self
            .source
            .bad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        s
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    /// The next batch, or the error that kept it from being built (an unreadable image, named);
    /// a worker that panicked ends the epoch with an error rather than a hang or a short epoch.
    fn next(&mut self) -> Option<Result<Batch>> {
        if self.ended {
            return None;
        }
        let Some(built) = self.prefetch.next() else {
            self.ended = true;
            return self.prefetch.failed().then(|| {
                Err(Error::Msg(format!(
                    "loader: a worker thread panicked building batch {} of epoch {} (its \
                     message is above)",
                    self.summary.batches, self.summary.epoch
                )))
            });
        };
        let (batch, stats) = match built {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        };
        self.summary.batches += 1;
        self.summary.images += batch.batch;
        self.summary.skipped_samples += stats.skipped;
        self.summary.fallbacks += stats.fallbacks;
        Some(Ok(batch))
    }
}

/// Map from image id to its index in the dataset (for callers that look batches up).
pub fn image_index(ds: &CocoDataset) -> HashMap<u64, usize> {
    ds.images
        .iter()
        .enumerate()
        .map(|(i, im)| (im.id, i))
        .collect()
}
