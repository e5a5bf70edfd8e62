//! COCO evaluation: hand-computed cases, caps, crowd, area ranges, bad inputs, and all 12 stats
//! against pycocotools on random cases (skipped with one line where pycocotools is missing,
//! except under `CI`, where that is a failure).
//!
//! Reminder of pycocotools' AP (what the derivations below follow): per IoU threshold, detections
//! sorted by score, cumulative precision p_i and recall r_i; precision made non-increasing from
//! the right (p_i = max_{j>=i} p_j); at each of the 101 recall thresholds R = 0.00, 0.01, ..., 1.00
//! the precision is p at the first i with r_i >= R, or 0 when recall never reaches R; AP is the
//! mean over the 101 thresholds (and over IoU thresholds and categories).

mod common;

use std::path::PathBuf;

use rand::Rng;
use ssod::data::dataset::{Annotation, Category, CocoDataset, Detection, ImageInfo};
use ssod::eval::coco::{evaluate, evaluate_files, MaxDets};

const EXACT: f64 = 1e-12;

fn image(id: u64) -> ImageInfo {
    ImageInfo {
        id,
        file_name: format!("{id}.jpg"),
        width: 640,
        height: 480,
    }
}

fn gt_box(
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox_xywh: [f64; 4],
    iscrowd: u8,
) -> Annotation {
    Annotation {
        id,
        image_id,
        category_id,
        bbox_xywh,
        area: bbox_xywh[2] * bbox_xywh[3],
        iscrowd,
    }
}

fn det(image_id: u64, category_id: u64, bbox_xywh: [f64; 4], score: f64) -> Detection {
    Detection {
        image_id,
        category_id,
        bbox_xywh,
        score,
    }
}

fn dataset(images: Vec<ImageInfo>, annotations: Vec<Annotation>, n_categories: u64) -> CocoDataset {
    CocoDataset {
        images,
        annotations,
        categories: (1..=n_categories)
            .map(|id| Category {
                id,
                name: format!("class{id}"),
                supercategory: None,
            })
            .collect(),
        image_dir: PathBuf::new(),
    }
}

fn assert_close(got: f64, expected: f64, what: &str) {
    assert!(
        (got - expected).abs() < EXACT,
        "{what}: got {got}, expected {expected}"
    );
}

/// Two small ground-truth boxes A, B (area 100 each) in one image.
fn two_box_gt() -> CocoDataset {
    dataset(
        vec![image(1)],
        vec![
            gt_box(1, 1, 1, [0.0, 0.0, 10.0, 10.0], 0),
            gt_box(2, 1, 1, [20.0, 20.0, 10.0, 10.0], 0),
        ],
        1,
    )
}

#[test]
fn hand_computed_tp_fp_tp() {
    // Detections by score: A exactly (TP at every IoU), a far-away box (FP), B exactly (TP).
    // p = [1, 1/2, 2/3], r = [1/2, 1/2, 1]; non-increasing from the right: [1, 2/3, 2/3].
    // Recall thresholds 0.00..0.50 (51 of them) reach index 0 -> precision 1; 0.51..1.00 (50)
    // reach index 2 -> 2/3. AP = (51 + 50 * 2/3) / 101 = 253/303, the same at every IoU
    // threshold, so AP = AP50 = AP75 = 253/303. Both boxes are small (area 100 < 32^2):
    // AP_small = 253/303; no medium/large ground truth -> -1. AR: the top-1 detection finds
    // A only -> 1/2; 10 and 100 find both -> 1.
    let gt = two_box_gt();
    let dets = vec![
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
        det(1, 1, [200.0, 200.0, 10.0, 10.0], 0.8),
        det(1, 1, [20.0, 20.0, 10.0, 10.0], 0.7),
    ];
    let m = evaluate(&gt, &dets, MaxDets::COCO).unwrap();
    let ap = 253.0 / 303.0;
    let expected = [ap, ap, ap, ap, -1.0, -1.0, 0.5, 1.0, 1.0, 1.0, -1.0, -1.0];
    for (i, (got, want)) in m.stats.iter().zip(expected).enumerate() {
        assert_close(*got, want, &m.names()[i]);
    }
    assert_eq!(m.get("AR_1"), Some(0.5));
    assert_eq!(m.per_class.len(), 1);
    assert_close(m.per_class[0].ap, ap, "per-class AP");
    assert_close(m.per_class[0].ap50, ap, "per-class AP50");
    assert!(m.warnings.is_empty());

    // The printout is pycocotools' layout.
    let summary = m.summary();
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 12);
    assert_eq!(
        lines[0],
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.835"
    );
    assert_eq!(
        lines[1],
        " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 0.835"
    );
    assert_eq!(
        lines[4],
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=medium | maxDets=100 ] = -1.000"
    );
    assert_eq!(
        lines[6],
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 0.500"
    );
}

