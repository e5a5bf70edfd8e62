//! Pretraining's device and loader plumbing on the CPU: results that do not depend on the
//! number of loader workers, sets on disk streamed (a bad file named when its batch is built),
//! `device: "cuda"` refused at once on a machine without a GPU, and the centre updates that run
//! on the GPU checked here through the same ops on the CPU.

use std::path::PathBuf;
use std::process::Command;

use image::{Rgb, RgbImage};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::centers::{wen_center_update, wen_center_update_with_ops};
use ssod::pretrain::{
    pretrain_center_loss, pretrain_patch_ssl, CenterLossConfig, CropSet, FrameSet, PatchSslConfig,
};
use ssod::tensor::Device;
use ssod::Tensor;

fn tiny_model() -> YoloX {
    YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 1)).unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssod_pretrain_device_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn textured(w: u32, h: u32, i: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = ((x * 7 + y * 13 + i * 31) % 200) as u8;
        Rgb([v, 255 - v, (v / 2).wrapping_add(i as u8 * 17)])
    })
}

fn crops() -> CropSet {
    CropSet::from_images(
        (0..12)
            .map(|i| (textured(64, 64, i), (i % 2) as u8))
            .collect(),
    )
}

fn frames() -> FrameSet {
    FrameSet::from_images((0..6).map(|i| textured(320, 192, i)).collect())
}

fn center_cfg(workers: usize) -> CenterLossConfig {
    CenterLossConfig {
        epochs: 2,
        batch_size: 4,
        input_size: 64,
        eval_every: 1,
        workers,
        ..Default::default()
    }
}

fn ssl_cfg(workers: usize) -> PatchSslConfig {
    PatchSslConfig {
        epochs: 2,
        batch_size: 2,
        frame_size: [320, 192],
        patch_size: 64,
        augment_per: ssod::pretrain::patch_ssl::AugmentScope::Patch,
        workers,
        ..Default::default()
    }
}

fn weights(m: &YoloX) -> Vec<u32> {
    m.store
        .entries()
        .iter()
        .flat_map(|e| e.tensor.to_vec())
        .map(f32::to_bits)
        .collect()
}

#[test]
fn results_do_not_depend_on_the_number_of_loader_workers() {
    let (a, b) = (tiny_model(), tiny_model());
    let ra = pretrain_center_loss(&a, &crops(), &center_cfg(1)).unwrap();
    let rb = pretrain_center_loss(&b, &crops(), &center_cfg(3)).unwrap();
    let losses = |r: &ssod::pretrain::PretrainReport| -> Vec<u64> {
        r.epochs.iter().map(|e| e.loss.to_bits()).collect()
    };
    assert_eq!(losses(&ra), losses(&rb), "center loss: per-epoch losses");
    assert!(weights(&a) == weights(&b), "center loss: weights differ");

    let (a, b) = (tiny_model(), tiny_model());
    let ra = pretrain_patch_ssl(&a, &frames(), &ssl_cfg(1)).unwrap();
    let rb = pretrain_patch_ssl(&b, &frames(), &ssl_cfg(4)).unwrap();
    assert_eq!(losses(&ra), losses(&rb), "patch SSL: per-epoch losses");
    assert!(weights(&a) == weights(&b), "patch SSL: weights differ");
    // And the run really trained: the weights moved.
    assert!(weights(&a) != weights(&tiny_model()));
}

#[test]
fn sets_on_disk_are_listed_and_a_bad_file_is_named_when_its_batch_is_built() {
    let dir = temp_dir("bad_frame");
    for i in 0..4 {
        textured(320, 192, i)
            .save(dir.join(format!("f{i}.png")))
            .unwrap();
    }
    std::fs::write(dir.join("f9.png"), b"not a png").unwrap();
    // Listing reads no pixels: the broken file is found when a batch needs it.
    let set = FrameSet::load(&dir).unwrap();
    assert_eq!(set.len(), 5);
    let err = pretrain_patch_ssl(&tiny_model(), &set, &ssl_cfg(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("f9.png"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cuda_without_a_gpu_is_refused_before_any_work() {
    if Device::resolve("cuda").is_ok() {
        println!("a GPU is usable here: the refusal is checked on machines without one");
        return;
    }
    let cfg = CenterLossConfig {
        device: "cuda".into(),
        ..center_cfg(1)
    };
    let err = pretrain_center_loss(&tiny_model(), &crops(), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable GPU"), "{err}");
    let bad = CenterLossConfig {
        device: "gpu".into(),
        ..center_cfg(1)
    };
    let err = pretrain_center_loss(&tiny_model(), &crops(), &bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`device`"), "{err}");
    // `auto` falls back to the CPU and trains.
    let auto = CenterLossConfig {
        device: "auto".into(),
        epochs: 1,
        ..center_cfg(1)
    };
    assert!(pretrain_center_loss(&tiny_model(), &crops(), &auto).is_ok());

    // The command line fails at once, before reading the data folder (which does not exist).
    let dir = temp_dir("cli_cuda");
    let cfg_path = dir.join("cfg.json");
    std::fs::write(&cfg_path, "{}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args([
            "pretrain",
            "center",
            "--model",
            "yolox-nano",
            "--device",
            "cuda",
        ])
        .arg("--config")
        .arg(&cfg_path)
        .arg("--data")
        .arg(dir.join("missing"))
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no usable GPU"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The GPU's form of Wen et al.'s update (one-hot matrix product) equals the CPU loop on a case
/// with an empty class, up to the order of a class's sum.
#[test]
fn wen_update_with_ops_equals_the_loop() {
    let features = Tensor::from_vec(
        vec![0.5, -1.0, 2.0, 0.25, -0.75, 1.5, 3.0, -2.0, 0.1, 0.2],
        [5, 2],
    )
    .unwrap();
    let labels = [0usize, 2, 0, 0, 2];
    let start = vec![1.0, -1.0, 0.5, 0.5, -2.0, 3.0];
    let looped = Tensor::from_vec(start.clone(), [3, 2]).unwrap();
    wen_center_update(&looped, &features, &labels, 0.5).unwrap();
    let with_ops = Tensor::from_vec(start.clone(), [3, 2]).unwrap();
    wen_center_update_with_ops(&with_ops, &features, &labels, 0.5).unwrap();
    // Class 1 has no sample: it stays.
    assert_eq!(&looped.to_vec()[2..4], &start[2..4]);
    for (a, b) in looped.to_vec().iter().zip(with_ops.to_vec()) {
        assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
    }
    // By hand, class 0 (rows 0, 2, 3; n = 3): Δ = Σ (c − f) = (3·1 − 2.75, 3·(−1) + 1.5)
    // = (0.25, −1.5); c ← c − 0.5·Δ/(1 + 3) = (0.96875, −0.8125), exact in f32.
    assert_eq!(&looped.to_vec()[0..2], &[0.96875, -0.8125]);
}
