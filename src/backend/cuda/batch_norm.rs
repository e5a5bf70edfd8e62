//! Launchers of `kernels/batch_norm.cu`: BatchNorm2d (training and eval) and the fused
//! BN + SiLU pair. CPU twin: `src/backend/cpu/batch_norm.rs`.

use cudarc::driver::{CudaSlice, LaunchConfig};

use super::bf16::{widened_unless, CudaBuffer, CudaValues};
use super::context::{grid_1d, grid_per_item, CudaDevice, BLOCK};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::backend::Activation;
use crate::{Error, Result};

/// `[N, C, plane]` sizes of a BN call (plane = H·W).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    pub plane: usize,
}

impl BnShape {
    pub fn len(&self) -> usize {
        self.n * self.c * self.plane
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn i64s(&self, op: &str) -> Result<(i64, i64, i64)> {
        Ok((
            to_i64(op, self.n)?,
            to_i64(op, self.c)?,
            to_i64(op, self.plane)?,
        ))
    }
    /// Values per channel (N·plane).
    fn per_channel(&self) -> usize {
        self.n * self.plane
    }
    /// Chunks per channel of the reductions.
    fn chunks(&self) -> usize {
        self.per_channel().div_ceil(REDUCE_CHUNK).max(1)
    }
    /// One block per (channel, chunk) pair; the kernels stride pairs beyond the grid.
    fn reduce_grid(&self) -> LaunchConfig {
        grid_per_item(self.c * self.chunks())
    }
    /// The element-wise kernels' grid: one block per (row, tile) step when planes are walked row
    /// by row (plane >= 256), else one per 256 elements (flat walk).
    fn elementwise_grid(&self) -> LaunchConfig {
        if self.plane >= BLOCK as usize {
            grid_per_item(self.n * self.c * self.plane.div_ceil(TILE))
        } else {
            grid_1d(self.len())
        }
    }
}

/// Values per (channel, chunk) block of the reductions (statistics, backward sums): small enough
/// that a chunk's second pass finds it in L2 and every layer gets hundreds of blocks, large
/// enough that the block trees and the per-channel combine stay cheap.
const REDUCE_CHUNK: usize = 8192;
/// Positions per block step of the element-wise kernels' row walk (`TILE` of batch_norm.cu).
const TILE: usize = 1024;

/// What the training forward keeps for backward: per-channel batch mean and 1/sqrt(var + eps).
pub struct BnSaved {
    pub mean: CudaSlice<f32>,
    pub invstd: CudaSlice<f32>,
}

fn check_params(
    op: &str,
    s: BnShape,
    x: CudaValues,
    per_channel: &[(&str, &CudaSlice<f32>)],
    eps: f32,
) -> Result<()> {
    if x.len() != s.len() {
        return Err(Error::ShapeMismatch {
            op: op.to_string(),
            expected: format!("x [N, C, H, W] of {} elements", s.len()),
            got: format!("{} elements", x.len()),
        });
    }
    for (name, t) in per_channel {
        check_len(op, name, t, s.c)?;
    }
    if eps.is_nan() || eps <= 0.0 {
        return Err(Error::op(op, format!("eps must be > 0, got {eps}")));
    }
    Ok(())
}

/// How a forward writes `y`: f32, or bf16 bits (bf16 storage mode, [`super::bf16`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    F32,
    Bf16,
}

impl OutputFormat {
    /// The format activations are stored in on `dev` ([`super::bf16::stores_bf16`]).
    pub fn for_device(dev: &CudaDevice) -> OutputFormat {
        if super::bf16::stores_bf16(dev) {
            OutputFormat::Bf16
        } else {
            OutputFormat::F32
        }
    }
}

/// A forward's mode: the activation fused after the normalisation and the output's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnMode {
    pub activation: Activation,
    pub output: OutputFormat,
}

impl BnMode {
    fn silu(self) -> bool {
        self.activation == Activation::Silu
    }
    fn out_bf16(self) -> bool {
        self.output == OutputFormat::Bf16
    }
}

/// What every BN launcher takes besides the activations and statistics: the per-channel
/// affine parameters, the sizes, eps and the mode.
#[derive(Clone, Copy)]
pub struct BnLaunch<'a> {
    pub gamma: &'a CudaSlice<f32>,
    pub beta: &'a CudaSlice<f32>,
    pub shape: BnShape,
    pub eps: f32,
    pub mode: BnMode,
}

/// The kernel `stem` (its SiLU twin when `silu`) for x stored as `x_suffix` (`f32`, `bf16`).
fn x_sym(stem: &str, silu: bool, x_suffix: &str) -> String {
    let stem = if silu {
        stem.replacen("batch_norm", "bn_silu", 1)
    } else {
        stem.to_string()
    };
    format!("{stem}_{x_suffix}")
}

/// The forward kernel for `silu`, the input's format and the output's: f32 -> f32 (`_f32`),
/// f32 -> bf16 (`_f32_to_bf16`), bf16 -> bf16 (`_bf16`; a bf16 input with an f32 output is
/// widened first, [`widened_unless`]).
fn fwd_sym(silu: bool, x_suffix: &str, out_bf16: bool) -> String {
    let stem = if silu {
        "bn_silu_fwd"
    } else {
        "batch_norm_fwd"
    };
    match (x_suffix, out_bf16) {
        ("f32", true) => format!("{stem}_f32_to_bf16"),
        _ => format!("{stem}_{x_suffix}"),
    }
}

