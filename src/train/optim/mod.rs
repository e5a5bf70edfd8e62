//! Optimisers with PyTorch's update rules, in place on the parameters of a [`ParamStore`].
//!
//! YOLOX (yolox_base.py `get_optimizer`) builds three parameter groups: BN weights (no decay),
//! conv/linear weights (`weight_decay`) and all biases (no decay). Here the store's
//! [`TensorKind`] decides: weight decay applies to `TensorKind::Weight` only; `NoDecay` entries
//! are trained without it; `Buffer` entries (BN running statistics) are never touched.
//!
//! Every optimiser reads each parameter's accumulated `.grad()` and skips parameters without
//! one (as PyTorch skips `p.grad is None`). State (momentum buffers, Adam moments, step counts)
//! is kept per parameter name, so a checkpoint restores it into a freshly built model.

mod adam;
mod sgd;

pub use adam::Adam;
pub use sgd::Sgd;

use super::config::{OptimizerKind, TrainConfig};
use crate::nn::{NamedTensor, ParamStore, TensorKind};
use crate::tensor::{CudaHeld, CudaWriteGuard, Tensor};
use crate::{Error, Result};

/// What the trainer needs from an optimiser.
pub trait Optimizer: Send + Sync {
    /// One update of every parameter that has a gradient, at learning rate `lr`.
    fn step(&mut self, lr: f32) -> Result<()>;
    /// Forget every parameter's gradient (PyTorch `zero_grad(set_to_none=True)`).
    fn zero_grad(&self);
    /// The state under names `<param name>.<state name>` (`momentum_buffer`, `exp_avg`,
    /// `exp_avg_sq`, `step`), each a copy with the parameter's shape (`step`: one element).
    /// Fails (rather than leave a buffer out of a checkpoint) when a device buffer cannot be
    /// read back.
    fn state(&self) -> Result<Vec<(String, Tensor)>>;
    /// Replace the state with `state` (as [`Optimizer::state`] returned it). Nothing changes on
    /// error; errors name the offending tensor.
    fn load_state(&mut self, state: &[(String, Tensor)]) -> Result<()>;
    /// Which optimiser this is (stored in checkpoints).
    fn kind(&self) -> OptimizerKind;
}

/// The optimiser a config asks for, over the trainable entries of `store`.
pub fn build_optimizer(config: &TrainConfig, store: &ParamStore) -> Box<dyn Optimizer> {
    let wd = config.weight_decay as f32;
    match config.optimizer {
        OptimizerKind::Sgd => {
            Box::new(Sgd::new(store, config.momentum as f32, config.nesterov, wd))
        }
        OptimizerKind::Adam | OptimizerKind::AdamW => {
            let (b1, b2) = config.adam_betas;
            let mut adam = Adam::new(store, b1 as f32, b2 as f32, config.adam_eps as f32, wd);
            adam.decoupled_weight_decay = config.optimizer == OptimizerKind::AdamW;
            Box::new(adam)
        }
    }
}

/// The multi-tensor launches' first split: CUDA parameters with their gradients, and the
/// parameters left to the other paths (those on the CPU). Parameters without a gradient are in
/// neither (skipped, as PyTorch skips `p.grad is None`).
#[allow(clippy::type_complexity)]
fn cuda_params_with_grads<'p>(
    params: &'p [NamedTensor],
    op: &str,
) -> Result<(Vec<(&'p NamedTensor, Tensor)>, Vec<&'p NamedTensor>)> {
    let (mut grads, mut rest) = (Vec::new(), Vec::new());
    for p in params {
        if !p.tensor.is_cuda() {
            rest.push(p);
        } else if let Some(g) = checked_grad(p, op)? {
            grads.push((p, g));
        }
    }
    Ok((grads, rest))
}

/// Hold every buffer of a multi-tensor launch: each parameter for writing, its gradient for
/// reading (a view as a contiguous copy). A parameter that cannot be held joins `rest`.
fn hold_for_launch<'g, 'p>(
    grads: &'g [(&'p NamedTensor, Tensor)],
    rest: &mut Vec<&'p NamedTensor>,
) -> Result<Vec<(&'p NamedTensor, CudaWriteGuard<'p>, CudaHeld<'g>)>> {
    let mut held = Vec::with_capacity(grads.len());
    for (p, g) in grads {
        match p.tensor.cuda_write() {
            Some(pg) => held.push((*p, pg, g.cuda_read_or_copy()?)),
            None => rest.push(p),
        }
    }
    Ok(held)
}

/// The weight decay a parameter gets: YOLOX's pg1 (conv/linear weights) only.
fn decay_for(kind: TensorKind, weight_decay: f32) -> f32 {
    match kind {
        TensorKind::Weight => weight_decay,
        TensorKind::NoDecay | TensorKind::Buffer => 0.0,
    }
}

fn trainable(store: &ParamStore) -> Vec<NamedTensor> {
    store
        .entries()
        .into_iter()
        .filter(|e| e.kind != TensorKind::Buffer)
        .collect()
}

/// The parameter's gradient values, checked against its shape.
fn grad_values(p: &NamedTensor, op: &str) -> Result<Option<Vec<f32>>> {
    Ok(checked_grad(p, op)?.map(|g| g.to_vec()))
}

/// The parameter's gradient tensor (on whatever device it lives), `None` without one; an error
/// naming the parameter when its shape differs from the parameter's.
fn checked_grad(p: &NamedTensor, op: &str) -> Result<Option<Tensor>> {
    let Some(g) = p.tensor.grad() else {
        return Ok(None);
    };
    if g.shape() != p.tensor.shape() {
        return Err(Error::ShapeMismatch {
            op: format!("{op}: gradient of `{}`", p.name),
            expected: p.tensor.shape().to_string(),
            got: g.shape().to_string(),
        });
    }
    Ok(Some(g))
}

/// `name.suffix` → (`name`, `suffix`), checked against the known parameters and shapes.
fn parse_state_name<'a>(
    op: &str,
    full: &'a str,
    tensor: &Tensor,
    params: &[NamedTensor],
    suffixes: &[&str],
) -> Result<(&'a str, &'a str)> {
    let (name, suffix) = full.rsplit_once('.').ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{op}: state tensor `{full}` is not named <parameter>.<state>"
        ))
    })?;
    if !suffixes.contains(&suffix) {
        return Err(Error::InvalidArgument(format!(
            "{op}: state tensor `{full}`: unknown state `{suffix}` (expected one of {})",
            suffixes.join(", ")
        )));
    }
    let param = params.iter().find(|p| p.name == name).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{op}: state tensor `{full}` names no trainable parameter of the model"
        ))
    })?;
    let expected_numel = if suffix == "step" {
        1
    } else {
        param.tensor.numel()
    };
    if tensor.numel() != expected_numel
        || (suffix != "step" && tensor.shape() != param.tensor.shape())
    {
        return Err(Error::ShapeMismatch {
            op: format!("{op}: state tensor `{full}`"),
            expected: if suffix == "step" {
                "one element".into()
            } else {
                param.tensor.shape().to_string()
            },
            got: tensor.shape().to_string(),
        });
    }
    Ok((name, suffix))
}
