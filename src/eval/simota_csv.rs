//! A run's `simota.csv`: what the label assignment did per object size, one row per epoch and
//! size bucket (`detect::simota_stats`, `docs/simota-diagnostics.md`), with the columns
//! `epoch,bucket,gts,unmatched_gts,positives,positives_iou0,mean_positive_iou`
//! (`mean_positive_iou` empty for a bucket without positives). Same rules as `metrics.csv`: an
//! existing file is appended to only when its header is the same, and a resumed run drops the
//! rows written after its checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use crate::csv_table::{read_csv, CsvAppender};
use crate::detect::simota_stats::{AssignmentStats, BucketCounts, SIZE_BUCKETS};
use crate::eval::metrics_csv::drop_rows_after_epoch;
use crate::{Error, Result};

/// The header of `simota.csv`.
pub const SIMOTA_CSV_COLUMNS: [&str; 7] = [
    "epoch",
    "bucket",
    "gts",
    "unmatched_gts",
    "positives",
    "positives_iou0",
    "mean_positive_iou",
];

/// One row: an epoch's counts for one size bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct SimotaRow {
    /// Epochs completed (1-based), as in `metrics.csv`.
    pub epoch: usize,
    /// Index into [`SIZE_BUCKETS`].
    pub bucket: usize,
    pub gts: u64,
    pub unmatched_gts: u64,
    pub positives: u64,
    pub positives_iou0: u64,
    /// NaN without positives.
    pub mean_positive_iou: f64,
}

impl SimotaRow {
    pub fn bucket_name(&self) -> &'static str {
        SIZE_BUCKETS[self.bucket]
    }

    /// The counts back (the IoU sum as mean × positives).
    pub fn counts(&self) -> BucketCounts {
        BucketCounts {
            gts: self.gts,
            unmatched_gts: self.unmatched_gts,
            positives: self.positives,
            positives_iou0: self.positives_iou0,
            positive_iou_sum: if self.positives == 0 {
                0.0
            } else {
                self.mean_positive_iou * self.positives as f64
            },
        }
    }

    fn cells(&self) -> Vec<String> {
        let mean = if self.mean_positive_iou.is_finite() {
            format!("{}", self.mean_positive_iou)
        } else {
            String::new()
        };
        vec![
            self.epoch.to_string(),
            self.bucket_name().to_string(),
            self.gts.to_string(),
            self.unmatched_gts.to_string(),
            self.positives.to_string(),
            self.positives_iou0.to_string(),
            mean,
        ]
    }
}

/// The rows of one epoch, every bucket in order (empty ones too).
pub fn simota_rows(epoch: usize, stats: &AssignmentStats) -> Vec<SimotaRow> {
    stats
        .buckets
        .iter()
        .enumerate()
        .map(|(bucket, c)| SimotaRow {
            epoch,
            bucket,
            gts: c.gts,
            unmatched_gts: c.unmatched_gts,
            positives: c.positives,
            positives_iou0: c.positives_iou0,
            mean_positive_iou: c.mean_positive_iou(),
        })
        .collect()
}

/// Counts summed per `(epoch, bucket)`: the rows of several runs of one arm (seeds) pooled, so
/// that each share is a ratio of sums.
pub fn pool_rows<'a>(
    rows: impl IntoIterator<Item = &'a SimotaRow>,
) -> BTreeMap<(usize, usize), BucketCounts> {
    let mut pooled: BTreeMap<(usize, usize), BucketCounts> = BTreeMap::new();
    for r in rows {
        pooled
            .entry((r.epoch, r.bucket))
            .or_default()
            .add(&r.counts());
    }
    pooled
}

/// An open `simota.csv` appender (each epoch's rows written and flushed as they come).
#[derive(Debug)]
pub struct SimotaCsv {
    file: CsvAppender,
}

impl SimotaCsv {
    /// Create `path` with its header, or append to it when it exists with the same header.
    pub fn open(path: &Path) -> Result<Self> {
        if path.exists() {
            let found = read_csv(path)?.header;
            if found != SIMOTA_CSV_COLUMNS {
                return Err(Error::format(
                    path.display(),
                    format!(
                        "exists with another header; refusing to append (expected `{}`, found `{}`)",
                        SIMOTA_CSV_COLUMNS.join(","),
                        found.join(",")
                    ),
                ));
            }
        }
        Ok(SimotaCsv {
            file: CsvAppender::open(path, &SIMOTA_CSV_COLUMNS)?,
        })
    }

    /// [`Self::open`] for a run resumed after `epochs_done` epochs (later rows dropped first).
    pub fn open_resumed(path: &Path, epochs_done: usize) -> Result<Self> {
        drop_rows_after_epoch(path, epochs_done)?;
        Self::open(path)
    }

    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Append one epoch's rows.
    pub fn append_epoch(&mut self, epoch: usize, stats: &AssignmentStats) -> Result<()> {
        for row in simota_rows(epoch, stats) {
            self.file.append(&row.cells())?;
        }
        Ok(())
    }
}

