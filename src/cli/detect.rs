//! `ssod detect`: run a YOLOX checkpoint on an image, a folder of images or a video; write each
//! image with its boxes drawn (a video: the annotated video, `<name>.detections.mp4`), a COCO
//! results file `detections.json` and `images.json` (a COCO dataset with the images or frames,
//! their ids and the categories, no annotations) into `--out`.
//!
//! Image ids are 1-based positions in the sorted list of input files (a video: frame index + 1,
//! named `frame_000001` ...); an unreadable image is skipped with a warning and keeps its id
//! unused, so ids do not shift when one file is broken.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use image::{Rgb, RgbImage};
use plotters::prelude::*;

use ssod::data::dataset::{
    read_json_file, write_json_file, Category, CocoDataset, Detection, ImageInfo,
};
use ssod::data::frames::decode_video;
use ssod::data::image_io::{read_rgb, write_rgb};
use ssod::data::video_out::{video_fps, VideoWriter};
use ssod::detect::{detect_images, to_coco, Det, PostprocessConfig};
use ssod::models::{WeightsSource, YoloX, YoloXConfig};
use ssod::tensor::Device;

#[derive(Subcommand)]
pub enum DetectCommand {
    /// Detect objects with a YOLOX checkpoint; writes images with boxes, detections.json (COCO
    /// results) and images.json (COCO images and categories) into --out
    Detect(DetectArgs),
}

#[derive(Args)]
pub struct DetectArgs {
    /// Checkpoint, loaded strictly: safetensors with the official YOLOX tensor names, or a
    /// PyTorch `.pth` as torch.save writes it (an official YOLOX release, a trainer checkpoint's
    /// `model` entry, or a bare state dict)
    #[arg(long)]
    weights: PathBuf,
    /// Model: yolox-nano, yolox-tiny, yolox-s, yolox-m, yolox-l, yolox-x
    #[arg(long, default_value = "yolox-s")]
    model: String,
    /// Number of classes the checkpoint was trained with
    #[arg(long, default_value_t = 80)]
    classes: usize,
    /// Override the variant's width multiplier (e.g. 0.125 for a tiny test model)
    #[arg(long)]
    width: Option<f64>,
    /// Override the variant's depth multiplier
    #[arg(long)]
    depth: Option<f64>,
    /// An image file, a folder of images (.png, .jpg, .jpeg), or a video (any other file,
    /// decoded by ffmpeg)
    #[arg(long)]
    input: PathBuf,
    /// Where the model runs: cpu, cuda or auto
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Output folder (refused when it is not empty, unless --force)
    #[arg(long)]
    out: PathBuf,
    /// Square network input size in pixels, a multiple of 32 (default: the variant's test size,
    /// 416 for nano and tiny, 640 otherwise)
    #[arg(long)]
    size: Option<usize>,
    /// Keep detections with obj · class_conf >= this
    #[arg(long, default_value_t = 0.25)]
    conf: f32,
    /// NMS IoU threshold (suppresses IoU above it)
    #[arg(long, default_value_t = 0.45)]
    nms: f32,
    /// Class-agnostic NMS (default: per class)
    #[arg(long)]
    agnostic: bool,
    /// Keep at most this many detections per image (the best by score)
    #[arg(long)]
    max_dets: Option<usize>,
    /// Class names, one per line, in class-index order
    #[arg(long)]
    labels: Option<PathBuf>,
    /// A COCO json whose categories (in file order) give each class index its category id and
    /// name; without it class i has category id i + 1
    #[arg(long)]
    categories: Option<PathBuf>,
    /// Write into a non-empty --out
    #[arg(long)]
    force: bool,
}

impl DetectCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            DetectCommand::Detect(a) => a.run(),
        }
    }
}

const IMAGE_EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

