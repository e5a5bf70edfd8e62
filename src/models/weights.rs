//! Reading a detector's weights from a file: which files (model-only safetensors, a training
//! state's `ema.*`/`model.*` section, a PyTorch checkpoint's state dict), what a load did
//! ([`LoadedWeights`], [`WeightsSource`]) and how it reports a mismatch. [`YoloX::load_with`](super::YoloX::load_with)
//! matches the tensors against the model.

use std::collections::BTreeMap;
use std::path::Path;

use crate::tensor::safetensors_io::read_safetensors;
use crate::tensor::Tensor;
use crate::Result;

/// How [`YoloX::load_with`](super::YoloX::load_with) treats a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    /// Refuse a file with missing, mis-shaped or unexpected tensors (outside `skip`).
    pub strict: bool,
    /// Name prefixes left out on both sides (`head.cls_preds` covers `head.cls_preds.0.weight`).
    pub skip: Vec<String>,
}

impl Default for LoadOptions {
    /// Strict, nothing skipped: what [`YoloX::load`](super::YoloX::load) does.
    fn default() -> Self {
        LoadOptions {
            strict: true,
            skip: Vec::new(),
        }
    }
}

/// Where the weights [`YoloX::load`](super::YoloX::load) took came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsSource {
    /// A model-only file (`last.safetensors`, `best.safetensors`, a converted YOLOX checkpoint,
    /// a PyTorch state dict saved as it is).
    Model,
    /// The `ema.*` weights of a training-state checkpoint.
    TrainingStateEma,
    /// The `model.*` weights of a training-state checkpoint of a run without EMA.
    TrainingStateModel,
    /// The `model` entry of a PyTorch checkpoint (an official YOLOX release, or what YOLOX's
    /// trainer saves: the EMA weights when it ran with EMA).
    PytorchCheckpoint,
}

impl WeightsSource {
    /// What the file is, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            WeightsSource::Model => "model weights",
            WeightsSource::TrainingStateEma => "the EMA weights (`ema.*`) of a training state",
            WeightsSource::TrainingStateModel => {
                "the weights (`model.*`) of a training state without EMA"
            }
            WeightsSource::PytorchCheckpoint => "the `model` state dict of a PyTorch checkpoint",
        }
    }

    /// Whether the weights were one part of a training state of this crate (whose other parts,
    /// optimiser and step, a load leaves out).
    pub fn is_training_state(self) -> bool {
        matches!(
            self,
            WeightsSource::TrainingStateEma | WeightsSource::TrainingStateModel
        )
    }
}

/// What [`YoloX::load`](super::YoloX::load) / [`YoloX::load_with`](super::YoloX::load_with) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedWeights {
    /// Tensors loaded (parameters and BN buffers).
    pub tensors: usize,
    pub source: WeightsSource,
    /// The model's tensors under a `skip` prefix: left as they were.
    pub skipped: Vec<String>,
    /// The model's tensors the file lacks (a non-strict load leaves them as they were).
    pub missing: Vec<String>,
    /// The model's tensors the file holds with another shape, left as they were:
    /// (name, shape in the file, shape in the model).
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// The file's tensors the model does not have (`num_batches_tracked` is never counted).
    pub unexpected: Vec<String>,
}

impl LoadedWeights {
    /// Whether every tensor of the model was loaded and the file held nothing else.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty()
            && self.missing.is_empty()
            && self.misshaped.is_empty()
            && self.unexpected.is_empty()
    }

    /// A few lines for people: the count loaded, then each kind of tensor left out with its
    /// count and its first names (at most four each, so a screenful at most).
    pub fn summary(&self) -> String {
        const SHOWN: usize = 4;
        let of = self.tensors + self.skipped.len() + self.missing.len() + self.misshaped.len();
        let mut lines = vec![format!(
            "loaded {} of the model's {of} tensors ({})",
            self.tensors,
            self.source.describe()
        )];
        let list = |names: Vec<String>| {
            let more = names.len().saturating_sub(SHOWN);
            let mut shown: Vec<String> = names.into_iter().take(SHOWN).collect();
            if more > 0 {
                shown.push(format!("and {more} more"));
            }
            shown.join(", ")
        };
        for (what, names) in [
            ("skipped", self.skipped.clone()),
            ("missing from the file", self.missing.clone()),
            (
                "with another shape in the file",
                self.misshaped
                    .iter()
                    .map(|(n, file, model)| format!("{n} {file:?} (model {model:?})"))
                    .collect(),
            ),
            ("in the file only", self.unexpected.clone()),
        ] {
            if !names.is_empty() {
                lines.push(format!("  {} {what}: {}", names.len(), list(names)));
            }
        }
        lines.join("\n")
    }
}

/// The model's tensors of a weights file: a PyTorch checkpoint's state dict, or a safetensors
/// file's tensors (a training state's model section).
pub(super) fn read_model_tensors(path: &Path) -> Result<(WeightsSource, BTreeMap<String, Tensor>)> {
    if crate::tensor::pth::is_pytorch_file(path) {
        let file = crate::tensor::pth::read_pth(path)?;
        let source = match file.layout {
            crate::tensor::pth::PthLayout::StateDict => WeightsSource::Model,
            crate::tensor::pth::PthLayout::Checkpoint { .. } => WeightsSource::PytorchCheckpoint,
        };
        return Ok((source, file.tensors));
    }
    Ok(model_section(read_safetensors(path)?.tensors))
}

/// The model's tensors of a file: a model-only file as it is, a training state's `ema.*` (else
/// `model.*`) section with the prefix taken off.
fn model_section(tensors: BTreeMap<String, Tensor>) -> (WeightsSource, BTreeMap<String, Tensor>) {
    let has = |prefix: &str| tensors.keys().any(|k| k.starts_with(prefix));
    let is_training_state = tensors.keys().all(|k| {
        ["model.", "ema.", "optim."]
            .iter()
            .any(|p| k.starts_with(p))
    }) && has("model.");
    if !is_training_state {
        return (WeightsSource::Model, tensors);
    }
    let (source, prefix) = if has("ema.") {
        (WeightsSource::TrainingStateEma, "ema.")
    } else {
        (WeightsSource::TrainingStateModel, "model.")
    };
    let section = tensors
        .into_iter()
        .filter_map(|(k, t)| k.strip_prefix(prefix).map(|rest| (rest.to_string(), t)))
        .collect();
    (source, section)
}

/// A load error's body: counts of missing, mis-shaped and unexpected tensors, the first few
/// names of each, so that a wrong file gives a screenful, not one line per tensor.
pub(super) fn summarize_problems(missing_or_misshaped: &[String], unexpected: &[String]) -> String {
    const SHOWN: usize = 4;
    let (missing, misshaped): (Vec<&String>, Vec<&String>) = missing_or_misshaped
        .iter()
        .partition(|p| p.starts_with("missing"));
    let mut parts = Vec::new();
    for (what, list) in [
        ("missing", missing),
        ("with another shape", misshaped),
        ("unexpected", unexpected.iter().collect()),
    ] {
        if list.is_empty() {
            continue;
        }
        let shown: Vec<&str> = list.iter().take(SHOWN).map(|s| s.as_str()).collect();
        let more = list.len().saturating_sub(SHOWN);
        parts.push(format!(
            "{} {what} ({}{})",
            list.len(),
            shown.join("; "),
            if more > 0 {
                format!("; and {more} more")
            } else {
                String::new()
            }
        ));
    }
    parts.join(", ")
}
