//! Learning-rate schedules evaluated per iteration (yolox/utils/lr_scheduler.py).
//!
//! YOLOX sets the lr for step `i + 1` after step `i` from the global iteration count
//! (`progress_in_iter`), so the very first step runs at `warmup_lr` (0 by default).

use std::f64::consts::PI;

use super::config::{SchedulerKind, TrainConfig};
use crate::{Error, Result};

/// A schedule with all its lengths in iterations.
#[derive(Clone, Debug, PartialEq)]
pub enum LrSchedule {
    /// `yolox_warm_cos_lr`: quadratic warm-up from `warmup_lr` over `warmup_iters`, cosine from
    /// `base_lr` to `min_lr_ratio·base_lr` until `total_iters − no_aug_iters`, then flat.
    YoloxWarmCos {
        base_lr: f64,
        min_lr_ratio: f64,
        total_iters: u64,
        warmup_iters: u64,
        warmup_lr: f64,
        no_aug_iters: u64,
    },
    /// `cos_lr`: `base_lr · 0.5 · (1 + cos(π · it / total_iters))`, 0 from `total_iters` on.
    Cos { base_lr: f64, total_iters: u64 },
    /// `base_lr` at every iteration.
    Constant { base_lr: f64 },
}

impl LrSchedule {
    /// The schedule a [`TrainConfig`] asks for, given the loader's iterations per epoch
    /// (YOLOX: `LRScheduler(name, lr, iters_per_epoch, max_epoch, warmup_epochs=..., ...)`).
    pub fn from_config(config: &TrainConfig, iters_per_epoch: u64) -> Result<Self> {
        if iters_per_epoch == 0 {
            return Err(Error::InvalidArgument(
                "lr schedule: iters_per_epoch must be >= 1 (is the dataset empty?)".into(),
            ));
        }
        let base_lr = config.lr();
        let total_iters = iters_per_epoch * config.max_epoch as u64;
        Ok(match config.scheduler {
            SchedulerKind::YoloxWarmCos => LrSchedule::YoloxWarmCos {
                base_lr,
                min_lr_ratio: config.min_lr_ratio,
                total_iters,
                warmup_iters: iters_per_epoch * config.warmup_epochs as u64,
                warmup_lr: config.warmup_lr,
                no_aug_iters: iters_per_epoch * config.no_aug_epochs as u64,
            },
            SchedulerKind::Cos => LrSchedule::Cos {
                base_lr,
                total_iters,
            },
            SchedulerKind::Constant => LrSchedule::Constant { base_lr },
        })
    }

    /// The lr for global iteration `it` (0-based count of finished optimiser steps).
    pub fn lr_at(&self, it: u64) -> f64 {
        match *self {
            LrSchedule::YoloxWarmCos {
                base_lr,
                min_lr_ratio,
                total_iters,
                warmup_iters,
                warmup_lr,
                no_aug_iters,
            } => yolox_warm_cos_lr(
                base_lr,
                min_lr_ratio,
                total_iters,
                warmup_iters,
                warmup_lr,
                no_aug_iters,
                it,
            ),
            LrSchedule::Cos {
                base_lr,
                total_iters,
            } => {
                if total_iters == 0 || it >= total_iters {
                    // PyTorch-free continuation: cos(π) end point.
                    0.0
                } else {
                    base_lr * 0.5 * (1.0 + (PI * it as f64 / total_iters as f64).cos())
                }
            }
            LrSchedule::Constant { base_lr } => base_lr,
        }
    }
}

/// yolox/utils/lr_scheduler.py `yolox_warm_cos_lr`, branch for branch:
/// ```text
/// it <= W:      (lr − warmup_lr)·(it/W)² + warmup_lr
/// it >= T − N:  min_lr = min_lr_ratio·lr
/// else:         min_lr + 0.5·(lr − min_lr)·(1 + cos(π·(it − W)/(T − W − N)))
/// ```
/// With `W = 0` the warm-up branch is skipped (YOLOX would divide by zero at it = 0; we start
/// at the full lr instead).
pub fn yolox_warm_cos_lr(
    base_lr: f64,
    min_lr_ratio: f64,
    total_iters: u64,
    warmup_iters: u64,
    warmup_lr: f64,
    no_aug_iters: u64,
    it: u64,
) -> f64 {
    let min_lr = base_lr * min_lr_ratio;
    if warmup_iters > 0 && it <= warmup_iters {
        let f = it as f64 / warmup_iters as f64;
        (base_lr - warmup_lr) * f * f + warmup_lr
    } else if it + no_aug_iters >= total_iters {
        min_lr
    } else {
        // Here W < it < T − N, so the denominator is >= 1.
        let span = (total_iters - warmup_iters - no_aug_iters) as f64;
        min_lr + 0.5 * (base_lr - min_lr) * (1.0 + (PI * (it - warmup_iters) as f64 / span).cos())
    }
}
