//! The parameter store: every parameter and buffer of a model under its full name, plus the
//! model's train/eval mode. Layers keep handles to the same tensors, so loading a checkpoint
//! (`copy_values_from`) updates the model in place.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;

use crate::tensor::{Shape, Tensor};
use crate::{Error, Result};

/// What an entry is, which decides optimiser treatment (YOLOX: weight decay on conv/linear
/// weights only) and whether it counts as a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Conv / linear weight: trained, with weight decay.
    Weight,
    /// Bias or BN affine: trained, no weight decay.
    NoDecay,
    /// Running statistics: not trained, saved and loaded, averaged by EMA.
    Buffer,
}

#[derive(Clone)]
pub struct NamedTensor {
    pub name: String,
    pub tensor: Tensor,
    pub kind: TensorKind,
}

#[derive(Clone, Default)]
pub struct ParamStore {
    entries: Arc<Mutex<Vec<NamedTensor>>>,
    training: Arc<AtomicBool>,
    /// Overrides every BN layer's momentum while set (precise-BN recalibration).
    bn_momentum: Arc<Mutex<Option<f32>>>,
    seed: u64,
}

impl ParamStore {
    pub fn new(seed: u64) -> Self {
        ParamStore {
            entries: Default::default(),
            training: Arc::new(AtomicBool::new(true)),
            bn_momentum: Default::default(),
            seed,
        }
    }

    pub fn builder(&self) -> Builder {
        Builder {
            store: self.clone(),
            prefix: String::new(),
        }
    }

    pub fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    pub fn set_training(&self, on: bool) {
        self.training.store(on, Ordering::Relaxed)
    }

    /// Override the momentum of every BN layer (None: each layer's own, YOLOX's 0.03).
    pub fn set_bn_momentum(&self, momentum: Option<f32>) {
        *self.bn_momentum.lock().unwrap_or_else(|p| p.into_inner()) = momentum;
    }

    /// Override the BN momentum until the returned guard is dropped (also on early returns
    /// and errors), then restore the previous setting.
    pub fn bn_momentum_scope(&self, momentum: Option<f32>) -> BnMomentumGuard {
        let previous = self.bn_momentum();
        if momentum.is_some() {
            self.set_bn_momentum(momentum);
        }
        BnMomentumGuard {
            store: self.clone(),
            previous,
        }
    }

    pub fn bn_momentum(&self) -> Option<f32> {
        *self.bn_momentum.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every entry in registration order.
    pub fn entries(&self) -> Vec<NamedTensor> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Trainable tensors (weights and no-decay parameters).
    pub fn parameters(&self) -> Vec<NamedTensor> {
        self.entries()
            .into_iter()
            .filter(|e| e.kind != TensorKind::Buffer)
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<Tensor> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.tensor.clone())
    }

    /// Move every parameter and buffer to `device` in place (layers keep their handles).
    pub fn to_device(&self, device: crate::tensor::Device) -> Result<()> {
        for e in self.entries() {
            e.tensor.move_storage_to(device)?;
        }
        Ok(())
    }

    /// Number of trainable scalars (PyTorch's `sum(p.numel() for p in model.parameters())`).
    pub fn num_params(&self) -> usize {
        self.parameters().iter().map(|e| e.tensor.numel()).sum()
    }

    fn insert(&self, entry: NamedTensor) -> Result<()> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.iter().any(|e| e.name == entry.name) {
            return Err(Error::Msg(format!(
                "parameter `{}` registered twice",
                entry.name
            )));
        }
        entries.push(entry);
        Ok(())
    }
}

/// Registers tensors under a name prefix (`builder.sub("backbone").sub("stem")`).
#[derive(Clone)]
pub struct Builder {
    store: ParamStore,
    prefix: String,
}

