//! A dataset summary: images, objects, objects per image, the COCO small/medium/large
//! histogram and the tiny-object size buckets (`data::lint`). `ssod stats` prints it for any VOC
//! or COCO set; the generator prints the same after it writes a set.

use std::fmt;

use crate::data::dataset::CocoDataset;
use crate::data::lint::{format_buckets, size_bucket_counts, with_shares};

/// COCO's area limits (pycocotools `areaRng`): small < 32², medium 32²..96², large >= 96².
pub const SMALL_MAX_AREA: f64 = 32.0 * 32.0;
pub const MEDIUM_MAX_AREA: f64 = 96.0 * 96.0;

/// Counts for one dataset. Sizes use each annotation's `area` field, as COCO evaluation does
/// (for sets converted from VOC that is the box area w*h).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetSummary {
    pub images: usize,
    pub images_without_objects: usize,
    pub objects: usize,
    pub max_objects_per_image: usize,
    /// area < 32²
    pub small: usize,
    /// 32² <= area < 96²
    pub medium: usize,
    /// area >= 96²
    pub large: usize,
    /// Boxes per size bucket of `sqrt(w·h)` in original pixels (`lint::SIZE_BUCKETS`); boxes
    /// without a positive width and height are not counted.
    pub size_buckets: [usize; 5],
    /// (category name, object count) in category order.
    pub per_category: Vec<(String, usize)>,
}

impl DatasetSummary {
    pub fn objects_per_image(&self) -> f64 {
        if self.images == 0 {
            0.0
        } else {
            self.objects as f64 / self.images as f64
        }
    }
}

/// Summarise a dataset (annotations whose image is not in `images` still count as objects).
pub fn summarize(ds: &CocoDataset) -> DatasetSummary {
    let mut s = DatasetSummary {
        images: ds.images.len(),
        objects: ds.annotations.len(),
        ..DatasetSummary::default()
    };
    let by_image = ds.annotations_by_image();
    for im in &ds.images {
        let n = by_image.get(&im.id).map_or(0, Vec::len);
        if n == 0 {
            s.images_without_objects += 1;
        }
        s.max_objects_per_image = s.max_objects_per_image.max(n);
    }
    for a in &ds.annotations {
        if a.area < SMALL_MAX_AREA {
            s.small += 1;
        } else if a.area < MEDIUM_MAX_AREA {
            s.medium += 1;
        } else {
            s.large += 1;
        }
    }
    s.size_buckets = size_bucket_counts(ds);
    s.per_category = ds
        .categories
        .iter()
        .map(|c| {
            let n = ds
                .annotations
                .iter()
                .filter(|a| a.category_id == c.id)
                .count();
            (c.name.clone(), n)
        })
        .collect();
    s
}

impl fmt::Display for DatasetSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |n: usize| {
            if self.objects == 0 {
                0.0
            } else {
                100.0 * n as f64 / self.objects as f64
            }
        };
        writeln!(
            f,
            "images:  {} ({} without objects)",
            self.images, self.images_without_objects
        )?;
        writeln!(
            f,
            "objects: {} ({:.2} per image, at most {} in one image)",
            self.objects,
            self.objects_per_image(),
            self.max_objects_per_image
        )?;
        write!(
            f,
            "sizes (COCO area): small (<32²) {} ({:.1}%), medium {} ({:.1}%), large (>=96²) {} ({:.1}%)",
            self.small,
            pct(self.small),
            self.medium,
            pct(self.medium),
            self.large,
            pct(self.large)
        )?;
        let buckets = format_buckets(&with_shares(&self.size_buckets));
        write!(f, "\nsizes (sqrt(w·h) px): {buckets}")?;
        if self.per_category.len() > 1 {
            write!(f, "\nper category:")?;
            for (name, n) in &self.per_category {
                write!(f, " {name} {n};")?;
            }
        }
        Ok(())
    }
}
