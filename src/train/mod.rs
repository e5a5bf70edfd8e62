//! The training recipe's building blocks (docs/yolox.md §5): the config with every knob,
//! per-iteration lr schedules, SGD/Adam/AdamW with YOLOX's parameter groups, the model EMA and
//! resumable checkpoints. The step (`trainer.rs`) and the run around it (`run.rs`) compose them.

pub mod checkpoint;
pub mod config;
pub mod device_batch;
pub mod ema;
pub mod evaluate;
pub mod optim;
pub mod precision;
mod resume;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use checkpoint::{
    load_checkpoint, read_checkpoint_meta, save_checkpoint, BestEval, CheckpointMeta,
    TrainProgress, CHECKPOINT_FORMAT,
};
pub use config::{BoxLossKind, OptimizerKind, SchedulerKind, SimOtaMode, TrainConfig};
pub use ema::ModelEma;
pub use optim::{build_optimizer, Adam, Optimizer, Sgd};
pub use schedule::{yolox_warm_cos_lr, LrSchedule};
