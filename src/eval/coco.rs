//! COCO bbox evaluation through `hotcoco`, reduced to pycocotools' 12 numbers.
//!
//! `hotcoco` does the matching and the accumulation (per image and category: detections sorted by
//! score, at most the largest max-dets kept, greedy matching with crowd regions as pycocotools
//! does; then the 101-point interpolated precision and the recall per IoU threshold, category,
//! area range and max-dets). The 12 summary numbers are reduced here, from those arrays, exactly
//! as pycocotools' `COCOeval.summarize` does, because `hotcoco`'s own summary reads AP at the
//! largest max-dets: with `maxDets = [100, 300, 1000]` (the study's mmdetection setting)
//! pycocotools reports the first AP at `maxDets=100` and AP50..APl at `maxDets[2]`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::data::dataset::{read_json_file, CocoDataset, Detection};
use crate::{Error, Result};

/// pycocotools' `maxDets`: three per-image detection caps, ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaxDets(pub [usize; 3]);

impl MaxDets {
    /// The study's setting (mmdetection's `proposal_nums`).
    pub const STUDY: MaxDets = MaxDets([100, 300, 1000]);
    /// COCO's standard summary.
    pub const COCO: MaxDets = MaxDets([1, 10, 100]);

    /// Three distinct positive caps, sorted ascending as pycocotools' `evaluate()` sorts them.
    pub fn new(values: &[usize]) -> Result<Self> {
        let mut sorted: Vec<usize> = values.to_vec();
        sorted.sort_unstable();
        match sorted.as_slice() {
            [a, b, c] if *a > 0 && a < b && b < c => Ok(MaxDets([*a, *b, *c])),
            _ => Err(Error::InvalidArgument(format!(
                "max-dets: expected three distinct positive numbers (e.g. 100,300,1000), got {values:?}"
            ))),
        }
    }

    /// Parse `"100,300,1000"`.
    pub fn parse(text: &str) -> Result<Self> {
        let values = text
            .split(',')
            .map(|s| {
                s.trim().parse::<usize>().map_err(|_| {
                    Error::InvalidArgument(format!(
                        "max-dets: `{}` in `{text}` is not a whole number",
                        s.trim()
                    ))
                })
            })
            .collect::<Result<Vec<usize>>>()?;
        Self::new(&values)
    }

    pub fn largest(&self) -> usize {
        self.0[2]
    }
}

impl Default for MaxDets {
    fn default() -> Self {
        MaxDets::STUDY
    }
}

/// What one of the 12 summary numbers averages (one line of pycocotools' printout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatDef {
    /// true: average precision; false: average recall.
    pub is_ap: bool,
    /// `None`: mean over IoU 0.50:0.95.
    pub iou_thr: Option<f64>,
    pub area: &'static str,
    pub max_det: usize,
}

/// The 12 definitions in pycocotools' order (`_summarizeDets`): the first AP at `maxDets=100`
/// (a literal in pycocotools, not `maxDets[2]`), the rest of the APs and the size ARs at
/// `maxDets[2]`, and one AR per cap.
pub fn stat_defs(max_dets: MaxDets) -> [StatDef; 12] {
    let [m1, m2, m3] = max_dets.0;
    let ap = |iou_thr, area, max_det| StatDef {
        is_ap: true,
        iou_thr,
        area,
        max_det,
    };
    let ar = |area, max_det| StatDef {
        is_ap: false,
        iou_thr: None,
        area,
        max_det,
    };
    [
        ap(None, "all", 100),
        ap(Some(0.5), "all", m3),
        ap(Some(0.75), "all", m3),
        ap(None, "small", m3),
        ap(None, "medium", m3),
        ap(None, "large", m3),
        ar("all", m1),
        ar("all", m2),
        ar("all", m3),
        ar("small", m3),
        ar("medium", m3),
        ar("large", m3),
    ]
}

