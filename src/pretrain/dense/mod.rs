//! Dense contrast on feature maps (docs/pretraining.md, "Dense contrast"): DenseCL (Wang et al.,
//! CVPR 2021) on the backbone's C3, C4, C5 and, with `neck: true`, on the PAFPN's P3, P4, P5, so
//! the neck is pretrained too. Two random resized crops of each image; per level a dense
//! projection head and an InfoNCE whose positives are the cells of the two views that see the
//! same image place (`matching: "geometric"`, the default: the crop boxes are known, PixPro's
//! rule) or the most similar cell (`"feature"`, DenseCL's rule); negatives are the other images'
//! cells in the batch; plus DenseCL's global InfoNCE on GAP(C5), weighted `global_weight`.
//!
//! - `geometry.rs`: view boxes, cell ↔ image mapping, matching (pure functions);
//! - `heads.rs`: dense and global projection heads;
//! - `loss.rs`: InfoNCE over paired rows;
//! - `views.rs`: the loader's view pairs;
//! - `step.rs`: one step's forward and backward.

pub mod geometry;
pub mod heads;
pub mod loss;
pub mod step;
pub mod views;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::check_positive;
use super::color_jitter::ColorAugment;
use super::data::InputNorm;
use super::device::DeviceConfig;
use super::PretrainSchedule;
use crate::train::config::Precision;
use crate::{Error, Result};

pub use geometry::{ViewBox, ViewDraw};
pub use heads::DenseHeads;
pub use step::{dense_step, DenseLoss};

/// How the positive of a view-1 cell is found in view 2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Matching {
    /// The view-2 cell that holds the view-1 cell's centre (cells outside view 2 sit out).
    #[default]
    Geometric,
    /// The view-2 cell with the largest cosine of the backbone features (DenseCL).
    Feature,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseConfig {
    pub seed: u64,
    pub epochs: usize,
    /// Images per step (each gives two views).
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: PretrainSchedule,
    /// `[w, h]` images are resized to before views are cut.
    pub image_size: [usize; 2],
    /// `[w, h]` of each view (multiples of 32; DenseCL: 224 × 224).
    pub view_size: [usize; 2],
    /// RandomResizedCrop's area fraction `[min, max]` (DenseCL / MoCo v2: [0.2, 1.0]).
    pub crop_scale: [f64; 2],
    /// RandomResizedCrop's aspect ratio `[min, max]` (torchvision: [3/4, 4/3]).
    pub crop_ratio: [f64; 2],
    pub flip_prob: f64,
    pub color_jitter_prob: f64,
    /// ColorJitter(brightness, contrast, saturation, hue) (MoCo v2: 0.4, 0.4, 0.4, 0.1).
    pub color_jitter: [f64; 4],
    pub grayscale_prob: f64,
    pub input_norm: InputNorm,
    /// Embedding size of the dense and global heads (DenseCL: 128).
    pub dim: usize,
    /// InfoNCE temperature (DenseCL / MoCo v2: 0.2).
    pub temperature: f64,
    /// Weight of the global term; the dense terms get `1 − global_weight` (DenseCL's λ = 0.5).
    pub global_weight: f64,
    pub matching: Matching,
    /// Matched cells per image and level that enter the loss (all when fewer).
    pub queries_per_image: usize,
    /// Train the PAFPN too (dense heads on P3, P4, P5) and keep it in the checkpoint.
    pub neck: bool,
    pub max_steps_per_epoch: Option<usize>,
    /// Folder for `dense_last.safetensors`, the per-epoch state, `epochs.csv` and `loss.png`;
    /// None writes nothing.
    pub out: Option<PathBuf>,
    /// Continue the run whose state is in `out` (`epochs` may be raised).
    pub resume: bool,
    pub device: String,
    pub precision: Precision,
    pub workers: usize,
}

impl Default for DenseConfig {
    fn default() -> Self {
        DenseConfig {
            seed: 0,
            epochs: 10,
            batch_size: 16,
            lr: 1e-3,
            weight_decay: 5e-4,
            schedule: PretrainSchedule::Cos,
            image_size: [640, 384],
            view_size: [224, 224],
            crop_scale: [0.2, 1.0],
            crop_ratio: [0.75, 4.0 / 3.0],
            flip_prob: 0.5,
            color_jitter_prob: 0.8,
            color_jitter: [0.4, 0.4, 0.4, 0.1],
            grayscale_prob: 0.2,
            input_norm: InputNorm::Bgr255,
            dim: 128,
            temperature: 0.2,
            global_weight: 0.5,
            matching: Matching::Geometric,
            queries_per_image: 64,
            neck: false,
            max_steps_per_epoch: None,
            out: None,
            resume: false,
            device: "cpu".into(),
            precision: Precision::F32,
            workers: 2,
        }
    }
}

fn bad(why: String) -> Error {
    Error::InvalidArgument(why)
}

impl DenseConfig {
    /// The `device`, `precision` and `workers` keys.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            device: self.device.clone(),
            precision: self.precision,
            workers: self.workers,
        }
    }

    /// How views are drawn.
    pub fn view_draw(&self) -> ViewDraw {
        ViewDraw {
            scale: self.crop_scale,
            ratio: self.crop_ratio,
            flip_prob: self.flip_prob,
        }
    }

    pub fn color_augment(&self) -> ColorAugment {
        ColorAugment {
            jitter_prob: self.color_jitter_prob,
            jitter: self.color_jitter,
            grayscale_prob: self.grayscale_prob,
        }
    }

    pub fn validate(&self) -> Result<()> {
        self.device_config().validate()?;
        check_positive("epochs", self.epochs)?;
        check_positive("dim", self.dim)?;
        check_positive("queries_per_image", self.queries_per_image)?;
        if self.batch_size < 2 {
            return Err(bad(format!(
                "`batch_size` must be >= 2 (the other images are the negatives), got {}",
                self.batch_size
            )));
        }
        for (key, [w, h]) in [
            ("image_size", self.image_size),
            ("view_size", self.view_size),
        ] {
            if w == 0 || h == 0 {
                return Err(bad(format!("`{key}` must be positive, got [{w}, {h}]")));
            }
        }
        let [vw, vh] = self.view_size;
        if !vw.is_multiple_of(32) || !vh.is_multiple_of(32) {
            return Err(bad(format!(
                "`view_size` must be multiples of 32 (the backbone's stride), got [{vw}, {vh}]"
            )));
        }
        let [s0, s1] = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(bad(format!(
                "`crop_scale` must be [min, max] with 0 < min <= max <= 1, got [{s0}, {s1}]"
            )));
        }
        let [r0, r1] = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(bad(format!(
                "`crop_ratio` must be [min, max] with 0 < min <= max, got [{r0}, {r1}]"
            )));
        }
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(bad(format!(
                "`temperature` must be > 0, got {}",
                self.temperature
            )));
        }
        for (key, v) in [
            ("global_weight", self.global_weight),
            ("flip_prob", self.flip_prob),
            ("color_jitter_prob", self.color_jitter_prob),
            ("grayscale_prob", self.grayscale_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(bad(format!("`{key}` must be in [0, 1], got {v}")));
            }
        }
        if self.color_jitter.iter().any(|v| v.is_nan() || *v < 0.0) || self.color_jitter[3] > 0.5 {
            return Err(bad(
                "`color_jitter` is [brightness, contrast, saturation, hue], each >= 0, hue <= 0.5"
                    .into(),
            ));
        }
        Ok(())
    }
}
