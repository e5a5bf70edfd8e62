//! The CSPDarknet run on a patch mask, as SparK (Tian et al., ICLR 2023, "Designing BERT for
//! CNNs") simulates sparse convolution on dense tensors (docs/pretraining.md, "Masked
//! autoencoding"): masked positions are zero at the input, and every conv → BN → SiLU of the
//! backbone is followed by a multiplication with the mask at its resolution, so a masked
//! position holds zero everywhere and never reaches a visible one. BN in training mode takes its
//! statistics over the visible positions only (SparK's sparse BN), composed from sums over the
//! masked tensor; the running statistics move with those statistics (YOLOX's momentum, or the
//! store's override).
//!
//! [`CspDarknet::forward_masked`] walks the same layers as [`CspDarknet::forward`] (which it
//! leaves untouched) in the same order; with every patch visible it computes the same features
//! up to rounding (`tests/pretrain_masked.rs`).
//!
//! SPP's max-pools read the zeros of masked neighbours: a constant, so no information crosses
//! the mask, but a visible position whose neighbours are all negative sees 0 where the dense
//! forward would see its neighbour's value (SparK's ResNets have no such pooling).

use super::yolox::CspDarknet;
use crate::nn::{BaseConv, BatchNorm2d, Bottleneck, Conv, CspLayer, Focus, SppBottleneck};
use crate::ops::{self, BatchNormParams, Pool2dParams};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The backbone's total stride: one mask cell per 32 × 32 pixels.
pub const MASK_PATCH_PX: usize = 32;

/// A per-image patch mask at every resolution the backbone uses (strides 1, 2, 4, …, 32).
pub struct PatchMask {
    /// `levels[k]`: `[B, 1, H / 2^k, W / 2^k]`, 1 at visible positions, 0 at masked ones.
    levels: Vec<Tensor>,
    /// Visible positions over the batch at each level (the sparse BN's count).
    visible: Vec<f32>,
}

impl PatchMask {
    /// `visible_patches[b][i·w32 + j]` says whether patch (i, j) of image b is visible, for a
    /// `h32 × w32` patch grid; the levels are its nearest-neighbour upsamplings, on `device`.
    pub fn new(
        visible_patches: &[Vec<bool>],
        [h32, w32]: [usize; 2],
        device: Device,
    ) -> Result<Self> {
        let b = visible_patches.len();
        if b == 0 || h32 == 0 || w32 == 0 {
            return Err(Error::InvalidArgument(format!(
                "a patch mask needs at least one image and one patch, got {b} images of {h32}×{w32}"
            )));
        }
        let mut values = Vec::with_capacity(b * h32 * w32);
        for (i, row) in visible_patches.iter().enumerate() {
            if row.len() != h32 * w32 {
                return Err(Error::op(
                    "patch mask",
                    format!(
                        "image {i} has {} patches, the grid {}",
                        row.len(),
                        h32 * w32
                    ),
                ));
            }
            values.extend(row.iter().map(|&v| if v { 1.0f32 } else { 0.0 }));
        }
        let visible_patches: usize = values.iter().filter(|&&v| v > 0.0).count();
        if visible_patches == 0 {
            return Err(Error::InvalidArgument(
                "a patch mask must leave at least one patch visible".into(),
            ));
        }
        let coarsest = Tensor::from_vec_on(values, [b, 1, h32, w32], device)?;
        // levels[5] is the patch grid; each finer level doubles both sides.
        let mut levels = vec![coarsest];
        for _ in 0..5 {
            let finer = ops::upsample_nearest2x(levels.last().expect("non-empty"))?;
            levels.push(finer);
        }
        levels.reverse();
        let visible = (0..6)
            .map(|k| (visible_patches * (MASK_PATCH_PX >> k).pow(2)) as f32)
            .collect();
        Ok(PatchMask { levels, visible })
    }

    /// The mask at stride `2^k` (k = 0 pixels … 5 patches): `[B, 1, H / 2^k, W / 2^k]`.
    pub fn level(&self, k: usize) -> Option<&Tensor> {
        self.levels.get(k)
    }

