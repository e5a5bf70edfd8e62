//! Resumable training checkpoints: ONE safetensors file (f32) holding
//! - `model.<name>`: every entry of the trained model (parameters and BN buffers),
//! - `ema.<name>`:   every entry of the EMA model (when EMA is on),
//! - `optim.<param name>.<state>`: the optimiser state ([`Optimizer::state`]),
//!
//! and string metadata: `format`, `epoch`, `iteration`, `ema_updates`, `optimizer`,
//! `train_config` (JSON), `ssod_version` and, once the run has evaluated, `best_ap` and
//! `best_epoch` (what `best.safetensors` holds, so a resumed run keeps YOLOX's best rule). YOLOX's `ckpt_file` holds the same things
//! (`model`, `optimizer`, `start_epoch`); its EMA lives in `model` because it saves the EMA
//! weights for evaluation, while here both are kept so a resumed run continues bit for bit.
//!
//! Written through a temporary file and a rename (`write_safetensors`). Loading validates every
//! tensor before anything is changed, and its errors name each missing or mis-shaped tensor.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::config::{OptimizerKind, TrainConfig};
use super::ema::ModelEma;
use super::optim::Optimizer;
use crate::nn::ParamStore;
use crate::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// The `format` metadata value of a training checkpoint.
pub const CHECKPOINT_FORMAT: &str = "ssod-train-checkpoint";

/// Where training stands when a checkpoint is written.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct TrainProgress {
    /// Epochs completed: the 0-based epoch a resumed run starts at (YOLOX `start_epoch`).
    pub epoch: usize,
    /// Optimiser steps completed over the whole run: the next lr is `schedule.lr_at(iteration)`.
    pub iteration: u64,
    /// The best evaluation so far (None before the first one).
    pub best: Option<BestEval>,
}

/// The best evaluation of a run so far: YOLOX keeps the weights of the epoch with the highest
/// AP (0.5:0.95) on the validation set as `best_ckpt`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BestEval {
    /// AP 0.5:0.95 of that evaluation.
    pub ap: f64,
    /// Epochs completed when it was measured (1-based, as `epoch_N.safetensors`).
    pub epoch: usize,
}

/// What a checkpoint says besides its tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    pub progress: TrainProgress,
    /// The EMA's update counter (None when the run had no EMA).
    pub ema_updates: Option<u64>,
    pub optimizer: OptimizerKind,
    pub config: TrainConfig,
    pub ssod_version: String,
}

/// Write a training checkpoint to `path` (atomically).
pub fn save_checkpoint(
    path: &Path,
    model: &ParamStore,
    ema: Option<&ModelEma>,
    optimizer: &dyn Optimizer,
    progress: TrainProgress,
    config: &TrainConfig,
) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for e in model.entries() {
        named.push((format!("model.{}", e.name), e.tensor));
    }
    if let Some(ema) = ema {
        for e in ema.store().entries() {
            named.push((format!("ema.{}", e.name), e.tensor));
        }
    }
    for (name, t) in optimizer.state()? {
        named.push((format!("optim.{name}"), t));
    }
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), CHECKPOINT_FORMAT.to_string());
    metadata.insert("epoch".to_string(), progress.epoch.to_string());
    metadata.insert("iteration".to_string(), progress.iteration.to_string());
    if let Some(best) = progress.best {
        // `{}` of an f64 is the shortest text that reads back to the same bits.
        metadata.insert("best_ap".to_string(), best.ap.to_string());
        metadata.insert("best_epoch".to_string(), best.epoch.to_string());
    }
    if let Some(ema) = ema {
        metadata.insert("ema_updates".to_string(), ema.updates().to_string());
    }
    metadata.insert("optimizer".to_string(), optimizer.kind().name().to_string());
    metadata.insert("train_config".to_string(), config.to_json());
    metadata.insert("ssod_version".to_string(), crate::VERSION.to_string());
    write_safetensors(
        path,
        named.iter().map(|(n, t)| (n.as_str(), t)),
        SaveDtype::F32,
        Some(metadata),
    )
}

/// Only the metadata of a checkpoint (e.g. to build the model from its config first).
pub fn read_checkpoint_meta(path: &Path) -> Result<CheckpointMeta> {
    let file = read_safetensors(path)?;
    parse_meta(path, &file.metadata)
}

