//! Every notebook in scripts/ runs at `--set scale=tiny` (seconds) and writes what it promises:
//! report.md, its CSV files with the expected columns, metrics in [0, 1] (−1 = not computed,
//! pycocotools' convention for an empty area range).

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

fn assert_metric(name: &str, v: &str) {
    let x: f64 = v
        .parse()
        .unwrap_or_else(|_| panic!("{name}: `{v}` is not a number"));
    assert!(
        x == -1.0 || (0.0..=1.0).contains(&x),
        "{name} = {x} outside [0, 1]"
    );
}

fn check_final_metrics(out: &Path) {
    let (header, rows) = read_csv(&out.join("metrics_final.csv"));
    for col in ["AP", "AP50", "AP75", "AP_small", "AR_100"] {
        let i = header
            .iter()
            .position(|h| h == col)
            .unwrap_or_else(|| panic!("no column {col} in {header:?}"));
        assert_metric(col, &rows[0][i]);
    }
    assert!(out.join("train").join("metrics.csv").exists());
    assert!(out.join("curves.png").exists());
}

#[test]
fn quickstart_tiny() {
    let out = run_script("quickstart");
    let (header, rows) = read_csv(&out.join("comparison.csv"));
    for col in ["metric", "baseline", "ssl", "difference"] {
        assert!(
            header.iter().any(|h| h == col),
            "comparison.csv lacks {col}: {header:?}"
        );
    }
    assert_eq!(rows.len(), 7);
    let (b, s) = (
        header.iter().position(|h| h == "baseline").unwrap(),
        header.iter().position(|h| h == "ssl").unwrap(),
    );
    for r in &rows {
        assert_metric("baseline", &r[b]);
        assert_metric("ssl", &r[s]);
    }
    assert!(out.join("comparison.png").exists() && out.join("baseline_curves.png").exists());
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
    let ap = header.iter().position(|h| h == "AP").unwrap();
    rows.iter().for_each(|r| assert_metric("AP", &r[ap]));
}

#[test]
fn autograd_demo_runs() {
    run_script("autograd_demo");
}
