//! SimOTA on hand-built cases (docs/yolox.md §3): no GT, a GT with no candidate anchor, dynamic k,
//! two GTs competing for one anchor, the tiny-object case the study describes, the 2023 variant,
//! and bad input.

use ssod::detect::simota::{iou_cxcywh, simota_assign, Assignment, SimOtaConfig, SimOtaInput};

/// 8×8 grid at stride 8 (a 64×64 input), one class, all logits 0 (equal class costs), every
/// prediction a far-away 1×1 box unless overridden.
struct Case {
    grids: Vec<(f32, f32)>,
    strides: Vec<f32>,
    preds: Vec<[f32; 4]>,
    cls: Vec<f32>,
    obj: Vec<f32>,
}

impl Case {
    fn new() -> Self {
        let grids = (0..64).map(|i| ((i % 8) as f32, (i / 8) as f32)).collect();
        Case {
            grids,
            strides: vec![8.0; 64],
            preds: vec![[1000.0, 1000.0, 1.0, 1.0]; 64],
            cls: vec![0.0; 64],
            obj: vec![0.0; 64],
        }
    }
    fn anchor(gx: usize, gy: usize) -> usize {
        gy * 8 + gx
    }
    fn assign(&self, gt: &[[f32; 4]], classes: &[usize], cfg: &SimOtaConfig) -> Assignment {
        simota_assign(
            &SimOtaInput {
                pred_boxes_cxcywh: &self.preds,
                cls_logits: &self.cls,
                obj_logits: &self.obj,
                grids: &self.grids,
                strides: &self.strides,
                gt_boxes_cxcywh: gt,
                gt_classes: classes,
                num_classes: 1,
            },
            cfg,
        )
        .unwrap()
    }
}

#[test]
fn no_gt_means_no_foreground() {
    let a = Case::new().assign(&[], &[], &SimOtaConfig::default());
    assert_eq!(a.num_fg, 0);
    assert_eq!(a.fg_mask.len(), 64);
    assert!(a.fg_mask.iter().all(|&f| !f));
}

#[test]
fn gt_with_no_candidate_anchor_gets_nothing_and_no_error() {
    // A GT far outside the grid: no anchor centre is in its box or within 2.5 strides.
    let a = Case::new().assign(
        &[[400.0, 400.0, 10.0, 10.0]],
        &[0],
        &SimOtaConfig::default(),
    );
    assert_eq!(a.num_fg, 0);
    let a = Case::new().assign(
        &[[400.0, 400.0, 10.0, 10.0]],
        &[0],
        &SimOtaConfig::centre_2023(),
    );
    assert_eq!(a.num_fg, 0);
}

#[test]
fn dynamic_k_follows_the_iou_sum() {
    // GT 20..44 on both axes; anchor centres 28 and 36 (gx, gy ∈ {3, 4}) are inside it.
    // Those four anchors predict the GT exactly (IoU 1): Σ top-10 IoU = 4 → k = 4, and they are
    // the four cheapest (IoU cost 0).
    let mut case = Case::new();
    let gt = [32.0, 32.0, 24.0, 24.0];
    let picked: Vec<usize> = [(3, 3), (4, 3), (3, 4), (4, 4)]
        .iter()
        .map(|&(x, y)| Case::anchor(x, y))
        .collect();
    for &a in &picked {
        case.preds[a] = gt;
    }
    let a = case.assign(&[gt], &[0], &SimOtaConfig::default());
    assert_eq!(a.fg_indices(), picked);
    assert_eq!(a.matched_gt, vec![0; 4]);
    assert!(a.pred_ious.iter().all(|&v| (v - 1.0).abs() < 1e-6));
    // With IoU 0.9 each the sum is 3.6 → int → k = 3: the three lowest-index anchors win the
    // (equal-cost) tie, as the stable sort documents.
    let mut case = Case::new();
    let slightly_off = [32.0, 32.0, 24.0 * 0.9f32.sqrt(), 24.0 * 0.9f32.sqrt()]; // area ratio 0.9 inside
    for &a in &picked {
        case.preds[a] = slightly_off;
    }
    assert!((iou_cxcywh(&gt, &slightly_off) - 0.9).abs() < 1e-5);
    let a = case.assign(&[gt], &[0], &SimOtaConfig::default());
    assert_eq!(a.num_fg, 3);
    assert_eq!(a.fg_indices(), picked[..3].to_vec());
}

