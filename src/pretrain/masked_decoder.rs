//! SparK's densify-and-decode half and its loss (Tian et al., ICLR 2023; docs/pretraining.md,
//! "Masked autoencoding"): the masked positions of C3, C4 and C5 are filled with a learned mask
//! token per stage, a light UNet-like decoder goes from C5 to stride 8 merging C4 and C3, and a
//! 1×1 conv predicts the 8 × 8 pixels under every stride-8 cell (`3·64` channels). The loss is the
//! MSE on the masked 32 px patches only, against targets normalised per patch (mean and unbiased
//! variance over its `3·32·32` values, as SparK).
//!
//! Scaled down from SparK: one decoder width at every stage (SparK halves it stage by stage) and
//! one 3×3 conv per stage (SparK: a transposed conv and two 3×3 convs), stopping at stride 8
//! (SparK decodes to stride 1); nearest-neighbour upsampling instead of transposed convs.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::models::{PatchMask, MASK_PATCH_PX};
use crate::nn::{BaseConv, Conv2d, ParamStore, TensorKind};
use crate::ops;
use crate::rng::rng_for;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Pixels per side of what one stride-8 cell of the decoder predicts.
pub const DECODER_STRIDE: usize = 8;

/// `true` (visible) for `round(patches · (1 − mask_ratio))` patches drawn uniformly without
/// replacement (SparK's `len_keep`), at least one visible and one masked.
pub fn sample_visible_patches(patches: usize, mask_ratio: f64, rng: &mut impl Rng) -> Vec<bool> {
    let keep = visible_count(patches, mask_ratio);
    let mut order: Vec<usize> = (0..patches).collect();
    order.shuffle(rng);
    let mut visible = vec![false; patches];
    for &i in &order[..keep] {
        visible[i] = true;
    }
    visible
}

/// Visible patches of a `patches`-patch image at `mask_ratio`: `round(patches · (1 − ratio))`,
/// clamped to `1..=patches − 1` (so there is something to see and something to reconstruct).
pub fn visible_count(patches: usize, mask_ratio: f64) -> usize {
    let keep = (patches as f64 * (1.0 - mask_ratio)).round() as usize;
    keep.clamp(1, patches.saturating_sub(1).max(1))
}

/// Mask tokens, the decoder and the pixel predictor, with a parameter store of their own
/// (tensors named `pretrain_head.masked.*`, which `load_backbone` never reads).
pub struct MaskedDecoder {
    pub store: ParamStore,
    /// `[1, C_k, 1, 1]` for C3, C4, C5.
    tokens: [Tensor; 3],
    /// 1×1 projections of the densified C3, C4, C5 to the decoder width.
    project: [BaseConv; 3],
    /// 3×3 convs after merging at stride 16 and stride 8.
    fuse: [BaseConv; 2],
    predict: Conv2d,
}

impl MaskedDecoder {
    /// For a backbone of `width` (C3, C4, C5 = 256, 512, 1024 × width channels).
    pub fn new(width: f64, decoder_width: usize, seed: u64) -> Result<Self> {
        if decoder_width == 0 {
            return Err(Error::InvalidArgument(
                "`decoder_width` must be >= 1".into(),
            ));
        }
        let store = ParamStore::new(seed);
        let b = store.builder().sub("pretrain_head").sub("masked");
        let channels = [256.0, 512.0, 1024.0].map(|c| (c * width) as usize);
        let d = decoder_width;
        let token = |k: usize, c: usize| -> Result<Tensor> {
            // SparK: trunc_normal(std 0.02); a uniform with the same std here.
            let bound = 0.02 * 3f32.sqrt();
            let mut rng = rng_for(seed, &format!("init/masked/token{k}"));
            let values = (0..c).map(|_| rng.random_range(-bound..bound)).collect();
            b.sub("mask_token")
                .register(&k.to_string(), [1, c, 1, 1], values, TensorKind::NoDecay)
        };
        let tokens = [
            token(3, channels[0])?,
            token(4, channels[1])?,
            token(5, channels[2])?,
        ];
        let proj = |k: usize, c: usize| BaseConv::new(&b.sub("project").sub(k), c, d, 1, 1, 1);
        let project = [
            proj(3, channels[0])?,
            proj(4, channels[1])?,
            proj(5, channels[2])?,
        ];
        let fuse = [
            BaseConv::new(&b.sub("fuse").sub(4), d, d, 3, 1, 1)?,
            BaseConv::new(&b.sub("fuse").sub(3), d, d, 3, 1, 1)?,
        ];
        let out = 3 * DECODER_STRIDE * DECODER_STRIDE;
        let predict = Conv2d::new(&b.sub("predict"), d, out, 1, 1, 0, 1, true)?;
        Ok(MaskedDecoder {
            store,
            tokens,
            project,
            fuse,
            predict,
        })
    }

