//! The tiny-object lint (`data::lint`): hand-made VOC folders and COCO files with every problem
//! kind, size buckets in original pixels and at a training size (letterbox factors computed by
//! hand), `ssod stats --json` and `--strict` through the binary, and Rhai's `lint`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ssod::data::lint::{lint, source_from_coco, source_from_voc_files, DatasetLint, ProblemKind};
use ssod::data::voc::list_xml_files;
use ssod::data::CocoDataset;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("data_lint")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ssod(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A VOC xml with the given size and objects `(name, xmin, ymin, xmax, ymax)`.
fn voc_xml(w: u32, h: u32, objects: &[(&str, &str, &str, &str, &str)]) -> String {
    let mut s = format!(
        "<annotation><filename>x.jpg</filename>\
         <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
    );
    for (name, x1, y1, x2, y2) in objects {
        s.push_str(&format!(
            "<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>\
             <xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>\n"
        ));
    }
    s + "</annotation>\n"
}

/// A VOC folder with every problem kind. Study conversion: `[int(xmin) − 1, int(ymin) − 1,
/// int(xmax) − int(xmin) + 1, int(ymax) − int(ymin) + 1]`.
/// - a.xml, 200×100: [0,0,4,4] (size 4); [10,10,10,20] (√200 = 14.14); (5,5,5,10): empty in the
///   XML, [4,4,1,6] after conversion → degenerate; (10,10,8,20): w = 8 − 9 = −1 → degenerate;
///   [10,10,10,20] again → duplicate; [189,49,21,41] (√861 = 29.34) reaches x = 210 > 200 →
///   outside; `dog` [0,0,50,50] (50) → unknown class.
/// - b.xml, 640×480, no objects; c.xml malformed; d.xml, 500 wide × 1000 high: can
///   [0,0,120,100] (√12000 = 109.54); e.xml, width 0: bottle [0,0,10,10] (10) → no size.
/// - labels bottle, can, cup: cup has no objects.
fn write_voc_set(dir: &Path) {
    let b = "bottle";
    let objects_a = [
        (b, "1", "1", "4", "4"),
        (b, "11", "11", "20", "30"),
        ("can", "5", "5", "5", "10"),
        ("can", "10.0", "10", "8", "20"),
        (b, "11", "11", "20", "30"),
        (b, "190", "50", "210", "90"),
        ("dog", "1", "1", "50", "50"),
    ];
    let files = [
        ("a.xml", voc_xml(200, 100, &objects_a)),
        ("b.xml", voc_xml(640, 480, &[])),
        ("c.xml", "<annotation><size><width>3</wid".to_string()),
        (
            "d.xml",
            voc_xml(500, 1000, &[("can", "1", "1", "120", "100")]),
        ),
        ("e.xml", voc_xml(0, 30, &[(b, "1", "1", "10", "10")])),
        ("labels.txt", "bottle\ncan\ncup\n".to_string()),
    ];
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
}

fn bucket_objects(l: &DatasetLint) -> Vec<usize> {
    l.size_buckets.iter().map(|b| b.objects).collect()
}

/// (kind, file name) of each problem, in order.
fn kinds(l: &DatasetLint) -> Vec<(ProblemKind, String)> {
    l.problems
        .iter()
        .map(|p| {
            let name = Path::new(&p.file).file_name().unwrap().to_string_lossy();
            (p.kind, name.into_owned())
        })
        .collect()
}

fn lint_voc(dir: &Path, at_size: Option<u32>) -> DatasetLint {
    let labels = ["bottle", "can", "cup"].map(String::from).to_vec();
    let files = list_xml_files(dir).unwrap();
    let labels_file = dir.join("labels.txt").display().to_string();
    lint(
        &source_from_voc_files(&files, &labels, &labels_file),
        at_size,
    )
}

#[test]
fn voc_folder_with_every_problem_kind() {
    use ProblemKind::*;
    let dir = fresh_dir("voc");
    write_voc_set(&dir);
    let l = lint_voc(&dir, None);
    assert_eq!((l.images, l.objects, l.at_size), (4, 9, None));
    // Sized: 4 (<8); 14.14, 14.14, 10 (8-16); 29.34 (16-32); 50 (32-96); 109.54 (>=96).
    assert_eq!(bucket_objects(&l), vec![1, 3, 1, 1, 1]);
    let shares: Vec<f64> = l.size_buckets.iter().map(|b| b.share).collect();
    assert_eq!(
        shares,
        vec![1.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0, 1.0 / 7.0]
    );
    let names: Vec<&str> = l.size_buckets.iter().map(|b| b.bucket).collect();
    assert_eq!(names, ["<8", "8-16", "16-32", "32-96", ">=96"]);
    // Per class: objects include the degenerate ones; the unknown `dog` is in no class.
    let per: Vec<(&str, usize, Vec<usize>)> = l
        .per_class
        .iter()
        .map(|c| {
            let b = c.size_buckets.iter().map(|b| b.objects).collect();
            (c.class.as_str(), c.objects, b)
        })
        .collect();
    assert_eq!(
        per,
        vec![
            ("bottle", 5, vec![1, 3, 1, 0, 0]),
            ("can", 3, vec![0, 0, 0, 0, 1]),
            ("cup", 0, vec![0, 0, 0, 0, 0]),
        ]
    );
    let want = [
        (UnknownClass, "a.xml"),
        (UnreadableFile, "c.xml"),
        (DegenerateBox, "a.xml"),
        (DegenerateBox, "a.xml"),
        (DuplicateBox, "a.xml"),
        (OutsideImage, "a.xml"),
        (ImageWithoutObjects, "b.xml"),
        (ImageWithoutSize, "e.xml"),
        (ClassWithoutObjects, "labels.txt"),
    ];
    let want: Vec<(ProblemKind, String)> = want.iter().map(|(k, f)| (*k, f.to_string())).collect();
    assert_eq!(kinds(&l), want, "{l}");
    let details: Vec<&str> = l.problems.iter().map(|p| p.detail.as_str()).collect();
    assert!(details[0].contains("object[6] (dog)"), "{}", details[0]);
    assert!(
        details[2].starts_with("object[2] (can)") && details[2].contains("[4.0, 4.0, 1.0, 6.0]")
    );
    assert!(
        details[3].starts_with(
            "object[3] (can): xmin=10 ymin=10 xmax=8 ymax=20 converts to [9.0, 9.0, -1.0, 11.0]"
        ),
        "{}",
        details[3]
    );
    assert!(
        details[1].starts_with("malformed XML at line 1"),
        "{}",
        details[1]
    );
    assert_eq!(
        details[4],
        "object[4] (bottle) repeats object[1] (bottle): bbox [10.0, 10.0, 10.0, 20.0]"
    );
    assert!(details[5].contains("[189.0, 49.0, 21.0, 41.0] reaches outside the 200x100 image"));
    assert!(details[8].contains("class `cup`"));
    let shown = l.to_string();
    assert!(
        shown.contains(
            "  all: <8 1 (14.3%), 8-16 3 (42.9%), 16-32 1 (14.3%), 32-96 1 (14.3%), >=96 1 (14.3%)"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("problems: 9 (unknown_class 1, unreadable_file 1, degenerate_box 2,"),
        "{shown}"
    );
}

#[test]
fn voc_sizes_at_a_training_size_use_each_images_letterbox_factor() {
    let dir = fresh_dir("voc_at_size");
    write_voc_set(&dir);
    let l = lint_voc(&dir, Some(320));
    // a.xml 200×100: min(320/200, 320/100) = 1.6 (width-bound): 6.4 (<8), 22.63 ×2 (16-32),
    // 46.95 and 80 (32-96). d.xml 500×1000: min(0.64, 0.32) = 0.32 (height-bound): 35.05
    // (32-96). e.xml has no size: not sized at a training size.
    assert_eq!(l.at_size, Some(320));
    assert_eq!(bucket_objects(&l), vec![1, 0, 2, 3, 0]);
    assert_eq!(
        l.per_class[0]
            .size_buckets
            .iter()
            .map(|b| b.objects)
            .collect::<Vec<_>>(),
        vec![1, 0, 2, 1, 0]
    );
    assert_eq!(
        l.per_class[1]
            .size_buckets
            .iter()
            .map(|b| b.objects)
            .collect::<Vec<_>>(),
        vec![0, 0, 0, 1, 0]
    );
    assert!(l.to_string().contains("at training size 320 (letterbox)"));
}

/// COCO: image 1 (100×50) holds [10,10,6,6] twice (size 6: duplicate), [90,20,20,10] (14.14,
/// reaches x = 110: outside), w = 0 and h = −2 (degenerate); image 2 (40×80) [0,0,40,80]
/// (56.57); image 3 has no objects; image 4 has width 0 and [0,0,10,10] (10); category `rock`
/// has no objects.
const COCO_JSON: &str = r#"{
 "images": [{"id": 1, "file_name": "p.jpg", "width": 100, "height": 50},
            {"id": 2, "file_name": "q.jpg", "width": 40, "height": 80},
            {"id": 3, "file_name": "r.jpg", "width": 64, "height": 64},
            {"id": 4, "file_name": "s.jpg", "width": 0, "height": 30}],
 "categories": [{"id": 1, "name": "ship"}, {"id": 2, "name": "buoy"}, {"id": 3, "name": "rock"}],
 "annotations": [
  {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 6, 6], "area": 36, "iscrowd": 0},
  {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 6, 6], "area": 36, "iscrowd": 0},
  {"id": 3, "image_id": 1, "category_id": 2, "bbox": [90, 20, 20, 10], "area": 200, "iscrowd": 0},
  {"id": 4, "image_id": 1, "category_id": 2, "bbox": [5, 5, 0, 10], "area": 0, "iscrowd": 0},
  {"id": 5, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, -2], "area": 0, "iscrowd": 0},
  {"id": 6, "image_id": 2, "category_id": 2, "bbox": [0, 0, 40, 80], "area": 3200, "iscrowd": 0},
  {"id": 7, "image_id": 4, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0}
 ]}"#;

