//! SparK-style masked autoencoding: the patch mask's geometry by hand, the sparse forward (masked
//! pixels never reach visible outputs; with nothing masked it is the dense forward), the
//! per-patch-normalised masked MSE by hand, gradients reaching every trained tensor, the loss
//! falling on generated frames, a probe above the same backbone untrained, the run folder, and
//! the Rhai and CLI entry points with bad configs.

use std::path::{Path, PathBuf};

mod ssl_support;

use image::{Rgb, RgbImage};

use ssod::models::{PatchMask, SparseBn, YoloX, YoloXConfig};
use ssod::pretrain::masked_decoder::{
    masked_reconstruction_loss, normalised_patch_targets, patchify, sample_visible_patches,
    visible_count, MaskedDecoder,
};
use ssod::pretrain::{load_backbone, parse_config, pretrain_masked, FrameSet, MaskedConfig};
use ssod::rng::rng_for;
use ssod::tensor::Device;
use ssod::Tensor;

fn tiny_model(width: f64, depthwise: bool) -> YoloX {
    YoloX::new(YoloXConfig::custom(0.33, width, depthwise, 1)).unwrap()
}

fn random_image(b: usize, h: usize, w: usize, seed: u64) -> Vec<f32> {
    use rand::Rng;
    let mut rng = rng_for(seed, "image");
    (0..b * 3 * h * w)
        .map(|_| rng.random_range(0.0..255.0))
        .collect()
}

/// Two images of a 2 × 3 patch grid (64 × 96 px).
fn two_masks() -> Vec<Vec<bool>> {
    vec![
        vec![true, false, true, false, false, true],
        vec![false, true, true, true, false, false],
    ]
}

#[test]
fn mask_levels_and_counts_by_hand() {
    let visible = two_masks();
    let mask = PatchMask::new(&visible, [2, 3], Device::Cpu).unwrap();
    for k in 0..6 {
        let s = 1usize << k;
        let m = mask.level(k).unwrap();
        assert_eq!(m.dims(), [2, 1, 64 / s, 96 / s], "level {k}");
        let v = m.to_vec();
        for b in 0..2 {
            for y in 0..64 / s {
                for x in 0..96 / s {
                    // Pixel (y·s, x·s) lies in patch (y·s / 32, x·s / 32).
                    let patch = (y * s / 32) * 3 + x * s / 32;
                    let want = if visible[b][patch] { 1.0 } else { 0.0 };
                    let got = v[(b * (64 / s) + y) * (96 / s) + x];
                    assert_eq!(got, want, "level {k} image {b} at ({y}, {x})");
                }
            }
        }
    }
    assert!(mask.level(6).is_none());
    // round(L · (1 − ratio)), at least one visible and one masked.
    assert_eq!(visible_count(12, 0.6), 5); // 4.8
    assert_eq!(visible_count(10, 0.75), 3); // 2.5 rounds away from zero
    assert_eq!(visible_count(10, 0.0), 9);
    assert_eq!(visible_count(10, 0.999), 1);
    let mut sets = std::collections::HashSet::new();
    for seed in 0..20 {
        let v = sample_visible_patches(40, 0.6, &mut rng_for(seed, "mask"));
        assert_eq!(v.len(), 40);
        assert_eq!(v.iter().filter(|&&x| x).count(), 16);
        sets.insert(v);
    }
    assert!(sets.len() > 15, "masks differ from seed to seed");
    // Bad masks are errors, not panics.
    assert!(PatchMask::new(&[vec![false; 6]], [2, 3], Device::Cpu).is_err());
    assert!(PatchMask::new(&[vec![true; 5]], [2, 3], Device::Cpu).is_err());
    assert!(PatchMask::new(&[], [2, 3], Device::Cpu).is_err());
}

fn masked_features(model: &YoloX, image: Vec<f32>, mask: &PatchMask) -> Vec<Vec<f32>> {
    let x = Tensor::from_vec(image, [2, 3, 64, 96]).unwrap();
    let bn = SparseBn::of_store(&model.store);
    let (c3, c4, c5) = model
        .backbone
        .backbone
        .forward_masked(&x, mask, bn)
        .unwrap();
    vec![c3.to_vec(), c4.to_vec(), c5.to_vec()]
}

