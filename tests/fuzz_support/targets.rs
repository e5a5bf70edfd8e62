//! The in-process targets: a real sample of each input format (written by ssod's own writers or
//! taken from `tests/fixtures`), how it is mutated and which library call reads it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use ssod::data::augment::AugmentConfig;
use ssod::data::dataset::{Annotation, Category, CocoDataset, Detection, ImageInfo};
use ssod::data::image_io::{read_rgb, write_rgb};
use ssod::data::loader::{Loader, LoaderConfig};
use ssod::data::voc::{VocAnnotation, VocObject};
use ssod::eval::coco::{evaluate_files, MaxDets};
use ssod::pretrain::{parse_config, CenterLossConfig, PatchSslConfig};
use ssod::tensor::npy::{read_npy, write_npy};
use ssod::tensor::pth::read_pth;
use ssod::tensor::safetensors_io::{read_safetensors, write_safetensors, SaveDtype};
use ssod::train::config::TrainConfig;
use ssod::Tensor;

use super::mutate::{below, Mutator};
use super::{Parse, Target};
use crate::common::Rng;

const TEXT_ALL: std::ops::Range<usize> = 0..usize::MAX;

fn text(format: &'static str, file: &'static str, sample: String, n: usize, p: Parse) -> Target {
    Target::new(
        format,
        file,
        vec![sample.into_bytes()],
        Mutator::new(true, TEXT_ALL),
        n,
        p,
    )
}

fn read_text(p: &Path) -> Result<String, String> {
    ssod::data::dataset::read_text_file(p).map_err(err_text)
}

fn err_text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A VOC XML file with two objects, as `ssod synth` writes them.
pub fn voc(n: usize) -> Target {
    let box_ = |name: &str, x: f64, y: f64, difficult| VocObject {
        name: name.into(),
        xmin: x,
        ymin: y,
        xmax: x + 20.5,
        ymax: y + 11.0,
        difficult,
    };
    let ann = VocAnnotation {
        filename: "frame_0001.jpg".into(),
        width: 320,
        height: 192,
        objects: vec![
            box_("bottle", 10.0, 12.0, false),
            box_("can", 100.0, 50.5, true),
        ],
    };
    Target {
        names_place: names_element,
        ..text(
            "voc",
            "sample.xml",
            ann.to_xml_string(),
            n,
            Arc::new(|p| VocAnnotation::read(p).map(|_| ()).map_err(err_text)),
        )
    }
}

/// Two images, two categories, three boxes.
pub fn coco_gt() -> CocoDataset {
    let image = |id, w, h| ImageInfo {
        id,
        file_name: format!("img{id}.jpg"),
        width: w,
        height: h,
    };
    let ann = |id, image_id, category_id, bbox_xywh: [f64; 4]| Annotation {
        id,
        image_id,
        category_id,
        bbox_xywh,
        area: bbox_xywh[2] * bbox_xywh[3],
        iscrowd: 0,
    };
    let cat = |id, name: &str| Category {
        id,
        name: name.into(),
        supercategory: None,
    };
    CocoDataset {
        images: vec![image(1, 64, 48), image(2, 64, 48)],
        annotations: vec![
            ann(1, 1, 1, [4.0, 6.0, 20.0, 10.0]),
            ann(2, 1, 2, [30.0, 20.0, 12.5, 14.0]),
            ann(3, 2, 1, [0.0, 0.0, 64.0, 48.0]),
        ],
        categories: vec![cat(1, "bottle"), cat(2, "can")],
        image_dir: PathBuf::new(),
    }
}

fn coco_detections() -> Vec<Detection> {
    let det = |image_id, category_id, bbox_xywh, score| Detection {
        image_id,
        category_id,
        bbox_xywh,
        score,
    };
    vec![
        det(1, 1, [5.0, 6.0, 19.0, 10.5], 0.9),
        det(1, 2, [29.0, 21.0, 12.0, 13.0], 0.75),
        det(2, 1, [2.0, 1.0, 60.0, 45.0], 0.5),
        det(2, 2, [10.0, 10.0, 5.0, 5.0], 0.125),
    ]
}

