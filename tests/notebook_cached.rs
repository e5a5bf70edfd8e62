//! `cached(name, f)`: f runs once per cell and name, later calls and later runs get its value
//! back (a model as its own copy), `--fresh` computes it again once, and a value without a cache
//! codec is an error naming it. `plot_xy`'s errors name the row and column.

mod notebook_support;

use notebook_support::*;

/// Each `f` call appends a line to calls.txt in the working folder (absolute path from the
/// script's folder), so the test counts calls across runs.
const SCRIPT: &str = r#"// %% Shared
let log = param("log", "");
let count = || { let n = 0; try { n = load_npy(log).to_flat_array().len(); } catch { } n };
let work = || {
    let n = count.call();
    save_npy(zeros([n + 1]), log, true);
    let m = yolox("nano", #{ classes: 1, seed: 3 });
    #{ answer: 42, model: m }
};
let a = cached("value", work);
let b = cached("value", work);
print(`calls ${count.call()} answers ${a.answer} ${b.answer}`);
"#;

/// Two calls give two models: a step on one leaves the other as it was.
const COPIES: &str = r#"
let pa = a.model.parameters()[0];
let pb = b.model.parameters()[0];
let before = pb.sum().item();
print(`equal before ${pa.sum().item() == before}`);
pa.sum().backward();
sgd_step([pa], 1.0);
print(`stepped ${pa.sum().item() != before} other unchanged ${pb.sum().item() == before}`);
"#;

fn calls(out: &Out) -> usize {
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("calls "))
        .unwrap_or_else(|| panic!("no calls line in:\n{}\n{}", out.stdout, out.stderr));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn cached_runs_once_and_restores() {
    let dir = temp_dir("cached");
    let log = dir.join("calls.npy");
    let set = format!("log={}", log.display());
    let out = run_script(&dir, SCRIPT, &["--set", &set]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    // Two calls in the cell, one computation; both get the value.
    assert_eq!(calls(&out), 1, "{}", out.stdout);
    assert!(out.stdout.contains("answers 42 42"), "{}", out.stdout);
    assert!(out.stdout.contains("cached `value`: computed"));
    assert!(out.stdout.contains("cached `value`: restored"));

    // The cell's record gone (an interrupted run): the cell runs again, f does not.
    for entry in std::fs::read_dir(dir.join(".ssod-cache/cells")).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path().join("cell.json"));
    }
    let out = run_script(&dir, SCRIPT, &["--set", &set]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(calls(&out), 1, "{}", out.stdout);
    assert!(!out.stdout.contains("cached `value`: computed"));

    // --fresh computes it once more, and shares it within the cell.
    let out = run_script(&dir, SCRIPT, &["--set", &set, "--fresh"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(calls(&out), 2, "{}", out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cached_models_are_copies() {
    let dir = temp_dir("cached_copies");
    let set = format!("log={}", dir.join("calls.npy").display());
    let out = run_script(&dir, &format!("{SCRIPT}{COPIES}"), &["--set", &set]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("equal before true"), "{}", out.stdout);
    assert!(
        out.stdout.contains("stepped true other unchanged true"),
        "{}",
        out.stdout
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cached_and_plot_xy_errors_name_their_input() {
    let dir = temp_dir("cached_errors");
    let out = run_script(
        &dir,
        "let l = cached(\"loader\", || loader(synth(#{ out: \"d\", train: 1, test: 0, videos: 0, size: \"64x64\" }).train, #{}));\n",
        &[],
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("cached `loader`: the value cannot be cached"),
        "{}",
        out.stderr
    );
    let out = run_script(
        &dir,
        "plot_xy([#{ x: 1, y: 2.0, g: \"a\" }, #{ x: 2, g: \"a\" }], \"x\", [\"y\"], \"g\", \"p.png\");\n",
        &[],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("plot_xy: row 1 has no column `y`"),
        "{}",
        out.stderr
    );
    let out = run_script(
        &dir,
        "plot_xy([#{ x: 1, y: 2.0, g: \"a\" }, #{ x: 1, y: 3.0, g: \"a\" }], \"x\", [\"y\"], \"g\", \"p.png\");\n",
        &[],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("two rows of `a`"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}
