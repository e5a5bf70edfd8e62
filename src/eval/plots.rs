//! PNG plots with `plotters`, headless: the font (DejaVu Sans, `assets/fonts/`, Bitstream Vera
//! licence beside it) is compiled into the binary and registered with plotters' ab_glyph backend,
//! so no system font is needed. Plots are drawn into memory, encoded as PNG and written through a
//! temporary file and a rename.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::atomic_file::write_atomic;
use crate::eval::coco::Metrics;
use crate::eval::metrics_csv::MetricsTable;
use crate::{Error, Result};

const FONT_FAMILY: &str = "sans-serif";
static FONT_TTF: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

pub(crate) type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn plot_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Msg(format!("plot {what}: {e}"))
}

/// Register the embedded font once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_TTF)
                .map_err(|_| "the embedded DejaVuSans.ttf is not a valid font".to_string())
        })
        .clone()
        .map_err(Error::Msg)
}

/// Draw into a `width × height` RGB buffer and return it encoded as PNG.
pub fn render_png(
    width: u32,
    height: u32,
    draw: impl FnOnce(&Area) -> Result<()>,
) -> Result<Vec<u8>> {
    ensure_font()?;
    let mut rgb = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err("background", e))?;
        draw(&root)?;
        root.present().map_err(|e| plot_err("present", e))?;
    }
    let image = image::RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| Error::Msg("plot: buffer size does not match the image size".into()))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| plot_err("png encoding", e))?;
    Ok(png)
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return None;
    }
    // A flat series still needs a non-empty axis, at the series' own scale (a constant lr of
    // 3e-4 gets 2.85e-4..3.15e-4, not -0.05..0.05).
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else if lo != 0.0 {
        lo.abs() * 0.05
    } else {
        0.05
    };
    Some((lo - pad, hi + pad))
}

/// One panel: several named series over a shared x, NaNs skipped.
fn line_panel(
    area: &Area,
    title: &str,
    x_label: &str,
    xs: &[f64],
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    line_panel_in(area, title, x_label, xs, series, None)
}

/// [`line_panel`] with the y axis over `y_range` when given (shares: 0 to 1), else fitted to
/// the data.
pub(crate) fn line_panel_in(
    area: &Area,
    title: &str,
    x_label: &str,
    xs: &[f64],
    series: &[(String, Vec<f64>)],
    y_range: Option<(f64, f64)>,
) -> Result<()> {
    let x_range = finite_range(xs.iter().copied()).unwrap_or((0.0, 1.0));
    let y_range = y_range.unwrap_or_else(|| {
        finite_range(series.iter().flat_map(|(_, ys)| ys.iter().copied())).unwrap_or((0.0, 1.0))
    });
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT_FAMILY, 20))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
        .map_err(|e| plot_err(title, e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .label_style((FONT_FAMILY, 13))
        .draw()
        .map_err(|e| plot_err(title, e))?;
    for (i, (name, ys)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = xs
            .iter()
            .zip(ys)
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(&x, &y)| (x, y))
            .collect();
        // Markers where points are few (evaluation epochs), so a single one shows.
        if points.len() <= 50 {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| plot_err(title, e))?;
        }
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| plot_err(title, e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    // One series: the panel's title names it.
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font((FONT_FAMILY, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err(title, e))?;
    }
    Ok(())
}

/// Training curves from a `metrics.csv`, as the `results.png` of popular detector trainers: one
/// panel per loss (`train/*` columns), per metric (AP, AP50, AP75, AP_small) and the learning
/// rate, each against epoch (or iteration, or row number when neither column exists) over the
/// whole run, each axis fitted to its own data. Metrics exist on evaluation epochs only; their
/// points are joined across the epochs between.
pub fn training_curves_png(table: &MetricsTable) -> Result<Vec<u8>> {
    if table.rows.is_empty() {
        return Err(Error::InvalidArgument(
            "training curves: the table has no rows".into(),
        ));
    }
    let (x_label, xs) = match (table.column("epoch"), table.column("iteration")) {
        (Some(xs), _) => ("epoch", xs),
        (None, Some(xs)) => ("iteration", xs),
        (None, None) => ("row", (0..table.rows.len()).map(|i| i as f64).collect()),
    };
    let pick = |names: Vec<String>| -> Vec<(String, Vec<f64>)> {
        names
            .into_iter()
            .filter_map(|n| table.column(&n).map(|v| (n, v)))
            .collect()
    };
    let mut names: Vec<String> = table
        .columns
        .iter()
        .filter(|c| c.starts_with("train/"))
        .cloned()
        .collect();
    names.extend(["AP", "AP50", "AP75", "AP_small", "lr"].map(String::from));
    let panels: Vec<(String, Vec<f64>)> = pick(names)
        .into_iter()
        // A loss that stays 0 the whole run (l1 before the no-aug phase of a short run) is
        // still shown: its panel says so.
        .collect();
    if panels.is_empty() {
        return Err(Error::InvalidArgument(
            "training curves: no train/*, AP or lr column".into(),
        ));
    }
    let cols = panels.len().div_ceil(2).max(1);
    let rows = if panels.len() > cols { 2 } else { 1 };
    render_png(320 * cols as u32, 300 * rows as u32, |root| {
        let areas = root.split_evenly((rows, cols));
        for ((name, ys), area) in panels.iter().zip(&areas) {
            line_panel(area, name, x_label, &xs, &[(name.clone(), ys.clone())])?;
        }
        Ok(())
    })
}

/// One panel of [`line_panels_png`]: its title and its named series.
pub type LinePanel = (String, Vec<(String, Vec<f64>)>);

/// Panels side by side, each with several named series over the shared `xs` (a NaN is no
/// point): e.g. AP and AP_small against the label fraction, one line per method.
pub fn line_panels_png(x_label: &str, xs: &[f64], panels: &[LinePanel]) -> Result<Vec<u8>> {
    if panels.is_empty() {
        return Err(Error::InvalidArgument(
            "line panels: nothing to plot".into(),
        ));
    }
    render_png(520 * panels.len() as u32, 380, |root| {
        let areas = root.split_evenly((1, panels.len()));
        for ((title, series), area) in panels.iter().zip(&areas) {
            line_panel(area, title, x_label, xs, series)?;
        }
        Ok(())
    })
}

/// Precision-recall curves at IoU 0.5 and 0.75 (area all, largest max-dets), averaged over the
/// categories with ground truth, or for one category.
pub fn pr_curves_png(metrics: &Metrics, category_id: Option<u64>) -> Result<Vec<u8>> {
    let mut series = Vec::new();
    for (thr, label) in [(0.5, "IoU=0.50"), (0.75, "IoU=0.75")] {
        let curve = metrics.precision.pr_curve(thr, category_id)?;
        series.push((label, curve));
    }
    let title = match category_id {
        Some(id) => format!("precision-recall, category {id}"),
        None => "precision-recall, all categories".to_string(),
    };
    render_png(700, 550, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&title, (FONT_FAMILY, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
            .map_err(|e| plot_err("pr curves", e))?;
        chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .label_style((FONT_FAMILY, 14))
            .draw()
            .map_err(|e| plot_err("pr curves", e))?;
        for (i, (label, curve)) in series.into_iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(curve, color.stroke_width(2)))
                .map_err(|e| plot_err("pr curves", e))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font((FONT_FAMILY, 14))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err("pr curves", e))
    })
}