/// COCO ground truth (mutated) evaluated against a fixed results file, and the reverse.
pub fn coco(dir: &Path, n: usize) -> Vec<Target> {
    let gt_text = serde_json::to_string_pretty(&coco_gt()).unwrap();
    let dt_text = serde_json::to_string_pretty(&coco_detections()).unwrap();
    let (gt, dt) = (dir.join("fixed_gt.json"), dir.join("fixed_dt.json"));
    std::fs::write(&gt, &gt_text).unwrap();
    std::fs::write(&dt, &dt_text).unwrap();
    let with_entry = |t: Target| Target {
        names_place: names_entry,
        ..t
    };
    vec![
        with_entry(text(
            "coco_gt",
            "gt.json",
            gt_text,
            n,
            Arc::new(move |p| {
                evaluate_files(p, &dt, MaxDets::STUDY)
                    .map(|_| ())
                    .map_err(err_text)
            }),
        )),
        with_entry(text(
            "coco_results",
            "dt.json",
            dt_text,
            n,
            Arc::new(move |p| {
                evaluate_files(&gt, p, MaxDets::STUDY)
                    .map(|_| ())
                    .map_err(err_text)
            }),
        )),
    ]
}

/// A C-order f32 `.npy` written by ssod and a Fortran-order big-endian f8 one (numpy's other
/// common layout); the header (first 128 bytes) takes most edits.
pub fn npy(dir: &Path, n: usize) -> Target {
    let t = Tensor::from_vec(vec![1.0, -2.0, 3.5, 0.0, 1e-3, 7.0], vec![2, 3]).unwrap();
    let p = dir.join("written.npy");
    write_npy(&p, &t).unwrap();
    let c_order = std::fs::read(&p).unwrap();
    let mut fortran = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '>f8', 'fortran_order': True, 'shape': (3, 2), }".to_string();
    header.push_str(&" ".repeat(64 - (10 + header.len() + 1) % 64));
    header.push('\n');
    fortran.extend_from_slice(&(header.len() as u16).to_le_bytes());
    fortran.extend_from_slice(header.as_bytes());
    for v in [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0] {
        fortran.extend_from_slice(&v.to_be_bytes());
    }
    Target::new(
        "npy",
        "sample.npy",
        vec![c_order, fortran],
        Mutator::new(true, 0..128),
        n,
        Arc::new(|p| read_npy(p).map(|_| ()).map_err(err_text)),
    )
}

