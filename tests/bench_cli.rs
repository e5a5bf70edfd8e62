//! `ssod bench train` from the command line: bad arguments are refused with a message naming
//! them (never a panic), and a tiny run prints the JSON object the issue asks for.

use std::process::Command;

fn bench_train(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(["bench", "train"])
        .args(args)
        .output()
        .expect("run ssod")
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
    ] {
        let out = bench_train(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("internal error"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_tiny_run_prints_images_per_second_and_peak_memory_as_json() {
    let out = bench_train(&[
        "--model",
        "yolox-nano",
        "--size",
        "64",
        "--batch",
        "2",
        "--steps",
        "1",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let ips = v["images_per_s"].as_f64().expect("images_per_s");
    let mem = v["peak_mem_mb"].as_f64().expect("peak_mem_mb");
    assert!(ips > 0.0 && ips.is_finite(), "{v}");
    assert!(mem > 0.0, "{v}");
}