fn has_image_ext(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The input files, sorted by name.
fn list_inputs(input: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        bail!("--input {}: no such file or folder", input.display());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(input)
        .with_context(|| format!("--input {}: cannot list", input.display()))?
    {
        let p = entry
            .with_context(|| format!("--input {}: cannot list", input.display()))?
            .path();
        if p.is_file() && has_image_ext(&p) {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!(
            "--input {}: no images (.png, .jpg, .jpeg) in the folder",
            input.display()
        );
    }
    Ok(files)
}

/// Refuse an existing non-empty output folder unless `force`.
fn check_out_dir(out: &Path, force: bool) -> anyhow::Result<()> {
    if out.exists() {
        if !out.is_dir() {
            bail!("--out {}: exists and is not a folder", out.display());
        }
        let non_empty = std::fs::read_dir(out)
            .with_context(|| format!("--out {}: cannot list", out.display()))?
            .next()
            .is_some();
        if non_empty && !force {
            bail!(
                "--out {}: folder exists and is not empty (use --force to write into it)",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create", out.display()))
}

/// Class names, one per line (blank lines ignored); the count must equal `classes`.
fn read_labels(path: &Path, classes: usize) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--labels {}: cannot read", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != classes {
        bail!(
            "--labels {}: {} names for --classes {classes}",
            path.display(),
            names.len()
        );
    }
    Ok(names)
}

impl DetectArgs {
    fn postprocess_config(&self) -> anyhow::Result<PostprocessConfig> {
        for (name, v) in [("--conf", self.conf), ("--nms", self.nms)] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{name} must be in [0, 1], got {v}");
            }
        }
        Ok(PostprocessConfig {
            conf_thre: self.conf,
            nms_thre: self.nms,
            class_agnostic: self.agnostic,
            max_dets: self.max_dets,
        })
    }

    fn build_model(&self) -> anyhow::Result<YoloX> {
        if self.classes == 0 {
            bail!("--classes must be at least 1");
        }
        let mut config = YoloXConfig::variant(&self.model, self.classes)
            .with_context(|| format!("--model {}", self.model))?;
        for (name, v, slot) in [
            ("--width", self.width, &mut config.width),
            ("--depth", self.depth, &mut config.depth),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0 && v <= 4.0) {
                    bail!("{name} must be in (0, 4], got {v}");
                }
                *slot = v;
            }
        }
        if (64.0 * config.width) as usize == 0 {
            bail!("--width {} gives no channels", config.width);
        }
        let model = YoloX::new(config)?;
        let loaded = model.load(&self.weights).with_context(|| {
            format!(
                "--weights {} for {} with {} classes",
                self.weights.display(),
                self.model,
                self.classes
            )
        })?;
        if loaded.source.is_training_state() {
            eprintln!(
                "--weights {} is a training state: using {}",
                self.weights.display(),
                loaded.source.describe()
            );
        } else if loaded.source == WeightsSource::PytorchCheckpoint {
            eprintln!(
                "--weights {}: using {}",
                self.weights.display(),
                loaded.source.describe()
            );
        }
        let (device, note) = Device::resolve(&self.device)?;
        if let Some(note) = note {
            eprintln!("{note}");
        }
        model
            .store
            .to_device(device)
            .with_context(|| format!("--device {}", self.device))?;
        Ok(model)
    }

    /// Category ids and names per class index.
    fn categories(&self) -> anyhow::Result<Vec<Category>> {
        let mut cats: Vec<Category> = match &self.categories {
            Some(path) => {
                let ds: CocoDataset = read_json_file(path)?;
                if ds.categories.len() != self.classes {
                    bail!(
                        "--categories {}: {} categories for --classes {}",
                        path.display(),
                        ds.categories.len(),
                        self.classes
                    );
                }
                ds.categories
            }
            None => (0..self.classes)
                .map(|i| Category {
                    id: i as u64 + 1,
                    name: format!("class{i}"),
                    supercategory: None,
                })
                .collect(),
        };
        if let Some(path) = &self.labels {
            for (c, name) in cats.iter_mut().zip(read_labels(path, self.classes)?) {
                c.name = name;
            }
        }
        Ok(cats)
    }

    /// The input size: --size, or the variant's test size (exps/default/*.py: nano and tiny
    /// test at 416, the others at 640).
    fn input_size(&self) -> anyhow::Result<usize> {
        let size = self.size.unwrap_or_else(|| {
            let m = self.model.to_ascii_lowercase();
            if m.ends_with("nano") || m.ends_with("tiny") {
                416
            } else {
                640
            }
        });
        if size == 0 || !size.is_multiple_of(32) {
            bail!("--size must be a positive multiple of 32, got {size}");
        }
        Ok(size)
    }

    fn run(self) -> anyhow::Result<()> {
        if self.input.is_file() && !has_image_ext(&self.input) {
            return self.run_video();
        }
        let size = self.input_size()?;
        let cfg = self.postprocess_config()?;
        let cats = self.categories()?;
        let files = list_inputs(&self.input)?;
        let model = self.build_model()?;
        // Never write over the inputs: the drawn images keep their file names.
        if let (Ok(a), Ok(b)) = (
            self.out.canonicalize(),
            files[0].parent().unwrap_or(Path::new(".")).canonicalize(),
        ) {
            if a == b {
                bail!(
                    "--out {} is the input folder: drawn images would replace the inputs",
                    self.out.display()
                );
            }
        }
        check_out_dir(&self.out, self.force)?;

        let category_ids: Vec<u64> = cats.iter().map(|c| c.id).collect();
        let mut images_json = CocoDataset {
            categories: cats.clone(),
            ..Default::default()
        };
        let mut results: Vec<Detection> = Vec::new();
        let mut skipped = 0usize;
        for (i, path) in files.iter().enumerate() {
            let image_id = i as u64 + 1;
            let img = match read_rgb(path) {
                Ok(img) => img,
                Err(e) => {
                    eprintln!("warning: skipping {}: {e}", path.display());
                    skipped += 1;
                    continue;
                }
            };
            let dets = detect_images(&model, std::slice::from_ref(&img), (size, size), &cfg)?
                .pop()
                .unwrap_or_default();
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("{image_id}.png"));
            let mut drawn = img.clone();
            draw_detections(&mut drawn, &dets, &cats);
            let out_path = self.out.join(&file_name);
            write_rgb(&out_path, &drawn)?;
            results.extend(to_coco(&dets, image_id, &category_ids)?);
            images_json.images.push(ImageInfo {
                id: image_id,
                file_name: file_name.clone(),
                width: img.width(),
                height: img.height(),
            });
            println!("{file_name}: {} detections", dets.len());
        }
        if images_json.images.is_empty() {
            bail!(
                "--input {}: none of the {} images could be read",
                self.input.display(),
                files.len()
            );
        }
        write_json_file(&self.out.join("detections.json"), &results)?;
        write_json_file(&self.out.join("images.json"), &images_json)?;
        println!(
            "{} images ({skipped} skipped), {} detections -> {}",
            images_json.images.len(),
            results.len(),
            self.out.display()
        );
        Ok(())
    }
}

