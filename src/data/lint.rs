//! Tiny-object lint for any data set: object sizes in five buckets, overall and per class, in
//! original pixels or at the training resolution, and the annotation problems that a training
//! run would otherwise meet silently. `ssod stats` prints it (`--json`: one object, `--strict`:
//! exit status 1 on any problem); Rhai's `lint(d, #{ at_size })` returns it as a map.
//!
//! - Size of a box: `sqrt(w·h)` of its COCO `[x, y, w, h]`; for VOC files, of the box after the
//!   study's conversion (`data::convert::study_xywh_unchecked`). With a training size N, each
//!   image's boxes are scaled by its letterbox factor `min(N / W, N / H)`, the resize before
//!   padding to N×N. Buckets, lower bound inclusive: `<8`, `8-16`, `16-32`, `32-96`, `>=96`
//!   pixels. Degenerate boxes are not sized; a bucket's share is of the sized boxes.
//! - Problems ([`ProblemKind`]), each with the file it is in and a detail naming the object:
//!   degenerate boxes (w or h ≤ 0; for VOC also an empty XML box, `xmax <= xmin`, which the
//!   study's arithmetic turns into a 1-pixel box and ssod's readers refuse), boxes reaching
//!   outside the image, exact duplicate boxes in one image, images without objects, classes
//!   without objects; and, where the input has them, labels not in the class list, images
//!   without a size and unreadable files.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::data::convert::study_xywh_unchecked;
use crate::data::dataset::CocoDataset;
use crate::data::voc::VocAnnotation;

/// The size buckets in order (pixels of `sqrt(w·h)`, lower bound inclusive).
pub const SIZE_BUCKETS: [&str; 5] = ["<8", "8-16", "16-32", "32-96", ">=96"];
/// Lower bounds of the buckets after the first.
const BUCKET_LOWER_PX: [f64; 4] = [8.0, 16.0, 32.0, 96.0];

/// Index into [`SIZE_BUCKETS`] of a size in pixels.
pub fn size_bucket(size_px: f64) -> usize {
    BUCKET_LOWER_PX.iter().filter(|&&lo| size_px >= lo).count()
}

/// Bucket counts of a dataset's boxes in original pixels (boxes with a positive width and
/// height; the others are degenerate and not sized).
pub fn size_bucket_counts(ds: &CocoDataset) -> [usize; 5] {
    let mut counts = [0; 5];
    for a in &ds.annotations {
        let [_, _, w, h] = a.bbox_xywh;
        if w > 0.0 && h > 0.0 {
            counts[size_bucket((w * h).sqrt())] += 1;
        }
    }
    counts
}

/// What is wrong; serialised in snake case (`degenerate_box`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    DegenerateBox,
    OutsideImage,
    DuplicateBox,
    ImageWithoutObjects,
    ClassWithoutObjects,
    UnknownClass,
    ImageWithoutSize,
    UnreadableFile,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::DegenerateBox => "degenerate_box",
            ProblemKind::OutsideImage => "outside_image",
            ProblemKind::DuplicateBox => "duplicate_box",
            ProblemKind::ImageWithoutObjects => "image_without_objects",
            ProblemKind::ClassWithoutObjects => "class_without_objects",
            ProblemKind::UnknownClass => "unknown_class",
            ProblemKind::ImageWithoutSize => "image_without_size",
            ProblemKind::UnreadableFile => "unreadable_file",
        }
    }
}

/// One problem: its kind, the file it is in (the image's file, or the class list's for a class)
/// and what exactly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub kind: ProblemKind,
    pub file: String,
    pub detail: String,
}

/// One bucket's count and its share of the sized boxes (0 when there are none).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketCount {
    pub bucket: &'static str,
    pub objects: usize,
    pub share: f64,
}

/// One class's objects (degenerate ones included) and the buckets of its sized boxes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSizes {
    pub class: String,
    pub objects: usize,
    pub size_buckets: Vec<BucketCount>,
}

/// The lint of one data set (the `--json` object).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetLint {
    pub images: usize,
    /// Every object read, degenerate and unknown-class ones included.
    pub objects: usize,
    /// The training size the sizes are at, or none for original pixels.
    pub at_size: Option<u32>,
    pub size_buckets: Vec<BucketCount>,
    pub per_class: Vec<ClassSizes>,
    pub problems: Vec<Problem>,
}

impl DatasetLint {
    pub fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// One object as the lint sees it, from either format.
#[derive(Debug, Clone, PartialEq)]
pub struct LintObject {
    /// How to find it in its file: `object[2] (bottle)`, `annotation 17`.
    pub name: String,
    /// Index into [`LintSource::classes`]; None for a label not in the list.
    pub class: Option<usize>,
    pub bbox_xywh: [f64; 4],
    /// Why the source already knows the box is degenerate (for VOC: with the XML's corners).
    pub degenerate: Option<String>,
}

/// One image: its file (the VOC xml, or the COCO `file_name`), size and objects.
#[derive(Debug, Clone, PartialEq)]
pub struct LintImage {
    pub file: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<LintObject>,
}

/// A data set ready to lint: class names, images, and problems found while reading it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LintSource {
    /// The file class problems are reported in (labels.txt, the COCO json, or the folder).
    pub class_file: String,
    pub classes: Vec<String>,
    pub images: Vec<LintImage>,
    pub problems: Vec<Problem>,
}

