//! `ssod frames` (docs/the-study.md, read_video.py): image folders and ffmpeg-decoded videos.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{Rgb, RgbImage};
use ssod::data::frames::{FrameSelection, FrameSelector};

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("data_frames")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn frames(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .arg("frames")
        .args(args)
        .output()
        .unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// 20 frames 16x8, frame k filled with grey level 10*k, written in reverse order (the reader sorts).
fn write_sequence(dir: &Path) {
    for k in (0..20u8).rev() {
        RgbImage::from_pixel(16, 8, Rgb([10 * k; 3]))
            .save(dir.join(format!("img_{k:03}.png")))
            .unwrap();
    }
}

/// True when ffmpeg runs; without it the video test prints its skip line and returns, except
/// under CI (`CI` set), where ffmpeg is installed and a missing one is a failure.
fn have_ffmpeg() -> bool {
    common::tool_or_skip(common::runs("ffmpeg", &["-version"]))
}

/// 3 s of ffmpeg's testsrc at 10 fps, 64x48, lossless FFV1: exactly 30 frames.
fn make_video(dir: &Path) -> PathBuf {
    let video = dir.join("testsrc.mkv");
    let o = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=10",
        ])
        .args(["-t", "3", "-c:v", "ffv1"])
        .arg(&video)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    video
}

#[test]
fn keep_prob_keeps_about_p_of_the_frames() {
    // 10000 draws at p = 0.05: mean 500, binomial sd sqrt(10000*0.05*0.95) = 21.8; ±100 is > 4.5 sd.
    let mut sel = FrameSelector::new(FrameSelection::KeepProb(0.05), 0).unwrap();
    let kept = (0..10_000).filter(|&i| sel.keep(i)).count();
    assert!((400..=600).contains(&kept), "{kept}");
    assert!(FrameSelector::new(FrameSelection::KeepProb(1.5), 0).is_err());
    assert!(FrameSelector::new(FrameSelection::Every(0), 0).is_err());
}