#[test]
fn coco_file_with_every_problem_kind_and_a_letterbox_case() {
    use ProblemKind::*;
    let dir = fresh_dir("coco");
    let path = dir.join("set.json");
    std::fs::write(&path, COCO_JSON).unwrap();
    // `read` refuses the negative height; the lint's reader keeps it to report it.
    assert!(CocoDataset::read(&path).is_err());
    let ds = CocoDataset::read_keeping_bad_boxes(&path).unwrap();
    let src = source_from_coco(&ds, &path.display().to_string());
    let l = lint(&src, None);
    assert_eq!((l.images, l.objects), (4, 7));
    // 6, 6 (<8); 14.14, 10 (8-16); 56.57 (32-96).
    assert_eq!(bucket_objects(&l), vec![2, 2, 0, 1, 0]);
    let want: Vec<(ProblemKind, String)> = [
        (DuplicateBox, "p.jpg"),
        (OutsideImage, "p.jpg"),
        (DegenerateBox, "p.jpg"),
        (DegenerateBox, "p.jpg"),
        (ImageWithoutObjects, "r.jpg"),
        (ImageWithoutSize, "s.jpg"),
        (ClassWithoutObjects, "set.json"),
    ]
    .iter()
    .map(|(k, f)| (*k, f.to_string()))
    .collect();
    assert_eq!(kinds(&l), want, "{l}");
    assert_eq!(
        l.problems[0].detail,
        "annotation 2 repeats annotation 1: bbox [10.0, 10.0, 6.0, 6.0]"
    );
    assert!(l.problems[3]
        .detail
        .starts_with("annotation 5: bbox [5.0, 5.0, 10.0, -2.0]"));
    // At 320: image 1 ×min(3.2, 6.4) = 3.2: 19.2 ×2 (16-32), 45.25 (32-96); image 2
    // ×min(8, 4) = 4 (height-bound): 226.3 (>=96); image 4 has no size.
    let l = lint(&src, Some(320));
    assert_eq!(bucket_objects(&l), vec![0, 0, 2, 1, 1]);
    let shares: Vec<f64> = l.size_buckets.iter().map(|b| b.share).collect();
    assert_eq!(shares, vec![0.0, 0.0, 0.5, 0.25, 0.25]);
}

