//! The one in-memory dataset type: COCO's json structure. VOC sets are converted into it
//! (`data::convert`), the loader draws from it, and evaluation compares against it.
//!
//! Boxes here are COCO xywh in original-image pixels (file-boundary format, see docs/design.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: u64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supercategory: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    pub id: u64,
    pub image_id: u64,
    pub category_id: u64,
    /// COCO `[x, y, w, h]`, original-image pixels.
    #[serde(rename = "bbox")]
    pub bbox_xywh: [f64; 4],
    pub area: f64,
    #[serde(default)]
    pub iscrowd: u8,
}

/// A COCO dataset (`images`, `annotations`, `categories`) plus the folder its images live in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CocoDataset {
    pub images: Vec<ImageInfo>,
    pub annotations: Vec<Annotation>,
    pub categories: Vec<Category>,
    /// Folder that `file_name`s are relative to (not part of the json).
    #[serde(skip)]
    pub image_dir: PathBuf,
}

/// One detection in COCO results format (`[{image_id, category_id, bbox, score}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub image_id: u64,
    pub category_id: u64,
    /// COCO `[x, y, w, h]`, original-image pixels.
    #[serde(rename = "bbox")]
    pub bbox_xywh: [f64; 4],
    pub score: f64,
}

/// A text file's contents; bytes that are not UTF-8 are an error naming the file, and the line,
/// column and byte offset of the first bad byte (`read_to_string` says only "did not contain
/// valid UTF-8").
pub fn read_text_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let before = &e.as_bytes()[..valid];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let column = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        Error::format(
            path.display(),
            format!(
                "line {line}, column {column}: not UTF-8 text (byte {valid} is 0x{:02x})",
                e.as_bytes()[valid]
            ),
        )
    })
}

/// Parse a json file with an error that names the file, line and column.
pub fn read_json_file<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = read_text_file(path)?;
    serde_json::from_str(&text).map_err(|e| {
        // serde_json's message ends with " at line L column C": said once, up front.
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let what = message.strip_suffix(&position).unwrap_or(&message);
        Error::format(
            path.display(),
            format!("line {}, column {}: {what}", e.line(), e.column()),
        )
    })
}

/// Write json to a temporary file and rename it into place, so a crash never leaves half a
/// file ([`crate::atomic_file::write_atomic`]).
pub fn write_json_file<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text =
        serde_json::to_string(value).map_err(|e| Error::format(path.display(), e.to_string()))?;
    crate::atomic_file::write_atomic(path, text.as_bytes())
}

impl CocoDataset {
    /// Read a COCO json; `image_dir` defaults to the json's folder.
    pub fn read(path: &Path) -> Result<Self> {
        let mut ds: CocoDataset = read_json_file(path)?;
        ds.image_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        ds.validate(&path.display().to_string())?;
        Ok(ds)
    }

    /// Read a COCO json like [`Self::read`], but keep boxes with a negative width or height
    /// (ids and references are still checked): the lint (`data::lint`) reports such boxes
    /// instead of refusing the file.
    pub fn read_keeping_bad_boxes(path: &Path) -> Result<Self> {
        let mut ds: CocoDataset = read_json_file(path)?;
        ds.image_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        ds.validate_references(&path.display().to_string())?;
        Ok(ds)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        write_json_file(path, self)
    }

    /// Check ids are unique, every annotation points at a known image and category, and no box
    /// has a negative width or height.
    pub fn validate(&self, source: &str) -> Result<()> {
        self.validate_references(source)?;
        for (i, a) in self.annotations.iter().enumerate() {
            let [_, _, w, h] = a.bbox_xywh;
            if !(w >= 0.0 && h >= 0.0) {
                return Err(Error::format(
                    source,
                    format!(
                        "annotations[{i}]: bbox {:?} has a negative width or height",
                        a.bbox_xywh
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Check ids are unique and every annotation points at a known image and category.
    pub fn validate_references(&self, source: &str) -> Result<()> {
        let mut image_ids = HashMap::new();
        for (i, im) in self.images.iter().enumerate() {
            if image_ids.insert(im.id, i).is_some() {
                return Err(Error::format(
                    source,
                    format!("images[{i}]: duplicate image id {}", im.id),
                ));
            }
        }
        let cat_ids: std::collections::HashSet<u64> =
            self.categories.iter().map(|c| c.id).collect();
        for (i, a) in self.annotations.iter().enumerate() {
            if !image_ids.contains_key(&a.image_id) {
                return Err(Error::format(
                    source,
                    format!("annotations[{i}]: image_id {} is not in images", a.image_id),
                ));
            }
            if !cat_ids.contains(&a.category_id) {
                return Err(Error::format(
                    source,
                    format!(
                        "annotations[{i}]: category_id {} is not in categories",
                        a.category_id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Annotations grouped by image id (images without annotations map to an empty list).
    pub fn annotations_by_image(&self) -> HashMap<u64, Vec<&Annotation>> {
        let mut map: HashMap<u64, Vec<&Annotation>> =
            self.images.iter().map(|im| (im.id, Vec::new())).collect();
        for a in &self.annotations {
            map.entry(a.image_id).or_default().push(a);
        }
        map
    }

    /// Path of an image on disk.
    pub fn image_path(&self, image: &ImageInfo) -> PathBuf {
        self.image_dir.join(&image.file_name)
    }

    /// Category ids in order, and the contiguous 0-based class index of each (models use indices).
    pub fn class_index(&self) -> HashMap<u64, usize> {
        self.categories
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect()
    }
}
