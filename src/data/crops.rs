//! Foreground/background crops for center-loss pretraining (docs/the-study.md,
//! "Foreground and background crops": gene_data.py), seeded per image.
//!
//! Per image, with its GT boxes as xyxy (`x2 = x + w`, `y2 = y + h`, the study's in-place
//! conversion of the COCO json boxes):
//! 1. one square size `int(224 * U(0.8, 1.2))` (179..=268 px), shared by both crops;
//! 2. background: up to 11 tries of `x1 = randint(0, W - size - 1)`, `y1 = randint(0, H - size - 1)`
//!    (inclusive, as Python's randint); accepted when its IoU with every GT is < 0.005, IoU computed
//!    as the study's NMS does (+1-pixel areas). With `strict_background` a candidate that overlaps
//!    any GT box at all is rejected too (the study's negatives could hold a whole small bottle,
//!    docs/the-study.md, defect 10). If all tries fail the image gets no background crop;
//! 3. positive: a GT chosen at random, the crop centred on it: `x0 = x - (size - w) // 2`
//!    (`x0 = x` when `w >= size`), likewise y, clamped to `[0, W - size]` and `[0, H - size]`.
//!
//! Differences from the study, on purpose: (a) GT pairs that overlap each other do not block the
//! background (the study ran NMS over GTs + candidate, so two overlapping GTs meant no negative
//! ever); (b) an image without GT gets a background crop and no positive (the study crashed in
//! `random.choice`); (c) an image smaller than `size + 1` in either side gets no crops (Python's
//! randint raised) and is counted in the report; (d) boxes with fractional corners are widened to
//! the pixels they touch (`floor(x)`, `ceil(x + w)`), which is the study's arithmetic for integer
//! boxes.

use std::path::Path;

use rand::Rng;

use crate::csv_table::csv_string;
use crate::data::dataset::CocoDataset;
use crate::data::image_io::{read_rgb, write_rgb};
use crate::rng::rng_for;
use crate::{Error, Result};

/// Crop generation parameters; `Default` gives the study's values.
#[derive(Debug, Clone, PartialEq)]
pub struct CropOptions {
    pub seed: u64,
    /// Base side (224); the side is `int(base_size * U(scale_min, scale_max))`.
    pub base_size: u32,
    pub scale_min: f64,
    pub scale_max: f64,
    /// A background candidate is accepted when IoU with every GT is below this (0.005).
    pub iou_threshold: f64,
    /// Background candidates per image (11: the study's `for tmp in range(11)`).
    pub max_tries: usize,
    /// Also reject background candidates that overlap any GT box at all.
    pub strict_background: bool,
}

impl Default for CropOptions {
    fn default() -> Self {
        CropOptions {
            seed: 100, // gene_data.py: random.seed(100)
            base_size: 224,
            scale_min: 0.8,
            scale_max: 1.2,
            iou_threshold: 0.005,
            max_tries: 11,
            strict_background: false,
        }
    }
}

/// A square crop: top-left corner and side, in image pixels (covers `x..x+size`, `y..y+size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SquareCrop {
    pub x: u32,
    pub y: u32,
    pub size: u32,
}

/// The crops planned for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct CropPlan {
    pub size: u32,
    /// The positive crop and the index of the GT it is centred on (None without GT).
    pub positive: Option<(SquareCrop, usize)>,
    /// The background crop (None when every try overlapped a GT, or the image is too small).
    pub negative: Option<SquareCrop>,
    /// Background candidates drawn.
    pub tries: usize,
    /// The image is not larger than the crop in some side: no crops.
    pub too_small: bool,
}

/// The random stream of one image (independent of the order images are processed in).
pub fn crop_rng(seed: u64, image_id: u64) -> rand_chacha::ChaCha8Rng {
    rng_for(seed, &format!("crops/image/{image_id}"))
}

