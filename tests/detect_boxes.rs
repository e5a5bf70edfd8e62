//! Decode (tensor and f32 paths, gradient), NMS, YOLOX postprocess, mapping back to the original
//! image, and `detect_images` on a tiny random model. Expected values are derived by hand in the
//! comments (docs/yolox.md §2 gives the formulas).

use image::{Rgb, RgbImage};
use ssod::detect::{
    batched_nms, decode_batch_f32, decode_boxes, decode_image_f32, detect_images,
    images_to_bgr_tensor, iou_xyxy, nms, postprocess_image, postprocess_raw, to_coco, to_original,
    DecodedImage, Det, PostprocessConfig,
};
use ssod::models::{YoloX, YoloXConfig};
use ssod::{ops, Tensor};

/// `(gx, gy, stride)` per anchor, as `YoloX::anchor_grid` returns it.
type Grid = Vec<(f32, f32, f32)>;

fn close(a: f32, b: f32, tol: f32) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn assert_vec_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(close(g, w, tol), "{what}[{i}]: got {g}, want {w}");
    }
}

/// Three anchors on three levels and C = 2. Hand derivation (cx = (tx+gx)·s, cy = (ty+gy)·s,
/// w = exp(tw)·s, h = exp(th)·s):
/// - a0 (gx 3, gy 0, s 8):   t = (0.5, -0.25, 0, ln 2)   → cx = 3.5·8 = 28, cy = -0.25·8 = -2,
///   w = 8, h = 2·8 = 16 (no clamp: a negative centre stays negative);
/// - a1 (gx 0, gy 1, s 16):  t = (0, 0.5, ln 0.5, ln 3)  → cx = 0, cy = 1.5·16 = 24, w = 8, h = 48;
/// - a2 (gx 1, gy 1, s 32):  t = (-1, 2, 1, -1)          → cx = 0, cy = 3·32 = 96,
///   w = 32e = 86.98581, h = 32/e = 11.772355.
///
/// obj logit 0 → 0.5; cls logits ln 3 → 3/4, -ln 3 → 1/4.
fn hand_case() -> (Grid, Vec<f32>, Vec<[f32; 4]>) {
    let grid = vec![(3.0, 0.0, 8.0), (0.0, 1.0, 16.0), (1.0, 1.0, 32.0)];
    let l3 = 3f32.ln();
    let raw = vec![
        0.5,
        -0.25,
        0.0,
        2f32.ln(),
        0.0,
        l3,
        -l3, //
        0.0,
        0.5,
        0.5f32.ln(),
        l3,
        0.0,
        -l3,
        l3, //
        -1.0,
        2.0,
        1.0,
        -1.0,
        0.0,
        0.0,
        0.0,
    ];
    let e = std::f32::consts::E;
    let want = vec![
        [28.0, -2.0, 8.0, 16.0],
        [0.0, 24.0, 8.0, 48.0],
        [0.0, 96.0, 32.0 * e, 32.0 / e],
    ];
    (grid, raw, want)
}

#[test]
fn decode_hand_values_both_paths() {
    let (grid, raw, want) = hand_case();
    let d = decode_image_f32(&raw, &grid, 2).unwrap();
    for (a, w) in want.iter().enumerate() {
        assert_vec_close(&d.boxes_cxcywh[a], w, 1e-6, &format!("f32 box {a}"));
    }
    assert_vec_close(&d.obj, &[0.5, 0.5, 0.5], 1e-6, "obj");
    assert_vec_close(&d.cls, &[0.75, 0.25, 0.25, 0.75, 0.5, 0.5], 1e-6, "cls");

    // Tensor path on a batch of 2 (the second image is the first one again).
    let mut both = raw.clone();
    both.extend_from_slice(&raw);
    let t = Tensor::from_vec(both, vec![2, 3, 7]).unwrap();
    let boxes = decode_boxes(&t, &grid).unwrap();
    assert_eq!(boxes.dims(), &[2, 3, 4]);
    let flat: Vec<f32> = want.iter().flatten().copied().collect();
    let v = boxes.to_vec();
    assert_vec_close(&v[..12], &flat, 1e-6, "tensor box image 0");
    assert_vec_close(&v[12..], &flat, 1e-6, "tensor box image 1");
    let per_image = decode_batch_f32(&t, &grid).unwrap();
    assert_eq!(per_image.len(), 2);
    assert_eq!(per_image[1], d);
}

