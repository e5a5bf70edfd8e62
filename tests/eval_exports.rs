//! Exports around the evaluation: metrics.csv, markdown tables, PNG plots, the `ssod eval`
//! family of commands.

use std::path::{Path, PathBuf};
use std::process::Command;

use ssod::data::dataset::{
    write_json_file, Annotation, Category, CocoDataset, Detection, ImageInfo,
};
use ssod::eval::coco::{evaluate, MaxDets};
use ssod::eval::markdown::{format_cell, markdown_table, mean_std, MetricRow};
use ssod::eval::metrics_csv::{read_metrics_csv, MetricsCsv, MetricsRow};
use ssod::eval::plots::{pr_curves_png, run_bars_png, training_curves_png};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod-eval-exports-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One image, two 10x10 boxes; detections A (TP), far box (FP), B (TP): AP = 253/303 (the
/// derivation is in tests/eval_coco.rs, `hand_computed_tp_fp_tp`).
fn hand_case() -> (CocoDataset, Vec<Detection>) {
    let gt = CocoDataset {
        images: vec![ImageInfo {
            id: 1,
            file_name: "1.jpg".into(),
            width: 640,
            height: 480,
        }],
        annotations: [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 10.0, 10.0]]
            .iter()
            .enumerate()
            .map(|(i, &b)| Annotation {
                id: i as u64 + 1,
                image_id: 1,
                category_id: 1,
                bbox_xywh: b,
                area: 100.0,
                iscrowd: 0,
            })
            .collect(),
        categories: vec![Category {
            id: 1,
            name: "bottle".into(),
            supercategory: None,
        }],
        image_dir: PathBuf::new(),
    };
    let dets = [
        ([0.0, 0.0, 10.0, 10.0], 0.9),
        ([200.0, 200.0, 10.0, 10.0], 0.8),
        ([20.0, 20.0, 10.0, 10.0], 0.7),
    ]
    .iter()
    .map(|&(b, s)| Detection {
        image_id: 1,
        category_id: 1,
        bbox_xywh: b,
        score: s,
    })
    .collect();
    (gt, dets)
}

fn row(epoch: usize, loss: f64, ap: f64) -> MetricsRow {
    let mut stats = [0.0; 12];
    stats[0] = ap;
    stats[1] = ap * 2.0;
    MetricsRow {
        epoch,
        iteration: epoch as u64 * 100,
        lr: 0.01 / (epoch as f64 + 1.0),
        losses: vec![("iou".into(), loss), ("obj".into(), loss / 2.0)],
        stats: Some(stats),
        images_per_s: 55.5,
        seconds: 12.25,
    }
}

