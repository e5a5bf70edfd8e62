//! The parity cases. Each case: seeded inputs (odd sizes), the CPU reference, the GPU launcher.

mod conv_cases;
mod conv_mma_cases;
mod decode_nms_cases;
mod dense_cases;
mod detect_cases;
mod elementwise_cases;
mod gemm_cases;
mod index_cases;
mod layout_cases;
mod model_cases;
mod nn_cases;
mod optim_cases;
mod pretrain_cases;
mod ssl_cases;

use conv_cases::*;
use conv_mma_cases::*;
use decode_nms_cases::*;
use dense_cases::*;
use detect_cases::*;
use elementwise_cases::*;
use gemm_cases::*;
use index_cases::*;
use layout_cases::*;
use model_cases::*;
use nn_cases::*;
use optim_cases::*;
use pretrain_cases::*;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use ssl_cases::*;

use super::{timed, timed_cpu, Case, Inputs, Measure, Outputs};
use crate::backend::conv_geometry::Conv2dGeometry;
use crate::backend::cpu::conv2d as cpu_conv;
use crate::backend::cuda::{
    batch_norm as bn, conv2d, elementwise as ew, gemm, loss, optim, pool, reduce, similarity,
    simota, softmax, MatrixPrecision,
};
use crate::detect::loss::{box_loss, BoxLossKind};
use crate::detect::simota::{iou_cxcywh, simota_assign, SimOtaConfig, SimOtaInput, SimOtaMode};
use crate::ops;
use crate::tensor::Tensor;
use crate::Result;

// ---- helpers ----

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// Values in ±[lo, hi) with random signs (away from zero: divisors, kinks).
fn signed_away(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.random_range(lo..hi);
            if rng.random::<bool>() {
                v
            } else {
                -v
            }
        })
        .collect()
}

fn tensor(v: &[f32], dims: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(v.to_vec(), dims.to_vec())?.with_requires_grad(true))
}

/// Forward through `f`, then the gradients of `Σ g·f(inputs)` with respect to every input.
fn with_grads(
    inputs: &[Tensor],
    g: &[f32],
    f: impl Fn(&[Tensor]) -> Result<Tensor>,
) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
    let y = f(inputs)?;
    let gt = Tensor::from_vec(g.to_vec(), y.shape().clone())?;
    ops::mul(&y, &gt)?.sum_all()?.backward()?;
    let grads = inputs
        .iter()
        .map(|t| {
            t.grad()
                .map(|g| g.to_vec())
                .unwrap_or_else(|| vec![0.0; t.numel()])
        })
        .collect();
    Ok((y.to_vec(), grads))
}

fn out(values: Vec<(&'static str, Vec<f32>)>, ms: f64) -> Outputs {
    Outputs { values, ms }
}

fn dims_str(d: &[usize]) -> String {
    format!("{d:?}")
}

/// The whole table, in the order it prints.
pub fn cases() -> Vec<Case> {
    let mut v = unary_cases();
    v.extend(binary_cases());
    v.push(scale_shift_case());
    v.push(strided_copy_case());
    v.extend(reduce_cases());
    v.extend(conv_cases());
    v.extend(gemm_cases());
    v.extend(bf16_cases());
    v.extend(bn_cases());
    v.extend(pool_cases());
    v.push(softmax_case(
        "softmax fwd+bwd",
        &["softmax_fwd_f32", "softmax_bwd_f32"],
        false,
    ));
    v.push(softmax_case(
        "log_softmax fwd+bwd",
        &["log_softmax_fwd_f32", "log_softmax_bwd_f32"],
        true,
    ));
    v.push(bce_case("bce_with_logits", false));
    v.push(bce_case("bce_with_logits weighted", true));
    v.push(box_case(
        "box loss IoU",
        BoxLossKind::Iou,
        loss::BoxLossKernel::Iou,
    ));
    v.push(box_case(
        "box loss GIoU",
        BoxLossKind::Giou,
        loss::BoxLossKernel::Giou,
    ));
    v.push(box_case(
        "box loss CIoU (mmdet)",
        BoxLossKind::Ciou,
        loss::BoxLossKernel::Ciou,
    ));
    v.push(box_case(
        "box loss CIoU (torchvision)",
        BoxLossKind::CiouTorchvision,
        loss::BoxLossKernel::CiouTorchvision,
    ));
    v.push(simota_case("simota release r2.5", SimOtaConfig::default()));
    v.push(simota_case("simota 2023 r1.5", SimOtaConfig::centre_2023()));
    v.push(cosine_case());
    v.push(optim_case(
        "sgd nesterov",
        &["sgd_nesterov_f32"],
        OptKind::Sgd,
    ));
    v.push(optim_case("adam", &["adam_f32"], OptKind::Adam));
    v.push(optim_case("adamw", &["adam_f32"], OptKind::AdamW));
    v.push(optim_case("ema", &["ema_f32"], OptKind::Ema));
    v.push(optim_multi_case(
        "sgd_nesterov multi-tensor",
        &["sgd_nesterov_multi_f32"],
        OptKind::Sgd,
    ));
    v.push(optim_multi_case(
        "adam multi-tensor",
        &["adam_multi_f32"],
        OptKind::Adam,
    ));
    v.push(optim_multi_case(
        "adamw multi-tensor",
        &["adam_multi_f32"],
        OptKind::AdamW,
    ));
    v.push(optim_multi_case(
        "ema multi-tensor",
        &["ema_multi_f32"],
        OptKind::Ema,
    ));
    v.push(index_select_case("index_select axis 1", [3, 11, 5], 1, 7));
    // inner = 1 and more indices than rows: every row picked about twice.
    v.push(index_select_case(
        "index_select last axis",
        [4, 3, 9],
        2,
        13,
    ));
    v.push(gather_case());
    v.push(crop_case());
    v.push(decode_case());
    v.push(nms_case("nms (class-agnostic) iou 0.5", false, 0.5));
    v.push(nms_case("batched_nms (per class) iou 0.45", true, 0.45));
    v.push(yolox_train_step_case());
    v.push(yolox_train_step_bf16_case());
    v.push(center_loss_step_case());
    v.push(patch_ssl_step_case(
        "patch SSL step, cosine, frames cut on the device (norm)",
        crate::pretrain::PatchLossKind::Cosine,
    ));
    v.push(patch_ssl_step_case(
        "patch SSL step, InfoNCE, MLP head, joint BN (norm)",
        crate::pretrain::PatchLossKind::InfoNce,
    ));
    v.push(dense_step_case());
    v.push(ssl_step_case(
        "SimSiam step, two views, stop-gradient (norm)",
        false,
    ));
    v.push(ssl_step_case(
        "temporal contrast step, masked InfoNCE (norm)",
        true,
    ));
    v.push(temporal_dense_step_case());
    v.push(masked_step_case());
    // Last, the tensor-core convs (the most intricate indexing): a fault there that ends the
    // CUDA context (an illegal address) then leaves every row above with its result.
    v.extend(conv_mma_cases());
    v.push(yolox_train_step_implicit_case());
    v.push(yolox_train_step_bf16_implicit_case());
    v
}
