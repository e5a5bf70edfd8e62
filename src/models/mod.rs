//! Models: the YOLOX family.

pub mod sparse;
pub mod weights;
pub mod yolox;

pub use sparse::{PatchMask, SparseBn, MASK_PATCH_PX};
pub use weights::{LoadOptions, LoadedWeights, WeightsSource};
pub use yolox::{YoloX, YoloXConfig};
