//! The label-assignment diagnostics of a real (tiny) training run: `simota.csv` holds one row
//! per epoch and size bucket, the ground truth counted in each bucket is the hand-made set's
//! (no augmentation, letterbox ratio 1, so each box keeps its size), every matched box has a
//! positive, `simota.png` is drawn, and `train_detector` returns the file's rows.

use std::sync::Arc;

use image::{Rgb, RgbImage};
use ssod::data::dataset::{Annotation, Category, CocoDataset, ImageInfo};
use ssod::detect::simota_stats::SIZE_BUCKETS;
use ssod::eval::simota_csv::{read_simota_csv, SIMOTA_CSV_COLUMNS};
use ssod::models::{YoloX, YoloXConfig};
use ssod::train::run::{train_detector, TrainRunOptions};
use ssod::train::TrainConfig;

/// Boxes `[x, y, w, h]` of the 4 images (128 × 128) and the bucket of each by
/// `sqrt(w·h)`: 5 → `<8`, sqrt(60) ≈ 7.7 → `<8`, 12 → `8-16`, sqrt(600) ≈ 24.5 → `16-32`,
/// 40 → `32-96`, 100 → `>=96`, 16 → `16-32` (the lower bound is inclusive).
const BOXES: [&[[u32; 4]]; 4] = [
    &[[10, 10, 5, 5], [60, 60, 40, 40]],
    &[[20, 90, 6, 10], [70, 20, 12, 12]],
    &[[14, 14, 100, 100]],
    &[[30, 30, 20, 30], [90, 90, 16, 16]],
];
const EXPECTED_GTS_PER_BUCKET: [u64; 5] = [2, 1, 2, 1, 1];

fn make_dataset(dir: &std::path::Path) -> CocoDataset {
    let mut ds = CocoDataset {
        categories: vec![Category {
            id: 1,
            name: "bottle".into(),
            supercategory: None,
        }],
        image_dir: dir.to_path_buf(),
        ..Default::default()
    };
    for (i, boxes) in BOXES.iter().enumerate() {
        let mut img = RgbImage::from_fn(128, 128, |x, y| {
            let t = ((x * 5 + y * 11 + i as u32 * 17) % 19) as u8;
            Rgb([60 + t, 80 + t, 110 + t])
        });
        for b in boxes.iter() {
            for y in b[1]..b[1] + b[3] {
                for x in b[0]..b[0] + b[2] {
                    img.put_pixel(x, y, Rgb([235, 120, 30]));
                }
            }
            ds.annotations.push(Annotation {
                id: ds.annotations.len() as u64 + 1,
                image_id: i as u64 + 1,
                category_id: 1,
                bbox_xywh: [b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64],
                area: (b[2] * b[3]) as f64,
                iscrowd: 0,
            });
        }
        let name = format!("img{i}.png");
        img.save(dir.join(&name)).unwrap();
        ds.images.push(ImageInfo {
            id: i as u64 + 1,
            file_name: name,
            width: 128,
            height: 128,
        });
    }
    ds
}

