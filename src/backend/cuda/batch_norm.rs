//! Launchers of `kernels/batch_norm.cu`: BatchNorm2d (training and eval) and the fused
//! BN + SiLU pair. CPU twin: `src/ops/batch_norm.rs` (+ `ops::silu`).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::context::{cuda_err, grid_1d, grid_per_item, CudaDevice};
use super::{check_len, to_i64, KernelFile};
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
}

/// What the training forward keeps for backward: per-channel batch mean and 1/sqrt(var + eps).
pub struct BnSaved {
    pub mean: CudaSlice<f32>,
    pub invstd: CudaSlice<f32>,
}

fn check_params(
    op: &str,
    s: BnShape,
    x: &CudaSlice<f32>,
    per_channel: &[(&str, &CudaSlice<f32>)],
    eps: f32,
) -> Result<()> {
    check_len(op, "x [N, C, H, W]", x, s.len())?;
    for (name, t) in per_channel {
        check_len(op, name, t, s.c)?;
    }
    if eps.is_nan() || eps <= 0.0 {
        return Err(Error::op(op, format!("eps must be > 0, got {eps}")));
    }
    Ok(())
}

fn fwd_sym(silu: bool) -> &'static str {
    if silu {
        "bn_silu_fwd_f32"
    } else {
        "batch_norm_fwd_f32"
    }
}

/// Training forward: batch statistics, running stats updated in place, `y = bn(x)` (then SiLU
/// when `silu`).
#[allow(clippy::too_many_arguments)]
pub fn fwd_train(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    gamma: &CudaSlice<f32>,
    beta: &CudaSlice<f32>,
    running_mean: &mut CudaSlice<f32>,
    running_var: &mut CudaSlice<f32>,
    s: BnShape,
    momentum: f32,
    eps: f32,
    silu: bool,
) -> Result<(CudaSlice<f32>, BnSaved)> {
    let op = "batch_norm (cuda)";
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
    let f = dev.function(KernelFile::BatchNorm, "batch_norm_stats_f32")?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(x)
        .arg(&mut mean)
        .arg(&mut invstd)
        .arg(&mut var)
        .arg(&n)
        .arg(&c)
        .arg(&plane)
        .arg(&eps);
    // SAFETY: x holds N·C·plane, the stats C elements (checked).
    unsafe { b.launch(grid_per_item(s.c)) }.map_err(|e| cuda_err("batch_norm_stats_f32", e))?;

    let unbias = count as f32 / (count - 1) as f32;
    let f = dev.function(KernelFile::BatchNorm, "batch_norm_update_running_f32")?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(running_mean)
        .arg(running_var)
        .arg(&mean)
        .arg(&var)
        .arg(&c)
        .arg(&momentum)
        .arg(&unbias);
    // SAFETY: four buffers of C elements.
    unsafe { b.launch(grid_1d(s.c)) }.map_err(|e| cuda_err("batch_norm_update_running_f32", e))?;

    let mut y = dev.zeros(s.len())?;
    let sym = fwd_sym(silu);
    let s_is_var = 0i32;
    let f = dev.function(KernelFile::BatchNorm, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(x)
        .arg(&mean)
        .arg(&invstd)
        .arg(gamma)
        .arg(beta)
        .arg(&mut y);
    b.arg(&n).arg(&c).arg(&plane).arg(&eps).arg(&s_is_var);
    // SAFETY: x, y hold N·C·plane; per-channel buffers C.
    unsafe { b.launch(grid_1d(s.len())) }.map_err(|e| cuda_err(sym, e))?;
    Ok((y, BnSaved { mean, invstd }))
}

/// Eval forward with the running statistics.
#[allow(clippy::too_many_arguments)]
pub fn fwd_eval(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    gamma: &CudaSlice<f32>,
    beta: &CudaSlice<f32>,
    running_mean: &CudaSlice<f32>,
    running_var: &CudaSlice<f32>,
    s: BnShape,
    eps: f32,
    silu: bool,
) -> Result<CudaSlice<f32>> {
    let op = "batch_norm (cuda, eval)";
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
    let (n, c, plane) = s.i64s(op)?;
    let mut y = dev.zeros(s.len())?;
    let sym = fwd_sym(silu);
    let s_is_var = 1i32;
    let f = dev.function(KernelFile::BatchNorm, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(x)
        .arg(running_mean)
        .arg(running_var)
        .arg(gamma)
        .arg(beta)
        .arg(&mut y);
    b.arg(&n).arg(&c).arg(&plane).arg(&eps).arg(&s_is_var);
    // SAFETY: x, y hold N·C·plane; per-channel buffers C.
    unsafe { b.launch(grid_1d(s.len())) }.map_err(|e| cuda_err(sym, e))?;
    Ok(y)
}

/// Training backward: `(dx, dgamma, dbeta)`. `x` is the forward input, `saved` its statistics.
#[allow(clippy::too_many_arguments)]
pub fn bwd_train(
    dev: &CudaDevice,
    dy: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    gamma: &CudaSlice<f32>,
    beta: &CudaSlice<f32>,
    saved: &BnSaved,
    s: BnShape,
    silu: bool,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>, CudaSlice<f32>)> {
    let op = "batch_norm backward (cuda)";
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
    let sym = if silu {
        "bn_silu_bwd_reduce_f32"
    } else {
        "batch_norm_bwd_reduce_f32"
    };
    let f = dev.function(KernelFile::BatchNorm, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(dy)
        .arg(x)
        .arg(&saved.mean)
        .arg(&saved.invstd)
        .arg(gamma)
        .arg(beta);
    b.arg(&mut sum_dz)
        .arg(&mut sum_dz_xhat)
        .arg(&n)
        .arg(&c)
        .arg(&plane);
    // SAFETY: lengths checked above.
    unsafe { b.launch(grid_per_item(s.c)) }.map_err(|e| cuda_err(sym, e))?;

    let mut dx = dev.zeros(s.len())?;
    let training = 1i32;
    let sym = if silu {
        "bn_silu_bwd_f32"
    } else {
        "batch_norm_bwd_f32"
    };
    let f = dev.function(KernelFile::BatchNorm, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(dy)
        .arg(x)
        .arg(&saved.mean)
        .arg(&saved.invstd)
        .arg(gamma)
        .arg(beta);
    b.arg(&sum_dz)
        .arg(&sum_dz_xhat)
        .arg(&mut dx)
        .arg(&n)
        .arg(&c)
        .arg(&plane)
        .arg(&training);
    // SAFETY: lengths checked above.
    unsafe { b.launch(grid_1d(s.len())) }.map_err(|e| cuda_err(sym, e))?;
    // dgamma = Σ dz·xhat, dbeta = Σ dz.
    Ok((dx, sum_dz_xhat, sum_dz))
}
