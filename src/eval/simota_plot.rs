//! Plots of `simota.csv` (`docs/simota-diagnostics.md`): for one run, `simota.png` in its folder
//! (the share of positives at IoU 0, the share of ground truth left without a positive and the
//! positives' mean IoU, each against epoch, one line per size bucket); for several runs (box
//! losses, say), the two shares per bucket with one line per run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::detect::simota_stats::{BucketCounts, SIZE_BUCKETS};
use crate::eval::plots::{line_panel_in, render_png, write_png};
use crate::eval::simota_csv::{pool_rows, SimotaRow};
use crate::{Error, Result};

type Pooled = BTreeMap<(usize, usize), BucketCounts>;

type Quantity = (&'static str, fn(&BucketCounts) -> f64, Option<(f64, f64)>);

/// The quantities plotted: panel title, value, y axis (the shares on 0 to 1, the mean IoU
/// fitted to its values).
const QUANTITIES: [Quantity; 3] = [
    (
        "positives at IoU 0 (share)",
        BucketCounts::iou0_share,
        SHARE_AXIS,
    ),
    (
        "GTs without a positive (share)",
        BucketCounts::unmatched_share,
        SHARE_AXIS,
    ),
    (
        "mean IoU of positives",
        BucketCounts::mean_positive_iou,
        None,
    ),
];
const SHARE_AXIS: Option<(f64, f64)> = Some((-0.02, 1.02));

fn epochs(pooled: &Pooled) -> Vec<usize> {
    pooled
        .keys()
        .map(|&(e, _)| e)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Buckets that hold ground truth in some epoch.
fn buckets_seen(pooled: &Pooled) -> Vec<usize> {
    let seen: BTreeSet<usize> = pooled
        .iter()
        .filter(|(_, c)| c.gts > 0)
        .map(|(&(_, b), _)| b)
        .collect();
    seen.into_iter().collect()
}

/// One quantity of one bucket at each epoch (NaN where undefined or absent).
fn series(
    pooled: &Pooled,
    epochs: &[usize],
    bucket: usize,
    f: fn(&BucketCounts) -> f64,
) -> Vec<f64> {
    epochs
        .iter()
        .map(|&e| pooled.get(&(e, bucket)).map_or(f64::NAN, f))
        .collect()
}

fn no_ground_truth(what: &str) -> Error {
    Error::InvalidArgument(format!("{what}: no epoch has a ground-truth box"))
}

/// One run's plot: three panels against epoch, one line per bucket holding ground truth.
pub fn simota_run_png(rows: &[SimotaRow]) -> Result<Vec<u8>> {
    let pooled = pool_rows(rows);
    let buckets = buckets_seen(&pooled);
    if buckets.is_empty() {
        return Err(no_ground_truth("simota plot"));
    }
    let epochs = epochs(&pooled);
    let xs: Vec<f64> = epochs.iter().map(|&e| e as f64).collect();
    render_png(1320, 380, |root| {
        let areas = root.split_evenly((1, QUANTITIES.len()));
        for ((title, f, y_range), area) in QUANTITIES.iter().zip(&areas) {
            let lines: Vec<(String, Vec<f64>)> = buckets
                .iter()
                .map(|&b| (SIZE_BUCKETS[b].to_string(), series(&pooled, &epochs, b, *f)))
                .collect();
            line_panel_in(area, title, "epoch", &xs, &lines, *y_range)?;
        }
        Ok(())
    })
}

/// Several runs' plot: a row per share (positives at IoU 0, GTs without a positive), a column
/// per bucket holding ground truth, one line per run. Each run's rows may hold several
/// seeds' epochs: their counts are pooled per epoch and bucket.
pub fn simota_compare_png(runs: &[(String, Vec<SimotaRow>)]) -> Result<Vec<u8>> {
    if runs.is_empty() {
        return Err(Error::InvalidArgument("simota plot: no runs".into()));
    }
    let pooled: Vec<(&String, Pooled)> = runs.iter().map(|(n, r)| (n, pool_rows(r))).collect();
    let mut all = Pooled::new();
    for (_, p) in &pooled {
        for (k, c) in p {
            all.entry(*k).or_default().add(c);
        }
    }
    let buckets = buckets_seen(&all);
    if buckets.is_empty() {
        return Err(no_ground_truth("simota plot"));
    }
    let epochs = epochs(&all);
    let xs: Vec<f64> = epochs.iter().map(|&e| e as f64).collect();
    let shares = &QUANTITIES[..2];
    let cols = buckets.len();
    render_png(440 * cols as u32, 340 * shares.len() as u32, |root| {
        let areas = root.split_evenly((shares.len(), cols));
        let panels = shares
            .iter()
            .flat_map(|q| buckets.iter().map(move |&b| (q, b)));
        for (((title, f, y_range), b), area) in panels.zip(&areas) {
            let lines: Vec<(String, Vec<f64>)> = pooled
                .iter()
                .map(|(name, p)| (name.to_string(), series(p, &epochs, b, *f)))
                .collect();
            let title = format!("{}: {title}", SIZE_BUCKETS[b]);
            line_panel_in(area, &title, "epoch", &xs, &lines, *y_range)?;
        }
        Ok(())
    })
}

/// [`simota_run_png`] written to `out`.
pub fn plot_simota_run(rows: &[SimotaRow], out: &Path) -> Result<()> {
    write_png(out, &simota_run_png(rows)?)
}

/// [`simota_compare_png`] written to `out`.
pub fn plot_simota_compare(runs: &[(String, Vec<SimotaRow>)], out: &Path) -> Result<()> {
    write_png(out, &simota_compare_png(runs)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::simota_stats::AssignmentStats;
    use crate::eval::simota_csv::simota_rows;

    fn rows() -> Vec<SimotaRow> {
        let mut s = AssignmentStats::default();
        s.buckets[0].gts = 3;
        s.buckets[0].positives = 2;
        s.buckets[0].positives_iou0 = 1;
        s.buckets[2].gts = 1;
        let mut out = simota_rows(1, &s);
        s.buckets[0].positives_iou0 = 0;
        out.extend(simota_rows(2, &s));
        out
    }

    #[test]
    fn series_follow_the_counts_and_plots_render() {
        let pooled = pool_rows(&rows());
        assert_eq!(epochs(&pooled), [1, 2]);
        assert_eq!(buckets_seen(&pooled), [0, 2]);
        assert_eq!(
            series(&pooled, &[1, 2], 0, BucketCounts::iou0_share),
            [0.5, 0.0]
        );
        assert!(series(&pooled, &[1, 2], 2, BucketCounts::iou0_share)
            .iter()
            .all(|v| v.is_nan()));
        let png = simota_run_png(&rows()).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let two = [("iou".to_string(), rows()), ("ciou".to_string(), rows())];
        assert_eq!(&simota_compare_png(&two).unwrap()[1..4], b"PNG");
        // Nothing to plot is an error, not an empty picture.
        let empty = simota_rows(1, &AssignmentStats::default());
        assert!(simota_run_png(&empty).is_err());
        assert!(simota_compare_png(&[]).is_err());
    }
}
