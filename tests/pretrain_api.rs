//! Linear probe, freeze helper, and the Rhai and CLI entry points of backbone pretraining.

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::patch_ssl::PatchLossKind;
use ssod::pretrain::{
    freeze_backbone, linear_probe, pretrain_center_loss, pretrain_patch_ssl, CenterLossConfig,
    CropSet, FrameSet, HeadKind, PatchSslConfig, ProbeConfig,
};
use ssod::Tensor;

fn tiny_model() -> YoloX {
    YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 1)).unwrap()
}

/// Bright noisy crops (label 1) against dark noisy crops (label 0): linearly separable by the
/// mean of any feature that sees intensity, so a working probe must score (nearly) 100 %.
fn bright_dark_crops(n_each: usize, size: u32) -> Vec<(RgbImage, u8)> {
    let mut out = Vec::new();
    for i in 0..2 * n_each {
        let fg = i % 2 == 1;
        let base = if fg { 190 } else { 40 };
        let img = RgbImage::from_fn(size, size, |x, y| {
            let v = (base as u32 + (x * 7 + y * 13 + i as u32 * 31) % 40) as u8;
            Rgb([v, v.saturating_sub(10), v])
        });
        out.push((img, u8::from(fg)));
    }
    out
}

/// What the scripts' `yolox("s", #{ classes: 1, width: 0.125 })` builds.
fn rhai_model() -> YoloX {
    let mut cfg = YoloXConfig::variant("s", 1).unwrap();
    cfg.width = 0.125;
    YoloX::new(cfg).unwrap()
}