impl Builder {
    pub fn sub(&self, name: impl std::fmt::Display) -> Builder {
        let prefix = if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        };
        Builder {
            store: self.store.clone(),
            prefix,
        }
    }

    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    pub fn name(&self, leaf: &str) -> String {
        if self.prefix.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.prefix)
        }
    }

    /// A tensor with `values` registered as `leaf`; trainable kinds require gradients.
    pub fn register(
        &self,
        leaf: &str,
        shape: impl Into<Shape>,
        values: Vec<f32>,
        kind: TensorKind,
    ) -> Result<Tensor> {
        let t = Tensor::from_vec(values, shape)?.with_requires_grad(kind != TensorKind::Buffer);
        self.store.insert(NamedTensor {
            name: self.name(leaf),
            tensor: t.clone(),
            kind,
        })?;
        Ok(t)
    }

    /// PyTorch's default conv/linear init, `kaiming_uniform_(a=√5)`: U(−1/√fan_in, 1/√fan_in),
    /// drawn from a stream named after the tensor, so values do not depend on build order.
    pub fn uniform_fan_in(
        &self,
        leaf: &str,
        shape: impl Into<Shape>,
        fan_in: usize,
        kind: TensorKind,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let mut rng = crate::rng::rng_for(self.store.seed, &format!("init/{}", self.name(leaf)));
        let values = (0..shape.numel())
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        self.register(leaf, shape, values, kind)
    }
}

/// Every entry of `entries` that a checkpoint's `tensors` lacks or holds with another shape, as
/// messages naming the tensor (one rule for the detector's strict load and backbone transfer).
pub fn missing_or_misshaped(
    entries: &[NamedTensor],
    tensors: &std::collections::BTreeMap<String, Tensor>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for e in entries {
        match tensors.get(&e.name) {
            None => problems.push(format!("missing `{}`", e.name)),
            Some(t) if t.shape() != e.tensor.shape() => problems.push(format!(
                "`{}` has shape {} in the file, the model needs {}",
                e.name,
                t.shape(),
                e.tensor.shape()
            )),
            Some(_) => {}
        }
    }
    problems
}

/// Restores a store's BN momentum override when dropped (see [`ParamStore::bn_momentum_scope`]).
pub struct BnMomentumGuard {
    store: ParamStore,
    previous: Option<f32>,
}

impl Drop for BnMomentumGuard {
    fn drop(&mut self) {
        self.store.set_bn_momentum(self.previous);
    }
}

/// How a checkpoint's tensors line up with a model's entries (see [`match_checkpoint`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointMatch {
    /// Indices into the entries of the tensors the file has with the model's shape.
    pub matched: Vec<usize>,
    /// The model's tensors under a skipped prefix (not read from the file).
    pub skipped: Vec<String>,
    /// The model's tensors the file lacks.
    pub missing: Vec<String>,
    /// The model's tensors the file has with another shape: (name, file shape, model shape).
    pub misshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// The file's tensors the model does not have (not under a skipped prefix;
    /// `num_batches_tracked` is never counted).
    pub unexpected: Vec<String>,
}

/// Whether `name` is `prefix` itself or lies under it (`head.cls_preds` covers
/// `head.cls_preds.0.weight`, not `head.cls_preds_x`); a prefix ending in `.` covers what starts
/// with it.
pub fn under_prefix(name: &str, prefix: &str) -> bool {
    if prefix.is_empty() {
        return false;
    }
    if prefix.ends_with('.') {
        return name.starts_with(prefix);
    }
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Line up a checkpoint's `tensors` with a model's `entries`, leaving out every name under one
/// of the `skip` prefixes (on either side).
pub fn match_checkpoint(
    entries: &[NamedTensor],
    tensors: &std::collections::BTreeMap<String, Tensor>,
    skip: &[String],
) -> CheckpointMatch {
    let skipped = |name: &str| skip.iter().any(|p| under_prefix(name, p));
    let mut m = CheckpointMatch::default();
    for (i, e) in entries.iter().enumerate() {
        if skipped(&e.name) {
            m.skipped.push(e.name.clone());
            continue;
        }
        match tensors.get(&e.name) {
            None => m.missing.push(e.name.clone()),
            Some(t) if t.shape() != e.tensor.shape() => {
                m.misshaped
                    .push((e.name.clone(), t.dims().to_vec(), e.tensor.dims().to_vec()))
            }
            Some(_) => m.matched.push(i),
        }
    }
    let known: std::collections::HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    m.unexpected = tensors
        .keys()
        .filter(|n| {
            !known.contains(n.as_str()) && !n.ends_with("num_batches_tracked") && !skipped(n)
        })
        .cloned()
        .collect();
    m
}
