//! Pretraining inputs (docs/the-study.md): labelled fg/bg crops (`ssod crop` output), unlabeled
//! frames (`ssod frames` output), the pixel conventions, and the seeded train/val split.
//! Sets on disk are listed, not decoded: `pretrain::loader` decodes each batch in worker threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::csv_table::read_csv;
use crate::data::augment::resize_bilinear;
use crate::data::frames::{list_images, list_subfolders};
use crate::data::image_io::read_rgb;
use crate::rng::rng_for;
use crate::tensor::Tensor;

use crate::{Error, Result};

/// How pixels enter the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    /// The detector's convention (docs/design.md): BGR, 0..255, no normalisation.
    #[default]
    Bgr255,
    /// The study's pretraining input: RGB, /255, ImageNet mean/std. The detector then sees
    /// another input distribution (docs/the-study.md, defect 4); kept to reproduce the study.
    ImagenetRgb,
}

const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

impl InputNorm {
    /// Convert `[P, 3, h, w]` planes holding RGB 0..255 in place to this convention.
    pub fn apply_to_rgb_planes(self, values: &mut [f32], plane: usize) {
        for patch in values.chunks_mut(3 * plane) {
            match self {
                InputNorm::Bgr255 => {
                    let (r, rest) = patch.split_at_mut(plane);
                    r.swap_with_slice(&mut rest[plane..2 * plane]);
                }
                InputNorm::ImagenetRgb => {
                    for (c, ch) in patch.chunks_mut(plane).enumerate() {
                        for v in ch {
                            *v = (*v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
                        }
                    }
                }
            }
        }
    }
}

/// RGB 0..255 planes `[3, h, w]` of an image, appended to `out`, optionally flipped left-right.
pub fn push_rgb_planes(img: &RgbImage, hflip: bool, out: &mut Vec<f32>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let sx = if hflip { w - 1 - x } else { x };
                out.push(raw[(y * w + sx) * 3 + c] as f32);
            }
        }
    }
}

/// `[B, 3, h, w]` network input from same-sized images (each flipped when `flips[i]`).
pub fn images_to_input(imgs: &[&RgbImage], flips: &[bool], norm: InputNorm) -> Result<Tensor> {
    let Some(first) = imgs.first() else {
        return Err(Error::op("images_to_input", "no images"));
    };
    let (w, h) = (first.width() as usize, first.height() as usize);
    let mut values = Vec::with_capacity(imgs.len() * 3 * w * h);
    for (i, img) in imgs.iter().enumerate() {
        if img.width() as usize != w || img.height() as usize != h {
            return Err(Error::shape(
                "images_to_input",
                (w, h),
                (img.width(), img.height()),
            ));
        }
        push_rgb_planes(img, flips.get(i).copied().unwrap_or(false), &mut values);
    }
    norm.apply_to_rgb_planes(&mut values, w * h);
    Tensor::from_vec(values, [imgs.len(), 3, h, w])
}

/// A pretraining image: a file decoded when a batch needs it (sets on disk are streamed, never
/// all decoded into RAM), or an image already in memory (generated sets, tests).
#[derive(Clone)]
pub enum ImageSource {
    File(PathBuf),
    Memory(Arc<RgbImage>),
}

impl ImageSource {
    /// The file's path, or that the image is in memory (for error messages).
    pub fn describe(&self) -> String {
        match self {
            ImageSource::File(path) => path.display().to_string(),
            ImageSource::Memory(_) => "an in-memory image".into(),
        }
    }

    /// The decoded image (an error names the file).
    pub fn load(&self) -> Result<Arc<RgbImage>> {
        match self {
            ImageSource::File(path) => Ok(Arc::new(read_rgb(path)?)),
            ImageSource::Memory(img) => Ok(img.clone()),
        }
    }

    /// The decoded image at `w`×`h` (bilinear, as the detector's resize), without a copy when
    /// it has that size already.
    pub fn load_resized(&self, w: u32, h: u32) -> Result<Arc<RgbImage>> {
        let img = self.load()?;
        Ok(if img.width() == w && img.height() == h {
            img
        } else {
            Arc::new(resize_bilinear(&img, w, h))
        })
    }
}

/// One labelled crop: 1 = foreground (a bottle), 0 = background (the study's labels).
#[derive(Clone)]
pub struct Crop {
    pub image: ImageSource,
    pub label: u8,
    pub name: String,
}

/// Foreground/background crops: files listed (decoded batch by batch) or images in memory.
#[derive(Clone, Default)]
pub struct CropSet {
    pub crops: Vec<Crop>,
}

