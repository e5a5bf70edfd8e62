//! `ssod synth` (a FloW-like generated data set) and `ssod preview` (augmented samples with their
//! boxes drawn).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use ssod::data::augment::AugmentConfig;
use ssod::data::loader::{Loader, LoaderConfig};
use ssod::data::synth::{generate, SynthConfig};
use ssod::data::CocoDataset;

#[derive(Subcommand)]
pub enum SynthCommand {
    /// Generate a FloW-like data set: training/ and test/ (JPEG + VOC XML), labels.txt,
    /// train.json/test.json and unlabeled video frames. The same seed gives byte-identical files.
    Synth(Synth),
    /// Draw a grid of augmented training samples with their boxes (the way to see that boxes
    /// follow pixels). Without --mosaic: HSV, flip and letterbox; with it: YOLOX's mosaic, random
    /// affine and mixup as well.
    Preview(Preview),
}

#[derive(Args)]
pub struct Preview {
    /// A FloW-layout folder (train.json + training/images, e.g. from `ssod synth`) or a COCO json.
    #[arg(long)]
    data: PathBuf,
    /// Folder of the images when --data is a json (default: the json's folder).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Output PNG. An existing file is not replaced unless --force is given.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    force: bool,
    /// Use mosaic + random affine + mixup (YOLOX-S's recipe).
    #[arg(long)]
    mosaic: bool,
    /// Number of samples in the grid.
    #[arg(long, default_value_t = 16)]
    count: usize,
    /// Input size of each sample (square).
    #[arg(long, default_value_t = 416)]
    input: u32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    let w: u32 = w
        .trim()
        .parse()
        .map_err(|_| format!("`{w}` in `{s}` is not a width"))?;
    let h: u32 = h
        .trim()
        .parse()
        .map_err(|_| format!("`{h}` in `{s}` is not a height"))?;
    if w < 16 || h < 16 || w > 16384 || h > 16384 {
        return Err(format!(
            "size {w}x{h} must be between 16x16 and 16384x16384"
        ));
    }
    Ok((w, h))
}

/// Refuse to write into a folder that already holds something, unless forced.
fn check_out_dir(out: &std::path::Path, force: bool) -> anyhow::Result<()> {
    if out.is_file() {
        bail!("--out {} is a file, not a folder", out.display());
    }
    if out.is_dir() && !force {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "--out {} is not empty; pass --force to write into it",
                out.display()
            );
        }
    }
    Ok(())
}

/// The same summary as `ssod stats` (images, objects, objects per image, COCO size histogram).
fn print_split(name: &str, ds: &CocoDataset) {
    println!("{name}:\n{}", ssod::data::stats::summarize(ds));
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
                let images =
                    summary.train.images.len() + summary.test.images.len() + summary.video_frames;
                print_split("train", &summary.train);
                print_split("test", &summary.test);
                println!(
                    "unlabeled: {} video frames in {} videos",
                    summary.video_frames, a.videos
                );
                println!(
                    "wrote {} images to {} in {secs:.1} s ({:.1} images/s)",
                    images,
                    a.out.display(),
                    images as f64 / secs.max(1e-9)
                );
                Ok(())
            }
            SynthCommand::Preview(p) => preview(p),
        }
    }
}

/// Read the dataset named by `--data` with its image folder resolved.
fn open_dataset(
    data: &std::path::Path,
    images: Option<&std::path::Path>,
) -> anyhow::Result<CocoDataset> {
    let (json, default_images) = if data.is_dir() {
        let json = data.join("train.json");
        if !json.is_file() {
            bail!(
                "{} has no train.json (expected a FloW-layout folder, e.g. from `ssod synth`)",
                data.display()
            );
        }
        (json, data.join("training").join("images"))
    } else {
        let dir = data
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        (data.to_path_buf(), dir)
    };
    let mut ds = CocoDataset::read(&json)?;
    ds.image_dir = images
        .map(std::path::Path::to_path_buf)
        .unwrap_or(default_images);
    Ok(ds)
}

fn draw_box_xyxy(img: &mut image::RgbImage, b: [f32; 4], colour: image::Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (b[0].floor() as i64, b[1].floor() as i64);
    let (x1, y1) = (
        (b[2].ceil() as i64 - 1).max(x0),
        (b[3].ceil() as i64 - 1).max(y0),
    );
    let mut put = |x: i64, y: i64| {
        if x >= 0 && y >= 0 && x < w && y < h {
            img.put_pixel(x as u32, y as u32, colour);
        }
    };
    for t in 0..2 {
        for x in x0..=x1 {
            put(x, y0 - t);
            put(x, y1 + t);
        }
        for y in y0..=y1 {
            put(x0 - t, y);
            put(x1 + t, y);
        }
    }
}

fn preview(p: Preview) -> anyhow::Result<()> {
    if p.out.exists() && !p.force {
        bail!("{} exists; pass --force to replace it", p.out.display());
    }
    if p.count == 0 || p.input < 32 {
        bail!("--count must be at least 1 and --input at least 32");
    }
    let ds = open_dataset(&p.data, p.images.as_deref())?;
    let base = AugmentConfig::yolox_s(p.input, p.input);
    let augment = if p.mosaic { base } else { base.no_mosaic() };
    let mut cfg = LoaderConfig::new(p.count, augment);
    cfg.seed = p.seed;
    let loader = Loader::new(&ds, cfg)?;
    let samples = loader.augmented_samples(0, 0)?;
    if samples.is_empty() {
        bail!("no sample could be read from {}", p.data.display());
    }
    let cols = (samples.len() as f64).sqrt().ceil() as u32;
    let rows = (samples.len() as u32).div_ceil(cols);
    let gap = 4;
    let tile = p.input + gap;
    let mut grid =
        image::RgbImage::from_pixel(cols * tile, rows * tile, image::Rgb([255, 255, 255]));
    let mut boxes = 0;
    for (i, s) in samples.iter().enumerate() {
        let mut img = s.image.clone();
        for b in &s.boxes_cxcywh {
            let xyxy = [
                b[0] - b[2] / 2.0,
                b[1] - b[3] / 2.0,
                b[0] + b[2] / 2.0,
                b[1] + b[3] / 2.0,
            ];
            draw_box_xyxy(&mut img, xyxy, image::Rgb([255, 40, 40]));
            boxes += 1;
        }
        let (c, r) = (i as u32 % cols, i as u32 / cols);
        image::imageops::replace(&mut grid, &img, (c * tile) as i64, (r * tile) as i64);
    }
    ssod::data::image_io::write_rgb(&p.out, &grid)?;
    println!(
        "wrote {} ({} samples, {boxes} boxes)",
        p.out.display(),
        samples.len()
    );
    Ok(())
}