#[test]
fn cli_json_shape_and_strict_exit_status() {
    let dir = fresh_dir("cli");
    write_voc_set(&dir);
    let o = ssod(&["stats", dir.to_str().unwrap(), "--json", "--at-size", "320"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one json object ({e}): {}", text(&o.stdout)));
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "at_size",
        "images",
        "objects",
        "per_class",
        "problems",
        "size_buckets",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        (
            v["images"].as_u64(),
            v["objects"].as_u64(),
            v["at_size"].as_u64()
        ),
        (Some(4), Some(9), Some(320))
    );
    let buckets: Vec<(String, u64, f64)> = v["size_buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["bucket"].as_str().unwrap().to_string(),
                b["objects"].as_u64().unwrap(),
                b["share"].as_f64().unwrap(),
            )
        })
        .collect();
    let want_buckets = [
        ("<8", 1, 1.0 / 6.0),
        ("8-16", 0, 0.0),
        ("16-32", 2, 2.0 / 6.0),
        ("32-96", 3, 0.5),
        (">=96", 0, 0.0),
    ];
    assert_eq!(buckets.len(), 5);
    for ((name, n, share), (wn, wc, ws)) in buckets.iter().zip(want_buckets) {
        assert_eq!((name.as_str(), *n), (wn, wc));
        assert!((share - ws).abs() < 1e-12, "{name}: {share}");
    }
    assert_eq!(v["per_class"][0]["class"], "bottle");
    assert_eq!(v["per_class"][0]["objects"], 5);
    assert_eq!(
        v["per_class"][0]["size_buckets"].as_array().unwrap().len(),
        5
    );
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 9);
    for p in problems {
        let mut k: Vec<&str> = p.as_object().unwrap().keys().map(String::as_str).collect();
        k.sort();
        assert_eq!(k, ["detail", "file", "kind"]);
    }
    let kinds: std::collections::BTreeSet<&str> = problems
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    for k in [
        "degenerate_box",
        "outside_image",
        "duplicate_box",
        "image_without_objects",
        "class_without_objects",
    ] {
        assert!(kinds.contains(k), "{k} missing: {kinds:?}");
    }

    // --strict: the same json, then exit status 1.
    let o = ssod(&[
        "stats",
        dir.to_str().unwrap(),
        "--json",
        "--at-size",
        "320",
        "--strict",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again, v);
    assert!(
        text(&o.stderr).contains("9 problem(s) found (--strict)"),
        "{}",
        text(&o.stderr)
    );

    // Text mode: the summary's size line and the lint.
    let o = ssod(&["stats", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("object sizes, sqrt(w·h) in original pixels:"),
        "{out}"
    );
    assert!(
        out.contains("  bottle (5 objects): <8 1 (20.0%), 8-16 3 (60.0%), 16-32 1 (20.0%)"),
        "{out}"
    );
    assert!(out.contains("outside_image "), "{out}");

    // A clean set passes --strict; a bad --at-size is refused by the argument parser.
    let clean = fresh_dir("cli_clean");
    std::fs::write(clean.join("labels.txt"), "bottle\n").unwrap();
    std::fs::write(
        clean.join("a.xml"),
        voc_xml(64, 64, &[("bottle", "1", "1", "20", "20")]),
    )
    .unwrap();
    let o = ssod(&["stats", clean.to_str().unwrap(), "--strict", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
    assert_eq!(v["at_size"], serde_json::Value::Null);
    assert_eq!(v["size_buckets"][2]["objects"], 1); // 20 px
    let o = ssod(&["stats", clean.to_str().unwrap(), "--at-size", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}

#[test]
fn cli_on_a_coco_file_reports_negative_boxes_instead_of_failing() {
    let dir = fresh_dir("cli_coco");
    let path = dir.join("set.json");
    std::fs::write(&path, COCO_JSON).unwrap();
    let o = ssod(&["stats", path.to_str().unwrap(), "--json", "--strict"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "duplicate_box",
            "outside_image",
            "degenerate_box",
            "degenerate_box",
            "image_without_objects",
            "image_without_size",
            "class_without_objects"
        ]
    );
}

#[test]
fn rhai_lint_and_summary() {
    let dir = fresh_dir("rhai");
    let path = dir.join("set.json");
    // The COCO case without its negative box (`coco()` refuses that one).
    let json = COCO_JSON.replace(
        r#"  {"id": 5, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, -2], "area": 0, "iscrowd": 0},
"#,
        "",
    );
    assert_ne!(json, COCO_JSON);
    std::fs::write(&path, json).unwrap();
    let (engine, _) = ssod::script::api::new_engine();
    let p = path.display();
    let m: rhai::Map = engine
        .eval(&format!("lint(coco(\"{p}\"), #{{ at_size: 320 }})"))
        .unwrap();
    let buckets: Vec<i64> = m["size_buckets"]
        .clone()
        .into_array()
        .unwrap()
        .into_iter()
        .map(|b| b.cast::<rhai::Map>()["objects"].as_int().unwrap())
        .collect();
    assert_eq!(buckets, vec![0, 0, 2, 1, 1]);
    assert_eq!(m["at_size"].as_int().unwrap(), 320);
    assert_eq!(m["objects"].as_int().unwrap(), 6);
    let problems = m["problems"].clone().into_array().unwrap();
    let first = problems[0].clone().cast::<rhai::Map>();
    assert_eq!(
        first["kind"].clone().into_string().unwrap(),
        "duplicate_box"
    );
    assert_eq!(first["file"].clone().into_string().unwrap(), "p.jpg");
    // Without options: original pixels.
    let m: rhai::Map = engine.eval(&format!("lint(coco(\"{p}\"))")).unwrap();
    assert!(m["at_size"].is_unit());
    let shown: String = engine.eval(&format!("summary(coco(\"{p}\"))")).unwrap();
    assert!(
        shown.contains("sizes (sqrt(w·h) px): <8 2 (40.0%), 8-16 2 (40.0%), 16-32 0 (0.0%), 32-96 1 (20.0%), >=96 0 (0.0%)"),
        "{shown}"
    );
    // Bad options are errors naming the function.
    for bad in ["#{ at_size: 0 }", "#{ size: 3 }", "#{ at_size: \"x\" }"] {
        let e = engine
            .eval::<rhai::Map>(&format!("lint(coco(\"{p}\"), {bad})"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lint"), "{bad}: {e}");
    }
}
