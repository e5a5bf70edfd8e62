//! `ablate(grid, seeds, |cfg| { ...; metrics })`: the Cartesian product of a map of lists, for
//! every seed. Each finished point is cached (`ablate/<key>.json`, the key covering the calling
//! cell's key, which ablation of the cell this is, the point and the seed), so an interrupted
//! ablation resumes where it stopped. While a point runs, relative output paths go to its work
//! folder in the cache (`ablate/<key>.partial/`): a point that a killed process left half done
//! resumes its training and pretraining from their own checkpoints there, and a finished
//! point's folder moves into the run folder. Writes `ablation.csv` (one row per point and
//! seed), a mean ± std table with the difference to the first row, and a bar chart.

use std::path::Path;
use std::sync::Arc;

use rhai::{Array, Dynamic, FnPtr, Map, NativeCallContext};
use serde::{Deserialize, Serialize};

use crate::csv_table::csv_string;
use crate::data::dataset::write_atomic;
use crate::digest::hash_parts;
use crate::eval::markdown::{markdown_table, mean_std, MetricRow};
use crate::eval::plots::plot_run_bars;
use crate::script::api::notebook::{write_new_file, OutputItem, RunContext};
use crate::script::cache::{to_json, CellCache};
use crate::script::convert::{script_err, ScriptResult};

/// One finished point: its metrics in the order the closure's map had them.
#[derive(Serialize, Deserialize)]
struct PointRecord {
    metrics: Vec<(String, f64)>,
}

/// Run the closure for one point with relative outputs in `work` (when caching), then move
/// what it wrote into the run folder.
fn run_point(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    f: &FnPtr,
    cfg: Map,
    work: Option<&Path>,
) -> ScriptResult<Dynamic> {
    if let Some(dir) = work {
        if ctx.fresh && dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| script_err(format!("ablate: {}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| script_err(format!("ablate: {}: {e}", dir.display())))?;
    }
    let previous = std::mem::replace(&mut ctx.cell().point_dir, work.map(Path::to_path_buf));
    let out = f.call_within_context(nc, (Dynamic::from_map(cfg),));
    ctx.cell().point_dir = previous;
    let out: Dynamic = out?;
    if let (Some(dir), Some(run_dir)) = (work, &ctx.run_dir) {
        if let Err(e) = move_entries(dir, run_dir) {
            ctx.emit(OutputItem::Text(format!(
                "note: the point's outputs stay in {}: {e}",
                dir.display()
            )));
        }
    }
    Ok(out)
}

/// Move every entry of `from` into `to` (renames; a name taken in `to` gets a `-2`, `-3`...
/// suffix), then remove `from`.
pub(crate) fn move_entries(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        let mut target = to.join(&name);
        let mut n = 2;
        while target.exists() {
            target = to.join(format!("{name}-{n}"));
            n += 1;
        }
        std::fs::rename(entry.path(), target)?;
    }
    std::fs::remove_dir(from)
}

/// One finished run: the point's index, the seed and its metrics.
type Row = (usize, i64, Vec<(String, f64)>);

/// Text of a grid value in labels and CSV cells.
fn value_text(d: &Dynamic) -> String {
    if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
        return s.to_string();
    }
    d.to_string()
}

/// The numeric entries of the closure's result (ints, floats, bools as 0/1 are left out).
fn numeric_metrics(m: &Map) -> Vec<(String, f64)> {
    m.iter()
        .filter_map(|(k, v)| {
            let v = v.flatten_clone();
            if let Ok(f) = v.as_float() {
                Some((k.to_string(), f))
            } else {
                v.as_int().ok().map(|i| (k.to_string(), i as f64))
            }
        })
        .collect()
}

