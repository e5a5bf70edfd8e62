//! A training run's files and resume, end to end through `ssod run`:
//! - the model a run hands back holds the evaluated (EMA) weights: `evaluate` on it gives the
//!   run's final metrics to the last digit, and `last.safetensors` holds the same weights;
//! - `best.safetensors` is the best evaluation's, `epoch_N.safetensors` each evaluation's;
//!   `load` takes a training state's EMA weights;
//! - a run killed (SIGKILL) and interrupted (SIGINT), each time resumed with `resume: true`,
//!   ends with the same training state, weights, best weights, metrics.csv (timing column
//!   aside) and simota.csv, bit for bit, as a run that was never stopped;
//! - a changed recipe is refused on resume unless overridden; `max_epoch` extends a finished
//!   run; a fresh run refuses a folder that holds one.

mod notebook_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use notebook_support::*;
use ssod::train::read_checkpoint_meta;

const MAX_EPOCH: usize = 5;

/// A tiny run: 12 generated images, a narrow nano, EMA on, evaluated every epoch, mosaic and
/// multiscale as the recipe has them, the last two epochs without augmentation. `{OUT}`,
/// `{EPOCHS}` and `{EXTRA}` (more config entries) are filled in by [`script`].
const TEMPLATE: &str = r#"// %% Run
let d = synth(#{ out: "data", train: 12, test: 4, size: "192x128", videos: 1,
                 frames_per_video: 2, seed: 5 });
let m = yolox("nano", #{ classes: 1, seed: 2, width: 0.125 });
let run = train_detector(m, d.train, d.test, #{
    max_epoch: {EPOCHS}, warmup_epochs: 1, no_aug_epochs: 1, batch_size: 4,
    basic_lr_per_img: 0.02 / 64.0, input_size: [96, 96], test_size: [96, 96],
    random_size: [2, 4], eval_interval: 1, ema_tau: 4.0, seed: 7, workers: 1,
    verbose: false, out: "{OUT}" {EXTRA}
});
print(`final AP=${run.metrics.AP} AP50=${run.metrics.AP50}`);
let again = evaluate(m, d.test, #{ size: 96 });
print(`again AP=${again.AP} AP50=${again.AP50}`);
print(`best=${run.best} best_epoch=${run.best_epoch}`);
m.save("{OUT}.after{N}.safetensors");
"#;

/// A script for one `ssod run`; its model is saved afterwards as `<out>.after<N>.safetensors`,
/// N counting the scripts made.
fn script(out: &Path, epochs: usize, extra: &str) -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    TEMPLATE
        .replace("{N}", &n.to_string())
        .replace("{OUT}", &out.display().to_string())
        .replace("{EPOCHS}", &epochs.to_string())
        .replace("{EXTRA}", extra)
}

/// Epochs recorded in the run folder's training state (0 when there is none yet).
fn epochs_done(run: &Path) -> usize {
    read_checkpoint_meta(&run.join("last.ckpt.safetensors")).map_or(0, |m| m.progress.epoch)
}

/// Wait until the training state records at least `epochs` epochs, then send `signal`.
fn stop_after(mut child: Child, run: &Path, epochs: usize, signal: &str) -> Out {
    let start = Instant::now();
    while epochs_done(run) < epochs {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the run ended ({status}) before epoch {epochs}:\n{}",
                finish(child).stderr
            );
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    let killed = Command::new("kill").args([signal, &pid]).status().unwrap();
    assert!(killed.success());
    finish(child)
}

/// metrics.csv without its timing columns.
fn metrics_rows(run: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let timing: Vec<usize> = ["images_per_s", "time_s"]
        .iter()
        .map(|name| header.iter().position(|c| c == name).unwrap())
        .collect();
    text.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| !timing.contains(i))
                .map(|(_, c)| c)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

fn line_value<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{stdout}"))
}