#[test]
fn two_gts_competing_for_one_anchor_go_to_the_cheaper() {
    // GT0 = 20..36, GT1 = 22..38 × 20..36. Anchor (3,3) predicts GT0 exactly: IoU 1 with GT0,
    // 224/288 = 0.778 with GT1. Both GTs have k = 1 and both pick that anchor (every other
    // prediction has IoU 0); the conflict goes to GT0, whose cost is lower. GT1 is left without
    // an anchor, as in YOLOX (no reassignment).
    let mut case = Case::new();
    let gt0 = [28.0, 28.0, 16.0, 16.0];
    let gt1 = [30.0, 28.0, 16.0, 16.0];
    let x = Case::anchor(3, 3);
    case.preds[x] = gt0;
    assert!((iou_cxcywh(&gt1, &gt0) - 224.0 / 288.0).abs() < 1e-6);
    let a = case.assign(&[gt0, gt1], &[0, 0], &SimOtaConfig::default());
    assert_eq!(a.fg_indices(), vec![x]);
    assert_eq!(a.matched_gt, vec![0]);
    assert_eq!(a.num_fg, 1);
    // Swap the order of the GTs: the anchor follows GT0 to index 1.
    let a = case.assign(&[gt1, gt0], &[0, 0], &SimOtaConfig::default());
    assert_eq!(a.matched_gt, vec![1]);
}

#[test]
fn tiny_gt_gets_a_positive_whose_anchor_centre_is_outside_it() {
    // The study's point (docs/the-study.md, "The CIoU change"): a 2×2 GT between anchor centres
    // has no anchor inside its box, yet the release assigner still gives it k = 1 positive (penalised but cheapest).
    let mut case = Case::new();
    let gt = [30.0, 30.0, 2.0, 2.0]; // box 29..31
    let x = Case::anchor(3, 3); // centre (28, 28): outside the box
    case.preds[x] = [30.0, 30.0, 4.0, 4.0]; // IoU 4/16 = 0.25 with the GT
    let a = case.assign(&[gt], &[0], &SimOtaConfig::default());
    assert_eq!(a.fg_indices(), vec![x]);
    assert!((a.pred_ious[0] - 0.25).abs() < 1e-6);
    // The 2023 variant uses the centre prior only (radius 1.5): (28, 28) is within 12 px of
    // (30, 30), so the same anchor wins without a penalty.
    let a = case.assign(&[gt], &[0], &SimOtaConfig::centre_2023());
    assert_eq!(a.fg_indices(), vec![x]);
}

#[test]
fn class_cost_prefers_confident_anchors() {
    // Two anchors inside the GT predict it equally well; the one with a higher class and
    // objectness score is cheaper, so with k = 1 it wins.
    let mut case = Case::new();
    let gt = [32.0, 32.0, 16.0, 16.0];
    let (a1, a2) = (Case::anchor(3, 3), Case::anchor(4, 4));
    let pred = [32.0, 32.0, 8.0, 8.0]; // IoU 0.25 each → Σ = 0.5 → k = 1
    case.preds[a1] = pred;
    case.preds[a2] = pred;
    case.cls[a2] = 3.0;
    case.obj[a2] = 3.0;
    let a = case.assign(&[gt], &[0], &SimOtaConfig::default());
    assert_eq!(a.fg_indices(), vec![a2]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let case = Case::new();
    let run = |gt: &[[f32; 4]], classes: &[usize], preds: &[[f32; 4]]| {
        simota_assign(
            &SimOtaInput {
                pred_boxes_cxcywh: preds,
                cls_logits: &case.cls,
                obj_logits: &case.obj,
                grids: &case.grids,
                strides: &case.strides,
                gt_boxes_cxcywh: gt,
                gt_classes: classes,
                num_classes: 1,
            },
            &SimOtaConfig::default(),
        )
    };
    let e = run(&[[10.0, 10.0, 0.0, 5.0]], &[0], &case.preds)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gt box 0"), "{e}");
    let e = run(&[[10.0, 10.0, 4.0, 5.0]], &[3], &case.preds)
        .unwrap_err()
        .to_string();
    assert!(e.contains("gt class 3"), "{e}");
    let mut nan = case.preds.clone();
    nan[7][0] = f32::NAN;
    let e = run(&[[10.0, 10.0, 4.0, 5.0]], &[0], &nan)
        .unwrap_err()
        .to_string();
    assert!(e.contains("anchor 7"), "{e}");
    let e = run(&[[10.0, 10.0, 4.0, 5.0]], &[0], &case.preds[..10])
        .unwrap_err()
        .to_string();
    assert!(e.contains("simota_assign"), "{e}");
}