fn parse_meta(path: &Path, meta: &HashMap<String, String>) -> Result<CheckpointMeta> {
    let field = |key: &str| -> Result<&String> {
        meta.get(key).ok_or_else(|| {
            Error::format(
                path.display(),
                format!("not a training checkpoint: metadata `{key}` is missing"),
            )
        })
    };
    let number = |key: &str| -> Result<u64> {
        let text = field(key)?;
        text.parse::<u64>().map_err(|_| {
            Error::format(
                path.display(),
                format!("metadata `{key}` must be a whole number, got `{text}`"),
            )
        })
    };
    let format = field("format")?;
    if format != CHECKPOINT_FORMAT {
        return Err(Error::format(
            path.display(),
            format!("metadata `format` is `{format}`, expected `{CHECKPOINT_FORMAT}`"),
        ));
    }
    let optimizer = match field("optimizer")?.as_str() {
        "sgd" => OptimizerKind::Sgd,
        "adam" => OptimizerKind::Adam,
        "adamw" => OptimizerKind::AdamW,
        other => {
            return Err(Error::format(
                path.display(),
                format!("metadata `optimizer` is `{other}` (sgd, adam, adamw)"),
            ))
        }
    };
    let config = TrainConfig::from_json_str(field("train_config")?)
        .map_err(|e| Error::format(path.display(), format!("metadata `train_config`: {e}")))?;
    let best = match meta.get("best_ap") {
        Some(text) => Some(BestEval {
            ap: text.parse::<f64>().map_err(|_| {
                Error::format(
                    path.display(),
                    format!("metadata `best_ap` must be a number, got `{text}`"),
                )
            })?,
            epoch: number("best_epoch")? as usize,
        }),
        None => None,
    };
    let ema_updates = match meta.get("ema_updates") {
        Some(_) => Some(number("ema_updates")?),
        None => None,
    };
    Ok(CheckpointMeta {
        progress: TrainProgress {
            epoch: number("epoch")? as usize,
            iteration: number("iteration")?,
            best,
        },
        ema_updates,
        optimizer,
        config,
        ssod_version: field("ssod_version")?.clone(),
    })
}

/// Check that `file_tensors` under `prefix` match `store` exactly; collect every problem.
fn check_section(
    prefix: &str,
    store: &ParamStore,
    file_tensors: &BTreeMap<String, Tensor>,
    problems: &mut Vec<String>,
) {
    let entries = store.entries();
    for e in &entries {
        let key = format!("{prefix}.{}", e.name);
        match file_tensors.get(&key) {
            None => problems.push(format!("missing `{key}`")),
            Some(t) if t.shape() != e.tensor.shape() => problems.push(format!(
                "`{key}` has shape {} in the file, the model needs {}",
                t.shape(),
                e.tensor.shape()
            )),
            Some(_) => {}
        }
    }
    let known: std::collections::HashSet<String> = entries
        .iter()
        .map(|e| format!("{prefix}.{}", e.name))
        .collect();
    let section = format!("{prefix}.");
    for name in file_tensors.keys() {
        if name.starts_with(&section)
            && !known.contains(name)
            && !name.ends_with("num_batches_tracked")
        {
            problems.push(format!("unexpected `{name}`"));
        }
    }
}

/// Restore a checkpoint into an existing model store, EMA (if the run uses one) and optimiser
/// (which must be of the kind the checkpoint was written with). Everything is validated before
/// anything changes. Returns the metadata (progress to resume from, the saved config).
pub fn load_checkpoint(
    path: &Path,
    model: &ParamStore,
    ema: Option<&mut ModelEma>,
    optimizer: &mut dyn Optimizer,
) -> Result<CheckpointMeta> {
    let file = read_safetensors(path)?;
    let meta = parse_meta(path, &file.metadata)?;
    if meta.optimizer != optimizer.kind() {
        return Err(Error::format(
            path.display(),
            format!(
                "the checkpoint's optimizer is `{}`, the run's is `{}`",
                meta.optimizer.name(),
                optimizer.kind().name()
            ),
        ));
    }
    let mut problems = Vec::new();
    check_section("model", model, &file.tensors, &mut problems);
    if let Some(ema) = ema.as_ref() {
        if meta.ema_updates.is_none() {
            problems.push("no EMA in the checkpoint (metadata `ema_updates` missing)".into());
        }
        check_section("ema", ema.store(), &file.tensors, &mut problems);
    }
    for name in file.tensors.keys() {
        if !(name.starts_with("model.") || name.starts_with("ema.") || name.starts_with("optim.")) {
            problems.push(format!(
                "unexpected `{name}` (not under model., ema. or optim.)"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(Error::format(
            path.display(),
            format!("does not match the run: {}", problems.join("; ")),
        ));
    }
    let optim_state: Vec<(String, Tensor)> = file
        .tensors
        .iter()
        .filter_map(|(name, t)| {
            name.strip_prefix("optim.")
                .map(|rest| (rest.to_string(), t.clone()))
        })
        .collect();
    // The optimiser validates its whole state before replacing it, so an error here still
    // leaves model, EMA and optimiser untouched.
    optimizer
        .load_state(&optim_state)
        .map_err(|e| Error::format(path.display(), format!("optimizer state: {e}")))?;
    for e in model.entries() {
        e.tensor
            .copy_values_from(&file.tensors[&format!("model.{}", e.name)].to_vec())?;
    }
    if let Some(ema) = ema {
        for e in ema.store().entries() {
            e.tensor
                .copy_values_from(&file.tensors[&format!("ema.{}", e.name)].to_vec())?;
        }
        ema.set_updates(meta.ema_updates.unwrap_or(0));
    }
    Ok(meta)
}