#[test]
fn max_dets_cap_drops_lower_scored_detections() {
    // A (TP, .9), two FPs (.8, .75), B (TP, .7), caps 1,2,3: the 4th detection is cut.
    // At cap 3: p = [1, 1/2, 1/3], r = [1/2, 1/2, 1/2] -> thresholds 0.00..0.50 (51) get 1, the
    // rest 0 (recall never reaches them): AP50 = 51/101. The first AP line reads maxDets=100, a
    // literal in pycocotools, which is not among 1,2,3 -> -1. AR_1 = AR_2 = AR_3 = 1/2.
    let gt = two_box_gt();
    let dets = vec![
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
        det(1, 1, [200.0, 200.0, 10.0, 10.0], 0.8),
        det(1, 1, [300.0, 200.0, 10.0, 10.0], 0.75),
        det(1, 1, [20.0, 20.0, 10.0, 10.0], 0.7),
    ];
    let m = evaluate(&gt, &dets, MaxDets::new(&[3, 1, 2]).unwrap()).unwrap();
    assert_eq!(
        m.max_dets.0,
        [1, 2, 3],
        "caps are sorted as pycocotools sorts them"
    );
    assert_eq!(m.stats[0], -1.0);
    assert_close(m.stats[1], 51.0 / 101.0, "AP50 at cap 3");
    assert_close(m.get("AR_1").unwrap(), 0.5, "AR_1");
    assert_close(m.get("AR_2").unwrap(), 0.5, "AR_2");
    assert_close(m.get("AR_3").unwrap(), 0.5, "AR_3");

    // With caps 1,2,100 nothing is cut at 100: p = [1, 1/2, 1/3, 1/2], r = [1/2, 1/2, 1/2, 1];
    // interpolated [1, 1/2, 1/2, 1/2]: 51 thresholds at 1, 50 at 1/2 -> AP = 76/101.
    let m = evaluate(&gt, &dets, MaxDets::new(&[1, 2, 100]).unwrap()).unwrap();
    assert_close(m.stats[0], 76.0 / 101.0, "AP at cap 100");
    assert_close(m.get("AR_2").unwrap(), 0.5, "AR_2");
    assert_close(m.get("AR_100").unwrap(), 1.0, "AR_100");
}

