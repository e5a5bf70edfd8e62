//! `ssod run --shard I/N --cache DIR`: shards of an ablation computed by separate processes at
//! once into one cache, then an unsharded merge run that computes nothing and writes the same
//! tables as a single-process run.

mod notebook_support;

use std::collections::BTreeSet;
use std::path::Path;

use notebook_support::*;
use ssod::script::shard::Shard;

/// 12 points: act (map keys are sorted, so `act` comes first) x scale x 2 seeds. The metrics
/// (also sorted by name in the table) come from float tensor arithmetic, so equal tables mean
/// bit-equal results.
const SCRIPT: &str = r#"// %% Setup
let w = randn([160, 160], 7) / 16.0;
// %% Ablate
let rows = ablate(#{ scale: [0.5, 1.0, 2.0], act: ["relu", "none"] }, [1, 2], |cfg| {
    print(`computing act=${cfg.act} scale=${cfg.scale} seed=${cfg.seed}`);
    // A few milliseconds of work per point, so that the two shards overlap.
    let y = randn([160, 160], cfg.seed) * cfg.scale;
    for i in 0..12 { y = matmul(y, w); }
    if cfg.act == "relu" { y = relu(y); }
    #{ gate: item(mean(sigmoid(y))), energy: item(mean(y * y)) }
});
// %% After
print(`rows=${rows.len()}`);
"#;

/// The `computing ...` lines of a run.
fn computed_points(out: &Out) -> BTreeSet<String> {
    out.stdout
        .lines()
        .filter_map(|l| l.strip_prefix("computing "))
        .map(str::to_string)
        .collect()
}

fn csv_of(dir: &Path, out: &Out) -> String {
    let rd = run_dir(dir, out);
    std::fs::read_to_string(rd.join("ablation.csv"))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", rd.display(), out.stdout))
}

/// Names in `dir` other than finished point files and cell entries: claims, temporary files,
/// work folders of unfinished points.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut left = Vec::new();
    for sub in ["ablate", "cells", "objects"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name.ends_with(".claim") || name.ends_with(".partial") {
                left.push(format!("{sub}/{name}"));
            }
        }
    }
    left
}

#[test]
fn two_shards_at_once_then_a_merge_equal_a_single_process_run() {
    let dir = temp_dir("shards");
    std::fs::write(dir.join("script.rhai"), SCRIPT).unwrap();
    let cache = dir.join("shared-cache");
    let cache_arg = cache.to_str().unwrap();
    let shard = |i: &str, out: &str| {
        spawn_ssod(
            &dir,
            &[
                "run",
                "script.rhai",
                "--shard",
                i,
                "--cache",
                cache_arg,
                "--out",
                out,
            ],
        )
    };
    let (a, b) = (shard("0/2", "runs/s0"), shard("1/2", "runs/s1"));
    let (a, b) = (finish(a), finish(b));
    assert!(a.ok, "{}\n{}", a.stdout, a.stderr);
    assert!(b.ok, "{}\n{}", b.stdout, b.stderr);

    // Points are numbered point-major, seeds within a point, so with 2 seeds shard 0 owns
    // every seed-1 run and shard 1 every seed-2 run; each computed its own six, nothing else.
    let (pa, pb) = (computed_points(&a), computed_points(&b));
    assert_eq!(pa.len(), 6, "{:?}", pa);
    assert!(pa.iter().all(|p| p.ends_with("seed=1")), "{:?}", pa);
    assert_eq!(pb.len(), 6, "{:?}", pb);
    assert!(pb.iter().all(|p| p.ends_with("seed=2")), "{:?}", pb);
    // The shard that finished first found the other's points missing and stopped there
    // without tables; one that found every point wrote them like an unsharded run.
    let stopped: Vec<&Out> = [&a, &b]
        .into_iter()
        .filter(|o| o.stdout.contains("still missing"))
        .collect();
    assert!(!stopped.is_empty(), "{}\n{}", a.stdout, b.stdout);
    for o in &stopped {
        assert!(
            o.stdout.contains("computed 6 point(s) of the ablation"),
            "{}",
            o.stdout
        );
        assert!(!run_dir(&dir, o).join("ablation.csv").exists());
        // The setup ran here or was restored from the other shard's entry.
        assert_eq!(computed(o).last().map(String::as_str), Some("Ablate"));
        assert!(
            !o.stdout.contains("rows="),
            "the cell after the ablation ran"
        );
    }
    assert_eq!(leftovers(&cache), Vec::<String>::new());

    // The merge: every point cached, nothing computed, the tables written.
    let merge = ssod(&dir, &["run", "script.rhai", "--cache", cache_arg]);
    assert!(merge.ok, "{}\n{}", merge.stdout, merge.stderr);
    assert_eq!(restored(&merge)[0], "Setup");
    if stopped.len() == 2 {
        // The ablation cell runs and restores every point (its printed output is its own).
        assert_eq!(computed(&merge), ["Ablate", "After"], "{}", merge.stdout);
        assert!(computed_points(&merge).is_empty(), "{}", merge.stdout);
        assert!(
            merge
                .stdout
                .contains("12 of 12 point(s) restored from the cache, 0 computed in this run"),
            "{}",
            merge.stdout
        );
    } else {
        // A shard found every point and completed the notebook: the merge restores every
        // cell (the replayed output is that shard's), so it runs nothing.
        assert_eq!(computed(&merge), Vec::<String>::new(), "{}", merge.stdout);
    }
    assert!(merge.stdout.contains("rows=12"), "{}", merge.stdout);
    let merged = csv_of(&dir, &merge);

    // A single process with its own cache computes the same table (Rust prints floats in
    // their shortest exact form, so equal text is equal bits).
    let single_dir = temp_dir("shards_single");
    let single = run_script(&single_dir, SCRIPT, &[]);
    assert!(single.ok, "{}\n{}", single.stdout, single.stderr);
    assert_eq!(computed_points(&single).len(), 12);
    let reference = csv_of(&single_dir, &single);
    assert_eq!(reference.lines().next(), Some("act,scale,seed,energy,gate"));
    assert_eq!(reference.lines().count(), 13, "{reference}");
    assert_eq!(merged, reference);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&single_dir);
}

