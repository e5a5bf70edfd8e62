//! Dataset readers for the two VOC folder layouts, producing the shared `CocoDataset` through the
//! study's conversion (`data::convert`), so a set read here and one converted by `ssod voc2coco`
//! are the same.
//!
//! - FloW: `ROOT/training/{images,annotations}` and `ROOT/test/{images,annotations}`; the two
//!   splits reuse file names (docs/the-study.md), so a split is always read on its own.
//! - Classic VOC: `ROOT/JPEGImages`, `ROOT/Annotations`, `ROOT/ImageSets/Main/<set>.txt`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::data::convert::{voc_files_to_coco, ConvertOptions, ConvertReport};
use crate::data::dataset::CocoDataset;
use crate::data::voc::VocAnnotation;
use crate::{Error, Result};

/// Labels from a labels.txt. coco-tools reads `f.read().split()`: whitespace-separated tokens,
/// so blank lines are ignored and a label cannot contain a space.
pub fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let labels: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if labels.is_empty() {
        return Err(Error::format(
            path.display(),
            "no labels (expected one label per line)",
        ));
    }
    for (i, label) in labels.iter().enumerate() {
        if let Some(first) = labels[..i].iter().position(|l| l == label) {
            return Err(Error::format(
                path.display(),
                format!(
                    "label `{label}` is listed twice (labels {} and {})",
                    first + 1,
                    i + 1
                ),
            ));
        }
    }
    Ok(labels)
}

/// Every `*.xml` directly inside `dir`, sorted by file name (byte order), so the image ids
/// do not depend on the file system's listing order (the study used unsorted `os.listdir`).
pub fn list_xml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let is_xml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
        if is_xml && path.is_file() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The sorted set of `<name>` values in the files (what the study's `parse_xml_label.py`
/// collects); malformed files are skipped here and reported by the conversion.
pub fn collect_labels(files: &[PathBuf]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for f in files {
        if let Ok(ann) = VocAnnotation::read(f) {
            names.extend(ann.objects.into_iter().map(|o| o.name));
        }
    }
    names.into_iter().collect()
}

/// Read one FloW split (`"training"` or `"test"`, or any folder name with the same inside):
/// `ROOT/<split>/annotations/*.xml` sorted by name, images in `ROOT/<split>/images`.
pub fn read_flow_split(
    root: &Path,
    split: &str,
    labels: &[String],
    opts: &ConvertOptions,
) -> Result<(CocoDataset, ConvertReport)> {
    let split_dir = root.join(split);
    let ann_dir = split_dir.join("annotations");
    if !ann_dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "{}: not a FloW split (expected {}/{{images,annotations}})",
            split_dir.display(),
            split
        )));
    }
    let files = list_xml_files(&ann_dir)?;
    let (mut ds, report) = voc_files_to_coco(&files, labels, opts)?;
    ds.image_dir = split_dir.join("images");
    Ok((ds, report))
}

/// Read a classic VOC set: the ids listed in `ROOT/ImageSets/Main/<image_set>.txt` (first token
/// of each line; lines whose second token is `-1`, as in the per-class lists, are left out), in
/// that order, from `ROOT/Annotations/<id>.xml`; images in `ROOT/JPEGImages`.
pub fn read_voc_classic(
    root: &Path,
    image_set: &str,
    labels: &[String],
    opts: &ConvertOptions,
) -> Result<(CocoDataset, ConvertReport)> {
    let list = root
        .join("ImageSets")
        .join("Main")
        .join(format!("{image_set}.txt"));
    let text = std::fs::read_to_string(&list).map_err(|e| Error::io(&list, e))?;
    let ann_dir = root.join("Annotations");
    let mut files = Vec::new();
    for line in text.lines() {
        let mut tokens = line.split_whitespace();
        let Some(id) = tokens.next() else { continue };
        if tokens.next() == Some("-1") {
            continue;
        }
        files.push(ann_dir.join(format!("{id}.xml")));
    }
    let (mut ds, report) = voc_files_to_coco(&files, labels, opts)?;
    ds.image_dir = root.join("JPEGImages");
    Ok((ds, report))
}
