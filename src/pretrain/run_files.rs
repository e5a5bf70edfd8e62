//! The per-epoch files every pretraining run writes into its `out` folder: `epochs.csv` (one
//! row per epoch, rewritten whole after each epoch, so a resumed run's file holds every epoch)
//! and `loss.png` (the loss and, when measured, the embedding health per epoch).

use std::path::Path;

use super::{EpochStats, PretrainReport};
use crate::atomic_file::write_atomic;
use crate::csv_table::csv_string;
use crate::eval::plots::{plot_line_panels, LinePanel};
use crate::Result;

/// The per-epoch table's file name.
pub const EPOCHS_CSV: &str = "epochs.csv";
/// The loss plot's file name.
pub const LOSS_PNG: &str = "loss.png";

/// Health columns of `epochs.csv` (empty where the epoch was not checked).
pub const HEALTH_COLUMNS: &[&str] = &[
    "health_std_mean",
    "health_std_min",
    "health_std_ratio",
    "health_effective_rank",
    "health_alignment",
    "health_uniformity",
    "health_collapsed",
];

/// A column only some methods fill: its name and how to read it from an epoch.
type OptionalColumn = (&'static str, fn(&EpochStats) -> Option<f64>);

fn opt(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

fn health_fields(e: &EpochStats) -> Vec<String> {
    match &e.health {
        None => vec![String::new(); HEALTH_COLUMNS.len()],
        Some(h) => vec![
            h.std_mean.to_string(),
            h.std_min.to_string(),
            h.std_ratio.to_string(),
            h.effective_rank.to_string(),
            h.alignment.to_string(),
            h.uniformity.to_string(),
            h.collapsed.to_string(),
        ],
    }
}

/// `epochs.csv`'s text: `epoch` (1-based), `loss`, `seconds`, `images_seen`, then `accuracy`,
/// `pos_cos`, `neg_cos` when some epoch has them, then [`HEALTH_COLUMNS`].
pub fn epochs_csv(epochs: &[EpochStats]) -> Result<String> {
    let optional: [OptionalColumn; 3] = [
        ("accuracy", |e| e.accuracy),
        ("pos_cos", |e| e.mean_pos_cos),
        ("neg_cos", |e| e.mean_neg_cos),
    ];
    let present: Vec<_> = optional
        .iter()
        .filter(|(_, get)| epochs.iter().any(|e| get(e).is_some()))
        .collect();
    let mut header: Vec<&str> = vec!["epoch", "loss", "seconds", "images_seen"];
    header.extend(present.iter().map(|(name, _)| *name));
    header.extend(HEALTH_COLUMNS);
    let rows: Vec<Vec<String>> = epochs
        .iter()
        .map(|e| {
            let mut row = vec![
                (e.epoch + 1).to_string(),
                e.loss.to_string(),
                e.seconds.to_string(),
                e.images_seen.to_string(),
            ];
            row.extend(present.iter().map(|(_, get)| opt(get(e))));
            row.extend(health_fields(e));
            row
        })
        .collect();
    csv_string(&header, &rows)
}

/// Write `epochs.csv` and `loss.png` of `report` into `dir` (each through a temporary file).
pub fn write_epoch_files(dir: &Path, report: &PretrainReport, title: &str) -> Result<()> {
    write_atomic(
        &dir.join(EPOCHS_CSV),
        epochs_csv(&report.epochs)?.as_bytes(),
    )?;
    let xs: Vec<f64> = report.epochs.iter().map(|e| (e.epoch + 1) as f64).collect();
    let series =
        |get: &dyn Fn(&EpochStats) -> f64| -> Vec<f64> { report.epochs.iter().map(get).collect() };
    let mut panels: Vec<LinePanel> = vec![(
        format!("{title}: training loss"),
        vec![("loss".into(), series(&|e| e.loss))],
    )];
    if report.epochs.iter().any(|e| e.health.is_some()) {
        let health = |get: fn(&super::health::HealthReport) -> f64| {
            series(&|e| e.health.as_ref().map_or(f64::NAN, get))
        };
        panels.push((
            "std of normalised embedding · √d".into(),
            vec![("std_ratio".into(), health(|h| h.std_ratio))],
        ));
        panels.push((
            "effective rank".into(),
            vec![("effective_rank".into(), health(|h| h.effective_rank))],
        ));
    }
    plot_line_panels("epoch", &xs, &panels, &dir.join(LOSS_PNG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_optional_columns_only_when_used() {
        let epochs = vec![
            EpochStats {
                epoch: 0,
                loss: 1.5,
                seconds: 2.0,
                images_seen: 8,
                ..Default::default()
            },
            EpochStats {
                epoch: 1,
                loss: 0.5,
                accuracy: Some(0.75),
                ..Default::default()
            },
        ];
        let text = epochs_csv(&epochs).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "epoch,loss,seconds,images_seen,accuracy,health_std_mean,health_std_min,\
             health_std_ratio,health_effective_rank,health_alignment,health_uniformity,\
             health_collapsed"
        );
        assert_eq!(lines.next().unwrap(), "1,1.5,2,8,,,,,,,,");
        assert_eq!(lines.next().unwrap(), "2,0.5,0,0,0.75,,,,,,,");
    }
}
