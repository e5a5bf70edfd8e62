//! PyTorch checkpoints (`.pth`) without Python: the fixtures of
//! `tests/fixtures/make_pth_fixtures.py` (torch.save of `yolox_tiny.safetensors`'s weights as
//! YOLOX's trainer saves them, in float16, in bfloat16 as strided views of one storage, and in the
//! legacy format) read back bit for bit; partial loads for fine-tuning on another number of
//! classes; every malformed file an error naming the file and what is wrong, never a panic;
//! `ssod detect --weights X.pth` and `scripts/finetune_coco.rhai` at scale tiny.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ssod::models::{LoadOptions, WeightsSource, YoloX, YoloXConfig};
use ssod::tensor::pth::{parse, read_pth, PthDtype, PthFormat, PthLayout};
use ssod::tensor::safetensors_io::read_safetensors;
use ssod::Tensor;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssod-pth-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The weights every fixture holds, as the safetensors file has them (f32; int64 counters).
fn reference() -> BTreeMap<String, Tensor> {
    read_safetensors(&fixture("yolox_tiny.safetensors"))
        .unwrap()
        .tensors
}

/// The config of the fixture's model (make_yolox_fixture.py's `yolox_tiny`).
fn tiny_config(classes: usize) -> YoloXConfig {
    YoloXConfig::custom(0.33, 0.046875, false, classes)
}

/// `got` holds exactly the tensors of `want`, each with its shape and, after `round` (the
/// precision the file stored), the same bits.
fn assert_same_bits(
    what: &str,
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
    round: impl Fn(&str, f32) -> f32,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: tensor names"
    );
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.dims(), w.dims(), "{what}: shape of {name}");
        let (g, w) = (g.to_vec(), w.to_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            let b = round(name, *b);
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{what}: {name}[{i}] is {a}, the reference {b}"
            );
        }
    }
}

fn is_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

#[test]
fn trainer_checkpoint_reads_bit_for_bit() {
    let file = read_pth(&fixture("yolox_tiny.pth")).unwrap();
    assert_eq!(file.format, PthFormat::Zip);
    match &file.layout {
        PthLayout::Checkpoint { keys } => {
            for k in ["start_epoch", "model", "optimizer", "best_ap"] {
                assert!(keys.iter().any(|x| x == k), "keys {keys:?} lack {k}");
            }
        }
        other => panic!("layout {other:?}"),
    }
    let want = reference();
    assert_same_bits("yolox_tiny.pth", &file.tensors, &want, |_, x| x);
    for (name, dtype) in &file.dtypes {
        let expected = if is_counter(name) {
            PthDtype::I64
        } else {
            PthDtype::F32
        };
        assert_eq!(*dtype, expected, "{name}");
    }
}

#[test]
fn half_precision_state_dicts_read_bit_for_bit() {
    let want = reference();
    let f16 = read_pth(&fixture("yolox_tiny_fp16.pth")).unwrap();
    assert_eq!(f16.layout, PthLayout::StateDict);
    assert_same_bits("fp16", &f16.tensors, &want, |n, x| {
        if is_counter(n) {
            x
        } else {
            half::f16::from_f32(x).to_f32()
        }
    });
    assert!(f16.dtypes.iter().all(|(n, d)| *d
        == if is_counter(n) {
            PthDtype::I64
        } else {
            PthDtype::F16
        }));

    // One shared bf16 storage: every tensor at its own offset, the 4-d weights transposed.
    let bf16 = read_pth(&fixture("yolox_tiny_bf16_views.pth")).unwrap();
    assert_eq!(bf16.layout, PthLayout::StateDict);
    assert_same_bits("bf16 views", &bf16.tensors, &want, |n, x| {
        if is_counter(n) {
            x
        } else {
            half::bf16::from_f32(x).to_f32()
        }
    });
}

#[test]
fn legacy_format_reads_bit_for_bit() {
    let file = read_pth(&fixture("yolox_tiny_legacy.pth")).unwrap();
    assert_eq!(file.format, PthFormat::Legacy);
    assert!(matches!(file.layout, PthLayout::Checkpoint { .. }));
    assert_same_bits("legacy", &file.tensors, &reference(), |_, x| x);
}

