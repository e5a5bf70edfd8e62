//! A pretraining run's state at the end of each epoch, so that an interrupted run (Ctrl-C, a
//! killed process, an ablation point cut short) resumes where it stopped and ends bit for bit
//! where an uninterrupted run ends.
//!
//! One safetensors file, `<out>/pretrain_state.safetensors`, written atomically after every
//! epoch:
//! - `model.<name>`: every tensor of the detector (parameters and BN buffers);
//! - `head.<name>`: the pretraining head's tensors (and the centres of the center loss);
//! - `optim.<part>.<param>.<state>`: each optimiser's state (`part`: `model`, `head`);
//! - `best.<i>`: the best epoch's snapshot (center loss: what is restored at the end);
//!
//! and string metadata: `format`, `method`, `config` (JSON), `epochs_done`, `rng_word_pos`
//! (the position of the run's random stream, so shuffles and augmentations continue), `report`
//! (the epochs so far, JSON), `best_accuracy` and `best_epoch`.

use std::collections::HashMap;
use std::path::Path;

use rand_chacha::ChaCha8Rng;

use super::{EpochStats, PretrainReport};
use crate::models::YoloX;
use crate::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use crate::tensor::Tensor;
use crate::train::optim::Optimizer;
use crate::{Error, Result};

/// The state file's name inside a pretraining run's `out` folder.
pub const STATE_FILE: &str = "pretrain_state.safetensors";
/// The `format` metadata value of a pretraining state.
pub const STATE_FORMAT: &str = "ssod-pretrain-state";

/// Config keys that may differ between a state and the run resuming it: where the files go, and
/// where and how fast the run computes, not what it computes (`precision` does, and must match),
/// and the health check (`health.rs`: it reads the model and changes nothing).
const FREE_KEYS: &[&str] = &["out", "resume", "device", "workers", "cache", "health"];

/// The best epoch so far: its accuracy, epoch and the values of the tensors it restores.
pub type BestSnapshot = (f64, usize, Vec<Vec<f32>>);

/// What a run keeps between epochs besides its optimisers, by reference.
pub struct RunState<'a> {
    /// `center_loss`, `patch_ssl`, ...: a state resumes only the same method.
    pub method: &'a str,
    /// The run's config as JSON (compared key by key on resume).
    pub config: serde_json::Value,
    pub model: &'a YoloX,
    /// The head's tensors under their names (centres included).
    pub head: Vec<(String, Tensor)>,
}

/// The run's optimisers under the names their state is kept under (`model`, `head`).
pub type NamedOptimizers<'a> = [(&'a str, &'a dyn Optimizer); 2];

/// What a resumed run continues with besides its tensors.
pub struct Resumed {
    pub epochs_done: usize,
    pub report: PretrainReport,
    pub best: Option<BestSnapshot>,
}

/// A config as the JSON a state compares on resume.
pub(crate) fn config_json<T: serde::Serialize>(cfg: &T) -> Result<serde_json::Value> {
    serde_json::to_value(cfg).map_err(|e| Error::Msg(format!("pretraining config: {e}")))
}

/// Check the run's `out`/`resume` settings: the state to resume from (None: a fresh start).
/// A fresh run refuses a folder that holds a state, so nothing is written over.
pub fn state_to_resume(out: Option<&Path>, resume: bool) -> Result<Option<std::path::PathBuf>> {
    let Some(dir) = out else {
        if resume {
            return Err(Error::InvalidArgument(
                "`resume: true` needs `out`, the folder of the run to resume".into(),
            ));
        }
        return Ok(None);
    };
    let path = dir.join(STATE_FILE);
    match (resume, path.exists()) {
        (true, true) => Ok(Some(path)),
        (true, false) => Err(Error::InvalidArgument(format!(
            "resume: {} holds no pretraining state ({} is missing)",
            dir.display(),
            path.display()
        ))),
        (false, true) => Err(Error::InvalidArgument(format!(
            "{} already holds a pretraining run ({} exists): pass `resume: true` to continue \
             it, or choose another `out`",
            dir.display(),
            path.display()
        ))),
        (false, false) => Ok(None),
    }
}