/// A grouped bar chart: for each metric, one bar per run (ablations). `values[run][metric]`;
/// pycocotools' -1 ("not computed") and NaN are left out.
pub fn run_bars_png(
    run_names: &[String],
    metric_names: &[String],
    values: &[Vec<f64>],
) -> Result<Vec<u8>> {
    if run_names.is_empty() || metric_names.is_empty() {
        return Err(Error::InvalidArgument(
            "run bars: need at least one run and one metric".into(),
        ));
    }
    if values.len() != run_names.len() {
        return Err(Error::InvalidArgument(format!(
            "run bars: {} value rows for {} runs",
            values.len(),
            run_names.len()
        )));
    }
    for (run, row) in run_names.iter().zip(values) {
        if row.len() != metric_names.len() {
            return Err(Error::InvalidArgument(format!(
                "run bars: run `{run}` has {} values for {} metrics",
                row.len(),
                metric_names.len()
            )));
        }
    }
    let y_max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.15;
    let (n_runs, n_metrics) = (run_names.len(), metric_names.len());
    let width = (160 + n_metrics * (n_runs * 22 + 30)).clamp(600, 3000) as u32;
    render_png(width, 500, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("metrics by run", (FONT_FAMILY, 22))
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n_metrics as f64, 0.0..y_max)
            .map_err(|e| plot_err("run bars", e))?;
        let names = metric_names.to_vec();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n_metrics * 2 + 1)
            .x_label_formatter(&|x| {
                // Label the middle of each group, nothing elsewhere.
                let i = (x - 0.5).round();
                if (x - 0.5 - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .label_style((FONT_FAMILY, 13))
            .draw()
            .map_err(|e| plot_err("run bars", e))?;
        let bar_width = 0.8 / n_runs as f64;
        for (r, (run, row)) in run_names.iter().zip(values).enumerate() {
            let color = Palette99::pick(r).to_rgba();
            let bars = row
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite() && **v >= 0.0)
                .map(|(m, &v)| {
                    let x0 = m as f64 + 0.1 + r as f64 * bar_width;
                    Rectangle::new([(x0, 0.0), (x0 + bar_width * 0.9, v)], color.filled())
                });
            chart
                .draw_series(bars)
                .map_err(|e| plot_err("run bars", e))?
                .label(run.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT_FAMILY, 13))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| plot_err("run bars", e))
    })
}

/// Write PNG bytes to `out` (temporary file + rename).
pub fn write_png(out: &Path, png: &[u8]) -> Result<()> {
    write_atomic(out, png)
}

/// [`training_curves_png`] written to `out`.
pub fn plot_training_curves(table: &MetricsTable, out: &Path) -> Result<()> {
    write_png(out, &training_curves_png(table)?)
}

/// [`pr_curves_png`] written to `out`.
pub fn plot_pr_curves(metrics: &Metrics, category_id: Option<u64>, out: &Path) -> Result<()> {
    write_png(out, &pr_curves_png(metrics, category_id)?)
}

/// [`run_bars_png`] written to `out`.
pub fn plot_run_bars(
    run_names: &[String],
    metric_names: &[String],
    values: &[Vec<f64>],
    out: &Path,
) -> Result<()> {
    write_png(out, &run_bars_png(run_names, metric_names, values)?)
}

/// [`line_panels_png`] written to `out`.
pub fn plot_line_panels(x_label: &str, xs: &[f64], panels: &[LinePanel], out: &Path) -> Result<()> {
    write_png(out, &line_panels_png(x_label, xs, panels)?)
}
