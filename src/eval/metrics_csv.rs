//! A run's `metrics.csv`: one row per epoch, in the layout users know from the `results.csv` of
//! popular detector trainers: `epoch, iteration, lr, train/<loss>...,` the 12 COCO stats,
//! `images_per_s`, `time_s`. The stats are filled on evaluation epochs and empty otherwise.
//! Written and read with the `csv` crate ([`crate::csv_table`]).
//!
//! Rule for existing files (nothing a user made is overwritten): opening a `metrics.csv` that
//! already exists appends to it when its header is the same (a resumed run) and refuses otherwise.

use std::path::Path;

use crate::csv_table::{csv_string, read_csv, CsvAppender};
use crate::eval::coco::{stat_names, MaxDets, Metrics};
use crate::{Error, Result};

/// One epoch's row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsRow {
    /// Epochs completed (1-based).
    pub epoch: usize,
    pub iteration: u64,
    pub lr: f64,
    /// Loss components by name (epoch means), in the order given to [`MetricsCsv::open`].
    pub losses: Vec<(String, f64)>,
    /// pycocotools' 12 stats when the epoch was evaluated.
    pub stats: Option<[f64; 12]>,
    pub images_per_s: f64,
    /// Seconds the epoch's training took (evaluation not included).
    pub seconds: f64,
}

impl MetricsRow {
    /// A row with an evaluation's [`Metrics`], if there was one.
    pub fn new(
        epoch: usize,
        iteration: u64,
        lr: f64,
        losses: Vec<(String, f64)>,
        metrics: Option<&Metrics>,
        images_per_s: f64,
        seconds: f64,
    ) -> Self {
        MetricsRow {
            epoch,
            iteration,
            lr,
            losses,
            stats: metrics.map(|m| m.stats),
            images_per_s,
            seconds,
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
    header.push("time_s".to_string());
    header
}

/// An open `metrics.csv` appender. Each `append` writes and flushes one row, so a crash loses
/// at most the row being written.
#[derive(Debug)]
pub struct MetricsCsv {
    loss_names: Vec<String>,
    file: CsvAppender,
}

impl MetricsCsv {
    /// Create `path` with its header, or append to it when it exists with the same header.
    pub fn open(path: &Path, loss_names: &[&str], max_dets: MaxDets) -> Result<Self> {
        if loss_names.iter().any(|n| n.is_empty()) {
            return Err(Error::InvalidArgument(
                "metrics.csv: loss names must be non-empty".into(),
            ));
        }
        let header = metrics_csv_header(loss_names, max_dets);
        if path.exists() {
            let found = read_csv(path)?.header;
            if found != header {
                return Err(Error::format(
                    path.display(),
                    format!(
                        "exists with another header; refusing to append (expected `{}`, found `{}`)",
                        header.join(","),
                        found.join(",")
                    ),
                ));
            }
        } else if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            }
        }
        Ok(MetricsCsv {
            loss_names: loss_names.iter().map(|s| s.to_string()).collect(),
            file: CsvAppender::open(path, &header)?,
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
        drop_rows_after_epoch(path, epochs_done)?;
        Self::open(path, loss_names, max_dets)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
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
                self.path().display(),
                self.loss_names
            )));
        }
        let mut cells = vec![
            row.epoch.to_string(),
            row.iteration.to_string(),
            format!("{}", row.lr),
        ];
        cells.extend(row.losses.iter().map(|(_, v)| format!("{v}")));
        match &row.stats {
            Some(stats) => cells.extend(stats.iter().map(|v| format!("{v}"))),
            None => cells.extend(std::iter::repeat_n(String::new(), 12)),
        }
        cells.push(format!("{}", row.images_per_s));
        cells.push(format!("{}", row.seconds));
        self.file.append(&cells)
    }
}

/// Drop the rows of a per-epoch csv (first column `epoch`) after `epochs_done`, by an atomic
/// rewrite, when `path` exists: a resumed run writes them again.
pub fn drop_rows_after_epoch(path: &Path, epochs_done: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let table = read_csv(path)?;
    let rows: Vec<Vec<String>> = table
        .records
        .iter()
        .map(|(_, r)| r.clone())
        .filter(|r| r[0].parse::<usize>().map_or(true, |e| e <= epochs_done))
        .collect();
    if rows.len() < table.records.len() {
        let text = csv_string(&table.header, &rows)?;
        crate::data::dataset::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
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
    let table = read_csv(path)?;
    let mut rows = Vec::new();
    for (line, record) in &table.records {
        let row = record
            .iter()
            .zip(&table.header)
            .map(|(cell, col)| {
                let cell = cell.trim();
                if cell.is_empty() {
                    return Ok(f64::NAN);
                }
                cell.parse::<f64>().map_err(|_| {
                    Error::format(
                        path.display(),
                        format!("line {line}, column `{col}`: `{cell}` is not a number"),
                    )
                })
            })
            .collect::<Result<Vec<f64>>>()?;
        rows.push(row);
    }
    Ok(MetricsTable {
        columns: table.header,
        rows,
    })
}
