//! Training, evaluation, inference and plots in Rhai.

use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext, FLOAT, INT};

use super::data::Dataset;
use super::models::Model;
use super::Api;
use crate::data::image_io::read_rgb;
use crate::detect::{detect_images, PostprocessConfig};
use crate::eval::coco::Metrics;
use crate::eval::metrics_csv::read_metrics_csv;
use crate::eval::plots::{plot_line_panels, plot_run_bars, plot_training_curves, LinePanel};
use crate::eval::simota_csv::{read_simota_csv, SimotaRow};
use crate::eval::simota_plot::{plot_simota_compare, plot_simota_run};
use crate::script::api::detect::simota_row_map;
use crate::script::api::notebook::{output_path, record_output};
use crate::script::convert::{lift, script_err, Opts, ScriptResult};
use crate::train::evaluate::{evaluate_detector, recalibrate_batch_norm};
use crate::train::run::{train_detector, EpochRecord, Resume, TrainRunOptions};
use crate::train::TrainConfig;

/// Keys of `train_detector`'s config that are run options, not part of the recipe.
const RUN_KEYS: &[&str] = &[
    "out",
    "workers",
    "cache",
    "verbose",
    "resume",
    "resume_override",
];

/// The 12 stats by name, AP per class, as a Rhai map.
pub fn metrics_map(m: &Metrics) -> Map {
    let mut out = Map::new();
    for (name, v) in m.names().iter().zip(m.stats) {
        out.insert(name.as_str().into(), Dynamic::from_float(v));
    }
    let per_class: Array = m
        .per_class
        .iter()
        .map(|c| {
            let mut r = Map::new();
            r.insert("category_id".into(), Dynamic::from(c.category_id as INT));
            r.insert("name".into(), Dynamic::from(c.name.clone()));
            r.insert("AP".into(), Dynamic::from_float(c.ap));
            r.insert("AP50".into(), Dynamic::from_float(c.ap50));
            Dynamic::from_map(r)
        })
        .collect();
    out.insert("per_class".into(), Dynamic::from_array(per_class));
    out
}

fn record_map(r: &EpochRecord) -> Map {
    let mut m = Map::new();
    m.insert("epoch".into(), Dynamic::from(r.epoch as INT));
    m.insert("iteration".into(), Dynamic::from(r.iteration as INT));
    m.insert("loss".into(), Dynamic::from_float(r.mean_loss));
    m.insert("images_per_s".into(), Dynamic::from_float(r.images_per_s));
    m.insert(
        "skipped_images".into(),
        Dynamic::from(r.skipped_images as INT),
    );
    if let Some(metrics) = &r.metrics {
        m.insert("metrics".into(), Dynamic::from_map(metrics_map(metrics)));
    }
    m
}

/// The training recipe in a script's config map, leaving out the keys in `skip` (run options);
/// unknown keys are an error naming them.
pub fn recipe_from_map(op: &str, cfg: &Map, skip: &[&str]) -> ScriptResult<TrainConfig> {
    let mut recipe = serde_json::Map::new();
    for (k, v) in cfg {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let value: serde_json::Value = rhai::serde::from_dynamic(v)
            .map_err(|e| script_err(format!("{op} config key `{k}`: {e}")))?;
        recipe.insert(k.to_string(), value);
    }
    lift(TrainConfig::from_json_value(&serde_json::Value::Object(
        recipe,
    )))
}

