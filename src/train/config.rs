//! Every knob of the YOLOX training recipe in one serde struct, with the values of
//! `yolox/exp/yolox_base.py` as defaults (docs/yolox.md §5) and the per-variant differences
//! of `exps/default/yolox_{nano,tiny,s,...}.py` in [`TrainConfig::for_variant`].

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Which optimiser the trainer builds (yolox_base.py: SGD with Nesterov; Adam/AdamW are options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    AdamW,
}

impl OptimizerKind {
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::AdamW => "adamw",
        }
    }
}

/// The learning-rate schedule (yolox/utils/lr_scheduler.py names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerKind {
    /// Quadratic warm-up, cosine to `min_lr_ratio·lr`, flat for the no-aug epochs (YOLOX default).
    YoloxWarmCos,
    /// `lr·0.5·(1 + cos(π·it/T))` (yolox `cos`), used by pretraining.
    Cos,
    /// The base lr throughout.
    Constant,
}

pub use super::precision::Precision;

// One enum per concept: the loss and assigner own these; the config only names them.
use crate::backend::cuda::ConvAlgorithm;
pub use crate::detect::loss::BoxLossKind;
pub use crate::detect::simota::SimOtaMode;

/// The training recipe. Field names follow yolox_base.py where it has one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    // ---- schedule (yolox_base.py "training config") ----
    pub max_epoch: usize,
    pub warmup_epochs: usize,
    /// lr at iteration 0 of the warm-up (`warmup_lr` = 0).
    pub warmup_lr: f64,
    /// The last epochs run without mosaic/mixup and with the L1 loss; the lr is flat there.
    pub no_aug_epochs: usize,
    pub min_lr_ratio: f64,
    /// `lr = basic_lr_per_img · batch_size` (0.01 / 64).
    pub basic_lr_per_img: f64,
    pub scheduler: SchedulerKind,
    /// Images per optimiser step (the README trains with 64).
    pub batch_size: usize,

    // ---- optimiser ----
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub nesterov: bool,
    /// Applied to conv/linear weights only (YOLOX's pg1); biases and BN affine get none.
    pub weight_decay: f64,
    /// Adam/AdamW (β1, β2) (PyTorch defaults).
    pub adam_betas: (f64, f64),
    pub adam_eps: f64,

    // ---- EMA (yolox/utils/ema.py) ----
    pub ema: bool,
    pub ema_decay: f64,
    /// `d(x) = ema_decay · (1 − exp(−x / ema_tau))`.
    pub ema_tau: f64,

    // ---- logging / evaluation ----
    /// Off a terminal (logs, notebooks), a progress line every this many iterations (YOLOX's
    /// `print_interval`); None: only the line per epoch. A terminal gets a live bar instead.
    pub print_interval: Option<usize>,
    /// Epochs between evaluations (1 once the no-aug phase starts, as trainer.py does).
    pub eval_interval: usize,
    /// Keep the evaluated (EMA) weights of every evaluation epoch as `epoch_N.safetensors`
    /// (YOLOX's `save_history_ckpt`); `last.safetensors` and `best.safetensors` are always kept.
    pub save_history_ckpt: bool,
    pub seed: u64,
    /// Epochs at the start during which the pretrained backbone (`backbone.backbone.*`) is
    /// frozen (0: nothing frozen, the default).
    pub freeze_backbone_epochs: usize,

    // ---- data ----
    /// A training image that cannot be read (corrupt, truncated, missing) is skipped with a
    /// warning naming it and counted per epoch; false (the default): the run stops with an
    /// error naming the file (docs/faults.md).
    pub skip_bad_images: bool,

    // ---- input and multiscale ----
    /// (height, width) of the loader's images.
    pub input_size: (usize, usize),
    /// (height, width) at evaluation.
    pub test_size: (usize, usize),
    /// Multiscale sizes are `32·randint(input/32 − range, input/32 + range)`.
    pub multiscale_range: usize,
    /// Overrides `multiscale_range`: `32·randint(lo, hi)` (inclusive); nano/tiny use (10, 20).
    pub random_size: Option<(usize, usize)>,
    /// Iterations between multiscale draws (trainer.py: every 10 iterations).
    pub multiscale_interval: usize,

    // ---- augmentation (yolox_base.py "transform config") ----
    pub mosaic_prob: f64,
    pub mixup_prob: f64,
    pub hsv_prob: f64,
    pub flip_prob: f64,
    /// Rotation range in degrees (± `degrees`).
    pub degrees: f64,
    /// Translation as a fraction of the size (± `translate`).
    pub translate: f64,
    pub mosaic_scale: (f64, f64),
    pub enable_mixup: bool,
    pub mixup_scale: (f64, f64),
    /// Shear in degrees (± `shear`).
    pub shear: f64,

    // ---- loss and assignment ----
    pub box_loss: BoxLossKind,
    /// SimOTA centre-prior radius in strides (release: 2.5).
    pub center_radius: f64,
    pub simota_mode: SimOtaMode,

    // ---- evaluation post-processing (yolox_base.py "testing config") ----
    pub test_conf: f64,
    pub nms_threshold: f64,

    // ---- device arithmetic ----
    pub precision: Precision,
    /// The GPU convs' algorithm (`im2col`, `implicit`, or `auto`: per conv the faster, measured
    /// at its first call; `backend::cuda::ConvAlgorithm`); unset: the process's default
    /// (`SSOD_CUDA_CONV`, else auto). The CPU has one.
    pub conv_algorithm: Option<ConvAlgorithm>,
}