fn write_crop_dir(dir: &Path, items: &[(RgbImage, u8)]) {
    for sub in ["pos", "neg"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for (i, (img, label)) in items.iter().enumerate() {
        let sub = if *label == 1 { "pos" } else { "neg" };
        img.save(dir.join(sub).join(format!("{i:04}.png"))).unwrap();
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssod_pretrain_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn linear_probe_separates_an_easy_set() {
    let crops = CropSet::from_images(bright_dark_crops(12, 64));
    let cfg = ProbeConfig {
        input_size: 64,
        ..Default::default()
    };
    let r = linear_probe(&tiny_model(), &crops, &cfg).unwrap();
    println!("{r:?}");
    assert_eq!(r.feature_dim, 128); // C5 of width 0.125: 1024 · 0.125
    assert_eq!(r.train_size + r.val_size, 24);
    assert!(r.val_accuracy >= 0.9, "{r:?}");
}

#[test]
fn freeze_backbone_stops_and_restores_gradients() {
    let m = tiny_model();
    let n = freeze_backbone(&m, true);
    assert!(n > 0);
    let x = Tensor::rand([1, 3, 64, 64], 1);
    m.forward(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let stem = m
        .store
        .get("backbone.backbone.stem.conv.conv.weight")
        .unwrap();
    assert!(stem.grad().is_none(), "frozen backbone got a gradient");
    let head = m.store.get("head.cls_preds.0.weight").unwrap();
    assert!(head.grad().is_some(), "the head still trains");
    assert_eq!(freeze_backbone(&m, false), n);
    m.forward(&x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(stem.grad().is_some());
}

#[test]
fn rhai_pretrain_functions_and_load_backbone() {
    let dir = temp_dir("rhai");
    let crops = dir.join("crops");
    write_crop_dir(&crops, &bright_dark_crops(6, 64));
    let out = dir.join("out");
    let (engine, docs) = ssod::script::new_engine();
    for f in [
        "pretrain_center_loss",
        "pretrain_patch_ssl",
        "linear_probe",
        "load_backbone",
    ] {
        assert!(docs.iter().any(|d| d.name == f), "{f} is not registered");
    }
    let script = format!(
        r#"
        let m = yolox("s", #{{ classes: 1, width: 0.125 }});
        let r = pretrain_center_loss(m, "{crops}", #{{ epochs: 2, batch_size: 6, input_size: 64,
            head: "gap", out: "{out}" }});
        let fresh = yolox("s", #{{ classes: 1, width: 0.125 }});
        let n = fresh.load_backbone(r.checkpoint);
        let p = linear_probe(fresh, "{crops}", #{{ input_size: 64 }});
        [r.loss.len(), r.accuracy.len(), n, p.accuracy, r.best_accuracy, r.loss, r.accuracy]
        "#,
        crops = crops.display(),
        out = out.display()
    );
    let v: rhai::Array = engine.eval(&script).unwrap();
    // Patch SSL from a folder of frames (256x200, 64 px patches: the grid fits, the far strip is
    // x in [128, 191]).
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..2u32 {
        RgbImage::from_fn(256, 200, |x, y| Rgb([(x + i) as u8, y as u8, 90]))
            .save(frames.join(format!("frame_{i:06}.png")))
            .unwrap();
    }
    let ssl = format!(
        r#"let m = yolox("s", #{{ classes: 1, width: 0.125 }});
           let r = pretrain_patch_ssl(m, "{}", #{{ epochs: 2, batch_size: 2, frame_size: [256, 200],
               patch_size: 64, loss: "info_nce", temperature: 0.5 }});
           [r.loss.len(), r.pos_cos.len(), r.neg_cos[1], r.steps, r.loss, r.pos_cos, r.neg_cos]"#,
        frames.display()
    );
    let s: rhai::Array = engine.eval(&ssl).unwrap();
    assert_eq!(s[0].as_int().unwrap(), 2);
    assert_eq!(s[1].as_int().unwrap(), 2);
    assert_eq!(s[3].as_int().unwrap(), 2);
    assert_eq!(v[0].as_int().unwrap(), 2);
    assert_eq!(v[1].as_int().unwrap(), 2);
    // The Rhai functions pass their options through and report what the Rust functions do: the
    // same runs from Rust give the same numbers, bit for bit.
    let floats = |d: &rhai::Dynamic| -> Vec<f64> {
        d.clone()
            .into_array()
            .unwrap()
            .iter()
            .map(|x| x.as_float().unwrap())
            .collect()
    };
    let ssl_cfg = PatchSslConfig {
        epochs: 2,
        batch_size: 2,
        frame_size: [256, 200],
        patch_size: 64,
        loss: PatchLossKind::InfoNce,
        temperature: 0.5,
        ..Default::default()
    };
    let rust =
        pretrain_patch_ssl(&rhai_model(), &FrameSet::load(&frames).unwrap(), &ssl_cfg).unwrap();
    let col =
        |f: fn(&ssod::pretrain::EpochStats) -> f64| rust.epochs.iter().map(f).collect::<Vec<_>>();
    assert_eq!(floats(&s[4]), col(|e| e.loss), "patch SSL loss");
    assert_eq!(
        floats(&s[5]),
        col(|e| e.mean_pos_cos.unwrap()),
        "positive cosines"
    );
    assert_eq!(
        floats(&s[6]),
        col(|e| e.mean_neg_cos.unwrap()),
        "negative cosines"
    );
    assert_eq!(
        s[2].as_float().unwrap(),
        rust.epochs[1].mean_neg_cos.unwrap()
    );
    let center_cfg = CenterLossConfig {
        epochs: 2,
        batch_size: 6,
        input_size: 64,
        head: HeadKind::Gap,
        ..Default::default()
    };
    let rust =
        pretrain_center_loss(&rhai_model(), &CropSet::load(&crops).unwrap(), &center_cfg).unwrap();
    assert_eq!(
        floats(&v[5]),
        rust.epochs.iter().map(|e| e.loss).collect::<Vec<_>>(),
        "center loss"
    );
    assert_eq!(
        floats(&v[6]),
        rust.epochs
            .iter()
            .map(|e| e.accuracy.unwrap())
            .collect::<Vec<_>>(),
        "held-out accuracy"
    );
    assert_eq!(v[4].as_float().unwrap(), rust.best_accuracy.unwrap());
    // The bright/dark crops are separable by intensity: the probe on the pretrained backbone
    // scores (nearly) 100 %, as on a fresh one (`linear_probe_separates_an_easy_set`).
    assert!(v[3].as_float().unwrap() >= 0.9, "probe accuracy {}", v[3]);
    let n = v[2].as_int().unwrap();
    let expected = tiny_model()
        .tensor_names()
        .iter()
        .filter(|(n, _)| n.starts_with("backbone.backbone."))
        .count();
    assert_eq!(n as usize, expected);
    // Unknown keys are errors that name the key.
    let bad = format!(
        r#"let m = yolox("s", #{{ classes: 1, width: 0.125 }});
           pretrain_center_loss(m, "{}", #{{ epoch: 2 }})"#,
        crops.display()
    );
    let err = engine.eval::<rhai::Dynamic>(&bad).unwrap_err().to_string();
    assert!(err.contains("epoch"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_probe_runs_and_names_bad_config_keys() {
    let dir = temp_dir("cli");
    let crops = dir.join("crops");
    write_crop_dir(&crops, &bright_dark_crops(4, 64));
    let good = dir.join("probe.json");
    std::fs::write(&good, r#"{"input_size": 64, "iterations": 50}"#).unwrap();
    let bin = env!("CARGO_BIN_EXE_ssod");
    let run = |cfg: &Path| {
        std::process::Command::new(bin)
            .args(["pretrain", "probe", "--model", "yolox-nano", "--config"])
            .arg(cfg)
            .arg("--data")
            .arg(&crops)
            .output()
            .unwrap()
    };
    let ok = run(&good);
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(stdout.contains("linear probe"), "{stdout}");
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"input_size": 64, "iters": 5}"#).unwrap();
    let out = run(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("iters") && stderr.contains("bad.json"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
