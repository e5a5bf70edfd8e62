//! Layers with named parameters. Names follow the official YOLOX PyTorch `state_dict`
//! (`backbone.backbone.stem.conv.conv.weight`), so checkpoints load by name in both directions.

mod layers;
mod store;

pub use layers::{
    BaseConv, BatchNorm2d, Bottleneck, Conv, Conv2d, CspLayer, DwConv, Focus, SppBottleneck,
};
pub use store::{
    match_checkpoint, missing_or_misshaped, under_prefix, Builder, CheckpointMatch, NamedTensor,
    ParamStore, TensorKind,
};
