//! Launchers of `kernels/optim.cu`: fused optimizer steps and the EMA update over flat buffers,
//! updated in place. CPU reference: the PyTorch formulas (see the kernel file's contract).

use cudarc::driver::{CudaSlice, PushKernelArg};

use super::context::{cuda_err, grid_1d, CudaDevice};
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

fn finite(op: &str, named: &[(&str, f32)]) -> Result<()> {
    for (name, v) in named {
        if !v.is_finite() {
            return Err(Error::op(op, format!("{name} = {v} is not finite")));
        }
    }
    Ok(())
}

/// SGD with Nesterov momentum (dampening 0): `buf` is the momentum buffer (zeros at first).
pub fn sgd_nesterov(
    dev: &CudaDevice,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    buf: &mut CudaSlice<f32>,
    lr: f32,
    momentum: f32,
    weight_decay: f32,
) -> Result<()> {
    let sym = "sgd_nesterov_f32";
    finite(
        sym,
        &[
            ("lr", lr),
            ("momentum", momentum),
            ("weight_decay", weight_decay),
        ],
    )?;
    let n = p.len();
    check_len(sym, "g", g, n)?;
    check_len(sym, "momentum buffer", buf, n)?;
    let n64 = to_i64(sym, n)?;
    let f = dev.function(KernelFile::Optim, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(p)
        .arg(g)
        .arg(buf)
        .arg(&n64)
        .arg(&lr)
        .arg(&momentum)
        .arg(&weight_decay);
    // SAFETY: three buffers of n elements.
    unsafe { b.launch(grid_1d(n)) }.map_err(|e| cuda_err(sym, e))?;
    Ok(())
}

/// Adam hyper-parameters; `step` counts from 1 (bias corrections `1 − β^step`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// AdamW (decoupled decay) when true, Adam's L2 term otherwise.
    pub decoupled: bool,
    pub step: u32,
}

/// One Adam/AdamW step over `p` with moment buffers `m`, `v` (zeros at first).
pub fn adam(
    dev: &CudaDevice,
    p: &mut CudaSlice<f32>,
    g: &CudaSlice<f32>,
    m: &mut CudaSlice<f32>,
    v: &mut CudaSlice<f32>,
    h: &AdamParams,
) -> Result<()> {
    let sym = "adam_f32";
    finite(
        sym,
        &[
            ("lr", h.lr),
            ("beta1", h.beta1),
            ("beta2", h.beta2),
            ("eps", h.eps),
            ("weight_decay", h.weight_decay),
        ],
    )?;
    if h.step == 0 || !(0.0..1.0).contains(&h.beta1) || !(0.0..1.0).contains(&h.beta2) {
        return Err(Error::op(
            sym,
            format!("need step >= 1 and betas in [0, 1): {h:?}"),
        ));
    }
    let n = p.len();
    check_len(sym, "g", g, n)?;
    check_len(sym, "m", m, n)?;
    check_len(sym, "v", v, n)?;
    let step = h.step.min(i32::MAX as u32) as i32;
    let bc1 = 1.0 - h.beta1.powi(step);
    let bc2 = 1.0 - h.beta2.powi(step);
    let dec = h.decoupled as i32;
    let n64 = to_i64(sym, n)?;
    let f = dev.function(KernelFile::Optim, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(p).arg(g).arg(m).arg(v).arg(&n64);
    b.arg(&h.lr)
        .arg(&h.beta1)
        .arg(&h.beta2)
        .arg(&h.eps)
        .arg(&h.weight_decay);
    b.arg(&bc1).arg(&bc2).arg(&dec);
    // SAFETY: four buffers of n elements.
    unsafe { b.launch(grid_1d(n)) }.map_err(|e| cuda_err(sym, e))?;
    Ok(())
}

/// `ema = decay·ema + (1 − decay)·p`.
pub fn ema(
    dev: &CudaDevice,
    ema: &mut CudaSlice<f32>,
    p: &CudaSlice<f32>,
    decay: f32,
) -> Result<()> {
    let sym = "ema_f32";
    if !(0.0..=1.0).contains(&decay) {
        return Err(Error::op(sym, format!("decay {decay} not in [0, 1]")));
    }
    let n = ema.len();
    check_len(sym, "p", p, n)?;
    let n64 = to_i64(sym, n)?;
    let f = dev.function(KernelFile::Optim, sym)?;
    let mut b = dev.stream().launch_builder(&f);
    b.arg(ema).arg(p).arg(&n64).arg(&decay);
    // SAFETY: two buffers of n elements.
    unsafe { b.launch(grid_1d(n)) }.map_err(|e| cuda_err(sym, e))?;
    Ok(())
}
