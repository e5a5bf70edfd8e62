//! Box losses (IoU family) on `[N, 4]` xyxy boxes: IoU (YOLOX), GIoU, CIoU as mmdetection and as
//! torchvision compute it.
//!
//! They are composites of engine ops, so their gradients come from the ops' backward rules;
//! each returns one value per box (no reduction). On CUDA, with constant targets, one fused
//! kernel replaces the composite (`box_loss_cuda`).

use std::f32::consts::PI;

use crate::autograd::no_grad;
use crate::ops;
use crate::tensor::Tensor;
use crate::{Error, Result};

/// Which IoU-family loss regresses boxes (config names: iou, giou, ciou, ciou_tv).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxLossKind {
    /// YOLOX's default: `1 − IoU²`.
    Iou,
    /// YOLOX's optional GIoU: `1 − clamp(GIoU, −1, 1)`.
    Giou,
    /// mmdetection's CIoU (α gated by IoU > 0.5 and detached; eps 1e-6 on heights and unions).
    Ciou,
    /// torchvision's `complete_box_iou_loss` (no gate, no clamp, eps 1e-7).
    #[serde(rename = "ciou_tv")]
    CiouTorchvision,
}

impl BoxLossKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "iou" => Ok(BoxLossKind::Iou),
            "giou" => Ok(BoxLossKind::Giou),
            "ciou" => Ok(BoxLossKind::Ciou),
            "ciou_tv" => Ok(BoxLossKind::CiouTorchvision),
            other => Err(Error::InvalidArgument(format!(
                "unknown box loss `{other}` (iou, giou, ciou, ciou_tv)"
            ))),
        }
    }
}

/// Column `i` of an `[N, 4]` tensor as `[N]`.
fn col(t: &Tensor, i: usize) -> Result<Tensor> {
    ops::reshape(&ops::narrow(t, 1, i, 1)?, [t.dims()[0]])
}

/// `[N, 4]` cxcywh → xyxy (differentiable).
pub fn boxes_cxcywh_to_xyxy(b: &Tensor) -> Result<Tensor> {
    let (cx, cy, w, h) = (
        ops::narrow(b, 1, 0, 1)?,
        ops::narrow(b, 1, 1, 1)?,
        ops::narrow(b, 1, 2, 1)?,
        ops::narrow(b, 1, 3, 1)?,
    );
    let (hw, hh) = (ops::mul_scalar(&w, 0.5)?, ops::mul_scalar(&h, 0.5)?);
    ops::cat(
        &[
            ops::sub(&cx, &hw)?,
            ops::sub(&cy, &hh)?,
            ops::add(&cx, &hw)?,
            ops::add(&cy, &hh)?,
        ],
        1,
    )
}

struct Sides {
    x1: Tensor,
    y1: Tensor,
    x2: Tensor,
    y2: Tensor,
}

fn sides(b: &Tensor) -> Result<Sides> {
    Ok(Sides {
        x1: col(b, 0)?,
        y1: col(b, 1)?,
        x2: col(b, 2)?,
        y2: col(b, 3)?,
    })
}

