//! Models: the YOLOX family.

pub mod weights;
pub mod yolox;

pub use weights::{LoadOptions, LoadedWeights, WeightsSource};
pub use yolox::{YoloX, YoloXConfig};