/// Column names of the 12 stats (`AR_<m>` carries each cap).
pub fn stat_names(max_dets: MaxDets) -> [String; 12] {
    let [m1, m2, m3] = max_dets.0;
    [
        "AP".to_string(),
        "AP50".to_string(),
        "AP75".to_string(),
        "AP_small".to_string(),
        "AP_medium".to_string(),
        "AP_large".to_string(),
        format!("AR_{m1}"),
        format!("AR_{m2}"),
        format!("AR_{m3}"),
        "AR_small".to_string(),
        "AR_medium".to_string(),
        "AR_large".to_string(),
    ]
}

/// AP of one category at area "all" and the largest cap (mmdetection's `classwise` table).
/// `-1.0` when the category has no ground truth (pycocotools' "not computed").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAp {
    pub category_id: u64,
    pub name: String,
    /// Mean over IoU 0.50:0.95.
    pub ap: f64,
    pub ap50: f64,
}

/// pycocotools' `eval['precision']`: interpolated precision `[T, R, K, A, M]`, row-major
/// (T IoU thresholds, R = 101 recall thresholds, K categories, A area ranges, M caps);
/// `-1.0` where a category has no ground truth in that area range.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionArray {
    pub values: Vec<f64>,
    pub iou_thrs: Vec<f64>,
    pub rec_thrs: Vec<f64>,
    pub category_ids: Vec<u64>,
    /// `all, small, medium, large`.
    pub area_labels: Vec<String>,
    pub max_dets: MaxDets,
}

impl PrecisionArray {
    fn index(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        let (nr, nk, na) = (
            self.rec_thrs.len(),
            self.category_ids.len(),
            self.area_labels.len(),
        );
        (((t * nr + r) * nk + k) * na + a) * 3 + m
    }

    /// Precision-recall curve at IoU `iou_thr`, area "all", the largest cap: one
    /// `(recall, precision)` point per recall threshold. `category_id: None` averages the
    /// categories that have ground truth (as mmdetection's PR plots do).
    pub fn pr_curve(&self, iou_thr: f64, category_id: Option<u64>) -> Result<Vec<(f64, f64)>> {
        let t = self
            .iou_thrs
            .iter()
            .position(|&x| (x - iou_thr).abs() < 1e-9)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "pr_curve: IoU {iou_thr} is not one of {:?}",
                    self.iou_thrs
                ))
            })?;
        let ks: Vec<usize> = match category_id {
            Some(id) => vec![self
                .category_ids
                .iter()
                .position(|&c| c == id)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "pr_curve: category id {id} is not in the ground truth"
                    ))
                })?],
            None => (0..self.category_ids.len()).collect(),
        };
        let (a, m) = (0, 2);
        let mut curve = Vec::with_capacity(self.rec_thrs.len());
        for (r, &recall) in self.rec_thrs.iter().enumerate() {
            let valid: Vec<f64> = ks
                .iter()
                .map(|&k| self.values[self.index(t, r, k, a, m)])
                .filter(|&p| p > -1.0)
                .collect();
            if !valid.is_empty() {
                curve.push((recall, valid.iter().sum::<f64>() / valid.len() as f64));
            }
        }
        Ok(curve)
    }
}

/// Everything one evaluation produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub max_dets: MaxDets,
    /// pycocotools' `stats`, in its order; `-1.0` where nothing could be computed.
    pub stats: [f64; 12],
    pub per_class: Vec<ClassAp>,
    pub precision: PrecisionArray,
    /// Things the user should know that did not stop the evaluation (e.g. no detections).
    pub warnings: Vec<String>,
}

impl Metrics {
    pub fn names(&self) -> [String; 12] {
        stat_names(self.max_dets)
    }

