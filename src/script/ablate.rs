//! `ablate(grid, seeds, |cfg| { ...; metrics })`: the Cartesian product of a map of lists, for
//! every seed. Each finished point is cached (`ablate/<key>.json`, the key covering the calling
//! cell's key, which ablation of the cell this is, the point and the seed), so an interrupted
//! ablation resumes where it stopped. While a point runs, relative output paths go to its work
//! folder in the cache (`ablate/<key>.partial/`): a point that a killed process left half done
//! resumes its training and pretraining from their own checkpoints there, and a finished
//! point's folder moves into the run folder. Writes `ablation.csv` (one row per point and
//! seed), a mean ± std table with the difference to the first row, and a bar chart.
//!
//! Several processes can share the work (`ssod run --shard I/N`, docs/cluster.md): a point is
//! computed under a claim file, a shard computes only its own points, and the tables are
//! written only by a run in which every point is present; a shard that ends with points
//! missing stops the notebook after this cell (`ablate/points.rs` has the rules).

pub(crate) mod points;

use std::sync::Arc;

use rhai::{Array, Dynamic, EvalAltResult, FnPtr, Map, NativeCallContext, Position};

use crate::csv_table::csv_string;
use crate::eval::markdown::{markdown_table, mean_std, MetricRow};
use crate::eval::plots::plot_run_bars;
use crate::script::api::notebook::{write_new_file, OutputItem, RunContext};
use crate::script::convert::{script_err, ScriptResult};

/// The grid's keys in map order, each with its values.
type Axes = Vec<(String, Vec<Dynamic>)>;

/// One finished run: the point's index, the seed and its metrics.
type Row = (usize, i64, Vec<(String, f64)>);

/// Text of a grid value in labels and CSV cells.
fn value_text(d: &Dynamic) -> String {
    if let Some(s) = d.read_lock::<rhai::ImmutableString>() {
        return s.to_string();
    }
    d.to_string()
}

/// `key=value, ...` of a point (`(all)` for an empty grid).
fn label_of(axes: &Axes, p: &[usize]) -> String {
    if axes.is_empty() {
        return "(all)".into();
    }
    axes.iter()
        .zip(p)
        .map(|((k, vals), &i)| format!("{k}={}", value_text(&vals[i])))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The grid's axes and the seeds, checked.
fn parse_grid(grid: &Map, seeds: &Array) -> ScriptResult<(Axes, Vec<i64>)> {
    let mut axes: Axes = Vec::new();
    for (k, v) in grid {
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
    Ok((axes, seeds))
}

/// Every point of the grid as value indices, the last key varying fastest.
fn grid_points(axes: &Axes) -> Vec<Vec<usize>> {
    let mut points: Vec<Vec<usize>> = vec![Vec::new()];
    for (_, values) in axes {
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
    points
}

/// `ablate(grid, seeds, f)`: run (or restore) every point and seed, then write the tables and
/// return one map per run (the point's values, the seed and the metrics).
pub fn ablate(
    nc: &NativeCallContext,
    ctx: &Arc<RunContext>,
    grid: Map,
    seeds: Array,
    f: FnPtr,
) -> ScriptResult<Array> {
    let (axes, seeds) = parse_grid(&grid, &seeds)?;
    let points = grid_points(&axes);
    let (cell_key, index) = count_ablation(ctx);
    let total = points.len() * seeds.len();
    let plan = points::Plan {
        axes: &axes,
        points: &points,
        seeds: &seeds,
        cell_key: &cell_key,
        index,
    };
    let tally = points::run_points(nc, ctx, &f, &plan)?;
    if tally.restored > 0 {
        ctx.emit(OutputItem::Text(format!(
            "ablate: {} of {total} point(s) restored from the cache, {} computed in this run",
            tally.restored, tally.computed
        )));
    }
    if tally.missing > 0 {
        return Err(stop_shard(ctx, &tally, total));
    }
    let rows = tally.rows;
    write_tables(ctx, &axes, &points, &rows, index)?;
    Ok(rows_as_maps(&axes, &points, rows))
}

/// This is the cell's next ablation: `(the cell's key, its number in the cell, from 1)`.
fn count_ablation(ctx: &RunContext) -> (String, usize) {
    let mut cell = ctx.cell();
    cell.ablations += 1;
    (cell.key.clone(), cell.ablations)
}

/// A shard that computed its points while others are missing: say so, and stop the cell (the
/// tables wait for a run with every point).
fn stop_shard(ctx: &RunContext, tally: &points::Tally, total: usize) -> Box<EvalAltResult> {
    let shard = ctx.shard.map(|s| s.to_string()).unwrap_or_default();
    let summary = format!(
        "shard {shard}: computed {} point(s) of the ablation, {} restored from the cache, {} of {total} still missing (other shards' points or points running elsewhere); \
         the tables are written by a run without --shard once every point is cached",
        tally.computed, tally.restored, tally.missing
    );
    ctx.emit(OutputItem::Text(summary.clone()));
    ctx.cell().shard_stop = Some(summary);
    // Not catchable by a script's try/catch: the cell must not end as if complete.
    Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from("shard done"),
        Position::NONE,
    ))
}

/// One map per run: the point's grid values, `seed` and the metrics.
fn rows_as_maps(axes: &Axes, points: &[Vec<usize>], rows: Vec<Row>) -> Array {
    rows.into_iter()
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
        .collect()
}

/// The metric `k` of a row, NaN when the row lacks it.
fn metric_value(m: &[(String, f64)], k: &str) -> f64 {
    m.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| *v)
        .unwrap_or(f64::NAN)
}

/// `ablation.csv`, the mean ± std table, the table of differences to the first point and the
/// bar chart.
fn write_tables(
    ctx: &Arc<RunContext>,
    axes: &Axes,
    points: &[Vec<usize>],
    rows: &[Row],
    index: usize,
) -> ScriptResult<()> {
    // Metric columns in first-seen order.
    let mut metric_names: Vec<String> = Vec::new();
    for (_, _, m) in rows {
        for (k, _) in m {
            if !metric_names.contains(k) {
                metric_names.push(k.clone());
            }
        }
    }

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
                let v = metric_value(m, k);
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
    if !metric_names.is_empty() {
        write_summary(ctx, axes, points, rows, &metric_names, &stem)?;
    }
    ctx.emit(OutputItem::Text(format!(
        "ablate: wrote {}",
        csv_path.display()
    )));
    Ok(())
}

/// Mean ± std per point, the differences of means to the first point, and the bar chart.
fn write_summary(
    ctx: &Arc<RunContext>,
    axes: &Axes,
    points: &[Vec<usize>],
    rows: &[Row],
    metric_names: &[String],
    stem: &str,
) -> ScriptResult<()> {
    let labels: Vec<String> = points.iter().map(|p| label_of(axes, p)).collect();
    let table_rows: Vec<MetricRow> = points
        .iter()
        .enumerate()
        .map(|(pi, _)| MetricRow {
            label: labels[pi].clone(),
            per_seed: rows
                .iter()
                .filter(|(i, _, _)| *i == pi)
                .map(|(_, _, m)| metric_names.iter().map(|k| metric_value(m, k)).collect())
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
    let md = markdown_table("Point", metric_names, &table_rows, 4)
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
    let png = ctx.fresh_name(stem, "png");
    match plot_run_bars(&labels, metric_names, &means, &png) {
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
    Ok(())
}