/// The study's IoU between two pixel boxes given as inclusive-style xyxy, with +1-pixel areas
/// (gene_data.py's NMS: `(x2 - x1 + 1) * (y2 - y1 + 1)`, intersections `max(0, xx2 - xx1 + 1)`).
pub fn study_iou_xyxy(a_xyxy: [f64; 4], b_xyxy: [f64; 4]) -> f64 {
    let area = |b: [f64; 4]| (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0);
    let iw = (a_xyxy[2].min(b_xyxy[2]) - a_xyxy[0].max(b_xyxy[0]) + 1.0).max(0.0);
    let ih = (a_xyxy[3].min(b_xyxy[3]) - a_xyxy[1].max(b_xyxy[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    inter / (area(a_xyxy) + area(b_xyxy) - inter)
}

/// True when the open interiors of two xyxy boxes intersect (a positive-area overlap).
pub fn overlaps_xyxy(a_xyxy: [f64; 4], b_xyxy: [f64; 4]) -> bool {
    a_xyxy[0].max(b_xyxy[0]) < a_xyxy[2].min(b_xyxy[2])
        && a_xyxy[1].max(b_xyxy[1]) < a_xyxy[3].min(b_xyxy[3])
}

/// Plan the crops of one `width` x `height` image with GT boxes `gt_xywh` (COCO xywh).
pub fn plan_image_crops<R: Rng>(
    width: u32,
    height: u32,
    gt_xywh: &[[f64; 4]],
    opts: &CropOptions,
    rng: &mut R,
) -> CropPlan {
    // gene_data.py: new_size = int(224 * random.uniform(0.8, 1.2))
    let u: f64 = rng.random();
    let scale = opts.scale_min + (opts.scale_max - opts.scale_min) * u;
    let size = (opts.base_size as f64 * scale) as u32;
    let mut plan = CropPlan {
        size,
        positive: None,
        negative: None,
        tries: 0,
        too_small: false,
    };
    // randint(0, W - size - 1) needs W - size - 1 >= 0.
    if size == 0 || width < size + 1 || height < size + 1 {
        plan.too_small = true;
        return plan;
    }
    // Study: b[2] += b[0]; b[3] += b[1]. Fractional corners widen to the pixels they touch.
    let gt_xyxy: Vec<[f64; 4]> = gt_xywh
        .iter()
        .map(|b| {
            [
                b[0].floor(),
                b[1].floor(),
                (b[0] + b[2]).ceil(),
                (b[1] + b[3]).ceil(),
            ]
        })
        .collect();

    for _ in 0..opts.max_tries {
        plan.tries += 1;
        let x1 = rng.random_range(0..=width - size - 1);
        let y1 = rng.random_range(0..=height - size - 1);
        // gene_data.py appends [x1, y1, x1 + new_size, y1 + new_size] to the box list.
        let cand_xyxy = [x1 as f64, y1 as f64, (x1 + size) as f64, (y1 + size) as f64];
        let clear = gt_xyxy.iter().all(|&g| {
            study_iou_xyxy(cand_xyxy, g) < opts.iou_threshold
                && !(opts.strict_background && overlaps_xyxy(cand_xyxy, g))
        });
        if clear {
            plan.negative = Some(SquareCrop { x: x1, y: y1, size });
            break;
        }
    }

    if !gt_xyxy.is_empty() {
        let k = rng.random_range(0..gt_xyxy.len());
        let [x1, y1, x2, y2] = gt_xyxy[k];
        let (x, y, w, h) = (x1 as i64, y1 as i64, (x2 - x1) as i64, (y2 - y1) as i64);
        let s = size as i64;
        // x0 = x - (new_size - w) // 2 (floor division), or x when w >= new_size; then clamp.
        let x0 = if w >= s { x } else { x - (s - w).div_euclid(2) };
        let y0 = if h >= s { y } else { y - (s - h).div_euclid(2) };
        let x0 = x0.clamp(0, width as i64 - s) as u32;
        let y0 = y0.clamp(0, height as i64 - s) as u32;
        plan.positive = Some((SquareCrop { x: x0, y: y0, size }, k));
    }
    plan
}

/// One written crop (a row of crops.csv).
#[derive(Debug, Clone, PartialEq)]
pub struct CropRecord {
    /// Relative to the output folder: `pos/000001.png` or `neg/000001.png`.
    pub file: String,
    /// 1 for a positive (foreground) crop, 0 for background (the study's label).
    pub label: u8,
    /// The source image's `file_name`.
    pub source_image: String,
    pub crop: SquareCrop,
}

/// What [`write_crops`] made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CropReport {
    pub images: usize,
    pub positives: usize,
    pub negatives: usize,
    /// Images whose background tries all failed.
    pub images_without_negative: usize,
    /// Images with no GT (so no positive).
    pub images_without_gt: usize,
    /// Images not larger than their crop size (no crops).
    pub images_too_small: usize,
    pub records: Vec<CropRecord>,
}

impl std::fmt::Display for CropReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} images: {} positive and {} background crops ({} images without a background crop, \
             {} without GT, {} too small)",
            self.images,
            self.positives,
            self.negatives,
            self.images_without_negative,
            self.images_without_gt,
            self.images_too_small
        )
    }
}