/// Per-box loss between predicted and target xyxy boxes `[N, 4]` → `[N]`.
pub fn box_loss(pred_xyxy: &Tensor, target_xyxy: &Tensor, kind: BoxLossKind) -> Result<Tensor> {
    if pred_xyxy.rank() != 2 || pred_xyxy.dims()[1] != 4 || pred_xyxy.shape() != target_xyxy.shape()
    {
        return Err(Error::shape(
            "box_loss",
            "pred and target boxes [N, 4] (xyxy)",
            (pred_xyxy.shape(), target_xyxy.shape()),
        ));
    }
    if pred_xyxy.is_cuda() && !target_xyxy.requires_grad() {
        return box_loss_cuda(pred_xyxy, target_xyxy, kind);
    }
    let p = sides(pred_xyxy)?;
    let t = sides(target_xyxy)?;
    let zero_clamp = |x: &Tensor| ops::clamp(x, 0.0, f32::INFINITY);
    let inter_w = zero_clamp(&ops::sub(
        &ops::minimum(&p.x2, &t.x2)?,
        &ops::maximum(&p.x1, &t.x1)?,
    )?)?;
    let inter_h = zero_clamp(&ops::sub(
        &ops::minimum(&p.y2, &t.y2)?,
        &ops::maximum(&p.y1, &t.y1)?,
    )?)?;
    let inter = ops::mul(&inter_w, &inter_h)?;
    let (pw, ph) = (ops::sub(&p.x2, &p.x1)?, ops::sub(&p.y2, &p.y1)?);
    let (tw, th) = (ops::sub(&t.x2, &t.x1)?, ops::sub(&t.y2, &t.y1)?);
    let area_p = ops::mul(&pw, &ph)?;
    let area_t = ops::mul(&tw, &th)?;
    let union = ops::sub(&ops::add(&area_p, &area_t)?, &inter)?;
    // Enclosing box sides.
    let enc_w = ops::sub(&ops::maximum(&p.x2, &t.x2)?, &ops::minimum(&p.x1, &t.x1)?)?;
    let enc_h = ops::sub(&ops::maximum(&p.y2, &t.y2)?, &ops::minimum(&p.y1, &t.y1)?)?;
    match kind {
        BoxLossKind::Iou => {
            // yolox/models/losses.py IOUloss: iou = area_i / (area_p + area_g − area_i + 1e-16).
            let iou = ops::div(&inter, &ops::add_scalar(&union, 1e-16)?)?;
            ops::rsub_scalar(&ops::pow_scalar(&iou, 2.0)?, 1.0)
        }
        BoxLossKind::Giou => {
            let iou = ops::div(&inter, &ops::add_scalar(&union, 1e-16)?)?;
            let area_c = ops::mul(&enc_w, &enc_h)?;
            let penalty = ops::div(
                &ops::sub(&area_c, &union)?,
                &ops::clamp(&area_c, 1e-16, f32::INFINITY)?,
            )?;
            let giou = ops::sub(&iou, &penalty)?;
            ops::rsub_scalar(&ops::clamp(&giou, -1.0, 1.0)?, 1.0)
        }
        BoxLossKind::Ciou => ciou_mmdet(&p, &t, &inter, &area_p, &area_t, &enc_w, &enc_h, 1e-6),
        BoxLossKind::CiouTorchvision => {
            ciou_torchvision(&p, &t, &inter, &union, &enc_w, &enc_h, &pw, &ph, &tw, &th)
        }
    }
}

/// The CUDA arm of [`box_loss`] for constant targets (YOLOX's matched GT boxes): one fused
/// kernel (`box_loss_fwd_bwd_f32`, loss and d loss / d pred) run for the values in the forward
/// and again with the upstream gradient in the backward, instead of ~40 small ops each way.
/// Targets that require a gradient take the composite path, which differentiates them too.
fn box_loss_cuda(pred: &Tensor, target: &Tensor, kind: BoxLossKind) -> Result<Tensor> {
    use crate::backend::cuda::loss::{box_loss_fwd_bwd, BoxLossKernel};
    let kernel = match kind {
        BoxLossKind::Iou => BoxLossKernel::Iou,
        BoxLossKind::Giou => BoxLossKernel::Giou,
        BoxLossKind::Ciou => BoxLossKernel::Ciou,
        BoxLossKind::CiouTorchvision => BoxLossKernel::CiouTorchvision,
    };
    let n = pred.dims()[0];
    let (p, t) = (pred.cuda_owned()?, target.cuda_owned()?);
    let dev = crate::backend::cuda::device()?;
    let unit = dev.upload(&vec![1f32; n])?;
    let (loss, _) = box_loss_fwd_bwd(&dev, &p, &t, &unit, kernel)?;
    let out = Tensor::from_cuda(loss, [n])?;
    crate::autograd::record("box_loss", out, &[pred], move |g| {
        let (_, dpred) = g.with_cuda(|dev, gs| box_loss_fwd_bwd(dev, &p, &t, gs, kernel))?;
        Ok(vec![Some(Tensor::from_cuda(dpred, [n, 4])?)])
    })
}

/// Squared centre distance `((t1 + t2) − (p1 + p2))² / 4` summed over x and y.
fn centre_dist2(p: &Sides, t: &Sides) -> Result<Tensor> {
    let dx = ops::sub(&ops::add(&t.x1, &t.x2)?, &ops::add(&p.x1, &p.x2)?)?;
    let dy = ops::sub(&ops::add(&t.y1, &t.y2)?, &ops::add(&p.y1, &p.y2)?)?;
    ops::mul_scalar(
        &ops::add(&ops::pow_scalar(&dx, 2.0)?, &ops::pow_scalar(&dy, 2.0)?)?,
        0.25,
    )
}