/// A safetensors file written by ssod (three tensors, metadata) and a fixture from Python.
pub fn safetensors(dir: &Path, n: usize) -> Target {
    let a = Tensor::from_vec(vec![0.5; 6], vec![2, 3]).unwrap();
    let b = Tensor::from_vec(vec![1.0, 2.0], vec![2]).unwrap();
    let c = Tensor::from_vec(vec![3.0], vec![]).unwrap();
    let p = dir.join("written.safetensors");
    let meta = [("format".to_string(), "pt".to_string())].into();
    write_safetensors(
        &p,
        [("a.weight", &a), ("b.bias", &b), ("c", &c)],
        SaveDtype::F16,
        Some(meta),
    )
    .unwrap();
    let fixture = fixture("yolox_box_losses.safetensors");
    let header_end = |b: &[u8]| 8 + u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let hot = 0..header_end(&std::fs::read(&p).unwrap()).max(header_end(&fixture));
    Target::new(
        "safetensors",
        "sample.safetensors",
        vec![std::fs::read(&p).unwrap(), fixture],
        Mutator::new(false, hot),
        n,
        Arc::new(|p| read_safetensors(p).map(|_| ()).map_err(err_text)),
    )
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

/// `torch.save` files from PyTorch: a zip archive (its pickle mutated in place with the CRC
/// fixed, so the edits reach the pickle reader, or its directory mutated) and a legacy stream
/// (the pickles at its start take most edits).
pub fn pth(n: usize) -> Target {
    let zip = fixture("yolox_tiny_bf16_views.pth");
    let legacy = fixture("yolox_tiny_legacy.pth");
    let pkl = zip_member(&zip, "data.pkl").expect("fixture has data.pkl");
    let in_place = Mutator::new(false, 0..0);
    let zip_dir = Mutator::new(false, zip.len().saturating_sub(4096)..zip.len());
    let legacy_head = Mutator::new(false, 0..16_384);
    let mutant = Arc::new(move |rng: &mut Rng, sample: &[u8]| -> Vec<u8> {
        if !sample.starts_with(b"PK") {
            return legacy_head.mutate(rng, sample);
        }
        if below(rng, 2) == 0 {
            return zip_dir.mutate(rng, sample);
        }
        // Same-length edits of the pickle, then its CRC-32 rewritten in both headers.
        let mut out = sample.to_vec();
        let body = &sample[pkl.data.clone()];
        let mut edited = in_place.mutate(rng, body);
        edited.resize(body.len(), b'.');
        out[pkl.data.clone()].copy_from_slice(&edited);
        let crc = crc32(&edited).to_le_bytes();
        out[pkl.local_crc..pkl.local_crc + 4].copy_from_slice(&crc);
        out[pkl.central_crc..pkl.central_crc + 4].copy_from_slice(&crc);
        out
    });
    Target {
        mutant,
        ..Target::new(
            "pth",
            "sample.pth",
            vec![zip, legacy],
            Mutator::new(false, 0..0),
            n,
            Arc::new(|p| read_pth(p).map(|_| ()).map_err(err_text)),
        )
    }
}

struct ZipSpan {
    data: std::ops::Range<usize>,
    local_crc: usize,
    central_crc: usize,
}

/// Where a stored member whose name ends in `suffix` lies (central directory walk).
fn zip_member(b: &[u8], suffix: &str) -> Option<ZipSpan> {
    let le16 = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let le32 = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let eocd = (0..b.len() - 21)
        .rev()
        .find(|&i| b[i..].starts_with(b"PK\x05\x06"))?;
    let mut at = le32(eocd + 16);
    for _ in 0..le16(eocd + 10) {
        let name_len = le16(at + 28);
        let name = &b[at + 46..at + 46 + name_len];
        if name.ends_with(suffix.as_bytes()) {
            let local = le32(at + 42);
            let start = local + 30 + le16(local + 26) + le16(local + 28);
            return Some(ZipSpan {
                data: start..start + le32(at + 20),
                local_crc: local + 14,
                central_crc: at + 16,
            });
        }
        at += 46 + name_len + le16(at + 30) + le16(at + 32);
    }
    None
}

/// CRC-32 (IEEE), bit by bit: the zip checksum.
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

/// A small gradient image with a few edges, for the image codecs.
pub fn gradient_image() -> RgbImage {
    RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([
            (x * 10) as u8,
            (y * 15) as u8,
            if (x / 4 + y / 4) % 2 == 0 { 200 } else { 30 },
        ])
    })
}

/// PNG and JPEG files written by ssod, read by the image reader every data path uses.
pub fn images(dir: &Path, n: usize) -> Vec<Target> {
    ["png", "jpg"]
        .into_iter()
        .map(|ext| {
            let p = dir.join(format!("written.{ext}"));
            write_rgb(&p, &gradient_image()).unwrap();
            let (format, file, hot) = if ext == "png" {
                ("png", "sample.png", 0..64)
            } else {
                ("jpeg", "sample.jpg", 0..640)
            };
            Target::new(
                format,
                file,
                vec![std::fs::read(&p).unwrap()],
                Mutator::new(false, hot),
                n,
                Arc::new(|p| read_rgb(p).map(|_| ()).map_err(err_text)),
            )
        })
        .collect()
}

/// A damaged JPEG inside a two-image data set, drawn through the training loader (mosaic,
/// mixup): the batch is built, or fails with an error naming the file (`skip_bad_images` off,
/// the default); never a panic.
pub fn dataset_image(dir: &Path, n: usize) -> Target {
    let good = dir.join("good.jpg");
    write_rgb(&good, &gradient_image()).unwrap();
    let mut ds = coco_gt();
    ds.images[0].file_name = "sample.jpg".into();
    ds.images[1].file_name = "good.jpg".into();
    ds.image_dir = dir.to_path_buf();
    let parse: Parse = Arc::new(move |_| {
        let mut cfg = LoaderConfig::new(2, AugmentConfig::yolox_s(64, 64));
        cfg.workers = 1;
        let loader = Loader::new(&ds, cfg).map_err(err_text)?;
        let (batch, _) = loader.build_batch(0, 0).map_err(err_text)?;
        if batch.images.len() != batch.batch * 3 * batch.height * batch.width {
            return Err(format!("a batch of {} values", batch.images.len()));
        }
        Ok(())
    });
    let sample = std::fs::read(&good).unwrap();
    Target::new(
        "dataset_image",
        "sample.jpg",
        vec![sample],
        Mutator::new(false, 0..640),
        n,
        parse,
    )
}

