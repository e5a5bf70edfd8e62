//! Models: the YOLOX family.

pub mod yolox;

pub use yolox::{LoadOptions, LoadedWeights, WeightsSource, YoloX, YoloXConfig};