impl RunState<'_> {
    /// Write the state after `report.epochs.len()` epochs (atomically).
    pub fn save(
        &self,
        path: &Path,
        optimizers: NamedOptimizers,
        report: &PretrainReport,
        rng: &ChaCha8Rng,
        best: Option<&BestSnapshot>,
    ) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = Vec::new();
        for e in self.model.store.entries() {
            named.push((format!("model.{}", e.name), e.tensor));
        }
        for (name, t) in &self.head {
            named.push((format!("head.{name}"), t.clone()));
        }
        for (part, opt) in optimizers {
            for (name, t) in opt.state()? {
                named.push((format!("optim.{part}.{name}"), t));
            }
        }
        let mut metadata = HashMap::new();
        if let Some((acc, epoch, values)) = best {
            for (i, v) in values.iter().enumerate() {
                named.push((format!("best.{i}"), Tensor::from_vec(v.clone(), [v.len()])?));
            }
            metadata.insert("best_accuracy".into(), acc.to_string());
            metadata.insert("best_epoch".into(), epoch.to_string());
        }
        metadata.insert("format".into(), STATE_FORMAT.to_string());
        metadata.insert("method".into(), self.method.to_string());
        metadata.insert("config".into(), self.config.to_string());
        metadata.insert("epochs_done".into(), report.epochs.len().to_string());
        metadata.insert("rng_word_pos".into(), rng.get_word_pos().to_string());
        let report_json = serde_json::to_string(report)
            .map_err(|e| Error::Msg(format!("pretraining state: {e}")))?;
        metadata.insert("report".into(), report_json);
        write_safetensors(
            path,
            named.iter().map(|(n, t)| (n.as_str(), t)),
            SaveDtype::F32,
            Some(metadata),
        )
    }

    /// After an epoch, in `out` when the run has one: the state ([`STATE_FILE`], for resume)
    /// and the epoch table and loss plot (`run_files.rs`).
    pub fn save_epoch(
        &self,
        out: Option<&Path>,
        optimizers: NamedOptimizers,
        report: &PretrainReport,
        rng: &ChaCha8Rng,
        best: Option<&BestSnapshot>,
    ) -> Result<()> {
        let Some(dir) = out else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        self.save(&dir.join(STATE_FILE), optimizers, report, rng, best)?;
        super::run_files::write_epoch_files(dir, report, self.method)
    }

    /// [`RunState::resume`] from `path` when there is one (a run asked to resume), saying so;
    /// `None` for a fresh run.
    pub fn resume_if(
        &self,
        path: Option<&Path>,
        optimizers: [(&str, &mut dyn Optimizer); 2],
        rng: &mut ChaCha8Rng,
    ) -> Result<Option<Resumed>> {
        let Some(path) = path else {
            return Ok(None);
        };
        let resumed = self.resume(path, optimizers, rng)?;
        println!(
            "resuming {} {} after epoch {}",
            self.method,
            path.display(),
            resumed.epochs_done
        );
        Ok(Some(resumed))
    }

    /// Restore model, head, optimisers and the random stream from `path`, after checking that
    /// it is a state of this method with the same config (but `epochs`, which may be raised).
    /// Nothing changes on error.
    pub fn resume(
        &self,
        path: &Path,
        optimizers: [(&str, &mut dyn Optimizer); 2],
        rng: &mut ChaCha8Rng,
    ) -> Result<Resumed> {
        let file = read_safetensors(path)?;
        let bad = |why: String| Error::format(path.display(), why);
        let meta = |key: &str| {
            file.metadata
                .get(key)
                .ok_or_else(|| bad(format!("not a pretraining state: metadata `{key}` missing")))
        };
        if meta("format")? != STATE_FORMAT {
            return Err(bad(format!("metadata `format` is not `{STATE_FORMAT}`")));
        }
        let method = meta("method")?;
        if method != self.method {
            return Err(bad(format!(
                "a `{method}` pretraining state; this run is `{}`",
                self.method
            )));
        }
        let saved: serde_json::Value = serde_json::from_str(meta("config")?)
            .map_err(|e| bad(format!("metadata `config`: {e}")))?;
        check_config(path, &saved, &self.config)?;
        let number = |key: &str| -> Result<u128> {
            meta(key)?
                .parse::<u128>()
                .map_err(|_| bad(format!("metadata `{key}` is not a whole number")))
        };
        let epochs_done = number("epochs_done")? as usize;
        let word_pos = number("rng_word_pos")?;
        let report: ReportState = serde_json::from_str(meta("report")?)
            .map_err(|e| bad(format!("metadata `report`: {e}")))?;
        let best = match file.metadata.get("best_accuracy") {
            None => None,
            Some(acc) => {
                let acc: f64 = acc
                    .parse()
                    .map_err(|_| bad("metadata `best_accuracy` is not a number".into()))?;
                let epoch = number("best_epoch")? as usize;
                let values: Vec<Vec<f32>> = (0..)
                    .map_while(|i| file.tensors.get(&format!("best.{i}")))
                    .map(|t| t.to_vec())
                    .collect();
                Some((acc, epoch, values))
            }
        };
        // Every tensor checked before anything changes.
        let mut problems = Vec::new();
        let mut targets: Vec<(String, Tensor)> = self
            .model
            .store
            .entries()
            .into_iter()
            .map(|e| (format!("model.{}", e.name), e.tensor))
            .collect();
        targets.extend(
            self.head
                .iter()
                .map(|(n, t)| (format!("head.{n}"), t.clone())),
        );
        for (key, t) in &targets {
            match file.tensors.get(key) {
                None => problems.push(format!("missing `{key}`")),
                Some(v) if v.shape() != t.shape() => problems.push(format!(
                    "`{key}` has shape {} in the file, the run needs {}",
                    v.shape(),
                    t.shape()
                )),
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            problems.truncate(6);
            return Err(bad(format!(
                "does not match this run (another model width or head?): {}",
                problems.join("; ")
            )));
        }
        let mut optim_states = Vec::new();
        for (part, _) in &optimizers {
            let prefix = format!("optim.{part}.");
            let state: Vec<(String, Tensor)> = file
                .tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|n| (n.to_string(), t.clone())))
                .collect();
            optim_states.push(state);
        }
        for ((part, opt), state) in optimizers.into_iter().zip(&optim_states) {
            opt.load_state(state)
                .map_err(|e| bad(format!("optimizer `{part}`: {e}")))?;
        }
        for (key, t) in &targets {
            t.copy_values_from(&file.tensors[key].to_vec())?;
        }
        rng.set_word_pos(word_pos);
        Ok(Resumed {
            epochs_done,
            report: report.into_report(),
            best,
        })
    }
}

