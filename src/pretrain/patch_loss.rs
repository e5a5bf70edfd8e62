//! The patch losses: the study's cosine loss and InfoNCE (docs/the-study.md), on anchor, positive and
//! negative embeddings with rows k-major.

use serde::{Deserialize, Serialize};

use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatchLossKind {
    #[default]
    Cosine,
    InfoNce,
}

/// A patch loss and its cosine statistics.
pub struct PatchLoss {
    pub loss: Tensor,
    /// Mean cos(anchor, positive) and cos(anchor, negative): one-element tensors on the loss's
    /// device, outside the graph (read them with [`PatchLoss::mean_cosines`]).
    pub pos_cos: Tensor,
    pub neg_cos: Tensor,
}

impl PatchLoss {
    /// (mean positive cosine, mean negative cosine) read on the host.
    pub fn mean_cosines(&self) -> Result<(f64, f64)> {
        Ok((self.pos_cos.item()? as f64, self.neg_cos.item()? as f64))
    }
}

/// `anchors [B, D]` repeated `k` times along rows (`y.repeat(k, 1)`: row `j·B + i` is anchor i).
pub fn repeat_anchors(anchors: &Tensor, k: usize) -> Result<Tensor> {
    let copies: Vec<Tensor> = (0..k).map(|_| anchors.clone()).collect();
    ops::cat(&copies, 0)
}

fn check_groups(a: &Tensor, p: &Tensor, n: &Tensor) -> Result<(usize, usize, usize)> {
    let b = a.dims().first().copied().unwrap_or(0);
    let ok = a.rank() == 2
        && p.rank() == 2
        && n.rank() == 2
        && b > 0
        && p.dims()[0].is_multiple_of(b)
        && n.dims()[0].is_multiple_of(b)
        && p.dims()[1] == a.dims()[1]
        && n.dims()[1] == a.dims()[1];
    if !ok {
        return Err(Error::shape(
            "patch loss",
            "anchors [B, D], positives [Kp·B, D], negatives [Kn·B, D]",
            (a.shape(), p.shape(), n.shape()),
        ));
    }
    Ok((b, p.dims()[0] / b, n.dims()[0] / b))
}

/// The mean of `t` as a one-element tensor outside the graph.
fn detached_mean(t: &Tensor) -> Result<Tensor> {
    crate::autograd::no_grad(|| ops::mean_all(&t.detach()))
}

/// The study's loss: `mean_{i,k} cos(a_i, n_ik) − mean_{i,k} cos(a_i, p_ik)` (rows k-major).
pub fn cosine_patch_loss(a: &Tensor, p: &Tensor, n: &Tensor) -> Result<PatchLoss> {
    let (_, kp, kn) = check_groups(a, p, n)?;
    let pos = ops::cosine_similarity(&repeat_anchors(a, kp)?, p, 1)?; // [Kp·B]
    let neg = ops::cosine_similarity(&repeat_anchors(a, kn)?, n, 1)?; // [Kn·B]
    let loss = ops::sub(&ops::mean_all(&neg)?, &ops::mean_all(&pos)?)?;
    Ok(PatchLoss {
        loss,
        pos_cos: detached_mean(&pos)?,
        neg_cos: detached_mean(&neg)?,
    })
}

/// InfoNCE: for anchor i and each of its positives k, logits
/// `[cos(a_i, p_ik), cos(a_i, n_i1), .., cos(a_i, n_iKn)] / τ`, cross-entropy with target 0,
/// mean over (i, k).
pub fn info_nce_patch_loss(
    a: &Tensor,
    p: &Tensor,
    n: &Tensor,
    temperature: f64,
) -> Result<PatchLoss> {
    let (b, kp, kn) = check_groups(a, p, n)?;
    let pos = ops::cosine_similarity(&repeat_anchors(a, kp)?, p, 1)?; // [Kp·B]
    let neg = ops::cosine_similarity(&repeat_anchors(a, kn)?, n, 1)?; // [Kn·B]
    let pos3 = ops::reshape(&pos, [kp, b, 1])?;
    let neg_bk = ops::contiguous(&ops::permute(&ops::reshape(&neg, [kn, b])?, &[1, 0])?)?; // [B, Kn]
    let neg3 = ops::broadcast_to(
        &ops::reshape(&neg_bk, [1, b, kn])?,
        &crate::Shape::from(vec![kp, b, kn]),
    )?;
    let logits = ops::reshape(&ops::cat(&[pos3, neg3], 2)?, [kp * b, 1 + kn])?;
    let logits = ops::div_scalar(&logits, temperature as f32)?;
    let targets = Tensor::zeros([kp * b]);
    let loss = ops::mean_all(&ops::cross_entropy(&logits, &targets)?)?;
    Ok(PatchLoss {
        loss,
        pos_cos: detached_mean(&pos)?,
        neg_cos: detached_mean(&neg)?,
    })
}