fn assert_same_run(a: &Path, b: &Path) {
    for file in [
        "last.ckpt.safetensors",
        "last.safetensors",
        "best.safetensors",
    ] {
        assert!(
            tensor_bits(&a.join(file)) == tensor_bits(&b.join(file)),
            "{file} differs between the uninterrupted and the resumed run"
        );
    }
    for n in 1..=MAX_EPOCH {
        let file = format!("epoch_{n}.safetensors");
        assert!(
            tensor_bits(&a.join(&file)) == tensor_bits(&b.join(&file)),
            "{file}"
        );
    }
    let (ma, mb) = (
        read_checkpoint_meta(&a.join("last.ckpt.safetensors")).unwrap(),
        read_checkpoint_meta(&b.join("last.ckpt.safetensors")).unwrap(),
    );
    assert_eq!(ma, mb);
    assert_eq!(metrics_rows(a), metrics_rows(b));
    assert_eq!(metrics_rows(a).len(), MAX_EPOCH + 1);
    // The label-assignment counts too: a header and 5 size buckets per epoch.
    let simota = |run: &Path| std::fs::read_to_string(run.join("simota.csv")).unwrap();
    assert_eq!(simota(a), simota(b));
    assert_eq!(simota(a).lines().count(), 5 * MAX_EPOCH + 1);
}

#[test]
fn resumed_runs_end_bit_identical_and_the_model_holds_the_evaluated_weights() {
    let dir = temp_dir("train_resume");
    let whole: PathBuf = dir.join("whole");
    let out = finish(spawn_script(&dir, &script(&whole, MAX_EPOCH, "")));
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);

    // The model afterwards is the evaluated one: the same metrics, to the last digit.
    let final_ap = line_value(&out.stdout, "final ");
    assert_eq!(
        final_ap,
        line_value(&out.stdout, "again "),
        "{}",
        out.stdout
    );
    // last.safetensors = the training state's EMA weights (model-only, official names), and
    // the EMA differs from the raw weights (so the test above can tell them apart).
    let state = tensor_bits(&whole.join("last.ckpt.safetensors"));
    let last = tensor_bits(&whole.join("last.safetensors"));
    let mut raw_differs = false;
    for (name, values) in &last {
        assert_eq!(Some(values), state.get(&format!("ema.{name}")), "{name}");
        raw_differs |= state.get(&format!("model.{name}")) != Some(values);
    }
    assert!(raw_differs, "EMA and raw weights are identical");
    let saved = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("whole.after"))
        .expect("the script saved its model");
    let after = tensor_bits(&saved);
    assert!(after == last, "the model is not the EMA");
    assert!(last.keys().any(|k| k == "head.cls_preds.0.weight"));
    // The best epoch's weights are that epoch's history weights.
    let best_epoch: usize = line_value(&out.stdout, "best=")
        .rsplit("best_epoch=")
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        tensor_bits(&whole.join("best.safetensors"))
            == tensor_bits(&whole.join(format!("epoch_{best_epoch}.safetensors")))
    );

    // Killed during epoch 2, resumed; interrupted (Ctrl-C) during epoch 4, resumed.
    let parts = dir.join("parts");
    let out = stop_after(
        spawn_script(&dir, &script(&parts, MAX_EPOCH, "")),
        &parts,
        1,
        "-KILL",
    );
    assert!(!out.ok);
    let resume = ", resume: true";
    let out = stop_after(
        spawn_script(&dir, &script(&parts, MAX_EPOCH, resume)),
        &parts,
        3,
        "-INT",
    );
    assert!(!out.ok, "{}", out.stdout);
    let stopped_at = epochs_done(&parts);
    assert!(stopped_at < MAX_EPOCH, "the run was not interrupted");
    let out = finish(spawn_script(&dir, &script(&parts, MAX_EPOCH, resume)));
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("after epoch {stopped_at} (iteration")),
        "{}",
        out.stdout
    );
    assert_same_run(&whole, &parts);
    assert_eq!(line_value(&out.stdout, "final "), final_ap);

    // A changed recipe is refused, naming the key; an override lets it through.
    let changed = finish(spawn_script(
        &dir,
        &script(&parts, MAX_EPOCH + 1, ", resume: true, weight_decay: 0.001"),
    ));
    assert!(!changed.ok);
    assert!(
        changed.stderr.contains("`weight_decay` (checkpoint")
            && changed.stderr.contains("resume_override"),
        "{}",
        changed.stderr
    );
    // A fresh run refuses a folder that holds a run.
    let fresh = finish(spawn_script(&dir, &script(&parts, MAX_EPOCH, "")));
    assert!(!fresh.ok);
    assert!(
        fresh.stderr.contains("already holds a training run"),
        "{}",
        fresh.stderr
    );
    // A finished run extended by one epoch, with an overridden key.
    let extended = finish(spawn_script(
        &dir,
        &script(
            &parts,
            MAX_EPOCH + 1,
            ", resume: true, weight_decay: 0.001, resume_override: [\"weight_decay\"]",
        ),
    ));
    assert!(extended.ok, "{}\n{}", extended.stdout, extended.stderr);
    assert_eq!(epochs_done(&parts), MAX_EPOCH + 1);
    assert_eq!(metrics_rows(&parts).len(), MAX_EPOCH + 2);

    // `load` takes a training state's EMA weights and says so.
    let load = format!(
        "// %% Load\nlet m = yolox(\"nano\", #{{ classes: 1, width: 0.125 }});\nprint(`n=${{m.load(\"{}\")}}`);\n",
        whole.join("last.ckpt.safetensors").display()
    );
    let out = finish(spawn_script(&dir, &load));
    assert!(out.ok, "{}", out.stderr);
    assert!(out
        .stdout
        .contains("is a training state; loaded the EMA weights"));
    assert_eq!(
        line_value(&out.stdout, "n=").parse::<usize>().unwrap(),
        last.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn resume_without_a_training_state_is_an_error() {
    let dir = temp_dir("train_resume_missing");
    let out = finish(spawn_script(
        &dir,
        &script(&dir.join("none"), 2, ", resume: true"),
    ));
    assert!(!out.ok);
    assert!(
        out.stderr.contains("holds no training state to resume"),
        "{}",
        out.stderr
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// An ablation whose one point trains a detector; the point's training is killed half way.
const ABLATION: &str = r#"// %% Data
let d = synth(#{ out: "data", train: 12, test: 4, size: "192x128", videos: 1,
                 frames_per_video: 2, seed: 5 });
// %% Ablate
let rows = ablate(#{ box_loss: ["ciou"] }, [7], |p| {
    let m = yolox("nano", #{ classes: 1, seed: 2, width: 0.125 });
    let run = train_detector(m, d.train, d.test, #{
        max_epoch: 5, warmup_epochs: 1, no_aug_epochs: 1, batch_size: 4,
        basic_lr_per_img: 0.02 / 64.0, input_size: [96, 96], test_size: [96, 96],
        random_size: [2, 4], eval_interval: 1, ema_tau: 4.0, box_loss: p.box_loss, seed: p.seed,
        workers: 1, verbose: false, out: "train"
    });
    #{ AP: run.metrics.AP, AP50: run.metrics.AP50, loss: run.history[-1].loss }
});
"#;

/// The training state of the running ablation point, in the cache's work folder.
fn point_state(dir: &Path) -> Option<PathBuf> {
    let ablate = dir.join(".ssod-cache/ablate");
    std::fs::read_dir(ablate)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "partial"))
        .map(|p| p.join("train"))
}

