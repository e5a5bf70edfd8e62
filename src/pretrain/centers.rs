//! The center loss and the two ways its centres learn (Wen et al. 2016; the study's setting in
//! docs/the-study.md): the loss on features and class ids, SGD on the centres' gradient, and
//! Wen et al.'s update rule, each computed where the tensors live (CPU or CUDA).

use super::center_loss::{CenterLossConfig, CenterUpdate};
use crate::autograd::no_grad;
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// `L_c = (1/B) Σ_i ‖f_i − c_{y_i}‖²` for `features [B, D]`, class ids `labels`, `centers [C, D]`.
/// Differentiable in both features and centres. (The study computed it as a clamped distance
/// matrix masked to the own class; the (C−1) masked entries each add 1e-12, ignored here.)
pub fn center_loss(features: &Tensor, labels: &[usize], centers: &Tensor) -> Result<Tensor> {
    if features.rank() != 2
        || centers.rank() != 2
        || features.dims()[1] != centers.dims()[1]
        || labels.len() != features.dims()[0]
        || labels.is_empty()
    {
        return Err(Error::shape(
            "center_loss",
            "features [B, D], B labels, centers [C, D]",
            (features.shape(), labels.len(), centers.shape()),
        ));
    }
    let ids = Tensor::from_vec(labels.iter().map(|&l| l as f32).collect(), [labels.len()])?;
    let picked = ops::index_select(centers, 0, &ids)?; // [B, D]
    let diff = ops::sub(features, &picked)?;
    let sq = ops::mul(&diff, &diff)?;
    ops::div_scalar(&ops::sum_all(&sq)?, labels.len() as f32)
}

/// Wen et al.'s centre update in place: `c_j −= α · Σ_{y_i=j}(c_j − f_i) / (1 + n_j)`.
/// Centres on CUDA are updated there, with ops ([`wen_center_update_with_ops`]).
pub fn wen_center_update(
    centers: &Tensor,
    features: &Tensor,
    labels: &[usize],
    alpha: f32,
) -> Result<()> {
    if centers.is_cuda() {
        return wen_center_update_with_ops(centers, features, labels, alpha);
    }
    let d = centers.dims()[1];
    let f = features.to_vec();
    let c = centers.to_vec();
    let classes = centers.dims()[0];
    let mut delta = vec![0f32; classes * d];
    let mut count = vec![0usize; classes];
    for (i, &y) in labels.iter().enumerate() {
        count[y] += 1;
        for k in 0..d {
            delta[y * d + k] += c[y * d + k] - f[i * d + k];
        }
    }
    centers.update_values(|v| {
        for j in 0..classes {
            for k in 0..d {
                v[j * d + k] -= alpha * delta[j * d + k] / (1 + count[j]) as f32;
            }
        }
    })
}

/// Wen et al.'s update with ops, where the tensors live: with the one-hot `M [C, B]` of the
/// labels, `Δc = n ⊙ c − M·f` and `c ← c − α·Δc / (1 + n)`.
pub fn wen_center_update_with_ops(
    centers: &Tensor,
    features: &Tensor,
    labels: &[usize],
    alpha: f32,
) -> Result<()> {
    let (classes, b) = (centers.dims()[0], labels.len());
    let mut one_hot = vec![0f32; classes * b];
    let mut count = vec![0f32; classes];
    for (i, &y) in labels.iter().enumerate() {
        one_hot[y * b + i] = 1.0;
        count[y] += 1.0;
    }
    let step: Vec<f32> = count.iter().map(|n| alpha / (1.0 + n)).collect();
    let updated = no_grad(|| -> Result<Tensor> {
        let c = centers.detach();
        let m = Tensor::from_vec(one_hot, [classes, b])?;
        let n = Tensor::from_vec(count, [classes, 1])?;
        let delta = ops::sub(&ops::mul(&c, &n)?, &ops::matmul(&m, &features.detach())?)?;
        let scale = Tensor::from_vec(step, [classes, 1])?;
        ops::sub(&c, &ops::mul(&delta, &scale)?)
    })?;
    centers.assign(&updated)
}

/// The centres' step after `center_loss_step`: SGD on their gradient (the study) or Wen et
/// al.'s rule on the step's features, where the centres live.
pub fn update_centers(
    centers: &Tensor,
    feature: &Tensor,
    labels: &[usize],
    cfg: &CenterLossConfig,
) -> Result<()> {
    if cfg.center_weight <= 0.0 {
        return Ok(());
    }
    match cfg.center_update {
        CenterUpdate::Sgd => {
            // The study: SGD(center_loss.parameters(), lr=0.5), no momentum: c ← c − lr·g
            // (docs/the-study.md, "Center-loss pretraining").
            if let Some(g) = centers.grad() {
                let lr = cfg.center_lr as f32;
                let updated = no_grad(|| ops::sub(&centers.detach(), &ops::mul_scalar(&g, lr)?))?;
                centers.assign(&updated)?;
            }
            centers.zero_grad();
            Ok(())
        }
        CenterUpdate::Alpha => wen_center_update(centers, feature, labels, cfg.center_alpha as f32),
    }
}
