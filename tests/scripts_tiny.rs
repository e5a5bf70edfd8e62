//! Every notebook in scripts/ runs at `--set scale=tiny` (seconds) and writes what it promises:
//! report.md, its CSV files with the expected columns, metrics in [0, 1], −1 exactly for the
//! area ranges without a ground-truth box in the run's test set (pycocotools' convention), and
//! AP no larger than AP50. (At this scale a detector trains for a few steps at a small learning
//! rate and scores AP 0; `tests/train_overfit.rs` checks that training reaches AP50 > 0.9.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn run_script(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("ssod_scripts_{}_{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let out = work.join("run");
    let status = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(&work)
        .arg("run")
        .arg(root.join("scripts").join(format!("{name}.rhai")))
        .args(["--set", "scale=tiny", "--fresh", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        status.status.success(),
        "{name} failed:\n{stdout}\n{stderr}"
    );
    assert!(out.join("report.md").exists(), "{name}: no report.md");
    out
}

/// Header and rows of a CSV file (no quoting needed for these files).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    (
        header,
        lines
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect(),
    )
}

fn number(name: &str, v: &str) -> f64 {
    v.parse()
        .unwrap_or_else(|_| panic!("{name}: `{v}` is not a number"))
}

/// The COCO area range a metric is restricted to (pycocotools' bounds, both inclusive).
fn area_range(metric: &str) -> Option<(f64, f64)> {
    match metric.rsplit('_').next() {
        Some("small") => Some((0.0, 32.0 * 32.0)),
        Some("medium") => Some((32.0 * 32.0, 96.0 * 96.0)),
        Some("large") => Some((96.0 * 96.0, 1e10)),
        _ => None,
    }
}

/// A metric of a run whose test set is `<out>/data/test.json`: −1 exactly when the metric's area
/// range has no (non-crowd) ground-truth box there, else in [0, 1].
fn assert_metric(out: &Path, name: &str, v: &str) {
    let x = number(name, v);
    let test: ssod::data::dataset::CocoDataset =
        ssod::data::dataset::read_json_file(&out.join("data").join("test.json")).unwrap();
    let (lo, hi) = area_range(name).unwrap_or((0.0, f64::INFINITY));
    let boxes = test
        .annotations
        .iter()
        .filter(|a| a.iscrowd == 0 && a.area >= lo && a.area <= hi)
        .count();
    if boxes == 0 {
        assert_eq!(x, -1.0, "{name}: no ground truth in its area range");
    } else {
        assert!(
            (0.0..=1.0).contains(&x),
            "{name} = {x} outside [0, 1] ({boxes} ground-truth boxes in range)"
        );
    }
}

/// Checks every metric column of `rows` that names a COCO metric, and AP ≤ AP50 and
/// AP75 ≤ AP50 where the columns are there (AP50's matches are a superset of the others').
fn check_metric_rows(out: &Path, header: &[String], rows: &[Vec<String>]) {
    let col = |name: &str| header.iter().position(|h| h == name);
    for r in rows {
        for (i, h) in header.iter().enumerate() {
            if h.starts_with("AP") || h.starts_with("AR_") {
                assert_metric(out, h, &r[i]);
            }
        }
        if let (Some(ap), Some(ap50)) = (col("AP"), col("AP50")) {
            let (ap, ap50) = (number("AP", &r[ap]), number("AP50", &r[ap50]));
            assert!(ap <= ap50, "AP {ap} > AP50 {ap50}");
            if let Some(ap75) = col("AP75") {
                let ap75 = number("AP75", &r[ap75]);
                assert!(ap75 <= ap50, "AP75 {ap75} > AP50 {ap50}");
            }
        }
    }
}

fn check_final_metrics(out: &Path) {
    let (header, rows) = read_csv(&out.join("metrics_final.csv"));
    for col in ["AP", "AP50", "AP75", "AP_small", "AR_100"] {
        assert!(
            header.iter().any(|h| h == col),
            "no column {col} in {header:?}"
        );
    }
    assert_eq!(rows.len(), 1, "one row of final metrics");
    check_metric_rows(out, &header, &rows);
    assert!(out.join("train").join("metrics.csv").exists());
    assert!(out.join("curves.png").exists());
}

