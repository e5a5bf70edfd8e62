//! InfoNCE over paired rows, the loss of dense contrast at every level and of its global term
//! (DenseCL, Wang et al. CVPR 2021, section 3; MoCo v2's τ = 0.2). Row i of `q` and of `k` are a
//! positive pair; every other row of `k` is a negative of `q_i` unless an offset takes it out (two
//! cells of one image). Symmetric: both views take the query role in turn, as no momentum
//! encoder breaks the tie here (docs/pretraining.md, "Dense contrast").

use super::heads::l2_normalize_rows;
use crate::autograd::no_grad;
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// A contrastive loss and its cosine statistics (one-element tensors outside the graph, on the
/// loss's device).
pub struct PairLoss {
    pub loss: Tensor,
    /// Mean cosine of the positive pairs.
    pub pos_cos: Tensor,
    /// Mean cosine of the negative pairs (those the offsets keep), 0 when there are none.
    pub neg_cos: Tensor,
}

/// Symmetric InfoNCE of paired rows `q [N, D]`, `k [N, D]` at temperature `τ`: logits
/// `cos(q_i, k_j)/τ + offsets[i·N + j]`, cross-entropy with target `i`, averaged over both
/// directions. `offsets` (`[N, N]`, on the host) is 0 or [`super::geometry::EXCLUDED`]; entry
/// `i·N + j` belongs to the pair (q_i, k_j) in both directions (the backward one reads the
/// logits transposed), so it need not be symmetric. None keeps every pair.
pub fn paired_info_nce(
    q: &Tensor,
    k: &Tensor,
    offsets: Option<&[f32]>,
    temperature: f64,
) -> Result<PairLoss> {
    let n = q.dims().first().copied().unwrap_or(0);
    if q.rank() != 2 || k.dims() != q.dims() || n == 0 {
        return Err(Error::shape(
            "paired_info_nce",
            "q [N, D] and k [N, D] with N >= 1",
            (q.shape(), k.shape()),
        ));
    }
    if offsets.is_some_and(|o| o.len() != n * n) {
        return Err(Error::op(
            "paired_info_nce",
            format!("offsets must hold N·N = {} values", n * n),
        ));
    }
    let device = q.device();
    let (qn, kn) = (l2_normalize_rows(q)?, l2_normalize_rows(k)?);
    let cos = ops::matmul(&qn, &ops::contiguous(&ops::transpose(&kn, 0, 1)?)?)?; // [N, N]
    let mut logits = ops::div_scalar(&cos, temperature as f32)?;
    // Which entries are negatives (1) for the statistics.
    let mut negative = vec![1.0f32; n * n];
    if let Some(off) = offsets {
        logits = ops::add(&logits, &Tensor::from_vec_on(off.to_vec(), [n, n], device)?)?;
        for (m, &o) in negative.iter_mut().zip(off) {
            if o != 0.0 {
                *m = 0.0;
            }
        }
    }
    for i in 0..n {
        negative[i * n + i] = 0.0;
    }
    let targets = Tensor::from_vec((0..n).map(|i| i as f32).collect(), [n])?;
    let forward = ops::mean_all(&ops::cross_entropy(&logits, &targets)?)?;
    let backward_logits = ops::contiguous(&ops::transpose(&logits, 0, 1)?)?;
    let backward = ops::mean_all(&ops::cross_entropy(&backward_logits, &targets)?)?;
    let loss = ops::mul_scalar(&ops::add(&forward, &backward)?, 0.5)?;
    let negatives = negative.iter().filter(|&&m| m > 0.0).count();
    let (pos_cos, neg_cos) = no_grad(|| -> Result<(Tensor, Tensor)> {
        let cos = cos.detach();
        let diag = ops::cosine_similarity(&q.detach(), &k.detach(), 1)?;
        let mask = Tensor::from_vec_on(negative, [n, n], device)?;
        let neg_sum = ops::sum_all(&ops::mul(&cos, &mask)?)?;
        Ok((
            ops::mean_all(&diag)?,
            ops::div_scalar(&neg_sum, negatives.max(1) as f32)?,
        ))
    })?;
    Ok(PairLoss {
        loss,
        pos_cos,
        neg_cos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pretrain::dense::geometry::same_image_offsets;

    fn t(v: &[f32], n: usize, d: usize) -> Tensor {
        Tensor::from_vec(v.to_vec(), [n, d]).unwrap()
    }

    #[test]
    fn paired_info_nce_by_hand() {
        // q = [(1,0), (0,1)], k = [(2,0), (0,3)]: cos = identity; τ = 0.5 → logits [[2,0],[0,2]]
        // each row: −log(e²/(e² + 1)) = log(1 + e⁻²) = 0.126928; both directions alike.
        let q = t(&[1., 0., 0., 1.], 2, 2);
        let k = t(&[2., 0., 0., 3.], 2, 2);
        let l = paired_info_nce(&q, &k, None, 0.5).unwrap();
        assert!((l.loss.item().unwrap() - 0.126_928).abs() < 1e-5);
        assert!((l.pos_cos.item().unwrap() - 1.0).abs() < 1e-6);
        assert!(l.neg_cos.item().unwrap().abs() < 1e-6);
        // Asymmetric case, τ = 1: q = [(1,0), (1,0)], k = [(1,0), (0,1)]: cos [[1,0],[1,0]].
        // q→k rows: [1,0] target 0: log(1+e⁻¹) = 0.313262; [1,0] target 1: log(1+e) = 1.313262.
        // k→q (transposed [[1,1],[0,0]]): row 0 target 0: log 2; row 1 target 1: log 2.
        // loss = ½(½(0.313262 + 1.313262) + ln 2) = 0.753205.
        let q2 = t(&[1., 0., 1., 0.], 2, 2);
        let k2 = t(&[1., 0., 0., 1.], 2, 2);
        let l2 = paired_info_nce(&q2, &k2, None, 1.0).unwrap();
        assert!((l2.loss.item().unwrap() - 0.753_205).abs() < 1e-5);
        // Positives cos 1 and 0; negatives cos(q0,k1) = 0 and cos(q1,k0) = 1.
        assert!((l2.pos_cos.item().unwrap() - 0.5).abs() < 1e-6);
        assert!((l2.neg_cos.item().unwrap() - 0.5).abs() < 1e-6);
    }

    #[test]
    fn offsets_take_same_image_pairs_out() {
        // Three pairs, the first two of one image: row 0 sees only itself and pair 2.
        // q = k = [(1,0), (1,0), (0,1)], τ = 1: cos [[1,1,0],[1,1,0],[0,0,1]].
        // With pair 1 excluded from rows 0 and 1: rows 0, 1: logits [1, 0] (its own, pair 2)
        // → log(1 + e⁻¹) = 0.313262; row 2: [0, 0, 1] → log(2 + e) − 1 = 0.551445.
        // Symmetric matrix: both directions equal. Mean = (2·0.313262 + 0.551445)/3.
        let q = t(&[1., 0., 1., 0., 0., 1.], 3, 2);
        let off = same_image_offsets(&[0, 0, 1]);
        let l = paired_info_nce(&q, &q, Some(&off), 1.0).unwrap();
        let want = (2.0 * 0.313_262 + 0.551_445) / 3.0;
        assert!((l.loss.item().unwrap() - want).abs() < 1e-5);
        // Negatives kept: (0,2), (1,2), (2,0), (2,1), all cos 0.
        assert!(l.neg_cos.item().unwrap().abs() < 1e-6);
        // Without the offsets pair 1 is a negative of pair 0 at cos 1: a larger loss.
        let all = paired_info_nce(&q, &q, None, 1.0).unwrap();
        assert!(all.loss.item().unwrap() > l.loss.item().unwrap() + 0.2);
        // Bad shapes are errors naming the op.
        let err = paired_info_nce(&q, &t(&[1., 0.], 1, 2), None, 1.0)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("paired_info_nce"), "{err}");
    }
}
