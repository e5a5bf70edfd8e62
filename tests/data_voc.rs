//! VOC reading/writing, the study's VOC -> COCO conversion (docs/the-study.md), the layout
//! readers, `ssod voc2coco` and `ssod stats`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ssod::data::convert::{to_study_json, voc_to_coco, ConvertOptions, ConvertProblem};
use ssod::data::stats::summarize;
use ssod::data::voc::{read_flow_split, read_voc_classic, VocAnnotation, VocObject};
use ssod::data::CocoDataset;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("data_voc")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ssod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssod"))
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A VOC xml with the given size and objects `(name, xmin, ymin, xmax, ymax)` as raw text.
fn voc_xml(filename: &str, w: u32, h: u32, objects: &[(&str, &str, &str, &str, &str)]) -> String {
    let mut s = format!(
        "<?xml version=\"1.0\"?>\n<annotation>\n  <folder>images</folder>\n  <filename>{filename}</filename>\n  \
         <size><width>{w}</width><height>{h}</height><depth>3</depth></size>\n"
    );
    for (name, x1, y1, x2, y2) in objects {
        s.push_str(&format!(
            "  <object><name>{name}</name><difficult>0</difficult>\n    \
             <bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>\n  </object>\n"
        ));
    }
    s.push_str("</annotation>\n");
    s
}

