//! SimOTA label assignment for one image (no gradients), as YOLOX does it (docs/yolox.md §3):
//!
//! 1. geometry prior: anchor centre `((gx + 0.5)·s, (gy + 0.5)·s)` inside the GT box, or within
//!    `center_radius·s` of its centre (release), or only the latter with radius 1.5 (2023 variant);
//! 2. cost on the candidates: `cls + 3·(−log(IoU + 1e-8)) + penalty·¬prior`, the class cost being
//!    BCE of `sqrt(σ(cls)·σ(obj))` against a plain one-hot target;
//! 3. dynamic k per GT: `max(1, int(Σ top-10 IoUs))`, the k cheapest candidates;
//! 4. an anchor picked by several GTs goes to the cheapest GT over all GTs.

use crate::{Error, Result};

/// Which YOLOX assigner to reproduce (config names: release, 2023).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SimOtaMode {
    /// 2021-07..2022-12 (the published weights; mmdet's SimOTAAssigner): in-box OR in-centre
    /// candidates, penalty 1e5 for anchors not in both.
    #[serde(rename = "release", alias = "Release")]
    Release,
    /// Commit 14c62a7 (2023-01): centre prior only, penalty 1e6 outside it (checked against
    /// YOLOX's main branch in `tests/simota_reference.rs`).
    #[serde(rename = "2023", alias = "current")]
    Centre2023,
}

impl SimOtaMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "release" => Ok(SimOtaMode::Release),
            "2023" | "centre2023" | "center2023" => Ok(SimOtaMode::Centre2023),
            other => Err(Error::InvalidArgument(format!(
                "unknown SimOTA mode `{other}` (release, 2023)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimOtaConfig {
    pub mode: SimOtaMode,
    /// Centre-prior radius in strides: 2.5 (release), 1.5 (2023 variant).
    pub center_radius: f32,
}

impl Default for SimOtaConfig {
    fn default() -> Self {
        SimOtaConfig {
            mode: SimOtaMode::Release,
            center_radius: 2.5,
        }
    }
}

impl SimOtaConfig {
    /// The 2023 variant with its radius.
    pub fn centre_2023() -> Self {
        SimOtaConfig {
            mode: SimOtaMode::Centre2023,
            center_radius: 1.5,
        }
    }
}

/// One image's predictions and ground truth, as plain slices.
pub struct SimOtaInput<'a> {
    /// Decoded predicted boxes, cxcywh input pixels, one per anchor.
    pub pred_boxes_cxcywh: &'a [[f32; 4]],
    /// Class logits, `[A, C]` row-major.
    pub cls_logits: &'a [f32],
    /// Objectness logits, `[A]`.
    pub obj_logits: &'a [f32],
    /// Anchor grid cell `(gx, gy)` and stride of each anchor.
    pub grids: &'a [(f32, f32)],
    pub strides: &'a [f32],
    /// Ground-truth boxes, cxcywh input pixels, and class ids in `0..C`.
    pub gt_boxes_cxcywh: &'a [[f32; 4]],
    pub gt_classes: &'a [usize],
    pub num_classes: usize,
}

/// The assignment of one image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignment {
    /// Foreground flag per anchor.
    pub fg_mask: Vec<bool>,
    /// For each foreground anchor, in anchor order: its GT index.
    pub matched_gt: Vec<usize>,
    /// For each foreground anchor: IoU of its prediction with its GT (the soft class target).
    pub pred_ious: Vec<f32>,
    pub num_fg: usize,
}

impl Assignment {
    /// Indices of the foreground anchors, in anchor order.
    pub fn fg_indices(&self) -> Vec<usize> {
        self.fg_mask
            .iter()
            .enumerate()
            .filter(|(_, &f)| f)
            .map(|(i, _)| i)
            .collect()
    }
}