#[test]
fn folder_every_n_keeps_indices_0_n_2n() {
    let dir = fresh_dir("every");
    let input = dir.join("seq");
    std::fs::create_dir_all(&input).unwrap();
    write_sequence(&input);
    let out = dir.join("out");
    let o = frames(&[
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--every",
        "3",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 20 frames, every 3rd: 0, 3, 6, 9, 12, 15, 18 -> 7 frames.
    let expected: Vec<String> = [0, 3, 6, 9, 12, 15, 18]
        .iter()
        .map(|k| format!("frame_{k:06}.png"))
        .collect();
    assert_eq!(listing(&out), expected);
    // frame_000006 is img_006: grey 60.
    let img = image::open(out.join("frame_000006.png")).unwrap().to_rgb8();
    assert_eq!(img.get_pixel(3, 3), &Rgb([60, 60, 60]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("kept 7 of 20 frames"));

    // A non-empty output folder is refused without --force.
    let again = frames(&[
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--every",
        "3",
    ]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn folder_keep_prob_is_deterministic_under_a_seed() {
    let dir = fresh_dir("prob");
    let input = dir.join("seq");
    std::fs::create_dir_all(&input).unwrap();
    write_sequence(&input);
    let run = |seed: &str, out: &str| {
        let out = dir.join(out);
        let o = frames(&[
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--keep-prob",
            "0.5",
            "--seed",
            seed,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        listing(&out)
    };
    let a = run("1", "a");
    let b = run("1", "b");
    let c = run("2", "c");
    assert_eq!(a, b, "same seed, same frames");
    assert_ne!(a, c, "another seed, other frames");
    assert!(!a.is_empty() && a.len() < 20, "{a:?}");
}

#[test]
fn folder_resize_and_bad_input() {
    let dir = fresh_dir("resize");
    let input = dir.join("seq");
    std::fs::create_dir_all(&input).unwrap();
    write_sequence(&input);
    let out = dir.join("out");
    let o = frames(&[
        "--input",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--every",
        "10",
        "--resize",
        "8x6",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        image::image_dimensions(out.join("frame_000010.png")).unwrap(),
        (8, 6)
    );

    let bad = frames(&[
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.join("o2").to_str().unwrap(),
        "--resize",
        "8by6",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--resize"));
    let both = frames(&[
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.join("o3").to_str().unwrap(),
        "--every",
        "2",
        "--keep-prob",
        "0.1",
    ]);
    assert!(
        !both.status.success(),
        "--every and --keep-prob exclude each other"
    );

    // A corrupt image in the sequence is named.
    std::fs::write(input.join("img_005.png"), b"not a png").unwrap();
    let corrupt = frames(&[
        "--input",
        input.to_str().unwrap(),
        "--out",
        dir.join("o4").to_str().unwrap(),
        "--every",
        "1",
    ]);
    assert!(!corrupt.status.success());
    assert!(String::from_utf8_lossy(&corrupt.stderr).contains("img_005.png"));
}

#[test]
fn video_every_n_resize_and_keep_prob() {
    if !have_ffmpeg() {
        return;
    }
    let dir = fresh_dir("video");
    let video = make_video(&dir);
    let out = dir.join("every");
    let o = frames(&[
        "--input",
        video.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--every",
        "10",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 30 frames, every 10th: 0, 10, 20.
    assert_eq!(
        listing(&out),
        ["frame_000000.png", "frame_000010.png", "frame_000020.png"]
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("kept 3 of 30 frames"));
    assert_eq!(
        image::image_dimensions(out.join("frame_000010.png")).unwrap(),
        (64, 48)
    );
    // Lossless video: frame 0 equals ffmpeg's own decode of frame 0.
    let ref_png = dir.join("ref0.png");
    let r = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(&video)
        .args(["-frames:v", "1", "-pix_fmt", "rgb24"])
        .arg(&ref_png)
        .output()
        .unwrap();
    assert!(r.status.success());
    assert_eq!(
        image::open(&ref_png).unwrap().to_rgb8(),
        image::open(out.join("frame_000000.png")).unwrap().to_rgb8()
    );

    let resized = dir.join("resized");
    let o = frames(&[
        "--input",
        video.to_str().unwrap(),
        "--out",
        resized.to_str().unwrap(),
        "--every",
        "15",
        "--resize",
        "32x24",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(listing(&resized).len(), 2);
    assert_eq!(
        image::image_dimensions(resized.join("frame_000015.png")).unwrap(),
        (32, 24)
    );

    let run = |seed: &str, name: &str| {
        let out = dir.join(name);
        let o = frames(&[
            "--input",
            video.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--keep-prob",
            "0.3",
            "--seed",
            seed,
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        listing(&out)
    };
    let a = run("4", "p1");
    assert_eq!(a, run("4", "p2"));
    assert_ne!(a, run("5", "p3"));
}

#[test]
fn missing_ffmpeg_is_a_clear_error() {
    let dir = fresh_dir("no_ffmpeg");
    let video = dir.join("clip.mp4");
    std::fs::write(&video, b"whatever").unwrap();
    let o = frames(&[
        "--input",
        video.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
        "--ffmpeg",
        "/nonexistent/bin/ffmpeg",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("/nonexistent/bin/ffmpeg")
            && err.contains("not found")
            && err.contains("install"),
        "{err}"
    );
}

#[test]
fn undecodable_video_reports_ffmpeg_message() {
    if !have_ffmpeg() {
        return;
    }
    let dir = fresh_dir("bad_video");
    let video = dir.join("clip.mp4");
    std::fs::write(&video, b"this is not a video").unwrap();
    let o = frames(&[
        "--input",
        video.to_str().unwrap(),
        "--out",
        dir.join("out").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("clip.mp4") && err.contains("ffmpeg"), "{err}");
}
