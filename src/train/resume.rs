//! Continuing a run: which training state a run resumes from (and refusing to write a fresh
//! run over an earlier one), the recipe checked against the one the state was trained with,
//! and the trainer restored.

use std::path::{Path, PathBuf};

use super::checkpoint::read_checkpoint_meta;
use super::config::TrainConfig;
use super::run::{Resume, RunFiles, TrainRunOptions};
use super::trainer::DetectorTrainer;
use crate::{Error, Result};

/// Recipe keys that may differ between a checkpoint and the run that resumes it: those that
/// only change what is logged or kept, and `skip_bad_images` (a run stopped by an unreadable
/// image may resume skipping it; on a readable set it changes nothing).
const RESUME_FREE_KEYS: &[&str] = &["print_interval", "save_history_ckpt", "skip_bad_images"];

/// The training state to resume from, after checking that a fresh run would not write over an
/// earlier one.
pub(super) fn resume_source(files: &RunFiles, resume: Option<&Resume>) -> Result<Option<PathBuf>> {
    let state = files.training_state();
    match resume {
        Some(Resume::From(path)) => Ok(Some(path.clone())),
        // A process killed in its first epoch leaves `metrics.csv` (and perhaps that epoch's
        // weights and row) but no state yet: the run starts over in the same folder.
        Some(Resume::RunFolder | Resume::RunFolderIfPresent)
            if !state.exists() && files.metrics_csv().exists() =>
        {
            println!(
                "resume: {} has no training state yet (stopped in its first epoch): starting \
                 from epoch 1",
                files.dir.display()
            );
            Ok(None)
        }
        Some(Resume::RunFolder) if !state.exists() => Err(Error::InvalidArgument(format!(
            "resume: {} holds no training state to resume ({} is missing)",
            files.dir.display(),
            state.display()
        ))),
        Some(Resume::RunFolder) => Ok(Some(state)),
        Some(Resume::RunFolderIfPresent) if state.exists() => Ok(Some(state)),
        _ => {
            for existing in [state, files.metrics_csv(), files.simota_csv()] {
                if existing.exists() {
                    return Err(Error::InvalidArgument(format!(
                        "{} already holds a training run ({} exists): pass `resume: true` to \
                         continue it, or choose another output folder",
                        files.dir.display(),
                        existing.display()
                    )));
                }
            }
            Ok(None)
        }
    }
}

/// An error naming every recipe key in which `now` differs from the checkpoint's `saved`,
/// except logging keys, `overrides`, and a raised `max_epoch`.
fn check_resumed_recipe(
    path: &Path,
    saved: &TrainConfig,
    now: &TrainConfig,
    overrides: &[String],
) -> Result<()> {
    let known = match serde_json::to_value(saved) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(unknown) = overrides.iter().find(|k| !known.contains_key(k.as_str())) {
        return Err(Error::InvalidArgument(format!(
            "resume_override: `{unknown}` is not a recipe key"
        )));
    }
    let differing: Vec<(String, String, String)> = saved
        .differences(now)
        .into_iter()
        .filter(|(key, _, _)| {
            let extends = key == "max_epoch" && now.max_epoch >= saved.max_epoch;
            !(extends || RESUME_FREE_KEYS.contains(&key.as_str()) || overrides.contains(key))
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = differing
        .iter()
        .map(|(k, a, b)| format!("`{k}` (checkpoint {a}, now {b})"))
        .collect();
    let keys: Vec<String> = differing.iter().map(|(k, _, _)| format!("{k:?}")).collect();
    Err(Error::format(
        path.display(),
        format!(
            "the recipe differs from the one this run was trained with: {}; resume with the \
             same recipe, or pass resume_override: [{}] to continue with the new values",
            listed.join(", "),
            keys.join(", ")
        ),
    ))
}

/// Restore `trainer` from `path` after checking the recipe; returns the number of epochs done.
pub(super) fn resume_trainer(
    trainer: &mut DetectorTrainer,
    path: &Path,
    config: &TrainConfig,
    opts: &TrainRunOptions,
) -> Result<usize> {
    let meta = read_checkpoint_meta(path)?;
    check_resumed_recipe(path, &meta.config, config, &opts.resume_override)?;
    if meta.progress.epoch >= config.max_epoch {
        return Err(Error::InvalidArgument(format!(
            "resume: {} finished its {} epoch(s) (max_epoch {}); raise max_epoch to extend it",
            path.display(),
            meta.progress.epoch,
            config.max_epoch
        )));
    }
    trainer.resume(path)?;
    println!(
        "resuming {} after epoch {} (iteration {})",
        path.display(),
        trainer.epoch,
        trainer.iteration
    );
    Ok(trainer.epoch)
}
