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
pub mod run;
pub mod step;
pub mod views;

use serde::{Deserialize, Serialize};

use super::check_positive;
use super::data::InputNorm;
use super::ssl::{MethodKeys, SslConfig, ViewAugment};
use crate::{Error, Result};

pub use geometry::ViewBox;
pub use heads::DenseHeads;
pub use run::pretrain_dense;
pub use step::{dense_step, DenseLoss};
pub use views::ViewSampling;

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

/// Dense contrast's config: the common self-supervised keys and [`DenseKeys`] in one map.
pub type DenseConfig = SslConfig<DenseKeys>;

/// The keys of the dense contrastive loss itself, shared by `pretrain_dense` (flat in its map,
/// [`DenseKeys`]) and by temporal contrast's dense objective (its `dense` map).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseContrast {
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
    /// BN momentum of the model during the run (PyTorch's convention; None: the model's own,
    /// YOLOX's 0.03). A short run needs a larger one for its running statistics, which the
    /// evaluation-mode features (probes, health, the detector) use, to follow the weights.
    pub bn_momentum: Option<f32>,
}

impl Default for DenseContrast {
    fn default() -> Self {
        DenseContrast {
            dim: 128,
            temperature: 0.2,
            global_weight: 0.5,
            matching: Matching::Geometric,
            queries_per_image: 64,
            neck: false,
            bn_momentum: None,
        }
    }
}

impl DenseContrast {
    pub fn validate(&self) -> Result<()> {
        check_positive("dim", self.dim)?;
        check_positive("queries_per_image", self.queries_per_image)?;
        if !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "`temperature` must be > 0, got {}",
                self.temperature
            )));
        }
        if self.bn_momentum.is_some_and(|m| !(m > 0.0 && m <= 1.0)) {
            return Err(Error::InvalidArgument(format!(
                "`bn_momentum` must be in (0, 1], got {:?}",
                self.bn_momentum
            )));
        }
        if !(0.0..=1.0).contains(&self.global_weight) {
            return Err(Error::InvalidArgument(format!(
                "`global_weight` must be in [0, 1], got {}",
                self.global_weight
            )));
        }
        Ok(())
    }
}

/// Dense contrast's own keys (the common ones: [`crate::pretrain::ssl::SslCommon`]; the views
/// are `image_size`, DenseCL's 224 × 224 by default): the views' keys, then the loss's
/// ([`DenseContrast`], documented there), in one flat map.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseKeys {
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
    pub dim: usize,
    pub temperature: f64,
    pub global_weight: f64,
    pub matching: Matching,
    pub queries_per_image: usize,
    pub neck: bool,
    pub bn_momentum: Option<f32>,
}

impl Default for DenseKeys {
    fn default() -> Self {
        let aug = ViewAugment::default();
        let loss = DenseContrast::default();
        DenseKeys {
            crop_scale: aug.crop_scale,
            crop_ratio: aug.crop_ratio,
            flip_prob: aug.flip_prob,
            color_jitter_prob: aug.color_jitter_prob,
            color_jitter: aug.color_jitter,
            grayscale_prob: aug.grayscale_prob,
            input_norm: InputNorm::Bgr255,
            dim: loss.dim,
            temperature: loss.temperature,
            global_weight: loss.global_weight,
            matching: loss.matching,
            queries_per_image: loss.queries_per_image,
            neck: loss.neck,
            bn_momentum: loss.bn_momentum,
        }
    }
}

impl DenseKeys {
    /// The view keys as the shared view transform.
    pub fn view_augment(&self) -> ViewAugment {
        ViewAugment {
            crop_scale: self.crop_scale,
            crop_ratio: self.crop_ratio,
            flip_prob: self.flip_prob,
            color_jitter_prob: self.color_jitter_prob,
            color_jitter: self.color_jitter,
            grayscale_prob: self.grayscale_prob,
            // Dense contrast matches cells through the views' known overlap.
            pair_region_scale: None,
        }
    }

    /// The loss keys.
    pub fn contrast(&self) -> DenseContrast {
        DenseContrast {
            dim: self.dim,
            temperature: self.temperature,
            global_weight: self.global_weight,
            matching: self.matching,
            queries_per_image: self.queries_per_image,
            neck: self.neck,
            bn_momentum: self.bn_momentum,
        }
    }
}

impl MethodKeys for DenseKeys {
    fn validate(&self) -> Result<()> {
        self.view_augment().validate("pretrain_dense")?;
        self.contrast().validate()
    }
}