#[test]
fn crowd_region_absorbs_a_detection() {
    // GT: A small normal box, C a 40x40 crowd region. The highest-scored detection lies inside C:
    // against a crowd region pycocotools' IoU is intersection / detection area = 100/100 = 1, so
    // it matches C and is ignored, neither TP nor FP. A's exact detection is then the only scored
    // one: p = [1], r = [1] -> AP = 1 at every threshold (it would be 1/2 if the crowd match
    // counted as a false positive). C is not counted as ground truth: AR_100 = 1/1.
    let gt = dataset(
        vec![image(1)],
        vec![
            gt_box(1, 1, 1, [0.0, 0.0, 10.0, 10.0], 0),
            gt_box(2, 1, 1, [50.0, 50.0, 40.0, 40.0], 1),
        ],
        1,
    );
    let dets = vec![
        det(1, 1, [55.0, 55.0, 10.0, 10.0], 0.9),
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.8),
    ];
    let m = evaluate(&gt, &dets, MaxDets::COCO).unwrap();
    assert_close(m.stats[0], 1.0, "AP");
    assert_close(m.stats[1], 1.0, "AP50");
    assert_close(m.get("AR_100").unwrap(), 1.0, "AR_100");
    // A crowd region is never a target: with only C, there is no ground truth to compute on.
    let crowd_only = dataset(
        vec![image(1)],
        vec![gt_box(2, 1, 1, [50.0, 50.0, 40.0, 40.0], 1)],
        1,
    );
    let m = evaluate(&crowd_only, &dets, MaxDets::COCO).unwrap();
    assert_eq!(m.stats[0], -1.0);
}

#[test]
fn area_ranges_split_ground_truth_and_detections() {
    // GT: S (10x10 = 100, small), M (50x50 = 2500, medium), L (100x100 = 10000, large).
    // Detections by score: F a 5x5 false positive (.95, small), S exactly (.9), M exactly (.8).
    // all:    FP, TP, TP -> p = [0, 1/2, 2/3], r = [0, 1/3, 2/3] -> interpolated 2/3 for the 67
    //         thresholds 0.00..0.66, 0 above 2/3: AP = 67 * (2/3) / 101 = 134/303; AR = 2/3.
    // small:  M and L are ignored (out of range), the M detection matches an ignored box and is
    //         ignored; F counts: FP, TP -> p = [0, 1/2], r = [0, 1] -> 1/2 everywhere: AP = 1/2.
    // medium: F is unmatched and out of range -> ignored; S's detection matches ignored S ->
    //         ignored; M: TP -> AP = 1, AR = 1.
    // large:  L is never found -> AP = 0, AR = 0.
    // AR_1:   the one top-scored detection is F, a false positive -> 0.
    let gt = dataset(
        vec![image(1)],
        vec![
            gt_box(1, 1, 1, [0.0, 0.0, 10.0, 10.0], 0),
            gt_box(2, 1, 1, [100.0, 100.0, 50.0, 50.0], 0),
            gt_box(3, 1, 1, [300.0, 300.0, 100.0, 100.0], 0),
        ],
        1,
    );
    let dets = vec![
        det(1, 1, [500.0, 10.0, 5.0, 5.0], 0.95),
        det(1, 1, [0.0, 0.0, 10.0, 10.0], 0.9),
        det(1, 1, [100.0, 100.0, 50.0, 50.0], 0.8),
    ];
    let m = evaluate(&gt, &dets, MaxDets::COCO).unwrap();
    let expected = [
        134.0 / 303.0,
        134.0 / 303.0,
        134.0 / 303.0,
        0.5,
        1.0,
        0.0,
        0.0,
        2.0 / 3.0,
        2.0 / 3.0,
        1.0,
        1.0,
        0.0,
    ];
    for (i, (got, want)) in m.stats.iter().zip(expected).enumerate() {
        assert_close(*got, want, &m.names()[i]);
    }
}

#[test]
fn empty_detections_give_zeros_and_a_warning() {
    let m = evaluate(&two_box_gt(), &[], MaxDets::STUDY).unwrap();
    // Ground truth exists for small boxes only: small and all are 0, medium/large -1.
    let expected = [
        0.0, 0.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0,
    ];
    assert_eq!(m.stats, expected);
    assert_eq!(m.warnings.len(), 1);
    assert!(m.warnings[0].contains("no detections"), "{:?}", m.warnings);
}

