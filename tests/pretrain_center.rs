//! Center-loss pretraining: the loss vs hand values and finite differences, Wen's
//! update by hand, a tiny backbone learning synthetic fg/bg crops, transfer round trip, configs.

use image::{Rgb, RgbImage};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::center_loss::{CenterFeature, CenterUpdate};
use ssod::pretrain::centers::wen_center_update;
use ssod::pretrain::data::seeded_split;
use ssod::pretrain::{
    center_loss, load_backbone, parse_config, pretrain_center_loss, CenterLossConfig, CropSet,
    HeadKind,
};
use ssod::Tensor;

/// A deterministic generator (SplitMix64) so the data need no RNG crate.
struct Mix(u64);
impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.uniform() * (hi - lo) as f64) as i64
    }
}

fn tiny_model(width: f64) -> YoloX {
    YoloX::new(YoloXConfig::custom(0.33, width, false, 1)).unwrap()
}

/// Water-like background (greenish, noisy, a gradient); a foreground crop adds one bright
/// bottle-like rectangle (10..20 px) somewhere in the middle.
fn synthetic_crops(n_each: usize, size: u32, seed: u64) -> CropSet {
    let mut r = Mix(seed);
    let mut items = Vec::new();
    for i in 0..2 * n_each {
        let fg = i % 2 == 1;
        let base = [r.range(20, 70), r.range(60, 120), r.range(40, 90)];
        let slope = r.range(-30, 30);
        let mut img = RgbImage::new(size, size);
        for (x, y, p) in img.enumerate_pixels_mut() {
            let g = slope * y as i64 / size as i64;
            let px: Vec<u8> = (0..3)
                .map(|c| (base[c] + g + r.range(-15, 15)).clamp(0, 255) as u8)
                .collect();
            let _ = x;
            *p = Rgb([px[0], px[1], px[2]]);
        }
        if fg {
            let (w, h) = (r.range(10, 20) as u32, r.range(6, 14) as u32);
            let (x0, y0) = (
                r.range(8, (size - w - 8) as i64) as u32,
                r.range(8, (size - h - 8) as i64) as u32,
            );
            let colour = [
                r.range(200, 255) as u8,
                r.range(150, 255) as u8,
                r.range(150, 255) as u8,
            ];
            for y in y0..y0 + h {
                for x in x0..x0 + w {
                    img.put_pixel(x, y, Rgb(colour));
                }
            }
        }
        items.push((img, u8::from(fg)));
    }
    CropSet::from_images(items)
}

/// The mean loss of the last `k` epochs.
fn tail_loss(report: &ssod::pretrain::PretrainReport, k: usize) -> f64 {
    let tail = &report.epochs[report.epochs.len() - k..];
    tail.iter().map(|e| e.loss).sum::<f64>() / tail.len() as f64
}

fn print_epochs(what: &str, report: &ssod::pretrain::PretrainReport) {
    for e in &report.epochs {
        println!(
            "{what}: epoch {} loss {:.4} held-out accuracy {:?}",
            e.epoch, e.loss, e.accuracy
        );
    }
}

#[test]
fn center_loss_matches_hand_values() {
    // f = [[1, 2], [3, 5], [0, 0]], labels [0, 1, 0], c = [[1, 1], [2, 2]]:
    // ‖(1,2)−(1,1)‖² = 1, ‖(3,5)−(2,2)‖² = 1 + 9 = 10, ‖(0,0)−(1,1)‖² = 2; L = 13 / 3.
    let f = Tensor::from_vec(vec![1., 2., 3., 5., 0., 0.], [3, 2]).unwrap();
    let c = Tensor::from_vec(vec![1., 1., 2., 2.], [2, 2]).unwrap();
    let l = center_loss(&f, &[0, 1, 0], &c).unwrap().item().unwrap();
    assert!((l - 13.0 / 3.0).abs() < 1e-6, "got {l}");
    // Wrong label count is an error, not a panic.
    assert!(center_loss(&f, &[0, 1], &c).is_err());
}