#[test]
fn decode_rejects_mismatched_shapes() {
    let (grid, raw, _) = hand_case();
    assert!(decode_image_f32(&raw, &grid, 3).is_err());
    let t = Tensor::from_vec(raw.clone(), vec![1, 3, 7]).unwrap();
    assert!(decode_boxes(&t, &grid[..2]).is_err());
    let t4 = Tensor::from_vec(raw[..12].to_vec(), vec![1, 3, 4]).unwrap();
    assert!(decode_boxes(&t4, &grid).is_err());
}

/// The anchor grid the decoder is used with: at 64×64 there are 8·8 + 4·4 + 2·2 = 84 anchors,
/// P3 first, row-major (y outer): index 2·8 + 3 = 19 is (gx 3, gy 2, s 8), index 64 is the first
/// P4 anchor (0, 0, 16), index 64 + 16 = 80 the first P5 anchor.
#[test]
fn anchor_grid_order() {
    let g = YoloX::anchor_grid(64, 64);
    assert_eq!(g.len(), 84);
    assert_eq!(g[19], (3.0, 2.0, 8.0));
    assert_eq!(g[64], (0.0, 0.0, 16.0));
    assert_eq!(g[80], (0.0, 0.0, 32.0));
    assert_eq!(g[83], (1.0, 1.0, 32.0));
}

/// f64 reference of Σ w·decode(raw) for finite differences.
fn weighted_decode_f64(raw: &[f64], grid: &[(f32, f32, f32)], row: usize, w: &[f64]) -> f64 {
    let a = grid.len();
    let mut total = 0.0;
    for b in 0..raw.len() / (a * row) {
        for (k, &(gx, gy, s)) in grid.iter().enumerate() {
            let r = &raw[(b * a + k) * row..];
            let (gx, gy, s) = (gx as f64, gy as f64, s as f64);
            let bx = [
                (r[0] + gx) * s,
                (r[1] + gy) * s,
                r[2].exp() * s,
                r[3].exp() * s,
            ];
            for (j, v) in bx.iter().enumerate() {
                total += w[(b * a + k) * 4 + j] * v;
            }
        }
    }
    total
}