    /// Masked patches over the batch (counted on the host when the mask was built).
    pub fn masked_patches(&self) -> usize {
        let grid = &self.levels[5];
        grid.numel() - (self.visible[5] as usize)
    }

    /// The mask matching `x [B, C, h, w]`'s resolution and its visible-position count.
    fn matching(&self, x: &Tensor) -> Result<(&Tensor, f32)> {
        let hw = (x.dim(-2)?, x.dim(-1)?);
        self.levels
            .iter()
            .zip(&self.visible)
            .find(|(m, _)| (m.dims()[2], m.dims()[3]) == hw)
            .map(|(m, &n)| (m, n))
            .ok_or_else(|| {
                Error::op(
                    "forward_masked",
                    format!(
                        "feature {} matches none of the mask's resolutions (patch grid {:?})",
                        x.shape(),
                        self.levels[5].dims()
                    ),
                )
            })
    }

    /// `x` with its masked positions zeroed.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        ops::mul(x, self.matching(x)?.0)
    }
}

/// How BN runs in a masked forward: training (visible-position statistics, running statistics
/// updated) or evaluation (running statistics), with YOLOX's eps and momentum by default.
#[derive(Clone, Copy, Debug)]
pub struct SparseBn {
    pub training: bool,
    pub momentum: f32,
    pub eps: f32,
}

impl SparseBn {
    /// The mode and momentum of `store`'s BN layers (training flag, precise-BN override).
    pub fn of_store(store: &crate::nn::ParamStore) -> Self {
        let d = BatchNormParams::default();
        SparseBn {
            training: store.is_training(),
            momentum: store.bn_momentum().unwrap_or(d.momentum),
            eps: d.eps,
        }
    }
}

/// A masked forward's state: the mask and the BN mode.
struct Sparse<'a> {
    mask: &'a PatchMask,
    bn: SparseBn,
}

