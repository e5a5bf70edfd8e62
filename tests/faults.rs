//! Faults (docs/faults.md), with the real `ssod` binary:
//! - writers killed (SIGKILL) at random points: `ssod train` (training state, weights,
//!   metrics.csv) and `ssod run` (notebook cache entries, run folder files) leave every file
//!   that exists loadable, and the next run resumes from them;
//! - a read-only run folder and a write that fails part way (a file-size limit standing in for
//!   a full disk) give an error naming the file, and leave the previous files as they were;
//! - corrupt and truncated training images: an error naming the file by default, skipped and
//!   counted with `--skip-bad-images`.

mod common;
mod notebook_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{skip, Missing, Rng};
use notebook_support::*;
use ssod::atomic_file::is_temp_file;
use ssod::eval::metrics_csv::read_metrics_csv;
use ssod::eval::simota_csv::read_simota_csv;
use ssod::tensor::safetensors_io::read_safetensors;
use ssod::train::checkpoint::read_checkpoint_meta;

/// A fixed 64 px input (no multiscale), an evaluation every 3 epochs, no warm-up, one no-aug
/// epoch (so that one epoch is a valid run).
const RECIPE: &str =
    r#"{"warmup_epochs": 0, "no_aug_epochs": 1, "eval_interval": 3, "random_size": [2, 2]}"#;

fn synth(dir: &Path) -> PathBuf {
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
            "0",
            "--frames-per-video",
            "0",
        ],
    );
    assert!(out.ok, "{}", out.stderr);
    std::fs::write(dir.join("recipe.json"), RECIPE).unwrap();
    data
}

