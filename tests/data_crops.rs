//! Crop geometry (docs/the-study.md, gene_data.py) and `ssod crop`.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use ssod::data::crops::{
    crop_rng, overlaps_xyxy, plan_image_crops, study_iou_xyxy, CropOptions, SquareCrop,
};
use ssod::data::{Annotation, Category, CocoDataset, ImageInfo};

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("data_crops")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn crop_xyxy(c: SquareCrop) -> [f64; 4] {
    [
        c.x as f64,
        c.y as f64,
        (c.x + c.size) as f64,
        (c.y + c.size) as f64,
    ]
}

fn xywh_to_xyxy(b: [f64; 4]) -> [f64; 4] {
    [b[0], b[1], b[0] + b[2], b[1] + b[3]]
}

#[test]
fn study_iou_uses_plus_one_areas() {
    // [0,0,9,9] and [5,5,14,14]: areas (9-0+1)² = 100 each, intersection (9-5+1)² = 25,
    // IoU = 25 / (100 + 100 - 25) = 1/7.
    let iou = study_iou_xyxy([0.0, 0.0, 9.0, 9.0], [5.0, 5.0, 14.0, 14.0]);
    assert!((iou - 1.0 / 7.0).abs() < 1e-12, "{iou}");
    // Touching edges share a pixel row under +1 areas but have no positive-area overlap.
    assert!(study_iou_xyxy([0.0, 0.0, 9.0, 9.0], [9.0, 0.0, 19.0, 9.0]) > 0.0);
    assert!(!overlaps_xyxy([0.0, 0.0, 9.0, 9.0], [9.0, 0.0, 19.0, 9.0]));
}