#[test]
fn masked_pixels_never_reach_visible_outputs() {
    let visible = two_masks();
    let mask = PatchMask::new(&visible, [2, 3], Device::Cpu).unwrap();
    let pixel_mask = mask.level(0).unwrap().to_vec(); // [2, 1, 64, 96]
    for depthwise in [false, true] {
        let model = tiny_model(0.125, depthwise);
        model.set_training(true);
        let image = random_image(2, 64, 96, 1);
        let base = masked_features(&model, image.clone(), &mask);
        // Every masked pixel replaced by other values: the features are bit-identical.
        let mut perturbed = image.clone();
        let other = random_image(2, 64, 96, 2);
        for (i, v) in perturbed.iter_mut().enumerate() {
            let (b, p) = (i / (3 * 64 * 96), i % (64 * 96));
            if pixel_mask[b * 64 * 96 + p] == 0.0 {
                *v = other[i] * 3.0 - 100.0;
            }
        }
        assert_ne!(perturbed, image);
        let after = masked_features(&model, perturbed, &mask);
        assert_eq!(base, after, "depthwise {depthwise}");
        // Masked positions are zero at every stage.
        for (feat, k) in base.iter().zip([3usize, 4, 5]) {
            let m = mask.level(k).unwrap().to_vec();
            let plane = m.len() / 2;
            let c = feat.len() / m.len();
            for (i, &v) in feat.iter().enumerate() {
                let (b, p) = (i / (c * plane), i % plane);
                if m[b * plane + p] == 0.0 {
                    assert_eq!(v, 0.0, "stage C{k} leaks at {i}");
                }
            }
        }
        // A visible pixel does change them (the check above can fail).
        let first_visible = pixel_mask.iter().position(|&m| m == 1.0).unwrap();
        let mut moved = image.clone();
        moved[first_visible] += 50.0;
        assert_ne!(base, masked_features(&model, moved, &mask));
    }
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

#[test]
fn with_nothing_masked_it_is_the_dense_forward() {
    let mask = PatchMask::new(&[vec![true; 6], vec![true; 6]], [2, 3], Device::Cpu).unwrap();
    let image = random_image(2, 64, 96, 3);
    let sparse = tiny_model(0.125, false);
    let dense = tiny_model(0.125, false);
    for m in [&sparse, &dense] {
        m.set_training(true);
    }
    let got = masked_features(&sparse, image.clone(), &mask);
    let x = Tensor::from_vec(image, [2, 3, 64, 96]).unwrap();
    let (c3, c4, c5) = dense.backbone.backbone.forward(&x).unwrap();
    for (g, w) in got.iter().zip([c3.to_vec(), c4.to_vec(), c5.to_vec()]) {
        let d = rel_diff(g, &w);
        assert!(d < 1e-4, "relative difference {d}");
    }
    // The running statistics move as the BN kernel moves them (momentum, unbiased variance).
    let mut checked = 0;
    for (a, b) in sparse.store.entries().iter().zip(dense.store.entries()) {
        assert_eq!(a.name, b.name);
        if a.name.starts_with("backbone.backbone.") && a.name.contains("running_") {
            let d = rel_diff(&a.tensor.to_vec(), &b.tensor.to_vec());
            assert!(d < 1e-4, "{}: relative difference {d}", a.name);
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} running statistics compared");
    // Evaluation mode: the running statistics, masked afterwards.
    for m in [&sparse, &dense] {
        m.set_training(false);
    }
    let got = masked_features(&sparse, random_image(2, 64, 96, 4), &mask);
    let x = Tensor::from_vec(random_image(2, 64, 96, 4), [2, 3, 64, 96]).unwrap();
    let (_, _, c5) = dense.backbone.backbone.forward(&x).unwrap();
    assert!(rel_diff(&got[2], &c5.to_vec()) < 1e-4);
}

#[test]
fn patch_targets_and_loss_by_hand() {
    // x[0, c, y, x] = c·10000 + y·100 + x on a 1 × 2 patch grid.
    let (h, w) = (32usize, 64usize);
    let values: Vec<f32> = (0..3 * h * w)
        .map(|i| {
            let (c, y, x) = (i / (h * w), (i / w) % h, i % w);
            (c * 10000 + y * 100 + x) as f32
        })
        .collect();
    let images = Tensor::from_vec(values.clone(), [1, 3, h, w]).unwrap();
    let rows = patchify(&images).unwrap();
    assert_eq!(rows.dims(), [1, 2, 3072]);
    let r = rows.to_vec();
    for (p, j) in [(0usize, 0usize), (1, 1)] {
        for k in [0usize, 1, 33, 1024, 3071] {
            let (c, yy, xx) = (k / 1024, (k / 32) % 32, k % 32);
            let want = (c * 10000 + yy * 100 + 32 * j + xx) as f32;
            assert_eq!(r[p * 3072 + k], want, "patch {p} element {k}");
        }
    }
    // Normalised per patch: mean 0, unbiased variance 1 (up to the 1e-6).
    let t = normalised_patch_targets(&images).unwrap().to_vec();
    for p in 0..2 {
        let row = &t[p * 3072..(p + 1) * 3072];
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 3072.0;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 3071.0;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }
    // Patch 1 masked: a zero prediction costs mean(t²) = 3071/3072 there; patch 0 (visible)
    // does not count, whatever is predicted on it.
    let mask = PatchMask::new(&[vec![true, false]], [1, 2], Device::Cpu).unwrap();
    let mut pred = vec![0.0f32; 3 * h * w];
    for (i, v) in pred.iter_mut().enumerate() {
        if i % w < 32 {
            *v = 7.0;
        }
    }
    let pred = Tensor::from_vec(pred, [1, 3, h, w]).unwrap();
    let loss = masked_reconstruction_loss(&pred, &images, &mask)
        .unwrap()
        .item()
        .unwrap();
    assert!((loss as f64 - 3071.0 / 3072.0).abs() < 1e-4, "{loss}");
    // A prediction of another shape, or a mask that hides nothing, is an error.
    let all_visible = PatchMask::new(&[vec![true, true]], [1, 2], Device::Cpu).unwrap();
    assert!(masked_reconstruction_loss(&pred, &images, &all_visible).is_err());
    let shape_err = masked_reconstruction_loss(
        &Tensor::from_vec(vec![0.0; 3 * 32 * 32], [1, 3, 32, 32]).unwrap(),
        &images,
        &mask,
    );
    assert!(shape_err.is_err());
}

#[test]
fn one_step_reaches_backbone_tokens_and_decoder() {
    let model = tiny_model(0.125, false);
    model.set_training(true);
    let decoder = MaskedDecoder::new(0.125, 16, 0).unwrap();
    decoder.store.set_training(true);
    let mask = PatchMask::new(&two_masks(), [2, 3], Device::Cpu).unwrap();
    let images = Tensor::from_vec(random_image(2, 64, 96, 5), [2, 3, 64, 96]).unwrap();
    let bn = SparseBn::of_store(&model.store);
    let (c3, c4, c5) = model
        .backbone
        .backbone
        .forward_masked(&images, &mask, bn)
        .unwrap();
    let pred = decoder.forward([&c3, &c4, &c5], &mask).unwrap();
    assert_eq!(pred.dims(), [2, 3, 64, 96]);
    let loss = masked_reconstruction_loss(&pred, &images, &mask).unwrap();
    assert!(loss.item().unwrap().is_finite());
    loss.backward().unwrap();
    let nonzero = |t: &Tensor| {
        t.grad()
            .is_some_and(|g| g.to_vec().iter().any(|&v| v != 0.0))
    };
    for e in decoder.store.parameters() {
        assert!(nonzero(&e.tensor), "{} has no gradient", e.name);
    }
    let stem = model
        .store
        .get("backbone.backbone.stem.conv.conv.weight")
        .unwrap();
    assert!(nonzero(&stem));
}

/// Water: green-blue, noisy, with ripples of a random phase and a random tint.
fn water(w: u32, h: u32, rng: &mut impl rand::Rng) -> RgbImage {
    let tint: i32 = rng.random_range(-15..15);
    let phase: f32 = rng.random_range(0.0..6.0);
    RgbImage::from_fn(w, h, |x, y| {
        let ripple = (((y as f32) * 0.5 + (x as f32) * 0.1 + phase).sin() * 12.0) as i32;
        let noise: i32 = rng.random_range(-10..10);
        Rgb([
            (40 + tint + noise).clamp(0, 255) as u8,
            (100 + ripple + noise).clamp(0, 255) as u8,
            (90 + ripple / 2 + noise).clamp(0, 255) as u8,
        ])
    })
}

/// A bottle-like rectangle (8..16 px wide, 7..12 px high) brighter than the water under it by
/// 40..80 (red), half that (green) and a third (blue): visible, but not at a glance.
fn add_bottle(img: &mut RgbImage, rng: &mut impl rand::Rng) {
    let (w, h) = img.dimensions();
    let bw = rng.random_range(8..16u32);
    let bh = rng.random_range(8..16u32) * 2 / 3 + 2;
    let (x0, y0) = (rng.random_range(0..w - bw), rng.random_range(0..h - bh));
    let d = rng.random_range(40..80i32);
    for y in y0..y0 + bh {
        for x in x0..x0 + bw {
            let p = img.get_pixel(x, y).0;
            let lift = |v: u8, by: i32| (v as i32 + by).clamp(0, 255) as u8;
            img.put_pixel(
                x,
                y,
                Rgb([lift(p[0], d), lift(p[1], d / 2), lift(p[2], d / 3)]),
            );
        }
    }
}

/// 96 × 64 frames of water with 1 to 3 bottles.
fn generated_frames(count: usize, seed: u64) -> FrameSet {
    let mut rng = rng_for(seed, "frames");
    let frames = (0..count)
        .map(|i| {
            let mut img = water(96, 64, &mut rng);
            for _ in 0..1 + i % 3 {
                add_bottle(&mut img, &mut rng);
            }
            img
        })
        .collect();
    FrameSet::from_images(frames)
}

fn config(json: &str) -> MaskedConfig {
    parse_config(json, "test config").unwrap()
}

/// Pretrain a tiny backbone (initialised from `seed`) on generated frames: its per-epoch losses
/// and the backbone, with the same backbone at its random initialisation.
fn pretrain_tiny(seed: u64) -> (Vec<f64>, YoloX, YoloX) {
    let frames = generated_frames(64, 1);
    let cfg = config(&format!(
        r#"{{"seed": {seed}, "epochs": 16, "batch_size": 8, "lr": 0.002,
            "image_size": [96, 64], "decoder_width": 32, "workers": 1, "health": false}}"#
    ));
    let model = || {
        let mut c = YoloXConfig::custom(0.33, 0.125, false, 1);
        c.seed = seed;
        YoloX::new(c).unwrap()
    };
    let (trained, random) = (model(), model());
    let report = pretrain_masked(&trained, &frames, &cfg).unwrap();
    let losses = report.epochs.iter().map(|e| e.loss).collect();
    (losses, trained, random)
}