/// `ssod train` arguments: a nano at 64 px, batch 4, one worker, `epochs` epochs into `run`.
fn train_args(dir: &Path, data: &Path, run: &Path, epochs: usize, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--data",
        data.to_str().unwrap(),
        "--model",
        "yolox-nano",
        "--batch",
        "4",
        "--size",
        "64",
        "--workers",
        "1",
        "--out",
        run.to_str().unwrap(),
        "--config",
        dir.join("recipe.json").to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--epochs".into());
    args.push(epochs.to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn spawn_ssod(cwd: &Path, args: &[String], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(cwd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Let `child` run for `delay_s`, then SIGKILL it. True when it was killed (false: it had
/// already exited, successfully; a failure panics with its stderr).
fn kill_after(mut child: Child, delay_s: f64, log: &Path) -> bool {
    std::thread::sleep(Duration::from_secs_f64(delay_s));
    if let Some(status) = child.try_wait().unwrap() {
        let stderr = std::fs::read_to_string(log).unwrap_or_default();
        assert!(status.success(), "the writer failed on its own:\n{stderr}");
        return false;
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    true
}

fn does_not_load<T>(name: &str, e: impl std::fmt::Display) -> T {
    panic!("{name} does not load after a kill: {e}")
}

/// Every file of a run folder loads (temporary files a kill left are ignored); returns the
/// epochs its training state holds (0 without one).
fn check_run_folder(run: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(run) else {
        return 0;
    };
    let mut state_epoch = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if is_temp_file(&name) {
            continue;
        }
        if name == "metrics.csv" {
            let table = read_metrics_csv(&path).unwrap_or_else(|e| does_not_load(&name, e));
            for (i, row) in table.rows.iter().enumerate() {
                assert_eq!(row.len(), table.columns.len(), "{name} row {i}");
                assert_eq!(row[0], (i + 1) as f64, "{name}: epochs 1, 2, ... in order");
                for (col, v) in table.columns.iter().zip(row) {
                    let metric = col.starts_with("AP") || col.starts_with("AR");
                    assert!(metric || v.is_finite(), "{name} row {i} `{col}` is {v}");
                }
            }
        } else if name == "simota.csv" {
            // Five size buckets per epoch, every row complete, epochs in order.
            let rows = read_simota_csv(&path).unwrap_or_else(|e| does_not_load(&name, e));
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(
                    row.epoch,
                    i / 5 + 1,
                    "{name}: five rows per epoch, in order"
                );
            }
        } else if name == "last.ckpt.safetensors" {
            state_epoch = read_checkpoint_meta(&path)
                .unwrap_or_else(|e| does_not_load(&name, e))
                .progress
                .epoch;
        } else if name.ends_with(".safetensors") {
            let file = read_safetensors(&path).unwrap_or_else(|e| does_not_load(&name, e));
            assert!(!file.tensors.is_empty(), "{name} holds no tensor");
        } else if name.ends_with(".png") {
            ssod::data::image_io::read_rgb(&path).unwrap_or_else(|e| does_not_load(&name, e));
        } else {
            panic!("unexpected file {name} in the run folder");
        }
    }
    state_epoch
}

/// `ssod train` killed at 20 random points (each run resumes the folder the last one left),
/// then resumed to the end: every file loads after every kill, the state never goes back, and
/// the finished run's metrics.csv has each epoch once.
#[test]
fn a_training_run_killed_at_random_points_stays_loadable() {
    let dir = temp_dir("faults_kill_train");
    let data = synth(&dir);
    let run = dir.join("run");
    let log = dir.join("stderr.txt");
    // Long enough that at least 10 of the kills (0.1-1 s apart, 3-8 epochs each on the 2-core
    // VM) land before the run ends, however quiet the machine: at 60 epochs a quiet VM finished
    // after 9.
    const EPOCHS: usize = 150;
    let mut rng = Rng::new(21);
    let (mut kills, mut last_epoch, mut finished) = (0, 0, false);
    for _ in 0..20 {
        let resume = run.join("metrics.csv").exists() || run.join("last.ckpt.safetensors").exists();
        let extra: &[&str] = if resume { &["--resume"] } else { &[] };
        let child = spawn_ssod(&dir, &train_args(&dir, &data, &run, EPOCHS, extra), &log);
        if !kill_after(child, 0.1 + 0.9 * rng.uniform(), &log) {
            finished = true;
            break;
        }
        kills += 1;
        print!(
            "{}",
            if kills == 1 {
                "states after each kill:"
            } else {
                ""
            }
        );
        let epoch = check_run_folder(&run);
        assert!(
            epoch >= last_epoch,
            "the state went back from epoch {last_epoch} to {epoch}"
        );
        last_epoch = epoch;
        print!(" {epoch}");
        if epoch == EPOCHS {
            // Killed while it plotted, after its last state.
            finished = true;
            break;
        }
    }
    assert!(kills >= 10, "only {kills} kills landed");
    assert!(last_epoch > 0, "no kill came after a first training state");
    let temps = std::fs::read_dir(&run)
        .unwrap()
        .filter(|e| is_temp_file(e.as_ref().unwrap().file_name().to_str().unwrap()))
        .count();
    println!("\n{kills} kills, state at epoch {last_epoch}, {temps} temporary file(s) left");
    if !finished {
        let out = ssod(
            &dir,
            &train_args(&dir, &data, &run, EPOCHS, &["--resume"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    }
    assert_eq!(check_run_folder(&run), EPOCHS);
    let table = read_metrics_csv(&run.join("metrics.csv")).unwrap();
    let epochs: Vec<f64> = (1..=EPOCHS).map(|e| e as f64).collect();
    assert_eq!(table.column("epoch").unwrap(), epochs);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Three cells that each keep a model (cache objects), a tensor and a csv (cache files).
const NOTEBOOK: &str = r#"// %% One
let m1 = yolox("nano", #{ classes: 2, width: 0.125, seed: 1 });
let y1 = m1.forward(randn([1, 3, 64, 64], 1)).sum();
write_csv("one.csv", [#{ cell: 1, v: 0.5 }]);
// %% Two
let m2 = yolox("nano", #{ classes: 2, width: 0.125, seed: 2 });
let t2 = randn([64, 64], 2);
write_csv("two.csv", [#{ cell: 2, v: 1.5 }]);
// %% Three
let m3 = yolox("nano", #{ classes: 2, width: 0.125, seed: 3 });
write_csv("three.csv", [#{ cell: 3, v: 2.5 }]);
"#;

/// Every complete cache entry (one with `cell.json`) parses and has its files; every stored
/// object's content matches its name (the SHA-256 of its bytes). Returns the complete entries.
fn check_cache(cache: &Path) -> usize {
    let mut complete = 0;
    for entry in std::fs::read_dir(cache.join("cells")).into_iter().flatten() {
        let cell = entry.unwrap().path();
        // An entry being built or an old one being removed has a temporary name: the notebook
        // looks entries up by key and never reads these.
        if is_temp_file(&cell.file_name().unwrap().to_string_lossy()) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(cell.join("cell.json")) else {
            continue; // incomplete: ignored by the notebook
        };
        let record: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}/cell.json: {e}", cell.display()));
        let scope = std::fs::read_to_string(cell.join("scope.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&scope)
            .unwrap_or_else(|e| panic!("{}/scope.json: {e}", cell.display()));
        for file in record["files"].as_array().unwrap() {
            let path = cell.join("files").join(file.as_str().unwrap());
            ssod::csv_table::read_csv(&path).unwrap_or_else(|e| panic!("{e}"));
        }
        complete += 1;
    }
    for entry in std::fs::read_dir(cache.join("objects"))
        .into_iter()
        .flatten()
    {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        // A kill can leave a writer's temporary file: objects are looked up by their hash name,
        // so such a file is never read.
        if name.starts_with("tmp-") || is_temp_file(&name) {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            name.strip_suffix(".safetensors"),
            Some(ssod::digest::hash_bytes(&bytes).as_str()),
            "object {name} does not hold what its name says"
        );
    }
    complete
}

/// Every file in the notebook's run folders (`runs/script/<time>/`) is complete: the csv files
/// parse with their one row, `report.md` has the report's first line.
fn check_notebook_runs(dir: &Path) {
    for run in std::fs::read_dir(dir.join("runs/script"))
        .into_iter()
        .flatten()
    {
        let run = run.unwrap().path();
        for name in names(&run) {
            let path = run.join(&name);
            if is_temp_file(&name) {
                continue;
            } else if name.ends_with(".csv") {
                let table = ssod::csv_table::read_csv(&path).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!((table.header.len(), table.records.len()), (2, 1), "{name}");
            } else if name == "report.md" {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.starts_with("# "), "{}: {text:?}", path.display());
            } else {
                panic!("unexpected file {} after a kill", path.display());
            }
        }
    }
}

/// `ssod run` killed at 15 random points, every other run with `--fresh` (entries replaced):
/// the cache holds only complete entries, and the next run restores or recomputes them.
#[test]
fn a_notebook_killed_at_random_points_keeps_a_sound_cache() {
    let dir = temp_dir("faults_kill_notebook");
    std::fs::write(dir.join("script.rhai"), NOTEBOOK).unwrap();
    let log = dir.join("stderr.txt");
    let mut rng = Rng::new(7);
    let mut kills = 0;
    // The kills land within one whole run's time on this machine (measured first, nothing
    // cached), so they hit the writes however fast the machine is.
    let started = std::time::Instant::now();
    let whole = run_script(&dir, NOTEBOOK, &["--fresh"]);
    assert!(whole.ok, "{}\n{}", whole.stdout, whole.stderr);
    let run_s = started.elapsed().as_secs_f64();
    for i in 0..15 {
        let mut args = vec!["run".to_string(), "script.rhai".to_string()];
        if i % 2 == 1 {
            args.push("--fresh".into());
        }
        let child = spawn_ssod(&dir, &args, &log);
        kills += usize::from(kill_after(
            child,
            run_s * (0.05 + 0.9 * rng.uniform()),
            &log,
        ));
        check_cache(&dir.join(".ssod-cache"));
        check_notebook_runs(&dir);
    }
    assert!(kills >= 5, "only {kills} kills landed");
    let out = run_script(&dir, NOTEBOOK, &[]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(check_cache(&dir.join(".ssod-cache")), 3);
    let out = run_script(&dir, NOTEBOOK, &[]);
    assert_eq!(restored(&out), ["One", "Two", "Three"], "{}", out.stdout);
    let csv = run_dir(&dir, &out).join("three.csv");
    assert_eq!(
        ssod::csv_table::read_csv(&csv).unwrap().records[0].1,
        ["3", "2.5"]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The names in a folder, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn can_create_in(dir: &Path) -> bool {
    let probe = dir.join("probe");
    let ok = std::fs::write(&probe, b"x").is_ok();
    let _ = std::fs::remove_file(probe);
    ok
}

/// Make `dir` refuse new files: mode 0555, or where that does not bind (root) the immutable
/// attribute. None when neither works here.
fn make_read_only(dir: &Path) -> Option<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    if !can_create_in(dir) {
        return Some("chmod");
    }
    let chattr = Command::new("chattr").arg("+i").arg(dir).output();
    if chattr.is_ok_and(|o| o.status.success()) && !can_create_in(dir) {
        return Some("chattr");
    }
    None
}

fn make_writable(dir: &Path, how: &str) {
    use std::os::unix::fs::PermissionsExt;
    if how == "chattr" {
        let _ = Command::new("chattr").arg("-i").arg(dir).output();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A run folder that turns read-only after epoch 1: resuming it fails when the first file of
/// epoch 2 is written, with an error naming that file; the files of epoch 1 are unchanged and
/// no temporary file remains. Writable again, the run resumes and finishes. An output below a
/// plain file (a path that cannot be a folder) is an error naming it too.
#[test]
fn a_read_only_run_folder_is_a_named_error_and_keeps_the_old_files() {
    let dir = temp_dir("faults_read_only");
    let data = synth(&dir);
    let run = dir.join("run");
    let out = ssod(&dir, &strs(&train_args(&dir, &data, &run, 1, &[])));
    assert!(out.ok, "{}", out.stderr);

    let blocked = dir.join("a_file");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let below = blocked.join("run");
    let out = ssod(&dir, &strs(&train_args(&dir, &data, &below, 1, &[])));
    assert!(
        !out.ok && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&blocked.display().to_string()),
        "{}",
        out.stderr
    );

    let before: Vec<(String, Vec<u8>)> = names(&run)
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(run.join(&n)).unwrap()))
        .collect();
    let Some(how) = make_read_only(&run) else {
        make_writable(&run, "chmod");
        skip(
            Missing::Tool,
            "neither mode 0555 nor chattr +i keeps this user from writing",
        );
        return;
    };
    println!("run folder made read-only with {how}");
    let out = ssod(
        &dir,
        &strs(&train_args(&dir, &data, &run, 2, &["--resume"])),
    );
    make_writable(&run, how);
    assert!(!out.ok, "{}", out.stdout);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&run.join("last.safetensors").display().to_string()),
        "the error names the file ({how}): {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Permission denied") || out.stderr.contains("not permitted"),
        "{}",
        out.stderr
    );
    // metrics.csv and simota.csv (existing files, appended to) gained epoch 2's rows; every
    // other file is as epoch 1 left it, and nothing else appeared.
    let after = names(&run);
    assert_eq!(
        after,
        before.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()
    );
    for (name, bytes) in &before {
        if name != "metrics.csv" && name != "simota.csv" {
            assert!(
                std::fs::read(run.join(name)).unwrap() == *bytes,
                "{name} changed"
            );
        }
    }
    let out = ssod(
        &dir,
        &strs(&train_args(&dir, &data, &run, 2, &["--resume"])),
    );
    assert!(out.ok, "{}", out.stderr);
    let table = read_metrics_csv(&run.join("metrics.csv")).unwrap();
    assert_eq!(table.column("epoch").unwrap(), vec![1.0, 2.0]);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A write that fails part way: the process's file-size limit (`ulimit -f`, with SIGXFSZ
/// ignored so the write returns EFBIG) stops the 3.7 MB weights file after 1 MiB, as a full
/// disk would (ENOSPC takes the same path: `atomic_file`'s tests). The error names the file,
/// no part of it is left, and the run starts over cleanly once the limit is gone.
#[test]
fn a_write_that_fails_part_way_leaves_nothing_half_written() {
    let dir = temp_dir("faults_full");
    let data = synth(&dir);
    let run = dir.join("run");
    let args = train_args(&dir, &data, &run, 1, &[]);
    let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_ssod").to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{a}'"))
        .collect();
    // bash counts ulimit -f in KiB, dash in 512-byte blocks: 1-2 MiB either way.
    let script = format!("trap '' XFSZ; ulimit -f 2048 && exec {}", quoted.join(" "));
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let weights = run.join("last.safetensors");
    assert!(stderr.contains(&weights.display().to_string()), "{stderr}");
    assert!(stderr.contains("too large"), "{stderr}");
    // Only the complete per-epoch csv files: no weights, no temporary file.
    assert_eq!(names(&run), ["metrics.csv", "simota.csv"]);
    read_metrics_csv(&run.join("metrics.csv")).unwrap();
    read_simota_csv(&run.join("simota.csv")).unwrap();
    let out = ssod(
        &dir,
        &strs(&train_args(&dir, &data, &run, 1, &["--resume"])),
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("starting from epoch 1"),
        "{}",
        out.stdout
    );
    assert_eq!(check_run_folder(&run), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

/// A training set with a corrupt image (not a jpeg) and a truncated one (half its bytes): the
/// run stops with an error naming one of them and saying how to go on; resumed with
/// `--skip-bad-images` it completes, warns about both files and counts the skipped samples in
/// each epoch's line.
#[test]
fn corrupt_and_truncated_training_images() {
    let dir = temp_dir("faults_images");
    let data = synth(&dir);
    let images = data.join("training/images");
    let corrupt = images.join("000003.jpg");
    std::fs::write(&corrupt, b"not an image").unwrap();
    let truncated = images.join("000006.jpg");
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let run = dir.join("run");

    let out = ssod(&dir, &strs(&train_args(&dir, &data, &run, 2, &[])));
    assert!(!out.ok, "{}", out.stdout);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let named = [&corrupt, &truncated]
        .iter()
        .any(|p| out.stderr.contains(&p.display().to_string()));
    assert!(named, "{}", out.stderr);
    for part in ["training stopped in epoch 1", "skip_bad_images"] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }

    let args = train_args(&dir, &data, &run, 2, &["--resume", "--skip-bad-images"]);
    let out = ssod(&dir, &strs(&args));
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    for bad in [&corrupt, &truncated] {
        let warning = format!("skipping unreadable image {}", bad.display());
        assert_eq!(out.stderr.matches(&warning).count(), 1, "{}", out.stderr);
    }
    let epoch_lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .collect();
    assert_eq!(epoch_lines.len(), 2, "{}", out.stdout);
    for line in epoch_lines {
        // With mosaic a bad file may also be drawn as a partner: at least the two itself.
        let skipped: usize = line
            .split(", ")
            .find_map(|p| p.strip_suffix(" sample(s) skipped (unreadable image)"))
            .unwrap_or_else(|| panic!("no count in `{line}`"))
            .parse()
            .unwrap();
        assert!((2..=8).contains(&skipped), "{line}");
    }
    assert_eq!(check_run_folder(&run), 2);
    std::fs::remove_dir_all(dir).unwrap();
}