#[test]
fn positive_is_centred_then_clamped_as_the_study() {
    // Fixed side 224 (U(1,1)). gene_data.py: x0 = x - (new_size - w) // 2, then clamp to [0, W - size].
    let opts = CropOptions {
        scale_min: 1.0,
        scale_max: 1.0,
        ..CropOptions::default()
    };
    let cases: [([f64; 4], (u32, u32)); 4] = [
        // 600 - (224-21)//2 = 600 - 101 = 499; 300 - (224-11)//2 = 300 - 106 = 194.
        ([600.0, 300.0, 21.0, 11.0], (499, 194)),
        // 1250 - 102 = 1148 -> clamp 1280-224 = 1056; 700 - (224-15)//2 = 700 - 104 = 596 -> 720-224 = 496.
        ([1250.0, 700.0, 20.0, 15.0], (1056, 496)),
        // w = 300 >= 224: x0 = x = 100; 100 - (224-50)//2 = 100 - 87 = 13.
        ([100.0, 100.0, 300.0, 50.0], (100, 13)),
        // 5 - 107 -> clamp 0 on both sides.
        ([5.0, 5.0, 10.0, 10.0], (0, 0)),
    ];
    for (gt, (x0, y0)) in cases {
        let plan = plan_image_crops(1280, 720, &[gt], &opts, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(plan.size, 224);
        let (pos, k) = plan.positive.unwrap();
        assert_eq!((pos.x, pos.y, k), (x0, y0, 0), "gt {gt:?}");
    }
}

#[test]
fn random_plans_respect_the_geometry() {
    let mut case_rng = ChaCha8Rng::seed_from_u64(7);
    let mut negatives_with_a_gt_inside = 0;
    for case in 0..400 {
        let (w, h) = if case % 2 == 0 {
            (1280, 720)
        } else {
            (
                case_rng.random_range(270..600),
                case_rng.random_range(270..500),
            )
        };
        let n_gt = case_rng.random_range(0..6);
        let gts: Vec<[f64; 4]> = (0..n_gt)
            .map(|_| {
                let bw = case_rng.random_range(2..80) as f64;
                let bh = case_rng.random_range(2..60) as f64;
                let x = case_rng.random_range(0..(w - bw as u32)) as f64;
                let y = case_rng.random_range(0..(h - bh as u32)) as f64;
                [x, y, bw, bh]
            })
            .collect();
        for strict in [false, true] {
            let opts = CropOptions {
                strict_background: strict,
                ..CropOptions::default()
            };
            let plan = plan_image_crops(w, h, &gts, &opts, &mut crop_rng(3, case));
            // int(224 * U(0.8, 1.2)) is in 179..=268.
            assert!((179..=268).contains(&plan.size), "size {}", plan.size);
            assert!(!plan.too_small);
            assert!(plan.tries <= 11);
            if let Some(neg) = plan.negative {
                // randint(0, W - size - 1): the crop ends at most at W - 1.
                assert!(
                    neg.x + neg.size < w && neg.y + neg.size < h,
                    "{neg:?} in {w}x{h}"
                );
                for g in &gts {
                    let g_xyxy = xywh_to_xyxy(*g);
                    assert!(
                        study_iou_xyxy(crop_xyxy(neg), g_xyxy) < 0.005,
                        "case {case}: {neg:?} vs {g:?}"
                    );
                    if strict {
                        assert!(
                            !overlaps_xyxy(crop_xyxy(neg), g_xyxy),
                            "strict: {neg:?} overlaps {g:?}"
                        );
                    } else if overlaps_xyxy(crop_xyxy(neg), g_xyxy) {
                        negatives_with_a_gt_inside += 1;
                    }
                }
            } else {
                assert_eq!(plan.tries, 11, "a missing negative means 11 failed tries");
            }
            match plan.positive {
                None => assert!(gts.is_empty()),
                Some((pos, k)) => {
                    let g = gts[k];
                    assert!(pos.x + pos.size <= w && pos.y + pos.size <= h);
                    // Every GT here is smaller than the crop, so the crop contains it whole.
                    assert!(
                        pos.x as f64 <= g[0] && g[0] + g[2] <= (pos.x + pos.size) as f64,
                        "{pos:?} {g:?}"
                    );
                    assert!(
                        pos.y as f64 <= g[1] && g[1] + g[3] <= (pos.y + pos.size) as f64,
                        "{pos:?} {g:?}"
                    );
                }
            }
            if gts.is_empty() {
                assert!(
                    plan.negative.is_some(),
                    "no GT: the first candidate is background"
                );
            }
        }
    }
    // The study's rule lets small GTs inside a background crop (docs/the-study.md,
    // defect 10); this test's
    // boxes are small enough for that to happen in non-strict mode.
    assert!(negatives_with_a_gt_inside > 0);
}

#[test]
fn strict_background_rejects_a_small_gt_the_iou_rule_accepts() {
    // 230x230 image, side 224: x1, y1 in 0..=5, so every candidate contains the 10x10 GT at (100, 100).
    // Study IoU: GT 11x11 = 121 pixels (+1 areas) inside 225x225 = 50625: 121/50625 = 0.0024 < 0.005.
    let opts = CropOptions {
        scale_min: 1.0,
        scale_max: 1.0,
        ..CropOptions::default()
    };
    let gt = [[100.0, 100.0, 10.0, 10.0]];
    let lax = plan_image_crops(230, 230, &gt, &opts, &mut ChaCha8Rng::seed_from_u64(0));
    assert!(lax.negative.is_some());
    assert_eq!(lax.tries, 1);
    let strict = CropOptions {
        strict_background: true,
        ..opts
    };
    let plan = plan_image_crops(230, 230, &gt, &strict, &mut ChaCha8Rng::seed_from_u64(0));
    assert_eq!((plan.negative, plan.tries), (None, 11));
    assert!(plan.positive.is_some());
    // Too small for randint(0, W - size - 1): no crops, no panic.
    let tiny = plan_image_crops(224, 500, &gt, &opts, &mut ChaCha8Rng::seed_from_u64(0));
    assert!(tiny.too_small && tiny.positive.is_none() && tiny.negative.is_none());
}

/// Three 400x300 images: 1 has a red GT at (50, 60) 30x20, 2 has a green GT at (300, 200) 40x40
/// and a blue one at (10, 10) 8x8, 3 has no GT. Background grey.
fn write_small_set(dir: &Path) -> PathBuf {
    let gts: [&[([u32; 4], [u8; 3])]; 3] = [
        &[([50, 60, 30, 20], [255, 0, 0])],
        &[
            ([300, 200, 40, 40], [0, 255, 0]),
            ([10, 10, 8, 8], [0, 0, 255]),
        ],
        &[],
    ];
    let mut ds = CocoDataset {
        categories: vec![Category {
            id: 1,
            name: "bottle".into(),
            supercategory: None,
        }],
        ..CocoDataset::default()
    };
    std::fs::create_dir_all(dir.join("images")).unwrap();
    for (i, boxes) in gts.iter().enumerate() {
        let id = i as u64 + 1;
        let mut img = RgbImage::from_pixel(400, 300, Rgb([128, 128, 128]));
        for (b, color) in boxes.iter() {
            for y in b[1]..b[1] + b[3] {
                for x in b[0]..b[0] + b[2] {
                    img.put_pixel(x, y, Rgb(*color));
                }
            }
            ds.annotations.push(Annotation {
                id: ds.annotations.len() as u64 + 1,
                image_id: id,
                category_id: 1,
                bbox_xywh: b.map(f64::from),
                area: (b[2] * b[3]) as f64,
                iscrowd: 0,
            });
        }
        let name = format!("{id:06}.png");
        img.save(dir.join("images").join(&name)).unwrap();
        ds.images.push(ImageInfo {
            id,
            file_name: name,
            width: 400,
            height: 300,
        });
    }
    let json = dir.join("train.json");
    ds.write(&json).unwrap();
    json
}

fn run_crop(json: &Path, images: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args([
            "crop",
            "--coco",
            json.to_str().unwrap(),
            "--images",
            images.to_str().unwrap(),
        ])
        .args(["--out", out.to_str().unwrap(), "--seed", "5"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn cli_crop_writes_pngs_and_csv_deterministically() {
    let dir = fresh_dir("cli");
    let json = write_small_set(&dir);
    let out = dir.join("crops");
    let o = run_crop(&json, &dir.join("images"), &out, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("crops.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(
        csv.lines().next().unwrap(),
        "file,label,source_image,x,y,size"
    );
    // Images 1 and 2 give a positive; image 3 (no GT) none. Every image has room for a background.
    let positives: Vec<&Vec<&str>> = rows.iter().filter(|r| r[1] == "1").collect();
    assert_eq!(positives.len(), 2);
    assert!(!rows.iter().any(|r| r[0] == "pos/000003.png"));
    assert!(rows.iter().any(|r| r[0] == "neg/000003.png"));
    for r in &rows {
        let img = image::open(out.join(r[0])).unwrap().to_rgb8();
        let size: u32 = r[5].parse().unwrap();
        assert_eq!(img.dimensions(), (size, size), "{r:?}");
        if r[0] == "pos/000001.png" {
            // The only GT of image 1 is red at (50, 60): its pixel sits at (50 - x, 60 - y) in the crop.
            let (x, y): (u32, u32) = (r[3].parse().unwrap(), r[4].parse().unwrap());
            assert_eq!(img.get_pixel(50 - x, 60 - y), &Rgb([255, 0, 0]));
            assert_eq!(r[2], "000001.png");
        }
    }
    // A non-empty output is refused; with --force the same seed gives the same crops.
    let refused = run_crop(&json, &dir.join("images"), &out, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let again = run_crop(&json, &dir.join("images"), &out, &["--force"]);
    assert!(again.status.success());
    assert_eq!(std::fs::read_to_string(out.join("crops.csv")).unwrap(), csv);
    // --strict-background: no background crop overlaps any GT.
    let strict_out = dir.join("strict");
    let o = run_crop(
        &json,
        &dir.join("images"),
        &strict_out,
        &["--strict-background"],
    );
    assert!(o.status.success());
    let gts = [
        [50.0, 60.0, 80.0, 80.0],
        [300.0, 200.0, 340.0, 240.0],
        [10.0, 10.0, 18.0, 18.0],
    ];
    let strict_csv = std::fs::read_to_string(strict_out.join("crops.csv")).unwrap();
    for r in strict_csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|r| r[1] == "0")
    {
        let (x, y, s): (f64, f64, f64) = (
            r[3].parse().unwrap(),
            r[4].parse().unwrap(),
            r[5].parse().unwrap(),
        );
        let image_gts: &[[f64; 4]] = match r[2] {
            "000001.png" => &gts[..1],
            "000002.png" => &gts[1..],
            _ => &[],
        };
        for g in image_gts {
            assert!(
                !overlaps_xyxy([x, y, x + s, y + s], *g),
                "{r:?} overlaps {g:?}"
            );
        }
    }
}

#[test]
fn cli_crop_missing_image_names_the_file() {
    let dir = fresh_dir("missing");
    let json = write_small_set(&dir);
    std::fs::remove_file(dir.join("images").join("000002.png")).unwrap();
    let o = run_crop(&json, &dir.join("images"), &dir.join("out"), &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("000002.png"));
}
