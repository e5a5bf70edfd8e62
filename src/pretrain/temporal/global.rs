//! Temporal contrast's global objective: anchor and positive frame embedded whole, backbone →
//! GAP(C5) → projector (SimCLR's 2-layer MLP, Chen et al. 2020), InfoNCE (Oord et al. 2018) with
//! temperature τ over the batch: anchor i's logits are `cos(a_i, p_j)/τ` for every j, the target
//! is j = i, and a `p_j` of the anchor's video within `far_gap` is masked out
//! ([`super::near_frame_mask`]). Time as a free label as in Time-Contrastive Networks
//! (Sermanet et al. 2018) and VINCE (Gordon et al. 2020, τ = 0.1); docs/pretraining.md.

use super::{FrameTime, TemporalKeys};
use crate::models::YoloX;
use crate::nn::ParamStore;
use crate::ops;
use crate::pretrain::ssl::mlp::{backbone_gap, Bn, LayerSpec, Mlp};
use crate::tensor::Tensor;
use crate::Result;

/// InfoNCE of anchors `a [B, D]` against positives `p [B, D]` (row i's positive is p_i), with
/// `mask [B, B]` added to the logits `cos(a_i, p_j) / τ`.
pub fn temporal_info_nce(
    a: &Tensor,
    p: &Tensor,
    mask: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    let (b, d) = (a.dims()[0], a.dims()[1]);
    let a3 = ops::reshape(a, [b, 1, d])?;
    let p3 = ops::reshape(p, [1, b, d])?;
    let cos = ops::cosine_similarity(&a3, &p3, 2)?; // [B, B]
    let logits = ops::add(&ops::div_scalar(&cos, temperature as f32)?, mask)?;
    // Class ids are read on the host (`cross_entropy`): kept there, no device round trip.
    let targets = Tensor::from_vec((0..b).map(|i| i as f32).collect(), [b])?;
    ops::mean_all(&ops::cross_entropy(&logits, &targets)?)
}

/// The projector (SimCLR's: Linear → BN → ReLU → Linear) in a store of its own.
pub struct TemporalHead {
    pub store: ParamStore,
    projector: Mlp,
}

impl TemporalHead {
    pub fn new(c5: usize, keys: &TemporalKeys, seed: u64) -> Result<TemporalHead> {
        let hidden = keys.proj_hidden.unwrap_or(c5);
        let store = ParamStore::new(seed);
        let projector = Mlp::new(
            &store.builder().sub("pretrain_head").sub("projector"),
            &[
                LayerSpec::new(c5, hidden, Bn::Affine, true),
                LayerSpec::new(hidden, keys.proj_dim, Bn::Off, false),
            ],
        )?;
        Ok(TemporalHead { store, projector })
    }
}

/// One step's forward and backward on `x [2B, 3, h, w]` (anchors, then positives) with the
/// frames' (video, time): the loss.
pub fn temporal_step(
    model: &YoloX,
    head: &TemporalHead,
    x: &Tensor,
    (anchors, positives): (&[FrameTime], &[FrameTime]),
    keys: &TemporalKeys,
) -> Result<Tensor> {
    let b = anchors.len();
    let mask = super::near_frame_mask(anchors, positives, keys.far_gap);
    let mask = Tensor::from_vec_on(mask, [b, b], x.device())?;
    let z = head
        .projector
        .forward(&backbone_gap(model, x)?, head.store.is_training())?;
    let loss = temporal_info_nce(
        &ops::narrow(&z, 0, 0, b)?,
        &ops::narrow(&z, 0, b, b)?,
        &mask,
        keys.temperature,
    )?;
    loss.backward()?;
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_nce_matches_a_hand_computed_case() {
        // a = [e0, e1], p = [e0, e0]: cos row 0 = [1, 1], row 1 = [0, 0]; τ = 1.
        // Row 0: −log(e/(e+e)) = ln 2; row 1: target 1, −log(1/2) = ln 2. Mean ln 2.
        let a = Tensor::from_vec(vec![1.0, 0.0, 0.0, 1.0], [2, 2]).unwrap();
        let p = Tensor::from_vec(vec![2.0, 0.0, 3.0, 0.0], [2, 2]).unwrap();
        let zero = Tensor::zeros([2, 2]);
        let l = temporal_info_nce(&a, &p, &zero, 1.0)
            .unwrap()
            .item()
            .unwrap();
        assert!((l as f64 - 2f64.ln()).abs() < 1e-6, "{l}");
        // Masking p1 out of row 0: row 0 = −log(1) = 0; row 1 unchanged: mean ln 2 / 2.
        let mask = Tensor::from_vec(vec![0.0, -1e4, 0.0, 0.0], [2, 2]).unwrap();
        let l = temporal_info_nce(&a, &p, &mask, 1.0)
            .unwrap()
            .item()
            .unwrap();
        assert!((l as f64 - 2f64.ln() / 2.0).abs() < 1e-6, "{l}");
    }
}
