//! Zero-size boxes as YOLOX trains on them: a mosaic whose boxes all vanish falls back to the
//! original with every box (mostly lines on the border), `yolo_head` counts the label rows
//! whose sum is positive, SimOTA gives each one anchor of its centre prior, and the loss
//! counts it as a foreground with objectness target 1, class target 0 and box loss 1 (no
//! gradient), whatever the box-loss kind.

use image::{Rgb, RgbImage};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use ssod::data::augment::{train_transform, yolox_label_rows, AugmentConfig, Sample};
use ssod::detect::loss::{yolox_loss, BoxLossKind, ImageTargets, YoloxLossConfig};
use ssod::detect::simota::{
    simota_assign, simota_assign_with_zero_size, SimOtaConfig, SimOtaInput,
};
use ssod::tensor::Tensor;

fn sample(boxes_xyxy: &[[f32; 4]], classes: &[u32]) -> Sample {
    Sample {
        image: RgbImage::from_pixel(64, 64, Rgb([20, 30, 40])),
        boxes_xyxy: boxes_xyxy.to_vec(),
        classes: classes.to_vec(),
    }
}

#[test]
fn a_fallback_keeps_every_box_of_the_original_zero_size_ones_too() {
    // What a mosaic hands over when its boxes left the view: lines on the border (x = 0, y = 64,
    // x = 64) and a 0.5-px sliver. None passes min(w, h) > 1, so the original is used with all
    // four boxes (YOLOX TrainTransform's fallback); ssod used to drop the three lines.
    let boxes = [
        [0.0, 10.0, 0.0, 30.0],
        [5.0, 64.0, 25.0, 64.0],
        [64.0, 0.0, 64.0, 12.0],
        [30.0, 30.0, 30.5, 40.0],
    ];
    let cfg = AugmentConfig::none(64, 64);
    let a = train_transform(
        sample(&boxes, &[0; 4]),
        &cfg,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    assert!(a.fell_back);
    assert_eq!(
        a.boxes_cxcywh,
        vec![
            [0.0, 20.0, 0.0, 20.0],
            [15.0, 64.0, 20.0, 0.0],
            [64.0, 6.0, 0.0, 12.0],
            [30.25, 35.0, 0.5, 10.0],
        ]
    );
    assert_eq!(a.classes, vec![0; 4]);
}

#[test]
fn label_rows_are_counted_as_yolo_head_counts_them() {
    // A class-0 box clipped to the origin sums to 0: not counted, and (YOLOX takes the first
    // nlabel rows) the last row goes instead. Of class 1 it sums to 1 and counts.
    let boxes = [
        [0.0, 0.0, 0.0, 0.0],
        [0.0, 10.0, 0.0, 30.0],
        [64.0, 5.0, 64.0, 9.0],
    ];
    assert_eq!(yolox_label_rows(&boxes, &[0, 0, 0]), 2);
    assert_eq!(yolox_label_rows(&boxes, &[1, 0, 0]), 3);
    let cfg = AugmentConfig::none(64, 64);
    let a = train_transform(
        sample(&boxes, &[0, 0, 0]),
        &cfg,
        &mut ChaCha8Rng::seed_from_u64(0),
    );
    assert!(a.fell_back);
    assert_eq!(
        a.boxes_cxcywh,
        vec![[0.0, 0.0, 0.0, 0.0], [0.0, 20.0, 0.0, 20.0]]
    );
}

/// Anchor grid cells, their strides and one predicted cxcywh box per anchor.
type AnchorCase = (Vec<(f32, f32)>, Vec<f32>, Vec<[f32; 4]>);

/// 8×8 anchors at stride 8, one class; every prediction a 4×4 box on its anchor.
fn grid() -> AnchorCase {
    let grids: Vec<(f32, f32)> = (0..64).map(|i| ((i % 8) as f32, (i / 8) as f32)).collect();
    let preds = grids
        .iter()
        .map(|&(x, y)| [x * 8.0 + 4.0, y * 8.0 + 4.0, 4.0, 4.0])
        .collect();
    (grids, vec![8.0; 64], preds)
}

#[test]
fn simota_gives_a_zero_size_box_the_most_confident_anchor_of_its_centre_prior() {
    let (grids, strides, preds) = grid();
    let mut obj = vec![0.0f32; 64];
    obj[8 + 1] = 3.0; // anchor (1, 1): within 2.5 strides of (0, 20)
    obj[63] = 9.0; // far away: not a candidate
    let cls = vec![0.0f32; 64];
    let input = |gt: &'static [[f32; 4]]| SimOtaInput {
        pred_boxes_cxcywh: &preds,
        cls_logits: &cls,
        obj_logits: &obj,
        grids: &grids,
        strides: &strides,
        gt_boxes_cxcywh: gt,
        gt_classes: &[0],
        num_classes: 1,
    };
    let cfg = SimOtaConfig::default();
    let a = simota_assign_with_zero_size(&input(&[[0.0, 20.0, 0.0, 20.0]]), &cfg).unwrap();
    // IoU 0 with every prediction: dynamic k = 1, the cheapest (most confident) candidate.
    assert_eq!(a.num_fg, 1);
    assert!(a.fg_mask[9]);
    assert_eq!(
        (a.matched_gt.clone(), a.pred_ious.clone()),
        (vec![0], vec![0.0])
    );
    // A negative size is still refused, and the plain assigner keeps refusing zero size.
    let err = simota_assign_with_zero_size(&input(&[[0.0, 20.0, -1.0, 20.0]]), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("negative"), "{err}");
    let err = simota_assign(&input(&[[0.0, 20.0, 0.0, 20.0]]), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no positive width"), "{err}");
}

#[test]
fn the_loss_counts_a_zero_size_box_with_box_loss_one_and_no_box_gradient() {
    let (grids, _, preds) = grid();
    let grid3: Vec<(f32, f32, f32)> = grids.iter().map(|&(x, y)| (x, y, 8.0)).collect();
    // Anchor 9 predicts a real 8×8 box exactly; the zero-size box takes anchor 16 (0, 2), the
    // most confident one near (0, 20) that the real box does not hold.
    let real = [12.0f32, 12.0, 4.0, 4.0];
    let mut raw = vec![0f32; 64 * 6];
    raw[16 * 6 + 4] = 4.0;
    for kind in [
        BoxLossKind::Iou,
        BoxLossKind::Giou,
        BoxLossKind::Ciou,
        BoxLossKind::CiouTorchvision,
    ] {
        let raw_t = Tensor::from_vec(raw.clone(), [1, 64, 6])
            .unwrap()
            .with_requires_grad(true);
        let decoded: Vec<f32> = preds.iter().flatten().copied().collect();
        let dec_t = Tensor::from_vec(decoded, [1, 64, 4])
            .unwrap()
            .with_requires_grad(true);
        let targets = vec![ImageTargets {
            classes: vec![0, 0],
            boxes_cxcywh: vec![real, [0.0, 20.0, 0.0, 20.0]],
        }];
        let cfg = YoloxLossConfig {
            box_loss: kind,
            ..YoloxLossConfig::default()
        };
        let out = yolox_loss(&raw_t, &dec_t, &grid3, &targets, &cfg).unwrap();
        assert_eq!((out.num_fg, out.num_gt), (2, 2), "{kind:?}");
        // Box loss: 0 for the exact prediction, 1 for the zero-size box; divided by num_fg 2.
        assert!((out.iou - 0.5).abs() < 1e-6, "{kind:?}: iou {}", out.iou);
        let total = out.total.item().unwrap();
        assert!(total.is_finite(), "{kind:?}: {total}");
        out.total.backward().unwrap();
        let g = dec_t.grad().unwrap().to_vec();
        assert!(g.iter().all(|v| v.is_finite()), "{kind:?}");
        // No gradient on the zero-size box's prediction (anchor 16).
        assert!(
            g[16 * 4..16 * 4 + 4].iter().all(|&v| v == 0.0),
            "{kind:?}: {:?}",
            &g[64..68]
        );
        // Objectness target 1 at anchor 16: d/d logit = (σ(4) − 1) / 2.
        let gr = raw_t.grad().unwrap().to_vec();
        let want = (1.0 / (1.0 + (-4.0f32).exp()) - 1.0) / 2.0;
        assert!(
            (gr[16 * 6 + 4] - want).abs() < 1e-6,
            "{kind:?}: {}",
            gr[16 * 6 + 4]
        );
    }
}