    /// Masked (C3, C4, C5) → the predicted pixels `[B, 3, H, W]` (H, W = 8 × C3's size).
    pub fn forward(&self, feats: [&Tensor; 3], mask: &PatchMask) -> Result<Tensor> {
        let mut dense = Vec::with_capacity(3);
        for (k, (x, token)) in feats.iter().zip(&self.tokens).enumerate() {
            // Stage k (C3, C4, C5) has stride 2^(k + 3).
            let m = mask.level(k + 3).expect("six levels");
            let filled = ops::add(
                &ops::mul(x, m)?,
                &ops::mul(token, &ops::rsub_scalar(m, 1.0)?)?,
            )?;
            dense.push(self.project[k].forward(&filled)?);
        }
        let x = ops::add(&ops::upsample_nearest2x(&dense[2])?, &dense[1])?;
        let x = self.fuse[0].forward(&x)?; // stride 16
        let x = ops::add(&ops::upsample_nearest2x(&x)?, &dense[0])?;
        let x = self.fuse[1].forward(&x)?; // stride 8
        depth_to_space(&self.predict.forward(&x)?, DECODER_STRIDE)
    }
}

/// `[B, 3·s·s, h, w]` (channels `(c, dy, dx)`) → `[B, 3, h·s, w·s]`.
fn depth_to_space(x: &Tensor, s: usize) -> Result<Tensor> {
    let d = x.dims();
    let (b, h, w) = (d[0], d[2], d[3]);
    let x = ops::reshape(x, [b, 3, s, s, h, w])?;
    let x = ops::contiguous(&ops::permute(&x, &[0, 1, 4, 2, 5, 3])?)?; // [B, 3, h, s, w, s]
    ops::reshape(&x, [b, 3, h * s, w * s])
}

/// `[B, 3, H, W]` → one row of `3·32·32` values (channel, row, column) per 32 px patch:
/// `[B, (H/32)·(W/32), 3072]`, patches row-major.
pub fn patchify(x: &Tensor) -> Result<Tensor> {
    let d = x.dims();
    let p = MASK_PATCH_PX;
    let (b, c, h32, w32) = (d[0], d[1], d[2] / p, d[3] / p);
    let x = ops::reshape(x, [b, c, h32, p, w32, p])?;
    let x = ops::contiguous(&ops::permute(&x, &[0, 2, 4, 1, 3, 5])?)?; // [B, h32, w32, c, p, p]
    ops::reshape(&x, [b, h32 * w32, c * p * p])
}

/// SparK's target: each patch's values minus their mean, over sqrt(unbiased variance + 1e-6).
pub fn normalised_patch_targets(images: &Tensor) -> Result<Tensor> {
    crate::autograd::no_grad(|| {
        let t = patchify(images)?;
        let n = t.dim(-1)? as f32;
        let mean = ops::mean(&t, &[-1], true)?;
        let centred = ops::sub(&t, &mean)?;
        let var = ops::div_scalar(
            &ops::sum(&ops::mul(&centred, &centred)?, &[-1], true)?,
            (n - 1.0).max(1.0),
        )?;
        ops::div(&centred, &ops::sqrt(&ops::add_scalar(&var, 1e-6)?)?)
    })
}

/// Mean over the masked patches of each patch's mean squared error between `predicted
/// [B, 3, H, W]` and the normalised patches of `images [B, 3, H, W]`.
pub fn masked_reconstruction_loss(
    predicted: &Tensor,
    images: &Tensor,
    mask: &PatchMask,
) -> Result<Tensor> {
    if predicted.dims() != images.dims() {
        return Err(Error::op(
            "masked_reconstruction_loss",
            format!(
                "prediction {} and images {} differ",
                predicted.shape(),
                images.shape()
            ),
        ));
    }
    if mask.masked_patches() == 0 {
        return Err(Error::op(
            "masked_reconstruction_loss",
            "the mask hides no patch: there is nothing to reconstruct",
        ));
    }
    let target = normalised_patch_targets(images)?;
    let diff = ops::sub(&patchify(predicted)?, &target)?;
    let per_patch = ops::mean(&ops::mul(&diff, &diff)?, &[-1], false)?; // [B, L]
    let grid = mask.level(5).expect("six levels");
    let masked = ops::rsub_scalar(
        &ops::reshape(grid, [grid.dims()[0], grid.numel() / grid.dims()[0]])?,
        1.0,
    )?;
    let count = ops::sum_all(&masked)?;
    ops::div(&ops::sum_all(&ops::mul(&per_patch, &masked)?)?, &count)
}

/// One masked-autoencoding step's forward and backward (no optimiser step): `images [B, 3, H, W]`
/// (the unmasked input, also the target) through the sparse backbone, the decoder and the loss;
/// returns the loss on the images' device. BN runs as `model`'s store says.
pub fn masked_autoencoding_step(
    model: &crate::models::YoloX,
    decoder: &MaskedDecoder,
    images: &Tensor,
    mask: &PatchMask,
) -> Result<Tensor> {
    let bn = crate::models::SparseBn::of_store(&model.store);
    let (c3, c4, c5) = model.backbone.backbone.forward_masked(images, mask, bn)?;
    let predicted = decoder.forward([&c3, &c4, &c5], mask)?;
    let loss = masked_reconstruction_loss(&predicted, images, mask)?;
    loss.backward()?;
    Ok(loss)
}
