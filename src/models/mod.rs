//! Models: the YOLOX family.

pub mod yolox;

pub use yolox::{LoadedWeights, WeightsSource, YoloX, YoloXConfig};
