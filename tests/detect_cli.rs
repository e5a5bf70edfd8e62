//! `ssod detect` end to end on a random-weight tiny YOLOX (width 0.125) and small generated
//! images: drawn images, detections.json (COCO results) and images.json are written; bad input
//! gives errors that name the file or the tensors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use ssod::data::dataset::{read_json_file, CocoDataset, Detection};
use ssod::detect::{detect_images, to_coco, PostprocessConfig};
use ssod::models::{YoloX, YoloXConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod-detect-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ssod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(args)
        .output()
        .expect("run ssod")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tiny 1-class model's weights, two images (PNG 80×60, JPEG 50×70) and a broken "image".
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let weights = dir.join("tiny.safetensors");
    let model = YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 1)).unwrap();
    model.save(&weights).unwrap();
    let input = dir.join("images");
    std::fs::create_dir_all(&input).unwrap();
    RgbImage::from_fn(80, 60, |x, y| Rgb([(x * 3) as u8, (y * 4) as u8, 90]))
        .save(input.join("a.png"))
        .unwrap();
    RgbImage::from_fn(50, 70, |x, y| Rgb([30, (x * 5) as u8, (y * 3) as u8]))
        .save(input.join("b.jpg"))
        .unwrap();
    std::fs::write(input.join("c_broken.png"), b"not a png").unwrap();
    std::fs::write(input.join("notes.txt"), b"ignored").unwrap();
    (weights, input)
}

fn base_args<'a>(weights: &'a str, input: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "detect",
        "--weights",
        weights,
        "--model",
        "yolox-s",
        "--width",
        "0.125",
        "--depth",
        "0.33",
        "--classes",
        "1",
        "--input",
        input,
        "--out",
        out,
        "--size",
        "64",
    ]
}

#[test]
fn detect_end_to_end() {
    let dir = temp_dir("e2e");
    let (weights, input) = setup(&dir);
    let out = dir.join("out");
    let (w, i, o) = (
        weights.to_str().unwrap(),
        input.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let labels = dir.join("labels.txt");
    std::fs::write(&labels, "bottle\n").unwrap();
    let mut args = base_args(w, i, o);
    // conf 0: a fresh model scores ≈ σ(-4.6)² ≈ 1e-4, so only a zero threshold keeps boxes.
    args.extend([
        "--conf",
        "0",
        "--max-dets",
        "5",
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let run = ssod(&args);
    assert!(run.status.success(), "{}", text(&run));
    // The broken file is skipped with a warning naming it; the text file is not an image.
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("c_broken.png"), "{stderr}");
    assert!(!stderr.contains("notes.txt"), "{stderr}");

    // Drawn images keep their names and sizes.
    let a = image::open(out.join("a.png")).unwrap();
    assert_eq!((a.width(), a.height()), (80, 60));
    let b = image::open(out.join("b.jpg")).unwrap();
    assert_eq!((b.width(), b.height()), (50, 70));
    assert!(!out.join("c_broken.png").exists());
    // Boxes were drawn: the output differs from the input.
    let a_in = image::open(input.join("a.png")).unwrap().to_rgb8();
    assert_ne!(a.to_rgb8(), a_in, "no box drawn on a.png");

    // images.json: ids are 1-based positions in sorted order (a.png 1, b.jpg 2, c_broken.png 3
    // skipped), with sizes and the category named by --labels.
    let images: CocoDataset = read_json_file(&out.join("images.json")).unwrap();
    let ids: Vec<(u64, &str, u32, u32)> = images
        .images
        .iter()
        .map(|im| (im.id, im.file_name.as_str(), im.width, im.height))
        .collect();
    assert_eq!(ids, vec![(1, "a.png", 80, 60), (2, "b.jpg", 50, 70)]);
    assert_eq!(images.categories.len(), 1);
    assert_eq!(
        (images.categories[0].id, images.categories[0].name.as_str()),
        (1, "bottle")
    );

    // detections.json: COCO results; every box inside its image, at most 5 per image.
    let dets: Vec<Detection> = read_json_file(&out.join("detections.json")).unwrap();
    assert!(!dets.is_empty());
    for id in [1u64, 2] {
        let n = dets.iter().filter(|d| d.image_id == id).count();
        assert!((1..=5).contains(&n), "image {id}: {n} detections");
    }
    for d in &dets {
        let (w, h) = if d.image_id == 1 {
            (80.0, 60.0)
        } else {
            (50.0, 70.0)
        };
        let [x, y, bw, bh] = d.bbox_xywh;
        assert_eq!(d.category_id, 1);
        assert!(x >= 0.0 && y >= 0.0 && bw >= 0.0 && bh >= 0.0, "{d:?}");
        assert!(x + bw <= w + 1e-3 && y + bh <= h + 1e-3, "{d:?}");
    }
    // The same detections as the library's `detect_images` on the same model, image and
    // settings (`--nms` defaults to 0.45): scores and boxes, in order.
    let model = YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 1)).unwrap();
    let cfg = PostprocessConfig {
        conf_thre: 0.0,
        nms_thre: 0.45,
        class_agnostic: false,
        max_dets: Some(5),
    };
    for (id, name) in [(1u64, "a.png"), (2, "b.jpg")] {
        let img = image::open(input.join(name)).unwrap().to_rgb8();
        let lib = detect_images(&model, &[img], (64, 64), &cfg).unwrap();
        let want = to_coco(&lib[0], id, &[1]).unwrap();
        let got: Vec<&Detection> = dets.iter().filter(|d| d.image_id == id).collect();
        assert_eq!(got.len(), want.len(), "{name}: {got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.score - w.score).abs() <= 1e-6 * w.score,
                "{name}: {g:?} vs {w:?}"
            );
            for k in 0..4 {
                assert!(
                    (g.bbox_xywh[k] - w.bbox_xywh[k]).abs() <= 1e-3,
                    "{name}: {g:?} vs {w:?}"
                );
            }
        }
    }
    // The results load into the evaluator's dataset types as they are: image ids are known.
    assert!(dets
        .iter()
        .all(|d| images.images.iter().any(|im| im.id == d.image_id)));

    // A second run into the same (now non-empty) folder is refused without --force ...
    let again = ssod(&base_args(w, i, o));
    assert!(!again.status.success());
    assert!(text(&again).contains("not empty"), "{}", text(&again));
    // ... and allowed with it; a single file as input works too (default conf 0.25 → no boxes).
    let single = input.join("a.png");
    let mut forced = base_args(w, single.to_str().unwrap(), o);
    forced.push("--force");
    let run = ssod(&forced);
    assert!(run.status.success(), "{}", text(&run));
    let dets: Vec<Detection> = read_json_file(&out.join("detections.json")).unwrap();
    assert!(dets.is_empty(), "conf 0.25 on a fresh model keeps nothing");

    // --categories: class 0 takes the first category of a COCO json (id 5, "buoy").
    let cats = dir.join("cats.json");
    std::fs::write(
        &cats,
        r#"{"images": [], "annotations": [], "categories": [{"id": 5, "name": "buoy"}]}"#,
    )
    .unwrap();
    let mut args = base_args(w, i, o);
    args.extend([
        "--force",
        "--conf",
        "0",
        "--categories",
        cats.to_str().unwrap(),
    ]);
    let run = ssod(&args);
    assert!(run.status.success(), "{}", text(&run));
    let dets: Vec<Detection> = read_json_file(&out.join("detections.json")).unwrap();
    assert!(!dets.is_empty() && dets.iter().all(|d| d.category_id == 5));
    let images: CocoDataset = read_json_file(&out.join("images.json")).unwrap();
    assert_eq!(images.categories[0].name, "buoy");
}