impl Default for TrainConfig {
    /// yolox_base.py.
    fn default() -> Self {
        TrainConfig {
            max_epoch: 300,
            warmup_epochs: 5,
            warmup_lr: 0.0,
            no_aug_epochs: 15,
            min_lr_ratio: 0.05,
            basic_lr_per_img: 0.01 / 64.0,
            scheduler: SchedulerKind::YoloxWarmCos,
            batch_size: 64,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            nesterov: true,
            weight_decay: 5e-4,
            adam_betas: (0.9, 0.999),
            adam_eps: 1e-8,
            ema: true,
            ema_decay: 0.9998,
            ema_tau: 2000.0,
            print_interval: None,
            eval_interval: 10,
            save_history_ckpt: true,
            seed: 0,
            freeze_backbone_epochs: 0,
            skip_bad_images: false,
            input_size: (640, 640),
            test_size: (640, 640),
            multiscale_range: 5,
            random_size: None,
            multiscale_interval: 10,
            mosaic_prob: 1.0,
            mixup_prob: 1.0,
            hsv_prob: 1.0,
            flip_prob: 0.5,
            degrees: 10.0,
            translate: 0.1,
            mosaic_scale: (0.1, 2.0),
            enable_mixup: true,
            mixup_scale: (0.5, 1.5),
            shear: 2.0,
            box_loss: BoxLossKind::Iou,
            center_radius: 2.5,
            simota_mode: SimOtaMode::Release,
            test_conf: 0.01,
            nms_threshold: 0.65,
            precision: Precision::F32,
            conv_algorithm: None,
        }
    }
}

impl TrainConfig {
    /// The recipe of a variant (`nano`, `tiny`, `s`, `m`, `l`, `x`, optionally `yolox-`/`yolox_`
    /// prefixed): yolox_base.py plus the overrides of `exps/default/yolox_<variant>.py`.
    pub fn for_variant(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        let short = lower
            .strip_prefix("yolox-")
            .or_else(|| lower.strip_prefix("yolox_"))
            .unwrap_or(&lower);
        let mut c = TrainConfig::default();
        match short {
            // yolox_nano.py: input/test 416, random_size (10, 20), mosaic_prob 0.5,
            // mosaic_scale (0.5, 1.5), enable_mixup False.
            "nano" => {
                c.input_size = (416, 416);
                c.test_size = (416, 416);
                c.random_size = Some((10, 20));
                c.mosaic_prob = 0.5;
                c.mosaic_scale = (0.5, 1.5);
                c.enable_mixup = false;
            }
            // yolox_tiny.py: input/test 416, random_size (10, 20), mosaic_scale (0.5, 1.5),
            // enable_mixup False.
            "tiny" => {
                c.input_size = (416, 416);
                c.test_size = (416, 416);
                c.random_size = Some((10, 20));
                c.mosaic_scale = (0.5, 1.5);
                c.enable_mixup = false;
            }
            // yolox_s/m/l/x.py change only depth and width: the base recipe (mixup on,
            // mosaic_scale (0.1, 2.0)).
            "s" | "m" | "l" | "x" => {}
            other => {
                return Err(Error::InvalidArgument(format!(
                "unknown YOLOX variant `{other}` for the training recipe (nano, tiny, s, m, l, x)"
            )))
            }
        }
        Ok(c)
    }

    /// The base learning rate: `basic_lr_per_img · batch_size` (yolox_base.py `get_optimizer`).
    pub fn lr(&self) -> f64 {
        self.basic_lr_per_img * self.batch_size as f64
    }