/// `(4/π²)(atan(w2/h2) − atan(w1/h1))²`.
fn aspect_term(w1: &Tensor, h1: &Tensor, w2: &Tensor, h2: &Tensor) -> Result<Tensor> {
    let d = ops::sub(
        &ops::atan(&ops::div(w2, h2)?)?,
        &ops::atan(&ops::div(w1, h1)?)?,
    )?;
    ops::mul_scalar(&ops::pow_scalar(&d, 2.0)?, 4.0 / (PI * PI))
}

/// mmdet 3.x `ciou_loss` (docs/yolox.md §4).
#[allow(clippy::too_many_arguments)]
fn ciou_mmdet(
    p: &Sides,
    t: &Sides,
    inter: &Tensor,
    area_p: &Tensor,
    area_t: &Tensor,
    enc_w: &Tensor,
    enc_h: &Tensor,
    eps: f32,
) -> Result<Tensor> {
    let union = ops::add_scalar(&ops::sub(&ops::add(area_p, area_t)?, inter)?, eps)?;
    let iou = ops::div(inter, &union)?;
    let cw = ops::clamp(enc_w, 0.0, f32::INFINITY)?;
    let ch = ops::clamp(enc_h, 0.0, f32::INFINITY)?;
    let c2 = ops::add_scalar(
        &ops::add(&ops::pow_scalar(&cw, 2.0)?, &ops::pow_scalar(&ch, 2.0)?)?,
        eps,
    )?;
    // eps only on the heights (mmdet).
    let (w1, h1) = (
        ops::sub(&p.x2, &p.x1)?,
        ops::add_scalar(&ops::sub(&p.y2, &p.y1)?, eps)?,
    );
    let (w2, h2) = (
        ops::sub(&t.x2, &t.x1)?,
        ops::add_scalar(&ops::sub(&t.y2, &t.y1)?, eps)?,
    );
    let rho2 = centre_dist2(p, t)?;
    let v = aspect_term(&w1, &h1, &w2, &h2)?;
    // α = [IoU > 0.5]·v/(1 − IoU + v), computed under no_grad (detached), no eps.
    let alpha = no_grad(|| -> Result<Tensor> {
        let (iv, vv) = (iou.to_vec(), v.to_vec());
        let a: Vec<f32> = iv
            .iter()
            .zip(&vv)
            .map(|(&i, &v)| if i > 0.5 { v / (1.0 - i + v) } else { 0.0 })
            .collect();
        Tensor::from_vec(a, iou.shape().clone())
    })?;
    let ciou = ops::sub(
        &iou,
        &ops::add(&ops::div(&rho2, &c2)?, &ops::mul(&alpha, &v)?)?,
    )?;
    ops::rsub_scalar(&ops::clamp(&ciou, -1.0, 1.0)?, 1.0)
}

/// torchvision `complete_box_iou_loss(reduction="none", eps=1e-7)` (docs/yolox.md §4).
#[allow(clippy::too_many_arguments)]
fn ciou_torchvision(
    p: &Sides,
    t: &Sides,
    inter: &Tensor,
    union: &Tensor,
    enc_w: &Tensor,
    enc_h: &Tensor,
    pw: &Tensor,
    ph: &Tensor,
    tw: &Tensor,
    th: &Tensor,
) -> Result<Tensor> {
    let eps = 1e-7;
    let iou = ops::div(inter, &ops::add_scalar(union, eps)?)?;
    let diag2 = ops::add_scalar(
        &ops::add(&ops::pow_scalar(enc_w, 2.0)?, &ops::pow_scalar(enc_h, 2.0)?)?,
        eps,
    )?;
    let dist2 = centre_dist2(p, t)?;
    let diou_loss = ops::add(&ops::rsub_scalar(&iou, 1.0)?, &ops::div(&dist2, &diag2)?)?;
    let v = aspect_term(pw, ph, tw, th)?;
    let alpha = no_grad(|| -> Result<Tensor> {
        let (iv, vv) = (iou.to_vec(), v.to_vec());
        let a: Vec<f32> = iv
            .iter()
            .zip(&vv)
            .map(|(&i, &v)| v / (1.0 - i + v + eps))
            .collect();
        Tensor::from_vec(a, iou.shape().clone())
    })?;
    ops::add(&diou_loss, &ops::mul(&alpha, &v)?)
}
