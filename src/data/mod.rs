//! Data: COCO/VOC datasets, conversion, the FloW-like generator, crops, frames, augmentation, loader.

pub mod dataset;
pub mod image_io;

pub mod convert;
pub mod crops;
pub mod frames;
pub mod lint;
pub mod stats;
pub mod video_out;
pub mod voc;

pub mod augment;
pub mod loader;
pub mod prefetch;
pub mod synth;

pub use dataset::{Annotation, Category, CocoDataset, Detection, ImageInfo};
