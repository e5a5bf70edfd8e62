//! Backbone transfer: pretraining checkpoints name the backbone tensors exactly as the detector
//! (`backbone.backbone.*`, docs/design.md), so a pretrained backbone loads into any YOLOX of the same
//! width by name. The study (`tools/pretrain.py`): the study loaded the backbone keys strictly,
//! weights and BN running statistics, and froze nothing; so does [`load_backbone`].
//!
//! Dense contrast with `neck: true` trains the PAFPN too: its checkpoint also holds the neck
//! under the detector's names (`backbone.lateral_conv0.*`, `backbone.C3_p4.*`, ...: every
//! `backbone.*` tensor outside `backbone.backbone.*`), written by
//! [`save_backbone_neck_checkpoint`] and loaded by [`load_backbone_with`] with `neck: true`.

use std::collections::HashMap;
use std::path::Path;

use crate::models::YoloX;
use crate::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Prefix of the CSPDarknet tensors inside the detector.
pub const BACKBONE_PREFIX: &str = "backbone.backbone.";
/// Prefix of the PAFPN (CSPDarknet and neck) inside the detector.
pub const PAFPN_PREFIX: &str = "backbone.";

/// Whether a detector tensor belongs to the neck (the PAFPN outside the CSPDarknet).
pub fn is_neck_tensor(name: &str) -> bool {
    name.starts_with(PAFPN_PREFIX) && !name.starts_with(BACKBONE_PREFIX)
}

/// What [`load_backbone`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors loaded (parameters and BN statistics), the neck's included.
    pub loaded: usize,
    /// Of `loaded`, the neck's (0 unless loaded with `neck: true`).
    pub neck_loaded: usize,
    /// Tensors in the file that were not loaded (pretraining heads; a neck not asked for).
    pub ignored: usize,
}

/// Write the model's backbone tensors (official names) plus `extra` tensors (a pretraining head,
/// under its own names) as f32 safetensors, atomically.
pub fn save_backbone_checkpoint(
    model: &YoloX,
    extra: &[(String, Tensor)],
    path: &Path,
) -> Result<()> {
    save_parts(model, false, extra, path)
}

/// [`save_backbone_checkpoint`] with the neck's tensors too (every `backbone.*` tensor).
pub fn save_backbone_neck_checkpoint(
    model: &YoloX,
    extra: &[(String, Tensor)],
    path: &Path,
) -> Result<()> {
    save_parts(model, true, extra, path)
}

fn save_parts(model: &YoloX, neck: bool, extra: &[(String, Tensor)], path: &Path) -> Result<()> {
    let prefix = if neck { PAFPN_PREFIX } else { BACKBONE_PREFIX };
    let entries: Vec<(String, Tensor)> = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with(prefix))
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
    load_backbone_with(model, path, false)
}

/// [`load_backbone`], and with `neck` the neck's tensors too (every `backbone.*` tensor: a
/// checkpoint of dense contrast with `neck: true`, or a detector's weights). A neck tensor
/// missing from the file is an error naming it (the file holds a backbone only), as a backbone
/// tensor is; nothing changes then.
pub fn load_backbone_with(model: &YoloX, path: &Path, neck: bool) -> Result<LoadReport> {
    let file = read_safetensors(path)?;
    let prefix = if neck { PAFPN_PREFIX } else { BACKBONE_PREFIX };
    let entries: Vec<_> = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with(prefix))
        .collect();
    let mut problems = crate::nn::missing_or_misshaped(&entries, &file.tensors);
    if !problems.is_empty() {
        let what = if neck {
            "backbone and neck"
        } else {
            "backbone"
        };
        let no_neck = problems
            .iter()
            .all(|p| p.starts_with("missing `backbone.") && !p.contains(BACKBONE_PREFIX));
        let hint = if neck && no_neck {
            " (the file holds no neck: load it without `neck`)"
        } else {
            " (another width or variant?)"
        };
        if problems.len() > 8 {
            let more = problems.len() - 6;
            problems.truncate(6);
            problems.push(format!("and {more} more"));
        }
        return Err(Error::format(
            path.display(),
            format!(
                "{what} does not match the model{hint}: {}",
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
        neck_loaded: entries.iter().filter(|e| is_neck_tensor(&e.name)).count(),
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
