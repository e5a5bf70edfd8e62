//! scripts/study.rhai at `--set scale=tiny` through the `ssod run` binary: every row kind of the
//! study and its controls over the label-fraction axis and two seeds, the summary table's
//! mean ± std and paired difference to the baseline recomputed here from the per-point CSV, and
//! the caching: a rerun after an interruption (the cells' records gone) restores every point,
//! and one whose fine-tuning points are gone too reuses every pretrained backbone and gives the
//! same table.

mod notebook_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use notebook_support::{field, mean_std, number, ssod, table, temp_dir, Out};
use ssod::csv_table::CsvTable;

const ROWS: [&str; 9] = [
    "baseline",
    "center_loss",
    "ciou_center_loss",
    "ssl_ciou",
    "tiny",
    "tiny_center_loss",
    "ciou",
    "cross_entropy",
    "baseline_study_lr",
];
/// Rows whose backbone is pretrained (the others start from scratch).
const PRETRAINED_ROWS: usize = 5;
const FRACTIONS: [f64; 2] = [0.5, 1.0];
const SEEDS: [i64; 2] = [1, 2];

/// Run the copy of the script in `dir` (its cache lives next to it) into `dir/<out>`.
fn run_study(dir: &Path, out: &str) -> (Out, PathBuf) {
    let result = ssod(
        dir,
        &["run", "study.rhai", "--set", "scale=tiny", "--out", out],
    );
    assert!(result.ok, "{}\n{}", result.stdout, result.stderr);
    (result, dir.join(out))
}

/// `metric` of every point: (row, label fraction) -> seed -> value.
type PerSeed = BTreeMap<(String, String), BTreeMap<i64, f64>>;

fn per_seed(points: &CsvTable, metric: &str) -> PerSeed {
    let mut m: PerSeed = BTreeMap::new();
    for (_, r) in &points.records {
        let key = (
            field(points, r, "row").to_string(),
            field(points, r, "label_fraction").to_string(),
        );
        let seed = number(points, r, "seed") as i64;
        let old = m
            .entry(key)
            .or_default()
            .insert(seed, number(points, r, metric));
        assert!(
            old.is_none(),
            "two points with the same row, fraction and seed"
        );
    }
    m
}

/// Every row × label fraction × seed is a point, with the metrics the tables summarise.
fn check_points(points: &CsvTable) {
    assert_eq!(
        points.records.len(),
        ROWS.len() * FRACTIONS.len() * SEEDS.len()
    );
    for col in ["AP", "AP_small", "AP50", "loss", "epochs"] {
        assert!(points.column(col).is_some(), "study_points.csv lacks {col}");
    }
    let by = per_seed(points, "AP");
    for row in ROWS {
        for f in FRACTIONS {
            let seeds = &by[&(row.to_string(), format!("{f:?}"))];
            assert_eq!(
                seeds.keys().copied().collect::<Vec<_>>(),
                SEEDS,
                "{row} at {f}"
            );
            for ap in seeds.values() {
                assert!((0.0..=1.0).contains(ap), "{row}: AP {ap}");
            }
        }
    }
}

/// The summary's mean ± std and paired difference to the baseline against the points.
fn check_summary(points: &CsvTable, summary: &CsvTable) {
    assert_eq!(summary.records.len(), ROWS.len() * FRACTIONS.len());
    // The training loss differs between seeds and rows even where tiny-scale AP is 0.
    for metric in ["loss", "AP"] {
        let by = per_seed(points, metric);
        for (_, r) in &summary.records {
            let row = field(summary, r, "row");
            let fraction = field(summary, r, "label_fraction");
            let own = &by[&(row.to_string(), fraction.to_string())];
            let base = &by[&("baseline".to_string(), fraction.to_string())];
            let values: Vec<f64> = own.values().copied().collect();
            let diffs: Vec<f64> = own.iter().map(|(s, v)| v - base[s]).collect();
            let (mean, std) = mean_std(&values);
            let (diff, diff_std) = mean_std(&diffs);
            let kind = if ["ciou", "cross_entropy", "baseline_study_lr"].contains(&row) {
                "control"
            } else {
                "study"
            };
            assert_eq!(field(summary, r, "kind"), kind, "{row}");
            assert_eq!(number(summary, r, "seeds"), SEEDS.len() as f64);
            for (col, want) in [
                ("mean", mean),
                ("std", std),
                ("diff", diff),
                ("diff_std", diff_std),
            ] {
                let got = number(summary, r, &format!("{metric}_{col}"));
                // The CSV holds 6 decimals.
                assert!(
                    (got - want).abs() <= 2e-6 * want.abs().max(1.0),
                    "{row} at {fraction}: {metric}_{col} = {got}, from the points {want}"
                );
            }
            if metric == "loss" && row != "baseline" {
                assert!(std > 0.0 && diff != 0.0, "{row}: seeds and rows differ");
            }
        }
    }
}

/// How many pretrainings the run computed and how many it took from the cache.
fn pretraining_lines(out: &Out) -> (usize, usize) {
    let count = |what: &str| {
        out.stdout
            .lines()
            .filter(|l| l.starts_with("cached `pretrain") && l.ends_with(what))
            .count()
    };
    (count(": computed"), count(": restored"))
}

#[test]
fn study_tiny_tables_and_cache() {
    let dir = temp_dir("study");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/study.rhai");
    std::fs::copy(&script, dir.join("study.rhai")).unwrap();

    let (first, run1) = run_study(&dir, "run1");
    let points = table(&run1.join("study_points.csv"));
    check_points(&points);
    let summary = table(&run1.join("study_table.csv"));
    check_summary(&points, &summary);
    assert!(run1.join("study_ap_vs_labels_e2.png").is_file());
    // Pretraining once per (backbone, method, seed): 4 × 2, each used by every point of its rows.
    let (computed, restored) = pretraining_lines(&first);
    assert_eq!(computed, 4 * SEEDS.len(), "{}", first.stdout);
    assert_eq!(
        computed + restored,
        PRETRAINED_ROWS * FRACTIONS.len() * SEEDS.len()
    );

    // An interrupted run leaves no cell records: every finished point comes back as it was.
    let cache = dir.join(".ssod-cache");
    let remove_all = |sub: &str, name: &str| {
        for entry in walk(&cache.join(sub)) {
            if entry
                .file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(name))
            {
                std::fs::remove_file(&entry).unwrap();
            }
        }
    };
    remove_all("cells", "cell.json");
    let (second, run2) = run_study(&dir, "run2");
    let n = points.records.len();
    assert!(
        second
            .stdout
            .contains(&format!("ablate: {n} of {n} point(s) restored")),
        "{}",
        second.stdout
    );
    // Nothing trained again: no point's run folder in the new run folder.
    assert!(!run2.join("train_baseline_e2_labels100_seed1").exists());
    assert_eq!(table(&run2.join("study_table.csv")), summary);

    // Without the fine-tuning points, the pretrained backbones still come from the cache, and
    // retraining from them reproduces every point.
    remove_all("cells", "cell.json");
    remove_all("ablate", ".json");
    let (third, run3) = run_study(&dir, "run3");
    let (computed, restored) = pretraining_lines(&third);
    assert_eq!(computed, 0, "{}", third.stdout);
    assert_eq!(restored, PRETRAINED_ROWS * FRACTIONS.len() * SEEDS.len());
    assert_eq!(table(&run3.join("study_table.csv")), summary);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}
