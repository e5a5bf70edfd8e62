//! COCO evaluation (pycocotools' numbers, through hotcoco), metric exports and plots.
//!
//! - [`coco`]: `evaluate(gt, detections, max_dets) -> Metrics`, the 12-line summary, json/csv.
//! - [`metrics_csv`]: the per-run `metrics.csv` (one row per epoch; COCO stats on evaluation
//!   epochs).
//! - [`plots`]: PNG plots with an embedded font (training curves, PR curves, run bars).
//! - [`markdown`]: metric tables, mean ± std over seeds.
//! - [`simota_csv`], [`simota_plot`]: the per-run `simota.csv` (label assignment per object size
//!   and epoch) and its plots.

pub mod coco;
pub mod markdown;
pub mod metrics_csv;
pub mod plots;
pub mod simota_csv;
pub mod simota_plot;

pub use coco::{
    evaluate, evaluate_files, read_detections, ClassAp, MaxDets, Metrics, PrecisionArray,
};
