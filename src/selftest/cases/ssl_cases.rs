//! Self-supervised step parity: one SimSiam step (two views, projector and predictor with BN,
//! stop-gradient) and one temporal-contrast step (projector, masked InfoNCE) with the engine's
//! ops on CUDA tensors against the same step on the CPU: loss and every gradient of backbone and
//! head. Whole steps through a network: norms compared, as the other pretraining rows.

use super::*;
use crate::models::{YoloX, YoloXConfig};
use crate::nn::ParamStore;
use crate::pretrain::heads::c5_channels;
use crate::pretrain::ssl::simsiam::{simsiam_step, SimSiamHead, SimSiamKeys};
use crate::pretrain::temporal::{temporal_step, TemporalHead, TemporalKeys};
use crate::tensor::Device;

const VIEWS: usize = 3;
const SIDE: usize = 64;

/// Gradients of the backbone's trainable tensors and of the head's, in store order.
fn gradients(model: &YoloX, head: &ParamStore) -> (Vec<f32>, Vec<f32>) {
    let grads = |entries: Vec<crate::nn::NamedTensor>, prefix: &str| -> Vec<f32> {
        entries
            .into_iter()
            .filter(|e| e.name.starts_with(prefix) && e.tensor.requires_grad())
            .flat_map(|e| {
                e.tensor
                    .grad()
                    .map(|g| g.to_vec())
                    .unwrap_or_else(|| vec![0.0; e.tensor.numel()])
            })
            .collect()
    };
    (
        grads(model.store.entries(), "backbone.backbone."),
        grads(head.entries(), ""),
    )
}

/// The anchors' and positives' (video, time) of the temporal row: anchor 0's and anchor 1's
/// positives are near frames of one video (masked for each other), anchor 2 is another video.
const ANCHORS: [(usize, i64); VIEWS] = [(0, 0), (0, 2), (1, 5)];
const POSITIVES: [(usize, i64); VIEWS] = [(0, 1), (0, 4), (1, 7)];

fn ssl_step(inp: &Inputs, device: Device, temporal: bool) -> Result<Outputs> {
    let model = YoloX::new(YoloXConfig::variant("nano", 2)?)?;
    let c5 = c5_channels(model.config.width);
    let simsiam_keys = SimSiamKeys {
        proj_dim: Some(32),
        pred_hidden: Some(8),
        ..Default::default()
    };
    let temporal_keys = TemporalKeys {
        proj_hidden: Some(32),
        proj_dim: 16,
        ..Default::default()
    };
    let simsiam = SimSiamHead::new(c5, &simsiam_keys, 7)?;
    let temporal_head = TemporalHead::new(c5, &temporal_keys, 7)?;
    let head = if temporal {
        &temporal_head.store
    } else {
        &simsiam.store
    };
    model.store.to_device(device)?;
    head.to_device(device)?;
    model.set_training(true);
    head.set_training(true);
    let x = Tensor::from_vec_on(inp[0].clone(), [2 * VIEWS, 3, SIDE, SIDE], device)?;
    let (loss, ms) = timed_cpu(|| {
        if temporal {
            let pairs = (&ANCHORS[..], &POSITIVES[..]);
            temporal_step(&model, &temporal_head, &x, pairs, &temporal_keys)
        } else {
            simsiam_step(&model, &simsiam, &x)
        }
    })?;
    let (d_backbone, d_head) = gradients(&model, head);
    Ok(out(
        vec![
            ("loss", vec![loss.item()?]),
            ("d backbone", d_backbone),
            ("d head", d_head),
        ],
        ms,
    ))
}

pub(super) fn ssl_step_case(name: &'static str, temporal: bool) -> Case {
    Case {
        name,
        kernels: &[],
        shape: format!("2x{VIEWS} views [3, {SIDE}, {SIDE}], nano"),
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(|rng| vec![uniform(rng, 2 * VIEWS * 3 * SIDE * SIDE, 0.0, 255.0)]),
        cpu: Box::new(move |inp| ssl_step(inp, Device::Cpu, temporal)),
        gpu: Box::new(move |_, inp| ssl_step(inp, Device::Cuda, temporal)),
    }
}
