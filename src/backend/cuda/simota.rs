//! Launchers of `kernels/simota.cu`: SimOTA for one image on the GPU (cost matrix, dynamic k,
//! conflict resolution). CPU twin: `src/detect/simota.rs` (`simota_assign`).
//!
//! Predictions stay on the device; the few ground-truth boxes come from the host (the loader),
//! so their classes are checked here before anything is launched.

use cudarc::driver::CudaSlice;

use super::context::{grid_1d, grid_per_item, CudaDevice};
use super::launch::Kernel;
use super::{check_len, to_i64, KernelFile};
use crate::{Error, Result};

/// Which prior (as `detect::simota::SimOtaMode`, mapped by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimOtaPrior {
    /// In box OR within radius of the centre; penalty 1e5 unless both.
    Release = 0,
    /// Within radius of the centre only; penalty 1e6 outside.
    Centre2023 = 1,
}

/// One image's device inputs (A anchors, C classes).
pub struct SimOtaDeviceInput<'a> {
    /// `[A, 4]` cxcywh.
    pub pred_boxes: &'a CudaSlice<f32>,
    /// `[A, C]`.
    pub cls_logits: &'a CudaSlice<f32>,
    /// `[A]`.
    pub obj_logits: &'a CudaSlice<f32>,
    /// `[A, 2]` grid cell (gx, gy).
    pub grids: &'a CudaSlice<f32>,
    /// `[A]`.
    pub strides: &'a CudaSlice<f32>,
    pub num_anchors: usize,
    pub num_classes: usize,
}

/// The cost matrix stage: `cost [G, A]` (+inf off the candidates), `iou [G, A]`, `cand [A]`.
pub struct SimOtaCost {
    pub cost: CudaSlice<f32>,
    pub iou: CudaSlice<f32>,
    pub cand: CudaSlice<i32>,
    pub num_gt: usize,
}

/// The result: `matched [A]` (GT index, −1 for background) and `pred_iou [A]`.
pub struct SimOtaDeviceAssignment {
    pub matched: CudaSlice<i32>,
    pub pred_iou: CudaSlice<f32>,
}

/// Cost matrix of one image. `gt_boxes` are cxcywh with positive sizes, classes in `0..C`.
pub fn cost(
    dev: &CudaDevice,
    inp: &SimOtaDeviceInput,
    gt_boxes: &[[f32; 4]],
    gt_classes: &[usize],
    prior: SimOtaPrior,
    center_radius: f32,
) -> Result<SimOtaCost> {
    let sym = "simota_cost_f32";
    let (a, c, g) = (inp.num_anchors, inp.num_classes, gt_boxes.len());
    check_len(sym, "pred_boxes [A, 4]", inp.pred_boxes, 4 * a)?;
    check_len(sym, "cls_logits [A, C]", inp.cls_logits, a * c)?;
    check_len(sym, "obj_logits [A]", inp.obj_logits, a)?;
    check_len(sym, "grids [A, 2]", inp.grids, 2 * a)?;
    check_len(sym, "strides [A]", inp.strides, a)?;
    if gt_classes.len() != g {
        return Err(Error::shape(
            sym,
            format!("{g} gt classes"),
            gt_classes.len(),
        ));
    }
    if c == 0 && g > 0 {
        return Err(Error::op(sym, "num_classes is 0"));
    }
    for (i, (b, &k)) in gt_boxes.iter().zip(gt_classes).enumerate() {
        if !(b[2] > 0.0 && b[3] > 0.0) || b.iter().any(|v| !v.is_finite()) {
            return Err(Error::op(
                sym,
                format!("gt box {i} {b:?} (cxcywh) has no positive width and height"),
            ));
        }
        if k >= c {
            return Err(Error::op(
                sym,
                format!("gt class {k} of box {i} is not in 0..{c}"),
            ));
        }
    }
    if !center_radius.is_finite() || center_radius < 0.0 {
        return Err(Error::op(sym, format!("bad center radius {center_radius}")));
    }
    let flat: Vec<f32> = gt_boxes.iter().flatten().copied().collect();
    let classes: Vec<i32> = gt_classes.iter().map(|&k| k as i32).collect();
    let gt = dev.upload(&flat)?;
    let gt_cls = dev.upload(&classes)?;
    let (mut cost, mut iou, mut cand) = (dev.zeros(g * a)?, dev.zeros(g * a)?, dev.zeros_i32(a)?);
    if a == 0 {
        return Ok(SimOtaCost {
            cost,
            iou,
            cand,
            num_gt: g,
        });
    }
    let (a64, g64, c64) = (to_i64(sym, a)?, to_i64(sym, g)?, to_i64(sym, c)?);
    let mode = prior as i32;
    // With no GT the kernel never reads gt / gt_cls; pass the (empty) buffers all the same.
    Kernel::new(dev, KernelFile::Simota, sym)
        .reads("pred_boxes [A, 4]", inp.pred_boxes, 4 * a)
        .reads("cls_logits [A, C]", inp.cls_logits, a * c)
        .reads("obj_logits [A]", inp.obj_logits, a)
        .reads("grids [A, 2]", inp.grids, 2 * a)
        .reads("strides [A]", inp.strides, a)
        .reads("gt [G, 4]", &gt, 4 * g)
        .reads("gt classes [G]", &gt_cls, g)
        .writes("cost [G, A]", &mut cost, g * a)
        .writes("iou [G, A]", &mut iou, g * a)
        .writes("cand [A]", &mut cand, a)
        .value(&a64)
        .value(&g64)
        .value(&c64)
        .value(&mode)
        .value(&center_radius)
        .launch(grid_1d(a))?;
    Ok(SimOtaCost {
        cost,
        iou,
        cand,
        num_gt: g,
    })
}