    /// A stat by its name (`"AP"`, `"AP50"`, `"AR_100"`, `"AP_small"`, ...).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.names()
            .iter()
            .position(|n| n == name)
            .map(|i| self.stats[i])
    }

    /// The 12 stats with their names, in pycocotools' order.
    pub fn named_stats(&self) -> Vec<(String, f64)> {
        self.names().into_iter().zip(self.stats).collect()
    }

    pub fn ap(&self) -> f64 {
        self.stats[0]
    }
    pub fn ap50(&self) -> f64 {
        self.stats[1]
    }
    pub fn ap75(&self) -> f64 {
        self.stats[2]
    }

    /// pycocotools' 12-line printout, character for character.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (def, value) in stat_defs(self.max_dets).iter().zip(self.stats) {
            // pycocotools: ' {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}'
            let (title, kind) = if def.is_ap {
                ("Average Precision", "(AP)")
            } else {
                ("Average Recall", "(AR)")
            };
            let iou = match def.iou_thr {
                Some(t) => format!("{t:0.2}"),
                None => "0.50:0.95".to_string(),
            };
            out.push_str(&format!(
                " {title:<18} {kind} @[ IoU={iou:<9} | area={:>6} | maxDets={:>3} ] = {value:0.3}\n",
                def.area, def.max_det
            ));
        }
        out
    }

    /// `{"stats": [...], "names": [...], "max_dets": [...]}` plus `per_class` when asked.
    pub fn to_json(&self, with_per_class: bool) -> serde_json::Value {
        let mut value = serde_json::json!({
            "stats": self.stats,
            "names": self.names(),
            "max_dets": self.max_dets.0,
        });
        if with_per_class {
            value["per_class"] = serde_json::to_value(&self.per_class).unwrap_or_default();
        }
        value
    }

    /// One header row and one value row (`AP,AP50,...,AR_<m1>,...`).
    pub fn to_csv(&self) -> Result<String> {
        let values: Vec<String> = self.stats.iter().map(|v| format!("{v}")).collect();
        crate::csv_table::csv_string(&self.names(), &[values])
    }

    /// Per-class table (AP and AP50), as markdown.
    pub fn per_class_table(&self) -> String {
        let mut out = String::from("| category | id | AP | AP50 |\n|---|---|---|---|\n");
        for c in &self.per_class {
            let fmt = |v: f64| {
                if v < 0.0 {
                    "n/a".to_string()
                } else {
                    format!("{v:.3}")
                }
            };
            out.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                c.name,
                c.category_id,
                fmt(c.ap),
                fmt(c.ap50)
            ));
        }
        out
    }
}

/// Read a COCO results file (`[{image_id, category_id, bbox, score}]`); malformed json is
/// reported with file, line and column.
pub fn read_detections(path: &Path) -> Result<Vec<Detection>> {
    read_json_file(path)
}

/// Check detections against the ground truth before evaluating: pycocotools' `loadRes` asserts
/// that every image id is in the ground truth; we also refuse unknown categories (they would
/// silently count for nothing), negative box sizes and non-finite numbers, naming ids and indices.
pub fn validate_detections(gt: &CocoDataset, detections: &[Detection]) -> Result<()> {
    let image_ids: HashSet<u64> = gt.images.iter().map(|im| im.id).collect();
    let category_ids: HashSet<u64> = gt.categories.iter().map(|c| c.id).collect();
    let mut unknown_images = BTreeSet::new();
    let mut unknown_categories = BTreeSet::new();
    let mut first_unknown_image = None;
    let mut first_unknown_category = None;
    for (i, d) in detections.iter().enumerate() {
        let [_, _, w, h] = d.bbox_xywh;
        if d.bbox_xywh.iter().any(|v| !v.is_finite()) || !d.score.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "detections[{i}]: bbox {:?} / score {} is not finite",
                d.bbox_xywh, d.score
            )));
        }
        if w < 0.0 || h < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "detections[{i}]: bbox [x, y, w, h] = {:?} has a negative width or height",
                d.bbox_xywh
            )));
        }
        if !image_ids.contains(&d.image_id) {
            first_unknown_image.get_or_insert(i);
            unknown_images.insert(d.image_id);
        }
        if !category_ids.contains(&d.category_id) {
            first_unknown_category.get_or_insert(i);
            unknown_categories.insert(d.category_id);
        }
    }
    let list = |ids: &BTreeSet<u64>| {
        let shown: Vec<String> = ids.iter().take(10).map(u64::to_string).collect();
        let more = if ids.len() > 10 {
            format!(" and {} more", ids.len() - 10)
        } else {
            String::new()
        };
        format!("{}{more}", shown.join(", "))
    };
    if let Some(i) = first_unknown_image {
        return Err(Error::InvalidArgument(format!(
            "detections: image id(s) {} are not in the ground truth (first at detections[{i}])",
            list(&unknown_images)
        )));
    }
    if let Some(i) = first_unknown_category {
        return Err(Error::InvalidArgument(format!(
            "detections: category id(s) {} are not in the ground truth (first at detections[{i}])",
            list(&unknown_categories)
        )));
    }
    Ok(())
}