impl CropSet {
    /// List `dir`: `crops.csv` (`file,label,...`, as `ssod crop` writes) when present, else
    /// `pos/*.png` + `neg/*.png`, else the study's flat `pos_*.png` / `neg_*.png` (label 1 when the
    /// name contains "pos", as gene_data.py). Errors name the file; a listed file that is
    /// missing is an error here, one that does not decode when its batch is built.
    pub fn load(dir: &Path) -> Result<CropSet> {
        let csv = dir.join("crops.csv");
        let mut listed: Vec<(PathBuf, u8)> = Vec::new();
        if csv.is_file() {
            let table = read_csv(&csv)?;
            let (Some(file_col), Some(label_col)) = (table.column("file"), table.column("label"))
            else {
                return Err(Error::format(
                    csv.display(),
                    "needs the columns `file` and `label` (as `ssod crop` writes)",
                ));
            };
            for (line, record) in &table.records {
                let label = match record[label_col].trim() {
                    "1" => 1,
                    "0" => 0,
                    other => {
                        return Err(Error::format(
                            csv.display(),
                            format!("line {line}: label must be 0 or 1, got {other:?}"),
                        ))
                    }
                };
                listed.push((dir.join(&record[file_col]), label));
            }
        } else if dir.join("pos").is_dir() || dir.join("neg").is_dir() {
            for (sub, label) in [("neg", 0u8), ("pos", 1u8)] {
                let d = dir.join(sub);
                if d.is_dir() {
                    listed.extend(list_images(&d)?.into_iter().map(|p| (p, label)));
                }
            }
        } else {
            for p in list_images(dir)? {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                listed.push((p.clone(), u8::from(name.contains("pos"))));
            }
        }
        if listed.is_empty() {
            return Err(Error::format(
                dir.display(),
                "no crops found (expected crops.csv, pos/ and neg/, or pos_*.png / neg_*.png)",
            ));
        }
        let mut crops = Vec::with_capacity(listed.len());
        for (path, label) in listed {
            if !path.is_file() {
                return Err(Error::format(
                    csv.display(),
                    format!("lists {}, which is not a file", path.display()),
                ));
            }
            crops.push(Crop {
                name: path.display().to_string(),
                image: ImageSource::File(path),
                label,
            });
        }
        Ok(CropSet { crops })
    }

    pub fn from_images(items: Vec<(RgbImage, u8)>) -> CropSet {
        CropSet {
            crops: items
                .into_iter()
                .enumerate()
                .map(|(i, (image, label))| Crop {
                    image: ImageSource::Memory(Arc::new(image)),
                    label,
                    name: format!("crop {i}"),
                })
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.crops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crops.is_empty()
    }
}

/// Unlabeled frames: files listed (decoded batch by batch) or images in memory.
#[derive(Clone, Default)]
pub struct FrameSet {
    pub frames: Vec<ImageSource>,
}

impl FrameSet {
    /// Every image file directly in `dir` (sorted by name); when there are none, the images of
    /// its subfolders (one level, folders and files sorted by name), so the `unlabeled/`
    /// folder that `ssod synth` writes (one subfolder per video) loads as it is. Only listed
    /// here: frames are decoded when their batch is built.
    pub fn load(dir: &Path) -> Result<FrameSet> {
        let mut files = list_images(dir)?;
        if files.is_empty() {
            for sub in list_subfolders(dir)? {
                files.extend(list_images(&sub)?);
            }
        }
        if files.is_empty() {
            return Err(Error::format(dir.display(), "no frames (.png/.jpg) found"));
        }
        Ok(FrameSet {
            frames: files.into_iter().map(ImageSource::File).collect(),
        })
    }

    pub fn from_images(frames: Vec<RgbImage>) -> FrameSet {
        FrameSet {
            frames: frames
                .into_iter()
                .map(|f| ImageSource::Memory(Arc::new(f)))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// A seeded split of `0..n` into (train, val). `val = round(n · val_fraction)`, kept in
/// `1..=n-1` when `n >= 2` and `val_fraction > 0`, so odd sizes never fail (the study's
/// `random_split(int(.8n), int(.2n))` raised when the parts did not sum to n;
/// docs/the-study.md, defect 9).
pub fn seeded_split(n: usize, val_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut rng_for(seed, "pretrain/split"));
    let mut n_val = (n as f64 * val_fraction.clamp(0.0, 1.0)).round() as usize;
    if val_fraction > 0.0 && n >= 2 {
        n_val = n_val.clamp(1, n - 1);
    } else {
        n_val = n_val.min(n.saturating_sub(1));
    }
    let val = idx.split_off(n - n_val);
    (idx, val)
}
