//! The backward walk.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{anomaly_mode, check_finite, no_grad_guard, Node, NodeSlot};
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Tensors reachable from `root` through live nodes, inputs before the ops that use them.
fn topological_order(root: &Tensor) -> Result<Vec<(Tensor, Option<Arc<Node>>)>> {
    let mut order = Vec::new();
    let mut visited = HashSet::new();
    // Iterative post-order DFS: (tensor, node, next input index to visit).
    let mut stack: Vec<(Tensor, Option<Arc<Node>>, usize)> = Vec::new();
    let node_of = |t: &Tensor| -> Result<Option<Arc<Node>>> {
        match &*t.node_slot() {
            NodeSlot::Leaf => Ok(None),
            NodeSlot::Live(n) => Ok(Some(n.clone())),
            NodeSlot::Freed(op) => Err(Error::Autograd(format!(
                "backward through the output of `{op}`, whose graph an earlier backward() already freed; \
                 recompute the forward pass"
            ))),
        }
    };
    visited.insert(root.id());
    stack.push((root.clone(), node_of(root)?, 0));
    while let Some((t, node, next)) = stack.pop() {
        let child = node.as_ref().and_then(|n| n.inputs.get(next).cloned());
        match child {
            Some(c) => {
                stack.push((t, node, next + 1));
                if c.requires_grad() && visited.insert(c.id()) {
                    let cn = node_of(&c)?;
                    stack.push((c, cn, 0));
                }
            }
            None => order.push((t, node)),
        }
    }
    Ok(order)
}

fn accumulate(slot: &mut HashMap<u64, Tensor>, id: u64, g: Tensor) -> Result<()> {
    match slot.remove(&id) {
        Some(prev) => {
            slot.insert(id, crate::ops::add(&prev, &g)?);
        }
        None => {
            slot.insert(id, g);
        }
    }
    Ok(())
}

/// Reverse-mode pass from a one-element `root`.
pub fn backward(root: &Tensor) -> Result<()> {
    if root.numel() != 1 {
        return Err(Error::Autograd(format!(
            "backward() needs a scalar (one-element) tensor, got shape {}; reduce it with .sum() or .mean()",
            root.shape()
        )));
    }
    if !root.requires_grad() {
        return Err(Error::Autograd(
            "backward() on a tensor that does not require gradients: mark an input with requires_grad()"
                .into(),
        ));
    }
    let _no_grad = no_grad_guard();
    let _phase = super::profile::BackwardPhase::enter();
    let order = topological_order(root)?;
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    grads.insert(
        root.id(),
        Tensor::ones(root.shape().clone()).copy_to(root.device())?,
    );
    for (t, node) in order.iter().rev() {
        let Some(g) = grads.remove(&t.id()) else {
            continue;
        };
        match node {
            Some(node) => {
                super::profile::mark("(between rules)");
                let input_grads = (node.backward)(&g)?;
                super::profile::mark(node.op);
                if input_grads.len() != node.inputs.len() {
                    return Err(Error::Autograd(format!(
                        "backward of `{}` returned {} gradients for {} inputs",
                        node.op,
                        input_grads.len(),
                        node.inputs.len()
                    )));
                }
                for (input, gi) in node.inputs.iter().zip(input_grads) {
                    let Some(gi) = gi else { continue };
                    if !input.requires_grad() {
                        continue;
                    }
                    if gi.shape() != input.shape() {
                        return Err(Error::Autograd(format!(
                            "backward of `{}` gave a gradient of shape {} for an input of shape {}",
                            node.op,
                            gi.shape(),
                            input.shape()
                        )));
                    }
                    // Gradients live where their inputs do (a host-computed backward rule of a
                    // CUDA input, or `to_device`'s own rule crossing back).
                    let gi = if gi.device() != input.device() {
                        gi.copy_to(input.device())?
                    } else {
                        gi
                    };
                    if anomaly_mode() {
                        check_finite(node.op, &gi, " (backward)")?;
                    }
                    accumulate(&mut grads, input.id(), gi)?;
                }
            }
            None => {
                // A leaf: add into its .grad. Always a fresh contiguous tensor: `g` may be shared
                // with another input (add's backward hands the same gradient to both) or be a
                // view (permute's backward), and optimisers update .grad-derived values in place.
                let total = match t.grad() {
                    Some(prev) => crate::ops::add(&prev, &g)?,
                    None => g.copy_to(t.device())?,
                };
                t.set_grad(Some(total));
            }
        }
    }
    // Free the graph: drop every walked node (and the tensors it saved).
    for (t, node) in &order {
        if let Some(node) = node {
            *t.node_slot() = NodeSlot::Freed(node.op);
        }
    }
    Ok(())
}