/// Every tensor of the model equals the reference (after `round`).
fn assert_model_holds(model: &YoloX, round: impl Fn(f32) -> f32) {
    let want = reference();
    for e in model.store.entries() {
        let w: Vec<u32> = want[&e.name]
            .to_vec()
            .iter()
            .map(|x| round(*x).to_bits())
            .collect();
        let g: Vec<u32> = e.tensor.to_vec().iter().map(|x| x.to_bits()).collect();
        assert_eq!(g, w, "{}", e.name);
    }
}

#[test]
fn yolox_load_takes_pth_files() {
    let model = YoloX::new(tiny_config(2)).unwrap();
    let loaded = model.load(&fixture("yolox_tiny.pth")).unwrap();
    assert_eq!(loaded.source, WeightsSource::PytorchCheckpoint);
    assert_eq!(loaded.tensors, model.store.entries().len());
    assert!(loaded.is_complete());
    assert_model_holds(&model, |x| x);

    let model = YoloX::new(tiny_config(2)).unwrap();
    let loaded = model.load(&fixture("yolox_tiny_fp16.pth")).unwrap();
    assert_eq!(loaded.source, WeightsSource::Model);
    assert_model_holds(&model, |x| half::f16::from_f32(x).to_f32());

    let model = YoloX::new(tiny_config(2)).unwrap();
    model.load(&fixture("yolox_tiny_legacy.pth")).unwrap();
    assert_model_holds(&model, |x| x);
}

