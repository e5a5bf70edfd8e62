//! Seeded corruption of every input format: real samples mutated thousands of times (bit flips,
//! interesting bytes and integers, truncation, chunk duplication and deletion; in text formats
//! numbers replaced by -1, 1e308, 2^64, NaN, an empty string, closing brackets and tags
//! deleted), each fed to the parser ssod reads it with. No input may panic, hang or be refused
//! without naming its file (configs: their key); command lines may not leave a partial output.
//! One line per format says how many inputs were tried and how many failed (docs/fuzzing.md).
//!
//! Longer runs: `SSOD_FUZZ_SCALE=20 cargo test --release --test fuzz_inputs -- --nocapture`
//! (another seed: `SSOD_FUZZ_SEED=7`). Failing inputs land in
//! `target/tmp/fuzz-failures/<format>/`; keep them in `tests/fuzz_regressions/<format>/`, which
//! `kept_regression_inputs_are_refused_cleanly` replays.

mod common;
mod fuzz_support;

use std::ffi::OsString;

use fuzz_support::{check_inputs, finish, regression_inputs, run_campaign, work_dir, Report};
use fuzz_support::{cli, targets, Target};

fn run_all(targets: &[Target], dir: &std::path::Path) -> Vec<Report> {
    targets.iter().map(|t| run_campaign(t, dir)).collect()
}

#[test]
fn fuzz_annotation_and_config_text() {
    let dir = work_dir("text");
    let mut ts = vec![targets::voc(10000)];
    ts.extend(targets::coco(&dir, 4000));
    ts.extend(targets::configs(6000));
    finish(&run_all(&ts, &dir));
}

#[test]
fn fuzz_tensor_files() {
    let dir = work_dir("tensors");
    let ts = vec![
        targets::npy(&dir, 10000),
        targets::safetensors(&dir, 10000),
        targets::pth(3000),
    ];
    finish(&run_all(&ts, &dir));
}

#[test]
fn fuzz_images_in_a_data_set() {
    let dir = work_dir("images");
    let mut ts = targets::images(&dir, 6000);
    ts.push(targets::dataset_image(&dir, 600));
    finish(&run_all(&ts, &dir));
}

#[test]
fn fuzz_notebook_scripts() {
    let dir = work_dir("rhai");
    finish(&run_all(&[targets::rhai(&dir, 2000)], &dir));
}

fn cli_report(label: &'static str, runs: Vec<(String, Vec<OsString>)>) -> Report {
    let dir = work_dir(label);
    let mut report = Report {
        format: label,
        tried: 0,
        accepted: 0,
        slowest: std::time::Duration::ZERO,
        elapsed: std::time::Duration::ZERO,
        failures: Vec::new(),
    };
    let started = std::time::Instant::now();
    for (name, args) in runs {
        report.tried += 1;
        let start = std::time::Instant::now();
        let outcome = cli::check_run(&dir, &args);
        report.slowest = report.slowest.max(start.elapsed());
        match outcome {
            Ok(succeeded) => report.accepted += succeeded as usize,
            Err(problem) => report
                .failures
                .push(format!("ssod {args:?} ({name}): {problem}")),
        }
    }
    report.elapsed = started.elapsed();
    report
}

#[test]
fn fuzz_command_lines() {
    fuzz_support::setup();
    let n = (600.0 * fuzz_support::scale()).ceil() as usize;
    let seed = fuzz_support::seed();
    let mut rng = common::Rng::new(seed ^ fuzz_support::fnv("cli_args"));
    let bases = cli::base_commands();
    let runs = (0..n)
        .map(|i| {
            let args = cli::mutate_args(&mut rng, &bases[i % bases.len()]);
            (format!("s{seed}-{i}"), args)
        })
        .collect();
    let report = cli_report("cli_args", runs);
    // The unmutated command lines must all succeed, or the mutants test nothing.
    let dir = work_dir("cli_base");
    for base in &bases {
        let args: Vec<OsString> = base.iter().map(OsString::from).collect();
        assert_eq!(
            cli::check_run(&dir, &args),
            Ok(true),
            "the sample command line {base:?} must succeed"
        );
    }
    finish(&[report]);
}

/// Every kept input of `tests/fuzz_regressions/<format>/` through its parser: refused with the
/// file named, never a panic or a hang.
#[test]
fn kept_regression_inputs_are_refused_cleanly() {
    let dir = work_dir("regressions");
    let mut ts = vec![targets::voc(0)];
    ts.extend(targets::coco(&dir, 0));
    ts.extend(targets::configs(0));
    ts.extend([
        targets::npy(&dir, 0),
        targets::safetensors(&dir, 0),
        targets::pth(0),
    ]);
    ts.extend(targets::images(&dir, 0));
    ts.extend([targets::dataset_image(&dir, 0), targets::rhai(&dir, 0)]);
    let mut reports: Vec<Report> = ts
        .iter()
        .map(|t| check_inputs(t, &dir, regression_inputs(t.format).into_iter()))
        .collect();
    let cli_runs = regression_inputs("cli_args")
        .into_iter()
        .map(|(name, bytes)| {
            let args: Vec<String> = serde_json::from_slice(&bytes).unwrap();
            (name, args.into_iter().map(OsString::from).collect())
        })
        .collect();
    reports.push(cli_report("cli_args", cli_runs));
    let total: usize = reports.iter().map(|r| r.tried).sum();
    assert!(total > 0, "no files under tests/fuzz_regressions");
    finish(&reports);
}