/// `y = bn(x)` (then SiLU) by the element-wise forward kernel, with `s` the per-channel inverse
/// std (`s_is_var` 0) or running variance (1); `y` as `mode.output` says.
fn launch_fwd(
    dev: &CudaDevice,
    x: CudaValues,
    p: &BnLaunch,
    (mean, s_stat): (&CudaSlice<f32>, &CudaSlice<f32>),
    s_is_var: i32,
) -> Result<CudaBuffer> {
    let (gamma, beta, s, eps, mode) = (p.gamma, p.beta, p.shape, p.eps, p.mode);
    let (n, c, plane) = s.i64s("batch_norm (cuda)")?;
    let (silu, out_bf16) = (mode.silu(), mode.out_bf16());
    let mut wide = None;
    let x = widened_unless(dev, x, out_bf16, &mut wide)?;
    let sym = &fwd_sym(silu, x.suffix(), out_bf16);
    // Every element is written (both walks cover [N, C, plane]): no zeroing pass.
    let mut y = if out_bf16 {
        CudaBuffer::Bf16(dev.alloc_u16(s.len())?)
    } else {
        CudaBuffer::F32(dev.alloc(s.len())?)
    };
    Kernel::new(dev, KernelFile::BatchNorm, sym)
        .reads("x [N, C, plane]", x, s.len())
        .reads("mean [C]", mean, s.c)
        .reads("invstd or running var [C]", s_stat, s.c)
        .reads("gamma [C]", gamma, s.c)
        .reads("beta [C]", beta, s.c)
        .writes("y [N, C, plane]", &mut y, s.len())
        .value(&n)
        .value(&c)
        .value(&plane)
        .value(&eps)
        .value(&s_is_var)
        .launch(s.elementwise_grid())?;
    Ok(y)
}

/// Training forward: batch statistics, running stats updated in place, `y = bn(x)` (then the
/// mode's activation; in the mode's output format).
pub fn fwd_train(
    dev: &CudaDevice,
    x: CudaValues,
    p: &BnLaunch,
    (running_mean, running_var): (&mut CudaSlice<f32>, &mut CudaSlice<f32>),
    momentum: f32,
) -> Result<(CudaBuffer, BnSaved)> {
    let op = "batch_norm (cuda)";
    let (gamma, beta, s, eps) = (p.gamma, p.beta, p.shape, p.eps);
    check_params(
        op,
        s,
        x,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        eps,
    )?;
    if !(0.0..=1.0).contains(&momentum) {
        return Err(Error::op(op, format!("momentum {momentum} not in [0, 1]")));
    }
    let count = s.n * s.plane;
    if count <= 1 {
        return Err(Error::op(
            op,
            format!("training mode needs more than one value per channel, got {s:?}"),
        ));
    }
    let (n, c, plane) = s.i64s(op)?;
    let (mut mean, mut invstd, mut var) = (dev.zeros(s.c)?, dev.zeros(s.c)?, dev.zeros(s.c)?);
    let (m, chunk) = (to_i64(op, count)?, to_i64(op, REDUCE_CHUNK)?);
    let mut partial = dev.alloc(2 * s.c * s.chunks())?;
    let sym = &x_sym("batch_norm_stats_partial", false, x.suffix());
    let partial_len = 2 * s.c * s.chunks();
    // Each (channel, chunk) block writes its own two partials.
    Kernel::new(dev, KernelFile::BatchNorm, sym)
        .reads("x [N, C, plane]", x, s.len())
        .writes("partial [C, chunks, 2]", &mut partial, partial_len)
        .value(&n)
        .value(&c)
        .value(&plane)
        .value(&chunk)
        .launch(s.reduce_grid())?;
    Kernel::new(dev, KernelFile::BatchNorm, "batch_norm_stats_finalize_f32")
        .reads("partial [C, chunks, 2]", &partial, partial_len)
        .writes("mean [C]", &mut mean, s.c)
        .writes("invstd [C]", &mut invstd, s.c)
        .writes("var [C]", &mut var, s.c)
        .value(&c)
        .value(&m)
        .value(&chunk)
        .value(&eps)
        .launch(grid_1d(s.c))?;

    let unbias = count as f32 / (count - 1) as f32;
    Kernel::new(dev, KernelFile::BatchNorm, "batch_norm_update_running_f32")
        .writes("running_mean [C]", running_mean, s.c)
        .writes("running_var [C]", running_var, s.c)
        .reads("mean [C]", &mean, s.c)
        .reads("var [C]", &var, s.c)
        .value(&c)
        .value(&momentum)
        .value(&unbias)
        .launch(grid_1d(s.c))?;

    let y = launch_fwd(dev, x, p, (&mean, &invstd), 0)?;
    Ok((y, BnSaved { mean, invstd }))
}

