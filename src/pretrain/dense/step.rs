//! One step of dense contrast: both views through the backbone (and the PAFPN when it trains)
//! as one batch, the global term on GAP(C5), and per level the InfoNCE of matched cells
//! (docs/pretraining.md, "Dense contrast"). Composed of existing ops (conv2d, matmul,
//! index_select, cross_entropy), so it runs on CUDA as on the CPU; the only host work is
//! choosing the matched cells (and, for `matching: "feature"`, reading each level's
//! view-to-view similarities to find the most similar cell).

use rand::Rng;

use super::geometry::{
    argmax_matches, exclude_image_pairs, geometric_matches, same_image_offsets, Grid, ViewBox,
};
use super::heads::{feature_rows, l2_normalize_rows, DenseHeads};
use super::loss::paired_info_nce;
use super::{DenseContrast, Matching};
use crate::autograd::no_grad;
use crate::models::YoloX;
use crate::ops;
use crate::rng::rng_for;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// A dense step's loss and statistics (one-element tensors on the step's device; `loss` is in
/// the graph, the rest are not).
pub struct DenseLoss {
    pub loss: Tensor,
    /// The global (image-level) InfoNCE.
    pub global: Tensor,
    /// The mean over levels of the dense InfoNCE.
    pub dense: Tensor,
    /// Mean cosine of matched cells and of negative cells, averaged over levels.
    pub pos_cos: Tensor,
    pub neg_cos: Tensor,
}

/// The feature maps the dense heads see: C3, C4, C5 of `x`, then P3, P4, P5 when `neck`.
pub fn dense_levels(model: &YoloX, x: &Tensor, neck: bool) -> Result<Vec<Tensor>> {
    let (c3, c4, c5) = model.backbone.backbone.forward(x)?;
    let mut levels = vec![c3, c4, c5];
    if neck {
        let p = model
            .backbone
            .forward_neck(&levels[0], &levels[1], &levels[2])?;
        levels.extend(p);
    }
    Ok(levels)
}

/// DenseCL's matches of one level `feat [2B, C, h, w]` (first B: view 1): for every view-1 cell
/// the view-2 cell of the same image with the largest cosine of the (detached) features.
fn feature_matches(feat: &Tensor, images: usize) -> Result<Vec<Vec<(usize, usize)>>> {
    let d = feat.dims();
    let (c, hw) = (d[1], d[2] * d[3]);
    let sim = no_grad(|| -> Result<Vec<f32>> {
        let rows = l2_normalize_rows(&feature_rows(&feat.detach())?)?; // [2B·hw, C]
        let v1 = ops::reshape(&ops::narrow(&rows, 0, 0, images * hw)?, [images, hw, c])?;
        let v2 = ops::reshape(
            &ops::narrow(&rows, 0, images * hw, images * hw)?,
            [images, hw, c],
        )?;
        let v2t = ops::contiguous(&ops::transpose(&v2, 1, 2)?)?; // [B, C, hw]
        Ok(ops::matmul(&v1, &v2t)?.to_vec()) // [B, hw, hw]
    })?;
    Ok(sim
        .chunks(hw * hw)
        .map(|s| argmax_matches(s, hw, hw))
        .collect())
}

/// The matched cells of one level for every image, at most `queries_per_image` each.
fn level_pairs(
    feat: &Tensor,
    boxes: &[(ViewBox, ViewBox)],
    cfg: &DenseContrast,
    rng: &mut impl Rng,
) -> Result<Vec<Vec<(usize, usize)>>> {
    let d = feat.dims();
    let grid = Grid {
        cols: d[3],
        rows: d[2],
    };
    let all = match cfg.matching {
        Matching::Geometric => boxes
            .iter()
            .map(|(v1, v2)| geometric_matches(v1, v2, grid))
            .collect(),
        Matching::Feature => feature_matches(feat, boxes.len())?,
    };
    Ok(all
        .iter()
        .map(|pairs| super::geometry::sample_pairs(pairs, cfg.queries_per_image, rng))
        .collect())
}

