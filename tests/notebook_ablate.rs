//! `ablate`: grid × seeds, CSV, mean ± std table, bar chart, and resuming after an interruption.

mod notebook_support;

use notebook_support::*;

/// The closure fails at the 3rd point (lr = 0.2, seed 1) unless `marker.npy` exists in the working
/// directory; it writes the marker before failing, so the second run goes through.
const SCRIPT: &str = r#"// %% Setup
let base = 10.0;
// %% Ablate
let rows = ablate(#{ lr: [0.1, 0.2], opt: ["sgd"] }, [1, 2], |cfg| {
    let first_time = true;
    try { load_npy("marker.npy"); first_time = false; } catch { }
    if cfg.lr == 0.2 && cfg.seed == 1 && first_time {
        save_npy(zeros([1]), "marker.npy");
        throw "boom at the third point";
    }
    print(`computing lr=${cfg.lr} seed=${cfg.seed}`);
    #{ ap: cfg.lr * base + cfg.seed, n: 3, name: "ignored" }
});
print(`rows=${rows.len()}`);
"#;

#[test]
fn ablation_resumes_after_an_interruption() {
    let dir = temp_dir("resume");
    let out = run_script(&dir, SCRIPT, &[]);
    assert!(!out.ok, "{}", out.stdout);
    assert!(
        out.stderr.contains("boom at the third point"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("script.rhai:"), "{}", out.stderr);
    assert_eq!(out.stdout.matches("computing").count(), 2, "{}", out.stdout);

    let out = run_script(&dir, SCRIPT, &[]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(restored(&out), ["Setup"]);
    // Points 1 and 2 come from the cache; 3 and 4 are computed.
    assert_eq!(out.stdout.matches("computing").count(), 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("computing lr=0.2 seed=1"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("computing lr=0.1"), "{}", out.stdout);
    assert!(
        out.stdout.contains("2 of 4 point(s) restored"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rows=4"), "{}", out.stdout);

    let rd = run_dir(&dir, &out);
    let csv = std::fs::read_to_string(rd.join("ablation.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "lr,opt,seed,ap,n");
    assert_eq!(lines.len(), 5, "{csv}");
    // ap = lr * 10 + seed.
    assert_eq!(lines[1], "0.1,sgd,1,2,3");
    assert_eq!(lines[4], "0.2,sgd,2,4,3");
    assert!(rd.join("ablation.png").is_file());
    let report = std::fs::read_to_string(rd.join("report.md")).unwrap();
    // mean ± std over seeds 1 and 2: lr 0.1 -> 2.5 ± 0.7071; lr 0.2 -> 3.5 ± 0.7071.
    assert!(report.contains("2.5000 ± 0.7071"), "{report}");
    assert!(report.contains("3.5000 ± 0.7071"), "{report}");
    assert!(report.contains("Δ vs first row"), "{report}");
    assert!(report.contains("+1.0000"), "{report}");
    assert!(report.contains("![ablation.png](ablation.png)"), "{report}");

    // Everything finished: a third run restores the whole cell, files included.
    let out = run_script(&dir, SCRIPT, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(restored(&out), ["Setup", "Ablate"]);
    let rd3 = run_dir(&dir, &out);
    assert_eq!(
        std::fs::read_to_string(rd3.join("ablation.csv")).unwrap(),
        csv
    );
    assert!(rd3.join("ablation.png").is_file());

    // --fresh recomputes every point.
    let out = run_script(&dir, SCRIPT, &["--fresh"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.matches("computing").count(), 4, "{}", out.stdout);
}

#[test]
fn ablation_argument_errors() {
    let dir = temp_dir("ablate_errors");
    let out = run_script(
        &dir,
        "ablate(#{ lr: 0.1 }, [1], |cfg| #{ ap: 1.0 });\n",
        &[],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("`lr`") && out.stderr.contains("list"),
        "{}",
        out.stderr
    );
    let out = run_script(&dir, "ablate(#{ lr: [0.1] }, [1], |cfg| 1.0);\n", &[]);
    assert!(!out.ok);
    assert!(out.stderr.contains("map of metrics"), "{}", out.stderr);
    let out = run_script(
        &dir,
        "ablate(#{ lr: [0.1] }, [], |cfg| #{ ap: 1.0 });\n",
        &[],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("seed"), "{}", out.stderr);
}