impl DetectArgs {
    /// Every frame of the video `--input` through the model: the annotated video, and
    /// detections.json / images.json with one image per frame.
    fn run_video(&self) -> anyhow::Result<()> {
        let size = self.input_size()?;
        let cfg = self.postprocess_config()?;
        let cats = self.categories()?;
        let model = self.build_model()?;
        check_out_dir(&self.out, self.force)?;
        let stem = self
            .input
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".into());
        let video_path = self.out.join(format!("{stem}.detections.mp4"));
        let fps = video_fps(&self.input, Path::new("ffprobe")).unwrap_or(25.0);
        let category_ids: Vec<u64> = cats.iter().map(|c| c.id).collect();
        let mut images_json = CocoDataset {
            categories: cats.clone(),
            ..Default::default()
        };
        let mut results: Vec<Detection> = Vec::new();
        let mut writer: Option<VideoWriter> = None;
        let mut sink = |index: usize, frame: RgbImage| -> ssod::Result<()> {
            let image_id = index as u64 + 1;
            let dets = detect_images(&model, std::slice::from_ref(&frame), (size, size), &cfg)?
                .pop()
                .unwrap_or_default();
            results.extend(to_coco(&dets, image_id, &category_ids)?);
            images_json.images.push(ImageInfo {
                id: image_id,
                file_name: format!("frame_{image_id:06}"),
                width: frame.width(),
                height: frame.height(),
            });
            let mut drawn = frame;
            draw_detections(&mut drawn, &dets, &cats);
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(VideoWriter::create(
                    &video_path,
                    drawn.width(),
                    drawn.height(),
                    fps,
                    Path::new("ffmpeg"),
                )?),
            };
            w.write(&drawn)
        };
        decode_video(&self.input, Path::new("ffmpeg"), &mut sink)
            .with_context(|| format!("--input {}", self.input.display()))?;
        let frames = match writer {
            Some(w) => w.finish()?,
            None => bail!("--input {}: the video has no frames", self.input.display()),
        };
        write_json_file(&self.out.join("detections.json"), &results)?;
        write_json_file(&self.out.join("images.json"), &images_json)?;
        println!(
            "{frames} frames at {fps:.2} fps, {} detections -> {}",
            results.len(),
            video_path.display()
        );
        Ok(())
    }
}