/// Backward of Σ w ⊙ decode_boxes(raw) against central differences in f64. Analytically
/// ∂/∂tx = w_cx·s, ∂/∂tw = w_w·s·exp(tw), and 0 for obj and cls: the last check makes sure the
/// gradient does not leak into the other channels.
#[test]
fn decode_boxes_gradient_matches_finite_differences() {
    let grid = vec![
        (0.0, 0.0, 8.0),
        (5.0, 2.0, 8.0),
        (1.0, 0.0, 16.0),
        (0.0, 0.0, 32.0),
    ];
    let (b, a, row) = (3, grid.len(), 5 + 3);
    let raw = Tensor::randn(vec![b, a, row], 7);
    let raw_vals = raw.to_vec();
    let raw = Tensor::from_vec(raw_vals.clone(), vec![b, a, row])
        .unwrap()
        .with_requires_grad(true);
    let w = Tensor::randn(vec![b, a, 4], 11);
    let w_vals: Vec<f64> = w.to_vec().iter().map(|&x| x as f64).collect();

    let loss = ops::mul(&decode_boxes(&raw, &grid).unwrap(), &w)
        .unwrap()
        .sum_all()
        .unwrap();
    let raw64: Vec<f64> = raw_vals.iter().map(|&x| x as f64).collect();
    let ref_loss = weighted_decode_f64(&raw64, &grid, row, &w_vals);
    assert!(
        close(loss.item().unwrap(), ref_loss as f32, 1e-5),
        "forward {} vs reference {ref_loss}",
        loss.item().unwrap()
    );
    loss.backward().unwrap();
    let grad = raw.grad().expect("raw has a gradient").to_vec();

    let h = 1e-6;
    for i in 0..raw64.len() {
        let mut p = raw64.clone();
        p[i] += h;
        let up = weighted_decode_f64(&p, &grid, row, &w_vals);
        p[i] -= 2.0 * h;
        let down = weighted_decode_f64(&p, &grid, row, &w_vals);
        let fd = (up - down) / (2.0 * h);
        let tol = 1e-3 * (1.0 + fd.abs());
        assert!(
            (grad[i] as f64 - fd).abs() <= tol,
            "d/d raw[{i}] (channel {}): autograd {} vs finite difference {fd}",
            i % row,
            grad[i]
        );
        if i % row >= 4 {
            assert_eq!(grad[i], 0.0, "obj/cls channel {} got a gradient", i % row);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// NMS

/// [0,0,10,10] vs [1,0,11,10]: inter 9·10 = 90, union 100 + 100 - 90 = 110, IoU = 9/11 ≈ 0.818.
#[test]
fn iou_hand_values() {
    assert!(close(
        iou_xyxy(&[0.0, 0.0, 10.0, 10.0], &[1.0, 0.0, 11.0, 10.0]),
        9.0 / 11.0,
        1e-6
    ));
    assert_eq!(
        iou_xyxy(&[0.0, 0.0, 10.0, 10.0], &[20.0, 0.0, 30.0, 10.0]),
        0.0
    );
    // Touching edges: intersection width 0 → IoU 0.
    assert_eq!(
        iou_xyxy(&[0.0, 0.0, 10.0, 10.0], &[10.0, 0.0, 20.0, 10.0]),
        0.0
    );
    assert_eq!(
        iou_xyxy(&[0.0, 0.0, 10.0, 10.0], &[0.0, 0.0, 10.0, 10.0]),
        1.0
    );
}

#[test]
fn nms_suppresses_overlapping_pair_keeps_far_box() {
    let boxes = [
        [0.0, 0.0, 10.0, 10.0],
        [1.0, 0.0, 11.0, 10.0],
        [50.0, 50.0, 60.0, 60.0],
    ];
    // IoU(0, 1) = 9/11 > 0.5 → box 1 (lower score) goes; box 2 overlaps nothing.
    assert_eq!(nms(&boxes, &[0.9, 0.8, 0.7], 0.5).unwrap(), vec![0, 2]);
    // The higher-scored box wins whatever its position.
    assert_eq!(nms(&boxes, &[0.8, 0.9, 0.7], 0.5).unwrap(), vec![1, 2]);
    // 9/11 ≈ 0.818 is not above 0.85: both stay, listed by score.
    assert_eq!(nms(&boxes, &[0.8, 0.9, 0.7], 0.85).unwrap(), vec![1, 0, 2]);
}

/// [0,0,10,10] vs [0,0,10,5]: inter 50, union 100 + 50 - 50 = 100, IoU = 0.5 exactly (all exact
/// in f32). torchvision suppresses only IoU > thr, so at thr 0.5 both are kept.
#[test]
fn nms_iou_equal_to_threshold_is_kept() {
    let boxes = [[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0]];
    assert_eq!(iou_xyxy(&boxes[0], &boxes[1]), 0.5);
    assert_eq!(nms(&boxes, &[0.9, 0.8], 0.5).unwrap(), vec![0, 1]);
    assert_eq!(nms(&boxes, &[0.9, 0.8], 0.499).unwrap(), vec![0]);
}

#[test]
fn batched_nms_is_per_class_nms_is_not() {
    let boxes = [
        [0.0, 0.0, 10.0, 10.0],
        [1.0, 0.0, 11.0, 10.0],
        [0.5, 0.0, 10.5, 10.0],
    ];
    let scores = [0.9, 0.8, 0.7];
    // Classes 0, 1, 0: box 1 is alone in its class; box 2 overlaps box 0 (IoU 9.5/10.5) → goes.
    assert_eq!(
        batched_nms(&boxes, &scores, &[0, 1, 0], 0.5).unwrap(),
        vec![0, 1]
    );
    // Class-agnostic: box 0 suppresses both.
    assert_eq!(nms(&boxes, &scores, 0.5).unwrap(), vec![0]);
    // Every box its own class: nothing is suppressed.
    assert_eq!(
        batched_nms(&boxes, &scores, &[0, 1, 2], 0.5).unwrap(),
        vec![0, 1, 2]
    );
}

#[test]
fn nms_ties_keep_input_order() {
    let a = [0.0, 0.0, 10.0, 10.0];
    let b = [1.0, 0.0, 11.0, 10.0];
    // Equal scores: the earlier box is treated as the better one and suppresses the later.
    assert_eq!(nms(&[a, b], &[0.5, 0.5], 0.5).unwrap(), vec![0]);
    assert_eq!(nms(&[b, a], &[0.5, 0.5], 0.5).unwrap(), vec![0]);
    // Disjoint boxes with tied scores come out in input order, after higher scores.
    let far = |x: f32| [x, 0.0, x + 5.0, 5.0];
    assert_eq!(
        nms(
            &[far(0.0), far(10.0), far(20.0), far(30.0)],
            &[0.3, 0.5, 0.3, 0.3],
            0.5
        )
        .unwrap(),
        vec![1, 0, 2, 3]
    );
}

#[test]
fn nms_bad_input_is_an_error_or_harmless() {
    let boxes = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0]];
    assert!(nms(&boxes, &[0.9], 0.5).is_err());
    assert!(batched_nms(&boxes, &[0.9, 0.8], &[0], 0.5).is_err());
    assert!(nms(&[], &[], 0.5).unwrap().is_empty());
    // A NaN score sorts last and never panics; the NaN box does not suppress the other.
    assert_eq!(nms(&boxes, &[f32::NAN, 0.8], 0.5).unwrap(), vec![1]);
    // Degenerate boxes (zero area, NaN IoU with each other) are both kept.
    let z = [5.0, 5.0, 5.0, 5.0];
    assert_eq!(nms(&[z, z], &[0.9, 0.8], 0.5).unwrap(), vec![0, 1]);
}

// ---------------------------------------------------------------------------------------------
// Postprocess

/// Five anchors, two classes (scores = obj · max cls):
/// - a0 cxcywh (50,50,20,20) → xyxy (40,40,60,60); obj 0.9, cls (0.8, 0.1) → 0.72, class 0;
/// - a1 (52,50,20,20) → (42,40,62,60); obj 0.9, cls (0.1, 0.7) → 0.63, class 1;
///   IoU(a0, a1) = 18·20 / (800 - 360) = 360/440 ≈ 0.818;
/// - a2 (51,50,20,20) → (41,40,61,60); obj 0.5, cls (0.6, 0.2) → 0.3, class 0;
///   IoU(a0, a2) = 380/420 ≈ 0.905 > 0.65 → suppressed by a0 (same class);
/// - a3 (150,150,10,10); obj 0.1, cls (0.05, 0.09) → 0.009 < 0.01 → dropped by the threshold;
/// - a4 (200,100,40,20); obj 0.5, cls (0.02, 0.02) → 0.5·0.02 = 0.01 exactly as f32 (halving
///   is exact) → kept by `>= conf_thre` at 0.01; class 0 (tie: the first maximum).
fn decoded_case() -> DecodedImage {
    DecodedImage {
        boxes_cxcywh: vec![
            [50.0, 50.0, 20.0, 20.0],
            [52.0, 50.0, 20.0, 20.0],
            [51.0, 50.0, 20.0, 20.0],
            [150.0, 150.0, 10.0, 10.0],
            [200.0, 100.0, 40.0, 20.0],
        ],
        obj: vec![0.9, 0.9, 0.5, 0.1, 0.5],
        cls: vec![0.8, 0.1, 0.1, 0.7, 0.6, 0.2, 0.05, 0.09, 0.02, 0.02],
        num_classes: 2,
    }
}

fn classes_scores(dets: &[Det]) -> Vec<(usize, f32)> {
    dets.iter().map(|d| (d.class, d.score)).collect()
}

#[test]
fn postprocess_defaults_threshold_and_class_aware_nms() {
    let cfg = PostprocessConfig::default();
    assert_eq!(
        (
            cfg.conf_thre,
            cfg.nms_thre,
            cfg.class_agnostic,
            cfg.max_dets
        ),
        (0.01, 0.65, false, None)
    );
    let dets = postprocess_image(&decoded_case(), &cfg).unwrap();
    assert_eq!(
        classes_scores(&dets),
        vec![(0, 0.9f32 * 0.8), (1, 0.9f32 * 0.7), (0, 0.01)]
    );
    assert_eq!(dets[0].box_xyxy, [40.0, 40.0, 60.0, 60.0]);
    assert_eq!(dets[1].box_xyxy, [42.0, 40.0, 62.0, 60.0]);
    assert_eq!(dets[2].box_xyxy, [180.0, 90.0, 220.0, 110.0]);
    assert_eq!((dets[0].obj, dets[0].class_conf), (0.9, 0.8));
}

#[test]
fn postprocess_agnostic_threshold_and_max_dets() {
    let d = decoded_case();
    let agnostic = PostprocessConfig {
        class_agnostic: true,
        ..Default::default()
    };
    // a0 now also suppresses a1 (IoU 0.818 > 0.65).
    let dets = postprocess_image(&d, &agnostic).unwrap();
    assert_eq!(classes_scores(&dets), vec![(0, 0.9f32 * 0.8), (0, 0.01)]);

    let capped = PostprocessConfig {
        max_dets: Some(2),
        ..Default::default()
    };
    let dets = postprocess_image(&d, &capped).unwrap();
    assert_eq!(
        classes_scores(&dets),
        vec![(0, 0.9f32 * 0.8), (1, 0.9f32 * 0.7)]
    );

    let strict = PostprocessConfig {
        conf_thre: 0.5,
        ..Default::default()
    };
    assert_eq!(postprocess_image(&d, &strict).unwrap().len(), 2);
    // Threshold at a2's own score 0.5·0.6 (computed the same way in f32, since 0.3 is not exact):
    // a2 passes `>=`; with NMS at 0.95 (above IoU 0.905) nothing is suppressed, so a0, a1, a2 remain.
    let at_a2 = PostprocessConfig {
        conf_thre: 0.5f32 * 0.6,
        nms_thre: 0.95,
        ..Default::default()
    };
    let dets = postprocess_image(&d, &at_a2).unwrap();
    assert_eq!(classes_scores(&dets).len(), 3);
    assert_eq!(dets[2].score, 0.5f32 * 0.6);

    let bad = PostprocessConfig {
        conf_thre: f32::NAN,
        ..Default::default()
    };
    assert!(postprocess_image(&d, &bad).is_err());
}

/// Letterbox ratio 0.5 (a 200×100 image shown at half size): boxes are divided by 0.5 and then
/// clipped to [0, 200] × [0, 100].
/// (10,20,30,40) → (20,40,60,80); (90,45,110,60) → (180,90,220,120) → clipped (180,90,200,100);
/// (-4,-1,5,5) → (-8,-2,10,10) → (0,0,10,10).
#[test]
fn boxes_mapped_back_by_ratio_and_clipped() {
    let det = |b: [f32; 4]| Det {
        box_xyxy: b,
        score: 0.5,
        obj: 1.0,
        class_conf: 0.5,
        class: 1,
    };
    let mut dets = vec![
        det([10.0, 20.0, 30.0, 40.0]),
        det([90.0, 45.0, 110.0, 60.0]),
        det([-4.0, -1.0, 5.0, 5.0]),
    ];
    to_original(&mut dets, 0.5, 200, 100).unwrap();
    assert_eq!(dets[0].box_xyxy, [20.0, 40.0, 60.0, 80.0]);
    assert_eq!(dets[1].box_xyxy, [180.0, 90.0, 200.0, 100.0]);
    assert_eq!(dets[2].box_xyxy, [0.0, 0.0, 10.0, 10.0]);
    assert!(to_original(&mut dets, 0.0, 200, 100).is_err());

    // COCO: xyxy (20,40,60,80) → xywh (20,40,40,40); class 1 → category id 9.
    let coco = to_coco(&dets[..1], 4, &[7, 9]).unwrap();
    assert_eq!(coco[0].image_id, 4);
    assert_eq!(coco[0].category_id, 9);
    assert_eq!(coco[0].bbox_xywh, [20.0, 40.0, 40.0, 40.0]);
    assert_eq!(coco[0].score, 0.5);
    assert!(
        to_coco(&dets, 1, &[7]).is_err(),
        "class 1 has no category id"
    );
}

// ---------------------------------------------------------------------------------------------
// detect_images

#[test]
fn bgr_tensor_layout() {
    // 2×1 image: pixel (1, 0) is R 10, G 20, B 30 → channel 0 (B) = 30, 1 (G) = 20, 2 (R) = 10.
    let mut img = RgbImage::new(2, 1);
    img.put_pixel(1, 0, Rgb([10, 20, 30]));
    let t = images_to_bgr_tensor(&[img]).unwrap();
    assert_eq!(t.dims(), &[1, 3, 1, 2]);
    assert_eq!(t.to_vec(), vec![0.0, 30.0, 0.0, 20.0, 0.0, 10.0]);
    assert!(images_to_bgr_tensor(&[RgbImage::new(2, 1), RgbImage::new(1, 2)]).is_err());
}

#[test]
fn detect_images_tiny_model() {
    let model = YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 1)).unwrap();
    assert!(model.store.is_training());
    let images = vec![
        RgbImage::from_fn(96, 40, |x, y| Rgb([(x * 2) as u8, (y * 5) as u8, 77])),
        RgbImage::from_fn(30, 70, |x, y| Rgb([200, (x * 7) as u8, (y * 3) as u8])),
    ];
    // conf 0 keeps every anchor before NMS (scores are ≈ σ(-4.6)² ≈ 1e-4 on a fresh model).
    let cfg = PostprocessConfig {
        conf_thre: 0.0,
        max_dets: Some(10),
        ..Default::default()
    };
    let dets = detect_images(&model, &images, (64, 64), &cfg).unwrap();
    assert!(model.store.is_training(), "training mode restored");
    assert_eq!(dets.len(), 2);
    for (img, d) in images.iter().zip(&dets) {
        assert!(!d.is_empty() && d.len() <= 10);
        for w in d.windows(2) {
            assert!(w[0].score >= w[1].score, "sorted by score");
        }
        for det in d {
            let [x1, y1, x2, y2] = det.box_xyxy;
            assert!(0.0 <= x1 && x1 <= x2 && x2 <= img.width() as f32, "{det:?}");
            assert!(
                0.0 <= y1 && y1 <= y2 && y2 <= img.height() as f32,
                "{det:?}"
            );
            assert_eq!(det.class, 0);
        }
    }
    // The same image alone gives the same detections (eval-mode BN: no batch statistics).
    let alone = detect_images(&model, &images[1..], (64, 64), &cfg).unwrap();
    assert_eq!(alone[0].len(), dets[1].len());
    for (a, b) in alone[0].iter().zip(&dets[1]) {
        assert!(close(a.score, b.score, 1e-4));
    }
    assert!(detect_images(&model, &images, (60, 64), &cfg).is_err());
}

