//! Backbone transfer: pretraining checkpoints name the backbone tensors exactly as the detector
//! (`backbone.backbone.*`, docs/design.md), so a pretrained backbone loads into any YOLOX of the same
//! width by name. The study (`tools/pretrain.py`): the study loaded the backbone keys strictly,
//! weights and BN running statistics, and froze nothing; so does [`load_backbone`].

use std::collections::HashMap;
use std::path::Path;

use crate::models::YoloX;
use crate::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Prefix of the CSPDarknet tensors inside the detector.
pub const BACKBONE_PREFIX: &str = "backbone.backbone.";

/// What [`load_backbone`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// Backbone tensors loaded (parameters and BN statistics).
    pub loaded: usize,
    /// Tensors in the file that are not backbone tensors (pretraining heads), ignored.
    pub ignored: usize,
}

/// Write the model's backbone tensors (official names) plus `extra` tensors (a pretraining head,
/// under its own names) as f32 safetensors, atomically.
pub fn save_backbone_checkpoint(
    model: &YoloX,
    extra: &[(String, Tensor)],
    path: &Path,
) -> Result<()> {
    let entries: Vec<(String, Tensor)> = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with(BACKBONE_PREFIX))
        .map(|e| (e.name, e.tensor))
        .chain(extra.iter().cloned())
        .collect();
    write_safetensors(
        path,
        entries.iter().map(|(n, t)| (n.as_str(), t)),
        SaveDtype::F32,
        None,
    )
}

/// Load every `backbone.backbone.*` tensor of `model` from `path`. Fails, naming each offender,
/// when a backbone tensor is missing from the file or has another shape (a checkpoint of another
/// width), and then changes nothing. Other tensors in the file are ignored.
pub fn load_backbone(model: &YoloX, path: &Path) -> Result<LoadReport> {
    let file = read_safetensors(path)?;
    let entries: Vec<_> = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with(BACKBONE_PREFIX))
        .collect();
    let problems = crate::nn::missing_or_misshaped(&entries, &file.tensors);
    if !problems.is_empty() {
        return Err(Error::format(
            path.display(),
            format!(
                "backbone does not match the model (another width or variant?): {}",
                problems.join("; ")
            ),
        ));
    }
    let known: HashMap<&str, ()> = entries.iter().map(|e| (e.name.as_str(), ())).collect();
    for e in &entries {
        e.tensor.copy_values_from(&file.tensors[&e.name].to_vec())?;
    }
    let ignored = file
        .tensors
        .keys()
        .filter(|k| !known.contains_key(k.as_str()))
        .count();
    Ok(LoadReport {
        loaded: entries.len(),
        ignored,
    })
}

/// Turn gradients off (`frozen = true`) or back on for the backbone's trainable tensors, for
/// `freeze_backbone_epochs`. Returns how many tensors changed mode. BN statistics are buffers
/// and keep updating in training mode (as PyTorch's `requires_grad_(False)`).
pub fn freeze_backbone(model: &YoloX, frozen: bool) -> usize {
    model.freeze_backbone(frozen)
}

/// Values of every backbone tensor plus `extra`, to restore the best epoch later.
pub(crate) fn snapshot(model: &YoloX, extra: &[Tensor]) -> Vec<Vec<f32>> {
    backbone_tensors(model)
        .iter()
        .chain(extra.iter())
        .map(|t| t.to_vec())
        .collect()
}

pub(crate) fn restore(model: &YoloX, extra: &[Tensor], values: &[Vec<f32>]) -> Result<()> {
    for (t, v) in backbone_tensors(model)
        .iter()
        .chain(extra.iter())
        .zip(values)
    {
        t.copy_values_from(v)?;
    }
    Ok(())
}

fn backbone_tensors(model: &YoloX) -> Vec<Tensor> {
    model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with(BACKBONE_PREFIX))
        .map(|e| e.tensor)
        .collect()
}