#[test]
fn unknown_ids_and_bad_boxes_are_named() {
    let gt = two_box_gt();
    let err = evaluate(
        &gt,
        &[det(1, 1, [0.0; 4], 0.5), det(7, 1, [0.0; 4], 0.5)],
        MaxDets::COCO,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("image id(s) 7") && err.contains("detections[1]"),
        "{err}"
    );
    let err = evaluate(&gt, &[det(1, 9, [0.0; 4], 0.5)], MaxDets::COCO)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("category id(s) 9") && err.contains("detections[0]"),
        "{err}"
    );
    let err = evaluate(
        &gt,
        &[
            det(1, 1, [0.0; 4], 0.5),
            det(1, 1, [1.0, 1.0, 5.0, -2.0], 0.5),
        ],
        MaxDets::COCO,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("detections[1]") && err.contains("negative"),
        "{err}"
    );
    let err = evaluate(&gt, &[det(1, 1, [0.0; 4], f64::NAN)], MaxDets::COCO)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("detections[0]") && err.contains("not finite"),
        "{err}"
    );
}

#[test]
fn bad_max_dets_are_refused() {
    for text in ["100,300", "0,10,100", "10,10,100", "1,x,100", ""] {
        let err = MaxDets::parse(text).unwrap_err().to_string();
        assert!(err.contains("max-dets"), "{text}: {err}");
    }
    assert_eq!(MaxDets::parse("1000, 100,300").unwrap(), MaxDets::STUDY);
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod-eval-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let dir = temp_dir("malformed");
    let gt_path = dir.join("gt.json");
    two_box_gt().write(&gt_path).unwrap();
    let dt_path = dir.join("dt.json");
    std::fs::write(
        &dt_path,
        "[\n  {\"image_id\": 1, \"category_id\": 1,\n   \"bbox\": [0, 0, 1 1], \"score\": 0.5}\n]",
    )
    .unwrap();
    let err = evaluate_files(&gt_path, &dt_path, MaxDets::COCO)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dt.json") && err.contains("line 3, column 21") && !err.contains("at line"),
        "{err}"
    );
    // Errors found after parsing name the detections file too.
    std::fs::write(
        &dt_path,
        r#"[{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
    )
    .unwrap();
    let err = evaluate_files(&gt_path, &dt_path, MaxDets::COCO)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("dt.json") && err.contains("image id(s) 5"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A random case covering every branch the stats depend on: three categories (one without
/// ground truth), all three area ranges, crowd regions, images over 100 and 300 detections, and
/// (with `tied_scores`) many detections with equal scores.
fn random_case(seed: u64, tied_scores: bool) -> (CocoDataset, Vec<Detection>) {
    let mut rng = ssod::rng::rng_for(seed, "eval-pycocotools");
    let n_images = 30;
    let mut annotations = Vec::new();
    let mut dets = Vec::new();
    for image_id in 1..=n_images {
        let n_gt = rng.random_range(0..8);
        let mut boxes = Vec::new();
        for _ in 0..n_gt {
            let side: f64 =
                [8.0, 20.0, 45.0, 80.0, 150.0][rng.random_range(0..5)] * rng.random_range(0.7..1.3);
            let w = side * rng.random_range(0.6..1.4);
            let h = side * rng.random_range(0.6..1.4);
            let x = rng.random_range(0.0..(640.0 - w).max(1.0));
            let y = rng.random_range(0.0..(480.0 - h).max(1.0));
            let category_id = rng.random_range(1..=2);
            let iscrowd = u8::from(rng.random_bool(0.1));
            annotations.push(Annotation {
                id: annotations.len() as u64 + 1,
                image_id,
                category_id,
                bbox_xywh: [x, y, w, h],
                // An area that is not w*h (as for polygons) checks the area field is used.
                area: w * h * rng.random_range(0.6..1.0),
                iscrowd,
            });
            boxes.push(([x, y, w, h], category_id));
        }
        let n_dets = match image_id {
            1 => 350,
            2 => 150,
            _ => rng.random_range(0..40),
        };
        for _ in 0..n_dets {
            let (bbox_xywh, category_id) = if !boxes.is_empty() && rng.random_bool(0.5) {
                let ([x, y, w, h], c) = boxes[rng.random_range(0..boxes.len())];
                let j =
                    |s: f64, rng: &mut rand_chacha::ChaCha8Rng| s * rng.random_range(-0.25..0.25);
                let c = if rng.random_bool(0.9) { c } else { 3 };
                (
                    [
                        x + j(w, &mut rng),
                        y + j(h, &mut rng),
                        w * rng.random_range(0.7..1.3),
                        h * rng.random_range(0.7..1.3),
                    ],
                    c,
                )
            } else {
                let w = rng.random_range(2.0..200.0);
                let h = rng.random_range(2.0..200.0);
                (
                    [
                        rng.random_range(0.0..600.0),
                        rng.random_range(0.0..450.0),
                        w,
                        h,
                    ],
                    rng.random_range(1..=3),
                )
            };
            dets.push(det(
                image_id,
                category_id,
                bbox_xywh,
                if tied_scores {
                    // Steps of 0.05: many equal scores, ordered as pycocotools' stable sorts do.
                    (rng.random_range(0.0..1.0f64) * 20.0).round() / 20.0
                } else {
                    rng.random_range(0.0..1.0)
                },
            ));
        }
    }
    (
        dataset((1..=n_images).map(image).collect(), annotations, 3),
        dets,
    )
}

const PYCOCOTOOLS_SCRIPT: &str = r#"
import json, sys, io, contextlib
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(sys.argv[1])
    dt = gt.loadRes(sys.argv[2])
    ev = COCOeval(gt, dt, 'bbox')
    ev.params.maxDets = [int(v) for v in sys.argv[3].split(',')]
    ev.evaluate(); ev.accumulate(); ev.summarize()
print(json.dumps([float(s) for s in ev.stats]))
"#;

#[test]
fn matches_pycocotools_on_a_random_case() {
    // CI installs pycocotools (`.ci/run`); elsewhere `pip install pycocotools` to run this.
    if !common::tool_or_skip(common::runs(
        "python3",
        &["-c", "import pycocotools.coco, pycocotools.cocoeval"],
    )) {
        return;
    }
    for (seed, tied_scores) in [(7, false), (11, true)] {
        compare_with_pycocotools(seed, tied_scores);
    }
}

fn compare_with_pycocotools(seed: u64, tied_scores: bool) {
    let dir = temp_dir(&format!("pycocotools-{seed}"));
    let (gt, dets) = random_case(seed, tied_scores);
    let gt_path = dir.join("gt.json");
    let dt_path = dir.join("dt.json");
    gt.write(&gt_path).unwrap();
    ssod::data::dataset::write_json_file(&dt_path, &dets).unwrap();
    for max_dets in [MaxDets::COCO, MaxDets::STUDY] {
        let caps = format!("{},{},{}", max_dets.0[0], max_dets.0[1], max_dets.0[2]);
        let out = std::process::Command::new("python3")
            .args(["-c", PYCOCOTOOLS_SCRIPT])
            .arg(&gt_path)
            .arg(&dt_path)
            .arg(&caps)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pycocotools failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected: Vec<f64> = serde_json::from_slice(&out.stdout).unwrap();
        // Through the files (as `ssod eval`) and in memory.
        let from_files = evaluate_files(&gt_path, &dt_path, max_dets).unwrap();
        let in_memory = evaluate(&gt, &dets, max_dets).unwrap();
        assert_eq!(from_files.stats, in_memory.stats);
        assert_eq!(expected.len(), 12, "pycocotools gave {expected:?}");
        for (i, (got, want)) in in_memory.stats.iter().zip(&expected).enumerate() {
            println!(
                "seed {seed} caps {caps} {:<10} ssod {got:.12} pycocotools {want:.12}",
                in_memory.names()[i]
            );
            assert!(
                (got - want).abs() < 1e-9,
                "{caps} {}: {got} vs pycocotools {want}",
                in_memory.names()[i]
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