#[test]
fn a_lone_shard_stops_with_a_count_and_the_last_one_writes_the_tables() {
    let dir = temp_dir("lone_shard");
    let out = run_script(&dir, SCRIPT, &["--shard", "1/2"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "shard 1/2: computed 6 point(s) of the ablation, 0 restored from the cache, 6 of 12 still missing"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("stopped after cell 2"),
        "{}",
        out.stdout
    );
    let rd = run_dir(&dir, &out);
    assert!(!rd.join("ablation.csv").exists());
    let report = std::fs::read_to_string(rd.join("report.md")).unwrap();
    assert!(report.contains("others missing"), "{report}");
    assert!(report.contains("not run"), "{report}");

    // The other shard finds the first one's points and completes the notebook.
    let out = run_script(&dir, SCRIPT, &["--shard", "0/2"]);
    assert!(out.ok, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(computed_points(&out).len(), 6);
    assert!(
        out.stdout
            .contains("6 of 12 point(s) restored from the cache, 6 computed in this run"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rows=12"), "{}", out.stdout);
    assert!(run_dir(&dir, &out).join("ablation.csv").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shard_flag_errors_name_the_flag() {
    let dir = temp_dir("shard_flag");
    for (arg, why) in [
        ("2/2", "below 2"),
        ("3", "no `/`"),
        ("a/2", "index"),
        ("0/0", "at least 1"),
    ] {
        let out = run_script(&dir, SCRIPT, &["--shard", arg]);
        assert!(!out.ok, "--shard {arg} was accepted");
        assert!(
            out.stderr.contains(&format!("--shard `{arg}`")) && out.stderr.contains(why),
            "{arg}: {}",
            out.stderr
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn any_shard_count_covers_every_point_once() {
    for count in 1..=7 {
        for point in 0..30 {
            let owners = (0..count)
                .filter(|&index| Shard { index, count }.owns(point))
                .count();
            assert_eq!(owners, 1, "point {point} of {count} shards");
        }
    }
    assert_eq!(Shard::parse("3/8").unwrap(), Shard { index: 3, count: 8 });
    assert_eq!(
        Shard::parse(" 0 / 1 ").unwrap(),
        Shard { index: 0, count: 1 }
    );
    assert!(Shard::parse("8/8").is_err());
    assert!(Shard::parse("-1/8").is_err());
}