/// A COCO dataset (categories in order; objects named by annotation id).
pub fn source_from_coco(ds: &CocoDataset, class_file: &str) -> LintSource {
    let class_of = ds.class_index();
    let by_image = ds.annotations_by_image();
    let images = ds
        .images
        .iter()
        .map(|im| LintImage {
            file: im.file_name.clone(),
            width: im.width,
            height: im.height,
            objects: by_image.get(&im.id).map_or_else(Vec::new, |anns| {
                anns.iter()
                    .map(|a| LintObject {
                        name: format!("annotation {}", a.id),
                        class: class_of.get(&a.category_id).copied(),
                        bbox_xywh: a.bbox_xywh,
                        degenerate: None,
                    })
                    .collect()
            }),
        })
        .collect();
    LintSource {
        class_file: class_file.to_string(),
        classes: ds.categories.iter().map(|c| c.name.clone()).collect(),
        images,
        problems: Vec::new(),
    }
}

/// VOC xml files (in this order) with the class list `labels`; boxes as the study converts
/// them. A file that cannot be read or parsed and a label not in `labels` are problems, not
/// errors.
pub fn source_from_voc_files(files: &[PathBuf], labels: &[String], class_file: &str) -> LintSource {
    let mut src = LintSource {
        class_file: class_file.to_string(),
        classes: labels.to_vec(),
        ..LintSource::default()
    };
    for path in files {
        let file = path.display().to_string();
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|text| VocAnnotation::parse(&text));
        let ann = match parsed {
            Ok(a) => a,
            Err(detail) => {
                src.problems.push(Problem {
                    kind: ProblemKind::UnreadableFile,
                    file,
                    detail,
                });
                continue;
            }
        };
        let mut objects = Vec::new();
        for (i, o) in ann.objects.iter().enumerate() {
            let name = format!("object[{i}] ({})", o.name);
            let class = labels.iter().position(|l| *l == o.name);
            if class.is_none() {
                src.problems.push(Problem {
                    kind: ProblemKind::UnknownClass,
                    file: file.clone(),
                    detail: format!("{name}: label `{}` is not in the class list", o.name),
                });
            }
            let bbox = study_xywh_unchecked(o).map(|v| v as f64);
            let corners = format!(
                "xmin={} ymin={} xmax={} ymax={}",
                o.xmin, o.ymin, o.xmax, o.ymax
            );
            let degenerate = if !(bbox[2] > 0.0 && bbox[3] > 0.0) {
                Some(format!(
                    "{corners} converts to {bbox:?}: w or h <= 0 (the study's script \
                     stops at its assertion)"
                ))
            } else if o.xmax <= o.xmin || o.ymax <= o.ymin {
                Some(format!(
                    "{corners} is empty in the XML; the study's conversion makes it \
                     {bbox:?}, ssod's readers refuse it"
                ))
            } else {
                None
            };
            objects.push(LintObject {
                name,
                class,
                bbox_xywh: bbox,
                degenerate,
            });
        }
        src.images.push(LintImage {
            file,
            width: ann.width,
            height: ann.height,
            objects,
        });
    }
    src
}

/// Running counts while linting.
struct Tally {
    total: [usize; 5],
    per_class: Vec<[usize; 5]>,
    class_objects: Vec<usize>,
    problems: Vec<Problem>,
}

impl Tally {
    fn problem(&mut self, kind: ProblemKind, file: &str, detail: String) {
        self.problems.push(Problem {
            kind,
            file: file.to_string(),
            detail,
        });
    }
}

/// Lint a data set, with sizes at the training size `at_size` (letterbox) or in original pixels.
pub fn lint(src: &LintSource, at_size: Option<u32>) -> DatasetLint {
    let mut t = Tally {
        total: [0; 5],
        per_class: vec![[0; 5]; src.classes.len()],
        class_objects: vec![0; src.classes.len()],
        problems: src.problems.clone(),
    };
    for im in &src.images {
        lint_image(im, at_size, &mut t);
    }
    for (c, name) in src.classes.iter().enumerate() {
        if t.class_objects[c] == 0 {
            t.problem(
                ProblemKind::ClassWithoutObjects,
                &src.class_file,
                format!("class `{name}` (index {c}) has no objects"),
            );
        }
    }
    DatasetLint {
        images: src.images.len(),
        objects: src.images.iter().map(|im| im.objects.len()).sum(),
        at_size,
        size_buckets: with_shares(&t.total),
        per_class: src
            .classes
            .iter()
            .enumerate()
            .map(|(c, name)| ClassSizes {
                class: name.clone(),
                objects: t.class_objects[c],
                size_buckets: with_shares(&t.per_class[c]),
            })
            .collect(),
        problems: t.problems,
    }
}