#[test]
fn metrics_csv_appends_and_resumes_but_never_mixes_layouts() {
    let dir = temp_dir("csv");
    let path = dir.join("run/metrics.csv");
    let mut csv = MetricsCsv::open(&path, &["iou", "obj"], MaxDets::STUDY).unwrap();
    csv.append(&row(0, 2.0, 0.1)).unwrap();
    csv.append(&row(1, 1.5, 0.2)).unwrap();
    drop(csv);
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        "epoch,iteration,lr,train/iou,train/obj,AP,AP50,AP75,AP_small,AP_medium,AP_large,\
         AR_100,AR_300,AR_1000,AR_small,AR_medium,AR_large,images_per_s,time_s"
    );
    // Same header: a resumed run appends. An epoch without evaluation leaves the metric cells
    // empty (read back as NaN).
    let mut csv = MetricsCsv::open(&path, &["iou", "obj"], MaxDets::STUDY).unwrap();
    csv.append(&MetricsRow {
        stats: None,
        ..row(2, 1.0, 0.3)
    })
    .unwrap();
    csv.append(&row(3, 0.5, 0.4)).unwrap();
    let table = read_metrics_csv(&path).unwrap();
    assert_eq!(table.rows.len(), 4);
    assert_eq!(table.column("epoch").unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
    assert_eq!(
        table.column("train/obj").unwrap(),
        vec![1.0, 0.75, 0.5, 0.25]
    );
    let ap50 = table.column("AP50").unwrap();
    assert_eq!((ap50[0], ap50[1], ap50[3]), (0.2, 0.4, 0.8));
    assert!(ap50[2].is_nan());
    assert_eq!(table.column("time_s").unwrap(), vec![12.25; 4]);
    assert_eq!(
        table.column("iteration").unwrap(),
        vec![0.0, 100.0, 200.0, 300.0]
    );
    // Resumed after epoch 1: the rows of later epochs are dropped (their epochs run again).
    drop(csv);
    let csv = MetricsCsv::open_resumed(&path, &["iou", "obj"], MaxDets::STUDY, 1).unwrap();
    drop(csv);
    let table = read_metrics_csv(&path).unwrap();
    assert_eq!(table.column("epoch").unwrap(), vec![0.0, 1.0]);
    let mut csv = MetricsCsv::open(&path, &["iou", "obj"], MaxDets::STUDY).unwrap();
    csv.append(&row(2, 1.0, 0.3)).unwrap();
    // A row whose losses differ from the columns is refused.
    let mut bad = row(3, 1.0, 0.3);
    bad.losses.reverse();
    let err = csv.append(&bad).unwrap_err().to_string();
    assert!(err.contains("differ"), "{err}");
    // Another layout onto the same file is refused and the file is left as it was.
    let err = MetricsCsv::open(&path, &["iou"], MaxDets::STUDY)
        .unwrap_err()
        .to_string();
    assert!(err.contains("another header"), "{err}");
    assert_eq!(read_metrics_csv(&path).unwrap().rows.len(), 3);
    // Any quoted field round-trips through the csv crate.
    let quoted = dir.join("quoted.csv");
    let text = ssod::csv_table::csv_string(
        &["name", "AP"],
        &[vec!["a, \"b\"\nc".to_string(), "0.5".to_string()]],
    )
    .unwrap();
    std::fs::write(&quoted, &text).unwrap();
    let back = ssod::csv_table::read_csv(&quoted).unwrap();
    assert_eq!(back.records[0].1[0], "a, \"b\"\nc");
    // A broken csv is reported with its line and column.
    let broken = dir.join("broken.csv");
    std::fs::write(&broken, "epoch,AP\n0,0.1\n1,abc\n").unwrap();
    let err = read_metrics_csv(&broken).unwrap_err().to_string();
    assert!(err.contains("line 3") && err.contains("`AP`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn markdown_mean_and_std_over_seeds() {
    // [0.3, 0.4, 0.5]: mean 0.4, sample variance (0.01 + 0 + 0.01) / 2 = 0.01, std 0.1.
    let (mean, std) = mean_std(&[0.3, 0.4, 0.5]);
    assert!((mean - 0.4).abs() < 1e-15 && (std - 0.1).abs() < 1e-15);
    assert_eq!(format_cell(&[0.3, 0.4, 0.5], 3), "0.400 ± 0.100");
    assert_eq!(format_cell(&[0.325], 3), "0.325");
    assert_eq!(format_cell(&[0.3, -1.0], 3), "n/a");
    let columns = vec!["AP".to_string(), "AP50".to_string()];
    let rows = vec![
        MetricRow {
            label: "baseline".into(),
            per_seed: vec![vec![0.3, 0.7], vec![0.4, 0.8]],
        },
        MetricRow {
            label: "ciou".into(),
            per_seed: vec![vec![0.366, 0.83]],
        },
    ];
    // baseline AP: mean .35, std sqrt(2 * .05^2 / 1) = .0707...; AP50: .75 ± .0707...
    let table = markdown_table("Run", &columns, &rows, 3).unwrap();
    assert_eq!(
        table,
        "| Run | AP | AP50 |\n|---|---|---|\n| baseline (n=2) | 0.350 ± 0.071 | 0.750 ± 0.071 |\n\
         | ciou (n=1) | 0.366 | 0.830 |\n"
    );
    let bad = vec![MetricRow {
        label: "short".into(),
        per_seed: vec![vec![0.3]],
    }];
    let err = markdown_table("Run", &columns, &bad, 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("short") && err.contains("1 values for 2 columns"),
        "{err}"
    );
}

/// Decoded PNG: its size, and how many pixels are not white.
fn png_ink(png: &[u8]) -> (u32, u32, usize) {
    let img = image::load_from_memory(png).unwrap().to_rgb8();
    let ink = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    (img.width(), img.height(), ink)
}

#[test]
fn pr_curve_values_and_plots_render_headless() {
    let (gt, dets) = hand_case();
    let metrics = evaluate(&gt, &dets, MaxDets::STUDY).unwrap();
    // At IoU 0.5: precision 1 up to recall 0.50 (51 points), 2/3 above (50 points); to 1e-12
    // because pycocotools divides by tp + fp + np.spacing(1).
    let curve = metrics.precision.pr_curve(0.5, None).unwrap();
    assert_eq!(curve.len(), 101);
    assert!(
        curve[..51].iter().all(|&(_, p)| (p - 1.0).abs() < 1e-12),
        "{curve:?}"
    );
    assert!(curve[51..]
        .iter()
        .all(|&(_, p)| (p - 2.0 / 3.0).abs() < 1e-12));
    assert_eq!(curve, metrics.precision.pr_curve(0.75, Some(1)).unwrap());
    assert!(metrics.precision.pr_curve(0.6, None).is_ok());
    assert!(metrics.precision.pr_curve(0.52, None).is_err());
    assert!(metrics.precision.pr_curve(0.5, Some(42)).is_err());

    let (w, h, ink) = png_ink(&pr_curves_png(&metrics, None).unwrap());
    assert_eq!((w, h), (700, 550));
    assert!(ink > 5000, "PR plot looks empty ({ink} inked pixels)");

    let dir = temp_dir("plots");
    let csv_path = dir.join("metrics.csv");
    let mut csv = MetricsCsv::open(&csv_path, &["iou", "obj"], MaxDets::STUDY).unwrap();
    for epoch in 0..5 {
        csv.append(&row(epoch, 2.0 / (epoch as f64 + 1.0), 0.05 * epoch as f64))
            .unwrap();
    }
    let (w, h, ink) = png_ink(&training_curves_png(&read_metrics_csv(&csv_path).unwrap()).unwrap());
    // 7 panels (train/iou, train/obj, AP, AP50, AP75, AP_small, lr) in 2 rows of 4, 320×300.
    assert_eq!((w, h), (1280, 600));
    assert!(
        ink > 10000,
        "training curves look empty ({ink} inked pixels)"
    );

    let runs = vec!["baseline".to_string(), "ciou".to_string()];
    let names = vec!["AP".to_string(), "AP50".to_string()];
    let (_, _, ink) =
        png_ink(&run_bars_png(&runs, &names, &[vec![0.3, 0.7], vec![0.37, -1.0]]).unwrap());
    assert!(ink > 5000, "bar chart looks empty ({ink} inked pixels)");
    let err = run_bars_png(&runs, &names, &[vec![0.3]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 runs"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn ssod(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn ssod_eval_command_prints_and_exports() {
    let dir = temp_dir("cli");
    let (gt, dets) = hand_case();
    let gt_path = dir.join("gt.json");
    let dt_path = dir.join("dt.json");
    gt.write(&gt_path).unwrap();
    write_json_file(&dt_path, &dets).unwrap();
    let json_out = dir.join("m.json");
    let csv_out = dir.join("m.csv");
    let png_out = dir.join("pr.png");
    let args = [
        "eval",
        "--gt",
        s(&gt_path),
        "--dt",
        s(&dt_path),
        "--json",
        s(&json_out),
        "--csv",
        s(&csv_out),
        "--per-class",
        "--pr-plot",
        s(&png_out),
    ];
    let (ok, stdout, stderr) = ssod(&args);
    assert!(ok, "{stderr}");
    // 253/303 = 0.83498... prints as 0.835; AR_100 = AR_300 = AR_1000 = 1.
    assert!(stdout.starts_with(
        " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.835\n"
    ));
    assert!(stdout.contains(
        " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=1000 ] = 0.835\n"
    ));
    assert!(stdout.contains(
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=300 ] = 1.000\n"
    ));
    assert!(
        stdout.contains("| bottle | 1 | 0.835 | 0.835 |"),
        "{stdout}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_out).unwrap()).unwrap();
    assert_eq!(json["max_dets"], serde_json::json!([100, 300, 1000]));
    assert_eq!(json["names"][7], "AR_300");
    assert!((json["stats"][0].as_f64().unwrap() - 253.0 / 303.0).abs() < 1e-12);
    assert_eq!(json["per_class"][0]["name"], "bottle");
    let csv = std::fs::read_to_string(&csv_out).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "AP,AP50,AP75,AP_small,AP_medium,AP_large,AR_100,AR_300,AR_1000,AR_small,AR_medium,AR_large"
    );
    assert_eq!(lines[1].split(',').count(), 12);
    assert!(png_out.exists());

    // Outputs that exist are refused without --force, and left alone.
    std::fs::write(&json_out, "mine").unwrap();
    let (ok, _, stderr) = ssod(&args);
    assert!(
        !ok && stderr.contains("exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&json_out).unwrap(), "mine");
    let mut forced = args.to_vec();
    forced.push("--force");
    assert!(ssod(&forced).0);

    // Other runs' json files feed the bar chart and the markdown table.
    let bars = dir.join("bars.png");
    let run_arg = format!("base={}", s(&json_out));
    let (ok, _, stderr) = ssod(&["plot-bars", "--run", &run_arg, "--out", s(&bars)]);
    assert!(ok && bars.exists(), "{stderr}");
    let table_arg = format!("base={},{}", s(&json_out), s(&json_out));
    let (ok, stdout, stderr) = ssod(&[
        "metrics-table",
        "--run",
        &table_arg,
        "--metrics",
        "AP,AR_1000",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| base (n=2) | 0.835 ± 0.000 | 1.000 ± 0.000 |"),
        "{stdout}"
    );

    // Bad input: an unknown image id is named, with the file.
    std::fs::write(
        &dt_path,
        r#"[{"image_id": 3, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]"#,
    )
    .unwrap();
    let (ok, _, stderr) = ssod(&["eval", "--gt", s(&gt_path), "--dt", s(&dt_path)]);
    assert!(
        !ok && stderr.contains("dt.json") && stderr.contains("image id(s) 3"),
        "{stderr}"
    );
    // An empty list: zeros and a warning.
    std::fs::write(&dt_path, "[]").unwrap();
    let (ok, stdout, stderr) = ssod(&[
        "eval",
        "--gt",
        s(&gt_path),
        "--dt",
        s(&dt_path),
        "--max-dets",
        "1,10,100",
    ]);
    assert!(ok && stderr.contains("warning: no detections"), "{stderr}");
    assert!(stdout.contains("maxDets=  1 ] = 0.000"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}
