//! `ssod eval` (COCO evaluation of a results file), `ssod plot-curves` (training curves from a
//! metrics.csv), `ssod plot-bars` (several runs' metrics side by side) and `ssod metrics-table`
//! (markdown, mean ± std over seeds).
//!
//! Output files are never overwritten silently: an existing output is refused unless `--force`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use ssod::atomic_file::write_atomic;
use ssod::data::dataset::read_json_file;
use ssod::eval::coco::{evaluate_files, MaxDets};
use ssod::eval::markdown::{markdown_table, MetricRow};
use ssod::eval::metrics_csv::read_metrics_csv;
use ssod::eval::plots::{plot_pr_curves, plot_run_bars, plot_training_curves};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// COCO bbox evaluation of a results json against a ground-truth json (pycocotools' numbers)
    Eval(Eval),
    /// Training curves (losses, AP, lr) from a metrics.csv into a PNG
    PlotCurves(PlotCurves),
    /// Grouped bar chart of several runs' metrics (json files written by `ssod eval --json`)
    PlotBars(PlotBars),
    /// Markdown table of runs' metrics (json files from `ssod eval --json`), mean ± std over seeds
    MetricsTable(MetricsTable),
}

#[derive(Args)]
pub struct Eval {
    /// Ground truth, COCO json
    #[arg(long)]
    gt: PathBuf,
    /// Detections, COCO results json ([{image_id, category_id, bbox, score}])
    #[arg(long)]
    dt: PathBuf,
    /// Three per-image detection caps (the study's 100,300,1000; COCO's standard is 1,10,100)
    #[arg(long, default_value = "100,300,1000")]
    max_dets: String,
    /// Write {"stats", "names", "max_dets"} (and "per_class" with --per-class) here
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write one header row and one value row of the 12 stats here
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Print AP and AP50 per category (and add them to --json)
    #[arg(long)]
    per_class: bool,
    /// Write precision-recall curves at IoU 0.5 and 0.75 as a PNG here
    #[arg(long)]
    pr_plot: Option<PathBuf>,
    /// Overwrite output files that exist
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct PlotCurves {
    /// A metrics.csv written during training
    #[arg(long)]
    csv: PathBuf,
    /// Output PNG
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct PlotBars {
    /// NAME=metrics.json, once per run
    #[arg(long = "run", required = true)]
    runs: Vec<String>,
    /// Comma-separated stat names to show (default AP,AP50,AP75,AP_small,AP_medium,AP_large)
    #[arg(long, default_value = "AP,AP50,AP75,AP_small,AP_medium,AP_large")]
    metrics: String,
    /// Output PNG
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct MetricsTable {
    /// LABEL=seed1.json,seed2.json,... once per row (json files from `ssod eval --json`)
    #[arg(long = "run", required = true)]
    runs: Vec<String>,
    /// Comma-separated stat names (default: all 12 of the first file)
    #[arg(long)]
    metrics: Option<String>,
    /// Write the table here instead of printing it
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    force: bool,
}

/// Refuse to replace an existing file unless `--force`.
fn check_output(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!("{} exists; pass --force to overwrite it", path.display());
    }
    Ok(())
}

/// The `{"stats", "names"}` of a json written by `ssod eval --json`, as (name, value) pairs.
fn read_stats_json(path: &Path) -> anyhow::Result<Vec<(String, f64)>> {
    #[derive(serde::Deserialize)]
    struct StatsJson {
        stats: Vec<f64>,
        names: Vec<String>,
    }
    let parsed: StatsJson = read_json_file(path)?;
    if parsed.stats.len() != parsed.names.len() {
        bail!(
            "{}: {} stats for {} names",
            path.display(),
            parsed.stats.len(),
            parsed.names.len()
        );
    }
    Ok(parsed.names.into_iter().zip(parsed.stats).collect())
}

fn pick(stats: &[(String, f64)], names: &[String], path: &Path) -> anyhow::Result<Vec<f64>> {
    names
        .iter()
        .map(|n| {
            stats
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| *v)
                .with_context(|| {
                    let known: Vec<&str> = stats.iter().map(|(k, _)| k.as_str()).collect();
                    format!(
                        "{}: no stat named `{n}` (it has {})",
                        path.display(),
                        known.join(", ")
                    )
                })
        })
        .collect()
}

fn split_label<'a>(arg: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    arg.split_once('=')
        .filter(|(l, r)| !l.is_empty() && !r.is_empty())
        .with_context(|| format!("--run `{arg}`: expected {what}"))
}