/// IoU of two cxcywh boxes, `inter / (area_a + area_b − inter)` without eps (YOLOX bboxes_iou);
/// 0 when the union is empty.
pub fn iou_cxcywh(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let (ax1, ay1, ax2, ay2) = (
        a[0] - a[2] / 2.0,
        a[1] - a[3] / 2.0,
        a[0] + a[2] / 2.0,
        a[1] + a[3] / 2.0,
    );
    let (bx1, by1, bx2, by2) = (
        b[0] - b[2] / 2.0,
        b[1] - b[3] / 2.0,
        b[0] + b[2] / 2.0,
        b[1] + b[3] / 2.0,
    );
    let (tlx, tly, brx, bry) = (ax1.max(bx1), ay1.max(by1), ax2.min(bx2), ay2.min(by2));
    let inter = if tlx < brx && tly < bry {
        (brx - tlx) * (bry - tly)
    } else {
        0.0
    };
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

fn validate(inp: &SimOtaInput, zero_size_ok: bool) -> Result<usize> {
    let a = inp.pred_boxes_cxcywh.len();
    let c = inp.num_classes;
    let shape_err = |what: &str, got: usize, want: usize| Error::ShapeMismatch {
        op: "simota_assign".into(),
        expected: format!("{what} of length {want}"),
        got: format!("length {got}"),
    };
    if inp.cls_logits.len() != a * c {
        return Err(shape_err("cls_logits [A, C]", inp.cls_logits.len(), a * c));
    }
    if inp.obj_logits.len() != a {
        return Err(shape_err("obj_logits [A]", inp.obj_logits.len(), a));
    }
    if inp.grids.len() != a || inp.strides.len() != a {
        return Err(shape_err(
            "grids/strides [A]",
            inp.grids.len().min(inp.strides.len()),
            a,
        ));
    }
    if inp.gt_classes.len() != inp.gt_boxes_cxcywh.len() {
        return Err(shape_err(
            "gt_classes [G]",
            inp.gt_classes.len(),
            inp.gt_boxes_cxcywh.len(),
        ));
    }
    for (g, (b, &k)) in inp.gt_boxes_cxcywh.iter().zip(inp.gt_classes).enumerate() {
        let sized = if zero_size_ok {
            b[2] >= 0.0 && b[3] >= 0.0
        } else {
            b[2] > 0.0 && b[3] > 0.0
        };
        if !sized || b.iter().any(|v| !v.is_finite()) {
            let need = if zero_size_ok {
                "a negative or non-finite size"
            } else {
                "no positive width and height"
            };
            return Err(Error::op(
                "simota_assign",
                format!("gt box {g} {b:?} (cxcywh) has {need}"),
            ));
        }
        if k >= c {
            return Err(Error::op(
                "simota_assign",
                format!("gt class {k} of box {g} is not in 0..{c}"),
            ));
        }
    }
    let bad = |v: &f32| !v.is_finite();
    if let Some(i) = inp.pred_boxes_cxcywh.iter().position(|b| b.iter().any(bad)) {
        return Err(Error::op(
            "simota_assign",
            format!(
                "predicted box of anchor {i} is not finite (NaN/Inf): {:?}",
                inp.pred_boxes_cxcywh[i]
            ),
        ));
    }
    if let Some(i) = inp.cls_logits.iter().chain(inp.obj_logits).position(bad) {
        return Err(Error::op(
            "simota_assign",
            format!("logit {i} is not finite (NaN/Inf)"),
        ));
    }
    Ok(a)
}

fn sigmoid(x: f32) -> f32 {
    crate::ops::sigmoid_scalar(x)
}

/// Assign anchors to ground truth for one image; every GT box must have a positive width and
/// height.
pub fn simota_assign(inp: &SimOtaInput, cfg: &SimOtaConfig) -> Result<Assignment> {
    assign(inp, cfg, false)
}

/// [`simota_assign`] with zero-size GT boxes taken as YOLOX takes them (a mosaic's fallback
/// keeps them, `augment::yolox_label_rows`): no anchor is inside one and every IoU with it is
/// 0, so its dynamic k is 1 and it takes the cheapest anchor of its centre prior (all of them
/// carry the penalty), with IoU 0. The training loss assigns with this one.
pub fn simota_assign_with_zero_size(inp: &SimOtaInput, cfg: &SimOtaConfig) -> Result<Assignment> {
    assign(inp, cfg, true)
}

/// Steps 1 and 2 for one image: the candidate anchors (those passing the geometry prior of some
/// GT) and, per (GT, candidate), the IoU and the cost SimOTA ranks them by. Exposed so that the
/// cost matrix itself can be checked against the official YOLOX code (`tests/simota_reference.rs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimOtaCosts {
    /// Candidate anchor indices, ascending.
    pub candidates: Vec<usize>,
    /// `[G][candidates]`: IoU of the GT with the candidate's predicted box.
    pub iou: Vec<Vec<f32>>,
    /// `[G][candidates]`: class cost + 3·IoU cost + the penalty outside the prior.
    pub cost: Vec<Vec<f32>>,
}

/// The candidates and cost matrix [`simota_assign`] works on (same validation).
pub fn simota_costs(inp: &SimOtaInput, cfg: &SimOtaConfig) -> Result<SimOtaCosts> {
    validate(inp, false)?;
    Ok(costs(inp, cfg))
}

/// Whether the anchor centre `(xc, yc)` is strictly inside the box `[l, r] × [t, b]`, written as
/// YOLOX writes it: `min(xc − l, r − xc, yc − t, b − yc) > 0` with the edges rounded to f32
/// first. `|xc − cx| < radius` is the same in real numbers but not in f32: one ulp from an edge
/// the two round differently (`tests/simota_reference.rs` holds such a case).
fn inside(xc: f32, yc: f32, l: f32, r: f32, t: f32, b: f32) -> bool {
    (xc - l).min(r - xc).min(yc - t).min(b - yc) > 0.0
}

