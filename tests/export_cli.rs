//! `ssod export` end to end on a random-weight tiny YOLOX (width 0.125): the file is written, is
//! the library's export of the loaded weights, runs in tract with the stated shapes, is not
//! overwritten without --force, and bad arguments give errors that name the argument.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tract_onnx::prelude::*;

use ssod::export::{encode_onnx, yolox_to_onnx, OnnxOptions, OnnxOutput};
use ssod::models::{YoloX, YoloXConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod-export-cli-{name}-{}", std::process::id()));
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

/// A tiny 2-class model (non-default BN statistics) saved to `dir`.
fn tiny_weights(dir: &Path) -> (YoloX, PathBuf) {
    let model = YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 2)).unwrap();
    for e in model.store.entries() {
        if e.name.ends_with("bn.running_mean") {
            e.tensor
                .update_values(|v| {
                    v.iter_mut()
                        .enumerate()
                        .for_each(|(i, x)| *x = (i % 7) as f32 * 0.1 - 0.3)
                })
                .unwrap();
        }
    }
    let path = dir.join("tiny.safetensors");
    model.save(&path).unwrap();
    (model, path)
}

fn args<'a>(weights: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "export",
        "--weights",
        weights,
        "--model",
        "yolox-s",
        "--width",
        "0.125",
        "--depth",
        "0.33",
        "--classes",
        "2",
        "--format",
        "onnx",
        "--out",
        out,
    ];
    v.extend_from_slice(extra);
    v
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn export_end_to_end() {
    let dir = temp_dir("e2e");
    let (model, weights) = tiny_weights(&dir);
    let out = dir.join("model.onnx");
    let o = ssod(&args(
        s(&weights),
        s(&out),
        &["--size", "64x96", "--decode"],
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("[1, 3, 64, 96]"), "{}", text(&o));
    assert!(text(&o).contains("decoded"), "{}", text(&o));
    let bytes = std::fs::read(&out).unwrap();
    // The file is the library's export of the loaded weights, byte for byte.
    let opts = OnnxOptions {
        height: 64,
        width: 96,
        output: OnnxOutput::Decoded,
    };
    assert_eq!(bytes, encode_onnx(&yolox_to_onnx(&model, &opts).unwrap()));
    // And it runs in an ONNX runtime with the stated shapes.
    let runnable = tract_onnx::onnx()
        .model_for_path(&out)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let input = Tensor::zero::<f32>(&[1, 3, 64, 96]).unwrap();
    let result = runnable.run(tvec!(input.into())).unwrap();
    let anchors = YoloX::anchor_grid(64, 96).len();
    assert_eq!(result[0].shape(), &[1, anchors, 7]);
    // No temporary files are left beside it.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    // An existing --out is refused and kept; --force overwrites it.
    std::fs::write(&out, b"keep me").unwrap();
    let o = ssod(&args(s(&weights), s(&out), &["--size", "64"]));
    assert!(!o.status.success());
    let err = text(&o);
    assert!(err.contains("--out") && err.contains(s(&out)), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = ssod(&args(s(&weights), s(&out), &["--size", "64", "--force"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("raw"), "{}", text(&o));
    let opts = OnnxOptions {
        height: 64,
        width: 64,
        output: OnnxOutput::Raw,
    };
    assert_eq!(
        std::fs::read(&out).unwrap(),
        encode_onnx(&yolox_to_onnx(&model, &opts).unwrap())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_name_the_argument() {
    let dir = temp_dir("bad");
    let (_, weights) = tiny_weights(&dir);
    let out = dir.join("model.onnx");
    for size in ["33", "0", "64x", "x64", "64x100", "big", "64x64x64"] {
        let o = ssod(&args(s(&weights), s(&out), &["--size", size]));
        assert!(!o.status.success(), "--size {size} accepted");
        assert!(text(&o).contains("--size"), "--size {size}: {}", text(&o));
    }
    // The checkpoint has 2 classes.
    let mut a = args(s(&weights), s(&out), &["--size", "64"]);
    let i = a.iter().position(|&x| x == "--classes").unwrap();
    a[i + 1] = "3";
    let o = ssod(&a);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(
        err.contains("--classes 3") && err.contains("2 classes"),
        "{err}"
    );
    a[i + 1] = "0";
    let o = ssod(&a);
    assert!(!o.status.success());
    assert!(text(&o).contains("--classes"), "{}", text(&o));
    // Another width: the load error names --weights and the tensors.
    let mut a = args(s(&weights), s(&out), &["--size", "64"]);
    let i = a.iter().position(|&x| x == "--width").unwrap();
    a[i + 1] = "0.25";
    let o = ssod(&a);
    assert!(!o.status.success());
    let err = text(&o);
    assert!(err.contains("--weights") && err.contains("shape"), "{err}");
    // A missing checkpoint, an unknown format.
    let missing = dir.join("missing.safetensors");
    let o = ssod(&args(s(&missing), s(&out), &["--size", "64"]));
    assert!(!o.status.success());
    assert!(text(&o).contains(s(&missing)), "{}", text(&o));
    let mut a = args(s(&weights), s(&out), &["--size", "64"]);
    let i = a.iter().position(|&x| x == "--format").unwrap();
    a[i + 1] = "tflite";
    let o = ssod(&a);
    assert!(!o.status.success());
    assert!(text(&o).contains("--format"), "{}", text(&o));
    assert!(!out.exists(), "a failed export left {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
}
