//! Backbone pretraining (docs/the-study.md, docs/pretraining.md): center-loss fg/bg classification,
//! patch-contrastive self-supervision, a linear probe, and transfer into the detector by name.
//!
//! Every function trains the backbone of a [`crate::models::YoloX`] in place (its
//! `backbone.backbone.*` tensors) with a head of its own, and returns a [`PretrainReport`].
//! Configs are serde structs with `deny_unknown_fields`: an unknown key is an error naming it.

pub mod center_loss;
pub mod centers;
pub mod color_jitter;
pub mod data;
pub mod dense;
pub mod device;
pub mod heads;
pub mod health;
pub mod knn;
pub mod loader;
pub mod masked;
pub mod masked_decoder;
pub mod patch_geometry;
pub mod patch_loss;
pub mod patch_ssl;
pub mod probe;
pub mod run_files;
pub mod ssl;
pub mod state;
pub mod temporal;
pub mod transfer;

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use center_loss::{pretrain_center_loss, CenterLossConfig};
pub use centers::center_loss;
pub use data::{CropSet, FrameSet, ImageSource, InputNorm};
pub use device::DeviceConfig;
pub use heads::{HeadKind, PretrainHead};
pub use health::{embedding_health, HealthConfig, HealthReport};
pub use knn::{knn_probe, KnnConfig, KnnReport};
pub use masked::{pretrain_masked, MaskedConfig};
pub use patch_ssl::PatchLossKind;
pub use patch_ssl::{pretrain_patch_ssl, PatchGeometry, PatchSslConfig};
pub use probe::{linear_probe, ProbeConfig, ProbeReport};
pub use transfer::{
    freeze_backbone, load_backbone, load_backbone_with, save_backbone_checkpoint,
    save_backbone_neck_checkpoint, LoadReport,
};

use crate::models::YoloX;
use crate::train::optim::{Adam, Optimizer};
use crate::train::schedule::LrSchedule;
use crate::{Error, Result};

/// Learning-rate schedule of a pretraining run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PretrainSchedule {
    /// The study: a `CosineAnnealingWarmRestarts` was created and never stepped, so the lr was
    /// constant (docs/the-study.md, defect 7).
    #[default]
    Constant,
    /// Cosine from `lr` to 0 over all steps.
    Cos,
}

impl PretrainSchedule {
    pub(crate) fn build(self, lr: f64, total_steps: u64) -> LrSchedule {
        match self {
            PretrainSchedule::Constant => LrSchedule::Constant { base_lr: lr },
            PretrainSchedule::Cos => LrSchedule::Cos {
                base_lr: lr,
                total_iters: total_steps,
            },
        }
    }
}

/// One epoch of a pretraining run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// Held-out fg/bg accuracy (center loss), when evaluated this epoch.
    pub accuracy: Option<f64>,
    /// Mean cos(anchor, positive) and cos(anchor, negative) over the epoch (patch SSL).
    pub mean_pos_cos: Option<f64>,
    pub mean_neg_cos: Option<f64>,
    /// Wall time of the epoch's training steps (loader waits included, evaluation not).
    #[serde(default)]
    pub seconds: f64,
    /// Images (crops, frames or views) the epoch's steps consumed.
    #[serde(default)]
    pub images_seen: usize,
    /// The embedding health after the epoch (`health.rs`), when checked.
    #[serde(default)]
    pub health: Option<HealthReport>,
}

/// What a pretraining run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PretrainReport {
    pub epochs: Vec<EpochStats>,
    /// The kept epoch (best held-out accuracy; patch SSL: the last) and its accuracy.
    pub best_epoch: Option<usize>,
    pub best_accuracy: Option<f64>,
    /// The written checkpoint (when the config names an output folder).
    pub checkpoint: Option<PathBuf>,
    /// Training throughput: crops (center loss) or patches (SSL) per second.
    pub samples_per_s: f64,
    pub steps: u64,
    /// The last epoch's embedding health, when checked.
    pub health: Option<HealthReport>,
    /// Warnings of the run (an embedding collapse, each epoch it was seen).
    pub warnings: Vec<String>,
}

impl PretrainReport {
    /// At the end of a run: the last epoch's health, and the throughput over the training
    /// steps' time (`samples`: crops, patches or images, as the method counts them).
    pub(crate) fn conclude(&mut self, samples: usize, train_seconds: f64) {
        self.health = self.epochs.last().and_then(|e| e.health.clone());
        self.samples_per_s = samples as f64 / train_seconds.max(1e-9);
    }
}

/// Parse a JSON config, naming `source` (the file) and any unknown key in errors.
pub fn parse_config<T: DeserializeOwned>(text: &str, source: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::format(source, format!("bad config: {e}")))
}

/// Adam over the detector's store (only tensors that receive gradients, the backbone's, move)
/// and over the head's store. The study: `Adam(lr=1e-3, weight_decay=5e-4)`; here the decay
/// applies to conv/linear weights only (the store's [`crate::nn::TensorKind`]), not to BN and
/// biases as PyTorch's single group did.
pub(crate) fn adam_pair(model: &YoloX, head: &PretrainHead, weight_decay: f64) -> (Adam, Adam) {
    let wd = weight_decay as f32;
    (
        Adam::new(&model.store, 0.9, 0.999, 1e-8, wd),
        Adam::new(&head.store, 0.9, 0.999, 1e-8, wd),
    )
}

pub(crate) fn step_pair(a: &mut Adam, b: &mut Adam, lr: f32) -> Result<()> {
    a.step(lr)?;
    b.step(lr)?;
    a.zero_grad();
    b.zero_grad();
    Ok(())
}

/// Batches per epoch over `n` samples, at most `max` when set.
pub(crate) fn steps_per_epoch(n: usize, batch_size: usize, max: Option<usize>) -> usize {
    let all = n.div_ceil(batch_size.max(1));
    max.map_or(all, |m| m.min(all))
}

pub(crate) fn check_positive(key: &str, v: usize) -> Result<()> {
    if v == 0 {
        return Err(Error::InvalidArgument(format!("`{key}` must be >= 1")));
    }
    Ok(())
}
