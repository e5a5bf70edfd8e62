//! `ssod synth` (a FloW-like generated data set) and `ssod preview` (augmented samples with their
//! boxes drawn).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use ssod::data::synth::{generate, SynthConfig};
use ssod::data::CocoDataset;

#[derive(Subcommand)]
pub enum SynthCommand {
    /// Generate a FloW-like data set: training/ and test/ (JPEG + VOC XML), labels.txt,
    /// train.json/test.json and unlabeled video frames. The same seed gives byte-identical files.
    Synth(Synth),
}

#[derive(Args)]
pub struct Synth {
    /// Output folder. It must be empty or absent unless --force is given.
    #[arg(long)]
    out: PathBuf,
    /// Write into a non-empty --out (files with the same names are replaced).
    #[arg(long)]
    force: bool,
    /// Number of labelled training images.
    #[arg(long, default_value_t = 1200)]
    train: usize,
    /// Number of labelled test images.
    #[arg(long, default_value_t = 800)]
    test: usize,
    /// Image size WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720", value_parser = parse_size)]
    size: (u32, u32),
    /// Number of unlabeled videos.
    #[arg(long, default_value_t = 4)]
    videos: usize,
    /// Frames per unlabeled video.
    #[arg(long, default_value_t = 250)]
    frames_per_video: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT (e.g. 1280x720)"))?;
    let w: u32 = w.trim().parse().map_err(|_| format!("`{w}` in `{s}` is not a width"))?;
    let h: u32 = h.trim().parse().map_err(|_| format!("`{h}` in `{s}` is not a height"))?;
    if w < 16 || h < 16 || w > 16384 || h > 16384 {
        return Err(format!("size {w}x{h} must be between 16x16 and 16384x16384"));
    }
    Ok((w, h))
}

/// Refuse to write into a folder that already holds something, unless forced.
fn check_out_dir(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if out.is_file() {
        bail!("--out {} is a file, not a folder", out.display());
    }
    if out.is_dir() && !force {
        let mut entries = std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
        if entries.next().is_some() {
            bail!("--out {} is not empty; pass --force to write into it", out.display());
        }
    }
    Ok(())
}

/// COCO size classes of original-resolution boxes: small < 32², medium < 96², large.
fn size_histogram(ds: &CocoDataset) -> [usize; 3] {
    let mut h = [0; 3];
    for a in &ds.annotations {
        let area = a.bbox_xywh[2] * a.bbox_xywh[3];
        h[if area < 32.0 * 32.0 { 0 } else if area < 96.0 * 96.0 { 1 } else { 2 }] += 1;
    }
    h
}

fn print_split(name: &str, ds: &CocoDataset) {
    let (n_img, n_obj) = (ds.images.len(), ds.annotations.len());
    let per = if n_img > 0 { n_obj as f64 / n_img as f64 } else { 0.0 };
    let [s, m, l] = size_histogram(ds);
    let pct = |k: usize| if n_obj > 0 { 100.0 * k as f64 / n_obj as f64 } else { 0.0 };
    println!(
        "{name}: {n_img} images, {n_obj} objects, {per:.2} objects/image; \
         small {s} ({:.1}%), medium {m} ({:.1}%), large {l} ({:.1}%)",
        pct(s),
        pct(m),
        pct(l)
    );
}

impl SynthCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            SynthCommand::Synth(a) => {
                check_out_dir(&a.out, a.force)?;
                let cfg = SynthConfig {
                    out: a.out.clone(),
                    train: a.train,
                    test: a.test,
                    width: a.size.0,
                    height: a.size.1,
                    videos: a.videos,
                    frames_per_video: a.frames_per_video,
                    seed: a.seed,
                };
                let start = Instant::now();
                let summary = generate(&cfg)?;
                let secs = start.elapsed().as_secs_f64();
                let images = summary.train.images.len() + summary.test.images.len() + summary.video_frames;
                print_split("train", &summary.train);
                print_split("test", &summary.test);
                println!("unlabeled: {} video frames in {} videos", summary.video_frames, a.videos);
                println!(
                    "wrote {} images to {} in {secs:.1} s ({:.1} images/s)",
                    images,
                    a.out.display(),
                    images as f64 / secs.max(1e-9)
                );
                Ok(())
            }
        }
    }
}