#[test]
fn an_interrupted_ablation_point_resumes_from_its_own_checkpoint() {
    let whole_dir = temp_dir("ablate_whole");
    std::fs::write(whole_dir.join("script.rhai"), ABLATION).unwrap();
    let whole = ssod(&whole_dir, &["run", "script.rhai"]);
    assert!(whole.ok, "{}\n{}", whole.stdout, whole.stderr);
    let expected =
        std::fs::read_to_string(run_dir(&whole_dir, &whole).join("ablation.csv")).unwrap();

    let dir = temp_dir("ablate_parts");
    std::fs::write(dir.join("script.rhai"), ABLATION).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(&dir)
        .args(["run", "script.rhai"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut child = Some(child);
    while point_state(&dir).is_none_or(|run| epochs_done(&run) < 2) {
        if let Some(status) = child.as_mut().unwrap().try_wait().unwrap() {
            panic!("the ablation ended ({status}) before its point's epoch 2");
        }
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    let child = child.take().unwrap();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .unwrap()
        .success());
    assert!(!finish(child).ok);
    let work = point_state(&dir).unwrap();
    let stopped_at = epochs_done(&work);
    assert!(stopped_at < 5, "the point was not interrupted");

    let out = ssod(&dir, &["run", "script.rhai"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("after epoch {stopped_at} (iteration")),
        "the point did not resume:\n{}",
        out.stdout
    );
    let rd = run_dir(&dir, &out);
    assert_eq!(
        std::fs::read_to_string(rd.join("ablation.csv")).unwrap(),
        expected
    );
    // The finished point's folder moved into the run folder.
    assert!(rd.join("train/best.safetensors").is_file());
    assert!(point_state(&dir).is_none(), "the work folder is left");
    std::fs::remove_dir_all(&whole_dir).ok();
    std::fs::remove_dir_all(&dir).ok();
}