#[test]
fn center_loss_backward_matches_finite_differences() {
    // dL/df_i = 2(f_i − c_{y_i})/B; dL/dc_j = −2 Σ_{y_i=j}(f_i − c_j)/B, checked against central
    // differences of the forward (exact for a quadratic up to f32 rounding).
    let fv: Vec<f32> = vec![
        0.3, -1.2, 2.0, 0.7, -0.4, 1.5, 0.9, -2.2, 0.1, 0.25, -0.6, 1.1,
    ];
    let cv: Vec<f32> = vec![0.5, -0.5, 1.0, 0.2, -1.0, 0.3, 0.4, 0.8, -0.7];
    let labels = [0usize, 2, 1, 2];
    let f = Tensor::from_vec(fv.clone(), [4, 3])
        .unwrap()
        .with_requires_grad(true);
    let c = Tensor::from_vec(cv.clone(), [3, 3])
        .unwrap()
        .with_requires_grad(true);
    center_loss(&f, &labels, &c).unwrap().backward().unwrap();
    let eval = |fv: &[f32], cv: &[f32]| -> f64 {
        let f = Tensor::from_vec(fv.to_vec(), [4, 3]).unwrap();
        let c = Tensor::from_vec(cv.to_vec(), [3, 3]).unwrap();
        center_loss(&f, &labels, &c).unwrap().item().unwrap() as f64
    };
    let eps = 1e-2f32;
    let gf = f.grad().unwrap().to_vec();
    for i in 0..fv.len() {
        let (mut p, mut m) = (fv.clone(), fv.clone());
        p[i] += eps;
        m[i] -= eps;
        let fd = (eval(&p, &cv) - eval(&m, &cv)) / (2.0 * eps as f64);
        assert!(
            (fd - gf[i] as f64).abs() < 2e-3,
            "features[{i}]: fd {fd} vs {}",
            gf[i]
        );
    }
    let gc = c.grad().unwrap().to_vec();
    for i in 0..cv.len() {
        let (mut p, mut m) = (cv.clone(), cv.clone());
        p[i] += eps;
        m[i] -= eps;
        let fd = (eval(&fv, &p) - eval(&fv, &m)) / (2.0 * eps as f64);
        assert!(
            (fd - gc[i] as f64).abs() < 2e-3,
            "centers[{i}]: fd {fd} vs {}",
            gc[i]
        );
    }
    // Class 1 has one sample (row 2 = [-0.4... no: row 2 is f[6..9] = [0.9, -2.2, 0.1]):
    // dL/dc_1 = −2·(f_2 − c_1)/4 = −0.5·([0.9, −2.2, 0.1] − [0.2, −1.0, 0.3]) = [−0.35, 0.6, 0.1].
    for (k, want) in [-0.35f32, 0.6, 0.1].iter().enumerate() {
        assert!(
            (gc[3 + k] - want).abs() < 1e-5,
            "dL/dc_1[{k}] = {}",
            gc[3 + k]
        );
    }
}

#[test]
fn wen_update_by_hand() {
    // c_0 = (0, 0), samples of class 0: (2, 0) and (0, 4); n_0 = 2, Σ(c − f) = (−2, −4),
    // α = 0.5: c_0 −= 0.5·(−2, −4)/3 = (1/3, 2/3). Class 1 has no sample: unchanged.
    let c = Tensor::from_vec(vec![0., 0., 5., 5.], [2, 2]).unwrap();
    let f = Tensor::from_vec(vec![2., 0., 0., 4.], [2, 2]).unwrap();
    wen_center_update(&c, &f, &[0, 0], 0.5).unwrap();
    let v = c.to_vec();
    assert!(
        (v[0] - 1.0 / 3.0).abs() < 1e-6 && (v[1] - 2.0 / 3.0).abs() < 1e-6,
        "{v:?}"
    );
    assert_eq!(&v[2..], &[5.0, 5.0]);
}

#[test]
fn split_never_fails_on_odd_sizes() {
    for n in [2usize, 3, 5, 7, 11, 101] {
        let (t, v) = seeded_split(n, 0.2, 7);
        assert_eq!(t.len() + v.len(), n);
        assert!(!t.is_empty() && !v.is_empty(), "n = {n}");
        let mut all: Vec<usize> = t.iter().chain(&v).copied().collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }
    assert_eq!(seeded_split(9, 0.2, 1), seeded_split(9, 0.2, 1));
}