    /// Overrides on top of the defaults from a JSON object; an unknown key or a bad value is an
    /// error naming the key.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self> {
        Self::default().with_overrides(value)
    }

    /// Overrides on top of the defaults from a key → value map (e.g. a Rhai object map
    /// converted to JSON values).
    pub fn from_map<'a>(
        map: impl IntoIterator<Item = (&'a str, &'a serde_json::Value)>,
    ) -> Result<Self> {
        let object: serde_json::Map<String, serde_json::Value> = map
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Self::from_json_value(&serde_json::Value::Object(object))
    }

    /// This config with the keys of `value` (a JSON object) replaced, then validated. Keys not in
    /// `value` keep their current values (so `for_variant("nano")?.with_overrides(..)` works).
    pub fn with_overrides(&self, value: &serde_json::Value) -> Result<Self> {
        let overrides = value.as_object().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "train config: expected an object of key: value pairs, got {}",
                json_kind(value)
            ))
        })?;
        let mut merged = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                return Err(Error::Msg(
                    "train config: cannot serialise the current config".into(),
                ))
            }
        };
        for (key, v) in overrides {
            if !merged.contains_key(key) {
                return Err(Error::InvalidArgument(format!(
                    "train config: unknown key `{key}` (known keys: {})",
                    Self::keys().join(", ")
                )));
            }
            merged.insert(key.clone(), v.clone());
        }
        let config: TrainConfig =
            match serde_json::from_value(serde_json::Value::Object(merged.clone())) {
                Ok(c) => c,
                Err(e) => {
                    // Find the offending key: deserialise each override alone on top of the defaults.
                    for (key, v) in overrides {
                        let mut single = serde_json::Map::new();
                        single.insert(key.clone(), v.clone());
                        if let Err(e) =
                            serde_json::from_value::<TrainConfig>(serde_json::Value::Object(single))
                        {
                            return Err(Error::InvalidArgument(format!(
                                "train config key `{key}`: {e} (got {v})"
                            )));
                        }
                    }
                    return Err(Error::InvalidArgument(format!("train config: {e}")));
                }
            };
        config.validate()?;
        Ok(config)
    }

    /// The config's keys, in declaration order.
    pub fn keys() -> Vec<String> {
        match serde_json::to_value(TrainConfig::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The config as a JSON string (stored in checkpoints).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Parse [`TrainConfig::to_json`] output (or any JSON object of overrides).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::InvalidArgument(format!("train config: not valid JSON: {e}")))?;
        Self::from_json_value(&value)
    }

    /// The keys whose values differ between `self` and `other`, with both values as JSON text
    /// (`(key, self's, other's)`), in key order.
    pub fn differences(&self, other: &TrainConfig) -> Vec<(String, String, String)> {
        let object = |c: &TrainConfig| match serde_json::to_value(c) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let (a, b) = (object(self), object(other));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                let text = |m: &serde_json::Map<String, serde_json::Value>| {
                    m.get(k).map_or("(unset)".to_string(), |v| v.to_string())
                };
                (k.clone(), text(&a), text(&b))
            })
            .collect()
    }

    /// The epoch counts and the batch size.
    fn validate_epochs(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::InvalidArgument(format!(
                "train config key `{key}`: {why}"
            )))
        };
        if self.max_epoch == 0 {
            return bad("max_epoch", "must be >= 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size", "must be >= 1".into());
        }
        // Checked: huge values must not wrap past the comparison.
        match self.warmup_epochs.checked_add(self.no_aug_epochs) {
            Some(n) if n <= self.max_epoch => Ok(()),
            _ => bad(
                "warmup_epochs",
                format!(
                    "warmup_epochs ({}) + no_aug_epochs ({}) exceed max_epoch ({})",
                    self.warmup_epochs, self.no_aug_epochs, self.max_epoch
                ),
            ),
        }
    }

    /// Range checks; every error names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| {
            Err(Error::InvalidArgument(format!(
                "train config key `{key}`: {why}"
            )))
        };
        let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
        let prob = |x: f64| (0.0..=1.0).contains(&x);
        self.validate_epochs()?;
        for (key, x) in [
            ("warmup_lr", self.warmup_lr),
            ("min_lr_ratio", self.min_lr_ratio),
            ("basic_lr_per_img", self.basic_lr_per_img),
            ("momentum", self.momentum),
            ("weight_decay", self.weight_decay),
            ("adam_eps", self.adam_eps),
            ("degrees", self.degrees),
            ("translate", self.translate),
            ("shear", self.shear),
            ("center_radius", self.center_radius),
        ] {
            if !finite_nonneg(x) {
                return bad(key, format!("must be a finite number >= 0, got {x}"));
            }
        }
        if self.min_lr_ratio > 1.0 {
            return bad(
                "min_lr_ratio",
                format!("must be <= 1, got {}", self.min_lr_ratio),
            );
        }
        if self.momentum >= 1.0 {
            return bad("momentum", format!("must be < 1, got {}", self.momentum));
        }
        if self.nesterov && self.momentum == 0.0 && self.optimizer == OptimizerKind::Sgd {
            return bad("nesterov", "Nesterov needs momentum > 0".into());
        }
        let (b1, b2) = self.adam_betas;
        if !(prob(b1) && b1 < 1.0 && prob(b2) && b2 < 1.0) {
            return bad(
                "adam_betas",
                format!("each must be in [0, 1), got ({b1}, {b2})"),
            );
        }
        if !(prob(self.ema_decay) && self.ema_decay < 1.0) {
            return bad(
                "ema_decay",
                format!("must be in [0, 1), got {}", self.ema_decay),
            );
        }
        if !(self.ema_tau.is_finite() && self.ema_tau > 0.0) {
            return bad("ema_tau", format!("must be > 0, got {}", self.ema_tau));
        }
        for (key, x) in [
            ("mosaic_prob", self.mosaic_prob),
            ("mixup_prob", self.mixup_prob),
            ("hsv_prob", self.hsv_prob),
            ("flip_prob", self.flip_prob),
            ("test_conf", self.test_conf),
            ("nms_threshold", self.nms_threshold),
        ] {
            if !prob(x) {
                return bad(key, format!("must be a probability in [0, 1], got {x}"));
            }
        }
        for (key, (lo, hi)) in [
            ("mosaic_scale", self.mosaic_scale),
            ("mixup_scale", self.mixup_scale),
        ] {
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
                return bad(key, format!("must be 0 < lo <= hi, got ({lo}, {hi})"));
            }
        }
        for (key, (h, w)) in [
            ("input_size", self.input_size),
            ("test_size", self.test_size),
        ] {
            if h == 0 || w == 0 || h % 32 != 0 || w % 32 != 0 {
                return bad(
                    key,
                    format!("(height, width) must be positive multiples of 32, got ({h}, {w})"),
                );
            }
        }
        if let Some((lo, hi)) = self.random_size {
            if lo == 0 || lo > hi {
                return bad(
                    "random_size",
                    format!("must be 1 <= lo <= hi (in units of 32 px), got ({lo}, {hi})"),
                );
            }
        } else if self.input_size.0 / 32 <= self.multiscale_range {
            return bad(
                "multiscale_range",
                format!(
                    "{} would reach a size <= 0 at input height {}",
                    self.multiscale_range, self.input_size.0
                ),
            );
        }
        if self.multiscale_interval == 0 {
            return bad("multiscale_interval", "must be >= 1".into());
        }
        if self.eval_interval == 0 {
            return bad("eval_interval", "must be >= 1".into());
        }
        if self.print_interval == Some(0) {
            return bad("print_interval", "must be >= 1".into());
        }
        Ok(())
    }

    /// The inclusive multiscale range in units of 32 px (yolox_base.py `random_resize`):
    /// `random_size` if set, else `input_h/32 ∓ multiscale_range`.
    pub fn multiscale_units(&self) -> (usize, usize) {
        match self.random_size {
            Some(r) => r,
            None => {
                let centre = self.input_size.0 / 32;
                (
                    centre.saturating_sub(self.multiscale_range),
                    centre + self.multiscale_range,
                )
            }
        }
    }

    /// The (height, width) of a multiscale draw `units` (yolox_base.py `random_resize`:
    /// `(32·units, 32·int(units·input_w/input_h))`).
    pub fn multiscale_size(&self, units: usize) -> (usize, usize) {
        let (h, w) = self.input_size;
        let w_units = (units as f64 * w as f64 / h as f64) as usize;
        (32 * units, 32 * w_units)
    }

    /// 0-based epoch at which mosaic closes and the L1 loss starts: trainer.py `before_epoch`
    /// fires when `epoch + 1 == max_epoch − no_aug_epochs` (so the last `no_aug_epochs + 1`
    /// epochs run without mosaic).
    pub fn no_aug_start_epoch(&self) -> usize {
        self.max_epoch
            .saturating_sub(self.no_aug_epochs)
            .saturating_sub(1)
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_algorithm_is_unset_by_default_and_takes_the_three_names() {
        assert_eq!(TrainConfig::default().conv_algorithm, None);
        for (name, a) in [
            ("im2col", ConvAlgorithm::Im2col),
            ("implicit", ConvAlgorithm::Implicit),
            ("auto", ConvAlgorithm::Auto),
        ] {
            let cfg = TrainConfig::from_json_value(&serde_json::json!({ "conv_algorithm": name }))
                .unwrap();
            assert_eq!(cfg.conv_algorithm, Some(a));
            assert_eq!(a.name(), name);
        }
        let err = TrainConfig::from_json_value(&serde_json::json!({ "conv_algorithm": "cudnn" }))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cudnn") && err.contains("conv_algorithm"),
            "{err}"
        );
    }
}
