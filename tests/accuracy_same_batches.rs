//! An instrument, not a check (ignored): ssod's training step (`DetectorTrainer::step`, the same
//! SGD, schedule, EMA and no-aug switch as `train_detector`) on a recorded sequence of batches,
//! from recorded initial weights, so that a run can be set beside the official trainer's run on
//! the very same batches (`benches/accuracy_vs_official.py same-batches`, which writes the
//! folder, runs both sides and compares them).
//!
//!     SSOD_SAME_BATCHES=DIR cargo test --release --test accuracy_same_batches -- --ignored
//!
//! DIR holds `meta.json` (epochs, iters_per_epoch, no_aug_start, the recipe as TrainConfig
//! keys), `init.safetensors` and `batch_E_I_images.npy` (u8 `[B, 3, H, W]` BGR) and
//! `batch_E_I_labels.npy` (f32 `[B, L, 5]`: class, cx, cy, w, h; padding rows all zero, as
//! YOLOX counts them: the rows whose sum is positive). Writes `TAG_losses.jsonl` (one line
//! per step) and `TAG_ema.safetensors` there (TAG: `SSOD_SAME_BATCHES_TAG`, default `ssod`).
//!
//! With `SSOD_SAME_BATCHES_KEEP_ZERO=1` the step is the one written out here from the same
//! public pieces (forward, decode, `yolox_loss`, the recipe's optimiser, schedule and EMA),
//! every label row a target. It trained on the mosaic fallbacks' zero-size boxes while
//! `DetectorTrainer` still dropped them (`train/device_batch.rs`, before commit 009cbcb); now
//! that the trainer keeps them too, both ways give the same losses and EMA weights, bit for bit
//! (checked on the first recorded epoch, 32 steps with zero-size boxes).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use ssod::data::loader::Batch;
use ssod::detect::decode_boxes;
use ssod::detect::loss::{yolox_loss, ImageTargets, YoloxLossConfig};
use ssod::detect::simota::SimOtaConfig;
use ssod::models::{YoloX, YoloXConfig};
use ssod::tensor::npy::read_npy;
use ssod::tensor::Tensor;
use ssod::train::trainer::{DetectorTrainer, StepStats};
use ssod::train::{build_optimizer, LrSchedule, ModelEma, Optimizer, TrainConfig};

/// `DetectorTrainer::step_uploaded`'s arithmetic with every label row of the batch as ground
/// truth (zero-size ones included).
struct KeepZeroStep {
    model: Arc<YoloX>,
    ema_model: Arc<YoloX>,
    ema: ModelEma,
    optimizer: Box<dyn Optimizer>,
    schedule: LrSchedule,
    loss: YoloxLossConfig,
    iteration: u64,
}

impl KeepZeroStep {
    fn new(model: Arc<YoloX>, config: &TrainConfig, iters: u64) -> Self {
        let ema_model = Arc::new(YoloX::new(model.config.clone()).unwrap());
        let ema = ModelEma::new(
            &model.store,
            ema_model.store.clone(),
            config.ema_decay,
            config.ema_tau,
        )
        .unwrap();
        KeepZeroStep {
            optimizer: build_optimizer(config, &model.store),
            schedule: LrSchedule::from_config(config, iters).unwrap(),
            loss: YoloxLossConfig {
                box_loss: config.box_loss,
                use_l1: false,
                reg_weight: 5.0,
                simota: SimOtaConfig {
                    mode: config.simota_mode,
                    center_radius: config.center_radius as f32,
                },
            },
            model,
            ema_model,
            ema,
            iteration: 0,
        }
    }

    fn step(&mut self, batch: &Batch) -> StepStats {
        let images = Tensor::from_vec(
            batch.images.clone(),
            [batch.batch, 3, batch.height, batch.width],
        )
        .unwrap();
        let targets: Vec<ImageTargets> = (0..batch.batch)
            .map(|b| {
                let mut t = ImageTargets::default();
                for l in 0..batch.num_labels[b] {
                    let o = (b * batch.max_labels + l) * 5;
                    let row = &batch.labels[o..o + 5];
                    t.classes.push(row[0] as usize);
                    t.boxes_cxcywh.push([row[1], row[2], row[3], row[4]]);
                }
                t
            })
            .collect();
        let grid = YoloX::anchor_grid(batch.height, batch.width);
        self.model.set_training(true);
        let raw = self.model.forward(&images).unwrap();
        let decoded = decode_boxes(&raw, &grid).unwrap();
        let loss = yolox_loss(&raw, &decoded, &grid, &targets, &self.loss).unwrap();
        self.optimizer.zero_grad();
        loss.total.backward().unwrap();
        let lr = self.schedule.lr_at(self.iteration);
        self.optimizer.step(lr as f32).unwrap();
        self.ema.update(&self.model.store).unwrap();
        self.iteration += 1;
        StepStats {
            loss: loss.total.item().unwrap(),
            iou: loss.iou,
            obj: loss.obj,
            cls: loss.cls,
            l1: loss.l1,
            num_fg: loss.num_fg,
            num_gt: loss.num_gt,
            lr,
            images: batch.batch,
            ..Default::default()
        }
    }
}

