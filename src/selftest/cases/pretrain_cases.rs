//! Pretraining-step parity: one center-loss step (with both centre updates) and one patch-SSL
//! step (cosine loss on frames cut on the device; InfoNCE on patches cut by the loader, MLP head,
//! joint BN) with the engine's ops on CUDA tensors against the same step on the CPU: loss,
//! cosines, every gradient of backbone, head and centres, and the updated centres. One masked
//! autoencoding step (sparse backbone, decoder, masked MSE) likewise: loss, gradients and the
//! running statistics its sparse BN wrote back.

use super::*;
use crate::models::{YoloX, YoloXConfig};
use crate::ops::PatchBox;
use crate::pretrain::center_loss::{center_loss_step, CenterLossConfig};
use crate::pretrain::centers::{update_centers, wen_center_update};
use crate::pretrain::loader::PatchInput;
use crate::pretrain::masked_decoder::{
    masked_autoencoding_step, sample_visible_patches, MaskedDecoder,
};
use crate::pretrain::patch_ssl::{
    patch_ssl_step, upload_patches, BnMode, PatchLossKind, PatchSslConfig,
};
use crate::pretrain::{HeadKind, PretrainHead};
use crate::tensor::Device;

const CROPS: usize = 6;
const CROP_SIZE: usize = 64;
const FRAMES: usize = 2;
const FRAME_W: usize = 320;
const FRAME_H: usize = 192;
const PATCH: usize = 64;

/// Gradients of every trainable tensor of `model`'s backbone and of `head`, in store order.
fn gradients(model: &YoloX, head: &PretrainHead) -> (Vec<f32>, Vec<f32>) {
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
        grads(head.store.entries(), ""),
    )
}

fn center_step(inp: &Inputs, device: Device) -> Result<Outputs> {
    let model = YoloX::new(YoloXConfig::variant("nano", 2)?)?;
    let cfg = CenterLossConfig {
        input_size: CROP_SIZE,
        ..Default::default()
    };
    let head = PretrainHead::new(cfg.head, model.config.width, CROP_SIZE, (0, 0), Some(2), 3)?;
    model.store.to_device(device)?;
    head.store.to_device(device)?;
    model.set_training(true);
    head.store.set_training(true);
    let centers = Tensor::from_vec(inp[2].clone(), [2, 2])?.with_requires_grad(true);
    centers.move_storage_to(device)?;
    let labels: Vec<usize> = inp[1].iter().map(|&l| l as usize).collect();
    let x = Tensor::from_vec_on(inp[0].clone(), [CROPS, 3, CROP_SIZE, CROP_SIZE], device)?;
    let ((loss, feature), ms) =
        timed_cpu(|| center_loss_step(&model, &head, &centers, &x, &labels, &cfg))?;
    let (d_backbone, d_head) = gradients(&model, &head);
    let d_centers = centers.grad().map(|g| g.to_vec()).unwrap_or_default();
    update_centers(&centers, &feature, &labels, &cfg)?;
    let sgd_centers = centers.to_vec();
    let wen = Tensor::from_vec(inp[2].clone(), [2, 2])?;
    wen.move_storage_to(device)?;
    wen_center_update(&wen, &feature, &labels, 0.5)?;
    Ok(out(
        vec![
            ("loss", vec![loss.item()?]),
            ("logits", feature.to_vec()),
            ("d backbone", d_backbone),
            ("d head", d_head),
            ("d centers", d_centers),
            ("centers after sgd", sgd_centers),
            ("centers after wen", wen.to_vec()),
        ],
        ms,
    ))
}

/// The cosine row cuts the frames on the device with the study's head and separate BN passes;
/// the InfoNCE row uploads patches (the per-patch augmentation path) through an MLP head with
/// one joint BN batch.
fn ssl_config(loss: PatchLossKind) -> PatchSslConfig {
    let (head, bn_mode) = match loss {
        PatchLossKind::Cosine => (HeadKind::Study, BnMode::Separate),
        PatchLossKind::InfoNce => (HeadKind::Mlp, BnMode::Joint),
    };
    PatchSslConfig {
        frame_size: [FRAME_W, FRAME_H],
        patch_size: PATCH,
        loss,
        head,
        bn_mode,
        mlp_hidden: 32,
        mlp_dim: 16,
        ..Default::default()
    }
}

fn ssl_step(inp: &Inputs, device: Device, loss: PatchLossKind) -> Result<Outputs> {
    let model = YoloX::new(YoloXConfig::variant("nano", 2)?)?;
    let cfg = ssl_config(loss);
    let head = PretrainHead::new(
        cfg.head,
        model.config.width,
        PATCH,
        (cfg.mlp_hidden, cfg.mlp_dim),
        None,
        5,
    )?;
    model.store.to_device(device)?;
    head.store.to_device(device)?;
    model.set_training(true);
    head.store.set_training(true);
    let boxes: Vec<PatchBox> = inp[1]
        .chunks(3)
        .map(|c| PatchBox {
            image: c[0] as usize,
            x: c[1] as usize,
            y: c[2] as usize,
        })
        .collect();
    let input = match loss {
        PatchLossKind::Cosine => PatchInput::Frames {
            values: inp[0].clone(),
            frames: FRAMES,
            boxes,
        },
        PatchLossKind::InfoNce => {
            let frames = Tensor::from_vec(inp[0].clone(), [FRAMES, 3, FRAME_H, FRAME_W])?;
            let count = boxes.len();
            let values = ops::crop_patches(&frames, &boxes, PATCH)?.to_vec();
            PatchInput::Patches { values, count }
        }
    };
    let (step, ms) = timed_cpu(|| {
        let patches = upload_patches(input, &cfg, device)?;
        patch_ssl_step(&model, &head, &patches, FRAMES, &cfg, None)
    })?;
    let (d_backbone, d_head) = gradients(&model, &head);
    let (pos, neg) = step.mean_cosines()?;
    Ok(out(
        vec![
            ("loss", vec![step.loss.item()?]),
            ("cosines", vec![pos as f32, neg as f32]),
            ("d backbone", d_backbone),
            ("d head", d_head),
        ],
        ms,
    ))
}