/// Split a script's config map into the training recipe and the run options.
fn train_config(cfg: &Map) -> ScriptResult<(TrainConfig, TrainRunOptions)> {
    let config = recipe_from_map("train_detector", cfg, RUN_KEYS)?;
    let run_map: Map = cfg
        .iter()
        .filter(|(k, _)| RUN_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let o = Opts::new("train_detector", &run_map, RUN_KEYS)?;
    let out = cfg
        .get("out")
        .map(|d| d.to_string())
        .unwrap_or_else(|| "runs/train".into());
    let resume_override = match cfg.get("resume_override") {
        None => Vec::new(),
        Some(v) => {
            let keys = v.read_lock::<Array>().map(|a| a.clone()).ok_or_else(|| {
                script_err("train_detector: `resume_override` must be a list of recipe keys")
            })?;
            keys.iter().map(|k| k.to_string()).collect()
        }
    };
    let opts = TrainRunOptions {
        out_dir: output_path(&out),
        workers: o.usize("workers", 2)?,
        cache: o.bool("cache", true)?,
        resume: resume_option(cfg.get("resume"))?,
        resume_override,
        verbose: o.bool("verbose", true)?,
        device: super::notebook::run_device(),
    };
    Ok((config, opts))
}

/// `resume: true` (the run folder's own training state), a checkpoint path, or false/absent.
/// Inside an `ablate` point, absent means "the point's own state if an interrupted run left
/// one".
fn resume_option(value: Option<&Dynamic>) -> ScriptResult<Option<Resume>> {
    match value {
        None if super::notebook::in_ablation_point() => Ok(Some(Resume::RunFolderIfPresent)),
        None => Ok(None),
        Some(v) if v.is_bool() => Ok(v.as_bool().unwrap_or(false).then_some(Resume::RunFolder)),
        Some(v) if v.is_string() => Ok(Some(Resume::From(output_path(&v.to_string())))),
        Some(v) => Err(script_err(format!(
            "train_detector: `resume` must be true, false or a checkpoint path, got {}",
            v.type_name()
        ))),
    }
}

fn train(
    ctx: &NativeCallContext,
    m: &Model,
    train: &Dataset,
    val: Option<&Dataset>,
    cfg: Map,
    callback: Option<FnPtr>,
) -> ScriptResult<Map> {
    let (config, opts) = train_config(&cfg)?;
    let mut callback_error = None;
    let report = train_detector(
        m.0.clone(),
        &train.0,
        val.map(|v| &*v.0),
        &config,
        &opts,
        |rec| {
            let Some(f) = &callback else { return Ok(true) };
            match f.call_within_context::<Dynamic>(ctx, (Dynamic::from_map(record_map(rec)),)) {
                // A callback returning `false` stops training; anything else continues.
                Ok(v) => Ok(v.as_bool().unwrap_or(true)),
                Err(e) => {
                    callback_error = Some(e);
                    Ok(false)
                }
            }
        },
    );
    if let Some(e) = callback_error {
        return Err(e);
    }
    let report = lift(report)?;
    let mut out = Map::new();
    let history: Array = report
        .history
        .iter()
        .map(|r| Dynamic::from_map(record_map(r)))
        .collect();
    out.insert("history".into(), Dynamic::from_array(history));
    if let Some(metrics) = &report.final_metrics {
        out.insert("metrics".into(), Dynamic::from_map(metrics_map(metrics)));
    }
    out.insert(
        "metrics_csv".into(),
        Dynamic::from(report.metrics_csv.display().to_string()),
    );
    let simota: Array = report
        .simota
        .iter()
        .map(|r| Dynamic::from_map(simota_row_map(Some(r.epoch), r.bucket_name(), &r.counts())))
        .collect();
    out.insert("simota".into(), Dynamic::from_array(simota));
    out.insert(
        "simota_csv".into(),
        Dynamic::from(report.simota_csv.display().to_string()),
    );
    out.insert(
        "checkpoint".into(),
        Dynamic::from(report.last_checkpoint.display().to_string()),
    );
    out.insert(
        "weights".into(),
        Dynamic::from(report.last_weights.display().to_string()),
    );
    if let (Some(best), Some(path)) = (&report.best, &report.best_weights) {
        out.insert("best".into(), Dynamic::from(path.display().to_string()));
        out.insert("best_AP".into(), Dynamic::from_float(best.ap));
        out.insert("best_epoch".into(), Dynamic::from(best.epoch as INT));
    }
    Ok(out)
}

/// The rows of a `simota.csv` path, or of a list of them (several seeds of one arm, pooled when
/// plotted).
fn simota_rows_of(label: &str, v: &Dynamic) -> ScriptResult<Vec<SimotaRow>> {
    let paths: Vec<String> = if v.is_string() {
        vec![v.to_string()]
    } else if let Some(list) = v.read_lock::<Array>() {
        list.iter().map(|p| p.to_string()).collect()
    } else {
        return Err(script_err(format!(
            "plot_simota: run `{label}` must be a simota.csv path or a list of them, got {}",
            v.type_name()
        )));
    };
    let mut rows = Vec::new();
    for p in paths {
        rows.extend(lift(read_simota_csv(&output_path(&p)))?);
    }
    Ok(rows)
}

fn eval_opts(o: &Map, default_size: usize) -> ScriptResult<((usize, usize), f32, f32, usize)> {
    let opts = Opts::new("evaluate", o, &["size", "conf", "nms", "batch"])?;
    let size = opts.usize("size", default_size)?;
    if size == 0 || size % 32 != 0 {
        return Err(script_err(format!(
            "evaluate: size must be a positive multiple of 32, got {size}"
        )));
    }
    Ok((
        (size, size),
        opts.float("conf", 0.01)? as f32,
        opts.float("nms", 0.65)? as f32,
        opts.usize("batch", 8)?,
    ))
}

fn evaluate(m: &Model, d: &Dataset, o: Map) -> ScriptResult<Map> {
    let (size, conf, nms, batch) = eval_opts(&o, 640)?;
    let metrics = lift(evaluate_detector(&m.0, &d.0, size, conf, nms, batch))?;
    Ok(metrics_map(&metrics))
}

pub fn register(api: &mut Api) {
    func!(api, "train_detector", &["model: Model", "train: Dataset", "val: Dataset", "cfg: Map"], "Map",
        "Train with YOLOX's recipe; cfg: any TrainConfig key (max_epoch, batch_size, basic_lr_per_img, box_loss, input_size, ...) plus out, workers, cache, verbose, resume (true: the out folder's own training state; or a checkpoint path), resume_override (recipe keys allowed to differ on resume). Afterwards the model holds the evaluated (EMA) weights. Returns #{history, metrics, metrics_csv, simota (simota.csv's rows: #{epoch, bucket, gts, unmatched_gts, positives, positives_iou0, mean_positive_iou}, the label assignment per object size), simota_csv, checkpoint (training state), weights (last.safetensors), best (best.safetensors), best_AP, best_epoch}.",
        |ctx: NativeCallContext, m: Model, t: Dataset, v: Dataset, cfg: Map| -> ScriptResult<Map> { train(&ctx, &m, &t, Some(&v), cfg, None) });
    func!(api, "train_detector", &["model: Model", "train: Dataset", "val: Dataset", "cfg: Map", "on_epoch: Fn"], "Map",
        "As train_detector, calling on_epoch(record) after every epoch; returning false stops training.",
        |ctx: NativeCallContext, m: Model, t: Dataset, v: Dataset, cfg: Map, f: FnPtr| -> ScriptResult<Map> { train(&ctx, &m, &t, Some(&v), cfg, Some(f)) });
    func!(api, "evaluate", &["model: Model", "dataset: Dataset", "cfg: Map"], "Map",
        "COCO metrics (pycocotools-identical, max dets 100/300/1000) by name, and per_class; cfg: size (640), conf (0.01), nms (0.65), batch (8).",
        |m: Model, d: Dataset, o: Map| evaluate(&m, &d, o));
    func!(api, "recalibrate_bn", &["model: Model", "dataset: Dataset", "images: i64", "size: i64"], "()",
        "Precise BN: replace BN running statistics by their average over the first `images` images of `dataset` (letterboxed to size).",
        |m: Model, d: Dataset, n: INT, size: INT| -> ScriptResult<()> {
            let size = usize::try_from(size).ok().filter(|s| *s > 0 && s % 32 == 0).ok_or_else(|| script_err(format!("recalibrate_bn: size must be a positive multiple of 32, got {size}")))?;
            let n = usize::try_from(n).map_err(|_| script_err("recalibrate_bn: images must be >= 0"))?;
            let mut batches = Vec::new();
            for chunk in d.0.images.iter().take(n).collect::<Vec<_>>().chunks(8) {
                let imgs: Vec<_> = chunk.iter().map(|i| lift(read_rgb(&d.0.image_path(i)))).collect::<ScriptResult<_>>()?;
                let boxed: Vec<_> = imgs.iter().map(|im| crate::data::augment::letterbox(im, size as u32, size as u32).0).collect();
                batches.push(lift(crate::detect::images_to_bgr_tensor(&boxed))?);
            }
            lift(recalibrate_batch_norm(&m.0, &batches))
        });
    func!(api, "detect", &["model: Model", "image: String", "opts: Map"], "Array",
        "Detections on one image file: #{x1, y1, x2, y2, score, class} in original pixels; opts: size (640), conf (0.25), nms (0.45), agnostic (false), max_dets.",
        |m: Model, path: &str, o: Map| -> ScriptResult<Array> {
            let opts = Opts::new("detect", &o, &["size", "conf", "nms", "agnostic", "max_dets"])?;
            let size = opts.usize("size", 640)?;
            let post = PostprocessConfig {
                conf_thre: opts.float("conf", 0.25)? as f32,
                nms_thre: opts.float("nms", 0.45)? as f32,
                class_agnostic: opts.bool("agnostic", false)?,
                max_dets: o.get("max_dets").map(|_| opts.usize("max_dets", 100)).transpose()?,
            };
            let img = lift(read_rgb(path.as_ref()))?;
            let dets = lift(detect_images(&m.0, &[img], (size, size), &post))?;
            Ok(dets.into_iter().next().unwrap_or_default().iter().map(|d| {
                let mut r = Map::new();
                for (k, v) in ["x1", "y1", "x2", "y2"].iter().zip(d.box_xyxy) {
                    r.insert((*k).into(), Dynamic::from_float(v as FLOAT));
                }
                r.insert("score".into(), Dynamic::from_float(d.score as FLOAT));
                r.insert("class".into(), Dynamic::from(d.class as INT));
                Dynamic::from_map(r)
            }).collect())
        });
    func!(
        api,
        "plot_lines",
        &["metrics_csv: String", "out_png: String"],
        "String",
        "Training curves (losses, AP, lr) from a metrics.csv into a PNG; returns the PNG path.",
        |csv: &str, out: &str| -> ScriptResult<String> {
            let table = lift(read_metrics_csv(&output_path(csv)))?;
            let out = output_path(out);
            lift(plot_training_curves(&table, &out))?;
            record_output(&out, true);
            Ok(out.display().to_string())
        }
    );
    func!(api, "plot_xy", &["rows: Array", "x: String", "ys: Array", "group: String", "out_png: String"], "String",
        "Line plots from an array of maps: one panel per column in ys, one line per value of the group column, points at the x column (e.g. AP against label fraction per method); returns the PNG path.",
        |rows: Array, x: &str, ys: Array, group: &str, out: &str| -> ScriptResult<String> {
            let ys: Vec<String> = ys.iter().map(|y| y.to_string()).collect();
            let (xs, panels) = grouped_series(&rows, x, &ys, group)?;
            let out = output_path(out);
            lift(plot_line_panels(x, &xs, &panels, &out))?;
            record_output(&out, true);
            Ok(out.display().to_string())
        });
    func!(api, "plot_simota", &["simota_csv: String", "out_png: String"], "String",
        "One run's label assignment per object size from its simota.csv: the share of positives at IoU 0, of ground truth without a positive, and the positives' mean IoU against epoch, one line per size bucket; returns the PNG path.",
        |csv: &str, out: &str| -> ScriptResult<String> {
            let rows = lift(read_simota_csv(&output_path(csv)))?;
            let out = output_path(out);
            lift(plot_simota_run(&rows, &out))?;
            record_output(&out, true);
            Ok(out.display().to_string())
        });
    func!(api, "plot_simota", &["runs: Map", "out_png: String"], "String",
        "Several runs' label assignment per object size: runs is #{name: simota.csv path, or a list of paths (seeds, pooled)}; a panel per size bucket for the share of positives at IoU 0 and of ground truth without a positive, one line per run; returns the PNG path.",
        |runs: Map, out: &str| -> ScriptResult<String> {
            let runs = runs.iter().map(|(name, v)| Ok((name.to_string(), simota_rows_of(name, v)?))).collect::<ScriptResult<Vec<_>>>()?;
            let out = output_path(out);
            lift(plot_simota_compare(&runs, &out))?;
            record_output(&out, true);
            Ok(out.display().to_string())
        });
    func!(api, "plot_bars", &["runs: Map", "metrics: Array", "out_png: String"], "String",
        "A grouped bar chart: runs is #{name: metrics_map}, metrics the names to plot (e.g. [\"AP\", \"AP50\"]); returns the PNG path.",
        |runs: Map, metrics: Array, out: &str| -> ScriptResult<String> {
            let names: Vec<String> = runs.keys().map(|k| k.to_string()).collect();
            let metric_names: Vec<String> = metrics.iter().map(|m| m.to_string()).collect();
            let mut values = Vec::new();
            for (run, v) in &runs {
                let map = v.clone().try_cast::<Map>().ok_or_else(|| script_err(format!("plot_bars: run `{run}` is not a map of metrics")))?;
                let row = metric_names.iter().map(|k| {
                    map.get(k.as_str()).and_then(|x| x.as_float().ok().or_else(|| x.as_int().ok().map(|i| i as f64)))
                        .ok_or_else(|| script_err(format!("plot_bars: run `{run}` has no numeric `{k}`")))
                }).collect::<ScriptResult<Vec<f64>>>()?;
                values.push(row);
            }
            let out = output_path(out);
            lift(plot_run_bars(&names, &metric_names, &values, &out))?;
            record_output(&out, true);
            Ok(out.display().to_string())
        });
}

/// A numeric cell of a row for `plot_xy` (ints count).
fn row_number(row: &Map, i: usize, column: &str) -> ScriptResult<f64> {
    let v = row
        .get(column)
        .ok_or_else(|| script_err(format!("plot_xy: row {i} has no column `{column}`")))?;
    v.as_float()
        .or_else(|_| v.as_int().map(|n| n as f64))
        .map_err(|_| script_err(format!("plot_xy: row {i}: `{column}` is not a number")))
}

/// Panels of `plot_xy`: the sorted distinct x values and, per y column, one series per group
/// (groups in first-seen order; NaN where a group has no row at an x).
type Panels = Vec<LinePanel>;

fn grouped_series(
    rows: &Array,
    x: &str,
    ys: &[String],
    group: &str,
) -> ScriptResult<(Vec<f64>, Panels)> {
    let mut points: Vec<(String, f64, Vec<f64>)> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let row = r.read_lock::<Map>().ok_or_else(|| {
            script_err(format!(
                "plot_xy: row {i} is a {}, expected a map",
                r.type_name()
            ))
        })?;
        let g = row
            .get(group)
            .ok_or_else(|| script_err(format!("plot_xy: row {i} has no column `{group}`")))?;
        let g = g
            .read_lock::<rhai::ImmutableString>()
            .map(|s| s.to_string())
            .unwrap_or_else(|| g.to_string());
        let values = ys
            .iter()
            .map(|y| row_number(&row, i, y))
            .collect::<ScriptResult<_>>()?;
        points.push((g, row_number(&row, i, x)?, values));
    }
    let mut xs: Vec<f64> = points.iter().map(|p| p.1).collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let mut groups: Vec<String> = Vec::new();
    for (g, _, _) in &points {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    let mut panels: Panels = Vec::new();
    for (k, y) in ys.iter().enumerate() {
        let mut series = Vec::new();
        for g in &groups {
            let mut line = vec![f64::NAN; xs.len()];
            for (pg, px, values) in points.iter().filter(|p| &p.0 == g) {
                let at = xs.iter().position(|v| v == px).unwrap_or_default();
                if !line[at].is_nan() {
                    return Err(script_err(format!(
                        "plot_xy: two rows of `{pg}` at {x} = {px}"
                    )));
                }
                line[at] = values[k];
            }
            series.push((g.clone(), line));
        }
        panels.push((y.clone(), series));
    }
    Ok((xs, panels))
}