#[test]
fn partial_load_for_another_number_of_classes() {
    let path = fixture("yolox_tiny.pth");
    let want = reference();
    let cls = |n: &str| n.starts_with("head.cls_preds.");

    // Strict (the default) refuses the 2-class file for a 1-class model and says why.
    let model = YoloX::new(tiny_config(1)).unwrap();
    let err = model.load(&path).unwrap_err().to_string();
    assert!(err.contains("yolox_tiny.pth"), "{err}");
    assert!(err.contains("6 with another shape"), "{err}");
    assert!(err.contains("head.cls_preds.0.weight"), "{err}");
    // ... and changed nothing.
    let fresh = YoloX::new(tiny_config(1)).unwrap();
    for (a, b) in model.store.entries().iter().zip(fresh.store.entries()) {
        assert_eq!(a.tensor.to_vec(), b.tensor.to_vec(), "{}", a.name);
    }

    // Skipping the class head: everything else loads, the head keeps its initial values.
    let skip = LoadOptions {
        strict: false,
        skip: vec!["head.cls_preds".into()],
    };
    let loaded = model.load_with(&path, &skip).unwrap();
    assert_eq!(loaded.source, WeightsSource::PytorchCheckpoint);
    assert_eq!(
        loaded.skipped,
        [0, 1, 2]
            .iter()
            .flat_map(|l| ["weight", "bias"].map(|p| format!("head.cls_preds.{l}.{p}")))
            .collect::<Vec<_>>()
    );
    assert!(loaded.missing.is_empty() && loaded.misshaped.is_empty());
    assert!(loaded.unexpected.is_empty(), "{:?}", loaded.unexpected);
    assert_eq!(loaded.tensors, model.store.entries().len() - 6);
    for (e, f) in model.store.entries().iter().zip(fresh.store.entries()) {
        let expected = if cls(&e.name) {
            f.tensor.to_vec()
        } else {
            want[&e.name].to_vec()
        };
        assert_eq!(e.tensor.to_vec(), expected, "{}", e.name);
    }
    let summary = loaded.summary();
    assert!(summary.lines().count() <= 5, "{summary}");
    assert!(summary.contains("6 skipped"), "{summary}");
    assert!(summary.contains("and 2 more"), "{summary}");

    // Strict with the skip: everything outside the head must (and does) match.
    let model = YoloX::new(tiny_config(1)).unwrap();
    let strict_skip = LoadOptions {
        strict: true,
        skip: vec!["head.cls_preds".into()],
    };
    assert_eq!(
        model.load_with(&path, &strict_skip).unwrap().tensors,
        loaded.tensors
    );

    // Non-strict without a skip: the same load, the head reported as mis-shaped.
    let model = YoloX::new(tiny_config(1)).unwrap();
    let loose = LoadOptions {
        strict: false,
        skip: vec![],
    };
    let r = model.load_with(&path, &loose).unwrap();
    assert_eq!(r.tensors, loaded.tensors);
    assert_eq!(r.misshaped.len(), 6);
    assert_eq!(
        r.misshaped[0],
        (
            "head.cls_preds.0.weight".to_string(),
            vec![2, 12, 1, 1],
            vec![1, 12, 1, 1]
        )
    );
    assert!(
        r.summary().contains("6 with another shape"),
        "{}",
        r.summary()
    );

    // A wider model shares only the box and objectness biases with the file: loaded, and the
    // rest reported.
    let wider = YoloX::new(YoloXConfig::custom(0.33, 0.125, false, 1)).unwrap();
    let r = wider.load_with(&path, &loose).unwrap();
    assert_eq!(r.tensors, 6);
    assert_eq!(r.misshaped.len(), wider.store.entries().len() - 6);
    assert!(r.summary().lines().count() <= 5, "{}", r.summary());

    // A file with nothing of the model: a non-strict load of nothing is an error.
    let dir = temp_dir("partial");
    let foreign = dir.join("foreign.safetensors");
    let t = Tensor::from_vec(vec![1.0, 2.0], vec![2]).unwrap();
    ssod::tensor::safetensors_io::write_safetensors(
        &foreign,
        [("classifier.weight", &t)],
        ssod::tensor::safetensors_io::SaveDtype::F32,
        None,
    )
    .unwrap();
    let err = model.load_with(&foreign, &loose).unwrap_err().to_string();
    assert!(err.contains("nothing in it matches"), "{err}");
    assert!(err.contains("classifier.weight"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A malformed file's error: it names the file and says `what`.
fn load_error(path: &Path) -> String {
    let model = YoloX::new(tiny_config(2)).unwrap();
    let err = model.load(path).unwrap_err().to_string();
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(err.contains(name.as_ref()), "no file name in: {err}");
    err
}

#[test]
fn bad_files_are_named_errors() {
    let dir = temp_dir("bad");
    let assert_says = |path: &Path, parts: &[&str]| {
        let err = load_error(path);
        for p in parts {
            assert!(err.contains(p), "`{p}` not in: {err}");
        }
    };

    // Truncated zip: the end of the archive (its directory) is gone.
    let bytes = std::fs::read(fixture("yolox_tiny.pth")).unwrap();
    let cut = dir.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert_says(&cut, &["truncated"]);
    // Truncated legacy stream.
    let legacy = std::fs::read(fixture("yolox_tiny_legacy.pth")).unwrap();
    let cut = dir.join("cut_legacy.pth");
    std::fs::write(&cut, &legacy[..legacy.len() - 100]).unwrap();
    assert_says(&cut, &["truncated"]);

    // Neither a zip nor a pickle (nor safetensors).
    let text = dir.join("notes.pth");
    std::fs::write(&text, "these are not weights\n").unwrap();
    assert_says(&text, &["not a PyTorch checkpoint", "zip", "pickle"]);
    // A zip that is not a torch.save archive.
    let zip = dir.join("other.pth");
    std::fs::write(&zip, stored_zip(&[("readme.txt", b"hello")])).unwrap();
    assert_says(&zip, &["data.pkl", "readme.txt"]);
    // A pickle that is not a torch.save stream.
    let pickle = dir.join("plain.pkl");
    std::fs::write(&pickle, b"\x80\x02}q\x00.").unwrap();
    assert_says(&pickle, &["torch magic number"]);

    // An opcode outside what is read (protocol 0's text PUT), named with its offset.
    assert_says(
        &fixture("bad_opcode.pth"),
        &["PUT (0x70)", "at byte", "data.pkl"],
    );
    // Classes outside what is read, where a tensor is needed: named, with the entry.
    assert_says(&fixture("bad_numpy.pth"), &["`x`", "numpy", "not a tensor"]);
    assert_says(
        &fixture("bad_complex.pth"),
        &["tensor `w`", "torch.ComplexFloatStorage"],
    );
    // A storage whose size does not match what the file says of it.
    assert_says(
        &fixture("bad_storage.pth"),
        &["tensor `w`", "storage `0`", "12 bytes", "16 bytes"],
    );
    // A checkpoint dict without `model`: its keys are listed.
    assert_says(
        &fixture("bad_no_model.pth"),
        &["no `model` entry", "`start_epoch`", "`optimizer`"],
    );

    // A compressed member (torch never writes one): named, with what to do.
    let mut deflated = std::fs::read(fixture("bad_storage.pth")).unwrap();
    set_methods(&mut deflated, 8);
    let path = dir.join("deflated.pth");
    std::fs::write(&path, &deflated).unwrap();
    assert_says(&path, &["is compressed (method 8)", "re-save"]);

    // A damaged storage byte: the member's CRC-32 catches it.
    let mut damaged = std::fs::read(fixture("yolox_tiny_fp16.pth")).unwrap();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x10;
    let path = dir.join("damaged.pth");
    std::fs::write(&path, &damaged).unwrap();
    assert_says(&path, &["CRC-32"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cut or damaged anywhere, a file gives an error (or, for a byte nothing reads, the weights),
/// never a panic.
#[test]
fn no_cut_or_flipped_byte_panics() {
    for name in [
        "bad_storage.pth",
        "bad_no_model.pth",
        "bad_numpy.pth",
        "yolox_tiny_legacy.pth",
    ] {
        let bytes = std::fs::read(fixture(name)).unwrap();
        let step = (bytes.len() / 600).max(1);
        for cut in (0..bytes.len()).step_by(step) {
            assert!(parse(&bytes[..cut]).is_err(), "{name} cut at {cut}");
        }
        // Flip bytes in the first 4 KiB (zip headers, the pickle) and near the end.
        let limit = bytes.len().min(4096);
        let positions = (0..limit).chain(bytes.len().saturating_sub(400)..bytes.len());
        for at in positions {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                let _ = parse(&b);
            }
        }
    }
}

/// Set the compression method of every member (local and central headers).
fn set_methods(zip: &mut [u8], method: u16) {
    let mut i = 0;
    while i + 4 <= zip.len() {
        let at = match &zip[i..i + 4] {
            b"PK\x03\x04" => Some(i + 8),
            b"PK\x01\x02" => Some(i + 10),
            _ => None,
        };
        if let Some(at) = at {
            zip[at..at + 2].copy_from_slice(&method.to_le_bytes());
        }
        i += 1;
    }
}

/// A zip archive of stored members.
fn stored_zip(members: &[(&str, &[u8])]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in data {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in members {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let fields = |sig: &[u8], central: bool| {
            let mut h = sig.to_vec();
            if central {
                h.extend(20u16.to_le_bytes()); // made by
            }
            h.extend(20u16.to_le_bytes()); // version needed
            h.extend([0u8; 4]); // flags, method (stored)
            h.extend([0u8; 4]); // time, date
            h.extend(crc.to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((data.len() as u32).to_le_bytes());
            h.extend((name.len() as u16).to_le_bytes());
            h.extend(0u16.to_le_bytes()); // extra
            if central {
                h.extend([0u8; 6]); // comment length, disk, internal attributes
                h.extend([0u8; 4]); // external attributes
                h.extend(offset.to_le_bytes());
            }
            h.extend(name.as_bytes());
            h
        };
        out.extend(fields(b"PK\x03\x04", false));
        out.extend_from_slice(data);
        central.extend(fields(b"PK\x01\x02", true));
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((members.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend([0u8; 2]);
    out
}

fn ssod(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run ssod")
}

/// `ssod detect` with the .pth gives the detections of the same weights as safetensors.
#[test]
fn detect_takes_a_pth_checkpoint() {
    let dir = temp_dir("detect");
    let input = dir.join("images");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbImage::from_fn(96, 64, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, 120])
    })
    .save(input.join("a.png"))
    .unwrap();
    let run = |weights: &Path, out: &str| {
        let o = ssod(
            &[
                "detect",
                "--weights",
                weights.to_str().unwrap(),
                "--model",
                "yolox-s",
                "--width",
                "0.046875",
                "--depth",
                "0.33",
                "--classes",
                "2",
                "--size",
                "64",
                "--conf",
                "0.0",
                "--input",
                input.to_str().unwrap(),
                "--out",
                out,
            ],
            &dir,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{text}");
        (
            std::fs::read_to_string(dir.join(out).join("detections.json")).unwrap(),
            text,
        )
    };
    let (from_pth, said) = run(&fixture("yolox_tiny.pth"), "pth");
    assert!(said.contains("PyTorch checkpoint"), "{said}");
    let (from_st, _) = run(&fixture("yolox_tiny.safetensors"), "st");
    assert!(from_pth.len() > 10, "no detections: {from_pth}");
    assert_eq!(from_pth, from_st);
    let _ = std::fs::remove_dir_all(&dir);
}

/// scripts/finetune_coco.rhai at scale tiny on the 2-class fixture: the class head is skipped,
/// everything else loaded, and the fine-tuning run writes its report.
#[test]
fn finetune_script_tiny() {
    let dir = temp_dir("finetune");
    let out = dir.join("run");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join("finetune_coco.rhai");
    let weights = fixture("yolox_tiny.pth");
    let o = ssod(
        &[
            "run",
            script.to_str().unwrap(),
            "--set",
            "scale=tiny",
            "--set",
            &format!("weights={}", weights.display()),
            "--fresh",
            "--out",
            out.to_str().unwrap(),
        ],
        &dir,
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("6 skipped: head.cls_preds.0.weight"),
        "{text}"
    );
    assert!(out.join("report.md").exists());
    let report = std::fs::read_to_string(out.join("load_report.csv")).unwrap();
    let model = YoloX::new(tiny_config(1)).unwrap();
    let n = model.store.entries().len();
    assert_eq!(
        report.lines().collect::<Vec<_>>(),
        [
            "loaded,misshaped,missing,skipped,unexpected".to_string(),
            format!("{},0,0,6,0", n - 6)
        ],
        "{report}"
    );
    assert!(out.join("metrics_final.csv").exists());

    // Without weights the script says what to pass.
    let o = ssod(
        &[
            "run",
            script.to_str().unwrap(),
            "--set",
            "scale=tiny",
            "--fresh",
            "--out",
            dir.join("run2").to_str().unwrap(),
        ],
        &dir,
    );
    assert!(!o.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(text.contains("set weights=PATH"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `load(m, path, #{ strict, skip })` in Rhai: the returned map, a single-string `skip`, and
/// option mistakes named.
#[test]
fn rhai_load_with_options() {
    let (engine, _) = ssod::script::new_engine();
    let path = fixture("yolox_tiny.pth").display().to_string();
    let model = "let m = yolox(\"s\", #{ classes: 1, width: 0.046875, depth: 0.33 });";
    let r: rhai::Map = engine
        .eval(&format!(
            "{model} load(m, \"{path}\", #{{ strict: false, skip: \"head.cls_preds\" }})"
        ))
        .unwrap();
    let n = YoloX::new(tiny_config(1)).unwrap().store.entries().len();
    assert_eq!(r["loaded"].as_int().unwrap(), (n - 6) as i64);
    assert_eq!(r["skipped"].clone().into_array().unwrap().len(), 6);
    for k in ["missing", "misshaped", "unexpected"] {
        assert!(r[k].clone().into_array().unwrap().is_empty(), "{k}");
    }
    assert!(r["source"].to_string().contains("PyTorch checkpoint"));
    let r: rhai::Map = engine
        .eval(&format!("{model} m.load(\"{path}\", #{{ strict: false }})"))
        .unwrap();
    let misshaped: Vec<String> = r["misshaped"]
        .clone()
        .into_array()
        .unwrap()
        .iter()
        .map(|d| d.to_string())
        .collect();
    assert_eq!(misshaped.len(), 6);
    assert!(misshaped.iter().all(|n| n.starts_with("head.cls_preds.")));
    // Strict by default, also with options.
    let err = engine
        .eval::<rhai::Map>(&format!("{model} m.load(\"{path}\", #{{}})"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("with another shape"), "{err}");
    assert!(err.contains("strict: false"), "{err}");
    for (opts, says) in [
        (
            "#{ skip: 3 }",
            "`skip` must be a string or an array of strings",
        ),
        ("#{ strict: \"no\" }", "`strict` must be true or false"),
        ("#{ skipp: [] }", "unknown option `skipp`"),
    ] {
        let err = engine
            .eval::<rhai::Map>(&format!("{model} m.load(\"{path}\", {opts})"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{opts}: {err}");
    }
}

#[test]
fn skip_prefixes_cover_whole_name_parts() {
    use ssod::nn::under_prefix;
    assert!(under_prefix("head.cls_preds.0.weight", "head.cls_preds"));
    assert!(under_prefix("head.cls_preds", "head.cls_preds"));
    assert!(!under_prefix("head.cls_preds_x.0.weight", "head.cls_preds"));
    assert!(!under_prefix("head.cls_preds_x.0.weight", "head.cls_"));
    assert!(under_prefix("head.cls_preds.0.weight", "head."));
    assert!(!under_prefix("head.cls_preds.0.weight", ""));
}