/// Eval forward with the running statistics.
pub fn fwd_eval(
    dev: &CudaDevice,
    x: CudaValues,
    p: &BnLaunch,
    (running_mean, running_var): (&CudaSlice<f32>, &CudaSlice<f32>),
) -> Result<CudaBuffer> {
    let op = "batch_norm (cuda, eval)";
    let (gamma, beta, s, eps) = (p.gamma, p.beta, p.shape, p.eps);
    check_params(
        op,
        s,
        x,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ],
        eps,
    )?;
    launch_fwd(dev, x, p, (running_mean, running_var), 1)
}

/// Training backward: `(dx, dgamma, dbeta)`. `x` is the forward input, `saved` its statistics,
/// `p` as the forward's (its mode's activation is undone; eps is in `saved`).
pub fn bwd_train(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    x: CudaValues,
    p: &BnLaunch,
    saved: &BnSaved,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)> {
    let op = "batch_norm backward (cuda)";
    let (gamma, beta, s) = (p.gamma, p.beta, p.shape);
    let silu = p.mode.activation == Activation::Silu;
    check_params(
        op,
        s,
        x,
        &[
            ("gamma", gamma),
            ("beta", beta),
            ("mean", &saved.mean),
            ("invstd", &saved.invstd),
        ],
        1.0,
    )?;
    check_len(op, "dy", dy, s.len())?;
    let (n, c, plane) = s.i64s(op)?;
    let (mut sum_dz, mut sum_dz_xhat) = (dev.zeros(s.c)?, dev.zeros(s.c)?);
    let (m, chunk) = (to_i64(op, s.per_channel())?, to_i64(op, REDUCE_CHUNK)?);
    let mut partial = dev.alloc(2 * s.c * s.chunks())?;
    let sym = &x_sym("batch_norm_bwd_partial", silu, x.suffix());
    let partial_len = 2 * s.c * s.chunks();
    // Each (channel, chunk) block writes its own two partials.
    Kernel::new(dev, KernelFile::BatchNorm, sym)
        .reads("dy [N, C, plane]", dy, s.len())
        .reads("x [N, C, plane]", x, s.len())
        .reads("mean [C]", &saved.mean, s.c)
        .reads("invstd [C]", &saved.invstd, s.c)
        .reads("gamma [C]", gamma, s.c)
        .reads("beta [C]", beta, s.c)
        .writes("partial [C, chunks, 2]", &mut partial, partial_len)
        .value(&n)
        .value(&c)
        .value(&plane)
        .value(&chunk)
        .launch(s.reduce_grid())?;
    Kernel::new(dev, KernelFile::BatchNorm, "batch_norm_sums_finalize_f32")
        .reads("partial [C, chunks, 2]", &partial, partial_len)
        .writes("sum_dz [C]", &mut sum_dz, s.c)
        .writes("sum_dz_xhat [C]", &mut sum_dz_xhat, s.c)
        .value(&c)
        .value(&m)
        .value(&chunk)
        .launch(grid_1d(s.c))?;

    let mut dx = dev.alloc(s.len())?;
    let training = 1i32;
    let sym = &x_sym("batch_norm_bwd", silu, x.suffix());
    Kernel::new(dev, KernelFile::BatchNorm, sym)
        .reads("dy [N, C, plane]", dy, s.len())
        .reads("x [N, C, plane]", x, s.len())
        .reads("mean [C]", &saved.mean, s.c)
        .reads("invstd [C]", &saved.invstd, s.c)
        .reads("gamma [C]", gamma, s.c)
        .reads("beta [C]", beta, s.c)
        .reads("sum_dz [C]", &sum_dz, s.c)
        .reads("sum_dz_xhat [C]", &sum_dz_xhat, s.c)
        .writes("dx [N, C, plane]", &mut dx, s.len())
        .value(&n)
        .value(&c)
        .value(&plane)
        .value(&training)
        .launch(s.elementwise_grid())?;
    // dgamma = Σ dz·xhat, dbeta = Σ dz.
    Ok((dx, sum_dz_xhat, sum_dz))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::bf16::StoredElement;

    /// Every kernel name the launchers build exists in batch_norm.cu's symbol list (a typo would
    /// otherwise surface only on a GPU, as a missing function).
    #[test]
    fn every_launched_symbol_exists() {
        let symbols = KernelFile::BatchNorm.symbols();
        let has = |s: &str| assert!(symbols.contains(&s), "no kernel `{s}` in batch_norm.cu");
        for sfx in [f32::SUFFIX, u16::SUFFIX] {
            has(&x_sym("batch_norm_stats_partial", false, sfx));
            for silu in [false, true] {
                has(&x_sym("batch_norm_bwd_partial", silu, sfx));
                has(&x_sym("batch_norm_bwd", silu, sfx));
                // A bf16 input always writes bf16 (launch_fwd widens it otherwise).
                for out_bf16 in [sfx == u16::SUFFIX, true] {
                    has(&fwd_sym(silu, sfx, out_bf16));
                }
            }
        }
        for s in [
            "batch_norm_stats_finalize_f32",
            "batch_norm_update_running_f32",
            "batch_norm_sums_finalize_f32",
        ] {
            has(s);
        }
    }
}
