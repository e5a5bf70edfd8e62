//! Pretraining keeps its state after every epoch and resumes bit for bit: a center-loss run and
//! a patch-SSL run (both with a cosine schedule, so the resumed steps must continue the same
//! schedule and random stream) killed with SIGKILL during a later epoch and resumed with
//! `resume: true` end with the same weights, head, optimiser state and per-epoch report as runs
//! that were never stopped. A changed config is refused on resume; a fresh run refuses a folder
//! that holds a state.

mod notebook_support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use notebook_support::*;
use ssod::tensor::safetensors_io::read_safetensors;

const EPOCHS: usize = 6;

/// `{METHOD}` is `center` or `ssl`; `{OUT}` the run's folder; `{EXTRA}` more config entries.
const TEMPLATE: &str = r#"// %% Data
let d = synth(#{ out: "data", train: 6, test: 2, size: "320x192", videos: 1,
                 frames_per_video: 8, seed: 3 });
let c = crops(d.train, "crops", #{ base_size: 64, seed: 100 });
// %% Pretrain
let m = yolox("nano", #{ classes: 1, seed: 4, width: 0.125 });
let r = if "{METHOD}" == "center" {
    m.pretrain_center_loss(c.dir, #{ epochs: {EPOCHS}, batch_size: 4, input_size: 64,
        head: "gap", schedule: "cos", lr: 0.003, seed: 9, out: "{OUT}" {EXTRA} })
} else {
    m.pretrain_patch_ssl(d.frames, #{ epochs: {EPOCHS}, batch_size: 2, frame_size: [320, 192],
        patch_size: 64, negative_sampler: "distance", negative_min_distance: 64,
        schedule: "cos", seed: 9, out: "{OUT}" {EXTRA} })
};
print(`losses=${r.loss}`);
"#;

fn script(method: &str, out: &Path, epochs: usize, extra: &str) -> String {
    TEMPLATE
        .replace("{METHOD}", method)
        .replace("{OUT}", &out.display().to_string())
        .replace("{EPOCHS}", &epochs.to_string())
        .replace("{EXTRA}", extra)
}

fn epochs_done(run: &Path) -> usize {
    read_safetensors(&run.join("pretrain_state.safetensors"))
        .ok()
        .and_then(|f| f.metadata.get("epochs_done").and_then(|e| e.parse().ok()))
        .unwrap_or(0)
}

fn losses(out: &Out) -> String {
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("losses="))
        .unwrap_or_else(|| panic!("no losses in:\n{}\n{}", out.stdout, out.stderr))
        .to_string()
}

fn killed_and_resumed_equals_uninterrupted(method: &str, checkpoint: &str) {
    let dir = temp_dir(&format!("pretrain_resume_{method}"));
    let whole = dir.join("whole");
    let out = finish(spawn_script(&dir, &script(method, &whole, EPOCHS, "")));
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    let whole_losses = losses(&out);

    let parts = dir.join("parts");
    let mut child = spawn_script(&dir, &script(method, &parts, EPOCHS, ""));
    let start = Instant::now();
    while epochs_done(&parts) < 2 {
        if child.try_wait().unwrap().is_some() {
            panic!("the run ended before epoch 2:\n{}", finish(child).stderr);
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no state");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    assert!(!finish(child).ok);
    let stopped_at = epochs_done(&parts);
    assert!(stopped_at < EPOCHS, "the run was not interrupted");

    // A fresh run refuses the folder; a changed config is refused on resume.
    let fresh = finish(spawn_script(&dir, &script(method, &parts, EPOCHS, "")));
    assert!(
        fresh.stderr.contains("already holds a pretraining run"),
        "{}",
        fresh.stderr
    );
    let changed = finish(spawn_script(
        &dir,
        &script(method, &parts, EPOCHS, ", resume: true, weight_decay: 0.01"),
    ));
    assert!(
        changed.stderr.contains("`weight_decay` (state"),
        "{}",
        changed.stderr
    );

    let out = finish(spawn_script(
        &dir,
        &script(method, &parts, EPOCHS, ", resume: true"),
    ));
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(&format!("after epoch {stopped_at}")),
        "{}",
        out.stdout
    );
    assert_eq!(losses(&out), whole_losses, "per-epoch losses differ");
    for file in ["pretrain_state.safetensors", checkpoint] {
        assert!(
            tensor_bits(&whole.join(file)) == tensor_bits(&parts.join(file)),
            "{method}: {file} differs between the uninterrupted and the resumed run"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn center_loss_resumes_bit_identical() {
    killed_and_resumed_equals_uninterrupted("center", "center_loss_best.safetensors");
}

#[test]
fn patch_ssl_resumes_bit_identical() {
    killed_and_resumed_equals_uninterrupted("ssl", "patch_ssl_last.safetensors");
}