/// Dynamic-k selection and conflict resolution on a cost matrix.
pub fn assign_from_cost(dev: &CudaDevice, m: &SimOtaCost) -> Result<SimOtaDeviceAssignment> {
    let a = m.cand.len();
    let g = m.num_gt;
    check_len("simota_dynamic_k_f32", "cost [G, A]", &m.cost, g * a)?;
    check_len("simota_dynamic_k_f32", "iou [G, A]", &m.iou, g * a)?;
    let mut matched = dev.zeros_i32(a)?;
    let mut pred_iou = dev.zeros(a)?;
    if a == 0 {
        return Ok(SimOtaDeviceAssignment { matched, pred_iou });
    }
    let (a64, g64) = (to_i64("simota", a)?, to_i64("simota", g)?);
    let mut picked = dev.zeros_i32(g * a)?;
    if g > 0 {
        let sym = "simota_dynamic_k_f32";
        Kernel::new(dev, KernelFile::Simota, sym)
            .reads("cost [G, A]", &m.cost, g * a)
            .reads("iou [G, A]", &m.iou, g * a)
            .reads("cand [A]", &m.cand, a)
            .writes("picked [G, A]", &mut picked, g * a)
            .value(&a64)
            .value(&g64)
            .launch(grid_per_item(g))?;
    }
    let sym = "simota_resolve_f32";
    Kernel::new(dev, KernelFile::Simota, sym)
        .reads("cost [G, A]", &m.cost, g * a)
        .reads("iou [G, A]", &m.iou, g * a)
        .reads("picked [G, A]", &picked, g * a)
        .writes("matched [A]", &mut matched, a)
        .writes("pred_iou [A]", &mut pred_iou, a)
        .value(&a64)
        .value(&g64)
        .launch(grid_1d(a))?;
    Ok(SimOtaDeviceAssignment { matched, pred_iou })
}

/// The whole assignment of one image.
pub fn assign(
    dev: &CudaDevice,
    inp: &SimOtaDeviceInput,
    gt_boxes: &[[f32; 4]],
    gt_classes: &[usize],
    prior: SimOtaPrior,
    center_radius: f32,
) -> Result<SimOtaDeviceAssignment> {
    let m = cost(dev, inp, gt_boxes, gt_classes, prior, center_radius)?;
    assign_from_cost(dev, &m)
}

/// Host form of an assignment (as `detect::simota::Assignment`): fg mask, matched GT and IoU
/// of each foreground anchor in anchor order.
pub fn download_assignment(
    dev: &CudaDevice,
    a: &SimOtaDeviceAssignment,
) -> Result<(Vec<bool>, Vec<usize>, Vec<f32>)> {
    let matched = dev.download(&a.matched)?;
    let ious = dev.download(&a.pred_iou)?;
    let fg: Vec<bool> = matched.iter().map(|&m| m >= 0).collect();
    let gts = matched
        .iter()
        .filter(|&&m| m >= 0)
        .map(|&m| m as usize)
        .collect();
    let pious = matched
        .iter()
        .zip(&ious)
        .filter(|(&m, _)| m >= 0)
        .map(|(_, &v)| v)
        .collect();
    Ok((fg, gts, pious))
}
