//! Linear probe (beyond the study): a frozen backbone (eval mode, no gradients), features = global
//! average pool of C5, a logistic-regression head on fg/bg crops fitted by full-batch gradient
//! descent on standardised features. Ranks pretrained backbones in seconds, before hours of
//! detection training.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::check_positive;
use super::data::{seeded_split, Crop, CropSet, InputNorm};
use super::device::{DeviceConfig, DeviceScope};
use super::loader::{crop_batches, CropSampling};
use crate::autograd::no_grad;
use crate::models::YoloX;
use crate::ops;
use crate::tensor::{Device, Tensor};
use crate::train::config::Precision;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    pub seed: u64,
    pub input_size: usize,
    pub input_norm: InputNorm,
    pub val_fraction: f64,
    /// Crops per backbone forward pass.
    pub batch_size: usize,
    /// Gradient-descent iterations of the logistic regression.
    pub iterations: usize,
    pub lr: f64,
    /// L2 penalty on the weights.
    pub l2: f64,
    /// `cpu`, `cuda` or `auto` for the backbone's forward passes.
    pub device: String,
    pub precision: Precision,
    /// Threads that decode and resize crops ahead of the forward passes.
    pub workers: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            seed: 0,
            input_size: 224,
            input_norm: InputNorm::Bgr255,
            val_fraction: 0.2,
            batch_size: 64,
            iterations: 500,
            lr: 0.5,
            l2: 1e-4,
            device: "cpu".into(),
            precision: Precision::F32,
            workers: 2,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeReport {
    pub train_accuracy: f64,
    /// Held-out accuracy (NaN when the split left no held-out crop).
    pub val_accuracy: f64,
    pub feature_dim: usize,
    pub train_size: usize,
    pub val_size: usize,
    pub seconds: f64,
    /// Crops through the frozen backbone per second.
    pub crops_per_s: f64,
}

impl ProbeConfig {
    /// The `device`, `precision` and `workers` keys.
    pub fn device_config(&self) -> DeviceConfig {
        DeviceConfig {
            device: self.device.clone(),
            precision: self.precision,
            workers: self.workers,
        }
    }
}

/// GAP(C5) features of every crop, `[n][C5]`, in eval mode without recording, computed on
/// `device` (the model's stores must be there).
pub fn backbone_features(
    model: &YoloX,
    crops: &Arc<Vec<Crop>>,
    cfg: &ProbeConfig,
    device: Device,
) -> Result<Vec<Vec<f32>>> {
    let was_training = model.store.is_training();
    model.set_training(false);
    let sampling = CropSampling {
        size: cfg.input_size,
        norm: cfg.input_norm,
        flip: None,
    };
    let order: Vec<usize> = (0..crops.len()).collect();
    let result = no_grad(|| -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(crops.len());
        for batch in crop_batches(crops, order, cfg.batch_size, None, sampling, cfg.workers) {
            let batch = batch?;
            let shape = batch.shape();
            let x = Tensor::from_vec_on(batch.input, shape, device)?;
            let (_, _, c5) = model.backbone.backbone.forward(&x)?;
            let g = ops::global_avg_pool2d(&c5)?; // [B, C5, 1, 1]
            let d = g.dims()[1];
            let v = g.to_vec();
            out.extend(v.chunks(d).map(|r| r.to_vec()));
        }
        Ok(out)
    });
    model.set_training(was_training);
    result
}

fn predict(w: &[f64], b: f64, x: &[f64]) -> f64 {
    b + w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>()
}

/// Fit and score the probe (see the module docs).
pub fn linear_probe(model: &YoloX, crops: &CropSet, cfg: &ProbeConfig) -> Result<ProbeReport> {
    cfg.device_config().validate()?;
    check_positive("batch_size", cfg.batch_size)?;
    check_positive("iterations", cfg.iterations)?;
    if cfg.input_size == 0 || !cfg.input_size.is_multiple_of(32) {
        return Err(Error::InvalidArgument(format!(
            "`input_size` must be a positive multiple of 32, got {}",
            cfg.input_size
        )));
    }
    if crops.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "the linear probe needs at least 2 crops, got {}",
            crops.len()
        )));
    }
    let started = Instant::now();
    let labels: Vec<f64> = crops.crops.iter().map(|c| c.label as f64).collect();
    let scope = DeviceScope::enter(&cfg.device_config(), &[&model.store])?;
    let feats = backbone_features(model, &Arc::new(crops.crops.clone()), cfg, scope.device)?;
    scope.leave()?;
    let forward_secs = started.elapsed().as_secs_f64();
    let d = feats[0].len();
    if let Some(bad) = feats.iter().position(|f| f.iter().any(|v| !v.is_finite())) {
        return Err(Error::Msg(format!(
            "linear probe: backbone features of crop `{}` are not finite",
            crops.crops[bad].name
        )));
    }
    let (train, val) = seeded_split(feats.len(), cfg.val_fraction, cfg.seed);
    // Standardise with the training split's statistics.
    let mut mean = vec![0f64; d];
    let mut std = vec![0f64; d];
    for &i in &train {
        for k in 0..d {
            mean[k] += feats[i][k] as f64 / train.len() as f64;
        }
    }
    for &i in &train {
        for k in 0..d {
            std[k] += (feats[i][k] as f64 - mean[k]).powi(2) / train.len() as f64;
        }
    }
    let x: Vec<Vec<f64>> = feats
        .iter()
        .map(|f| {
            (0..d)
                .map(|k| {
                    // No absolute epsilon: an untrained nano backbone's features are ~1e-8.
                    let sd = std[k].sqrt();
                    if sd > 0.0 && sd.is_finite() {
                        (f[k] as f64 - mean[k]) / sd
                    } else {
                        0.0
                    }
                })
                .collect()
        })
        .collect();
    // Logistic regression: minimise mean BCE(σ(w·x + b), y) + l2/2 ‖w‖².
    let (mut w, mut b) = (vec![0f64; d], 0f64);
    for _ in 0..cfg.iterations {
        let mut gw = vec![0f64; d];
        let mut gb = 0f64;
        for &i in &train {
            let p = 1.0 / (1.0 + (-predict(&w, b, &x[i])).exp());
            let e = (p - labels[i]) / train.len() as f64;
            gb += e;
            for k in 0..d {
                gw[k] += e * x[i][k];
            }
        }
        for k in 0..d {
            w[k] -= cfg.lr * (gw[k] + cfg.l2 * w[k]);
        }
        b -= cfg.lr * gb;
    }
    let acc = |idx: &[usize]| -> f64 {
        if idx.is_empty() {
            return f64::NAN;
        }
        let ok = idx
            .iter()
            .filter(|&&i| (predict(&w, b, &x[i]) > 0.0) == (labels[i] > 0.5))
            .count();
        ok as f64 / idx.len() as f64
    };
    Ok(ProbeReport {
        train_accuracy: acc(&train),
        val_accuracy: acc(&val),
        feature_dim: d,
        train_size: train.len(),
        val_size: val.len(),
        seconds: started.elapsed().as_secs_f64(),
        crops_per_s: crops.len() as f64 / forward_secs.max(1e-9),
    })
}