fn lint_image(im: &LintImage, at_size: Option<u32>, t: &mut Tally) {
    let file = im.file.as_str();
    let (wi, hi) = (im.width as f64, im.height as f64);
    if im.objects.is_empty() {
        t.problem(
            ProblemKind::ImageWithoutObjects,
            file,
            format!("{}x{} image without objects", im.width, im.height),
        );
    }
    let sized_image = im.width > 0 && im.height > 0;
    if !sized_image {
        t.problem(
            ProblemKind::ImageWithoutSize,
            file,
            format!(
                "width {} and height {}: its boxes cannot be placed or scaled",
                im.width, im.height
            ),
        );
    }
    // Letterbox: the image is resized by min(N/W, N/H), then padded to N×N.
    let scale = at_size.map_or(1.0, |n| (n as f64 / wi).min(n as f64 / hi));
    // Bits of each coordinate (+0.0 makes −0 and 0 one key) → first object with that box.
    let mut seen: HashMap<[u64; 4], usize> = HashMap::new();
    for (j, o) in im.objects.iter().enumerate() {
        if let Some(c) = o.class {
            t.class_objects[c] += 1;
        }
        let [x, y, w, h] = o.bbox_xywh;
        let key = o.bbox_xywh.map(|v| (v + 0.0).to_bits());
        if let Some(&first) = seen.get(&key) {
            let detail = format!(
                "{} repeats {}: bbox {:?}",
                o.name, im.objects[first].name, o.bbox_xywh
            );
            t.problem(ProblemKind::DuplicateBox, file, detail);
        } else {
            seen.insert(key, j);
        }
        let degenerate = o.degenerate.clone().or_else(|| {
            (!(w > 0.0 && h > 0.0)).then(|| format!("bbox {:?} has w or h <= 0", o.bbox_xywh))
        });
        if let Some(why) = degenerate {
            t.problem(
                ProblemKind::DegenerateBox,
                file,
                format!("{}: {why}", o.name),
            );
            continue;
        }
        if sized_image && (x < 0.0 || y < 0.0 || x + w > wi || y + h > hi) {
            let detail = format!(
                "{}: bbox {:?} reaches outside the {}x{} image",
                o.name, o.bbox_xywh, im.width, im.height
            );
            t.problem(ProblemKind::OutsideImage, file, detail);
        }
        if at_size.is_some() && !sized_image {
            continue; // no letterbox factor
        }
        let b = size_bucket((w * h).sqrt() * scale);
        t.total[b] += 1;
        if let Some(c) = o.class {
            t.per_class[c][b] += 1;
        }
    }
}

/// Bucket counts with their shares of the total.
pub fn with_shares(counts: &[usize; 5]) -> Vec<BucketCount> {
    let sized: usize = counts.iter().sum();
    SIZE_BUCKETS
        .iter()
        .zip(counts)
        .map(|(&bucket, &objects)| BucketCount {
            bucket,
            objects,
            share: if sized == 0 {
                0.0
            } else {
                objects as f64 / sized as f64
            },
        })
        .collect()
}

/// `<8 3 (25.0%), 8-16 1 (8.3%), ...`
pub fn format_buckets(buckets: &[BucketCount]) -> String {
    buckets
        .iter()
        .map(|b| format!("{} {} ({:.1}%)", b.bucket, b.objects, 100.0 * b.share))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for DatasetLint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = match self.at_size {
            Some(n) => format!("at training size {n} (letterbox)"),
            None => "in original pixels".to_string(),
        };
        writeln!(f, "object sizes, sqrt(w·h) {at}:")?;
        writeln!(f, "  all: {}", format_buckets(&self.size_buckets))?;
        for c in &self.per_class {
            let shown = format_buckets(&c.size_buckets);
            writeln!(f, "  {} ({} objects): {shown}", c.class, c.objects)?;
        }
        if self.problems.is_empty() {
            return write!(f, "problems: none");
        }
        let mut counts: Vec<(ProblemKind, usize)> = Vec::new();
        for p in &self.problems {
            match counts.iter_mut().find(|(k, _)| *k == p.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((p.kind, 1)),
            }
        }
        let summary: Vec<String> = counts
            .iter()
            .map(|(k, n)| format!("{} {n}", k.name()))
            .collect();
        write!(
            f,
            "problems: {} ({})",
            self.problems.len(),
            summary.join(", ")
        )?;
        for p in &self.problems {
            write!(f, "\n  {} {}: {}", p.kind.name(), p.file, p.detail)?;
        }
        Ok(())
    }
}