#[test]
fn quickstart_tiny() {
    let out = run_script("quickstart");
    let (header, rows) = read_csv(&out.join("ablation.csv"));
    for col in [
        "pretraining",
        "seed",
        "AP",
        "AP50",
        "AP75",
        "AP_small",
        "AR_100",
    ] {
        assert!(
            header.iter().any(|h| h == col),
            "ablation.csv lacks {col}: {header:?}"
        );
    }
    // Two arms × two seeds.
    assert_eq!(rows.len(), 4);
    check_metric_rows(&out, &header, &rows);
    // The verdict sets the difference of the arms' mean AP50 against the seed spread.
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mean = |arm: &str| {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r[at("pretraining")] == arm)
            .map(|r| number("AP50", &r[at("AP50")]))
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let line = report
        .lines()
        .find(|l| l.contains("SSL − baseline AP50 = ") && !l.contains("${"))
        .unwrap_or_else(|| panic!("no verdict in:\n{report}"));
    let diff: f64 = number(
        "difference",
        line.split("AP50 = ")
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap(),
    );
    assert!(
        (diff - (mean("patch_ssl") - mean("none"))).abs() < 1e-12,
        "{line}"
    );
    assert!(line.contains("standard error"), "{line}");
    // Each point's run folder lands in the run folder, with its curves.
    for point in [
        "none_seed1",
        "none_seed2",
        "patch_ssl_seed1",
        "patch_ssl_seed2",
    ] {
        assert!(out.join(point).join("results.png").exists(), "{point}");
        assert!(out.join(point).join("best.safetensors").exists(), "{point}");
    }
}

#[test]
fn baseline_tiny() {
    check_final_metrics(&run_script("baseline"));
}

#[test]
fn ciou_tiny() {
    check_final_metrics(&run_script("ciou"));
}

#[test]
fn center_loss_tiny() {
    let out = run_script("center_loss");
    check_final_metrics(&out);
    assert!(out.join("crops").join("crops.csv").exists());
}

#[test]
fn ssl_tiny() {
    check_final_metrics(&run_script("ssl"));
}

#[test]
fn custom_loss_tiny() {
    let out = run_script("custom_loss");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("loss per epoch"), "{report}");
}

#[test]
fn ablation_tiny() {
    let out = run_script("ablation");
    let (header, rows) = read_csv(&out.join("ablation.csv"));
    for col in ["pretraining", "box_loss", "seed", "AP", "AP50"] {
        assert!(
            header.iter().any(|h| h == col),
            "ablation.csv lacks {col}: {header:?}"
        );
    }
    // 4 pretraining strategies × 2 box losses × 1 seed at tiny scale.
    assert_eq!(rows.len(), 8);
    check_metric_rows(&out, &header, &rows);
}

#[test]
fn simota_diagnostics_tiny() {
    let out = run_script("simota_diagnostics");
    let (header, rows) = read_csv(&out.join("ablation.csv"));
    for col in [
        "box_loss",
        "seed",
        "AP_small",
        "iou0_share_lt8",
        "unmatched_share_lt8",
    ] {
        assert!(
            header.iter().any(|h| h == col),
            "ablation.csv lacks {col}: {header:?}"
        );
    }
    // 3 box losses × 2 seeds.
    assert_eq!(rows.len(), 6);
    check_metric_rows(&out, &header, &rows);
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    for r in &rows {
        // A share, or -1 where the bucket had nothing to divide.
        for col in header.iter().filter(|h| h.contains("_share_")) {
            let v = number(col, &r[at(col)]);
            assert!(v == -1.0 || (0.0..=1.0).contains(&v), "{col} = {v}");
        }
        // Each point's run folder holds its simota.csv: a header and 5 buckets per epoch.
        let point = format!("{}_seed{}", r[at("box_loss")], r[at("seed")]);
        let (simota_header, simota_rows) = read_csv(&out.join(&point).join("simota.csv"));
        assert_eq!(simota_header[..2], ["epoch", "bucket"], "{point}");
        assert_eq!(simota_rows.len() % 5, 0, "{point}");
        assert!(!simota_rows.is_empty(), "{point}");
    }
    assert!(out.join("simota_by_loss.png").exists());
    let (summary_header, summary) = read_csv(&out.join("summary_by_loss.csv"));
    assert!(summary_header.iter().any(|h| h == "iou0_share_lt8"));
    assert_eq!(summary.len(), 3);
}

#[test]
fn autograd_demo_runs() {
    run_script("autograd_demo");
}
