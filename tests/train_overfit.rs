//! End to end: a tiny YOLOX overfits 4 synthetic images with one class, trained by the real
//! loop (loader → forward → SimOTA → loss → backward → optimiser), evaluated with the COCO
//! evaluator: AP50 above 0.9 after a bounded number of steps. On the CPU by default;
//! `SSOD_TEST_DEVICE=cuda` trains on the GPU (`SSOD_TEST_PRECISION=tf32|bf16` in that
//! arithmetic).

use std::sync::Arc;

use image::{Rgb, RgbImage};
use ssod::data::dataset::{Annotation, Category, CocoDataset, ImageInfo};
use ssod::models::{YoloX, YoloXConfig};
use ssod::train::config::{OptimizerKind, Precision, SchedulerKind};
use ssod::train::evaluate::{evaluate_detector, recalibrate_batch_norm};
use ssod::train::run::{train_detector, TrainRunOptions};
use ssod::train::TrainConfig;

/// 4 images 128×128: a textured blue-grey background and 1–2 orange boxes of 18–40 px.
fn make_dataset(dir: &std::path::Path) -> CocoDataset {
    let boxes_per_image: [&[[u32; 4]]; 4] = [
        &[[20, 30, 30, 22]],
        &[[70, 60, 40, 26], [15, 15, 20, 18]],
        &[[40, 80, 24, 36]],
        &[[90, 20, 26, 26], [30, 70, 36, 20]],
    ];
    let mut ds = CocoDataset {
        categories: vec![Category {
            id: 1,
            name: "bottle".into(),
            supercategory: None,
        }],
        image_dir: dir.to_path_buf(),
        ..Default::default()
    };
    for (i, boxes) in boxes_per_image.iter().enumerate() {
        let mut img = RgbImage::from_fn(128, 128, |x, y| {
            let t = ((x * 7 + y * 13 + (i as u32) * 31) % 23) as u8;
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
fn tiny_yolox_overfits_four_images() {
    let dir = std::env::temp_dir().join(format!("ssod_overfit_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ds = make_dataset(&dir);

    let mut mcfg = YoloXConfig::custom(0.33, 0.125, false, 1);
    mcfg.seed = 3;
    let model = Arc::new(YoloX::new(mcfg).unwrap());
    let cfg = TrainConfig {
        max_epoch: 150,
        warmup_epochs: 0,
        no_aug_epochs: 0,
        batch_size: 4,
        optimizer: OptimizerKind::AdamW,
        scheduler: SchedulerKind::Constant,
        basic_lr_per_img: 2e-3 / 4.0,
        weight_decay: 0.0,
        ema: false,
        eval_interval: 1000,
        input_size: (128, 128),
        test_size: (128, 128),
        multiscale_range: 0,
        random_size: None,
        mosaic_prob: 0.0,
        enable_mixup: false,
        hsv_prob: 0.0,
        flip_prob: 0.0,
        // `SSOD_TEST_PRECISION=bf16` (with `SSOD_TEST_DEVICE=cuda`) checks that training in bf16
        // (bf16 products and activations) still overfits.
        precision: Precision::from_name(
            &std::env::var("SSOD_TEST_PRECISION").unwrap_or_else(|_| "f32".into()),
        )
        .unwrap(),
        ..TrainConfig::default()
    };
    let opts = TrainRunOptions {
        out_dir: dir.join("run"),
        workers: 1,
        cache: true,
        resume: None,
        resume_override: Vec::new(),
        verbose: false,
        // `SSOD_TEST_DEVICE=cuda` runs the same check on a GPU machine (the test binary travels
        // to the device machine; DEVELOPERS.md says how).
        device: ssod::tensor::Device::resolve(
            &std::env::var("SSOD_TEST_DEVICE").unwrap_or_else(|_| "cpu".into()),
        )
        .unwrap()
        .0,
    };
    let report = train_detector(model.clone(), &ds, Some(&ds), &cfg, &opts, |_| Ok(true)).unwrap();
    let first = report.history.first().unwrap().mean_loss;
    let last = report.history.last().unwrap().mean_loss;
    assert!(
        last < first * 0.5,
        "loss did not fall enough: {first} -> {last}"
    );
    // Short runs: the BN running statistics (momentum 0.03) lag the weights; recalibrate them
    // on the training images before evaluating in eval mode.
    let imgs: Vec<_> = ds
        .images
        .iter()
        .map(|i| ssod::data::image_io::read_rgb(&ds.image_path(i)).unwrap())
        .collect();
    let x = ssod::detect::images_to_bgr_tensor(&imgs).unwrap();
    recalibrate_batch_norm(&model, &[x]).unwrap();
    let m = evaluate_detector(&model, &ds, (128, 128), 0.01, 0.65, 4).unwrap();
    println!(
        "AP {:.3} AP50 {:.3} after {} steps (loss {first:.3} -> {last:.3})",
        m.ap(),
        m.ap50(),
        report.history.len()
    );
    assert!(m.ap50() > 0.9, "AP50 {} after overfitting", m.ap50());
    // The run wrote its metrics row and a resumable checkpoint.
    assert!(report.metrics_csv.exists() && report.last_checkpoint.exists());
    std::fs::remove_dir_all(&dir).ok();
}