/// The parts of a [`PretrainReport`] a state carries.
#[derive(serde::Deserialize)]
struct ReportState {
    epochs: Vec<EpochStats>,
    steps: u64,
}

impl ReportState {
    fn into_report(self) -> PretrainReport {
        PretrainReport {
            epochs: self.epochs,
            steps: self.steps,
            ..Default::default()
        }
    }
}

/// An error naming every config key that differs, but `out`, `resume` and a raised `epochs`.
fn check_config(path: &Path, saved: &serde_json::Value, now: &serde_json::Value) -> Result<()> {
    let (Some(a), Some(b)) = (saved.as_object(), now.as_object()) else {
        return Err(Error::format(
            path.display(),
            "metadata `config` is not an object",
        ));
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let differing: Vec<String> = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k) && !FREE_KEYS.contains(&k.as_str()))
        .filter(|k| {
            let raised = k.as_str() == "epochs"
                && b.get("epochs").and_then(|v| v.as_u64())
                    >= a.get("epochs").and_then(|v| v.as_u64());
            !raised
        })
        .map(|k| {
            let text = |m: &serde_json::Map<String, serde_json::Value>| {
                m.get(k).map_or("(unset)".to_string(), |v| v.to_string())
            };
            format!("`{k}` (state {}, now {})", text(a), text(b))
        })
        .collect();
    if differing.is_empty() {
        return Ok(());
    }
    Err(Error::format(
        path.display(),
        format!(
            "the config differs from the one this pretraining ran with: {}; resume with the \
             same config (epochs may be raised), or start a new run in another `out`",
            differing.join(", ")
        ),
    ))
}