/// Write `pos/*.png`, `neg/*.png` and `crops.csv` (`file,label,source_image,x,y,size`) into
/// `out_dir` for every image of `ds` (images read from `ds.image_dir`). Files are named by image id
/// (`pos/000042.png` comes from image 42). The caller decides whether `out_dir` may be written.
pub fn write_crops(ds: &CocoDataset, out_dir: &Path, opts: &CropOptions) -> Result<CropReport> {
    let by_image = ds.annotations_by_image();
    let pos_dir = out_dir.join("pos");
    let neg_dir = out_dir.join("neg");
    for d in [&pos_dir, &neg_dir] {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
    }
    let mut report = CropReport::default();
    for image in &ds.images {
        report.images += 1;
        let gt_xywh: Vec<[f64; 4]> = by_image
            .get(&image.id)
            .map(|v| v.iter().map(|a| a.bbox_xywh).collect())
            .unwrap_or_default();
        let path = ds.image_path(image);
        let rgb = read_rgb(&path)?;
        if rgb.width() != image.width || rgb.height() != image.height {
            return Err(Error::format(
                path.display(),
                format!(
                    "image is {}x{} but the json says {}x{} (image id {})",
                    rgb.width(),
                    rgb.height(),
                    image.width,
                    image.height,
                    image.id
                ),
            ));
        }
        let plan = plan_image_crops(
            image.width,
            image.height,
            &gt_xywh,
            opts,
            &mut crop_rng(opts.seed, image.id),
        );
        if plan.too_small {
            report.images_too_small += 1;
            continue;
        }
        if gt_xywh.is_empty() {
            report.images_without_gt += 1;
        }
        let stem = format!("{:06}.png", image.id);
        let mut save = |crop: SquareCrop, label: u8, dir: &Path, sub: &str| -> Result<()> {
            let view =
                image::imageops::crop_imm(&rgb, crop.x, crop.y, crop.size, crop.size).to_image();
            write_rgb(&dir.join(&stem), &view)?;
            report.records.push(CropRecord {
                file: format!("{sub}/{stem}"),
                label,
                source_image: image.file_name.clone(),
                crop,
            });
            Ok(())
        };
        if let Some(neg) = plan.negative {
            save(neg, 0, &neg_dir, "neg")?;
        }
        if let Some((pos, _)) = plan.positive {
            save(pos, 1, &pos_dir, "pos")?;
        }
        match plan.negative {
            Some(_) => report.negatives += 1,
            None => report.images_without_negative += 1,
        }
        if plan.positive.is_some() {
            report.positives += 1;
        }
    }
    write_crops_csv(&out_dir.join("crops.csv"), &report.records)?;
    Ok(report)
}

fn write_crops_csv(path: &Path, records: &[CropRecord]) -> Result<()> {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.file.clone(),
                r.label.to_string(),
                r.source_image.clone(),
                r.crop.x.to_string(),
                r.crop.y.to_string(),
                r.crop.size.to_string(),
            ]
        })
        .collect();
    let header = ["file", "label", "source_image", "x", "y", "size"];
    crate::atomic_file::write_atomic(path, csv_string(&header, &rows)?.as_bytes())
}