fn batch_from(dir: &Path, e: usize, i: usize) -> Batch {
    let images = read_npy(&dir.join(format!("batch_{e}_{i}_images.npy"))).unwrap();
    let labels = read_npy(&dir.join(format!("batch_{e}_{i}_labels.npy"))).unwrap();
    let d = images.dims().to_vec();
    let (b, h, w) = (d[0], d[2], d[3]);
    let ml = labels.dims()[1];
    let lv = labels.to_vec();
    // yolo_head.get_losses: nlabel = (labels.sum(dim=2) > 0).sum(dim=1), the first nlabel rows.
    let num_labels = (0..b)
        .map(|k| {
            (0..ml)
                .filter(|&j| {
                    lv[(k * ml + j) * 5..(k * ml + j + 1) * 5]
                        .iter()
                        .sum::<f32>()
                        > 0.0
                })
                .count()
        })
        .collect();
    Batch {
        images: images.to_vec(),
        batch: b,
        height: h,
        width: w,
        labels: lv,
        max_labels: ml,
        num_labels,
        image_ids: (0..b as u64).collect(),
    }
}

#[test]
#[ignore]
fn trainer_on_recorded_batches() {
    let Ok(dir) = std::env::var("SSOD_SAME_BATCHES") else {
        eprintln!("SSOD_SAME_BATCHES is not set: nothing to do");
        return;
    };
    let dir = Path::new(&dir);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let epochs = meta["epochs"].as_u64().unwrap() as usize;
    let iters = meta["iters_per_epoch"].as_u64().unwrap() as usize;
    let no_aug_start = meta["no_aug_start"].as_u64().unwrap() as usize;
    let config = TrainConfig::for_variant("nano")
        .unwrap()
        .with_overrides(&meta["recipe"])
        .unwrap();
    let model = YoloX::new(YoloXConfig::variant("nano", 1).unwrap()).unwrap();
    model.load(&dir.join("init.safetensors")).unwrap();
    let keep_zero = std::env::var("SSOD_SAME_BATCHES_KEEP_ZERO").is_ok_and(|v| v == "1");
    let model = Arc::new(model);
    let mut trainer = DetectorTrainer::new(model.clone(), config.clone(), iters as u64).unwrap();
    let mut own = keep_zero.then(|| KeepZeroStep::new(model, &config, iters as u64));
    let tag = std::env::var("SSOD_SAME_BATCHES_TAG").unwrap_or_else(|_| "ssod".into());
    let mut out = std::fs::File::create(dir.join(format!("{tag}_losses.jsonl"))).unwrap();
    for e in 0..epochs {
        trainer.loss.use_l1 = e >= no_aug_start;
        if let Some(o) = own.as_mut() {
            o.loss.use_l1 = e >= no_aug_start;
        }
        for i in 0..iters {
            let batch = batch_from(dir, e, i);
            let s = match own.as_mut() {
                Some(o) => o.step(&batch),
                None => trainer.step(&batch).unwrap(),
            };
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "epoch": e + 1, "iter": i, "total": s.loss, "iou": 5.0 * s.iou, "obj": s.obj,
                    "cls": s.cls, "l1": s.l1, "num_fg": s.num_fg, "num_gt": s.num_gt, "lr": s.lr,
                })
            )
            .unwrap();
        }
        trainer.epoch += 1;
        eprintln!("{tag} epoch {}/{epochs}", e + 1);
    }
    match own {
        Some(o) => o
            .ema_model
            .save(&dir.join(format!("{tag}_ema.safetensors")))
            .unwrap(),
        None => trainer
            .eval_model()
            .save(&dir.join(format!("{tag}_ema.safetensors")))
            .unwrap(),
    }
}
