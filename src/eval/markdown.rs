//! Markdown tables of metric rows, as the study reports them (`| Run | AP | AP50 | ... |`), with
//! `mean ± std` when a run was repeated over several seeds.

use crate::{Error, Result};

/// One table row: a label and, per seed, one value per column.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    pub label: String,
    pub per_seed: Vec<Vec<f64>>,
}

/// Mean and sample standard deviation (n - 1 in the denominator; 0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// `0.325` for one seed, `0.325 ± 0.004` for several; `n/a` for pycocotools' -1 ("not computed").
pub fn format_cell(values: &[f64], decimals: usize) -> String {
    if values.is_empty() || values.iter().any(|&v| v < 0.0 || v.is_nan()) {
        return "n/a".to_string();
    }
    let (mean, std) = mean_std(values);
    if values.len() == 1 {
        format!("{mean:.decimals$}")
    } else {
        format!("{mean:.decimals$} ± {std:.decimals$}")
    }
}

/// A markdown table: header `| first_column | columns... |`, one line per row. When any row has
/// several seeds, the header's first cell says how many (`Run (seeds)` and `(n=3)` per row).
pub fn markdown_table(
    first_column: &str,
    columns: &[String],
    rows: &[MetricRow],
    decimals: usize,
) -> Result<String> {
    for row in rows {
        if row.per_seed.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "markdown table: row `{}` has no values",
                row.label
            )));
        }
        for (s, values) in row.per_seed.iter().enumerate() {
            if values.len() != columns.len() {
                return Err(Error::InvalidArgument(format!(
                    "markdown table: row `{}`, seed {s}: {} values for {} columns",
                    row.label,
                    values.len(),
                    columns.len()
                )));
            }
        }
    }
    let multi_seed = rows.iter().any(|r| r.per_seed.len() > 1);
    let mut out = format!("| {first_column} | {} |\n", columns.join(" | "));
    out.push_str(&format!("|---|{}\n", "---|".repeat(columns.len())));
    for row in rows {
        let cells: Vec<String> = (0..columns.len())
            .map(|c| {
                let values: Vec<f64> = row.per_seed.iter().map(|v| v[c]).collect();
                format_cell(&values, decimals)
            })
            .collect();
        let label = if multi_seed {
            format!("{} (n={})", row.label, row.per_seed.len())
        } else {
            row.label.clone()
        };
        out.push_str(&format!("| {label} | {} |\n", cells.join(" | ")));
    }
    Ok(out)
}
