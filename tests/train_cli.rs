//! `ssod train` end to end on a tiny generated set: a FloW folder and a COCO json as --data, the
//! run folder's files (metrics.csv with one row per epoch, results.png, pr_curve.png, model-only
//! weights that `ssod detect` takes), --resume extending a run, and errors that name the flag.

mod notebook_support;

use std::path::Path;

use notebook_support::*;
use ssod::eval::metrics_csv::read_metrics_csv;

fn synth(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let out = ssod(
        dir,
        &[
            "synth",
            "--out",
            data.to_str().unwrap(),
            "--train",
            "8",
            "--test",
            "4",
            "--size",
            "192x128",
            "--videos",
            "1",
            "--frames-per-video",
            "2",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    data
}

/// `ssod train` of a nano at 96 px (unless `extra` gives --size), batch 4, into `run`.
fn train(dir: &Path, data: &Path, run: &Path, extra: &[&str]) -> Out {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "yolox-nano",
        "--batch",
        "4",
        "--out",
        run.to_str().unwrap(),
        "--workers",
        "1",
    ];
    if !extra.contains(&"--size") {
        args.extend(["--size", "96"]);
    }
    args.extend_from_slice(extra);
    ssod(dir, &args)
}

#[test]
fn train_from_the_command_line() {
    let dir = temp_dir("train_cli");
    let data = synth(&dir);
    // A recipe key through --config: evaluate every epoch, fixed input size.
    let cfg = dir.join("recipe.json");
    std::fs::write(
        &cfg,
        r#"{"eval_interval": 1, "warmup_epochs": 1, "no_aug_epochs": 1, "random_size": [3, 3]}"#,
    )
    .unwrap();
    let run = dir.join("run");
    let out = train(
        &dir,
        &data,
        &run,
        &["--epochs", "2", "--config", cfg.to_str().unwrap()],
    );
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    // One line per epoch with the loss parts and lr; the final COCO table.
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("epoch "))
            .count(),
        2,
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("lr ") && out.stdout.contains("obj "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("Average Precision"), "{}", out.stdout);
    // No progress lines off a terminal.
    assert!(!out.stderr.contains("evaluation"), "{}", out.stderr);
    for file in [
        "last.ckpt.safetensors",
        "last.safetensors",
        "best.safetensors",
        "epoch_2.safetensors",
        "results.png",
        "pr_curve.png",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let table = read_metrics_csv(&run.join("metrics.csv")).unwrap();
    assert_eq!(table.column("epoch").unwrap(), vec![1.0, 2.0]);

    // --resume with more epochs extends the run.
    let out = train(
        &dir,
        &data,
        &run,
        &[
            "--epochs",
            "3",
            "--config",
            cfg.to_str().unwrap(),
            "--resume",
        ],
    );
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("after epoch 2"), "{}", out.stdout);
    let table = read_metrics_csv(&run.join("metrics.csv")).unwrap();
    assert_eq!(table.column("epoch").unwrap(), vec![1.0, 2.0, 3.0]);
    // Without --resume the folder is refused.
    let out = train(
        &dir,
        &data,
        &run,
        &["--epochs", "3", "--config", cfg.to_str().unwrap()],
    );
    assert!(
        !out.ok && out.stderr.contains("already holds a training run"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );

    // The weights serve `ssod detect` as they are.
    let detect = ssod(
        &dir,
        &[
            "detect",
            "--weights",
            run.join("best.safetensors").to_str().unwrap(),
            "--model",
            "yolox-nano",
            "--classes",
            "1",
            "--input",
            data.join("test/images").to_str().unwrap(),
            "--out",
            dir.join("detections").to_str().unwrap(),
            "--size",
            "96",
        ],
    );
    assert!(detect.ok, "{}", detect.stderr);

    // A COCO json as --data (images next to it), validated on another json.
    let coco_run = dir.join("coco_run");
    let out = ssod(
        &dir,
        &[
            "train",
            "--data",
            data.join("train.json").to_str().unwrap(),
            "--images",
            data.join("training/images").to_str().unwrap(),
            "--model",
            "yolox-nano",
            "--epochs",
            "1",
            "--batch",
            "4",
            "--size",
            "96",
            "--out",
            coco_run.to_str().unwrap(),
            "--workers",
            "1",
        ],
    );
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(coco_run.join("last.safetensors").is_file());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn train_errors_name_the_flag() {
    let dir = temp_dir("train_cli_errors");
    let data = synth(&dir);
    let run = dir.join("run");
    let cases: [(&[&str], &str); 3] = [
        (&["--model", "yolox-q"], "--model"),
        (&["--size", "100"], "input_size"),
        (&["--resume"], "holds no training state"),
    ];
    for (extra, expected) in cases {
        let out = train(&dir, &data, &run, extra);
        assert!(!out.ok);
        assert!(out.stderr.contains(expected), "{extra:?}: {}", out.stderr);
    }
    let out = train(&dir, &dir.join("nothing"), &run, &[]);
    assert!(!out.ok && out.stderr.contains("nothing"), "{}", out.stderr);
    std::fs::remove_dir_all(&dir).ok();
}