/// The batch path equals decode + postprocess per image. On the hand case with conf 0.1:
/// scores are 0.5·0.75 = 0.375 (a0, class 0), 0.375 (a1, class 1), 0.5·0.5 = 0.25 (a2, class 0 by
/// the first-maximum rule); the boxes do not overlap enough to suppress one another at 0.65
/// (a1 (−4,0,4,48) and a2 (−43.5,90.1,43.5,101.9) are disjoint; a0 (24,−10,32,6) too), so the
/// order is a0, a1 (tie: input order), a2.
#[test]
fn postprocess_raw_matches_per_image_path() {
    let (grid, raw, want) = hand_case();
    let t = Tensor::from_vec(raw.clone(), vec![1, 3, 7]).unwrap();
    let cfg = PostprocessConfig {
        conf_thre: 0.1,
        ..Default::default()
    };
    let got = postprocess_raw(&t, &grid, &cfg).unwrap();
    let d = decode_image_f32(&raw, &grid, 2).unwrap();
    assert_eq!(got, vec![postprocess_image(&d, &cfg).unwrap()]);
    let cs = classes_scores(&got[0]);
    assert_eq!(cs.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1, 0]);
    // σ(ln 3) is 0.75 only up to f32 rounding: compare the scores with a tolerance.
    let scores: Vec<f32> = cs.iter().map(|c| c.1).collect();
    assert_vec_close(&scores, &[0.375, 0.375, 0.25], 1e-6, "scores");
    let [cx, cy, w, h] = want[0];
    assert_eq!(
        got[0][0].box_xyxy,
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    );
}
