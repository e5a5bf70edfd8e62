//! Whole-model parity (docs/cuda.md): one YOLOX training step (forward, decode, SimOTA, loss,
//! backward) with the engine's ops on CUDA tensors against the same step on the CPU. This checks
//! the ops' CUDA arms and the device rules of `tensor/device.rs` together, not one kernel.

use super::*;
use crate::backend::cuda::{ConvAlgorithm, CudaDevice};
use crate::detect::decode_boxes;
use crate::detect::loss::{yolox_loss, ImageTargets, YoloxLossConfig};
use crate::models::{YoloX, YoloXConfig};
use crate::tensor::Device;

const BATCH: usize = 2;
const SIZE: usize = 128;

/// What a whole-model row backpropagates.
#[derive(Clone, Copy, PartialEq)]
enum StepLoss {
    /// YOLOX's loss with its SimOTA assignment.
    Yolox,
    /// `mean(raw ⊙ proj)` with the fixed projection `inp[2]`: every output gets a gradient that
    /// does not depend on an assignment (SimOTA's top-k flips where predictions differ by bf16
    /// rounding, and then the gradients differ at O(1) whatever the arithmetic's quality).
    Projection,
}

/// Loss parts, raw outputs, every parameter gradient and the BN running stats after the step.
fn train_step(inp: &Inputs, device: Device, variant: &str, kind: StepLoss) -> Result<Outputs> {
    let model = YoloX::new(YoloXConfig::variant(variant, 2)?)?;
    model.store.to_device(device)?;
    model.set_training(true);
    let images = Tensor::from_vec(inp[0].clone(), [BATCH, 3, SIZE, SIZE])?.to_device(device)?;
    let targets: Vec<ImageTargets> = (0..BATCH)
        .map(|b| {
            let mut t = ImageTargets::default();
            for row in inp[1].chunks(5).skip(b * 3).take(3) {
                t.classes.push(row[0] as usize);
                t.boxes_cxcywh.push([row[1], row[2], row[3], row[4]]);
            }
            t
        })
        .collect();
    let grid = YoloX::anchor_grid(SIZE, SIZE);
    let ((raw, loss_parts), ms) = timed_cpu(|| {
        let raw = model.forward(&images)?;
        if kind == StepLoss::Projection {
            let proj = Tensor::from_vec(inp[2].clone(), raw.shape().clone())?.to_device(device)?;
            let loss = ops::mean_all(&ops::mul(&raw, &proj)?)?;
            loss.backward()?;
            let value = loss.item()?;
            return Ok((raw, vec![value]));
        }
        let decoded = decode_boxes(&raw, &grid)?;
        let loss = yolox_loss(&raw, &decoded, &grid, &targets, &YoloxLossConfig::default())?;
        loss.total.backward()?;
        let parts = vec![
            loss.total.item()?,
            loss.iou,
            loss.obj,
            loss.cls,
            loss.num_fg as f32,
        ];
        Ok((raw, parts))
    })?;
    // Gradients per part of the network (official names: backbone.backbone.* is CSPDarknet,
    // backbone.* the PAFPN, head.* the decoupled head), so a failing row says where.
    let (mut darknet, mut pafpn, mut head) = (Vec::new(), Vec::new(), Vec::new());
    let mut stats = Vec::new();
    for e in model.store.entries() {
        let part = if e.name.starts_with("backbone.backbone.") {
            &mut darknet
        } else if e.name.starts_with("backbone.") {
            &mut pafpn
        } else {
            &mut head
        };
        match e.tensor.grad() {
            Some(g) => part.extend(g.to_vec()),
            None if e.tensor.requires_grad() => part.extend(vec![0.0; e.tensor.numel()]),
            None => stats.extend(e.tensor.to_vec()),
        }
    }
    Ok(out(
        vec![
            ("loss", loss_parts),
            ("raw", raw.to_vec()),
            ("d darknet", darknet),
            ("d pafpn", pafpn),
            ("d head", head),
            ("bn_stats", stats),
        ],
        ms,
    ))
}

pub(super) fn yolox_train_step_case() -> Case {
    Case {
        name: "yolox-nano train step (norm)",
        kernels: &[],
        shape: format!("[{BATCH}, 3, {SIZE}, {SIZE}], 3 GTs/image, 2 classes"),
        // A whole network: every conv and BN reduction sums in another order on the GPU. Per
        // element, an H200 run (2026-11-27, 96 px) matched the loss to 2.4e-5 and the BN stats
        // to 1.2e-6 but the stem weight's gradient only to 2.6e-2 (inputs 0..255, BN over 18
        // values per channel at stride 32); so this row compares norms (docs/cuda.md, "The
        // parity table"): in f32 rounding stays far under 1e-3, a wrong CUDA arm gives O(1).
        tol: 1e-3,
        measure: Measure::RelativeNorm,
        make: Box::new(|rng| {
            let images = uniform(rng, BATCH * 3 * SIZE * SIZE, 0.0, 255.0);
            let mut labels = Vec::new();
            for _ in 0..BATCH * 3 {
                let (w, h) = (rng.random_range(8.0..40.0), rng.random_range(8.0..40.0));
                let cx = rng.random_range(w / 2.0..SIZE as f32 - w / 2.0);
                let cy = rng.random_range(h / 2.0..SIZE as f32 - h / 2.0);
                labels.extend([rng.random_range(0..2) as f32, cx, cy, w, h]);
            }
            vec![images, labels]
        }),
        cpu: Box::new(|inp| train_step(inp, Device::Cpu, "nano", StepLoss::Yolox)),
        gpu: Box::new(|_, inp| train_step(inp, Device::Cuda, "nano", StepLoss::Yolox)),
    }
}

