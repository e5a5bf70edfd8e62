//! `ssod bench train` from the command line: bad arguments are refused with a message naming
//! them (never a panic), and a tiny run prints its `--json` object.

use std::process::Command;

fn ssod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(args)
        .output()
        .expect("run ssod")
}

fn bench_train(args: &[&str]) -> std::process::Output {
    ssod(&[&["bench", "train"], args].concat())
}

#[test]
fn bad_sizes_and_batches_are_refused_with_a_reason() {
    for (args, expected) in [
        (&["--size", "33"][..], "multiple of 32"),
        (&["--batch", "0"][..], "--batch"),
        (
            &["--model", "yolox-nano", "--size", "32", "--batch", "1"][..],
            "one value per channel",
        ),
        (&["--model", "yolox-q"][..], "unknown YOLOX variant"),
        // A GPU conv algorithm on the CPU is refused, not ignored.
        (
            &[
                "--model",
                "yolox-nano",
                "--size",
                "64",
                "--conv",
                "implicit",
            ][..],
            "--conv",
        ),
    ] {
        let out = bench_train(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("internal error"), "{args:?}: {stderr}");
    }
}

/// One step of YOLOX-nano at 64 px, batch 2, with `extra` arguments: the JSON object printed.
fn tiny_run_json(extra: &[&str]) -> serde_json::Value {
    let base = [
        "--model",
        "yolox-nano",
        "--size",
        "64",
        "--batch",
        "2",
        "--steps",
        "1",
        "--json",
    ];
    let out = bench_train(&[&base[..], extra].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON object")
}

/// images/s is the batch over the mean step time (`ms_per_step.total`), which is positive.
fn assert_rate_matches_step_time(v: &serde_json::Value) {
    let ips = v["images_per_s"].as_f64().expect("images_per_s");
    let total_ms = v["ms_per_step"]["total"]
        .as_f64()
        .expect("ms_per_step.total");
    assert!(total_ms > 0.0, "{v}");
    let want = 2.0 * 1000.0 / total_ms;
    assert!(
        (ips - want).abs() <= 1e-9 * want,
        "{ips} images/s vs {want}: {v}"
    );
}

#[test]
fn a_tiny_run_prints_images_per_second_and_peak_memory_as_json() {
    let v = tiny_run_json(&[]);
    assert_rate_matches_step_time(&v);
    // The stages are timed one after another within the step.
    let ms = |k: &str| {
        v["ms_per_step"][k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {v}"))
    };
    let stages: f64 = ["forward", "assign_and_loss", "backward", "optimizer", "ema"]
        .iter()
        .map(|k| ms(k))
        .sum();
    assert!(
        stages <= ms("total") * 1.001 && stages >= 0.5 * ms("total"),
        "stages {stages} ms vs total: {v}"
    );
    // The parameter count is the model's, and the peak memory holds at least its weights,
    // gradients, momentum and EMA copy in f32.
    let model =
        ssod::models::YoloX::new(ssod::models::YoloXConfig::variant("yolox-nano", 1).unwrap())
            .unwrap();
    let params: usize = model
        .store
        .parameters()
        .iter()
        .map(|p| p.tensor.numel())
        .sum();
    assert_eq!(v["params"].as_u64(), Some(params as u64), "{v}");
    let mem = v["peak_mem_mb"].as_f64().expect("peak_mem_mb");
    let floor = 4.0 * 4.0 * params as f64 / (1024.0 * 1024.0);
    assert!(mem >= floor, "peak memory {mem} MB below {floor} MB: {v}");
    assert_eq!(v["stage_times"], serde_json::json!(true), "{v}");
}

/// `--no-stage-times` runs the steps as training does (no GPU wait after each stage) and says so.
#[test]
fn no_stage_times_is_reported_in_the_json() {
    let v = tiny_run_json(&["--no-stage-times"]);
    assert_eq!(v["stage_times"], serde_json::json!(false), "{v}");
    assert_rate_matches_step_time(&v);
}

/// `ssod bench conv` traces the model's convs: the calls it counts are the model's conv weights
/// (each runs once per forward), all but the stem need an input gradient, its per-step total is
/// the sum of its rows, and it refuses to overwrite its JSON file.
#[test]
fn bench_conv_covers_every_conv_of_the_model_once() {
    let dir = std::env::temp_dir().join(format!("ssod-bench-conv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("nano.json");
    let _ = std::fs::remove_file(&json);
    let args = [
        "bench",
        "conv",
        "--model",
        "yolox-nano",
        "--size",
        "64",
        "--batch",
        "2",
        "--reps",
        "1",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = ssod(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).expect("JSON");
    let layers = v["layers"].as_array().expect("layers");
    let calls: u64 = layers.iter().map(|l| l["calls"].as_u64().unwrap()).sum();
    let model =
        ssod::models::YoloX::new(ssod::models::YoloXConfig::variant("yolox-nano", 1).unwrap())
            .unwrap();
    let conv_weights = model
        .store
        .parameters()
        .iter()
        .filter(|p| p.tensor.dims().len() == 4)
        .count() as u64;
    assert_eq!(calls, conv_weights, "{stdout}");
    // Distinct geometries: no two rows alike, every row at the requested batch.
    for (i, a) in layers.iter().enumerate() {
        assert_eq!(a["batch"], 2);
        for b in &layers[i + 1..] {
            let key = |l: &serde_json::Value| {
                [
                    "in_channels",
                    "in_h",
                    "out_channels",
                    "kernel",
                    "stride",
                    "groups",
                ]
                .map(|k| l[k].as_u64().unwrap())
            };
            assert_ne!(key(a), key(b), "duplicate layer rows");
        }
    }
    // Only the stem reads the images: every other call needs its input gradient.
    let with_dx: u64 = layers
        .iter()
        .map(|l| l["input_grad_calls"].as_u64().unwrap())
        .sum();
    assert_eq!(with_dx, calls - 1, "{stdout}");
    assert_eq!(layers[0]["input_grad_calls"], 0, "{stdout}");
    let ms = |l: &serde_json::Value, k: &str| l[k].as_f64().unwrap();
    let step_ms: f64 = layers
        .iter()
        .map(|l| {
            ms(l, "calls") * (ms(l, "ms_fwd") + ms(l, "ms_bwd_weight"))
                + ms(l, "input_grad_calls") * ms(l, "ms_bwd_input")
        })
        .sum();
    let printed: f64 = stdout
        .rsplit("total ")
        .next()
        .and_then(|t| t.trim().trim_end_matches("ms").trim().parse().ok())
        .expect("a per-step total");
    assert!(
        (printed - step_ms).abs() <= 0.05 + 1e-3 * step_ms,
        "{printed} vs {step_ms}"
    );

    let again = ssod(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not overwriting"));
    // The GPU's conv algorithms are no CPU option: an error naming the flag, not ignored.
    // (The run's own arguments without its --json, so the flag is the only reason to refuse.)
    let cpu_algo = ssod(&[&args[..10], &["--conv", "both"][..]].concat());
    assert_eq!(cpu_algo.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&cpu_algo.stderr).contains("--conv"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--data` feeds the steps from the real loader over a generated FloW-like folder: the JSON
/// reports the loader's rate alone beside the end-to-end rate, and a folder without labels is
/// refused naming it.
#[test]
fn bench_train_with_data_runs_the_loader_beside_the_steps() {
    let dir = std::env::temp_dir().join(format!("ssod_bench_data_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let synth = dir.join("synth");
    let out = ssod(&[
        "synth",
        "--out",
        synth.to_str().unwrap(),
        "--train",
        "6",
        "--test",
        "0",
        "--size",
        "160x96",
        "--videos",
        "0",
        "--seed",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = tiny_run_json(&["--data", synth.to_str().unwrap(), "--workers", "2"]);
    assert_rate_matches_step_time(&v);
    let loader = v["loader_images_per_s"]
        .as_f64()
        .expect("loader_images_per_s");
    assert!(loader > 0.0, "{v}");
    assert_eq!(v["workers"].as_u64(), Some(2), "{v}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = bench_train(&[
        "--model",
        "yolox-nano",
        "--size",
        "64",
        "--data",
        empty.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("labels.txt"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `ssod bench pretrain` runs both methods through the loader (random images, or a crops folder
/// with `--data`) and prints its JSON; bad arguments are refused naming them.
#[test]
fn bench_pretrain_reports_training_and_loader_rates() {
    let base = [
        "bench",
        "pretrain",
        "--model",
        "yolox-nano",
        "--steps",
        "1",
        "--json",
    ];
    for extra in [
        &["--method", "center", "--size", "64", "--batch", "4"][..],
        &[
            "--method", "ssl", "--size", "64", "--batch", "2", "--frame", "320x192",
        ][..],
    ] {
        let out = ssod(&[&base[..], extra].concat());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value =
            serde_json::from_str(stdout.trim().lines().last().unwrap()).unwrap();
        for key in ["train_per_s", "loader_per_s"] {
            assert!(v[key].as_f64().is_some_and(|r| r > 0.0), "{key}: {v}");
        }
        // Center: 4 crops per step; SSL: 2 frames × (1 anchor + 4 positives + 4 negatives).
        let want = if extra[1] == "center" { 4 } else { 18 };
        assert_eq!(v["per_step"].as_u64(), Some(want), "{v}");
    }
    for (args, expected) in [
        (&["--method", "moco"][..], "--method"),
        (&["--size", "33"][..], "--size"),
        (&["--method", "ssl", "--loss", "triplet"][..], "--loss"),
        (&["--method", "ssl", "--frame", "640"][..], "--frame"),
    ] {
        let out = ssod(&[&["bench", "pretrain", "--model", "yolox-nano"][..], args].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