#[test]
fn config_rejects_unknown_keys_and_bad_values() {
    let err = parse_config::<CenterLossConfig>(r#"{"epochs": 3, "lamda": 1}"#, "cfg.json")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("lamda") && err.contains("cfg.json"), "{err}");
    let cfg: CenterLossConfig =
        parse_config(r#"{"input_norm": "imagenet_rgb", "head": "gap"}"#, "x").unwrap();
    assert_eq!(cfg.batch_size, 128);
    assert_eq!(cfg.head, HeadKind::Gap);
    let bad = CenterLossConfig {
        input_size: 100,
        ..Default::default()
    };
    assert!(bad
        .validate()
        .unwrap_err()
        .to_string()
        .contains("input_size"));
}

#[test]
fn tiny_backbone_learns_synthetic_crops_and_transfers() {
    let crops = synthetic_crops(40, 64, 3);
    let model = tiny_model(0.125);
    let out = std::env::temp_dir().join(format!("ssod_pretrain_center_{}", std::process::id()));
    let cfg = CenterLossConfig {
        epochs: 6,
        batch_size: 16,
        input_size: 64,
        head: HeadKind::Study,
        eval_every: 1,
        bn_momentum: Some(0.3),
        out: Some(out.clone()),
        ..Default::default()
    };
    let report = pretrain_center_loss(&model, &crops, &cfg).unwrap();
    print_epochs("trained", &report);
    // The same run (initial weights, batches, flips) with the backbone and head at lr 0: the
    // centres still move, so its loss falls too (0.92 to 0.69), but less than with learning
    // (0.83 to 0.45), and its accuracy stays where it starts.
    let frozen = CenterLossConfig {
        lr: 0.0,
        out: None,
        ..cfg.clone()
    };
    let still = pretrain_center_loss(&tiny_model(0.125), &crops, &frozen).unwrap();
    print_epochs("lr 0", &still);
    let best = report.best_accuracy.unwrap();
    assert!(best > 0.9, "held-out accuracy {best}");
    let (loss, loss0) = (tail_loss(&report, 3), tail_loss(&still, 3));
    assert!(
        loss < loss0 - 0.15,
        "the last 3 epochs' loss {loss:.4} is not clearly below the same run at lr 0 ({loss0:.4})"
    );
    let (first, last) = (report.epochs[0].loss, report.epochs.last().unwrap().loss);
    assert!(
        last < 0.7 * first,
        "loss {last:.4} at the end is not clearly below {first:.4} at the start"
    );

    // Transfer round trip: a fresh detector of the same width loads the backbone exactly.
    let ckpt = report.checkpoint.unwrap();
    let fresh = tiny_model(0.125);
    let loaded = load_backbone(&fresh, &ckpt).unwrap();
    let names: Vec<_> = model
        .store
        .entries()
        .into_iter()
        .filter(|e| e.name.starts_with("backbone.backbone."))
        .collect();
    assert_eq!(loaded.loaded, names.len());
    assert!(
        loaded.ignored > 0,
        "head tensors are in the file but not loaded"
    );
    for e in &names {
        assert_eq!(
            fresh.store.get(&e.name).unwrap().to_vec(),
            e.tensor.to_vec(),
            "{}",
            e.name
        );
    }
    // Another width fails naming a tensor and its shapes.
    let wider = tiny_model(0.25);
    let err = load_backbone(&wider, &ckpt).unwrap_err().to_string();
    assert!(
        err.contains("backbone.backbone.stem.conv.conv.weight"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn embedding_centres_with_alpha_rule_and_gap_head_learn() {
    let crops = synthetic_crops(6, 48, 9); // 48 px: only the GAP head fits
    let model = tiny_model(0.125);
    let cfg = CenterLossConfig {
        epochs: 6,
        batch_size: 5,
        input_size: 64,
        head: HeadKind::Gap,
        center_feature: CenterFeature::Embedding,
        center_update: CenterUpdate::Alpha,
        input_norm: ssod::pretrain::InputNorm::ImagenetRgb,
        ..Default::default()
    };
    let r = pretrain_center_loss(&model, &crops, &cfg).unwrap();
    print_epochs("trained", &r);
    assert!(r.best_accuracy.is_some());
    // These options learn too: the loss falls from 2.2 to 0.74; the same run at lr 0 (the
    // centres still follow the features by the alpha rule) ends between 1.2 and 1.5.
    let frozen = CenterLossConfig {
        lr: 0.0,
        ..cfg.clone()
    };
    let still = pretrain_center_loss(&tiny_model(0.125), &crops, &frozen).unwrap();
    print_epochs("lr 0", &still);
    let (loss, loss0) = (tail_loss(&r, 3), tail_loss(&still, 3));
    assert!(
        loss < loss0 - 0.3,
        "the last 3 epochs' loss {loss:.4} is not clearly below the same run at lr 0 ({loss0:.4})"
    );
    let (first, last) = (r.epochs[0].loss, r.epochs.last().unwrap().loss);
    assert!(
        last < 0.5 * first,
        "loss {last:.4} at the end is not clearly below {first:.4} at the start"
    );
    // The study head at 32 px has no cell after the 2x2 pool: an error that says so.
    let study = CenterLossConfig {
        input_size: 32,
        ..cfg.clone()
    };
    let err = pretrain_center_loss(
        &model,
        &crops,
        &CenterLossConfig {
            head: HeadKind::Study,
            ..study
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("gap"), "{err}");
}
