//! Detection pieces in Rhai: `simota_assign(#{...})` and `box_loss(pred, target, kind)`.

use rhai::{Array, Dynamic, Map, INT};

use super::Api;
use crate::detect::loss::{box_loss, BoxLossKind};
use crate::detect::simota::{simota_assign, SimOtaConfig, SimOtaInput, SimOtaMode};
use crate::detect::simota_stats::{AssignmentStats, BucketCounts};
use crate::script::convert::{lift, script_err, Opts, ScriptResult};
use crate::Tensor;

fn tensor_arg(map: &Map, key: &str) -> ScriptResult<Tensor> {
    map.get(key)
        .ok_or_else(|| script_err(format!("simota_assign: missing `{key}`")))?
        .clone()
        .try_cast::<Tensor>()
        .ok_or_else(|| script_err(format!("simota_assign: `{key}` must be a Tensor")))
}

fn rows4(op: &str, key: &str, t: &Tensor) -> ScriptResult<Vec<[f32; 4]>> {
    if t.rank() != 2 || t.dims()[1] != 4 {
        return Err(script_err(format!(
            "{op}: `{key}` must be [N, 4] (cxcywh), got {}",
            t.shape()
        )));
    }
    Ok(t.to_vec()
        .chunks(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}

/// One size bucket's counts as a Rhai map, with the columns of `simota.csv` (`epoch` when
/// given; `mean_positive_iou` NaN without positives).
pub fn simota_row_map(epoch: Option<usize>, bucket: &str, c: &BucketCounts) -> Map {
    let mut m = Map::new();
    if let Some(e) = epoch {
        m.insert("epoch".into(), Dynamic::from(e as INT));
    }
    m.insert("bucket".into(), Dynamic::from(bucket.to_string()));
    for (k, v) in [
        ("gts", c.gts),
        ("unmatched_gts", c.unmatched_gts),
        ("positives", c.positives),
        ("positives_iou0", c.positives_iou0),
    ] {
        m.insert(k.into(), Dynamic::from(v as INT));
    }
    m.insert(
        "mean_positive_iou".into(),
        Dynamic::from_float(c.mean_positive_iou()),
    );
    m
}

fn simota(map: Map) -> ScriptResult<Map> {
    const KEYS: &[&str] = &[
        "pred_boxes",
        "cls_logits",
        "obj_logits",
        "grids",
        "strides",
        "gt_boxes",
        "gt_classes",
        "center_radius",
        "mode",
    ];
    let opts = Opts::new("simota_assign", &map, KEYS)?;
    let pred = rows4(
        "simota_assign",
        "pred_boxes",
        &tensor_arg(&map, "pred_boxes")?,
    )?;
    let a = pred.len();
    let cls = tensor_arg(&map, "cls_logits")?;
    if cls.rank() != 2 || cls.dims()[0] != a {
        return Err(script_err(format!(
            "simota_assign: `cls_logits` must be [{a}, C], got {}",
            cls.shape()
        )));
    }
    let num_classes = cls.dims()[1];
    let obj = tensor_arg(&map, "obj_logits")?;
    if obj.numel() != a {
        return Err(script_err(format!(
            "simota_assign: `obj_logits` must be [{a}] or [{a}, 1], got {}",
            obj.shape()
        )));
    }
    let grids_t = tensor_arg(&map, "grids")?;
    if grids_t.dims() != [a, 2] {
        return Err(script_err(format!(
            "simota_assign: `grids` must be [{a}, 2], got {}",
            grids_t.shape()
        )));
    }
    let grids: Vec<(f32, f32)> = grids_t.to_vec().chunks(2).map(|g| (g[0], g[1])).collect();
    let strides = tensor_arg(&map, "strides")?;
    if strides.numel() != a {
        return Err(script_err(format!(
            "simota_assign: `strides` must be [{a}], got {}",
            strides.shape()
        )));
    }
    let gt_t = tensor_arg(&map, "gt_boxes")?;
    let gt = if gt_t.numel() == 0 {
        Vec::new()
    } else {
        rows4("simota_assign", "gt_boxes", &gt_t)?
    };
    let gt_classes: Vec<usize> = tensor_arg(&map, "gt_classes")?
        .to_vec()
        .iter()
        .map(|&c| {
            if c >= 0.0 && c.fract() == 0.0 {
                Ok(c as usize)
            } else {
                Err(script_err(format!(
                    "simota_assign: gt class {c} is not a class id"
                )))
            }
        })
        .collect::<ScriptResult<_>>()?;
    let mode = match map.get("mode") {
        Some(m) => lift(SimOtaMode::parse(&m.to_string()))?,
        None => SimOtaMode::Release,
    };
    let default_radius = if mode == SimOtaMode::Release {
        2.5
    } else {
        1.5
    };
    let cfg = SimOtaConfig {
        mode,
        center_radius: opts.float("center_radius", default_radius)? as f32,
    };
    let assignment = lift(simota_assign(
        &SimOtaInput {
            pred_boxes_cxcywh: &pred,
            cls_logits: &cls.to_vec(),
            obj_logits: &obj.to_vec(),
            grids: &grids,
            strides: &strides.to_vec(),
            gt_boxes_cxcywh: &gt,
            gt_classes: &gt_classes,
            num_classes,
        },
        &cfg,
    ))?;
    let mut out = Map::new();
    let stats = AssignmentStats::from_assignments([(gt.as_slice(), &assignment)]);
    let rows: Array = stats
        .named()
        .map(|(name, c)| Dynamic::from_map(simota_row_map(None, name, c)))
        .collect();
    out.insert("stats".into(), Dynamic::from_array(rows));
    let fg: Vec<f32> = assignment.fg_mask.iter().map(|&f| f as u8 as f32).collect();
    out.insert(
        "fg_mask".into(),
        Dynamic::from(lift(Tensor::from_vec(fg, [a]))?),
    );
    let matched: Vec<f32> = assignment.matched_gt.iter().map(|&g| g as f32).collect();
    let n = matched.len();
    out.insert(
        "matched_gt".into(),
        Dynamic::from(lift(Tensor::from_vec(matched, [n]))?),
    );
    out.insert(
        "pred_ious".into(),
        Dynamic::from(lift(Tensor::from_vec(assignment.pred_ious, [n]))?),
    );
    out.insert("num_fg".into(), Dynamic::from(assignment.num_fg as INT));
    Ok(out)
}

pub fn register(api: &mut Api) {
    func!(api, "simota_assign", &["inputs: Map"], "Map",
        "SimOTA for one image. inputs: pred_boxes [A,4] cxcywh, cls_logits [A,C], obj_logits [A], grids [A,2], strides [A], gt_boxes [G,4] cxcywh, gt_classes [G], center_radius (2.5), mode (\"release\" | \"2023\"). Returns fg_mask, matched_gt, pred_ious, num_fg, and stats: per size bucket of sqrt(w·h) (<8, 8-16, 16-32, 32-96, >=96 px) #{bucket, gts, unmatched_gts, positives, positives_iou0, mean_positive_iou}, the counts of a run's simota.csv.",
        simota);
    func!(api, "box_loss", &["pred_xyxy: Tensor", "target_xyxy: Tensor", "kind: String"], "Tensor",
        "Per-box loss [N] of kind iou (1 - IoU²), giou, ciou (mmdet) or ciou_tv (torchvision); differentiable.",
        |p: Tensor, t: Tensor, kind: &str| -> ScriptResult<Tensor> { lift(box_loss(&p, &t, lift(BoxLossKind::parse(kind))?)) });
}