#[test]
fn a_tiny_run_writes_the_assignment_per_object_size() {
    let dir = std::env::temp_dir().join(format!("ssod_simota_diag_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ds = make_dataset(&dir);
    let mut mcfg = YoloXConfig::custom(0.33, 0.125, false, 1);
    mcfg.seed = 4;
    let model = Arc::new(YoloX::new(mcfg).unwrap());
    let epochs = 2;
    let cfg = TrainConfig {
        max_epoch: epochs,
        warmup_epochs: 0,
        no_aug_epochs: 0,
        batch_size: 2,
        eval_interval: 1000,
        input_size: (128, 128),
        test_size: (128, 128),
        multiscale_range: 0,
        random_size: None,
        mosaic_prob: 0.0,
        enable_mixup: false,
        hsv_prob: 0.0,
        flip_prob: 0.0,
        ..TrainConfig::default()
    };
    let opts = TrainRunOptions {
        out_dir: dir.join("run"),
        workers: 1,
        cache: true,
        resume: None,
        resume_override: Vec::new(),
        verbose: false,
        device: ssod::tensor::Device::Cpu,
    };
    let report = train_detector(model, &ds, Some(&ds), &cfg, &opts, |_| Ok(true)).unwrap();
    let csv = dir.join("run").join("simota.csv");
    assert_eq!(report.simota_csv, csv);
    let header = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(header.lines().next().unwrap(), SIMOTA_CSV_COLUMNS.join(","));
    let rows = read_simota_csv(&csv).unwrap();
    assert_eq!(rows, report.simota);
    assert_eq!(rows.len(), epochs * SIZE_BUCKETS.len());
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.epoch, i / SIZE_BUCKETS.len() + 1);
        assert_eq!(r.bucket, i % SIZE_BUCKETS.len());
        assert_eq!(r.gts, EXPECTED_GTS_PER_BUCKET[r.bucket], "{r:?}");
        // Every box that is not unmatched has at least one positive anchor.
        assert!(r.unmatched_gts <= r.gts, "{r:?}");
        assert!(r.positives >= r.gts - r.unmatched_gts, "{r:?}");
        assert!(r.positives_iou0 <= r.positives, "{r:?}");
        if r.positives > 0 {
            assert!((0.0..=1.0).contains(&r.mean_positive_iou), "{r:?}");
        } else {
            assert!(r.mean_positive_iou.is_nan(), "{r:?}");
        }
    }
    // The epoch records hold the same counts.
    for rec in &report.history {
        for (b, c) in rec.assignment.buckets.iter().enumerate() {
            let row = &rows[(rec.epoch - 1) * SIZE_BUCKETS.len() + b];
            assert_eq!((c.gts, c.positives), (row.gts, row.positives));
        }
    }
    let png = std::fs::read(dir.join("run").join("simota.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `simota_assign` in Rhai returns the same counts for the image it assigns: the hand-made case
/// of `detect::simota_stats` (a 3 px box far from every anchor is left without a positive; a
/// 20 px box whose predictions are 16 px boxes at its centre gets 6 positives at IoU 0.64).
#[test]
fn simota_assign_in_rhai_returns_the_counts_per_size() {
    let dir = std::env::temp_dir().join(format!("ssod_simota_rhai_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = r#"
let grids = [];
let pred = [];
for y in 0..4 { for x in 0..4 { grids.push([x.to_float(), y.to_float()]); pred.push([12.0, 12.0, 16.0, 16.0]); } }
let a = simota_assign(#{
    pred_boxes: tensor(pred), cls_logits: zeros([16, 1]), obj_logits: zeros([16]),
    grids: tensor(grids), strides: full([16], 8.0),
    gt_boxes: tensor([[100.0, 100.0, 3.0, 3.0], [12.0, 12.0, 20.0, 20.0]]),
    gt_classes: tensor([0.0, 0.0]),
});
for r in a.stats {
    print(`row ${r.bucket} ${r.gts} ${r.unmatched_gts} ${r.positives} ${r.positives_iou0} ${r.mean_positive_iou}`);
}
"#;
    let path = dir.join("stats.rhai");
    std::fs::write(&path, script).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(&dir)
        .args(["run", "--fresh", "--out"])
        .arg(dir.join("run"))
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("row "))
        .map(|l| l.split(' ').collect())
        .collect();
    assert_eq!(rows.len(), 5, "{stdout}");
    assert_eq!(rows[0][..5], ["<8", "1", "1", "0", "0"], "{stdout}");
    assert_eq!(rows[2][..5], ["16-32", "1", "0", "6", "0"], "{stdout}");
    let mean: f64 = rows[2][5].parse().unwrap();
    assert!((mean - 0.64).abs() < 1e-6, "{stdout}");
    assert_eq!(rows[4][..4], [">=96", "0", "0", "0"], "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