#[test]
fn loss_falls_on_generated_frames() {
    for seed in [1u64, 2] {
        let (losses, _, _) = pretrain_tiny(seed);
        println!("seed {seed}: losses {losses:?}");
        assert_eq!(losses.len(), 16);
        // Predicting the per-patch-normalised target by its mean (zero) costs ≈ 1; a decoder
        // that uses the visible context must do far better on water with ripples.
        assert!(losses[0] > 0.8, "seed {seed}: {losses:?}");
        assert!(
            losses[15] < 0.3 * losses[0],
            "seed {seed}: the loss does not fall: {losses:?}"
        );
    }
}

/// The shared probe comparison (tests/ssl_support): 30 epochs at lr 1e-3 of SparK's
/// RandomResizedCrop (0.67 to 1 of the frame) with the crop's aspect kept near the frame's 3:2
/// (`crop_ratio` [1.2, 1.8]), so that bottles are not stretched on the way to 96 × 64. Chosen on
/// seeds 1-4, k-NN untrained → trained: 0.647 → 0.738, 0.807 → 0.884, 0.767 → 0.791,
/// 0.752 → 0.830; held-out seeds 5-8: 0.682 → 0.726, 0.677 → 0.812, 0.678 → 0.762,
/// 0.635 → 0.754. Without the crop (whole frames resized) it does not hold: 0.633, 0.865, 0.724,
/// 0.843 on seeds 1-4. The margin is narrow: on 256 frames for 10 epochs, with SparK's own
/// aspect range or on a generator variant it falls below on some seeds (docs/ssl-methods.md).
#[test]
fn masked_beats_random_init() {
    let (frames, crops) = ssl_support::probe_data(8);
    let train = FrameSet::from_images(frames.iter().map(|f| f.image.clone()).collect());
    ssl_support::assert_beats_random_init("masked", &frames, &crops, |model, seed| {
        let cfg = config(&format!(
            r#"{{"seed": {seed}, "epochs": 30, "batch_size": 16, "lr": 0.001,
                "image_size": [96, 64], "crop_ratio": [1.2, 1.8], "health": false}}"#
        ));
        pretrain_masked(model, &train, &cfg).unwrap()
    });
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssod_masked_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_frames(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = rng_for(3, "files");
    for i in 0..count {
        water(64, 64, &mut rng)
            .save(dir.join(format!("frame_{i:06}.png")))
            .unwrap();
    }
}