/// Frames in 0..255 and each frame's anchor, positives and negatives drawn by the study's
/// sampler (rows k-major, as the loader orders them), as `(image, x, y)` triples.
fn make_frames(rng: &mut ChaCha8Rng) -> Vec<Vec<f32>> {
    let frames = uniform(rng, FRAMES * 3 * FRAME_H * FRAME_W, 0.0, 255.0);
    let geometry = ssl_config(PatchLossKind::Cosine).geometry();
    let plans: Vec<_> = (0..FRAMES)
        .map(|_| {
            geometry
                .plan(rng)
                .expect("the parity geometry holds a 3x3 grid")
        })
        .collect();
    let boxes = crate::pretrain::loader::plan_boxes(&plans)
        .iter()
        .flat_map(|b| [b.image as f32, b.x as f32, b.y as f32])
        .collect();
    vec![frames, boxes]
}

// Whole steps through a network, as the YOLOX step rows: every conv and BN reduction sums in
// another order on the GPU, so these rows compare norms; f32 rounding stays far under 1e-3, a
// wrong CUDA arm gives O(1).

pub(super) fn center_loss_step_case() -> Case {
    Case {
        name: "center-loss pretraining step (norm)",
        kernels: &[],
        shape: format!("[{CROPS}, 3, {CROP_SIZE}, {CROP_SIZE}] crops, nano, study head"),
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(|rng| {
            let crops = uniform(rng, CROPS * 3 * CROP_SIZE * CROP_SIZE, 0.0, 255.0);
            let labels = (0..CROPS).map(|i| (i % 2) as f32).collect();
            let centers = uniform(rng, 4, -1.0, 1.0);
            vec![crops, labels, centers]
        }),
        cpu: Box::new(|inp| center_step(inp, Device::Cpu)),
        gpu: Box::new(|_, inp| center_step(inp, Device::Cuda)),
    }
}

pub(super) fn patch_ssl_step_case(name: &'static str, loss: PatchLossKind) -> Case {
    Case {
        name,
        kernels: &[],
        shape: format!("{FRAMES} frames {FRAME_W}x{FRAME_H}, 9 patches of {PATCH} each, nano"),
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(make_frames),
        cpu: Box::new(move |inp| ssl_step(inp, Device::Cpu, loss)),
        gpu: Box::new(move |_, inp| ssl_step(inp, Device::Cuda, loss)),
    }
}

const MASKED_IMAGES: usize = 2;
const MASKED_H: usize = 96;
const MASKED_W: usize = 128;

fn masked_step(inp: &Inputs, device: Device) -> Result<Outputs> {
    let model = YoloX::new(YoloXConfig::variant("nano", 2)?)?;
    let decoder = MaskedDecoder::new(model.config.width, 32, 7)?;
    model.store.to_device(device)?;
    decoder.store.to_device(device)?;
    model.set_training(true);
    decoder.store.set_training(true);
    let grid = [MASKED_H / 32, MASKED_W / 32];
    let visible: Vec<Vec<bool>> = inp[1]
        .chunks(grid[0] * grid[1])
        .map(|row| row.iter().map(|&v| v > 0.5).collect())
        .collect();
    let images = Tensor::from_vec_on(
        inp[0].clone(),
        [MASKED_IMAGES, 3, MASKED_H, MASKED_W],
        device,
    )?;
    let (loss, ms) = timed_cpu(|| {
        let mask = crate::models::PatchMask::new(&visible, grid, device)?;
        masked_autoencoding_step(&model, &decoder, &images, &mask)
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
    let running: Vec<f32> = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with("backbone.backbone.") && e.name.contains("running_"))
        .flat_map(|e| e.tensor.to_vec())
        .collect();
    Ok(out(
        vec![
            ("loss", vec![loss.item()?]),
            (
                "d backbone",
                grads(model.store.entries(), "backbone.backbone."),
            ),
            ("d decoder", grads(decoder.store.entries(), "")),
            ("running stats", running),
        ],
        ms,
    ))
}

pub(super) fn masked_step_case() -> Case {
    Case {
        name: "masked autoencoding step, sparse BN (norm)",
        kernels: &[],
        shape: format!(
            "{MASKED_IMAGES} images {MASKED_W}x{MASKED_H}, mask ratio 0.6, nano, decoder 32"
        ),
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(|rng| {
            let images = uniform(rng, MASKED_IMAGES * 3 * MASKED_H * MASKED_W, 0.0, 255.0);
            let patches = (MASKED_H / 32) * (MASKED_W / 32);
            let visible = (0..MASKED_IMAGES)
                .flat_map(|_| sample_visible_patches(patches, 0.6, rng))
                .map(|v| if v { 1.0 } else { 0.0 })
                .collect();
            vec![images, visible]
        }),
        cpu: Box::new(|inp| masked_step(inp, Device::Cpu)),
        gpu: Box::new(|_, inp| masked_step(inp, Device::Cuda)),
    }
}