#[test]
fn detect_bad_input_names_the_culprit() {
    let dir = temp_dir("bad");
    let (weights, input) = setup(&dir);
    let (w, i) = (weights.to_str().unwrap(), input.to_str().unwrap());
    let out = |n: &str| dir.join(n).to_str().unwrap().to_string();

    // Weights for 1 class loaded into a 2-class model: the strict load names the tensors.
    let o1 = out("o1");
    let mut args = base_args(w, i, &o1);
    args[10] = "2";
    let run = ssod(&args);
    assert!(!run.status.success());
    let t = text(&run);
    assert!(
        t.contains("head.cls_preds.0.weight") && t.contains("tiny.safetensors"),
        "{t}"
    );
    assert!(!t.contains("internal error"), "{t}");

    // Missing weights file.
    let o2 = out("o2");
    let missing = dir.join("nope.safetensors");
    let run = ssod(&base_args(missing.to_str().unwrap(), i, &o2));
    assert!(!run.status.success());
    assert!(text(&run).contains("nope.safetensors"), "{}", text(&run));

    // Missing input, bad size, bad threshold, wrong number of labels.
    let o3 = out("o3");
    let run = ssod(&base_args(w, dir.join("nothing").to_str().unwrap(), &o3));
    assert!(
        !run.status.success() && text(&run).contains("nothing"),
        "{}",
        text(&run)
    );
    let mut args = base_args(w, i, &o3);
    args[16] = "70";
    let run = ssod(&args);
    assert!(
        !run.status.success() && text(&run).contains("--size"),
        "{}",
        text(&run)
    );
    let mut args = base_args(w, i, &o3);
    args.extend(["--conf", "1.5"]);
    let run = ssod(&args);
    assert!(
        !run.status.success() && text(&run).contains("--conf"),
        "{}",
        text(&run)
    );
    let labels = dir.join("two.txt");
    std::fs::write(&labels, "a\nb\n").unwrap();
    let mut args = base_args(w, i, &o3);
    args.extend(["--labels", labels.to_str().unwrap()]);
    let run = ssod(&args);
    assert!(
        !run.status.success() && text(&run).contains("two.txt"),
        "{}",
        text(&run)
    );

    // --out equal to the input folder would overwrite the inputs: refused even with --force.
    let mut args = base_args(w, i, i);
    args.push("--force");
    let run = ssod(&args);
    assert!(
        !run.status.success() && text(&run).contains("input folder"),
        "{}",
        text(&run)
    );
    assert_eq!(
        std::fs::read(input.join("c_broken.png")).unwrap(),
        b"not a png"
    );
}

