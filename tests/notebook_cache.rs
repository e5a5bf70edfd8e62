//! The notebook cache: which cells are restored and which recomputed, and that restored values
//! (plain values, tensors, models, closures) are the same as computed ones.

mod notebook_support;

use notebook_support::*;

const SCRIPT: &str = "// %% A\nlet a = param(\"n\", 2);\nprint(`a=${a}`);\n// %% B\nlet b = a * 10;\nprint(`b=${b}`);\n// %% C\nlet c = b + 1;\nprint(`c=${c}`);\n";

#[test]
fn cache_hit_and_miss_rules() {
    let dir = temp_dir("rules");
    let out = run_script(&dir, SCRIPT, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(computed(&out), ["A", "B", "C"]);
    assert!(restored(&out).is_empty());

    // Unchanged: everything restored, output printed again, values still there.
    let out = run_script(&dir, SCRIPT, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(restored(&out), ["A", "B", "C"]);
    assert!(out.stdout.contains("c=21"), "{}", out.stdout);
    assert!(out.stdout.contains("restoring 3 of 3"), "{}", out.stdout);

    // Edit the last cell: A and B restored (with their variables), C recomputed.
    let edited = SCRIPT.replace("let c = b + 1;", "let c = b + a + 1;");
    let out = run_script(&dir, &edited, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(restored(&out), ["A", "B"]);
    assert_eq!(computed(&out), ["C"]);
    assert!(out.stdout.contains("c=23"), "{}", out.stdout);

    // Edit the first cell: everything after it recomputed.
    let edited2 = edited.replace("print(`a=${a}`);", "print(`a is ${a}`);");
    let out = run_script(&dir, &edited2, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(restored(&out).is_empty(), "{}", out.stdout);
    assert_eq!(computed(&out), ["A", "B", "C"]);

    // A --set value changes every key.
    let out = run_script(&dir, &edited2, &["--set", "n=3"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(computed(&out), ["A", "B", "C"]);
    assert!(out.stdout.contains("c=34"), "{}", out.stdout);
    let out = run_script(&dir, &edited2, &["--set", "n=3"]);
    assert_eq!(restored(&out), ["A", "B", "C"]);
    assert!(out.stdout.contains("c=34"), "{}", out.stdout);

    // --fresh recomputes everything (and still saves).
    let out = run_script(&dir, &edited2, &["--fresh"]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(computed(&out), ["A", "B", "C"]);
    let out = run_script(&dir, &edited2, &[]);
    assert_eq!(restored(&out), ["A", "B", "C"]);

    // The report marks restored cells.
    let report = std::fs::read_to_string(run_dir(&dir, &out).join("report.md")).unwrap();
    assert_eq!(report.matches("restored from cache").count(), 3, "{report}");

    // Params read by restored cells still count as read (no "unused" warning).
    let out = run_script(&dir, &edited2, &["--set", "n=3"]);
    assert_eq!(restored(&out).len(), 3);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

/// Cell "Make" builds values; cell "Check" prints them exactly. Editing "Check" (a comment)
/// makes the second run restore "Make" and recompute "Check" from the restored values.
const VALUES: &str = r#"// %% Make
let m = yolox("nano", #{ classes: 2, width: 0.125, seed: 3 });
let x = randn([1, 3, 64, 64], 11);
// Change the weights and BN statistics away from the seeded init: one SGD step in training mode.
let l = m.forward(x).sum();
l.backward();
sgd_step(m.parameters(), 0.001);
m.set_training(false);
let t = randn([3, 4], 5) * 1e-3 + 0.1;
let plain = #{ i: 7, f: 0.1 + 0.2, s: "text", list: [1, 2.5, true, ()], nan: 0.0 / 0.0 };
let tensors = [t, t * 2.0];
let add = |v| v + plain.i;
// %% Check
let y = m.forward(x);
print(`model=${y.to_flat_array()}`);
print(`tensor=${t.to_flat_array()}`);
print(`tensors=${tensors[1].to_flat_array()}`);
print(`plain=${plain.i} ${plain.f} ${plain.s} ${plain.list} ${plain.nan} ${type_of(plain.list[1])}`);
print(`closure=${add.call(1)}`);
"#;

fn lines_with(out: &str, prefixes: &[&str]) -> Vec<String> {
    out.lines()
        .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect()
}

#[test]
fn restored_tensors_models_and_values_are_identical() {
    let dir = temp_dir("values");
    let first = run_script(&dir, VALUES, &[]);
    assert!(first.ok, "{}\n{}", first.stdout, first.stderr);
    assert!(!first.stdout.contains("not cached"), "{}", first.stdout);
    let edited = VALUES.replace("// %% Check\n", "// %% Check\n// edited\n");
    let second = run_script(&dir, &edited, &[]);
    assert!(second.ok, "{}\n{}", second.stdout, second.stderr);
    assert_eq!(restored(&second), ["Make"]);
    assert_eq!(computed(&second), ["Check"]);
    let keys = ["model=", "tensor=", "tensors=", "plain=", "closure="];
    let a = lines_with(&first.stdout, &keys);
    let b = lines_with(&second.stdout, &keys);
    assert_eq!(a.len(), 5, "{}", first.stdout);
    assert_eq!(a, b);
    assert!(
        a[3].contains("plain=7 0.30000000000000004 text [1, 2.5, true, ()] NaN f64"),
        "{}",
        a[3]
    );
    assert_eq!(a[4], "closure=8");

    // Sanity of the check itself: a model with other weights gives other outputs.
    let other = VALUES.replace("seed: 3", "seed: 4");
    let third = run_script(&dir, &other, &[]);
    assert!(third.ok, "{}", third.stderr);
    let c = lines_with(&third.stdout, &["model="]);
    assert_ne!(a[0], c[0]);
}

#[test]
fn uncacheable_values_are_a_note_not_a_crash() {
    let dir = temp_dir("uncacheable");
    // A timestamp has no codec.
    let body =
        "// %% Clock\nlet t0 = timestamp();\nprint(\"clock\");\n// %% After\nprint(\"after\");\n";
    let out = run_script(&dir, body, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.contains("not cached") && out.stdout.contains("`t0`"),
        "{}",
        out.stdout
    );
    let out = run_script(&dir, body, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(computed(&out), ["Clock", "After"]);
}

#[test]
fn a_corrupt_cache_is_recomputed() {
    let dir = temp_dir("corrupt");
    let out = run_script(&dir, SCRIPT, &[]);
    assert!(out.ok, "{}", out.stderr);
    for e in std::fs::read_dir(dir.join(".ssod-cache/cells")).unwrap() {
        std::fs::write(e.unwrap().path().join("scope.json"), "{ not json").unwrap();
    }
    let out = run_script(&dir, SCRIPT, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains("could not restore"), "{}", out.stdout);
    assert_eq!(computed(&out), ["A", "B", "C"]);
    assert!(out.stdout.contains("c=21"), "{}", out.stdout);
}

#[test]
fn restored_run_dir_strings_point_at_the_new_run() {
    let dir = temp_dir("rundir");
    let body = "// %% Where\nlet d = run_dir();\nlet files = #{ csv: d + \"/out.csv\" };\n// %% Write\nwrite_csv(files.csv, [#{ a: 1 }]);\nprint(`d=${d}`);\n";
    let first = run_script(&dir, body, &[]);
    assert!(first.ok, "{}", first.stderr);
    let edited = body.replace("print(`d=${d}`);", "print(`d=${d}`); // edited");
    let second = run_script(&dir, &edited, &[]);
    assert!(second.ok, "{}", second.stderr);
    assert_eq!(restored(&second), ["Where"]);
    let rd = run_dir(&dir, &second);
    assert!(rd.join("out.csv").is_file(), "{}", second.stdout);
    assert!(
        second
            .stdout
            .lines()
            .any(|l| l.starts_with("d=") && rd.ends_with(l[2..].trim_start_matches("./"))),
        "{}",
        second.stdout
    );
}
