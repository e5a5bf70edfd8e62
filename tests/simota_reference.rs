//! SimOTA's 2023 variant (`SimOtaMode::Centre2023`) against the official YOLOX code on random
//! cases. The release assigner is checked the same way on whole-model outputs in
//! `tests/yolox_fixture.rs` (yolox 0.3.0).
//!
//! `tests/fixtures/make_simota_2023_fixture.py` runs `YOLOXHead.get_assignments` of YOLOX's main
//! branch (centre prior of radius 1.5 only, penalty 1e6, `simota_matching`) in float32 on six
//! 96×128 images (252 anchors over strides 8/16/32, 3 classes, 3 to 7 GTs from 2 to 80 px, at
//! least two per image smaller than a stride, overlapping GTs that compete for anchors, and in
//! four images a GT one ulp from the edge of an anchor's centre window) and stores the inputs,
//! the candidate anchors, the IoU and cost matrices `simota_matching` received, and the result.
//!
//! Compared:
//! - candidates, foreground mask, matched GT and its class per foreground anchor, the foreground
//!   IoUs and the whole IoU matrix: exactly (the IoU is the same f32 expression on both sides);
//! - costs: `|ours − ref| ≤ 64·u·c₀ + 2·ulp(ref)`, u = 2⁻²⁴, c₀ the cost without the penalty.
//!   Both sides compute the same sum of C + 2 non-negative terms (C BCE terms, 3·(−ln(IoU +
//!   1e-8)), the penalty) by different f32 routes (ours: `exp_fast` sigmoid, the one-hot BCE
//!   rearranged as Σ−ln(1−p) + ln(1−p_k) − ln(p_k); PyTorch: SLEEF sigmoid and log, the BCE per
//!   class, then summed): each term is a few operations deep, so the difference is a few dozen
//!   roundings of the terms' sum, which is c₀ itself since every term is ≥ 0 (logits are within
//!   ±4, so 1 − p ≥ 0.018 and ln(1 − p) amplifies an error in p at most 55-fold, within the
//!   budget). The penalty's addition rounds at its own magnitude (ulp(1e6) = 1/16): two ulps of
//!   the total. The generator redraws any image whose top-k cuts, dynamic-k sums or conflicts
//!   are within twice this tolerance, so the exact comparison of the assignment is meaningful.
//!
//! Regenerate: `python3 tests/fixtures/make_simota_2023_fixture.py --yolox-src <YOLOX checkout>`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ssod::detect::simota::{simota_assign, simota_costs, SimOtaConfig, SimOtaInput};
use ssod::models::YoloX;
use ssod::tensor::safetensors_io::read_safetensors;

const PENALTY: f32 = 1_000_000.0;
const U: f64 = 5.960_464_477_539_063e-8; // 2⁻²⁴

struct Fixture {
    tensors: BTreeMap<String, Vec<f32>>,
    num_images: usize,
    num_classes: usize,
    hw: (usize, usize),
}

impl Fixture {
    fn open() -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/simota_2023.safetensors");
        let file = read_safetensors(&path).unwrap_or_else(|e| panic!("{e}"));
        let meta = |k: &str| -> usize {
            file.metadata
                .get(k)
                .unwrap_or_else(|| panic!("metadata `{k}` missing"))
                .parse()
                .unwrap()
        };
        Fixture {
            num_images: meta("num_images"),
            num_classes: meta("num_classes"),
            hw: (meta("height"), meta("width")),
            tensors: file
                .tensors
                .iter()
                .map(|(k, t)| (k.clone(), t.to_vec()))
                .collect(),
        }
    }

    fn get(&self, key: &str) -> &[f32] {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("tensor `{key}` missing"))
    }

    fn rows4(&self, key: &str) -> Vec<[f32; 4]> {
        self.get(key)
            .chunks(4)
            .map(|q| [q[0], q[1], q[2], q[3]])
            .collect()
    }

    fn indices(&self, key: &str) -> Vec<usize> {
        self.get(key).iter().map(|&v| v as usize).collect()
    }

    fn grid(&self) -> Vec<(f32, f32, f32)> {
        self.get("grid")
            .chunks(3)
            .map(|q| (q[0], q[1], q[2]))
            .collect()
    }
}

/// One image's inputs, owned.
struct Image {
    preds: Vec<[f32; 4]>,
    cls: Vec<f32>,
    obj: Vec<f32>,
    gt: Vec<[f32; 4]>,
    classes: Vec<usize>,
}

impl Image {
    fn load(f: &Fixture, b: usize) -> Image {
        Image {
            preds: f.rows4(&format!("{b}.pred_boxes_cxcywh")),
            cls: f.get(&format!("{b}.cls_logits")).to_vec(),
            obj: f.get(&format!("{b}.obj_logits")).to_vec(),
            gt: f.rows4(&format!("{b}.gt_boxes_cxcywh")),
            classes: f.indices(&format!("{b}.gt_classes")),
        }
    }

    fn input<'a>(
        &'a self,
        grids: &'a [(f32, f32)],
        strides: &'a [f32],
        c: usize,
    ) -> SimOtaInput<'a> {
        SimOtaInput {
            pred_boxes_cxcywh: &self.preds,
            cls_logits: &self.cls,
            obj_logits: &self.obj,
            grids,
            strides,
            gt_boxes_cxcywh: &self.gt,
            gt_classes: &self.classes,
            num_classes: c,
        }
    }
}

