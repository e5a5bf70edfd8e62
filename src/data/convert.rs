//! VOC -> COCO with the study's exact rules (docs/the-study.md, coco-tools `voc2coco.py`):
//!
//! - categories: one per label of labels.txt, ids from 1 in file order, supercategory "none";
//! - images: ids from 1 in list order; `file_name` = the xml's base name with ".xml" replaced by
//!   ".jpg" (the `<filename>` tag is ignored); width and height from `<size>`;
//! - annotations: ids from 1, one global counter in file order; bbox from the VOC corners as
//!   `xmin = int(float(xmin)) - 1`, `ymin = int(float(ymin)) - 1`, `xmax = int(float(xmax))`,
//!   `ymax = int(float(ymax))` (Python's int() truncates toward zero), written as
//!   `[xmin, ymin, xmax - xmin, ymax - ymin]`; area = w*h; iscrowd 0;
//! - `<difficult>` is not looked at: difficult objects are converted like any other (coco-tools).
//!
//! Where the study would crash (assert) or silently misbehave, we report instead: a malformed XML
//! (file and parser message), a label not in labels.txt (file, object index, label), a box with
//! xmax <= xmin or ymax <= ymin in the XML's coordinates (file, object index). By default every
//! offender is listed in one error; with `skip_invalid` the offending file (malformed XML) or
//! object (label, box) is skipped and counted in the report.
//!
//! [`to_study_json`] writes the json byte for byte as the study's `json.dump` would (key order,
//! `", "`/`": "` separators, integers without a decimal point, the extra `type`, `ignore` and
//! `segmentation` keys), so a file made here diffs cleanly against one made by coco-tools.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::atomic_file::write_atomic;
use crate::data::dataset::{Annotation, Category, CocoDataset, ImageInfo};
use crate::data::voc::{VocAnnotation, VocObject};
use crate::{Error, Result};

/// How [`voc_to_coco`] treats bad input.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConvertOptions {
    /// Skip offending files/objects and count them, instead of failing.
    pub skip_invalid: bool,
}

/// One piece of bad input, naming the file and, for object problems, the 0-based object index
/// (the order of `<object>` elements in the file).
#[derive(Debug, Clone, PartialEq)]
pub enum ConvertProblem {
    MalformedXml {
        file: PathBuf,
        msg: String,
    },
    UnknownLabel {
        file: PathBuf,
        object_index: usize,
        label: String,
    },
    InvalidBox {
        file: PathBuf,
        object_index: usize,
        /// The XML's corners (VOC xyxy, as written).
        xyxy: [f64; 4],
    },
}

impl fmt::Display for ConvertProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertProblem::MalformedXml { file, msg } => write!(f, "{}: {msg}", file.display()),
            ConvertProblem::UnknownLabel {
                file,
                object_index,
                label,
            } => write!(
                f,
                "{}: object[{object_index}]: label `{label}` is not in labels.txt",
                file.display()
            ),
            ConvertProblem::InvalidBox {
                file,
                object_index,
                xyxy: [xmin, ymin, xmax, ymax],
            } => write!(
                f,
                "{}: object[{object_index}]: box xmin={xmin} ymin={ymin} xmax={xmax} ymax={ymax} \
                 needs xmax > xmin and ymax > ymin",
                file.display()
            ),
        }
    }
}

/// What a conversion made and what it skipped (`skipped` is empty unless `skip_invalid`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConvertReport {
    pub images: usize,
    pub annotations: usize,
    /// Files skipped because their XML is malformed.
    pub skipped_files: usize,
    /// Objects skipped for an unknown label or an empty box.
    pub skipped_objects: usize,
    pub skipped: Vec<ConvertProblem>,
}

impl fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} images, {} annotations",
            self.images, self.annotations
        )?;
        if !self.skipped.is_empty() {
            write!(
                f,
                "; skipped {} malformed file(s) and {} invalid object(s)",
                self.skipped_files, self.skipped_objects
            )?;
        }
        Ok(())
    }
}

/// Convert parsed VOC annotations (each with the path of its xml, which gives `file_name` and
/// names the file in errors) into a COCO dataset with the study's rules (module docs). `labels`
/// are the lines of labels.txt in order. The result's `image_dir` is empty (set it to the images'
/// folder). Errors list every offender.
pub fn voc_to_coco(
    anns: &[(PathBuf, VocAnnotation)],
    labels: &[String],
    opts: &ConvertOptions,
) -> Result<(CocoDataset, ConvertReport)> {
    convert(anns.iter().map(|(p, a)| (p.as_path(), Ok(a))), labels, opts)
}

