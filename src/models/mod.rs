//! Models: the YOLOX family.

pub mod yolox;

pub use yolox::{YoloX, YoloXConfig};