/// The cost tolerance (module doc): 64 roundings of the unpenalised part plus two ulps of the
/// total.
fn cost_tol(reference: f32) -> f64 {
    let unpenalised = if reference >= PENALTY {
        reference - PENALTY
    } else {
        reference
    };
    let ulp = f32::from_bits(reference.to_bits() + 1) - reference;
    64.0 * U * unpenalised as f64 + 2.0 * ulp as f64
}

#[test]
fn centre_2023_matches_the_official_yolox_assigner() {
    let f = Fixture::open();
    let grid = f.grid();
    assert_eq!(
        grid,
        YoloX::anchor_grid(f.hw.0, f.hw.1),
        "the fixture's anchor order is not ours"
    );
    let grids: Vec<(f32, f32)> = grid.iter().map(|g| (g.0, g.1)).collect();
    let strides: Vec<f32> = grid.iter().map(|g| g.2).collect();
    let cfg = SimOtaConfig::centre_2023();
    let mut failures = Vec::new();
    let mut worst_cost = 0f64; // max |ours − ref| / tolerance
    for b in 0..f.num_images {
        let img = Image::load(&f, b);
        let input = img.input(&grids, &strides, f.num_classes);
        let key = |k: &str| format!("{b}.{k}");

        let costs = simota_costs(&input, &cfg).unwrap();
        let want_cand = f.indices(&key("candidates"));
        if costs.candidates != want_cand {
            failures.push(format!(
                "image {b}: candidates differ: ours {:?}, YOLOX {want_cand:?}",
                costs.candidates
            ));
            continue; // the matrices are not comparable column by column
        }
        let n = want_cand.len();
        let (want_iou, want_cost) = (f.get(&key("ious")), f.get(&key("cost")));
        for g in 0..img.gt.len() {
            for j in 0..n {
                let (iou, want) = (costs.iou[g][j], want_iou[g * n + j]);
                if iou != want {
                    failures.push(format!(
                        "image {b}: IoU gt {g} anchor {}: ours {iou}, YOLOX {want}",
                        want_cand[j]
                    ));
                }
                let (cost, want) = (costs.cost[g][j], want_cost[g * n + j]);
                let ratio = (cost as f64 - want as f64).abs() / cost_tol(want);
                worst_cost = worst_cost.max(ratio);
                if ratio > 1.0 {
                    failures.push(format!(
                        "image {b}: cost gt {g} anchor {}: ours {cost}, YOLOX {want} (tol {:.3e})",
                        want_cand[j],
                        cost_tol(want)
                    ));
                }
            }
        }

        let asg = simota_assign(&input, &cfg).unwrap();
        let fg: Vec<bool> = f.get(&key("fg_mask")).iter().map(|&v| v != 0.0).collect();
        let matched = f.indices(&key("matched_gt"));
        let matched_classes = f.indices(&key("matched_classes"));
        let ours_classes: Vec<usize> = asg.matched_gt.iter().map(|&g| img.classes[g]).collect();
        if asg.fg_mask != fg {
            failures.push(format!(
                "image {b}: fg anchors ours {:?}, YOLOX {:?}",
                asg.fg_indices(),
                (0..fg.len()).filter(|&a| fg[a]).collect::<Vec<_>>()
            ));
        } else if asg.matched_gt != matched || ours_classes != matched_classes {
            failures.push(format!(
                "image {b}: matched GTs ours {:?} (classes {ours_classes:?}), YOLOX {matched:?} \
                 (classes {matched_classes:?})",
                asg.matched_gt
            ));
        } else if asg.pred_ious != f.get(&key("pred_ious")) {
            failures.push(format!(
                "image {b}: foreground IoUs ours {:?}, YOLOX {:?}",
                asg.pred_ious,
                f.get(&key("pred_ious"))
            ));
        }
        assert_eq!(asg.num_fg, matched.len());
        println!(
            "image {b}: {} GTs, {n} candidates, fg anchors {:?} -> GTs {:?}",
            img.gt.len(),
            asg.fg_indices(),
            asg.matched_gt
        );
    }
    println!("worst cost difference: {worst_cost:.3} of the tolerance");
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fixture holds what its checks rely on: GTs smaller than a stride, and at least one
/// (GT, anchor) pair at a window edge where YOLOX's `min(xc − (cx − r), (cx + r) − xc, …) > 0`
/// and `|xc − cx| < r` disagree in f32 (an assigner using the latter fails the comparison).
#[test]
fn the_fixture_holds_tiny_gts_and_window_edge_cases() {
    let f = Fixture::open();
    let grid = f.grid();
    let (mut tiny, mut edge_pairs) = (0, 0);
    for b in 0..f.num_images {
        let img = Image::load(&f, b);
        tiny += img.gt.iter().filter(|g| g[2] < 8.0 && g[3] < 8.0).count();
        for g in &img.gt {
            for &(gx, gy, s) in &grid {
                let (xc, yc, r) = ((gx + 0.5) * s, (gy + 0.5) * s, 1.5 * s);
                let official = (xc - (g[0] - r))
                    .min((g[0] + r) - xc)
                    .min(yc - (g[1] - r))
                    .min((g[1] + r) - yc)
                    > 0.0;
                let by_distance = (xc - g[0]).abs() < r && (yc - g[1]).abs() < r;
                edge_pairs += usize::from(official != by_distance);
            }
        }
    }
    println!("{tiny} GTs smaller than a stride, {edge_pairs} window-edge pairs");
    assert!(tiny >= 2 * f.num_images, "{tiny} GTs smaller than a stride");
    assert!(edge_pairs >= 2, "{edge_pairs} window-edge pairs");
}