/// Read every xml in `files` (in this order) and convert them like [`voc_to_coco`]; a malformed
/// file is one more offender (file and parser message) instead of an immediate error.
pub fn voc_files_to_coco(
    files: &[PathBuf],
    labels: &[String],
    opts: &ConvertOptions,
) -> Result<(CocoDataset, ConvertReport)> {
    let parsed: Vec<(&Path, std::result::Result<VocAnnotation, String>)> = files
        .iter()
        .map(|p| {
            let ann = match std::fs::read_to_string(p) {
                Ok(text) => VocAnnotation::parse(&text),
                Err(e) => Err(format!("cannot read: {e}")),
            };
            (p.as_path(), ann)
        })
        .collect();
    convert(
        parsed
            .iter()
            .map(|(p, a)| (*p, a.as_ref().map_err(String::as_str))),
        labels,
        opts,
    )
}

fn convert<'a>(
    anns: impl Iterator<Item = (&'a Path, std::result::Result<&'a VocAnnotation, &'a str>)>,
    labels: &[String],
    opts: &ConvertOptions,
) -> Result<(CocoDataset, ConvertReport)> {
    let categories = categories_from_labels(labels)?;
    let label_to_id: HashMap<String, u64> =
        categories.iter().map(|c| (c.name.clone(), c.id)).collect();

    let mut ds = CocoDataset {
        categories,
        ..CocoDataset::default()
    };
    let mut problems: Vec<ConvertProblem> = Vec::new();
    let mut report = ConvertReport::default();

    for (xml_path, ann) in anns {
        let ann = match ann {
            Ok(a) => a,
            Err(msg) => {
                problems.push(ConvertProblem::MalformedXml {
                    file: xml_path.to_path_buf(),
                    msg: msg.to_string(),
                });
                report.skipped_files += 1;
                continue;
            }
        };
        // coco-tools: img_id counts from 1 in list order.
        let image_id = ds.images.len() as u64 + 1;
        ds.images.push(ImageInfo {
            id: image_id,
            file_name: study_file_name(xml_path),
            width: ann.width,
            height: ann.height,
        });
        for (object_index, obj) in ann.objects.iter().enumerate() {
            let Some(&category_id) = label_to_id.get(obj.name.as_str()) else {
                problems.push(ConvertProblem::UnknownLabel {
                    file: xml_path.to_path_buf(),
                    object_index,
                    label: obj.name.clone(),
                });
                report.skipped_objects += 1;
                continue;
            };
            let Some(bbox_xywh) = study_bbox_xywh(obj) else {
                problems.push(ConvertProblem::InvalidBox {
                    file: xml_path.to_path_buf(),
                    object_index,
                    xyxy: [obj.xmin, obj.ymin, obj.xmax, obj.ymax],
                });
                report.skipped_objects += 1;
                continue;
            };
            // coco-tools: bnd_id is one global counter from 1.
            let id = ds.annotations.len() as u64 + 1;
            ds.annotations.push(Annotation {
                id,
                image_id,
                category_id,
                bbox_xywh: bbox_xywh.map(|v| v as f64),
                // coco-tools: 'area': o_width * o_height (integer box area).
                area: (bbox_xywh[2] * bbox_xywh[3]) as f64,
                iscrowd: 0,
            });
        }
    }

    if !problems.is_empty() && !opts.skip_invalid {
        let mut msg = format!(
            "{} problem(s) in the VOC annotations (skip_invalid / --skip-invalid skips them):",
            problems.len()
        );
        for p in &problems {
            msg.push_str("\n  ");
            msg.push_str(&p.to_string());
        }
        return Err(Error::Msg(msg));
    }
    report.images = ds.images.len();
    report.annotations = ds.annotations.len();
    report.skipped = problems;
    Ok((ds, report))
}

/// coco-tools: categories `{"supercategory": "none", "id": k, "name": label}`, k from 1.
/// Duplicate or empty labels are an error (the study's dict would silently keep the last id).
pub fn categories_from_labels(labels: &[String]) -> Result<Vec<Category>> {
    let mut seen = HashMap::new();
    for (i, label) in labels.iter().enumerate() {
        if label.trim().is_empty() {
            return Err(Error::InvalidArgument(format!("labels[{i}] is empty")));
        }
        if let Some(first) = seen.insert(label.as_str(), i) {
            return Err(Error::InvalidArgument(format!(
                "label `{label}` is listed twice (positions {} and {})",
                first + 1,
                i + 1
            )));
        }
    }
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, name)| Category {
            id: i as u64 + 1,
            name: name.clone(),
            supercategory: Some("none".to_string()),
        })
        .collect())
}

