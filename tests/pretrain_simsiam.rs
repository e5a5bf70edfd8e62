//! SimSiam on generated videos: the loss falls on two seeds; with both views cut from one region
//! of the frame, a k-NN probe beats the untrained backbone on four seeds; the run writes its
//! files with the health columns; a run resumed after 2 of 3 epochs ends bit for bit where a
//! straight 3-epoch run ends; bad inputs are errors naming them.

mod ssl_support;

use ssl_support::*;
use ssod::pretrain::ssl::{pretrain_simsiam, SimSiamConfig, SslCommon};
use ssod::pretrain::{parse_config, FrameSet};
use ssod::tensor::safetensors_io::read_safetensors;

fn frame_set(frames: &[Frame]) -> FrameSet {
    FrameSet::from_images(frames.iter().map(|f| f.image.clone()).collect())
}

fn config(seed: u64, epochs: usize) -> SimSiamConfig {
    let mut cfg = SimSiamConfig::default();
    cfg.common = SslCommon {
        seed,
        epochs,
        batch_size: 16,
        lr: 2e-3,
        image_size: [64, 64],
        workers: 2,
        health: Some(ssod::pretrain::HealthConfig {
            samples: 16,
            ..Default::default()
        }),
        ..cfg.common
    };
    cfg
}

/// Measured: the mean loss of the last two epochs is ~0.4–0.5 below the first epoch's on both
/// seeds (0.006 → −0.489, −0.061 → −0.448), the negative cosine heading to −1.
#[test]
fn loss_falls_on_two_seeds() {
    let train = frame_set(&videos(8, 8, 1));
    for seed in [1u64, 2] {
        let model = tiny_model(seed);
        model.store.set_bn_momentum(Some(0.3));
        let report = pretrain_simsiam(&model, &train, &config(seed, 10)).unwrap();
        let losses: Vec<f64> = report.epochs.iter().map(|e| e.loss).collect();
        let tail = losses[losses.len() - 2..].iter().sum::<f64>() / 2.0;
        assert!(
            tail < losses[0] - 0.2,
            "seed {seed}: loss did not fall: {losses:?}"
        );
        assert!(
            losses.iter().all(|l| (-1.0..=1.0).contains(l)),
            "−cos is in [−1, 1]"
        );
        let h = report.health.as_ref().expect("health of the last epoch");
        assert!(h.effective_rank >= 1.0 && h.effective_rank <= 16.0 + 1e-9);
        assert!(report
            .epochs
            .iter()
            .all(|e| e.health.is_some() && e.images_seen == 2 * 64));
    }
}

/// The shared probe comparison (tests/ssl_support) at lr 1e-3, 30 epochs, both views cut from
/// one region of 0.1 to 0.3 of the frame (`views.pair_region_scale`). Measured, k-NN untrained →
/// trained on seeds 1-4: 0.647 → 0.743, 0.807 → 0.887, 0.767 → 0.812, 0.752 → 0.854 (linear
/// probe above too). The setting was chosen on these seeds; on seeds 5-8, held out, it gave
/// 0.682 → 0.803, 0.677 → 0.731, 0.678 → 0.754, 0.635 → 0.865. With SimSiam's independent crops
/// it does not hold (30 epochs: 0.673 and 0.711 on seeds 3 and 4). A check of this generator
/// and setting: on a variant whose glints and ripples do not identify the video it falls below
/// on two seeds (docs/ssl-methods.md, "How far the SimSiam result carries").
#[test]
fn simsiam_beats_random_init() {
    let (frames, crops) = probe_data(8);
    let train = frame_set(&frames);
    assert_beats_random_init("simsiam", &frames, &crops, |model, seed| {
        let mut cfg = config(seed, 30);
        cfg.common.lr = 1e-3;
        cfg.common.health = None;
        cfg.method.views.pair_region_scale = Some([0.1, 0.3]);
        pretrain_simsiam(model, &train, &cfg).unwrap()
    });
}

/// Every tensor of a safetensors file as bits.
fn tensor_bits(path: &std::path::Path) -> Vec<(String, Vec<u32>)> {
    let file = read_safetensors(path).unwrap();
    let mut out: Vec<(String, Vec<u32>)> = file
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.to_vec().iter().map(|v| v.to_bits()).collect()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn resumed_run_matches_a_straight_run_and_writes_its_files() {
    let dir = std::env::temp_dir().join(format!("ssod_simsiam_resume_{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let train = frame_set(&videos(3, 6, 4));
    let run = |out: &str, epochs: usize, resume: bool| {
        let mut cfg = config(3, epochs);
        cfg.common.batch_size = 8;
        cfg.common.max_steps_per_epoch = Some(2);
        // Raising `epochs` on resume changes a cosine schedule's length: constant lr here (the
        // killed-run test in pretrain_resume.rs covers the cosine schedule).
        cfg.common.schedule = ssod::pretrain::PretrainSchedule::Constant;
        cfg.common.out = Some(dir.join(out));
        cfg.common.resume = resume;
        let model = tiny_model(3);
        pretrain_simsiam(&model, &train, &cfg).unwrap()
    };
    let straight = run("straight", 3, false);
    run("parts", 2, false);
    // A fresh run refuses the folder; the resumed one continues it.
    let mut cfg = config(3, 3);
    cfg.common.out = Some(dir.join("parts"));
    let err = pretrain_simsiam(&tiny_model(3), &train, &cfg).unwrap_err();
    assert!(err.to_string().contains("already holds"), "{err}");
    let resumed = run("parts", 3, true);
    let losses = |r: &ssod::pretrain::PretrainReport| -> Vec<u64> {
        r.epochs.iter().map(|e| e.loss.to_bits()).collect()
    };
    assert_eq!(losses(&straight), losses(&resumed));
    for file in ["pretrain_state.safetensors", "simsiam_last.safetensors"] {
        assert!(
            tensor_bits(&dir.join("straight").join(file))
                == tensor_bits(&dir.join("parts").join(file)),
            "{file} differs between the straight and the resumed run"
        );
    }
    let csv = std::fs::read_to_string(dir.join("parts/epochs.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("epoch,loss,seconds,images_seen,health_std_mean,"),
        "{header}"
    );
    assert!(header.contains("health_effective_rank") && header.contains("health_collapsed"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(
        rows.len(),
        3,
        "one row per epoch, the resumed ones included"
    );
    // 2 steps of 8 images, two views each.
    assert!(
        rows[2].starts_with("3,") && rows[2].split(',').nth(3) == Some("32"),
        "{}",
        rows[2]
    );
    let png = std::fs::read(dir.join("parts/loss.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_are_errors_naming_them() {
    let err = parse_config::<SimSiamConfig>(r#"{"epochs": 2, "proj_dimm": 8}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("proj_dimm") && err.contains("cfg.json"),
        "{err}"
    );
    let err = parse_config::<SimSiamConfig>(r#"{"health": {"samplez": 3}}"#, "cfg.json")
        .unwrap_err()
        .to_string();
    assert!(err.contains("samplez"), "{err}");
    let missing = std::env::temp_dir().join("ssod_no_such_frames_folder");
    let err = FrameSet::load(&missing).err().unwrap().to_string();
    assert!(err.contains("ssod_no_such_frames_folder"), "{err}");
    let mut cfg = config(0, 1);
    cfg.common.image_size = [60, 64];
    let err = pretrain_simsiam(&tiny_model(0), &frame_set(&videos(1, 2, 0)), &cfg)
        .unwrap_err()
        .to_string();
    assert!(err.contains("image_size"), "{err}");
}
