//! `ssod synth`: a FloW-like data set generated on any machine.
//!
//! Layout written under `out` (FloW-Img's, docs/the-study.md):
//! `training/{images,annotations}/NNNNNN.{jpg,xml}`, `test/{images,annotations}/...`,
//! `labels.txt` (`bottle`), `train.json` and `test.json` (converted from the written VOC files by
//! the same code as `ssod voc2coco`), and `unlabeled/video_NN/NNNNNN.jpg` (consecutive frames of
//! drifting objects and a slowly panning camera).
//!
//! Every image is rendered from its own generator `rng_for(seed, "synth/<split>/<index>")`, so the
//! output is byte-identical for a seed whatever the thread count (images render in parallel).

mod bank;
mod bottle;
mod canvas;
mod distractors;
mod look;
mod noise;
mod scene;
mod shape;
mod video;
mod water;

use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, Poisson};
use rayon::prelude::*;

use crate::atomic_file::write_atomic;
use crate::data::convert::{voc_to_coco, write_study_json, ConvertOptions};
use crate::data::dataset::CocoDataset;
use crate::data::voc::{VocAnnotation, VocObject};
use crate::rng::rng_for;
use crate::{Error, Result};

pub use scene::{Frame, Scene};

/// The single class of FloW.
pub const LABEL: &str = "bottle";
/// Fixed JPEG quality: part of what makes the output byte-identical for a seed.
pub const JPEG_QUALITY: u8 = 90;
/// At most this many bottles per image (FloW: 1 to ~8, mean ~2.6).
pub const MAX_BOTTLES: usize = 8;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub out: PathBuf,
    pub train: usize,
    pub test: usize,
    pub width: u32,
    pub height: u32,
    pub videos: usize,
    pub frames_per_video: usize,
    pub seed: u64,
}

/// What was written: both splits as COCO datasets (`image_dir` set) and the video frame count.
#[derive(Debug, Clone)]
pub struct SynthSummary {
    pub train: CocoDataset,
    pub test: CocoDataset,
    pub video_frames: usize,
}

/// Number of bottles in one labelled image: 1 + Poisson(1.6), at most [`MAX_BOTTLES`]
/// (≈ 2.6 kept per image as in FloW, after overlapping placements are dropped).
fn bottle_count(rng: &mut impl Rng) -> usize {
    let extra = Poisson::new(1.6f64).map(|p| p.sample(rng)).unwrap_or(1.0);
    (1 + extra as usize).min(MAX_BOTTLES)
}

/// Render labelled image `index` (0-based) of `split` (`"training"` or `"test"`). FloW has at
/// least one bottle per image: a scene whose bottles all ended up invisible (too small, under
/// water, out of frame) is drawn again from the same generator stream.
pub fn render_labeled(seed: u64, split: &str, index: usize, width: u32, height: u32) -> Frame {
    let mut rng = rng_for(seed, &format!("synth/{split}/{index}"));
    let mut frame = None;
    for _ in 0..8 {
        let n = bottle_count(&mut rng);
        let scene = Scene::sample(&mut rng, width as usize, height as usize, n, 0);
        let f = scene.render(0.0, 0.0, 0.0);
        let done = !f.boxes_xyxy.is_empty();
        frame = Some(f);
        if done {
            break;
        }
    }
    frame.expect("at least one attempt")
}

/// JPEG bytes at [`JPEG_QUALITY`], 4:2:0 chroma (as cameras write). `jpeg-encoder` without its
/// run-time SIMD dispatch: about 3x faster than the `image` crate's encoder, and the same bytes on
/// every CPU.
pub fn encode_jpeg(img: &RgbImage) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let (w, h) = (img.width(), img.height());
    if w > u16::MAX as u32 || h > u16::MAX as u32 {
        return Err(Error::InvalidArgument(format!(
            "image {w}x{h} is too large for JPEG"
        )));
    }
    let mut encoder = jpeg_encoder::Encoder::new(&mut bytes, JPEG_QUALITY);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder
        .encode(
            img.as_raw(),
            w as u16,
            h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .map_err(|e| Error::Msg(format!("cannot encode JPEG: {e}")))?;
    Ok(bytes)
}

/// The VOC annotation of a frame: boxes as VOC's 1-based inclusive corners, so that voc2coco's
/// `int(xmin) - 1` gives back the pixel edge `x0`, and `xmax - (xmin - 1)` the width `x1 - x0`.
pub fn voc_annotation(
    file_name: &str,
    width: u32,
    height: u32,
    boxes_xyxy: &[[u32; 4]],
) -> VocAnnotation {
    VocAnnotation {
        filename: file_name.to_string(),
        width,
        height,
        objects: boxes_xyxy
            .iter()
            .map(|b| VocObject {
                name: LABEL.to_string(),
                xmin: (b[0] + 1) as f64,
                ymin: (b[1] + 1) as f64,
                xmax: b[2] as f64,
                ymax: b[3] as f64,
                difficult: false,
            })
            .collect(),
    }
}

/// Write one labelled split (`training` or `test`) and its COCO json (`json_name`).
fn write_split(
    cfg: &SynthConfig,
    split: &str,
    count: usize,
    json_name: &str,
) -> Result<CocoDataset> {
    let image_dir = cfg.out.join(split).join("images");
    let ann_dir = cfg.out.join(split).join("annotations");
    for dir in [&image_dir, &ann_dir] {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let anns: Vec<(PathBuf, VocAnnotation)> = (0..count)
        .into_par_iter()
        .map(|i| {
            let stem = format!("{:06}", i + 1);
            let frame = render_labeled(cfg.seed, split, i, cfg.width, cfg.height);
            let jpg = format!("{stem}.jpg");
            std::fs::write(image_dir.join(&jpg), encode_jpeg(&frame.image)?)
                .map_err(|e| Error::io(image_dir.join(&jpg), e))?;
            let ann = voc_annotation(&jpg, cfg.width, cfg.height, &frame.boxes_xyxy);
            let xml = ann_dir.join(format!("{stem}.xml"));
            ann.write_xml(&xml)?;
            Ok((xml, ann))
        })
        .collect::<Result<_>>()?;
    let (mut ds, _) = voc_to_coco(&anns, &[LABEL.to_string()], &ConvertOptions::default())?;
    write_study_json(&ds, &cfg.out.join(json_name))?;
    ds.image_dir = image_dir;
    Ok(ds)
}

/// Generate the whole data set described by `cfg` into `cfg.out` (which the caller has checked).
pub fn generate(cfg: &SynthConfig) -> Result<SynthSummary> {
    if cfg.width < 16 || cfg.height < 16 {
        return Err(Error::InvalidArgument(format!(
            "image size {}x{} is too small (at least 16x16)",
            cfg.width, cfg.height
        )));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    write_atomic(&cfg.out.join("labels.txt"), format!("{LABEL}\n").as_bytes())?;
    let train = write_split(cfg, "training", cfg.train, "train.json")?;
    let test = write_split(cfg, "test", cfg.test, "test.json")?;
    let video_frames = video::write_videos(cfg)?;
    Ok(SynthSummary {
        train,
        test,
        video_frames,
    })
}

/// Where the images of a generated split live (`training` or `test`).
pub fn split_image_dir(root: &Path, split: &str) -> PathBuf {
    root.join(split).join("images")
}