/// A step of YOLOX-tiny (plain 3×3 convs, as YOLOX-s) with the GPU in bf16 mode: bf16
/// products and bf16 activations (`backend::cuda::bf16`), against the CPU in f32, through the
/// projection loss ([`StepLoss::Projection`]): with YOLOX's loss an H200 run (2026-11-27) matched
/// the loss to 1.4e-2 and the raw outputs to 2.7e-2 by norm, but SimOTA then assigned other
/// anchors on the two sides and the gradients differed by 2.0–2.3 (the assignment, not the
/// arithmetic: the bf16 kernels' own rows pass, and training in bf16 overfits as in f32).
pub(super) fn yolox_train_step_bf16_case() -> Case {
    let base = yolox_train_step_case();
    let base_make = base.make;
    Case {
        name: "yolox-tiny train step, bf16 (norm)",
        shape: format!("[{BATCH}, 3, {SIZE}, {SIZE}], projection loss, 2 classes"),
        make: Box::new(move |rng| {
            let mut v = base_make(rng);
            let anchors: usize = [8, 16, 32].iter().map(|s| (SIZE / s) * (SIZE / s)).sum();
            v.push(uniform(rng, BATCH * anchors * (5 + 2), -1.0, 1.0));
            v
        }),
        // The bf16 storage kernels on YOLOX's own paths: CSP's residual adds and its cat of
        // two BN+SiLU outputs, besides the BN and conv ones with rows of their own.
        kernels: &[
            "add_bf16",
            "strided_copy_bf16",
            "conv2d_im2col_bf16_of_bf16",
        ],
        // Measured on an H200 (2026-11-27, seed 0): loss 8.0e-3, raw 2.7e-2, BN stats 5.1e-4,
        // but gradients 0.30 (head) to 0.47 (CSPDarknet) by norm; with the activations kept f32
        // (SSOD_CUDA_BF16_STORAGE=0, bf16 products only) 0.20 to 0.41 — the products' rounding
        // through BN backwards over 32 values per channel at stride 32, not the storage. So the
        // bound only catches what a wrong bf16 arm does (bits read as f32, NaN, a lost gradient:
        // 1.0 and up); the arms themselves are held to 1e-2 by their own rows.
        tol: 0.75,
        cpu: Box::new(|inp| train_step(inp, Device::Cpu, "tiny", StepLoss::Projection)),
        gpu: Box::new(|dev, inp| {
            dev.set_matrix_precision(MatrixPrecision::Bf16)?;
            let result = train_step(inp, Device::Cuda, "tiny", StepLoss::Projection);
            dev.set_matrix_precision(MatrixPrecision::F32)?;
            result
        }),
        ..base
    }
}

/// `step` with the device's convs on the implicit-GEMM tensor-core kernels
/// (`conv2d/implicit_gemm/`), the device's own algorithm restored afterwards (also on error).
fn with_implicit_convs(
    dev: &CudaDevice,
    step: impl FnOnce() -> Result<Outputs>,
) -> Result<Outputs> {
    let before = dev.conv_algorithm();
    dev.set_conv_algorithm(ConvAlgorithm::Implicit);
    let result = step();
    dev.set_conv_algorithm(before);
    result
}

/// [`yolox_train_step_case`] with the implicit-GEMM convs: in f32 mode their three-pass TF32
/// products, through the whole network and YOLOX's loss (the depthwise convs of nano keep their
/// direct kernels). The same bound: the split's products are good to about f32 rounding.
pub(super) fn yolox_train_step_implicit_case() -> Case {
    Case {
        name: "yolox-nano train step, implicit convs (norm)",
        kernels: &[],
        gpu: Box::new(|dev, inp| {
            with_implicit_convs(dev, || {
                train_step(inp, Device::Cuda, "nano", StepLoss::Yolox)
            })
        }),
        ..yolox_train_step_case()
    }
}

/// [`yolox_train_step_bf16_case`] with the implicit-GEMM convs in bf16: bf16 activations read
/// and written as bits by the kernels themselves. Its bound, for the same reason.
pub(super) fn yolox_train_step_bf16_implicit_case() -> Case {
    let base = yolox_train_step_bf16_case();
    Case {
        name: "yolox-tiny train step, bf16, implicit convs (norm)",
        kernels: &[],
        gpu: Box::new(|dev, inp| {
            with_implicit_convs(dev, || {
                dev.set_matrix_precision(MatrixPrecision::Bf16)?;
                let result = train_step(inp, Device::Cuda, "tiny", StepLoss::Projection);
                dev.set_matrix_precision(MatrixPrecision::F32)?;
                result
            })
        }),
        ..base
    }
}