/// A distinct colour per class (golden-ratio hue steps, full saturation).
fn class_colour(class: usize) -> Rgb<u8> {
    let h = (class as f32 * 0.618_034).fract() * 6.0;
    let x = 1.0 - (h % 2.0 - 1.0).abs();
    let (r, g, b) = match h as u32 {
        0 => (1.0, x, 0.0),
        1 => (x, 1.0, 0.0),
        2 => (0.0, 1.0, x),
        3 => (0.0, x, 1.0),
        4 => (x, 0.0, 1.0),
        _ => (1.0, 0.0, x),
    };
    Rgb([(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8])
}

/// Draw an xyxy rectangle outline `thickness` pixels wide, clipped to the image.
fn draw_rect_xyxy(img: &mut RgbImage, box_xyxy: [f32; 4], thickness: u32, colour: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    if w == 0 || h == 0 || box_xyxy.iter().any(|v| !v.is_finite()) {
        return;
    }
    let x1 = (box_xyxy[0].round() as i64).clamp(0, w - 1);
    let y1 = (box_xyxy[1].round() as i64).clamp(0, h - 1);
    let x2 = (box_xyxy[2].round() as i64).clamp(0, w - 1);
    let y2 = (box_xyxy[3].round() as i64).clamp(0, h - 1);
    let t = thickness as i64;
    let mut put = |x: i64, y: i64| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, colour);
        }
    };
    for k in 0..t {
        for x in x1..=x2 {
            put(x, y1 + k);
            put(x, y2 - k);
        }
        for y in y1..=y2 {
            put(x1 + k, y);
            put(x2 - k, y);
        }
    }
}

const LABEL_FONT: &str = "ssod-detect-label";

fn label_font_ready() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        static TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font(LABEL_FONT, FontStyle::Normal, TTF).is_ok()
    })
}

/// Boxes in their class colour, each with a `name score` label above it (drawn with plotters and
/// the embedded DejaVu Sans; boxes alone if the font cannot be used).
fn draw_detections(img: &mut RgbImage, dets: &[Det], cats: &[Category]) {
    let thickness = (img.width().max(img.height()) / 400).max(1);
    for d in dets {
        draw_rect_xyxy(img, d.box_xyxy, thickness, class_colour(d.class));
    }
    if !label_font_ready() || dets.is_empty() {
        return;
    }
    let (w, h) = img.dimensions();
    let font_px = (h.max(w) / 50).clamp(10, 24);
    let buf: &mut [u8] = &mut *img;
    let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
    let style = TextStyle::from((LABEL_FONT, font_px).into_font()).color(&BLACK);
    for d in dets {
        let name = cats
            .get(d.class)
            .map_or_else(|| format!("class{}", d.class), |c| c.name.clone());
        let text = format!("{name} {:.2}", d.score);
        let Rgb([r, g, b]) = class_colour(d.class);
        let (tw, th) = root.estimate_text_size(&text, &style).unwrap_or((0, 0));
        let x = d.box_xyxy[0].max(0.0) as i32;
        let y = (d.box_xyxy[1] as i32 - th as i32 - 2).max(0);
        let _ = root.draw(&Rectangle::new(
            [(x, y), (x + tw as i32 + 4, y + th as i32 + 2)],
            RGBColor(r, g, b).filled(),
        ));
        let _ = root.draw(&Text::new(text, (x + 2, y + 1), style.clone()));
    }
    let _ = root.present();
}
