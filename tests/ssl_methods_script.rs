//! scripts/ssl_methods.rhai at `--set scale=tiny` through the `ssod run` binary: every pretraining
//! method × two seeds with the same budget of images seen, the probes, the health metrics and the
//! fine-tuned detector's AP per point; the summary table's mean ± std recomputed here from the
//! per-point CSV; every pretraining's loss curve and epoch table in its folder; and a bad method
//! name refused before anything runs.

mod notebook_support;

use std::path::{Path, PathBuf};

use notebook_support::{field, mean_std, number, ssod, table, temp_dir, Out};
use ssod::csv_table::CsvTable;

const METHODS: [&str; 8] = [
    "none",
    "center_loss",
    "patch_ssl",
    "patch_info_nce",
    "simsiam",
    "dense",
    "temporal",
    "masked",
];
/// The methods on the shared self-supervised run loop and the images one sample puts through
/// the network (two views, or an anchor frame and its partner; one masked image).
const SSL_METHODS: [(&str, f64); 4] = [
    ("simsiam", 2.0),
    ("dense", 2.0),
    ("temporal", 2.0),
    ("masked", 1.0),
];
const SEEDS: [i64; 2] = [1, 2];
/// The tiny scale's budget of samples: 2 epochs × (16 / (2 · 2)) steps × 2 samples.
const SAMPLES: f64 = 16.0;

fn run_script(dir: &Path, args: &[&str]) -> Out {
    let mut all = vec!["run", "ssl_methods.rhai", "--set", "scale=tiny"];
    all.extend_from_slice(args);
    ssod(dir, &all)
}

/// Every method × seed is a point whose probes, health and AP are in their ranges.
fn check_points(points: &CsvTable) {
    assert_eq!(points.records.len(), METHODS.len() * SEEDS.len());
    for method in METHODS {
        let mut seeds: Vec<i64> = points
            .records
            .iter()
            .filter(|(_, r)| field(points, r, "method") == method)
            .map(|(_, r)| number(points, r, "seed") as i64)
            .collect();
        seeds.sort();
        assert_eq!(seeds, SEEDS, "{method}");
    }
    for (_, r) in &points.records {
        let method = field(points, r, "method");
        for col in ["linear_probe", "knn_probe", "AP", "AP_small", "AP50"] {
            let v = number(points, r, col);
            assert!((0.0..=1.0).contains(&v), "{method}: {col} = {v}");
        }
        let rank = number(points, r, "effective_rank");
        assert!(rank >= 1.0 - 1e-9, "{method}: effective rank {rank}");
        let seconds = number(points, r, "pretrain_seconds");
        if method == "none" {
            assert_eq!(seconds, 0.0, "nothing is pretrained for `none`");
            assert_eq!(field(points, r, "pretrain_loss"), "");
        } else {
            assert!(seconds > 0.0, "{method}: pretraining took {seconds} s");
            assert!(number(points, r, "pretrain_loss").is_finite(), "{method}");
        }
    }
}

/// The summary's mean ± std per method against the points.
fn check_summary(points: &CsvTable, summary: &CsvTable) {
    assert_eq!(summary.records.len(), METHODS.len());
    for (_, r) in &summary.records {
        let method = field(summary, r, "method");
        assert_eq!(number(summary, r, "seeds"), SEEDS.len() as f64);
        for metric in [
            "linear_probe",
            "knn_probe",
            "effective_rank",
            "AP",
            "pretrain_seconds",
        ] {
            let values: Vec<f64> = points
                .records
                .iter()
                .filter(|(_, p)| field(points, p, "method") == method)
                .map(|(_, p)| number(points, p, metric))
                .collect();
            let (mean, std) = mean_std(&values);
            for (col, want) in [("mean", mean), ("std", std)] {
                let got = number(summary, r, &format!("{metric}_{col}"));
                // The CSV holds 6 decimals.
                assert!(
                    (got - want).abs() <= 2e-6 * want.abs().max(1.0),
                    "{method}: {metric}_{col} = {got}, from the points {want}"
                );
            }
        }
    }
}

/// Each pretraining wrote its loss curve and an epoch table with the health columns; the
/// methods on the shared loop saw exactly the budget.
fn check_pretraining_folders(run: &Path) {
    for method in &METHODS[1..] {
        for seed in SEEDS {
            let dir = run.join(format!("pretrain_{method}_seed{seed}"));
            assert!(dir.join("loss.png").is_file(), "{}", dir.display());
            let epochs = table(&dir.join("epochs.csv"));
            assert_eq!(epochs.records.len(), 2, "{method}: two epochs");
            for col in [
                "loss",
                "seconds",
                "images_seen",
                "health_effective_rank",
                "health_std_ratio",
                "health_alignment",
                "health_uniformity",
            ] {
                assert!(epochs.column(col).is_some(), "{method}: no {col} column");
            }
            let seen: f64 = epochs
                .records
                .iter()
                .map(|(_, r)| number(&epochs, r, "images_seen"))
                .sum();
            if let Some((_, views)) = SSL_METHODS.iter().find(|(m, _)| m == method) {
                assert_eq!(seen, SAMPLES * views, "{method}: images seen");
            } else {
                assert_eq!(seen, SAMPLES, "{method}: crops or frames seen");
            }
        }
    }
}

#[test]
fn ssl_methods_tiny_table() {
    let dir = temp_dir("ssl-methods");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ssl_methods.rhai");
    std::fs::copy(&script, dir.join("ssl_methods.rhai")).unwrap();

    let bad = run_script(&dir, &["--set", "methods=none,byol", "--out", "bad"]);
    assert!(!bad.ok, "an unknown method ran");
    assert!(bad.stderr.contains("\"byol\""), "{}", bad.stderr);

    let out = run_script(&dir, &["--out", "run1"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    let run: PathBuf = dir.join("run1");
    let points = table(&run.join("ssl_points.csv"));
    check_points(&points);
    check_summary(&points, &table(&run.join("ssl_table.csv")));
    check_pretraining_folders(&run);
    for png in ["ssl_probe.png", "ssl_ap.png"] {
        assert!(run.join(png).is_file(), "{png}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