/// The dense InfoNCE of level `k` (None when no cell of any image matched); `excluded`: the
/// image-level offsets of [`dense_step`].
fn level_loss(
    heads: &DenseHeads,
    k: usize,
    feat: &Tensor,
    pairs: &[Vec<(usize, usize)>],
    temperature: f64,
    excluded: Option<&[f32]>,
) -> Result<Option<super::loss::PairLoss>> {
    let d = feat.dims();
    let (images, hw) = (pairs.len(), d[2] * d[3]);
    let (mut q_rows, mut k_rows, mut image_of) = (Vec::new(), Vec::new(), Vec::new());
    for (img, list) in pairs.iter().enumerate() {
        for &(i, j) in list {
            q_rows.push((img * hw + i) as f32);
            k_rows.push(((images + img) * hw + j) as f32);
            image_of.push(img);
        }
    }
    if q_rows.is_empty() {
        return Ok(None);
    }
    let n = q_rows.len();
    let rows = heads.dense_rows(k, feat)?; // [2B·hw, dim]
    let q = ops::index_select(&rows, 0, &Tensor::from_vec(q_rows, [n])?)?;
    let kk = ops::index_select(&rows, 0, &Tensor::from_vec(k_rows, [n])?)?;
    let mut offsets = same_image_offsets(&image_of);
    if let Some(excluded) = excluded {
        exclude_image_pairs(&mut offsets, &image_of, excluded, images);
    }
    Ok(Some(paired_info_nce(&q, &kk, Some(&offsets), temperature)?))
}

/// One step's forward and backward (no optimiser step) on `x [2B, 3, vh, vw]` (every pair's
/// first view, then every second view) whose views are `boxes`; `seed` keys which matched cells
/// the step keeps. A pair's two views are of one image, or of two frames of a fixed camera
/// (temporal contrast): the boxes are in the same pixel frame. `excluded` (`[B, B]`, row: pair
/// i's first view, column: pair j's second view; [`super::geometry::EXCLUDED`] or 0) takes
/// image pairs out of each other's negatives, at the global and every dense level; None: every
/// other pair is a negative.
pub fn dense_step(
    model: &YoloX,
    heads: &DenseHeads,
    x: &Tensor,
    boxes: &[(ViewBox, ViewBox)],
    seed: u64,
    cfg: &DenseContrast,
    excluded: Option<&[f32]>,
) -> Result<DenseLoss> {
    let b = boxes.len();
    if x.rank() != 4 || x.dims()[0] != 2 * b || b == 0 {
        return Err(Error::shape(
            "dense_step",
            format!("views [2·{b}, 3, h, w]"),
            x.shape(),
        ));
    }
    if excluded.is_some_and(|e| e.len() != b * b) {
        return Err(Error::op(
            "dense_step",
            format!("the excluded pairs must hold B·B = {} values", b * b),
        ));
    }
    let levels = dense_levels(model, x, cfg.neck)?;
    let g = heads.global_rows(&levels[2])?;
    let global = paired_info_nce(
        &ops::narrow(&g, 0, 0, b)?,
        &ops::narrow(&g, 0, b, b)?,
        excluded,
        cfg.temperature,
    )?;
    let mut rng = rng_for(seed, "dense/pairs");
    let mut dense_terms = Vec::new();
    for (k, feat) in levels.iter().enumerate() {
        let pairs = level_pairs(feat, boxes, cfg, &mut rng)?;
        if let Some(l) = level_loss(heads, k, feat, &pairs, cfg.temperature, excluded)? {
            dense_terms.push(l);
        }
    }
    let device = x.device();
    let mean_of = |f: &dyn Fn(&super::loss::PairLoss) -> Tensor| -> Result<Tensor> {
        if dense_terms.is_empty() {
            return Tensor::from_vec_on(vec![0.0], [1], device);
        }
        let parts: Vec<Tensor> = dense_terms
            .iter()
            .map(|l| ops::reshape(&f(l), [1]))
            .collect::<Result<_>>()?;
        ops::mean_all(&ops::cat(&parts, 0)?)
    };
    let dense = mean_of(&|l| l.loss.clone())?;
    let (pos_cos, neg_cos) = no_grad(|| -> Result<(Tensor, Tensor)> {
        Ok((
            mean_of(&|l| l.pos_cos.clone())?,
            mean_of(&|l| l.neg_cos.clone())?,
        ))
    })?;
    let w = cfg.global_weight as f32;
    let loss = ops::add(
        &ops::mul_scalar(&ops::reshape(&global.loss, [1])?, w)?,
        &ops::mul_scalar(&ops::reshape(&dense, [1])?, 1.0 - w)?,
    )?;
    let loss = ops::mean_all(&loss)?;
    loss.backward()?;
    let detach = |t: &Tensor| t.detach();
    Ok(DenseLoss {
        loss,
        global: detach(&global.loss),
        dense: detach(&dense),
        pos_cos,
        neg_cos,
    })
}
