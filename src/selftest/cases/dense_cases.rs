//! Dense-contrast step parity: one step (two views per image, C3–C5 and the PAFPN, geometric
//! matching) with the engine's ops on CUDA tensors against the same step on the CPU: loss, its
//! global and dense parts, the cosines, every gradient of backbone, neck and heads. The same
//! step with one image pair excluded one way (temporal contrast's dense objective: a near frame
//! of the anchor's video is no negative) is a second row.

use super::*;
use crate::models::{YoloX, YoloXConfig};
use crate::pretrain::dense::geometry::{draw_view, EXCLUDED};
use crate::pretrain::dense::{dense_step, DenseHeads, DenseKeys, ViewBox};
use crate::pretrain::ssl::ViewAugment;
use crate::tensor::Device;

const DENSE_IMAGES: usize = 2;
const VIEW: usize = 64;

/// Two images' views: cuts of a 128×96 image, view 2 flipped, drawn once by the case's seed.
fn dense_views(rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    let values = uniform(rng, 2 * DENSE_IMAGES * 3 * VIEW * VIEW, 0.0, 255.0);
    let aug = ViewAugment {
        crop_scale: [0.3, 1.0],
        ..ViewAugment::default()
    };
    let boxes = (0..2 * DENSE_IMAGES)
        .flat_map(|_| {
            let v = draw_view(&aug, [128, 96], rng);
            [v.x, v.y, v.w, v.h, usize::from(v.flipped)].map(|u| u as f32)
        })
        .collect();
    vec![values, boxes]
}

fn dense_parity_step(inp: &Inputs, device: Device, excluded: Option<&[f32]>) -> Result<Outputs> {
    let model = YoloX::new(YoloXConfig::variant("nano", 2)?)?;
    let cfg = DenseKeys {
        dim: 16,
        neck: true,
        ..Default::default()
    };
    let heads = DenseHeads::new(model.config.width, cfg.dim, cfg.neck, 7)?;
    model.store.to_device(device)?;
    heads.store.to_device(device)?;
    model.set_training(true);
    heads.store.set_training(true);
    let views: Vec<ViewBox> = inp[1]
        .chunks(5)
        .map(|c| ViewBox {
            x: c[0] as usize,
            y: c[1] as usize,
            w: c[2] as usize,
            h: c[3] as usize,
            flipped: c[4] > 0.5,
        })
        .collect();
    let boxes: Vec<(ViewBox, ViewBox)> = views.chunks(2).map(|p| (p[0], p[1])).collect();
    let (step, ms) = timed_cpu(|| {
        let x = Tensor::from_vec_on(inp[0].clone(), [2 * DENSE_IMAGES, 3, VIEW, VIEW], device)?;
        dense_step(&model, &heads, &x, &boxes, 11, &cfg.contrast(), excluded)
    })?;
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
    Ok(out(
        vec![
            ("loss", vec![step.loss.item()?]),
            (
                "global, dense",
                vec![step.global.item()?, step.dense.item()?],
            ),
            ("cosines", vec![step.pos_cos.item()?, step.neg_cos.item()?]),
            (
                "d backbone",
                grads(model.store.entries(), "backbone.backbone."),
            ),
            (
                "d backbone + neck",
                grads(model.store.entries(), "backbone."),
            ),
            ("d heads", grads(heads.store.entries(), "")),
        ],
        ms,
    ))
}

pub(super) fn dense_step_case() -> Case {
    Case {
        name: "dense contrast step, C3-C5 + PAFPN, geometric matching (norm)",
        kernels: &[],
        shape: format!("{DENSE_IMAGES} images x 2 views {VIEW}x{VIEW}, nano, neck"),
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(dense_views),
        cpu: Box::new(|inp| dense_parity_step(inp, Device::Cpu, None)),
        gpu: Box::new(|_, inp| dense_parity_step(inp, Device::Cuda, None)),
    }
}

/// Pair 0's first view (the anchor) does not take pair 1's second view (a near frame of its
/// video) as a negative; pair 1's anchor still takes pair 0's.
const EXCLUDED_ONE_WAY: [f32; 4] = [0.0, EXCLUDED, 0.0, 0.0];

pub(super) fn temporal_dense_step_case() -> Case {
    Case {
        name: "temporal contrast step, dense objective, a frame pair excluded (norm)",
        kernels: &[],
        shape: format!("{DENSE_IMAGES} frame pairs x {VIEW}x{VIEW}, nano, neck"),
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(dense_views),
        cpu: Box::new(|inp| dense_parity_step(inp, Device::Cpu, Some(&EXCLUDED_ONE_WAY))),
        gpu: Box::new(|_, inp| dense_parity_step(inp, Device::Cuda, Some(&EXCLUDED_ONE_WAY))),
    }
}