fn costs(inp: &SimOtaInput, cfg: &SimOtaConfig) -> SimOtaCosts {
    let num_anchors = inp.pred_boxes_cxcywh.len();
    let num_gt = inp.gt_boxes_cxcywh.len();
    let c = inp.num_classes;
    let mut out = SimOtaCosts::default();
    if num_gt == 0 || num_anchors == 0 {
        return out;
    }

    // 1. Geometry prior per (gt, anchor), on the anchor centre with the 0.5 offset.
    let mut prior_ok: Vec<Vec<bool>> = Vec::new(); // [candidate][gt]: not penalised
    for a in 0..num_anchors {
        let s = inp.strides[a];
        let (xc, yc) = ((inp.grids[a].0 + 0.5) * s, (inp.grids[a].1 + 0.5) * s);
        let r = cfg.center_radius * s;
        let mut any = false;
        let mut ok = vec![false; num_gt];
        for (g, b) in inp.gt_boxes_cxcywh.iter().enumerate() {
            let in_ctr = inside(xc, yc, b[0] - r, b[0] + r, b[1] - r, b[1] + r);
            match cfg.mode {
                SimOtaMode::Release => {
                    let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
                    let in_box = inside(xc, yc, b[0] - hw, b[0] + hw, b[1] - hh, b[1] + hh);
                    any |= in_box || in_ctr;
                    ok[g] = in_box && in_ctr;
                }
                SimOtaMode::Centre2023 => {
                    any |= in_ctr;
                    ok[g] = in_ctr;
                }
            }
        }
        if any {
            out.candidates.push(a);
            prior_ok.push(ok);
        }
    }
    let n = out.candidates.len();
    let penalty = match cfg.mode {
        SimOtaMode::Release => 100_000.0f32,
        SimOtaMode::Centre2023 => 1_000_000.0,
    };

    // 2. Pairwise IoU and cost, [gt][candidate].
    out.iou = vec![vec![0f32; n]; num_gt];
    out.cost = vec![vec![0f32; n]; num_gt];
    // BCE(p, onehot(k)) summed over classes = Σ_c −log(1−p_c) + log(1−p_k) − log(p_k), with
    // logs clamped at −100 as F.binary_cross_entropy does.
    let log_clamped = |v: f32| v.ln().max(-100.0);
    for (j, &a) in out.candidates.iter().enumerate() {
        let obj = sigmoid(inp.obj_logits[a]);
        let p: Vec<f32> = (0..c)
            .map(|k| (sigmoid(inp.cls_logits[a * c + k]) * obj).sqrt())
            .collect();
        let neg_sum: f32 = p.iter().map(|&pk| -log_clamped(1.0 - pk)).sum();
        let gts = inp.gt_classes.iter().zip(inp.gt_boxes_cxcywh);
        for (g, ((&k, gt_box), &in_prior)) in gts.zip(&prior_ok[j]).enumerate() {
            let cls_cost = neg_sum + log_clamped(1.0 - p[k]) - log_clamped(p[k]);
            let v = iou_cxcywh(gt_box, &inp.pred_boxes_cxcywh[a]);
            out.iou[g][j] = v;
            let not_prior = if in_prior { 0.0 } else { penalty };
            out.cost[g][j] = cls_cost + 3.0 * -(v + 1e-8).ln() + not_prior;
        }
    }
    out
}

fn assign(inp: &SimOtaInput, cfg: &SimOtaConfig, zero_size_ok: bool) -> Result<Assignment> {
    let num_anchors = validate(inp, zero_size_ok)?;
    let num_gt = inp.gt_boxes_cxcywh.len();
    let mut out = Assignment {
        fg_mask: vec![false; num_anchors],
        ..Default::default()
    };
    let SimOtaCosts {
        candidates,
        iou,
        cost,
    } = costs(inp, cfg);
    let n = candidates.len();
    if n == 0 {
        return Ok(out);
    }

    // 3. Dynamic k and the k cheapest candidates per GT.
    let k_cand = n.min(10);
    let mut matches: Vec<Vec<usize>> = vec![Vec::new(); n]; // candidate -> GTs that picked it
    for g in 0..num_gt {
        let mut ious = iou[g].clone();
        ious.sort_by(|a, b| b.total_cmp(a));
        let dynamic_k = (ious[..k_cand].iter().sum::<f32>() as usize).max(1);
        let mut order: Vec<usize> = (0..n).collect();
        // Stable sort: among equal costs the lower anchor index wins (deterministic).
        order.sort_by(|&x, &y| cost[g][x].total_cmp(&cost[g][y]));
        for &j in &order[..dynamic_k.min(n)] {
            matches[j].push(g);
        }
    }

    // 4. Conflicts: an anchor picked by several GTs goes to the cheapest GT over all GTs.
    for (j, &a) in candidates.iter().enumerate() {
        let gt = match matches[j].len() {
            0 => continue,
            1 => matches[j][0],
            _ => (0..num_gt)
                .min_by(|&x, &y| cost[x][j].total_cmp(&cost[y][j]))
                .unwrap_or(0),
        };
        out.fg_mask[a] = true;
        out.matched_gt.push(gt);
        out.pred_ious.push(iou[gt][j]);
    }
    out.num_fg = out.matched_gt.len();
    Ok(out)
}