impl Sparse<'_> {
    /// `mask · silu(bn(x))`, BN statistics over the visible positions when training.
    fn bn_silu(&self, bn: &BatchNorm2d, x: &Tensor) -> Result<Tensor> {
        let (m, count) = self.mask.matching(x)?;
        if !self.bn.training {
            return ops::mul(&bn.forward_silu(x)?, m);
        }
        let c = x.dim(1)?;
        let mean = ops::div_scalar(&ops::sum(&ops::mul(x, m)?, &[0, 2, 3], true)?, count)?;
        let centred = ops::mul(&ops::sub(x, &mean)?, m)?;
        let var = ops::div_scalar(
            &ops::sum(&ops::mul(&centred, &centred)?, &[0, 2, 3], true)?,
            count,
        )?;
        let std = ops::sqrt(&ops::add_scalar(&var, self.bn.eps)?)?;
        let gamma = ops::reshape(&bn.weight, [1, c, 1, 1])?;
        let beta = ops::reshape(&bn.bias, [1, c, 1, 1])?;
        let y = ops::add(&ops::mul(&ops::div(&centred, &std)?, &gamma)?, &beta)?;
        self.update_running(bn, &mean, &var, count)?;
        ops::mul(&ops::silu(&y)?, m)
    }

    /// PyTorch's running-statistics update (unbiased variance), written back where the buffers
    /// live (device to device on CUDA).
    fn update_running(
        &self,
        bn: &BatchNorm2d,
        mean: &Tensor,
        var: &Tensor,
        count: f32,
    ) -> Result<()> {
        crate::autograd::no_grad(|| {
            let mom = self.bn.momentum;
            let c = bn.running_mean.numel();
            let unbiased = count / (count - 1.0).max(1.0);
            let blend = |running: &Tensor, batch: &Tensor, scale: f32| -> Result<Tensor> {
                let batch = ops::reshape(&batch.detach(), [c])?;
                ops::add(
                    &ops::mul_scalar(running, 1.0 - mom)?,
                    &ops::mul_scalar(&batch, mom * scale)?,
                )
            };
            let new_mean = blend(&bn.running_mean, mean, 1.0)?;
            let new_var = blend(&bn.running_var, var, unbiased)?;
            bn.running_mean.assign(&new_mean)?;
            bn.running_var.assign(&new_var)
        })
    }

    fn base_conv(&self, c: &BaseConv, x: &Tensor) -> Result<Tensor> {
        self.bn_silu(&c.bn, &c.conv.forward(x)?)
    }

    fn conv(&self, c: &Conv, x: &Tensor) -> Result<Tensor> {
        match c {
            Conv::Base(c) => self.base_conv(c, x),
            Conv::Dw(c) => self.base_conv(&c.pconv, &self.base_conv(&c.dconv, x)?),
        }
    }

    fn bottleneck(&self, b: &Bottleneck, x: &Tensor) -> Result<Tensor> {
        let y = self.conv(&b.conv2, &self.base_conv(&b.conv1, x)?)?;
        if b.use_add {
            ops::add(&y, x)
        } else {
            Ok(y)
        }
    }

    fn csp(&self, l: &CspLayer, x: &Tensor) -> Result<Tensor> {
        let mut main = self.base_conv(&l.conv1, x)?;
        for block in &l.m {
            main = self.bottleneck(block, &main)?;
        }
        let bypass = self.base_conv(&l.conv2, x)?;
        self.base_conv(&l.conv3, &ops::cat(&[main, bypass], 1)?)
    }

    fn spp(&self, s: &SppBottleneck, x: &Tensor) -> Result<Tensor> {
        let x = self.base_conv(&s.conv1, x)?;
        let mut parts = vec![x.clone()];
        for &k in &s.kernels {
            let pooled = ops::max_pool2d(
                &x,
                Pool2dParams {
                    kernel: k,
                    stride: 1,
                    padding: k / 2,
                },
            )?;
            parts.push(self.mask.apply(&pooled)?);
        }
        self.base_conv(&s.conv2, &ops::cat(&parts, 1)?)
    }

    fn focus(&self, f: &Focus, x: &Tensor) -> Result<Tensor> {
        let (h, w) = (x.dim(-2)?, x.dim(-1)?);
        let pick = |row0: usize, col0: usize| -> Result<Tensor> {
            ops::slice_step(&ops::slice_step(x, -2, row0, h, 2)?, -1, col0, w, 2)
        };
        let parts = [pick(0, 0)?, pick(1, 0)?, pick(0, 1)?, pick(1, 1)?];
        self.base_conv(&f.conv, &ops::cat(&parts, 1)?)
    }
}

impl CspDarknet {
    /// The sparse forward (see the module docs): `x [B, 3, H, W]` (H, W multiples of 32, the
    /// mask's patch grid times 32) → masked (C3, C4, C5), zero at masked positions.
    pub fn forward_masked(
        &self,
        x: &Tensor,
        mask: &PatchMask,
        bn: SparseBn,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let pixels = mask.level(0).expect("six levels");
        if x.rank() != 4 || x.dims()[1] != 3 || x.dims()[0] != pixels.dims()[0] {
            return Err(Error::op(
                "forward_masked",
                format!(
                    "needs images [{}, 3, H, W] for the mask's batch, got {}",
                    pixels.dims()[0],
                    x.shape()
                ),
            ));
        }
        let s = Sparse { mask, bn };
        let x = mask.apply(x)?;
        let x = s.focus(&self.stem, &x)?;
        let x = s.csp(&self.dark2.1, &s.conv(&self.dark2.0, &x)?)?;
        let c3 = s.csp(&self.dark3.1, &s.conv(&self.dark3.0, &x)?)?;
        let c4 = s.csp(&self.dark4.1, &s.conv(&self.dark4.0, &c3)?)?;
        let x = s.spp(&self.dark5.1, &s.conv(&self.dark5.0, &c4)?)?;
        let c5 = s.csp(&self.dark5.2, &x)?;
        Ok((c3, c4, c5))
    }
}