/// A notebook script: tensors from arrays, shapes, option maps, files read through the API.
pub fn rhai(dir: &Path, n: usize) -> Target {
    let npy = dir.join("script_input.npy");
    write_npy(&npy, &Tensor::from_vec(vec![1.0, 2.0], vec![2]).unwrap()).unwrap();
    let gt = dir.join("script_gt.json");
    std::fs::write(&gt, serde_json::to_string(&coco_gt()).unwrap()).unwrap();
    let script = include_str!("sample.rhai")
        .replace("NPY_PATH", &npy.display().to_string())
        .replace("GT_PATH", &gt.display().to_string());
    Target {
        names_place: names_line,
        ..text(
            "rhai",
            "sample.rhai",
            script,
            n,
            Arc::new(|p| {
                ssod::script::run_script_file(p)
                    .map(|_| ())
                    .map_err(err_text)
            }),
        )
    }
}

/// The config refusals name the key (`ssod train` adds the file) or the json's line.
fn names_key(msg: &str, _: &Path) -> bool {
    msg.contains('`') || msg.contains("line ")
}

/// COCO refusals name the file and the line or the entry (`annotations[3]`, `detections[0]`).
fn names_entry(msg: &str, path: &Path) -> bool {
    super::names_file(msg, path) && (msg.contains("line ") || msg.contains('['))
}

/// VOC refusals name the file and the line, the object or the element.
fn names_element(msg: &str, path: &Path) -> bool {
    super::names_file(msg, path) && (msg.contains("line ") || msg.contains('<'))
}

/// Script errors name the file and the line (`file:line:col:` or `line L`).
fn names_line(msg: &str, path: &Path) -> bool {
    let file = path.display().to_string();
    let after = msg.split_once(&format!("{file}:")).map(|(_, rest)| rest);
    after.is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit()) || rest.contains("line ")
    })
}

/// A training recipe (`ssod train --config`, `TrainConfig::to_json`) and both pretraining
/// configs (`ssod pretrain --config`), read and checked as the commands do.
pub fn configs(n: usize) -> Vec<Target> {
    let recipe = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(
            &TrainConfig::for_variant("nano").unwrap().to_json(),
        )
        .unwrap(),
    )
    .unwrap();
    let center = serde_json::to_string_pretty(&CenterLossConfig {
        epochs: 2,
        batch_size: 4,
        ..Default::default()
    })
    .unwrap();
    let ssl = serde_json::to_string_pretty(&PatchSslConfig::default()).unwrap();
    let with_key = |t: Target| Target {
        names_place: names_key,
        ..t
    };
    vec![
        with_key(text(
            "train_config",
            "recipe.json",
            recipe,
            n,
            Arc::new(|p| {
                let text = read_text(p)?;
                TrainConfig::from_json_str(&text)
                    .map(|_| ())
                    .map_err(err_text)
            }),
        )),
        with_key(text(
            "pretrain_config",
            "center.json",
            center,
            n / 2,
            Arc::new(|p| {
                let text = read_text(p)?;
                let cfg: CenterLossConfig =
                    parse_config(&text, &p.display().to_string()).map_err(err_text)?;
                cfg.validate().map_err(err_text)
            }),
        )),
        with_key(text(
            "pretrain_config_ssl",
            "ssl.json",
            ssl,
            n / 2,
            Arc::new(|p| {
                let text = read_text(p)?;
                let cfg: PatchSslConfig =
                    parse_config(&text, &p.display().to_string()).map_err(err_text)?;
                cfg.validate().map_err(err_text)
            }),
        )),
    ]
}
