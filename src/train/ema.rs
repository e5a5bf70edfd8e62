//! The model EMA of yolox/utils/ema.py (`ModelEMA`):
//! ```text
//! d(x) = decay · (1 − exp(−x / tau))          decay 0.9998, tau 2000
//! updates += 1; d = d(updates)               (incremented before use)
//! ema = d·ema + (1 − d)·model                for EVERY floating state_dict entry
//! ```
//! "Every entry" means parameters and BN running mean/var alike. On resume YOLOX sets
//! `updates = iters_per_epoch · start_epoch`; here [`ModelEma::set_updates`] (and the checkpoint
//! loader) does that.

use std::collections::HashMap;

use crate::backend::cuda::optim::{ema_multi, multi_tensor_enabled, EmaTensor};
use crate::nn::{NamedTensor, ParamStore};
use crate::{Error, Result};

pub struct ModelEma {
    /// The EMA model's store (a second model built with the same config).
    store: ParamStore,
    /// `decay` of `d(x)` (0.9998).
    pub decay: f64,
    /// `tau` of `d(x)` (2000).
    pub tau: f64,
    /// Number of updates done so far.
    updates: u64,
}

impl ModelEma {
    /// YOLOX `ModelEMA(model, decay)`: the EMA starts as a copy of `model` (every entry is
    /// copied into `ema_store`, whose names and shapes must match), is put in eval mode and stops
    /// requiring gradients (`p.requires_grad_(False)`), so a forward through it records no tape.
    pub fn new(model: &ParamStore, ema_store: ParamStore, decay: f64, tau: f64) -> Result<Self> {
        if !(decay.is_finite() && (0.0..1.0).contains(&decay)) {
            return Err(Error::InvalidArgument(format!(
                "ema: decay must be in [0, 1), got {decay}"
            )));
        }
        if !(tau.is_finite() && tau > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "ema: tau must be > 0, got {tau}"
            )));
        }
        let pairs = matched_entries(&ema_store, model)?;
        if let Some((ema, src)) = pairs.first() {
            if ema.tensor.same_as(&src.tensor) {
                return Err(Error::InvalidArgument(
                    "ema: the EMA store is the trained model's own store; build a second model"
                        .into(),
                ));
            }
        }
        for (ema, src) in &pairs {
            ema.tensor.copy_values_from(&src.tensor.to_vec())?;
        }
        for e in ema_store.entries() {
            e.tensor.with_requires_grad(false);
        }
        ema_store.set_training(false);
        Ok(ModelEma {
            store: ema_store,
            decay,
            tau,
            updates: 0,
        })
    }

    /// The EMA model's store (evaluate and checkpoint this one).
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// Resume: YOLOX sets `updates = iters_per_epoch · start_epoch`.
    pub fn set_updates(&mut self, updates: u64) {
        self.updates = updates;
    }

    /// `d(x) = decay · (1 − exp(−x / tau))`.
    pub fn decay_at(&self, updates: u64) -> f64 {
        self.decay * (1.0 - (-(updates as f64) / self.tau).exp())
    }

    /// One EMA step after an optimiser step: `updates += 1`, then
    /// `ema = d·ema + (1 − d)·model` over every entry (parameters and buffers).
    /// Names and shapes are checked before anything changes; an error names the tensor.
    pub fn update(&mut self, model: &ParamStore) -> Result<()> {
        let pairs = matched_entries(&self.store, model)?;
        self.updates += 1;
        let d = self.decay_at(self.updates);
        // torch: v *= d; v += (1 - d) * msd[k]   (d a Python float; scalars become f32)
        let keep = d as f32;
        let take = (1.0 - d) as f32;
        let pairs = update_on_cuda(&pairs, keep)?;
        for (ema, src) in pairs {
            if ema.tensor.is_cuda() {
                // One fused kernel (ema_f32); falls through when the EMA tensor is a view.
                let ran = ema.tensor.with_cuda_mut(|dev, values| {
                    src.tensor
                        .with_cuda(|_, m| crate::backend::cuda::optim::ema(dev, values, m, keep))
                })?;
                if ran.is_some() {
                    continue;
                }
            }
            let src_values = src.tensor.to_vec();
            ema.tensor.update_values(|values| {
                for (v, &m) in values.iter_mut().zip(src_values.iter()) {
                    *v *= keep;
                    *v += take * m;
                }
            })?;
        }
        Ok(())
    }
}

/// The CUDA arm for every pair at once: one `ema_multi` launch over the pairs whose EMA tensor
/// can be held for writing and whose model tensor is a CUDA f32 buffer (as a contiguous copy
/// when it is a view); returns the pairs left to the one-tensor paths.
fn update_on_cuda(
    pairs: &[(NamedTensor, NamedTensor)],
    keep: f32,
) -> Result<Vec<&(NamedTensor, NamedTensor)>> {
    if !(pairs.iter().any(|(ema, _)| ema.tensor.is_cuda()) && multi_tensor_enabled()) {
        return Ok(pairs.iter().collect());
    }
    let dev = crate::backend::cuda::device()?;
    let mut rest = Vec::new();
    let mut held = Vec::with_capacity(pairs.len());
    for pair in pairs {
        let (ema, src) = pair;
        let Some(eg) = ema.tensor.cuda_write().filter(|_| src.tensor.is_cuda()) else {
            rest.push(pair);
            continue;
        };
        held.push((eg, src.tensor.cuda_read_or_copy()?));
    }
    let mut tensors: Vec<EmaTensor> = held
        .iter_mut()
        .map(|(eg, sh)| EmaTensor {
            ema: eg.slice(),
            src: sh.slice(),
        })
        .collect();
    ema_multi(&dev, &mut tensors, keep)?;
    Ok(rest)
}

/// Pairs (ema entry, model entry) by name; the two stores must hold the same names with the same
/// shapes.
fn matched_entries(
    ema: &ParamStore,
    model: &ParamStore,
) -> Result<Vec<(NamedTensor, NamedTensor)>> {
    let model_entries = model.entries();
    let ema_entries = ema.entries();
    let by_name: HashMap<&str, &NamedTensor> =
        model_entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let mut pairs = Vec::with_capacity(ema_entries.len());
    for e in &ema_entries {
        let src = by_name.get(e.name.as_str()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "ema: tensor `{}` of the EMA model is not in the trained model",
                e.name
            ))
        })?;
        if src.tensor.shape() != e.tensor.shape() {
            return Err(Error::ShapeMismatch {
                op: format!("ema: tensor `{}`", e.name),
                expected: e.tensor.shape().to_string(),
                got: src.tensor.shape().to_string(),
            });
        }
        pairs.push((e.clone(), (*src).clone()));
    }
    if model_entries.len() != ema_entries.len() {
        let ema_names: std::collections::HashSet<&str> =
            ema_entries.iter().map(|e| e.name.as_str()).collect();
        if let Some(extra) = model_entries
            .iter()
            .find(|e| !ema_names.contains(e.name.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "ema: tensor `{}` of the trained model is not in the EMA model",
                extra.name
            )));
        }
    }
    Ok(pairs)
}