/// coco-tools: `os.path.basename(xml).replace(".xml", ".jpg")` (Python's replace: every
/// occurrence).
pub fn study_file_name(xml_path: &Path) -> String {
    let base = xml_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    base.replace(".xml", ".jpg")
}

/// coco-tools bbox as integers `[x, y, w, h]`, or None when the XML box is empty
/// (xmax <= xmin or ymax <= ymin). When xmax > xmin, int(xmax) >= int(xmin), so the study's own
/// assertion `int(xmax) > int(xmin) - 1` holds and w >= 1.
pub fn study_bbox_xywh(obj: &VocObject) -> Option<[i64; 4]> {
    let ok = |v: f64| v.is_finite();
    if !(ok(obj.xmin) && ok(obj.ymin) && ok(obj.xmax) && ok(obj.ymax)) {
        return None;
    }
    if obj.xmax <= obj.xmin || obj.ymax <= obj.ymin {
        return None;
    }
    Some(study_xywh_unchecked(obj))
}

/// coco-tools' arithmetic on any box, without the emptiness check of [`study_bbox_xywh`]: the
/// width or height comes out 0 or negative where `int(xmax) < int(xmin)` (the study's script
/// asserts there), and 1 where the integer parts are equal, `xmin == xmax` included (the study
/// keeps such a box, [`study_bbox_xywh`] refuses it when `xmax <= xmin`). The lint
/// (`data::lint`) reports both.
pub fn study_xywh_unchecked(obj: &VocObject) -> [i64; 4] {
    // Python int(float(s)) truncates toward zero; `as i64` does the same (saturating).
    let xmin = obj.xmin as i64 - 1;
    let ymin = obj.ymin as i64 - 1;
    let xmax = obj.xmax as i64;
    let ymax = obj.ymax as i64;
    [xmin, ymin, xmax - xmin, ymax - ymin]
}

/// The json text coco-tools' `json.dump(output_json_dict, f)` writes for this dataset: top-level
/// `images, type, annotations, categories`; image `file_name, height, width, id`; annotation
/// `area, iscrowd, bbox, category_id, ignore, segmentation, image_id, id`; category
/// `supercategory, id, name`. Integral numbers are written as integers.
pub fn to_study_json(ds: &CocoDataset) -> String {
    let mut out = String::from("{\"images\": [");
    for (i, im) in ds.images.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!(
            "{{\"file_name\": {}, \"height\": {}, \"width\": {}, \"id\": {}}}",
            json_str(&im.file_name),
            im.height,
            im.width,
            im.id
        ));
    }
    out.push_str("], \"type\": \"instances\", \"annotations\": [");
    for (i, a) in ds.annotations.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let bbox: Vec<String> = a.bbox_xywh.iter().map(|&v| json_num(v)).collect();
        out.push_str(&format!(
            "{{\"area\": {}, \"iscrowd\": {}, \"bbox\": [{}], \"category_id\": {}, \"ignore\": 0, \
             \"segmentation\": [], \"image_id\": {}, \"id\": {}}}",
            json_num(a.area),
            a.iscrowd,
            bbox.join(", "),
            a.category_id,
            a.image_id,
            a.id
        ));
    }
    out.push_str("], \"categories\": [");
    for (i, c) in ds.categories.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!(
            "{{\"supercategory\": {}, \"id\": {}, \"name\": {}}}",
            json_str(c.supercategory.as_deref().unwrap_or("none")),
            c.id,
            json_str(&c.name)
        ));
    }
    out.push_str("]}");
    out
}

/// Write [`to_study_json`] to `path` (temporary file + rename).
pub fn write_study_json(ds: &CocoDataset, path: &Path) -> Result<()> {
    write_atomic(path, to_study_json(ds).as_bytes())
}

fn json_str(s: &str) -> String {
    // Python's json.dump escapes non-ASCII as \uXXXX (ensure_ascii=True); do the same.
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else if v.is_finite() {
        format!("{v}")
    } else {
        // Not representable in json; Python would write NaN/Infinity. Never produced by voc_to_coco.
        "null".to_string()
    }
}
