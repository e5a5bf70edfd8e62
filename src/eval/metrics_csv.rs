//! A run's `metrics.csv`: one row per evaluation during training, in the layout users know from
//! the `results.csv` of popular detector trainers: `epoch, iteration, lr, train/<loss>...,` the 12
//! COCO stats, `images_per_s`.
//!
//! Rule for existing files (nothing a user made is overwritten): opening a `metrics.csv` that
//! already exists appends to it when its header is the same (a resumed run) and refuses otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::eval::coco::{stat_names, MaxDets, Metrics};
use crate::{Error, Result};

/// One evaluation's row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    pub epoch: usize,
    pub iteration: u64,
    pub lr: f64,
    /// Loss components by name, in the order given to [`MetricsCsv::open`].
    pub losses: Vec<(String, f64)>,
    /// pycocotools' 12 stats.
    pub stats: [f64; 12],
    pub images_per_s: f64,
}

impl MetricsRow {
    /// A row from an evaluation's [`Metrics`].
    pub fn from_metrics(
        epoch: usize,
        iteration: u64,
        lr: f64,
        losses: Vec<(String, f64)>,
        metrics: &Metrics,
        images_per_s: f64,
    ) -> Self {
        MetricsRow {
            epoch,
            iteration,
            lr,
            losses,
            stats: metrics.stats,
            images_per_s,
        }
    }
}

/// The header for a set of loss names and max-dets.
pub fn metrics_csv_header(loss_names: &[&str], max_dets: MaxDets) -> Vec<String> {
    let mut header = vec![
        "epoch".to_string(),
        "iteration".to_string(),
        "lr".to_string(),
    ];
    header.extend(loss_names.iter().map(|n| format!("train/{n}")));
    header.extend(stat_names(max_dets));
    header.push("images_per_s".to_string());
    header
}

/// An open `metrics.csv` appender. Each `append` writes and flushes one line, so a crash loses
/// at most the row being written.
#[derive(Debug)]
pub struct MetricsCsv {
    path: PathBuf,
    loss_names: Vec<String>,
    file: std::fs::File,
}

impl MetricsCsv {
    /// Create `path` with its header, or append to it when it exists with the same header.
    pub fn open(path: &Path, loss_names: &[&str], max_dets: MaxDets) -> Result<Self> {
        for name in loss_names {
            if name.is_empty() || name.contains([',', '\n', '"']) {
                return Err(Error::InvalidArgument(format!(
                    "metrics.csv: loss name {name:?} must be non-empty without commas, quotes or newlines"
                )));
            }
        }
        let header = metrics_csv_header(loss_names, max_dets).join(",");
        let exists = path.exists();
        if exists {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let found = text.lines().next().unwrap_or("");
            if found != header {
                return Err(Error::format(
                    path.display(),
                    format!(
                        "exists with another header; refusing to append (expected `{header}`, found `{found}`)"
                    ),
                ));
            }
        } else if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        if !exists {
            writeln!(file, "{header}").map_err(|e| Error::io(path, e))?;
        }
        Ok(MetricsCsv {
            path: path.to_path_buf(),
            loss_names: loss_names.iter().map(|s| s.to_string()).collect(),
            file,
        })
    }

    /// [`Self::open`] for a run resumed after `epochs_done` epochs: rows of later epochs (a
    /// process killed after writing a row but before its checkpoint) are dropped first, by an
    /// atomic rewrite, since the resumed run writes them again.
    pub fn open_resumed(
        path: &Path,
        loss_names: &[&str],
        max_dets: MaxDets,
        epochs_done: usize,
    ) -> Result<Self> {
        if path.exists() {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let mut lines = text.lines();
            let mut kept: Vec<&str> = lines.next().into_iter().collect();
            let mut dropped = 0;
            for line in lines {
                let epoch = line.split(',').next().and_then(|c| c.parse::<usize>().ok());
                match epoch {
                    Some(e) if e > epochs_done => dropped += 1,
                    _ => kept.push(line),
                }
            }
            if dropped > 0 {
                let mut text = kept.join("\n");
                text.push('\n');
                crate::data::dataset::write_atomic(path, text.as_bytes())?;
            }
        }
        Self::open(path, loss_names, max_dets)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one row; its losses must have the names (and order) the file was opened with.
    pub fn append(&mut self, row: &MetricsRow) -> Result<()> {
        let names: Vec<&str> = row.losses.iter().map(|(n, _)| n.as_str()).collect();
        if names
            != self
                .loss_names
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        {
            return Err(Error::InvalidArgument(format!(
                "{}: row losses {names:?} differ from the columns {:?}",
                self.path.display(),
                self.loss_names
            )));
        }
        let mut cells = vec![
            row.epoch.to_string(),
            row.iteration.to_string(),
            format!("{}", row.lr),
        ];
        cells.extend(row.losses.iter().map(|(_, v)| format!("{v}")));
        cells.extend(row.stats.iter().map(|v| format!("{v}")));
        cells.push(format!("{}", row.images_per_s));
        writeln!(self.file, "{}", cells.join(",")).map_err(|e| Error::io(&self.path, e))?;
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }
}

/// A numeric csv read back: column names and rows (an empty cell reads as NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

impl MetricsTable {
    /// The values of one column, or `None` when there is no such column.
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }
}

/// Read a `metrics.csv` (or any all-numeric csv with a header row).
pub fn read_metrics_csv(path: &Path) -> Result<MetricsTable> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error::format(path.display(), "empty file: expected a header row"))?;
    let columns: Vec<String> = header.split(',').map(|s| s.trim().to_string()).collect();
    let mut rows = Vec::new();
    for (line_idx, line) in lines {
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != columns.len() {
            return Err(Error::format(
                path.display(),
                format!(
                    "line {}: {} cells, the header has {}",
                    line_idx + 1,
                    cells.len(),
                    columns.len()
                ),
            ));
        }
        let row = cells
            .iter()
            .zip(&columns)
            .map(|(cell, col)| {
                let cell = cell.trim();
                if cell.is_empty() {
                    return Ok(f64::NAN);
                }
                cell.parse::<f64>().map_err(|_| {
                    Error::format(
                        path.display(),
                        format!(
                            "line {}, column `{col}`: `{cell}` is not a number",
                            line_idx + 1
                        ),
                    )
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        rows.push(row);
    }
    Ok(MetricsTable { columns, rows })
}
