//! Define-by-run reverse-mode autograd.
//!
//! Every op that has an input requiring gradients records a [`Node`] on its output: the op's name,
//! its inputs and a backward closure. `backward()` walks the graph from a scalar root in reverse
//! topological order. **Backward closures return fresh gradients, one per input; only this module
//! accumulates (`+=`)**: into the gradient of an intermediate tensor while walking, and into the
//! `.grad` of leaves at the end. After a backward pass the nodes it walked are freed (their saved
//! tensors dropped), so a training step's memory does not grow from step to step; a second
//! backward through the same graph is an error naming the op.

mod backward;
mod profile;

use std::cell::Cell;
use std::sync::Arc;

pub use backward::backward;
pub use profile::{is_profiling, profile_table, restart as profile_restart, set_profiling};

use crate::tensor::{compute_device, Device, Tensor};
use crate::{Error, Result};

/// The backward rule of one recorded op: upstream gradient in, one gradient per input out
/// (`None` for inputs that take no gradient).
pub type BackwardFn = Box<dyn Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync>;

/// One recorded op.
pub struct Node {
    pub op: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: BackwardFn,
}

/// What a tensor knows about how it was made.
pub enum NodeSlot {
    /// Created by the user (or by an op with no input requiring gradients).
    Leaf,
    /// Made by a recorded op.
    Live(Arc<Node>),
    /// Made by an op whose graph an earlier backward pass has freed.
    Freed(&'static str),
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
    static ANOMALY_MODE: Cell<bool> = const { Cell::new(false) };
}

/// Whether ops record nodes on this thread.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped.
pub struct GradModeGuard {
    previous: bool,
}

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Stop recording until the guard is dropped.
pub fn no_grad_guard() -> GradModeGuard {
    let previous = GRAD_ENABLED.with(|g| g.replace(false));
    GradModeGuard { previous }
}

/// Run `f` without recording (inference, optimiser updates, SimOTA).
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = no_grad_guard();
    f()
}

/// Anomaly mode: every op checks its output (and backward its gradients) for NaN/Inf and fails
/// naming the first op that produced one. Costs a pass over every output; off by default.
pub fn set_anomaly_mode(on: bool) {
    ANOMALY_MODE.with(|a| a.set(on));
}

pub fn anomaly_mode() -> bool {
    ANOMALY_MODE.with(|a| a.get())
}

pub(crate) fn check_finite(op: &str, t: &Tensor, phase: &str) -> Result<()> {
    let bad = t.with_values(|v| {
        v.iter()
            .find(|x| !x.is_finite())
            .map(|x| if x.is_nan() { "NaN" } else { "Inf" })
    })?;
    match bad {
        Some(what) => Err(Error::Anomaly {
            op: format!("{op}{phase}"),
            what: what.to_string(),
            shape: t.shape().to_string(),
        }),
        None => Ok(()),
    }
}

/// Attach a node to `out` when recording is on and an input requires gradients. Every op
/// calls this exactly once with its fresh output.
///
/// Device rule: when an input lives on CUDA and `out` was computed on the host (an op without
/// a CUDA arm, see `tensor/device.rs`), `out` moves to CUDA here, so results stay where their
/// inputs are.
pub fn record(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Result<Tensor> {
    let out = if out.device() == Device::Cpu && compute_device(inputs) == Device::Cuda {
        out.copy_to(Device::Cuda)?
    } else {
        out
    };
    record_as_is(op, out, inputs, backward)
}

/// [`record`] without the device rule (for `to_device`, whose output is meant to move).
pub(crate) fn record_as_is(
    op: &'static str,
    out: Tensor,
    inputs: &[&Tensor],
    backward: impl Fn(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
) -> Result<Tensor> {
    profile::mark(op);
    if anomaly_mode() {
        check_finite(op, &out, "")?;
    }
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        let node = Node {
            op,
            inputs: inputs.iter().map(|t| (*t).clone()).collect(),
            backward: Box::new(backward),
        };
        *out.node_slot() = NodeSlot::Live(Arc::new(node));
        out.set_requires_grad_flag(true);
    }
    Ok(out)
}

impl Tensor {
    /// Compute gradients of this scalar with respect to every leaf that requires them.
    pub fn backward(&self) -> Result<()> {
        backward(self)
    }

    /// The op that made this tensor, if it was recorded.
    pub fn op_name(&self) -> Option<&'static str> {
        match &*self.node_slot() {
            NodeSlot::Leaf => None,
            NodeSlot::Live(n) => Some(n.op),
            NodeSlot::Freed(op) => Some(op),
        }
    }

    /// True for tensors the user created (not made by a recorded op).
    pub fn is_leaf(&self) -> bool {
        matches!(&*self.node_slot(), NodeSlot::Leaf)
    }
}