#[test]
fn bad_configs_are_errors_naming_the_key() {
    let frames = generated_frames(2, 4);
    let model = tiny_model(0.125, false);
    for (json, key) in [
        (r#"{"mask_ratio": 1.0}"#, "mask_ratio"),
        (r#"{"mask_ratio": 0.0}"#, "mask_ratio"),
        (r#"{"decoder_width": 0}"#, "decoder_width"),
        (r#"{"hflip_prob": 1.5}"#, "hflip_prob"),
        (r#"{"crop_scale": [0.0, 1.0]}"#, "crop_scale"),
        (r#"{"crop_scale": [0.9, 0.5]}"#, "crop_scale"),
        (r#"{"crop_ratio": [2.0, 1.0]}"#, "crop_ratio"),
        (
            r#"{"crop_scale": null, "crop_ratio": [0.0, 1.0]}"#,
            "crop_ratio",
        ),
        (r#"{"image_size": [100, 64]}"#, "image_size"),
        (r#"{"image_size": [32, 32]}"#, "image_size"),
        (r#"{"epochs": 0}"#, "epochs"),
    ] {
        let err = pretrain_masked(&model, &frames, &config(json))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{json}: {err}");
    }
    let unknown = parse_config::<MaskedConfig>(r#"{"mask_ration": 0.5}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(
        unknown.contains("mask_ration") && unknown.contains("cfg.json"),
        "{unknown}"
    );
    let empty = FrameSet::from_images(Vec::new());
    assert!(pretrain_masked(&model, &empty, &MaskedConfig::default()).is_err());
}

/// A state of a whole-image run (`crop_scale` null) holds no crop keys, as the states written
/// before those keys existed: it resumes with `crop_scale` null (whatever `crop_ratio`, which
/// then does nothing), and a crop is refused with both keys named.
#[test]
fn whole_image_states_resume_and_a_crop_is_refused() {
    let dir = temp_dir("resume");
    let frames = generated_frames(4, 5);
    let run = |extra: &str, epochs: usize, resume: bool| {
        let cfg = config(&format!(
            r#"{{"epochs": {epochs}, "batch_size": 2, "image_size": [96, 64], "decoder_width": 8,
                "workers": 1, "health": false, "out": "{out}", "resume": {resume} {extra}}}"#,
            out = dir.join("run").display()
        ));
        pretrain_masked(&tiny_model(0.125, false), &frames, &cfg)
    };
    run(r#", "crop_scale": null"#, 1, false).unwrap();
    let err = run("", 2, true).unwrap_err().to_string();
    assert!(
        err.contains("`crop_scale`") && err.contains("`crop_ratio`"),
        "{err}"
    );
    let resumed = run(r#", "crop_scale": null, "crop_ratio": [1.0, 2.0]"#, 2, true).unwrap();
    assert_eq!(resumed.epochs.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rhai_and_cli_write_the_run_folder() {
    let dir = temp_dir("api");
    let frames = dir.join("frames");
    write_frames(&frames, 4);
    let out = dir.join("rhai_out");
    let (engine, docs) = ssod::script::new_engine();
    assert!(docs.iter().any(|d| d.name == "pretrain_masked"));
    let script = format!(
        r#"
        let m = yolox("s", #{{ classes: 1, width: 0.125 }});
        let r = pretrain_masked(m, "{frames}", #{{ epochs: 2, batch_size: 2, image_size: [64, 64],
            decoder_width: 8, crop_scale: (), workers: 1, out: "{out}", health: #{{ samples: 4 }} }});
        [r.loss.len(), r.checkpoint, r.health.effective_rank, r.steps]
        "#,
        frames = frames.display(),
        out = out.display()
    );
    let v: rhai::Array = engine.eval(&script).unwrap();
    assert_eq!(v[0].as_int().unwrap(), 2);
    assert_eq!(v[3].as_int().unwrap(), 4);
    let ckpt = PathBuf::from(v[1].to_string());
    assert_eq!(ckpt, out.join("masked_last.safetensors"));
    assert!(v[2].as_float().unwrap() > 0.0);
    for f in ["epochs.csv", "loss.png", "pretrain_state.safetensors"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out.join("epochs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let fresh = tiny_model(0.125, false);
    assert!(load_backbone(&fresh, &ckpt).unwrap().loaded > 50);

    let bin = env!("CARGO_BIN_EXE_ssod");
    let run = |cfg: &str, name: &str| {
        let path = dir.join(name);
        std::fs::write(&path, cfg).unwrap();
        std::process::Command::new(bin)
            .args(["pretrain", "masked", "--model", "yolox-nano", "--config"])
            .arg(&path)
            .arg("--data")
            .arg(&frames)
            .arg("--out")
            .arg(dir.join("cli_out"))
            .output()
            .unwrap()
    };
    let ok = run(
        r#"{"epochs": 1, "batch_size": 2, "image_size": [64, 64], "decoder_width": 8,
            "health": false}"#,
        "good.json",
    );
    assert!(
        ok.status.success(),
        "{} {}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(dir.join("cli_out/masked_last.safetensors").is_file());
    let bad = run(r#"{"mask_ration": 0.5}"#, "bad.json");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("mask_ration") && stderr.contains("bad.json"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
