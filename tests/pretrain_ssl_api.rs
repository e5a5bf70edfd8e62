//! The Rhai and CLI entry points of the self-supervised methods, the k-NN probe and the health
//! check: registered, options passed through (the Rhai report equals the Rust run's, bit for
//! bit), and bad input named.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};
use ssod::models::{YoloX, YoloXConfig};
use ssod::pretrain::ssl::{pretrain_simsiam, SimSiamConfig, SslCommon};
use ssod::pretrain::FrameSet;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ssod_ssl_api_{tag}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Frames of two "videos" (`ssod frames` names), 96×64, a bright square drifting over a
/// gradient.
fn write_frames(dir: &Path) {
    for v in 0..2u32 {
        let sub = dir.join(format!("video_{v}"));
        std::fs::create_dir_all(&sub).unwrap();
        for t in 0..4u32 {
            let img = RgbImage::from_fn(96, 64, |x, y| {
                let inside = (x.wrapping_sub(10 + 5 * t + 30 * v)) < 12 && (20..32).contains(&y);
                if inside {
                    Rgb([230, 200, 180])
                } else {
                    Rgb([(x * 2) as u8, (60 + y + 20 * v) as u8, 90])
                }
            });
            img.save(sub.join(format!("frame_{:06}.png", t * 2)))
                .unwrap();
        }
    }
}

fn rhai_model() -> YoloX {
    let mut cfg = YoloXConfig::variant("s", 1).unwrap();
    cfg.width = 0.125;
    YoloX::new(cfg).unwrap()
}

#[test]
fn rhai_functions_report_what_the_rust_functions_do() {
    let dir = temp_dir("rhai");
    let frames = dir.join("frames");
    write_frames(&frames);
    let (engine, docs) = ssod::script::new_engine();
    for f in [
        "pretrain_simsiam",
        "pretrain_temporal",
        "knn_probe",
        "embedding_health",
    ] {
        assert!(docs.iter().any(|d| d.name == f), "{f} is not registered");
    }
    let script = format!(
        r#"
        let m = yolox("s", #{{ classes: 1, width: 0.125 }});
        let r = pretrain_simsiam(m, "{frames}", #{{ epochs: 2, batch_size: 4, image_size: [64, 64],
            health: #{{ samples: 6 }} }});
        let t = pretrain_temporal(m, "{frames}", #{{ epochs: 1, batch_size: 4, image_size: [64, 64],
            gap: [1, 2], far_gap: 2, health: false }});
        let h = embedding_health(m, "{frames}", #{{ image_size: [64, 64], samples: 8 }});
        [r.loss, r.health.effective_rank, r.health.collapsed, t.loss.len(), t.health,
         h.effective_rank, h.samples, h.uniformity]
        "#,
        frames = frames.display()
    );
    let v: rhai::Array = engine.eval(&script).unwrap();
    let cfg = SimSiamConfig {
        common: SslCommon {
            epochs: 2,
            batch_size: 4,
            image_size: [64, 64],
            health: Some(ssod::pretrain::HealthConfig {
                samples: 6,
                ..Default::default()
            }),
            ..SimSiamConfig::default().common
        },
        ..SimSiamConfig::default()
    };
    let rust = pretrain_simsiam(&rhai_model(), &FrameSet::load(&frames).unwrap(), &cfg).unwrap();
    let losses: Vec<f64> = v[0]
        .clone()
        .into_array()
        .unwrap()
        .iter()
        .map(|x| x.as_float().unwrap())
        .collect();
    assert_eq!(
        losses,
        rust.epochs.iter().map(|e| e.loss).collect::<Vec<_>>()
    );
    let h = rust.health.unwrap();
    assert_eq!(v[1].as_float().unwrap(), h.effective_rank);
    assert_eq!(v[2].as_bool().unwrap(), h.collapsed);
    assert_eq!(v[3].as_int().unwrap(), 1);
    assert!(v[4].is_unit(), "health: false gives no health");
    let rank = v[5].as_float().unwrap();
    assert!((1.0..=8.0 + 1e-9).contains(&rank), "effective rank {rank}");
    assert_eq!(v[6].as_int().unwrap(), 8);
    let u = v[7].as_float().unwrap();
    assert!(
        (-4.0 - 1e-9..=1e-12).contains(&u),
        "uniformity {u} outside [-4, 0]"
    );
    // Unknown keys are named.
    let bad = format!(
        r#"let m = yolox("s", #{{ classes: 1, width: 0.125 }});
           pretrain_simsiam(m, "{}", #{{ epochz: 2 }})"#,
        frames.display()
    );
    let err = engine.eval::<rhai::Dynamic>(&bad).unwrap_err().to_string();
    assert!(err.contains("epochz"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn cli_health_runs_and_temporal_names_a_frame_without_index() {
    let dir = temp_dir("cli");
    let frames = dir.join("frames");
    write_frames(&frames);
    let cfg = dir.join("health.json");
    std::fs::write(&cfg, r#"{"image_size": [64, 64], "samples": 4}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(["pretrain", "health", "--model", "yolox-nano", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(&frames)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("effective rank"), "{stdout}");
    RgbImage::new(96, 64)
        .save(frames.join("video_0/still.png"))
        .unwrap();
    let tcfg = dir.join("temporal.json");
    std::fs::write(&tcfg, r#"{"epochs": 1, "image_size": [64, 64]}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(["pretrain", "temporal", "--model", "yolox-nano", "--config"])
        .arg(&tcfg)
        .arg("--data")
        .arg(&frames)
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("still.png") && stderr.contains("frame index"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