pub fn ablate(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    grid: Map,
    seeds: Array,
    f: FnPtr,
) -> ScriptResult<Array> {
    // The grid: keys in map order, each a non-empty list.
    let mut axes: Vec<(String, Vec<Dynamic>)> = Vec::new();
    for (k, v) in &grid {
        let list = v.read_lock::<Array>().map(|a| a.clone()).ok_or_else(|| {
            script_err(format!(
                "ablate: grid entry `{k}` must be a list of values, got {}",
                v.type_name()
            ))
        })?;
        if list.is_empty() {
            return Err(script_err(format!("ablate: grid entry `{k}` is empty")));
        }
        if k.as_str() == "seed" {
            return Err(script_err(
                "ablate: `seed` cannot be a grid key (pass the seeds as the second argument)",
            ));
        }
        axes.push((k.to_string(), list));
    }
    let seeds: Vec<i64> = seeds
        .iter()
        .map(|s| {
            s.as_int()
                .map_err(|_| script_err(format!("ablate: seeds must be integers, got {s}")))
        })
        .collect::<ScriptResult<_>>()?;
    if seeds.is_empty() {
        return Err(script_err("ablate: give at least one seed"));
    }
    // Points: the last key varies fastest.
    let mut points: Vec<Vec<usize>> = vec![Vec::new()];
    for (_, values) in &axes {
        points = points
            .into_iter()
            .flat_map(|p| {
                (0..values.len()).map(move |i| {
                    let mut q = p.clone();
                    q.push(i);
                    q
                })
            })
            .collect();
    }
    let (cell_key, index) = {
        let mut cell = ctx.cell();
        cell.ablations += 1;
        (cell.key.clone(), cell.ablations)
    };
    let cache = ctx.cache_dir.clone().map(CellCache::at);
    let total = points.len() * seeds.len();
    let label_of = |p: &[usize]| -> String {
        if axes.is_empty() {
            return "(all)".into();
        }
        axes.iter()
            .zip(p)
            .map(|((k, vals), &i)| format!("{k}={}", value_text(&vals[i])))
            .collect::<Vec<_>>()
            .join(", ")
    };

    let mut rows: Vec<Row> = Vec::new();
    let mut restored = 0;
    let mut done = 0;
    for (pi, p) in points.iter().enumerate() {
        for &seed in &seeds {
            done += 1;
            let mut cfg = Map::new();
            for ((k, vals), &i) in axes.iter().zip(p) {
                cfg.insert(k.as_str().into(), vals[i].clone());
            }
            cfg.insert("seed".into(), Dynamic::from_int(seed));
            let point_json = axes
                .iter()
                .zip(p)
                .map(|((k, vals), &i)| format!("{k}={:?}", vals[i].to_string()))
                .collect::<Vec<_>>()
                .join(";");
            let key = hash_parts(&[
                "ssod-ablate-v1",
                &cell_key,
                &index.to_string(),
                &point_json,
                &seed.to_string(),
            ]);
            let file = cache.as_ref().map(|c| c.ablation_point(&key));
            let cached = file
                .as_ref()
                .filter(|_| !ctx.fresh)
                .and_then(|f| std::fs::read_to_string(f).ok())
                .and_then(|t| serde_json::from_str::<PointRecord>(&t).ok());
            let (metrics, note) = match cached {
                Some(r) => {
                    restored += 1;
                    (r.metrics, " (restored)")
                }
                None => {
                    let work = file.as_ref().map(|f| f.with_extension("partial"));
                    let out = run_point(nc, ctx, &f, cfg, work.as_deref())?;
                    let m = out.read_lock::<Map>().map(|m| m.clone()).ok_or_else(|| {
                        script_err(format!(
                            "ablate: the function must return a map of metrics, got {}",
                            out.type_name()
                        ))
                    })?;
                    let metrics = numeric_metrics(&m);
                    if let Some(file) = &file {
                        let rec = PointRecord {
                            metrics: metrics.clone(),
                        };
                        if let Err(e) = to_json(&rec).and_then(|t| write_atomic(file, t.as_bytes()))
                        {
                            ctx.emit(OutputItem::Text(format!(
                                "note: ablation point not cached: {e}"
                            )));
                        }
                    }
                    (metrics, "")
                }
            };
            let shown: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v:.4}")).collect();
            ctx.emit(OutputItem::Text(format!(
                "ablate [{done}/{total}] {}, seed={seed}: {}{note}",
                label_of(p),
                shown.join(" ")
            )));
            rows.push((pi, seed, metrics));
        }
    }
    if restored > 0 {
        ctx.emit(OutputItem::Text(format!(
            "ablate: {restored} of {total} point(s) restored from the cache"
        )));
    }

    // Metric columns in first-seen order.
    let mut metric_names: Vec<String> = Vec::new();
    for (_, _, m) in &rows {
        for (k, _) in m {
            if !metric_names.contains(k) {
                metric_names.push(k.clone());
            }
        }
    }
    let value = |m: &[(String, f64)], k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    };

    // ablation.csv
    let mut columns: Vec<String> = axes.iter().map(|(k, _)| k.clone()).collect();
    columns.push("seed".into());
    columns.extend(metric_names.iter().cloned());
    let fields: Vec<Vec<String>> = rows
        .iter()
        .map(|(pi, seed, m)| {
            let mut r: Vec<String> = axes
                .iter()
                .zip(&points[*pi])
                .map(|((_, vals), &i)| value_text(&vals[i]))
                .collect();
            r.push(seed.to_string());
            r.extend(metric_names.iter().map(|k| {
                let v = value(m, k);
                if v.is_nan() {
                    String::new()
                } else {
                    v.to_string()
                }
            }));
            r
        })
        .collect();
    let stem = if index == 1 {
        "ablation".to_string()
    } else {
        format!("ablation{index}")
    };
    let csv_path = ctx.fresh_name(&stem, "csv");
    let text = csv_string(&columns, &fields).map_err(|e| script_err(format!("ablate: {e}")))?;
    write_new_file("ablate", &csv_path, text.as_bytes())?;
    ctx.record_file(&csv_path);

    // mean ± std per point, difference of means to the first point.
    let labels: Vec<String> = points.iter().map(|p| label_of(p)).collect();
    let table_rows: Vec<MetricRow> = points
        .iter()
        .enumerate()
        .map(|(pi, _)| MetricRow {
            label: labels[pi].clone(),
            per_seed: rows
                .iter()
                .filter(|(i, _, _)| *i == pi)
                .map(|(_, _, m)| metric_names.iter().map(|k| value(m, k)).collect())
                .collect(),
        })
        .collect();
    let means: Vec<Vec<f64>> = table_rows
        .iter()
        .map(|r| {
            (0..metric_names.len())
                .map(|c| {
                    let v: Vec<f64> = r.per_seed.iter().map(|s| s[c]).collect();
                    mean_std(&v).0
                })
                .collect()
        })
        .collect();
    if !metric_names.is_empty() {
        let md = markdown_table("Point", &metric_names, &table_rows, 4)
            .map_err(|e| script_err(format!("ablate: {e}")))?;
        let mut delta = format!(
            "| Δ vs first row | {} |\n|---|{}\n",
            metric_names.join(" | "),
            "---|".repeat(metric_names.len())
        );
        for (label, m) in labels.iter().zip(&means) {
            let cells: Vec<String> = m
                .iter()
                .zip(&means[0])
                .map(|(a, b)| {
                    let d = a - b;
                    if d.is_nan() {
                        "n/a".into()
                    } else {
                        format!("{d:+.4}")
                    }
                })
                .collect();
            delta.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
        }
        ctx.emit(OutputItem::Markdown(md.trim_end().to_string()));
        ctx.emit(OutputItem::Markdown(delta.trim_end().to_string()));
        let png = ctx.fresh_name(&stem, "png");
        match plot_run_bars(&labels, &metric_names, &means, &png) {
            Ok(()) => {
                ctx.record_file(&png);
                let rel = png
                    .file_name()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                if ctx.run_dir.is_some() {
                    ctx.emit(OutputItem::Image(rel));
                } else {
                    ctx.emit(OutputItem::Image(png.display().to_string()));
                }
            }
            Err(e) => ctx.emit(OutputItem::Text(format!("note: no bar chart: {e}"))),
        }
    }
    ctx.emit(OutputItem::Text(format!(
        "ablate: wrote {}",
        csv_path.display()
    )));

    Ok(rows
        .into_iter()
        .map(|(pi, seed, m)| {
            let mut row = Map::new();
            for ((k, vals), &i) in axes.iter().zip(&points[pi]) {
                row.insert(k.as_str().into(), vals[i].clone());
            }
            row.insert("seed".into(), Dynamic::from_int(seed));
            for (k, v) in m {
                row.insert(k.as_str().into(), Dynamic::from_float(v));
            }
            Dynamic::from_map(row)
        })
        .collect())
}