/// Read a `simota.csv`; errors name the file, line and column.
pub fn read_simota_csv(path: &Path) -> Result<Vec<SimotaRow>> {
    let table = read_csv(path)?;
    if table.header != SIMOTA_CSV_COLUMNS {
        return Err(Error::format(
            path.display(),
            format!(
                "not a simota.csv: expected the columns `{}`, found `{}`",
                SIMOTA_CSV_COLUMNS.join(","),
                table.header.join(",")
            ),
        ));
    }
    let mut rows = Vec::with_capacity(table.records.len());
    for (line, r) in &table.records {
        let bad = |col: &str, why: &str| {
            Error::format(
                path.display(),
                format!("line {line}, column `{col}`: {why}"),
            )
        };
        let count = |i: usize| -> Result<u64> {
            let cell = r[i].trim();
            cell.parse()
                .map_err(|_| bad(SIMOTA_CSV_COLUMNS[i], &format!("`{cell}` is not a count")))
        };
        let bucket_cell = r[1].trim();
        let bucket = SIZE_BUCKETS
            .iter()
            .position(|b| *b == bucket_cell)
            .ok_or_else(|| {
                bad(
                    "bucket",
                    &format!("`{bucket_cell}` is not one of {SIZE_BUCKETS:?}"),
                )
            })?;
        let mean_cell = r[6].trim();
        let mean_positive_iou = if mean_cell.is_empty() {
            f64::NAN
        } else {
            mean_cell.parse().map_err(|_| {
                bad(
                    "mean_positive_iou",
                    &format!("`{mean_cell}` is not a number"),
                )
            })?
        };
        rows.push(SimotaRow {
            epoch: count(0)? as usize,
            bucket,
            gts: count(2)?,
            unmatched_gts: count(3)?,
            positives: count(4)?,
            positives_iou0: count(5)?,
            mean_positive_iou,
        });
    }
    Ok(rows)
}

fn percent(v: f64) -> String {
    if v.is_finite() {
        format!("{:.1} %", v * 100.0)
    } else {
        "-".to_string()
    }
}

/// A small text table of one epoch's counts (the buckets holding ground truth, and all of
/// them together), as a run prints it at the end of training.
pub fn simota_table_text(epoch: usize, stats: &AssignmentStats) -> String {
    let mut lines = vec![
        format!("label assignment by object size (sqrt(w·h), input px), epoch {epoch}:"),
        format!(
            "{:>7} {:>9} {:>10} {:>10} {:>12} {:>9}",
            "bucket", "gts", "unmatched", "positives", "iou0 share", "mean IoU"
        ),
    ];
    let total = stats.total();
    let shown = stats.named().filter(|(_, c)| c.gts > 0);
    for (name, c) in shown.chain(std::iter::once(("all", &total))) {
        let mean = c.mean_positive_iou();
        lines.push(format!(
            "{name:>7} {:>9} {:>10} {:>10} {:>12} {:>9}",
            c.gts,
            percent(c.unmatched_share()),
            c.positives,
            percent(c.iou0_share()),
            if mean.is_finite() {
                format!("{mean:.3}")
            } else {
                "-".to_string()
            }
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> AssignmentStats {
        let mut s = AssignmentStats::default();
        s.buckets[0] = BucketCounts {
            gts: 4,
            unmatched_gts: 1,
            positives: 3,
            positives_iou0: 2,
            positive_iou_sum: 0.75,
        };
        s.buckets[3].gts = 2;
        s.buckets[3].unmatched_gts = 2;
        s
    }

    #[test]
    fn rows_round_trip_through_the_file_and_resume_drops_later_epochs() {
        let dir = std::env::temp_dir().join(format!("ssod_simota_csv_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("simota.csv");
        let mut csv = SimotaCsv::open(&path).unwrap();
        csv.append_epoch(1, &stats()).unwrap();
        csv.append_epoch(2, &AssignmentStats::default()).unwrap();
        drop(csv);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 11);
        assert_eq!(
            lines[0],
            "epoch,bucket,gts,unmatched_gts,positives,positives_iou0,mean_positive_iou"
        );
        assert_eq!(lines[1], "1,<8,4,1,3,2,0.25");
        assert_eq!(lines[4], "1,32-96,2,2,0,0,");
        assert_eq!(lines[10], "2,>=96,0,0,0,0,");
        let rows = read_simota_csv(&path).unwrap();
        assert_eq!(rows.len(), 10);
        assert_eq!(rows[0].counts(), stats().buckets[0]);
        assert!(rows[3].mean_positive_iou.is_nan());
        // Pooling two copies doubles the counts; the shares stay.
        let pooled = pool_rows(rows.iter().chain(&rows));
        assert_eq!(pooled[&(1, 0)].gts, 8);
        assert_eq!(pooled[&(1, 0)].iou0_share(), 2.0 / 3.0);
        SimotaCsv::open_resumed(&path, 1).unwrap();
        assert_eq!(read_simota_csv(&path).unwrap().len(), 5);
        // Another file is neither appended to nor read as one.
        let other = dir.join("other.csv");
        std::fs::write(&other, "epoch,loss\n1,2\n").unwrap();
        assert!(SimotaCsv::open(&other).is_err());
        let err = read_simota_csv(&other).unwrap_err().to_string();
        assert!(err.contains("other.csv"), "{err}");
        std::fs::write(
            &other,
            format!("{}\n1,tiny,1,0,1,0,\n", SIMOTA_CSV_COLUMNS.join(",")),
        )
        .unwrap();
        let err = read_simota_csv(&other).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("`tiny`"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn table_shows_buckets_with_ground_truth_and_the_total() {
        let text = simota_table_text(3, &stats());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].contains("epoch 3"));
        // <8: 1 of 4 unmatched, 2 of 3 positives at IoU 0, mean 0.25.
        assert!(
            lines[2].contains("<8") && lines[2].contains("25.0 %"),
            "{text}"
        );
        assert!(
            lines[2].contains("66.7 %") && lines[2].contains("0.250"),
            "{text}"
        );
        assert!(
            lines[3].contains("32-96") && lines[3].contains("100.0 %"),
            "{text}"
        );
        // all: 3 of 6 unmatched.
        assert!(
            lines[4].contains("all") && lines[4].contains("50.0 %"),
            "{text}"
        );
    }
}