/// a.xml (1280x720): bottle (10,20)-(40,60) and can (100.7,200.2)-(150.9,260.99);
/// b.xml (640x480): bottle (1,1)-(1.5,2). labels.txt: bottle, can.
fn write_good_set(dir: &Path) {
    std::fs::write(
        dir.join("a.xml"),
        voc_xml(
            "ignored_name.png",
            1280,
            720,
            &[
                ("bottle", "10", "20", "40", "60"),
                ("can", "100.7", "200.2", "150.9", "260.99"),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("b.xml"),
        voc_xml("b.jpg", 640, 480, &[("bottle", "1", "1", "1.5", "2")]),
    )
    .unwrap();
    std::fs::write(dir.join("labels.txt"), "bottle\ncan\n").unwrap();
}

/// The json coco-tools writes for the list `b.xml, a.xml`, derived by hand:
/// - images: b -> id 1 (640x480), a -> id 2 (1280x720); file_name from the xml name, not <filename>.
/// - b's bottle: xmin = int(1.0) - 1 = 0, ymin = int(1.0) - 1 = 0, xmax = int(1.5) = 1,
///   ymax = int(2.0) = 2 -> bbox [0, 0, 1, 2], area 2, annotation id 1.
/// - a's bottle: [10-1, 20-1, 40-9, 60-19] = [9, 19, 31, 41], area 31*41 = 1271, id 2.
/// - a's can: xmin = int(100.7) - 1 = 99, ymin = int(200.2) - 1 = 199, xmax = int(150.9) = 150,
///   ymax = int(260.99) = 260 -> [99, 199, 51, 61], area 51*61 = 3111, category 2, id 3.
const EXPECTED_B_THEN_A: &str = concat!(
    r#"{"images": [{"file_name": "b.jpg", "height": 480, "width": 640, "id": 1}, "#,
    r#"{"file_name": "a.jpg", "height": 720, "width": 1280, "id": 2}], "type": "instances", "annotations": ["#,
    r#"{"area": 2, "iscrowd": 0, "bbox": [0, 0, 1, 2], "category_id": 1, "ignore": 0, "segmentation": [], "image_id": 1, "id": 1}, "#,
    r#"{"area": 1271, "iscrowd": 0, "bbox": [9, 19, 31, 41], "category_id": 1, "ignore": 0, "segmentation": [], "image_id": 2, "id": 2}, "#,
    r#"{"area": 3111, "iscrowd": 0, "bbox": [99, 199, 51, 61], "category_id": 2, "ignore": 0, "segmentation": [], "image_id": 2, "id": 3}], "#,
    r#""categories": [{"supercategory": "none", "id": 1, "name": "bottle"}, {"supercategory": "none", "id": 2, "name": "can"}]}"#
);

#[test]
fn parse_keeps_raw_float_coordinates_and_ignores_parts() {
    let xml = r#"<annotation><filename>x &amp; y.jpg</filename>
        <size><width>100</width><height>50.0</height><depth>3</depth></size>
        <object><name>bottle</name><difficult>1</difficult>
          <bndbox><xmin>1.5</xmin><ymin>2</ymin><xmax>30.25</xmax><ymax>40</ymax></bndbox>
          <part><name>cap</name><bndbox><xmin>99</xmin><ymin>99</ymin><xmax>100</xmax><ymax>100</ymax></bndbox></part>
        </object></annotation>"#;
    let ann = VocAnnotation::parse(xml).unwrap();
    assert_eq!(ann.filename, "x & y.jpg");
    assert_eq!((ann.width, ann.height), (100, 50));
    assert_eq!(
        ann.objects,
        vec![VocObject {
            name: "bottle".into(),
            xmin: 1.5,
            ymin: 2.0,
            xmax: 30.25,
            ymax: 40.0,
            difficult: true,
        }]
    );
}

#[test]
fn parse_errors_name_the_problem() {
    let unclosed =
        VocAnnotation::parse("<annotation><size><width>10</width></annotation>").unwrap_err();
    assert!(unclosed.contains("malformed XML"), "{unclosed}");
    let bad_number =
        VocAnnotation::parse(&voc_xml("a", 10, 10, &[("b", "1", "x2", "3", "4")])).unwrap_err();
    assert!(
        bad_number.contains("object[0]")
            && bad_number.contains("ymin")
            && bad_number.contains("x2"),
        "{bad_number}"
    );
    let no_size =
        VocAnnotation::parse("<annotation><filename>a</filename></annotation>").unwrap_err();
    assert!(no_size.contains("width"), "{no_size}");
}

#[test]
fn write_xml_then_read_is_identity() {
    let dir = fresh_dir("xml_round_trip");
    let ann = VocAnnotation {
        filename: "000001.jpg".into(),
        width: 1280,
        height: 720,
        objects: vec![
            VocObject {
                name: "bottle".into(),
                xmin: 12.0,
                ymin: 30.0,
                xmax: 40.0,
                ymax: 44.0,
                difficult: false,
            },
            VocObject {
                name: "a<b".into(),
                xmin: 0.5,
                ymin: 1.25,
                xmax: 2.75,
                ymax: 3.0,
                difficult: true,
            },
        ],
    };
    let path = dir.join("000001.xml");
    ann.write_xml(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("<xmin>12</xmin>"),
        "integral coordinates without a decimal point:\n{text}"
    );
    assert_eq!(VocAnnotation::read(&path).unwrap(), ann);
}

#[test]
fn voc_to_coco_matches_the_study_byte_for_byte() {
    let dir = fresh_dir("api_exact");
    write_good_set(&dir);
    let anns: Vec<(PathBuf, VocAnnotation)> = ["b.xml", "a.xml"]
        .iter()
        .map(|f| (dir.join(f), VocAnnotation::read(&dir.join(f)).unwrap()))
        .collect();
    let labels = vec!["bottle".to_string(), "can".to_string()];
    let (ds, report) = voc_to_coco(&anns, &labels, &ConvertOptions::default()).unwrap();
    assert_eq!(
        (report.images, report.annotations, report.skipped.len()),
        (2, 3, 0)
    );
    assert_eq!(to_study_json(&ds), EXPECTED_B_THEN_A);
}

#[test]
fn voc_coco_dataset_round_trip() {
    let dir = fresh_dir("round_trip");
    write_good_set(&dir);
    let anns: Vec<(PathBuf, VocAnnotation)> = ["a.xml", "b.xml"]
        .iter()
        .map(|f| (dir.join(f), VocAnnotation::read(&dir.join(f)).unwrap()))
        .collect();
    let labels = vec!["bottle".to_string(), "can".to_string()];
    let (ds, _) = voc_to_coco(&anns, &labels, &ConvertOptions::default()).unwrap();
    // Through the study-format json and back through the shared reader.
    let json = dir.join("out").join("train.json");
    ssod::data::convert::write_study_json(&ds, &json).unwrap();
    let back = CocoDataset::read(&json).unwrap();
    assert_eq!(back.images, ds.images);
    assert_eq!(back.annotations, ds.annotations);
    assert_eq!(back.categories, ds.categories);
    // And through serde's writer too.
    let json2 = dir.join("out").join("serde.json");
    ds.write(&json2).unwrap();
    assert_eq!(
        CocoDataset::read(&json2).unwrap().annotations,
        ds.annotations
    );
}

#[test]
fn flow_and_classic_layouts_read_the_same_boxes() {
    let root = fresh_dir("layouts");
    let labels = vec!["bottle".to_string()];
    // FloW: training/ and test/ reuse file names (docs/the-study.md); each split is read on its own.
    for (split, x) in [("training", "10"), ("test", "3")] {
        let ann_dir = root.join("flow").join(split).join("annotations");
        std::fs::create_dir_all(&ann_dir).unwrap();
        std::fs::create_dir_all(root.join("flow").join(split).join("images")).unwrap();
        // Written in reverse name order: the reader sorts by name.
        std::fs::write(
            ann_dir.join("000002.xml"),
            voc_xml("x", 64, 48, &[("bottle", x, "5", "20", "15")]),
        )
        .unwrap();
        std::fs::write(ann_dir.join("000001.xml"), voc_xml("x", 64, 48, &[])).unwrap();
    }
    let opts = ConvertOptions::default();
    let (train, _) = read_flow_split(&root.join("flow"), "training", &labels, &opts).unwrap();
    let (test, _) = read_flow_split(&root.join("flow"), "test", &labels, &opts).unwrap();
    assert_eq!(train.image_dir, root.join("flow/training/images"));
    assert_eq!(train.images[0].file_name, "000001.jpg");
    assert_eq!(train.images[1].file_name, "000002.jpg");
    // training 000002: [10-1, 5-1, 20-9, 15-4] = [9, 4, 11, 11]; test: [3-1, 4, 20-2, 11] = [2, 4, 18, 11].
    assert_eq!(train.annotations[0].bbox_xywh, [9.0, 4.0, 11.0, 11.0]);
    assert_eq!(train.annotations[0].image_id, 2);
    assert_eq!(test.annotations[0].bbox_xywh, [2.0, 4.0, 18.0, 11.0]);
    assert_eq!(test.image_dir, root.join("flow/test/images"));

    // Classic: ids from ImageSets/Main/train.txt in its order.
    let voc = root.join("voc");
    for d in ["Annotations", "JPEGImages", "ImageSets/Main"] {
        std::fs::create_dir_all(voc.join(d)).unwrap();
    }
    std::fs::write(
        voc.join("Annotations/2008_000002.xml"),
        voc_xml("x", 64, 48, &[("bottle", "10", "5", "20", "15")]),
    )
    .unwrap();
    std::fs::write(
        voc.join("Annotations/2008_000001.xml"),
        voc_xml("x", 64, 48, &[]),
    )
    .unwrap();
    std::fs::write(
        voc.join("ImageSets/Main/train.txt"),
        "2008_000002\n\n2008_000001\n",
    )
    .unwrap();
    let (classic, _) = read_voc_classic(&voc, "train", &labels, &opts).unwrap();
    assert_eq!(classic.image_dir, voc.join("JPEGImages"));
    let names: Vec<&str> = classic
        .images
        .iter()
        .map(|i| i.file_name.as_str())
        .collect();
    assert_eq!(names, ["2008_000002.jpg", "2008_000001.jpg"]);
    assert_eq!(classic.annotations[0].bbox_xywh, [9.0, 4.0, 11.0, 11.0]);
    assert_eq!(classic.annotations[0].image_id, 1);
}

#[test]
fn flow_split_with_an_invalid_box_fails_naming_it() {
    let root = fresh_dir("flow_invalid");
    let ann_dir = root.join("test").join("annotations");
    std::fs::create_dir_all(&ann_dir).unwrap();
    std::fs::write(
        ann_dir.join("000001.xml"),
        voc_xml("x", 64, 48, &[("bottle", "50", "5", "20", "15")]),
    )
    .unwrap();
    let err = read_flow_split(
        &root,
        "test",
        &["bottle".into()],
        &ConvertOptions::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("000001.xml: object[0]") && msg.contains("xmax > xmin"),
        "{msg}"
    );
}

#[test]
fn cli_voc2coco_ann_list_gives_the_study_json_and_is_deterministic() {
    let dir = fresh_dir("cli_list");
    write_good_set(&dir);
    let list = dir.join("list.txt");
    std::fs::write(
        &list,
        format!(
            "{}\n{}\n",
            dir.join("b.xml").display(),
            dir.join("a.xml").display()
        ),
    )
    .unwrap();
    let out = dir.join("out.json");
    let args = |force: bool| {
        let mut v = vec![
            "voc2coco".to_string(),
            "--ann-list".into(),
            list.display().to_string(),
            "--labels".into(),
            dir.join("labels.txt").display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        if force {
            v.push("--force".into());
        }
        v
    };
    let run = |force| {
        let a = args(force);
        ssod(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = run(false);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let bytes1 = std::fs::read(&out).unwrap();
    assert_eq!(text(&bytes1), EXPECTED_B_THEN_A);

    // An existing output is refused without --force, and left as it was.
    let refused = run(false);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("--force"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes1);

    let second = run(true);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert_eq!(
        std::fs::read(&out).unwrap(),
        bytes1,
        "running twice gives the same bytes"
    );
}

#[test]
fn cli_voc2coco_ann_dir_sorts_by_name() {
    let dir = fresh_dir("cli_dir");
    write_good_set(&dir);
    let out = dir.join("sub").join("out.json");
    let o = ssod(&[
        "voc2coco",
        "--ann-dir",
        dir.to_str().unwrap(),
        "--labels",
        dir.join("labels.txt").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let ds = CocoDataset::read(&out).unwrap();
    // Sorted: a.xml -> image 1 (its two boxes are annotations 1 and 2), b.xml -> image 2.
    assert_eq!(ds.images[0].file_name, "a.jpg");
    assert_eq!(ds.images[0].id, 1);
    assert_eq!(ds.annotations[0].bbox_xywh, [9.0, 19.0, 31.0, 41.0]);
    assert_eq!(ds.annotations[2].bbox_xywh, [0.0, 0.0, 1.0, 2.0]);
    assert_eq!(ds.annotations[2].image_id, 2);
    assert_eq!(ds.annotations[2].id, 3);
}

/// good.xml: one valid bottle; bad.xml: not XML; unk.xml: object[1] is "cat";
/// box.xml: object[0] has xmax == xmin, object[1] is valid, object[2] has ymax < ymin.
fn write_bad_set(dir: &Path) {
    std::fs::write(dir.join("labels.txt"), "bottle\n").unwrap();
    std::fs::write(
        dir.join("good.xml"),
        voc_xml("g", 64, 48, &[("bottle", "2", "3", "12", "13")]),
    )
    .unwrap();
    std::fs::write(
        dir.join("bad.xml"),
        "<annotation><size><width>64</width></size>",
    )
    .unwrap();
    std::fs::write(
        dir.join("unk.xml"),
        voc_xml(
            "u",
            64,
            48,
            &[("bottle", "1", "1", "5", "5"), ("cat", "1", "1", "5", "5")],
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("box.xml"),
        voc_xml(
            "b",
            64,
            48,
            &[
                ("bottle", "7", "1", "7", "5"),
                ("bottle", "1", "1", "2", "2"),
                ("bottle", "1", "9", "5", "8.5"),
            ],
        ),
    )
    .unwrap();
}

#[test]
fn cli_voc2coco_lists_every_offender_and_writes_nothing() {
    let dir = fresh_dir("cli_bad");
    write_bad_set(&dir);
    let out = dir.join("out.json");
    let o = ssod(&[
        "voc2coco",
        "--ann-dir",
        dir.to_str().unwrap(),
        "--labels",
        dir.join("labels.txt").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("4 problem(s)"), "{err}");
    assert!(err.contains("bad.xml: malformed XML"), "{err}");
    assert!(
        err.contains("unk.xml: object[1]: label `cat` is not in labels.txt"),
        "{err}"
    );
    assert!(
        err.contains("box.xml: object[0]: box xmin=7 ymin=1 xmax=7 ymax=5"),
        "{err}"
    );
    assert!(
        err.contains("box.xml: object[2]: box xmin=1 ymin=9 xmax=5 ymax=8.5"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn cli_voc2coco_skip_invalid_skips_and_counts() {
    let dir = fresh_dir("cli_skip");
    write_bad_set(&dir);
    let out = dir.join("out.json");
    let o = ssod(&[
        "voc2coco",
        "--ann-dir",
        dir.to_str().unwrap(),
        "--labels",
        dir.join("labels.txt").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--skip-invalid",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("skipped 1 malformed file(s) and 3 invalid object(s)"),
        "{stdout}"
    );
    let ds = CocoDataset::read(&out).unwrap();
    // Sorted names: bad (skipped), box, good, unk -> images box=1, good=2, unk=3.
    let names: Vec<&str> = ds.images.iter().map(|i| i.file_name.as_str()).collect();
    assert_eq!(names, ["box.jpg", "good.jpg", "unk.jpg"]);
    // Kept objects: box object[1] [0,0,2,2]; good [1,2,11,11]; unk object[0] [0,0,5,5].
    let boxes: Vec<[f64; 4]> = ds.annotations.iter().map(|a| a.bbox_xywh).collect();
    assert_eq!(
        boxes,
        [
            [0.0, 0.0, 2.0, 2.0],
            [1.0, 2.0, 11.0, 11.0],
            [0.0, 0.0, 5.0, 5.0]
        ]
    );
    let ids: Vec<u64> = ds.annotations.iter().map(|a| a.id).collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[test]
fn api_reports_problems_in_file_order() {
    let file = PathBuf::from("x.xml");
    let ann = VocAnnotation {
        filename: String::new(),
        width: 10,
        height: 10,
        objects: vec![VocObject {
            name: "dog".into(),
            xmin: 1.0,
            ymin: 1.0,
            xmax: 2.0,
            ymax: 2.0,
            difficult: false,
        }],
    };
    let opts = ConvertOptions { skip_invalid: true };
    let (ds, report) = voc_to_coco(&[(file.clone(), ann)], &["bottle".into()], &opts).unwrap();
    assert_eq!(ds.images.len(), 1);
    assert_eq!(
        report.skipped,
        vec![ConvertProblem::UnknownLabel {
            file,
            object_index: 0,
            label: "dog".into()
        }]
    );
    // Duplicate labels are refused (the study's dict would silently renumber).
    assert!(voc_to_coco(&[], &["a".into(), "a".into()], &opts).is_err());
}

#[test]
fn summary_histogram_uses_coco_area_ranges() {
    let dir = fresh_dir("stats");
    write_good_set(&dir);
    // One more image with a 100x100 box (xmin 1..xmax 100 -> w = 100 - 0 = 100): area 10000, large.
    std::fs::write(
        dir.join("c.xml"),
        voc_xml("c", 200, 200, &[("bottle", "1", "1", "100", "100")]),
    )
    .unwrap();
    std::fs::write(dir.join("d.xml"), voc_xml("d", 200, 200, &[])).unwrap();
    let files: Vec<PathBuf> = ["a.xml", "b.xml", "c.xml", "d.xml"]
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let (ds, _) = ssod::data::convert::voc_files_to_coco(
        &files,
        &["bottle".into(), "can".into()],
        &ConvertOptions::default(),
    )
    .unwrap();
    let s = summarize(&ds);
    // Areas: 1271 (medium: 1024 <= a < 9216), 3111 (medium), 2 (small), 10000 (large).
    assert_eq!(
        (
            s.images,
            s.objects,
            s.images_without_objects,
            s.max_objects_per_image
        ),
        (4, 4, 1, 2)
    );
    assert_eq!((s.small, s.medium, s.large), (1, 2, 1));
    assert_eq!(
        s.per_category,
        vec![("bottle".to_string(), 3), ("can".to_string(), 1)]
    );
    let shown = s.to_string();
    assert!(shown.contains("objects: 4 (1.00 per image"), "{shown}");

    // `ssod stats` on the folder (labels.txt found there) and on a json print the same summary.
    let o = ssod(&["stats", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&shown), "{}", text(&o.stdout));
    let json = dir.join("all.json");
    ds.write(&json).unwrap();
    let o = ssod(&["stats", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&shown), "{}", text(&o.stdout));
}

#[test]
fn cli_voc2coco_duplicate_label_names_labels_txt() {
    let dir = fresh_dir("cli_dup_labels");
    write_good_set(&dir);
    std::fs::write(dir.join("labels.txt"), "bottle\ncan\nbottle\n").unwrap();
    let out = dir.join("out.json");
    let o = ssod(&[
        "voc2coco",
        "--ann-dir",
        dir.to_str().unwrap(),
        "--labels",
        dir.join("labels.txt").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("labels.txt: label `bottle` is listed twice (labels 1 and 3)"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn cli_stats_on_a_flow_root_summarises_each_split() {
    let root = fresh_dir("stats_flow");
    std::fs::write(root.join("labels.txt"), "bottle\n").unwrap();
    // training: 2 images, 3 boxes (10x10 small, 40x40 medium, 100x100 large); test: 1 image, no box.
    let train = root.join("training/annotations");
    let test = root.join("test/annotations");
    std::fs::create_dir_all(&train).unwrap();
    std::fs::create_dir_all(&test).unwrap();
    std::fs::write(
        train.join("000001.xml"),
        voc_xml(
            "x",
            640,
            480,
            &[
                ("bottle", "1", "1", "10", "10"),
                ("bottle", "1", "1", "40", "40"),
            ],
        ),
    )
    .unwrap();
    std::fs::write(
        train.join("000002.xml"),
        voc_xml("x", 640, 480, &[("bottle", "1", "1", "100", "100")]),
    )
    .unwrap();
    std::fs::write(test.join("000001.xml"), voc_xml("x", 640, 480, &[])).unwrap();
    let o = ssod(&["stats", root.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let train_at = out.find("training").expect(&out);
    let test_at = out.find("test\n").expect(&out);
    assert!(train_at < test_at, "{out}");
    let (train_part, test_part) = out.split_at(test_at);
    assert!(
        train_part.contains("images:  2 (0 without objects)"),
        "{out}"
    );
    assert!(
        train_part.contains("objects: 3 (1.50 per image, at most 2 in one image)"),
        "{out}"
    );
    assert!(
        train_part.contains("small (<32²) 1 (33.3%), medium 1 (33.3%), large (>=96²) 1 (33.3%)"),
        "{out}"
    );
    assert!(
        test_part.contains("images:  1 (1 without objects)"),
        "{out}"
    );
}
