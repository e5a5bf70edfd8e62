//! Launchers of `kernels/loss.cu`: BCE on logits and the IoU-family box losses (forward and
//! backward in one kernel). CPU twins: `src/backend/cpu/loss.rs`, `src/detect/loss.rs`.

use cudarc::driver::CudaSlice;

use super::context::{grid_1d, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::Result;

/// Per-element BCE on logits, times `weight` when given.
pub fn bce_with_logits_fwd(
    dev: &CudaDevice,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    weight: Option<&CudaSlice<f32>>,
) -> Result<CudaSlice<f32>> {
    let sym = "bce_with_logits_fwd_f32";
    let n = x.len();
    check_len(sym, "target", t, n)?;
    if let Some(w) = weight {
        check_len(sym, "weight", w, n)?;
    }
    let has_w = weight.is_some() as i32;
    let n64 = to_i64(sym, n)?;
    let mut y = dev.zeros(n)?;
    // Without a weight the kernel never reads `w`; x stands in for it.
    Kernel::new(dev, KernelFile::Loss, sym)
        .reads("x", x, n)
        .reads("target", t, n)
        .reads(
            "weight",
            weight.unwrap_or(x),
            if weight.is_some() { n } else { 0 },
        )
        .writes("y", &mut y, n)
        .value(&n64)
        .value(&has_w)
        .launch(grid_1d(n))?;
    Ok(y)
}

/// `(dx, dt, dweight)` of the per-element BCE (dweight only with a weight).
pub type BceGrads = (CudaSlice<f32>, CudaSlice<f32>, Option<CudaSlice<f32>>);

/// Gradients of the per-element BCE.
pub fn bce_with_logits_bwd(
    dev: &CudaDevice,
    g: &CudaSlice<f32>,
    x: &CudaSlice<f32>,
    t: &CudaSlice<f32>,
    weight: Option<&CudaSlice<f32>>,
) -> Result<BceGrads> {
    let sym = "bce_with_logits_bwd_f32";
    let n = x.len();
    check_len(sym, "g", g, n)?;
    check_len(sym, "target", t, n)?;
    if let Some(w) = weight {
        check_len(sym, "weight", w, n)?;
    }
    let has_w = weight.is_some() as i32;
    let n64 = to_i64(sym, n)?;
    let (mut dx, mut dt) = (dev.zeros(n)?, dev.zeros(n)?);
    // The kernel writes dw only with a weight; without one a 1-element dummy is never touched.
    let mut dw = dev.zeros(if weight.is_some() { n } else { 1 })?;
    let weighted = if weight.is_some() { n } else { 0 };
    Kernel::new(dev, KernelFile::Loss, sym)
        .reads("g", g, n)
        .reads("x", x, n)
        .reads("target", t, n)
        .reads("weight", weight.unwrap_or(x), weighted)
        .writes("dx", &mut dx, n)
        .writes("dt", &mut dt, n)
        .writes("dweight", &mut dw, weighted)
        .value(&n64)
        .value(&has_w)
        .launch(grid_1d(n))?;
    Ok((dx, dt, weight.map(|_| dw)))
}

/// Which IoU-family loss (the same four as `detect::loss::BoxLossKind`, which the engine maps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoxLossKernel {
    Iou = 0,
    Giou = 1,
    Ciou = 2,
    CiouTorchvision = 3,
}

/// Per-box loss of xyxy boxes `pred [n, 4]` against `target [n, 4]` and, in the same kernel,
/// `dpred = g · d loss / d pred` for the upstream gradient `g [n]`. Returns `(loss, dpred)`.
pub fn box_loss_fwd_bwd(
    dev: &CudaDevice,
    pred: &CudaSlice<f32>,
    target: &CudaSlice<f32>,
    g: &CudaSlice<f32>,
    kind: BoxLossKernel,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let sym = "box_loss_fwd_bwd_f32";
    let n = g.len();
    check_len(sym, "pred [n, 4] (xyxy)", pred, 4 * n)?;
    check_len(sym, "target [n, 4] (xyxy)", target, 4 * n)?;
    let n64 = to_i64(sym, n)?;
    let k = kind as i32;
    let (mut loss, mut dpred) = (dev.zeros(n)?, dev.zeros(4 * n)?);
    Kernel::new(dev, KernelFile::Loss, sym)
        .reads("pred", pred, 4 * n)
        .reads("target", target, 4 * n)
        .reads("g", g, n)
        .writes("loss", &mut loss, n)
        .writes("dpred", &mut dpred, 4 * n)
        .value(&n64)
        .value(&k)
        .launch(grid_1d(n))?;
    Ok((loss, dpred))
}
