//! `ssod synth`: layout, determinism (same seed same bytes, other seed other bytes), size
//! histogram and object counts, and the CLI's refusal to write into a non-empty folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ssod::data::synth::{generate, render_labeled, SynthConfig};
use ssod::data::CocoDataset;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod-test-synth-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn tiny_config(out: &Path, seed: u64) -> SynthConfig {
    SynthConfig {
        out: out.to_path_buf(),
        train: 4,
        test: 2,
        width: 320,
        height: 180,
        videos: 1,
        frames_per_video: 3,
        seed,
    }
}

/// Every file under `root` (relative path -> bytes).
fn all_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    std::fs::read(&path).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn synth_writes_the_flow_layout_and_coco_json() {
    let out = tmp_dir("layout");
    let summary = generate(&tiny_config(&out, 1)).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("labels.txt")).unwrap(),
        "bottle\n"
    );
    for (split, n) in [("training", 4), ("test", 2)] {
        for i in 1..=n {
            assert!(out.join(format!("{split}/images/{i:06}.jpg")).is_file());
            assert!(out
                .join(format!("{split}/annotations/{i:06}.xml"))
                .is_file());
        }
    }
    for t in 1..=3 {
        assert!(out.join(format!("unlabeled/video_01/{t:06}.jpg")).is_file());
    }
    assert_eq!(summary.video_frames, 3);
    let train = CocoDataset::read(&out.join("train.json")).unwrap();
    assert_eq!(train.images.len(), 4);
    assert_eq!(train.categories.len(), 1);
    assert_eq!(train.categories[0].name, "bottle");
    assert_eq!(train.annotations.len(), summary.train.annotations.len());
    for a in &train.annotations {
        let [x, y, w, h] = a.bbox_xywh;
        assert!(
            x >= 0.0 && y >= 0.0 && w >= 2.0 && h >= 2.0 && x + w <= 320.0 && y + h <= 180.0,
            "{:?}",
            a.bbox_xywh
        );
    }
    // The images decode at the requested size.
    let img = ssod::data::image_io::read_rgb(&out.join("training/images/000001.jpg")).unwrap();
    assert_eq!((img.width(), img.height()), (320, 180));
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn synth_same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (tmp_dir("seed-a"), tmp_dir("seed-b"), tmp_dir("seed-c"));
    generate(&tiny_config(&a, 7)).unwrap();
    generate(&tiny_config(&b, 7)).unwrap();
    generate(&tiny_config(&c, 8)).unwrap();
    let (fa, fb, fc) = (all_files(&a), all_files(&b), all_files(&c));
    assert_eq!(
        fa.len(),
        4 * 2 + 2 * 2 + 3 + 3,
        "files: {:?}",
        fa.keys().collect::<Vec<_>>()
    );
    assert_eq!(fa, fb, "same seed must give byte-identical files");
    for (name, bytes) in &fa {
        if name.extension().is_some_and(|e| e == "jpg") {
            assert_ne!(
                Some(bytes),
                fc.get(name),
                "{} is identical under another seed",
                name.display()
            );
        }
    }
    for d in [a, b, c] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn synth_sizes_are_mostly_coco_small_with_flow_like_counts() {
    // 640×360 is 1280×720 halved: COCO's 32² small threshold becomes 16², 96² becomes 48².
    let (mut small, mut medium, mut large, mut objects) = (0usize, 0usize, 0usize, 0usize);
    let n = 60;
    for i in 0..n {
        let frame = render_labeled(11, "training", i, 640, 360);
        assert!(
            (1..=8).contains(&frame.boxes_xyxy.len()),
            "image {i}: {} boxes",
            frame.boxes_xyxy.len()
        );
        objects += frame.boxes_xyxy.len();
        for b in &frame.boxes_xyxy {
            let area = ((b[2] - b[0]) * (b[3] - b[1])) as f64 * 4.0;
            if area < 32.0 * 32.0 {
                small += 1;
            } else if area < 96.0 * 96.0 {
                medium += 1;
            } else {
                large += 1;
            }
        }
    }
    let per_image = objects as f64 / n as f64;
    assert!(
        (1.8..=3.4).contains(&per_image),
        "objects per image {per_image}"
    );
    let total = objects as f64;
    assert!(
        small as f64 / total > 0.55,
        "small {small} medium {medium} large {large}"
    );
    assert!(medium > 0, "some medium objects expected");
    assert!(
        (large as f64 / total) < 0.1,
        "small {small} medium {medium} large {large}"
    );
}

#[test]
fn synth_cli_refuses_a_non_empty_out_without_force() {
    let out = tmp_dir("cli");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("mine.txt"), "user data").unwrap();
    let run = |force: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ssod"));
        cmd.args(["synth", "--out"]).arg(&out);
        cmd.args([
            "--train", "1", "--test", "0", "--videos", "0", "--size", "64x48",
        ]);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let refused = run(false);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!out.join("training").exists());
    let forced = run(true);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(
        stdout.contains("per image") && stdout.contains("small"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("mine.txt")).unwrap(),
        "user data"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn preview_draws_a_grid_and_does_not_replace_a_file() {
    let out = tmp_dir("preview");
    let mut cfg = tiny_config(&out, 2);
    cfg.videos = 0;
    generate(&cfg).unwrap();
    let grid = out.join("grid.png");
    let run = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ssod"));
        cmd.args(["preview", "--data"])
            .arg(&out)
            .arg("--out")
            .arg(&grid);
        cmd.args(["--count", "4", "--input", "96"]).args(extra);
        cmd.output().unwrap()
    };
    let made = run(&["--mosaic"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let img = ssod::data::image_io::read_rgb(&grid).unwrap();
    // 2×2 tiles of 96 px plus a 4 px gap each.
    assert_eq!((img.width(), img.height()), (200, 200));
    let again = run(&[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert!(run(&["--force"]).status.success());
    std::fs::remove_dir_all(&out).unwrap();
}