/// `--weights` with a training state takes its EMA weights (and says so): the same detections
/// as the model-only file of those weights, not those of the raw weights.
#[test]
fn detect_takes_a_training_states_ema_weights() {
    use ssod::train::{build_optimizer, save_checkpoint, ModelEma, TrainConfig, TrainProgress};
    let dir = temp_dir("state");
    let (_, input) = setup(&dir);
    let cfg = YoloXConfig::custom(0.33, 0.125, false, 1);
    let raw = YoloX::new(YoloXConfig {
        seed: 1,
        ..cfg.clone()
    })
    .unwrap();
    let ema_model = YoloX::new(cfg.clone()).unwrap();
    let ema = ModelEma::new(&raw.store, ema_model.store.clone(), 0.9, 1.0).unwrap();
    // The EMA starts as a copy of the raw weights; give it other ones (those of seed 2).
    let other = YoloX::new(YoloXConfig { seed: 2, ..cfg }).unwrap();
    for (e, o) in ema_model.store.entries().iter().zip(other.store.entries()) {
        e.tensor.copy_values_from(&o.tensor.to_vec()).unwrap();
    }
    let config = TrainConfig::default();
    let optimizer = build_optimizer(&config, &raw.store);
    let state = dir.join("last.ckpt.safetensors");
    save_checkpoint(
        &state,
        &raw.store,
        Some(&ema),
        optimizer.as_ref(),
        TrainProgress::default(),
        &config,
    )
    .unwrap();
    let ema_only = dir.join("ema.safetensors");
    let raw_only = dir.join("raw.safetensors");
    ema_model.save(&ema_only).unwrap();
    raw.save(&raw_only).unwrap();
    let detections = |weights: &Path, name: &str| -> String {
        let out = dir.join(name);
        let mut args = base_args(
            weights.to_str().unwrap(),
            input.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        args.extend(["--conf", "0"]);
        let run = ssod(&args);
        assert!(run.status.success(), "{}", text(&run));
        if name == "from_state" {
            assert!(
                String::from_utf8_lossy(&run.stderr).contains("using the EMA weights"),
                "{}",
                text(&run)
            );
        }
        std::fs::read_to_string(out.join("detections.json")).unwrap()
    };
    let from_state = detections(&state, "from_state");
    assert_eq!(from_state, detections(&ema_only, "from_ema"));
    assert_ne!(from_state, detections(&raw_only, "from_raw"));

    // A state of another class count: a short error, not one line per tensor.
    let other_out = dir.join("o");
    let mut args = base_args(
        state.to_str().unwrap(),
        input.to_str().unwrap(),
        other_out.to_str().unwrap(),
    );
    args[10] = "2";
    let run = ssod(&args);
    assert!(!run.status.success());
    let t = text(&run);
    assert!(
        t.contains("training state") && t.contains("with another shape"),
        "{t}"
    );
    assert!(t.lines().count() < 25 && t.len() < 3000, "{t}");
}

/// A video as --input: every frame through the model (with --max-dets 3 and --conf 0, three
/// detections each), an annotated video with as many frames of the same size at the source's
/// rate, and one COCO image per frame. An unknown --device is named.
#[test]
fn detect_a_video() {
    if !common::tool_or_skip(common::runs("ffmpeg", &["-version"])) {
        return;
    }
    let dir = temp_dir("video");
    let (weights, _) = setup(&dir);
    let video = dir.join("clip.mp4");
    let made = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=96x64:rate=8",
        ])
        .args(["-t", "1", "-pix_fmt", "yuv420p"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(made.success());
    let out = dir.join("out");
    let (w, v, o) = (
        weights.to_str().unwrap(),
        video.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let mut args = base_args(w, v, o);
    args.extend(["--conf", "0", "--max-dets", "3"]);
    let run = ssod(&args);
    assert!(run.status.success(), "{}", text(&run));
    assert!(String::from_utf8_lossy(&run.stdout).contains("8 frames at 8.00 fps"));
    let images: CocoDataset = read_json_file(&out.join("images.json")).unwrap();
    assert_eq!(images.images.len(), 8);
    assert_eq!(images.images[0].file_name, "frame_000001");
    let dets: Vec<Detection> = read_json_file(&out.join("detections.json")).unwrap();
    assert_eq!(dets.len(), 8 * 3);
    // The annotated video decodes to 8 frames of the input's size.
    let mut frames = Vec::new();
    ssod::data::frames::decode_video(
        &out.join("clip.detections.mp4"),
        Path::new("ffmpeg"),
        &mut |_, f| {
            frames.push(f.dimensions());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(frames, vec![(96, 64); 8]);
    // An unknown device is named.
    let o2 = dir.join("o2");
    let mut args = base_args(w, v, o2.to_str().unwrap());
    args.extend(["--device", "tpu"]);
    let run = ssod(&args);
    assert!(
        !run.status.success() && text(&run).contains("--device"),
        "{}",
        text(&run)
    );
    std::fs::remove_dir_all(&dir).ok();
}