fn to_hotcoco_gt(gt: &CocoDataset) -> hotcoco::Dataset {
    hotcoco::Dataset {
        images: gt
            .images
            .iter()
            .map(|im| hotcoco::Image {
                id: im.id,
                file_name: im.file_name.clone(),
                width: im.width,
                height: im.height,
                ..Default::default()
            })
            .collect(),
        annotations: gt
            .annotations
            .iter()
            .map(|a| hotcoco::Annotation {
                id: a.id,
                image_id: a.image_id,
                category_id: a.category_id,
                bbox: Some(a.bbox_xywh),
                // pycocotools puts ground truth in an area range by its `area` field, not by
                // the box: keep the file's value.
                area: Some(a.area),
                iscrowd: a.iscrowd != 0,
                ..Default::default()
            })
            .collect(),
        categories: gt
            .categories
            .iter()
            .map(|c| hotcoco::Category {
                id: c.id,
                name: c.name.clone(),
                supercategory: c.supercategory.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

fn to_hotcoco_detections(detections: &[Detection]) -> Vec<hotcoco::Annotation> {
    detections
        .iter()
        .map(|d| hotcoco::Annotation {
            image_id: d.image_id,
            category_id: d.category_id,
            bbox: Some(d.bbox_xywh),
            score: Some(d.score),
            // `load_res_anns` fills id (1-based), area = w*h and iscrowd = 0 as `loadRes` does.
            ..Default::default()
        })
        .collect()
}

fn hotcoco_err(e: hotcoco::Error) -> Error {
    Error::Msg(format!("coco evaluation: {e}"))
}

/// Mean of the entries above -1 (pycocotools: `np.mean(s[s > -1])`, or -1 when none).
fn mean_of_valid(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut n) = (0.0, 0usize);
    for v in values.filter(|&v| v > -1.0) {
        sum += v;
        n += 1;
    }
    if n == 0 {
        -1.0
    } else {
        sum / n as f64
    }
}

/// Evaluate detections against a ground-truth dataset in memory (bbox, COCO protocol).
///
/// The numbers are pycocotools' for the same inputs. An empty detection list gives zeros (where
/// there is ground truth) and a warning in `Metrics::warnings`.
pub fn evaluate(gt: &CocoDataset, detections: &[Detection], max_dets: MaxDets) -> Result<Metrics> {
    gt.validate("ground truth")?;
    validate_detections(gt, detections)?;
    let mut warnings = Vec::new();
    if detections.is_empty() {
        warnings.push(
            "no detections: every metric is 0 (or -1 where there is no ground truth)".to_string(),
        );
    }
    if gt.annotations.is_empty() {
        warnings.push(
            "the ground truth has no annotations: every metric is -1 (not computed)".to_string(),
        );
    }

    let coco_gt = hotcoco::COCO::from_dataset(to_hotcoco_gt(gt));
    let coco_dt = coco_gt
        .load_res_anns(to_hotcoco_detections(detections))
        .map_err(hotcoco_err)?;
    let mut ev = hotcoco::COCOeval::new(coco_gt, coco_dt, hotcoco::IouType::Bbox);
    ev.params.max_dets = max_dets.0.to_vec();
    ev.evaluate().map_err(hotcoco_err)?;
    ev.accumulate();
    let acc = ev
        .accumulated()
        .ok_or_else(|| Error::Msg("coco evaluation: accumulate() produced nothing".into()))?;
    let params = &ev.params;
    let shape = acc.shape;
    let area_labels: Vec<String> = params.area_ranges.iter().map(|a| a.label.clone()).collect();

    // pycocotools `_summarize`: slice precision [T,R,K,A,M] (or recall [T,K,A,M]) at one area
    // range and one cap (and one IoU threshold when given), mean of the entries > -1.
    let stat =
        |def: &StatDef| -> f64 {
            let Some(a) = area_labels.iter().position(|l| l == def.area) else {
                return -1.0;
            };
            // `mind = [i for i, mDet in enumerate(p.maxDets) if mDet == maxDets]`: empty when the cap
            // is not one of the three, which makes the mean -1.
            let Some(m) = max_dets.0.iter().position(|&d| d == def.max_det) else {
                return -1.0;
            };
            let ts: Vec<usize> = match def.iou_thr {
                Some(thr) => params.iou_thr_idx(thr).into_iter().collect(),
                None => (0..shape.t).collect(),
            };
            if def.is_ap {
                mean_of_valid(ts.iter().flat_map(|&t| {
                    (0..shape.r).flat_map(move |r| {
                        (0..shape.k).map(move |k| acc.precision[acc.precision_idx(t, r, k, a, m)])
                    })
                }))
            } else {
                mean_of_valid(ts.iter().flat_map(|&t| {
                    (0..shape.k).map(move |k| acc.recall[acc.recall_idx(t, k, a, m)])
                }))
            }
        };
    let defs = stat_defs(max_dets);
    let mut stats = [0.0; 12];
    for (s, def) in stats.iter_mut().zip(defs.iter()) {
        *s = stat(def);
    }

    // Per-class AP as mmdetection's `classwise`: precision[:, :, k, area all, last cap].
    let names: BTreeMap<u64, &str> = gt
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    let a_all = area_labels.iter().position(|l| l == "all").unwrap_or(0);
    let t50 = params.iou_thr_idx(0.5);
    let per_class = acc
        .cat_ids
        .iter()
        .enumerate()
        .map(|(k, &id)| {
            let ap = mean_of_valid((0..shape.t).flat_map(|t| {
                (0..shape.r).map(move |r| acc.precision[acc.precision_idx(t, r, k, a_all, 2)])
            }));
            let ap50 = match t50 {
                Some(t) => mean_of_valid(
                    (0..shape.r).map(|r| acc.precision[acc.precision_idx(t, r, k, a_all, 2)]),
                ),
                None => -1.0,
            };
            ClassAp {
                category_id: id,
                name: names.get(&id).copied().unwrap_or_default().to_string(),
                ap,
                ap50,
            }
        })
        .collect();

    Ok(Metrics {
        max_dets,
        stats,
        per_class,
        precision: PrecisionArray {
            values: acc.precision.clone(),
            iou_thrs: params.iou_thrs.clone(),
            rec_thrs: params.rec_thrs.clone(),
            category_ids: acc.cat_ids.clone(),
            area_labels,
            max_dets,
        },
        warnings,
    })
}

/// Evaluate two files: a COCO ground-truth json and a COCO results json. Errors in the
/// detections name the results file.
pub fn evaluate_files(gt_path: &Path, dt_path: &Path, max_dets: MaxDets) -> Result<Metrics> {
    let gt = CocoDataset::read(gt_path)?;
    let detections = read_detections(dt_path)?;
    validate_detections(&gt, &detections)
        .map_err(|e| Error::format(dt_path.display(), e.to_string()))?;
    evaluate(&gt, &detections, max_dets)
}