impl EvalCommand {
    pub fn execute(self) -> anyhow::Result<()> {
        match self {
            EvalCommand::Eval(a) => run_eval(a),
            EvalCommand::PlotCurves(a) => {
                check_output(&a.out, a.force)?;
                let table = read_metrics_csv(&a.csv)?;
                plot_training_curves(&table, &a.out)?;
                println!("wrote {}", a.out.display());
                Ok(())
            }
            EvalCommand::PlotBars(a) => {
                check_output(&a.out, a.force)?;
                let metric_names: Vec<String> =
                    a.metrics.split(',').map(|s| s.trim().to_string()).collect();
                let (mut names, mut values) = (Vec::new(), Vec::new());
                for run in &a.runs {
                    let (name, file) = split_label(run, "NAME=metrics.json")?;
                    let path = Path::new(file);
                    values.push(pick(&read_stats_json(path)?, &metric_names, path)?);
                    names.push(name.to_string());
                }
                plot_run_bars(&names, &metric_names, &values, &a.out)?;
                println!("wrote {}", a.out.display());
                Ok(())
            }
            EvalCommand::MetricsTable(a) => {
                if let Some(out) = &a.out {
                    check_output(out, a.force)?;
                }
                let mut columns: Option<Vec<String>> = a
                    .metrics
                    .map(|m| m.split(',').map(|s| s.trim().to_string()).collect());
                let mut rows = Vec::new();
                for run in &a.runs {
                    let (label, files) = split_label(run, "LABEL=seed1.json,seed2.json")?;
                    let mut per_seed = Vec::new();
                    for file in files.split(',') {
                        let path = Path::new(file);
                        let stats = read_stats_json(path)?;
                        let cols = columns
                            .get_or_insert_with(|| stats.iter().map(|(k, _)| k.clone()).collect());
                        per_seed.push(pick(&stats, cols, path)?);
                    }
                    rows.push(MetricRow {
                        label: label.to_string(),
                        per_seed,
                    });
                }
                let table = markdown_table("Run", &columns.unwrap_or_default(), &rows, 3)?;
                match &a.out {
                    Some(out) => {
                        write_atomic(out, table.as_bytes())?;
                        println!("wrote {}", out.display());
                    }
                    None => print!("{table}"),
                }
                Ok(())
            }
        }
    }
}

fn run_eval(a: Eval) -> anyhow::Result<()> {
    let max_dets = MaxDets::parse(&a.max_dets)?;
    for out in [&a.json, &a.csv, &a.pr_plot].into_iter().flatten() {
        check_output(out, a.force)?;
    }
    let metrics = evaluate_files(&a.gt, &a.dt, max_dets)?;
    for w in &metrics.warnings {
        eprintln!("warning: {w}");
    }
    if !max_dets.0.contains(&100) {
        eprintln!(
            "warning: 100 is not among --max-dets {:?}: pycocotools' first AP line reads maxDets=100 and is -1",
            max_dets.0
        );
    }
    print!("{}", metrics.summary());
    if a.per_class {
        println!();
        print!("{}", metrics.per_class_table());
    }
    if let Some(out) = &a.json {
        let text = serde_json::to_string_pretty(&metrics.to_json(a.per_class))?;
        write_atomic(out, text.as_bytes())?;
    }
    if let Some(out) = &a.csv {
        write_atomic(out, metrics.to_csv()?.as_bytes())?;
    }
    if let Some(out) = &a.pr_plot {
        plot_pr_curves(&metrics, None, out)?;
    }
    Ok(())
}
