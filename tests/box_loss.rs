//! IoU-family box losses: forward against f64 references written from docs/yolox.md §4,
//! backward against central finite differences; the disjoint-box gradients (IoU: zero, CIoU:
//! pulls the boxes together); the YOLOX loss on a tiny hand-made case.

mod common;

use common::{c, check_with, xv, Tol};
use ssod::detect::loss::{box_loss, yolox_loss, BoxLossKind, ImageTargets, YoloxLossConfig};
use ssod::Tensor;

const PI: f64 = std::f64::consts::PI;

/// Reference per-box loss of `kind`; `alpha_from` gives the boxes CIoU's detached α is computed on.
fn reference(kind: BoxLossKind, p: &[f64], t: &[f64], alpha_from: (&[f64], &[f64])) -> f64 {
    let (px1, py1, px2, py2) = (p[0], p[1], p[2], p[3]);
    let (tx1, ty1, tx2, ty2) = (t[0], t[1], t[2], t[3]);
    let iw = (px2.min(tx2) - px1.max(tx1)).max(0.0);
    let ih = (py2.min(ty2) - py1.max(ty1)).max(0.0);
    let inter = iw * ih;
    let ap = (px2 - px1) * (py2 - py1);
    let at = (tx2 - tx1) * (ty2 - ty1);
    let union = ap + at - inter;
    let cw = px2.max(tx2) - px1.min(tx1);
    let ch = py2.max(ty2) - py1.min(ty1);
    let rho2 =
        ((tx1 + tx2) - (px1 + px2)).powi(2) / 4.0 + ((ty1 + ty2) - (py1 + py2)).powi(2) / 4.0;
    match kind {
        BoxLossKind::Iou => 1.0 - (inter / (union + 1e-16)).powi(2),
        BoxLossKind::Giou => {
            let iou = inter / (union + 1e-16);
            let area_c = cw * ch;
            1.0 - (iou - (area_c - union) / area_c.max(1e-16)).clamp(-1.0, 1.0)
        }
        BoxLossKind::Ciou => {
            let eps = 1e-6;
            let v_of = |p: &[f64], t: &[f64]| {
                (4.0 / (PI * PI))
                    * ((t[2] - t[0]) / (t[3] - t[1] + eps))
                        .atan()
                        .sub_atan((p[2] - p[0]) / (p[3] - p[1] + eps))
                        .powi(2)
            };
            let iou_of = |p: &[f64], t: &[f64]| {
                let inter = (p[2].min(t[2]) - p[0].max(t[0])).max(0.0)
                    * (p[3].min(t[3]) - p[1].max(t[1])).max(0.0);
                inter
                    / ((p[2] - p[0]) * (p[3] - p[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter + eps)
            };
            let iou = iou_of(p, t);
            let (a_iou, a_v) = (
                iou_of(alpha_from.0, alpha_from.1),
                v_of(alpha_from.0, alpha_from.1),
            );
            let alpha = if a_iou > 0.5 {
                a_v / (1.0 - a_iou + a_v)
            } else {
                0.0
            };
            let c2 = cw.max(0.0).powi(2) + ch.max(0.0).powi(2) + eps;
            1.0 - (iou - (rho2 / c2 + alpha * v_of(p, t))).clamp(-1.0, 1.0)
        }
        BoxLossKind::CiouTorchvision => {
            let eps = 1e-7;
            let v_of = |p: &[f64], t: &[f64]| {
                (4.0 / (PI * PI))
                    * ((t[2] - t[0]) / (t[3] - t[1]))
                        .atan()
                        .sub_atan((p[2] - p[0]) / (p[3] - p[1]))
                        .powi(2)
            };
            let iou_of = |p: &[f64], t: &[f64]| {
                let inter = (p[2].min(t[2]) - p[0].max(t[0])).max(0.0)
                    * (p[3].min(t[3]) - p[1].max(t[1])).max(0.0);
                inter
                    / ((p[2] - p[0]) * (p[3] - p[1]) + (t[2] - t[0]) * (t[3] - t[1]) - inter + eps)
            };
            let iou = iou_of(p, t);
            let (a_iou, a_v) = (
                iou_of(alpha_from.0, alpha_from.1),
                v_of(alpha_from.0, alpha_from.1),
            );
            let alpha = a_v / (1.0 - a_iou + a_v + eps);
            let diag2 = cw.powi(2) + ch.powi(2) + eps;
            1.0 - iou + rho2 / diag2 + alpha * v_of(p, t)
        }
    }
}

trait SubAtan {
    fn sub_atan(self, other: f64) -> f64;
}
impl SubAtan for f64 {
    /// `self` is already atan(w2/h2); subtract atan(other).
    fn sub_atan(self, other: f64) -> f64 {
        self - other.atan()
    }
}

/// Pairs: overlapping with IoU > 0.5, overlapping with IoU < 0.5, disjoint, nested.
fn boxes() -> (Vec<f32>, Vec<f32>) {
    let pred = vec![
        10.0, 12.0, 30.0, 35.0, // IoU with its target ≈ 0.7
        0.0, 0.0, 10.0, 8.0, // partial overlap, IoU < 0.5
        50.0, 50.0, 60.0, 58.0, // disjoint from its target
        5.0, 5.0, 25.0, 30.0, // contains its target
    ];
    let target = vec![
        11.0, 14.0, 32.0, 36.0, //
        6.0, 3.0, 20.0, 15.0, //
        0.0, 0.0, 12.0, 9.0, //
        10.0, 12.0, 20.0, 22.0, //
    ];
    (pred, target)
}

#[test]
fn box_losses_match_references_and_finite_differences() {
    let (pred, target) = boxes();
    let tol = Tol {
        fwd: 1e-5,
        bwd_rel: 2e-3,
        bwd_abs: 2e-4,
    };
    for kind in [
        BoxLossKind::Iou,
        BoxLossKind::Giou,
        BoxLossKind::Ciou,
        BoxLossKind::CiouTorchvision,
    ] {
        let (p0, t0) = (
            pred.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            target.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        check_with(
            &format!("box_loss {kind:?}"),
            tol,
            &[xv(pred.clone(), &[4, 4]), c(target.clone(), &[4, 4])],
            move |t| box_loss(&t[0], &t[1], kind),
            move |v| {
                (0..4)
                    .map(|i| {
                        reference(
                            kind,
                            &v[0][i * 4..i * 4 + 4],
                            &v[1][i * 4..i * 4 + 4],
                            (&p0[i * 4..i * 4 + 4], &t0[i * 4..i * 4 + 4]),
                        )
                    })
                    .collect()
            },
        );
    }
}

#[test]
fn disjoint_boxes_iou_gives_no_gradient_ciou_pulls_together() {
    // pred right of and below target: the CIoU gradient on pred's x1 must be positive
    // (decreasing x1 lowers the loss: moving left towards the target); IoU's is exactly zero.
    let pred = Tensor::from_vec(vec![50.0, 50.0, 60.0, 58.0], [1, 4])
        .unwrap()
        .with_requires_grad(true);
    let target = Tensor::from_vec(vec![0.0, 0.0, 12.0, 9.0], [1, 4]).unwrap();
    box_loss(&pred, &target, BoxLossKind::Iou)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(
        pred.grad().unwrap().to_vec().iter().all(|&g| g == 0.0),
        "IoU loss has no gradient for disjoint boxes"
    );
    for kind in [
        BoxLossKind::Ciou,
        BoxLossKind::CiouTorchvision,
        BoxLossKind::Giou,
    ] {
        let pred = Tensor::from_vec(vec![50.0, 50.0, 60.0, 58.0], [1, 4])
            .unwrap()
            .with_requires_grad(true);
        box_loss(&pred, &target, kind)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = pred.grad().unwrap().to_vec();
        // A gradient step (−g) must move the centre towards the target (left and up).
        let centre_dx = -(g[0] + g[2]);
        let centre_dy = -(g[1] + g[3]);
        assert!(
            centre_dx < 0.0 && centre_dy < 0.0,
            "{kind:?}: gradient {g:?} does not pull the box towards the target"
        );
    }
}

#[test]
fn box_loss_rejects_bad_shapes() {
    let err = box_loss(
        &Tensor::zeros([3, 4]),
        &Tensor::zeros([2, 4]),
        BoxLossKind::Iou,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("box_loss") && err.contains("[3, 4]") && err.contains("[2, 4]"),
        "{err}"
    );
    assert!(BoxLossKind::parse("diou").is_err());
}

#[test]
fn yolox_loss_on_a_hand_made_case() {
    // One image, one class, 4×4 grid at stride 8 (32×32 input), one GT centred on anchor (1,1)
    // with the prediction of anchors (1,1) equal to the GT box: SimOTA picks only that anchor
    // (top-10 IoU sum = 1 → k = 1), IoU loss 0.
    let grid: Vec<(f32, f32, f32)> = (0..16)
        .map(|i| ((i % 4) as f32, (i / 4) as f32, 8.0))
        .collect();
    let gt = [12.0f32, 12.0, 8.0, 8.0];
    let mut raw = vec![0f32; 16 * 6];
    let mut decoded = vec![0f32; 16 * 4];
    for a in 0..16 {
        // Far-away tiny predictions everywhere else.
        decoded[a * 4..a * 4 + 4].copy_from_slice(&[500.0, 500.0, 1.0, 1.0]);
    }
    decoded[5 * 4..5 * 4 + 4].copy_from_slice(&gt);
    raw[5 * 6 + 4] = 2.0; // obj logit of the matching anchor
    let raw_t = Tensor::from_vec(raw, [1, 16, 6])
        .unwrap()
        .with_requires_grad(true);
    let dec_t = Tensor::from_vec(decoded, [1, 16, 4]).unwrap();
    let targets = vec![ImageTargets {
        classes: vec![0],
        boxes_cxcywh: vec![gt],
    }];
    let out = yolox_loss(&raw_t, &dec_t, &grid, &targets, &YoloxLossConfig::default()).unwrap();
    assert_eq!(out.num_fg, 1);
    assert!(out.iou.abs() < 1e-6, "iou loss {}", out.iou);
    // obj: BCE(2, 1) + 15·BCE(0, 0) = ln(1 + e^-2) + 15·ln 2; cls: BCE(0, IoU = 1) = ln 2.
    let want_obj = (1.0f64 + (-2.0f64).exp()).ln() + 15.0 * 2f64.ln();
    assert!(
        (out.obj as f64 - want_obj).abs() < 1e-4,
        "obj {} vs {want_obj}",
        out.obj
    );
    assert!((out.cls as f64 - 2f64.ln()).abs() < 1e-5, "cls {}", out.cls);
    let total = out.total.item().unwrap() as f64;
    assert!((total - (want_obj + 2f64.ln())).abs() < 1e-4);
    out.total.backward().unwrap();
    // d/d obj_logit of anchor 5 = σ(2) − 1 (divided by num_fg = 1).
    let g = raw_t.grad().unwrap().to_vec();
    let sig2 = 1.0 / (1.0 + (-2.0f32).exp());
    assert!((g[5 * 6 + 4] - (sig2 - 1.0)).abs() < 1e-6);
    // Background anchors get σ(0) − 0 = 0.5 on obj and nothing on cls.
    assert!((g[4] - 0.5).abs() < 1e-6 && g[5] == 0.0);
}
